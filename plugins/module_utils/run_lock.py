# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run lock keyed by (stack, profile), on a git remote, DynamoDB or S3.

Plain Python, no AnsibleModule, so a module, an action plugin, a lookup and a
test share it. Each backend supplies three primitives -- an atomic create, a
read returning a version token, and a delete conditional on that token -- and
LockBackend builds acquire, release and remove from them.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pwd
import re
import socket
import tempfile
import uuid
import zlib

from ansible_collections.guardrail.ecs.plugins.module_utils import aws
from ansible_collections.guardrail.ecs.plugins.module_utils.git import GitError, failure, run_git_proc

COLLECTION_VERSION = "0.2.0"
BACKENDS = ("git", "dynamodb", "s3")
TAG_PREFIX = "guardrail-lock"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Tag objects need a target; the empty tree exists in every repository, so
# the push sends nothing but the tag object itself.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
# How git push --porcelain reports a ref that another push created or holds.
CONTENTION = ("(already exists)", "(failed to update ref)", "(failed to lock)", "(fetch first)")
# Enough to outlast a burst of concurrent releases and re-acquires; a lock
# still changing after this many rounds is reported instead of looping on.
ATTEMPTS = 20


class LockError(Exception):
    """Invalid input, or the backend failed."""


class LockHeld(LockError):
    """Someone else holds the lock. `record` is the holder's record."""

    def __init__(self, record, stack=None, profile=None, action="acquire"):
        self.record = record
        super().__init__(describe_refusal(record, stack, profile, action))


def describe_holder(record):
    text = (f"{record.get('owner') or 'unknown owner'} (run {record.get('run_id') or 'unknown'}, "
            f"host {record.get('host') or 'unknown'}, since {record.get('created') or 'unknown time'}, "
            f"operation {record.get('operation') or 'unknown'}")
    message = record.get("message")
    return text + (f", message: {message})" if message else ", no message)")


def describe_refusal(record, stack, profile, action="acquire"):
    stack = stack or record.get("stack")
    profile = profile or record.get("profile")
    return f"cannot {action} run lock {stack}/{profile}: it is held by {describe_holder(record)}"


def _shown(value):
    text = repr(value)
    return text if len(text) <= 50 else f"{text[:40]}...' ({len(value)} characters)"


def validate_identity(stack, profile):
    """Raises LockError unless both names are safe as a ref, key and path component."""
    for label, value in (("stack", stack), ("profile", profile)):
        if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value \
                or value.endswith((".", ".lock")):
            raise LockError(
                f"invalid {label} name {_shown(value)}: use 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit, without '..' (no '/', spaces or other characters)")


def _validate_owner(owner):
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 256 \
            or any(ord(char) < 32 for char in owner):
        raise LockError(f"invalid owner {_shown(owner)}: a non-empty single line of at most 256 characters")


def _current_user(env):
    for name in ("LOGNAME", "USER", "USERNAME"):
        if env.get(name):
            return env[name]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def default_identity(variables=None, env=None):
    """(owner, run_id): the launching user and job id inside an AWX/Tower job,
    otherwise user@host and a fresh run id. `env` defaults to os.environ."""
    variables = variables or {}
    env = os.environ if env is None else env
    owner = variables.get("awx_user_name") or variables.get("tower_user_name")
    run_id = variables.get("awx_job_id") or variables.get("tower_job_id")
    if not owner:
        owner = f"{_current_user(env)}@{socket.gethostname()}"
    if not run_id:
        run_id = f"{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}"
    return str(owner), str(run_id)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def format_time(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    """Parses the UTC ISO 8601 times we and OpenTofu write (fractions of any length)."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$", text or "")
    if not match:
        raise LockError(f"unreadable lock time {text!r}")
    base, fraction, zone = match.groups()
    moment = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    offset = datetime.timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment.replace(tzinfo=datetime.timezone(offset))


def new_record(stack, profile, owner, run_id, operation="apply", message=""):
    validate_identity(stack, profile)
    _validate_owner(owner)
    return {
        "owner": owner,
        "run_id": str(run_id or ""),
        "host": socket.gethostname(),
        "created": format_time(utc_now()),
        "operation": operation or "apply",
        "message": message or "",
        "stack": stack,
        "profile": profile,
        "version": COLLECTION_VERSION,
        "id": str(uuid.uuid4()),
    }


def is_stale(record, ttl, now=None):
    """True when the record is older than ttl seconds. No ttl, no staleness."""
    if not record or not ttl:
        return False
    now = now or utc_now()
    return (now - parse_time(record.get("created"))).total_seconds() > ttl


def lock_info(record, path):
    """The record as OpenTofu's LockInfo JSON; our full record rides along in
    `Guardrail`, which tofu ignores."""
    return json.dumps({
        "ID": record["id"],
        "Operation": record["operation"],
        "Info": record["message"],
        "Who": record["owner"],
        "Version": f"guardrail.ecs {record['version']}",
        "Created": record["created"],
        "Path": path,
        "Guardrail": record,
    }, sort_keys=True)


def record_from_lock_info(text, stack, profile):
    """Our record from a LockInfo JSON, including one OpenTofu wrote itself."""
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise LockError(f"the lock for {stack}/{profile} holds unreadable JSON: {exc}") from exc
    if isinstance(info.get("Guardrail"), dict):
        return info["Guardrail"]
    who = info.get("Who") or ""
    return {
        "owner": who, "run_id": "", "host": who.rpartition("@")[2], "created": info.get("Created", ""),
        "operation": info.get("Operation", ""), "message": info.get("Info", ""), "stack": stack,
        "profile": profile, "version": info.get("Version", ""), "id": info.get("ID", ""),
    }


class LockBackend:
    """acquire/release/remove over three primitives a backend implements:
    `_create` (atomic; False when a lock exists), `_read` (record and version
    token, or (None, None)) and `_delete` (only if the token still matches)."""

    name = "base"

    def __init__(self):
        # What this object last wrote, so a release in the same process can try
        # the conditional delete at once; the condition keeps it correct.
        self._written = {}

    def _create(self, stack, profile, record):
        raise NotImplementedError

    def _read(self, stack, profile):
        raise NotImplementedError

    def _delete(self, stack, profile, token):
        raise NotImplementedError

    def _delete_owned(self, stack, profile, owner):
        """Deletes the lock in one step if `owner` holds it: ("deleted", record),
        ("free", None), ("other", holder) -- or None when the backend cannot."""
        return None

    def _hint(self, stack, profile):
        return self._written.get((stack, profile))

    def _forget(self, stack, profile):
        self._written.pop((stack, profile), None)

    def read(self, stack, profile):
        validate_identity(stack, profile)
        return self._read(stack, profile)[0]

    def acquire(self, stack, profile, record, check_mode=False):
        """(changed, record now held). Raises LockHeld when another owner holds it."""
        validate_identity(stack, profile)
        _validate_owner(record.get("owner"))
        if (record.get("stack"), record.get("profile")) != (stack, profile):
            raise LockError(f"the record is for {record.get('stack')}/{record.get('profile')}, "
                            f"not {stack}/{profile}")
        for _attempt in range(ATTEMPTS):
            if not check_mode and self._create(stack, profile, record):
                return True, record
            current = self._read(stack, profile)[0]
            if current is None:
                if check_mode:
                    return True, record
                continue
            if current.get("owner") == record["owner"]:
                return False, current
            raise LockHeld(current, stack, profile)
        raise LockError(f"run lock {stack}/{profile} kept changing hands over {ATTEMPTS} attempts; try again")

    def release(self, stack, profile, owner, check_mode=False):
        """(changed, released record). Only the holder may release; a free lock is changed=false."""
        validate_identity(stack, profile)
        _validate_owner(owner)
        if not check_mode:
            hint = self._hint(stack, profile)
            if hint and hint[1].get("owner") == owner and self._delete(stack, profile, hint[0]):
                self._forget(stack, profile)
                return True, hint[1]
            outcome = self._delete_owned(stack, profile, owner)
            if outcome and outcome[0] == "deleted":
                self._forget(stack, profile)
                return True, outcome[1]
            if outcome and outcome[0] == "free":
                return False, None
            if outcome and outcome[1].get("owner") != owner:
                raise LockHeld(outcome[1], stack, profile, action="release")
        for _attempt in range(ATTEMPTS):
            current, token = self._read(stack, profile)
            if current is None:
                self._forget(stack, profile)
                return False, None
            if current.get("owner") != owner:
                raise LockHeld(current, stack, profile, action="release")
            if check_mode:
                return True, current
            if self._delete(stack, profile, token):
                self._forget(stack, profile)
                return True, current
        raise LockError(f"run lock {stack}/{profile} kept changing hands over {ATTEMPTS} attempts; try again")

    def remove(self, stack, profile, check_mode=False):
        """(changed, removed record): unlock whoever holds it."""
        validate_identity(stack, profile)
        for _attempt in range(ATTEMPTS):
            current, token = self._read(stack, profile)
            if current is None:
                return False, None
            if check_mode:
                return True, current
            if self._delete(stack, profile, token):
                self._forget(stack, profile)
                return True, current
        raise LockError(f"run lock {stack}/{profile} kept changing hands over {ATTEMPTS} attempts; try again")


class GitLockBackend(LockBackend):
    """An annotated tag guardrail-lock/<stack>/<profile> on the remote; its
    message is the record. The remote refuses to create an existing tag, which
    makes the push the atomic test; deletes carry a lease on the tag object id.
    No local tag is ever created: the remote is the truth."""

    name = "git"

    def __init__(self, repo_path=None, remote=None, timeout=60):
        super().__init__()
        self.repo_path = repo_path or os.getcwd()
        self.remote = remote or "origin"
        self.timeout = timeout
        self.calls = 0
        self._git_dir = None

    def _git(self, args, input=None):
        self.calls += 1
        try:
            return run_git_proc(args, self.repo_path, timeout=self.timeout, input=input)
        except GitError as exc:
            raise LockError(str(exc)) from exc

    @staticmethod
    def ref(stack, profile):
        return f"refs/tags/{TAG_PREFIX}/{stack}/{profile}"

    def _tag_object(self, stack, profile, record):
        tagger = re.sub(r"[<>\n]", "", record["owner"])
        seconds = int(parse_time(record["created"]).timestamp())
        return (f"object {EMPTY_TREE}\ntype tree\ntag {TAG_PREFIX}/{stack}/{profile}\n"
                f"tagger {tagger} <{tagger}> {seconds} +0000\n\n"
                f"{json.dumps(record, sort_keys=True)}\n")

    @staticmethod
    def _parse_tag(content, stack, profile):
        message = content.partition("\n\n")[2]
        try:
            record = json.loads(message)
        except ValueError as exc:
            raise LockError(f"the lock tag for {stack}/{profile} holds unreadable JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise LockError(f"the lock tag for {stack}/{profile} does not hold a lock record")
        return record

    @staticmethod
    def _porcelain_flags(proc):
        """Per-ref status flags of `git push --porcelain` (' ', '*', '-', '!', '=', '+')."""
        return [line[0] for line in proc.stdout.splitlines() if "\t" in line and line[:1] in " *-!=+"]

    def git_dir(self):
        if self._git_dir is None:
            dot_git = os.path.join(self.repo_path, ".git")
            if os.path.isdir(dot_git):
                self._git_dir = dot_git
            elif os.path.isfile(dot_git):
                with open(dot_git, encoding="utf-8") as handle:
                    pointer = handle.read().strip()
                self._git_dir = os.path.join(self.repo_path, pointer.partition("gitdir:")[2].strip())
            else:
                proc = self._git(["rev-parse", "--absolute-git-dir"])
                if proc.returncode != 0:
                    raise LockError(str(failure(proc, f"{self.repo_path} is not a git repository")))
                self._git_dir = proc.stdout.strip()
        return self._git_dir

    def _hint_path(self, stack, profile):
        remote = hashlib.sha1(self.remote.encode("utf-8")).hexdigest()[:16]
        return os.path.join(self.git_dir(), TAG_PREFIX, remote, stack, profile + ".json")

    def _remember(self, stack, profile, oid, content):
        # A hint for a later release from another process: the tag we pushed.
        # The lease on the delete, not this file, decides what is deleted.
        path = self._hint_path(stack, profile)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=os.path.dirname(path))
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump({"oid": oid, "tag": content}, out)
            os.replace(temp, path)
        except OSError:
            pass

    def _hint(self, stack, profile):
        try:
            with open(self._hint_path(stack, profile), encoding="utf-8") as handle:
                data = json.load(handle)
            oid, content = data["oid"], data["tag"]
        except (OSError, ValueError, KeyError, TypeError, LockError):
            return None
        raw = content.encode("utf-8")
        if hashlib.sha1(b"tag %d\0" % len(raw) + raw).hexdigest() != oid:
            return None
        try:
            return oid, self._parse_tag(content, stack, profile)
        except LockError:
            return None

    def _forget(self, stack, profile):
        try:
            os.unlink(self._hint_path(stack, profile))
        except (OSError, LockError):
            pass

    def _objects_dir(self):
        """The object directory of a plain SHA-1 repository, or None."""
        if os.environ.get("GIT_OBJECT_DIRECTORY"):
            return None
        common = self.git_dir()
        try:
            with open(os.path.join(common, "commondir"), encoding="utf-8") as handle:
                common = os.path.join(common, handle.read().strip())
        except OSError:
            pass
        try:
            with open(os.path.join(common, "config"), encoding="utf-8") as handle:
                config = handle.read()
        except OSError:
            return None
        objects = os.path.join(common, "objects")
        if re.search(r"objectformat\s*=", config, re.IGNORECASE) or not os.path.isdir(objects):
            return None
        return objects

    def _write_tag(self, content):
        """Stores the tag object and returns its id. A loose object is a
        zlib-compressed "tag <size>\\0<content>" named by its SHA-1, so writing it
        here saves a git process per acquire; other layouts go through git."""
        raw = content.encode("utf-8")
        data = b"tag %d\0" % len(raw) + raw
        oid = hashlib.sha1(data).hexdigest()
        objects = self._objects_dir()
        if objects:
            folder = os.path.join(objects, oid[:2])
            try:
                if not os.path.exists(os.path.join(folder, oid[2:])):
                    os.makedirs(folder, exist_ok=True)
                    handle, temp = tempfile.mkstemp(dir=folder, prefix="tmp_obj_")
                    with os.fdopen(handle, "wb") as out:
                        out.write(zlib.compress(data))
                    os.chmod(temp, 0o444)
                    os.replace(temp, os.path.join(folder, oid[2:]))
                return oid
            except OSError:
                pass
        proc = self._git(["hash-object", "-t", "tag", "-w", "--stdin"], input=content)
        if proc.returncode != 0:
            raise LockError(str(failure(proc, f"cannot write the lock tag in {self.repo_path}")))
        return proc.stdout.strip()

    def _create(self, stack, profile, record):
        content = self._tag_object(stack, profile, record)
        oid = self._write_tag(content)
        ref = self.ref(stack, profile)
        proc = self._git(["push", "--porcelain", "--no-verify", self.remote, f"{oid}:{ref}"])
        flags = self._porcelain_flags(proc)
        if proc.returncode == 0 and flags and flags[0] in "*=":
            self._remember(stack, profile, oid, content)
            return True
        if "!" in flags:
            # Losing a race reads as "already exists" (the tag was there) or
            # "failed to update ref" (the winner held the ref's lock). Any other
            # refusal (a hook, a protected ref) is an error unless the lock is held.
            if any(reason in proc.stdout for reason in CONTENTION) or self._read(stack, profile)[0] is not None:
                return False
        raise LockError(str(failure(proc, f"cannot push the lock tag to {self.remote}")))

    def _read(self, stack, profile):
        ref = self.ref(stack, profile)
        for _attempt in range(ATTEMPTS):
            proc = self._git(["ls-remote", self.remote, ref])
            if proc.returncode != 0:
                raise LockError(str(failure(proc, f"cannot read run lock {stack}/{profile} from {self.remote}")))
            oid = next((line.split("\t")[0] for line in proc.stdout.splitlines()
                        if line.split("\t")[-1] == ref), None)
            if oid is None:
                return None, None
            shown = self._git(["cat-file", "tag", oid])
            if shown.returncode != 0:
                fetched = self._git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-gc",
                                     self.remote, ref])
                if fetched.returncode != 0:
                    continue  # released between ls-remote and fetch; look again
                shown = self._git(["cat-file", "tag", oid])
                if shown.returncode != 0:
                    continue  # replaced between ls-remote and fetch
            return self._parse_tag(shown.stdout, stack, profile), oid
        raise LockError(f"run lock {stack}/{profile} kept changing on {self.remote}; try again")

    def _delete(self, stack, profile, token):
        ref = self.ref(stack, profile)
        proc = self._git(["push", "--porcelain", "--no-verify", f"--force-with-lease={ref}:{token}",
                          self.remote, f":{ref}"])
        flags = self._porcelain_flags(proc)
        if proc.returncode == 0 and flags and flags[0] == "-":
            return True
        # "stale info": the tag is no longer the one read (or is gone).
        if "!" in flags and any(reason in proc.stdout for reason in CONTENTION + ("(stale info)",)):
            return False
        raise LockError(str(failure(proc, f"cannot delete the lock tag on {self.remote}")))


class _AWSLockBackend(LockBackend):
    def __init__(self, key=None, **options):
        super().__init__()
        self.key = key
        self.options = {name: options.get(name) for name in aws.AWS_ARGUMENT_SPEC}
        self.calls = 0
        self._client = None

    def lock_id(self, stack, profile):
        return self.key or f"guardrail/{stack}/{profile}"

    def client(self, service):
        if self._client is None:
            try:
                self._client = aws.client(service, self.options)
            except aws.AWSError as exc:
                raise LockError(str(exc)) from exc
        return self._client

    def _call(self, service, action, expected=(), **kwargs):
        """One API call; returns (response, None) or (None, error code) for an
        expected error code, and raises LockError for any other failure."""
        self.calls += 1
        try:
            return aws.call(self.client(service), action, **kwargs), None
        except aws.AWSError as exc:
            if exc.code in expected:
                return getattr(exc.__cause__, "response", {}), exc.code
            raise LockError(str(exc)) from exc


class DynamoDBLockBackend(_AWSLockBackend):
    """OpenTofu's DynamoDB lock item: {LockID, Info}, created with
    attribute_not_exists(LockID), deleted on an exact match of Info."""

    name = "dynamodb"

    def __init__(self, table=None, key=None, **options):
        if not table:
            raise LockError("the dynamodb backend needs table")
        super().__init__(key=key, **options)
        self.table = table

    def _create(self, stack, profile, record):
        lock_id = self.lock_id(stack, profile)
        info = lock_info(record, lock_id)
        # Owner beside tofu's two attributes lets a release check the holder
        # and delete in one conditional call; tofu ignores it.
        item = {"LockID": {"S": lock_id}, "Info": {"S": info}, "Owner": {"S": record["owner"]}}
        _response, code = self._call("dynamodb", "put_item", expected=("ConditionalCheckFailedException",),
                                     TableName=self.table, Item=item,
                                     ConditionExpression="attribute_not_exists(LockID)")
        if code:
            return False
        self._written[(stack, profile)] = (info, record)
        return True

    def _read(self, stack, profile):
        response, _code = self._call("dynamodb", "get_item", TableName=self.table,
                                     Key={"LockID": {"S": self.lock_id(stack, profile)}}, ConsistentRead=True)
        item = response.get("Item")
        if not item:
            return None, None
        info = item.get("Info", {}).get("S", "")
        return record_from_lock_info(info, stack, profile), info

    def _delete_owned(self, stack, profile, owner):
        response, code = self._call("dynamodb", "delete_item", expected=("ConditionalCheckFailedException",),
                                    TableName=self.table, Key={"LockID": {"S": self.lock_id(stack, profile)}},
                                    ConditionExpression="#owner = :owner",
                                    ExpressionAttributeNames={"#owner": "Owner"},
                                    ExpressionAttributeValues={":owner": {"S": owner}},
                                    ReturnValues="ALL_OLD", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        item = response.get("Item" if code else "Attributes")
        if not item:
            return None  # no holder returned: let a read tell free from unknown
        record = record_from_lock_info(item.get("Info", {}).get("S", ""), stack, profile)
        return ("other" if code else "deleted"), record

    def _delete(self, stack, profile, token):
        _response, code = self._call("dynamodb", "delete_item", expected=("ConditionalCheckFailedException",),
                                     TableName=self.table, Key={"LockID": {"S": self.lock_id(stack, profile)}},
                                     ConditionExpression="Info = :info",
                                     ExpressionAttributeValues={":info": {"S": token}})
        return not code


class S3LockBackend(_AWSLockBackend):
    """OpenTofu's S3-native lock: the object <key>.tflock written with
    If-None-Match: *, deleted with If-Match on the ETag read with its ID."""

    name = "s3"

    def __init__(self, bucket=None, key=None, **options):
        if not bucket:
            raise LockError("the s3 backend needs bucket")
        super().__init__(key=key, **options)
        self.bucket = bucket

    def object_key(self, stack, profile):
        return self.lock_id(stack, profile) + ".tflock"

    def _create(self, stack, profile, record):
        key = self.object_key(stack, profile)
        info = lock_info(record, f"{self.bucket}/{self.lock_id(stack, profile)}")
        response, code = self._call("s3", "put_object", expected=("PreconditionFailed", "ConditionalRequestConflict"),
                                    Bucket=self.bucket, Key=key, Body=info.encode("utf-8"),
                                    ContentType="application/json", IfNoneMatch="*")
        if code:
            return False
        self._written[(stack, profile)] = (response["ETag"], record)
        return True

    def _read(self, stack, profile):
        response, code = self._call("s3", "get_object", expected=("NoSuchKey",), Bucket=self.bucket,
                                    Key=self.object_key(stack, profile))
        if code:
            return None, None
        body = response["Body"].read().decode("utf-8")
        return record_from_lock_info(body, stack, profile), response["ETag"]

    def _delete(self, stack, profile, token):
        _response, code = self._call("s3", "delete_object",
                                     expected=("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"),
                                     Bucket=self.bucket, Key=self.object_key(stack, profile), IfMatch=token)
        return not code


def get_backend(backend, repo_path=None, remote=None, table=None, key=None, bucket=None, timeout=60, **aws_options):
    """The backend named `backend` with its options; unknown AWS options are ignored."""
    if backend == "git":
        return GitLockBackend(repo_path=repo_path, remote=remote, timeout=timeout)
    if backend == "dynamodb":
        return DynamoDBLockBackend(table=table, key=key, **aws_options)
    if backend == "s3":
        return S3LockBackend(bucket=bucket, key=key, **aws_options)
    raise LockError(f"unknown run lock backend {backend!r}: use one of {', '.join(BACKENDS)}")


__all__ = ["LockError", "LockHeld", "validate_identity", "default_identity", "new_record",
           "get_backend", "LockBackend", "is_stale", "COLLECTION_VERSION"]
