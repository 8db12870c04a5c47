# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run lock keyed by (stack, profile), on a git remote, DynamoDB or S3.

Plain Python, no AnsibleModule, so a module, an action plugin, a lookup and a
test share it.

The lock is held by one *run*: its record names the owner, the run id, the host
and the process (or AWX job) of the run, and the run's state (running, failed,
interrupted). A second run is refused while the holder's run is live, even a
run of the same owner. The same owner may take over a lock whose run has ended
(state failed or interrupted, or its process is gone on this host), and only
explicitly (`takeover=True`); the new record then carries `taken_over`, the
record it replaced.

Public interface for the callers of a backend (the module, the lookup, the
workflow engine):

- ``backend.acquire(stack, profile, record, check_mode=False, takeover=False, wait=0)``
  -> ``(changed, record held)``; raises LockHeld (a LockRefused) naming the holder.
- ``backend.set_state(stack, profile, record, state, detail="")`` -> the new record.
  A compare-and-swap on the lock as read; raises LockLost when the lock is no
  longer held by that run.
- ``backend.release(stack, profile, record, check_mode=False)`` -> ``(changed, released)``;
  releases only the lock of that run (owner and run id of `record`).
- ``backend.remove(stack, profile, check_mode=False)`` -> ``(changed, record broken)``.
- ``backend.read(stack, profile)`` and ``backend.list_locks()``.

Each backend supplies four primitives: an atomic create, a read returning a
version token, a replace and a delete both conditional on that token (git: a
push with ``--force-with-lease=<ref>:<old oid>``; DynamoDB: a condition on the
current Info; S3: If-Match on the ETag).
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import pwd
import random
import re
import socket
import time
import uuid
import zlib

from ansible_collections.guardrail.ecs.plugins.module_utils.common import aws, names
from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import write_atomic
from ansible_collections.guardrail.ecs.plugins.module_utils.common.git import GitError, failure, git_dirs, run_git_proc

COLLECTION_VERSION = "0.3.1"
# The lock backends by name, in the order the documentation lists them; a
# backend is a LockBackend subclass added with @register_backend (see LockBackend).
REGISTRY = {}
# Lock refs live outside refs/heads and refs/tags: no default fetch refspec,
# `git fetch --tags` or `git push --tags` carries them, so a clone can never
# push back a lock that was released.
REF_PREFIX = "refs/guardrail/locks"
TAG_PREFIX = "guardrail-lock"
NAME_PATTERN = names.NAME_PATTERN
RUN_STATES = ("running", "failed", "interrupted")
ENDED_STATES = ("failed", "interrupted")
# Tag objects need a target; the empty tree exists in every repository, so
# the push sends nothing but the tag object itself.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
# How git push --porcelain reports a ref that another push created, changed or holds.
CONTENTION = ("(already exists)", "(failed to update ref)", "(failed to lock)", "(fetch first)",
              "(stale info)")
# Enough to outlast a burst of concurrent releases and re-acquires; a lock
# still changing after this many rounds is reported instead of looping on.
ATTEMPTS = 20


class LockError(Exception):
    """Invalid input, or the backend failed."""


class LockConfigError(LockError):
    """The backend is not configured well enough to reach it (no region, no
    credentials, an unknown AWS profile): nothing was locked or unlocked."""


class LockRefused(LockError):
    """The lock is not this run's to take, change or release."""


class LockHeld(LockRefused):
    """Another run holds the lock. `record` is the holder's record."""

    def __init__(self, record, stack=None, profile=None, action="acquire", ttl=None, owner=None):
        self.record = record
        self.ended = run_ended(record)
        self.stale = is_stale(record, ttl)
        text = describe_refusal(record, stack, profile, action)
        if action == "acquire":
            if self.ended and owner is not None and owner == record.get("owner"):
                text += f"; that run has ended ({self.ended}): take it over with takeover=true"
            elif self.ended:
                text += (f"; that run has ended ({self.ended}): its owner may take it over, "
                         "or anyone may break it (run_lock state=absent, or workflow steps [unlock_any] "
                         "naming its owner)")
            else:
                text += "; one run at a time: wait for it to end"
        if self.stale:
            text += (f"; the lock is older than ttl {ttl}s (stale): if its run is gone, break it "
                     "(run_lock state=absent, or workflow steps [unlock_any] naming its owner)")
        super().__init__(text)


class LockLost(LockRefused):
    """The lock is no longer held by the run that tried to change it."""


def age_seconds(record, now=None):
    try:
        return round(((now or utc_now()) - parse_time(record.get("created"))).total_seconds(), 3)
    except LockError:
        return None


def describe_holder(record):
    pid = record.get("pid")
    age = age_seconds(record)
    text = (f"{record.get('owner') or 'unknown owner'} (run {record.get('run_id') or 'unknown'}, "
            f"host {record.get('host') or 'unknown'}{f', pid {pid}' if pid else ''}, "
            f"since {record.get('created') or 'unknown time'}"
            f"{f' ({int(age)}s ago)' if age is not None else ''}, "
            f"state {record.get('state') or 'running'}, operation {record.get('operation') or 'unknown'}")
    message = record.get("message")
    return text + (f", message: {message})" if message else ", no message)")


def describe_refusal(record, stack, profile, action="acquire"):
    stack = stack or record.get("stack")
    profile = profile or record.get("profile")
    return f"cannot {action} run lock {stack}/{profile}: it is held by {describe_holder(record)}"


def validate_identity(stack, profile):
    """Raises LockError unless both names follow the collection's name rule."""
    for label, value in (("stack", stack), ("profile", profile)):
        problem = names.name_problem(label, value)
        if problem:
            raise LockError(problem)


def _validate_owner(owner):
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 256 \
            or any(ord(char) < 32 for char in owner):
        raise LockError(f"invalid owner {names.shown(owner)}: a non-empty single line of at most 256 characters")


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
        run_id = f"{utc_now().strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(6).hex()}"
    return str(owner), str(run_id)


def job_id(variables=None):
    """The AWX/Tower job id of the run, or None outside a job."""
    variables = variables or {}
    value = variables.get("awx_job_id") or variables.get("tower_job_id")
    return str(value) if value else None


def process_start(pid):
    """The start time of process `pid` in clock ticks since boot (from /proc), or None."""
    return _stat_field(pid, 19)


def process_state(pid):
    """The state letter of process `pid` (R, S, Z...) from /proc, or None."""
    return _stat_field(pid, 0)


def _stat_field(pid, index):
    """Field `index` after the command name in /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8") as handle:
            return handle.read().rpartition(")")[2].split()[index]
    except (OSError, ValueError, IndexError):
        return None


def controller_run_id(pid):
    """A run id that stays the same for the life of process `pid` (one
    ansible-playbook run), so tasks of one play share the run."""
    return f"{socket.gethostname()}-{pid}-{process_start(pid) or 'x'}"


def boot_id():
    """This kernel's boot id (the same in every container and PID namespace
    of the host, new at each boot), or None where Linux's /proc is absent."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def pid_namespace(pid="self"):
    """The inode of the PID namespace of process `pid`, or None."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


# (device, inode) of each run flock this process holds -> the run holding it.
HELD_FLOCKS = {}


def hold_flock(path, run_id):
    """Opens and flocks `path` for the life of run `run_id`: every process
    that inherits the descriptor (tofu, its provisioners) keeps it held, so
    the run stays live until the last of them ends, whatever the PID
    namespace of whoever asks. Returns (descriptor, {"path", "dev", "ino"});
    BlockingIOError when another live process holds it. Refuses a symlink."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(descriptor)
        raise
    stat = os.fstat(descriptor)
    HELD_FLOCKS[(stat.st_dev, stat.st_ino)] = str(run_id)
    return descriptor, {"path": path, "dev": stat.st_dev, "ino": stat.st_ino}


def drop_flock(descriptor):
    try:
        stat = os.fstat(descriptor)
        HELD_FLOCKS.pop((stat.st_dev, stat.st_ino), None)
    finally:
        os.close(descriptor)


def flock_held(flock, run_id=None):
    """True while a process of run `run_id` holds its flock, False when none
    does, None when that cannot be told from here (another mount namespace,
    another user's file, no such file)."""
    if not isinstance(flock, dict) or not flock.get("path"):
        return None
    try:
        descriptor = os.open(flock["path"], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, TypeError, ValueError):
        return None
    try:
        stat = os.fstat(descriptor)
        key = (stat.st_dev, stat.st_ino)
        if key != (flock.get("dev"), flock.get("ino")):
            return None
        if key in HELD_FLOCKS:
            # This process holds it: only the recorded run is alive, if it is ours.
            return HELD_FLOCKS[key] == str(run_id)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        return False
    finally:
        os.close(descriptor)


def process_alive(pid, started=None, namespace=None):
    """True/False whether process `pid` (started at `started` clock ticks,
    in PID namespace `namespace`) lives, None when that cannot be told here
    (a pid of another PID namespace means nothing in ours)."""
    if namespace and namespace != pid_namespace():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError, TypeError):
        return None
    if process_state(pid) == "Z":
        return False  # exited; only its parent has yet to collect it
    return not (started and process_start(pid) not in (None, started))


def run_ended(record):
    """Why the holder's run has ended ("failed", "interrupted", "process 123 on
    ctl1 is gone"), or None while it may still be running. A run is judged
    gone only from what identifies it on the host: its boot id, then the
    flock its processes hold, then pid, start time and PID namespace of the
    command and of the tofu it started; anything unsure keeps it live."""
    if not record:
        return None
    state = record.get("state") or "running"
    if state in ENDED_STATES:
        return state
    if record.get("job_id"):
        return None
    host = record.get("host")
    if record.get("boot_id"):
        if record["boot_id"] != boot_id():
            return f"{host} has booted again since the run started" if host == socket.gethostname() else None
        held = flock_held(record.get("flock"), record.get("run_id"))
        if held is not None:
            # Free: neither the command nor any tofu it started holds it.
            return None if held else f"process {record.get('pid')} on {host} is gone"
        processes = [(record.get("pid"), record.get("pid_start"), record.get("pid_ns"))]
        processes += [(c.get("pid"), c.get("start"), c.get("pid_ns")) for c in record.get("children") or []
                      if isinstance(c, dict)]
        alive = [process_alive(*process) for process in processes if process[0]]
        if not alive or any(status is not False for status in alive):
            return None
        return f"process {record.get('pid')} on {host} is gone"
    pid = record.get("pid")
    if pid and host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"process {pid} on {host} is gone"
        except (PermissionError, ValueError, OverflowError):
            return None
        started = record.get("pid_start")
        if started and process_start(pid) not in (None, started):
            return f"process {pid} on {host} is gone (the pid now belongs to another process)"
    return None


def same_run(current, record):
    """Whether `current` (a lock read) is held by the run of `record`."""
    return bool(current and record and current.get("owner") == record.get("owner")
                and str(current.get("run_id") or "") == str(record.get("run_id") or "")
                and current.get("run_id"))


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
    moment = datetime.datetime.fromisoformat(base)  # the regex above fixed its shape; no strptime (slow first call)
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    offset = datetime.timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment.replace(tzinfo=datetime.timezone(offset))


def new_record(stack, profile, owner, run_id, operation="apply", message="", pid=None, job=None, flock=None):
    """The record of a run that wants the lock. `pid` is the process whose end
    ends the run (default: this process); `job` an AWX/Tower job id instead;
    `flock` what hold_flock() returned, when the run holds one."""
    validate_identity(stack, profile)
    _validate_owner(owner)
    if not run_id:
        raise LockError("a run lock record needs a run id")
    now = format_time(utc_now())
    record = {
        "owner": owner,
        "run_id": str(run_id),
        "host": socket.gethostname(),
        "created": now,
        "updated": now,
        "state": "running",
        "detail": "",
        "operation": operation or "apply",
        "message": message or "",
        "stack": stack,
        "profile": profile,
        "version": COLLECTION_VERSION,
        "id": str(uuid.uuid4()),
    }
    if job:
        record["job_id"] = str(job)
    else:
        record["pid"] = int(pid or os.getpid())
        started = process_start(record["pid"])
        if started:
            record["pid_start"] = started
        record.update(boot_id=boot_id(), pid_ns=pid_namespace(record["pid"]))
        if flock:
            record["flock"] = dict(flock)
    return record


def is_stale(record, ttl, now=None):
    """True when the record is older than ttl seconds. No ttl, no staleness."""
    if not record or not ttl:
        return False
    now = now or utc_now()
    return (now - parse_time(record.get("created"))).total_seconds() > ttl


def summary(record, ttl=None):
    """A held lock as listed: the record plus its age, whether its run has
    ended and whether it is stale by `ttl`."""
    ended = run_ended(record)
    return dict(record, state=record.get("state") or "running", age_seconds=age_seconds(record),
                ended=bool(ended), ended_reason=ended or "", stale=is_stale(record, ttl))


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
        "state": "running",
    }


def _run_key(record):
    return f"{record.get('owner')}\n{record.get('run_id')}"


def _kept(record):
    """The record without its own takeover history, to nest in the next one."""
    return {key: value for key, value in record.items() if key != "taken_over"}


def register_backend(cls):
    """Adds a LockBackend subclass to REGISTRY under its `name`."""
    REGISTRY[cls.name] = cls
    return cls


class LockBackend:
    """acquire/set_state/release/remove over four primitives a backend
    implements: `_create` (atomic; False when a lock exists), `_read` (record
    and version token, or (None, None)), `_replace` and `_delete` (only if the
    token still matches; False otherwise), plus `_list` and `from_options`.

    Adding a backend: a subclass with a `name`, those methods, the @register_backend
    decorator, its name in the `choices` of the documented backend options
    (a unit test compares them) and its case in the lock guarantee tests."""

    name = "base"

    @classmethod
    def from_options(cls, options):
        """The backend from the workflow's lock options: repo_path, remote,
        table, key, bucket, timeout and the AWS connection options."""
        raise NotImplementedError

    def __init__(self):
        # What this object last wrote, so a release in the same process can try
        # the conditional delete at once; the condition keeps it correct.
        self._written = {}

    def _create(self, stack, profile, record):
        raise NotImplementedError

    def _read(self, stack, profile):
        raise NotImplementedError

    def _replace(self, stack, profile, token, record):
        raise NotImplementedError

    def _delete(self, stack, profile, token):
        raise NotImplementedError

    def _list(self):
        """Every lock of the backend as (stack, profile, record)."""
        raise NotImplementedError

    def _delete_owned(self, stack, profile, record):
        """Deletes the lock in one step if the run of `record` holds it:
        ("deleted", record), ("free", None), ("other", holder) -- or None when
        the backend cannot."""
        return None

    def release_with_push(self, stack, profile, record):
        """(remote, ref, object id) that a git push of the branch this run
        applied can carry to release the lock the run of `record` holds, in
        the same atomic push; None where the backend cannot (its release is
        then step unlock's own)."""
        return None

    def released_with_push(self, stack, profile):
        """Told that the push carrying release_with_push() landed."""

    def _hint(self, stack, profile):
        return self._written.get((stack, profile))

    def _forget(self, stack, profile):
        self._written.pop((stack, profile), None)

    def read(self, stack, profile):
        validate_identity(stack, profile)
        return self._read(stack, profile)[0]

    def list_locks(self, ttl=None):
        """Every held lock, each as summary(): owner, run, state, age, stale."""
        return [summary(record, ttl) for _stack, _profile, record in self._list()]

    @staticmethod
    def _check_record(stack, profile, record):
        validate_identity(stack, profile)
        if not isinstance(record, dict):
            raise LockError("the run lock needs the run's record (owner and run_id), not "
                            f"{type(record).__name__}")
        _validate_owner(record.get("owner"))
        if not record.get("run_id"):
            raise LockError("the run lock needs the run's record with its run_id")

    def acquire(self, stack, profile, record, check_mode=False, takeover=False, wait=0, ttl=None,
                sleep=time.sleep, clock=time.monotonic):
        """(changed, record now held). Raises LockHeld while another run holds
        it (after waiting up to `wait` seconds for it to be released). With
        `takeover`, a lock of the same owner whose run has ended is replaced,
        and the record held carries `taken_over`."""
        self._check_record(stack, profile, record)
        if (record.get("stack"), record.get("profile")) != (stack, profile):
            raise LockError(f"the record is for {record.get('stack')}/{record.get('profile')}, "
                            f"not {stack}/{profile}")
        deadline = clock() + max(0, wait or 0)
        changes = 0
        while True:
            if not check_mode and self._create(stack, profile, record):
                return True, record
            current, token = self._read(stack, profile)
            if current is None:
                if check_mode:
                    return True, record
                changes += 1
            elif same_run(current, record):
                return False, current
            elif takeover and current.get("owner") == record["owner"] and run_ended(current):
                taken = dict(record, taken_over=_kept(current))
                if check_mode:
                    return True, taken
                if self._replace(stack, profile, token, taken):
                    return True, taken
                changes += 1
            elif clock() < deadline:
                sleep(max(0.05, min(1.0, deadline - clock()) * random.uniform(0.5, 1.0)))
                continue
            else:
                raise LockHeld(current, stack, profile, ttl=ttl, owner=record["owner"])
            if changes >= ATTEMPTS:
                raise LockError(f"run lock {stack}/{profile} kept changing hands over {ATTEMPTS} attempts; "
                                "try again")

    def set_state(self, stack, profile, record, state, detail="", extra=None):
        """Records `state` (running, failed, interrupted), `detail` and the
        fields of `extra` in the lock held by the run of `record`, as a
        compare-and-swap on the lock read; returns the new record. Raises
        LockLost when that run no longer holds it."""
        self._check_record(stack, profile, record)
        if state not in RUN_STATES:
            raise LockError(f"unknown run state {state!r}: use one of {', '.join(RUN_STATES)}")
        # What this run wrote last is most likely still the lock: the swap is
        # tried on it without reading first, and the condition keeps it correct.
        hint = self._hint(stack, profile)
        for attempt in range(ATTEMPTS):
            if attempt == 0 and hint and same_run(hint[1], record):
                current, token = hint[1], hint[0]
            else:
                current, token = self._read(stack, profile)
            if current is None:
                raise LockLost(f"run lock {stack}/{profile} is no longer held by run {record.get('run_id')} "
                               "of {}: it was released or broken".format(record.get("owner")))
            if not same_run(current, record):
                raise LockLost(f"run lock {stack}/{profile} is no longer held by run {record.get('run_id')}: "
                               f"it is held by {describe_holder(current)}")
            changed = dict(current, **(extra or {}))
            changed.update(state=state, detail=str(detail or "")[:1000], updated=format_time(utc_now()))
            if self._replace(stack, profile, token, changed):
                return changed
        raise LockError(f"run lock {stack}/{profile} kept changing over {ATTEMPTS} attempts; try again")

    def release(self, stack, profile, record, check_mode=False):
        """(changed, released record). Only the run that holds the lock may
        release it; a free lock is changed=false."""
        self._check_record(stack, profile, record)
        if not check_mode:
            hint = self._hint(stack, profile)
            if hint and same_run(hint[1], record) and self._delete(stack, profile, hint[0]):
                self._forget(stack, profile)
                return True, hint[1]
            outcome = self._delete_owned(stack, profile, record)
            if outcome and outcome[0] == "deleted":
                self._forget(stack, profile)
                return True, outcome[1]
            if outcome and outcome[0] == "free":
                return False, None
            if outcome and not same_run(outcome[1], record):
                raise LockHeld(outcome[1], stack, profile, action="release")
        for _attempt in range(ATTEMPTS):
            current, token = self._read(stack, profile)
            if current is None:
                self._forget(stack, profile)
                return False, None
            if not same_run(current, record):
                raise LockHeld(current, stack, profile, action="release")
            if check_mode:
                return True, current
            if self._delete(stack, profile, token):
                self._forget(stack, profile)
                return True, current
        raise LockError(f"run lock {stack}/{profile} kept changing hands over {ATTEMPTS} attempts; try again")

    def remove(self, stack, profile, check_mode=False):
        """(changed, removed record): unlock whoever holds it; the record
        returned is the one broken, for the record of who broke what."""
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


@register_backend
class GitLockBackend(LockBackend):
    """A tag object under refs/guardrail/locks/<stack>/<profile> on the remote;
    its message is the record. Every push carries a lease: a create expects no
    ref, a state change or delete expects the object id read, so the remote's
    ref transaction is the compare-and-swap. The ref is outside refs/heads and
    refs/tags, so no ordinary fetch or `git push --tags` copies it or brings a
    released lock back. No local ref is ever created: the remote is the truth."""

    name = "git"

    def __init__(self, repo_path=None, remote=None, timeout=60):
        super().__init__()
        self.repo_path = repo_path or os.getcwd()
        self.remote = remote or "origin"
        self.timeout = timeout
        self.calls = 0
        self._git_dirs = None

    @classmethod
    def from_options(cls, options):
        return cls(repo_path=options.get("repo_path"), remote=options.get("remote"),
                   timeout=options.get("timeout") or 60)

    def _git(self, args, input=None):
        self.calls += 1
        try:
            return run_git_proc(args, self.repo_path, timeout=self.timeout, input=input)
        except GitError as exc:
            raise LockError(str(exc)) from exc

    @staticmethod
    def ref(stack, profile):
        return f"{REF_PREFIX}/{stack}/{profile}"

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

    def git_dirs(self):
        """(git directory, common git directory) of the clone."""
        if self._git_dirs is None:
            try:
                self._git_dirs = git_dirs(self.repo_path, timeout=self.timeout)
            except GitError as exc:
                raise LockError(f"{self.repo_path} is not a git repository: {exc}") from exc
        return self._git_dirs

    def git_dir(self):
        return self.git_dirs()[0]

    def _hint_path(self, stack, profile):
        remote = hashlib.sha1(self.remote.encode("utf-8")).hexdigest()[:16]
        return os.path.join(self.git_dir(), TAG_PREFIX, remote, stack, profile + ".json")

    def _remember(self, stack, profile, oid, content):
        # A hint for a later release from another process: the tag we pushed.
        # The lease on the delete, not this file, decides what is deleted.
        path = self._hint_path(stack, profile)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_atomic(path, json.dumps({"oid": oid, "tag": content}), 0o600, durable=False)
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

    def release_with_push(self, stack, profile, record):
        """The delete, with its lease on the tag this run last wrote (the
        hint: a lock replaced since fails the lease, and the whole push)."""
        self._check_record(stack, profile, record)
        hint = self._hint(stack, profile)
        if not hint or not same_run(hint[1], record):
            return None
        return self.remote, self.ref(stack, profile), hint[0]

    def released_with_push(self, stack, profile):
        self._forget(stack, profile)

    def _objects_dir(self):
        """The object directory of a plain SHA-1 repository, or None."""
        common = self.git_dirs()[1]
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
                    write_atomic(os.path.join(folder, oid[2:]), zlib.compress(data), 0o444, durable=False)
                return oid
            except OSError:
                pass
        proc = self._git(["hash-object", "-t", "tag", "-w", "--stdin"], input=content)
        if proc.returncode != 0:
            raise LockError(str(failure(proc, f"cannot write the lock tag in {self.repo_path}")))
        return proc.stdout.strip()

    def _push(self, stack, profile, expected, record):
        """Pushes `record` as the lock if the remote ref is still `expected`
        (an object id, or "" for no ref). True when written, False on contention."""
        content = self._tag_object(stack, profile, record)
        oid = self._write_tag(content)
        ref = self.ref(stack, profile)
        proc = self._git(["push", "--porcelain", "--no-verify", f"--force-with-lease={ref}:{expected}",
                          self.remote, f"{oid}:{ref}"])
        flags = self._porcelain_flags(proc)
        if proc.returncode == 0 and not expected and flags[:1] == ["="]:
            # The ref already holds this very record: git reports "up to date"
            # without checking the lease, so nothing was created.
            return False
        if proc.returncode == 0 and flags and flags[0] in "*=+ ":
            self._remember(stack, profile, oid, content)
            return True
        if "!" in flags:
            # Losing a race reads as "stale info" (the ref is not what we
            # expected) or "failed to update ref" (the winner held the ref's
            # lock). Any other refusal (a hook, a protected ref) is an error
            # unless the lock is held.
            if any(reason in proc.stdout for reason in CONTENTION) or \
                    (not expected and self._read(stack, profile)[0] is not None):
                return False
        raise LockError(str(failure(proc, f"cannot push the run lock to {self.remote}")))

    def _create(self, stack, profile, record):
        return self._push(stack, profile, "", record)

    def _replace(self, stack, profile, token, record):
        return self._push(stack, profile, token, record)

    def _list(self):
        proc = self._git(["ls-remote", self.remote, f"{REF_PREFIX}/*"])
        if proc.returncode != 0:
            raise LockError(str(failure(proc, f"cannot list the run locks on {self.remote}")))
        found = []
        for line in proc.stdout.splitlines():
            parts = line.split("\t")[-1][len(REF_PREFIX) + 1:].split("/")
            if len(parts) != 2 or any(names.name_problem("name", part) for part in parts):
                continue
            record = self._read(*parts)[0]
            if record is not None:
                found.append((parts[0], parts[1], record))
        return found

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
        if "!" in flags and any(reason in proc.stdout for reason in CONTENTION):
            return False
        raise LockError(str(failure(proc, f"cannot delete the lock tag on {self.remote}")))


class _AWSLockBackend(LockBackend):
    def __init__(self, key=None, **options):
        super().__init__()
        self.key = key
        # Callers name the AWS profile `aws_profile` (the module option) or
        # `profile` (aws.aws_options() and the session); both reach the session.
        self.options = {name: options.get(name) for name in aws.AWS_ARGUMENT_SPEC if name != "aws_profile"}
        self.options["profile"] = options.get("aws_profile") or options.get("profile")
        self.calls = 0
        self._client = None

    # The lock option naming where the locks are (the first argument of __init__).
    place = None

    @classmethod
    def from_options(cls, options):
        aws_options = {name: options[name] for name in (*aws.AWS_ARGUMENT_SPEC, "profile") if name in options}
        return cls(options.get(cls.place), key=options.get("key"), **aws_options)

    def lock_id(self, stack, profile):
        return self.key or f"guardrail/{stack}/{profile}"

    def client(self, service):
        if self._client is None:
            try:
                self._client = aws.client(service, self.options)
            except aws.AWSError as exc:
                raise self._error(exc) from exc
        return self._client

    def _error(self, exc):
        if exc.configuration:
            return LockConfigError(f"the {self.name} run lock backend is not configured: {exc}")
        return LockError(str(exc))

    def _call(self, service, action, expected=(), **kwargs):
        """One API call; returns (response, None) or (None, error code) for an
        expected error code, and raises LockError for any other failure."""
        self.calls += 1
        try:
            return aws.call(self.client(service), action, **kwargs), None
        except aws.AWSError as exc:
            if exc.code in expected:
                return getattr(exc.__cause__, "response", {}), exc.code
            raise self._error(exc) from exc

    @staticmethod
    def _listed(text, lock_id):
        record = record_from_lock_info(text, None, None)
        record.setdefault("lock_id", lock_id)
        return record.get("stack"), record.get("profile"), record


@register_backend
class DynamoDBLockBackend(_AWSLockBackend):
    """OpenTofu's DynamoDB lock item: {LockID, Info}, created with
    attribute_not_exists(LockID); state changes and deletes are conditional on
    an exact match of the Info read."""

    name = "dynamodb"
    place = "table"

    def __init__(self, table=None, key=None, **options):
        if not table:
            raise LockError("the dynamodb backend needs table")
        super().__init__(key=key, **options)
        self.table = table

    def _item(self, stack, profile, record):
        lock_id = self.lock_id(stack, profile)
        info = lock_info(record, lock_id)
        # Run beside tofu's two attributes lets a release check the holding
        # run and delete in one conditional call; tofu ignores it.
        return info, {"LockID": {"S": lock_id}, "Info": {"S": info}, "Run": {"S": _run_key(record)}}

    def _create(self, stack, profile, record):
        info, item = self._item(stack, profile, record)
        _response, code = self._call("dynamodb", "put_item", expected=("ConditionalCheckFailedException",),
                                     TableName=self.table, Item=item,
                                     ConditionExpression="attribute_not_exists(LockID)")
        if code:
            return False
        self._written[(stack, profile)] = (info, record)
        return True

    def _replace(self, stack, profile, token, record):
        info, item = self._item(stack, profile, record)
        _response, code = self._call("dynamodb", "put_item", expected=("ConditionalCheckFailedException",),
                                     TableName=self.table, Item=item, ConditionExpression="Info = :info",
                                     ExpressionAttributeValues={":info": {"S": token}})
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

    def _list(self):
        found = []
        args = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page, _code = self._call("dynamodb", "scan", **args)
            for item in page.get("Items", []):
                info = item.get("Info", {}).get("S")
                if info:  # tofu also keeps state digests (no Info) in this table
                    found.append(self._listed(info, item["LockID"]["S"]))
            if not page.get("LastEvaluatedKey"):
                return found
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _delete_owned(self, stack, profile, record):
        response, code = self._call("dynamodb", "delete_item", expected=("ConditionalCheckFailedException",),
                                    TableName=self.table, Key={"LockID": {"S": self.lock_id(stack, profile)}},
                                    ConditionExpression="#run = :run",
                                    ExpressionAttributeNames={"#run": "Run"},
                                    ExpressionAttributeValues={":run": {"S": _run_key(record)}},
                                    ReturnValues="ALL_OLD", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        item = response.get("Item" if code else "Attributes")
        if not item:
            return None  # no holder returned: let a read tell free from unknown
        held = record_from_lock_info(item.get("Info", {}).get("S", ""), stack, profile)
        return ("other" if code else "deleted"), held

    def _delete(self, stack, profile, token):
        _response, code = self._call("dynamodb", "delete_item", expected=("ConditionalCheckFailedException",),
                                     TableName=self.table, Key={"LockID": {"S": self.lock_id(stack, profile)}},
                                     ConditionExpression="Info = :info",
                                     ExpressionAttributeValues={":info": {"S": token}})
        return not code


@register_backend
class S3LockBackend(_AWSLockBackend):
    """OpenTofu's S3-native lock: the object <key>.tflock written with
    If-None-Match: *; state changes and deletes carry If-Match on the ETag read."""

    name = "s3"
    place = "bucket"
    CONFLICTS = ("PreconditionFailed", "ConditionalRequestConflict")

    def __init__(self, bucket=None, key=None, **options):
        if not bucket:
            raise LockError("the s3 backend needs bucket")
        super().__init__(key=key, **options)
        self.bucket = bucket

    def object_key(self, stack, profile):
        return self.lock_id(stack, profile) + ".tflock"

    def _put(self, stack, profile, record, **condition):
        info = lock_info(record, f"{self.bucket}/{self.lock_id(stack, profile)}")
        response, code = self._call("s3", "put_object", expected=self.CONFLICTS + ("NoSuchKey",),
                                    Bucket=self.bucket, Key=self.object_key(stack, profile),
                                    Body=info.encode("utf-8"), ContentType="application/json", **condition)
        if code:
            return False
        self._written[(stack, profile)] = (response["ETag"], record)
        return True

    def _create(self, stack, profile, record):
        return self._put(stack, profile, record, IfNoneMatch="*")

    def _replace(self, stack, profile, token, record):
        return self._put(stack, profile, record, IfMatch=token)

    def _read(self, stack, profile):
        response, code = self._call("s3", "get_object", expected=("NoSuchKey",), Bucket=self.bucket,
                                    Key=self.object_key(stack, profile))
        if code:
            return None, None
        body = response["Body"].read().decode("utf-8")
        return record_from_lock_info(body, stack, profile), response["ETag"]

    def _list(self):
        found = []
        args = {"Bucket": self.bucket}
        while True:
            page, _code = self._call("s3", "list_objects_v2", **args)
            for item in page.get("Contents", []):
                if not item["Key"].endswith(".tflock"):
                    continue
                response, code = self._call("s3", "get_object", expected=("NoSuchKey",), Bucket=self.bucket,
                                            Key=item["Key"])
                if not code:
                    found.append(self._listed(response["Body"].read().decode("utf-8"), item["Key"][:-7]))
            if not page.get("NextContinuationToken"):
                return found
            args["ContinuationToken"] = page["NextContinuationToken"]

    def _delete(self, stack, profile, token):
        _response, code = self._call("s3", "delete_object", expected=self.CONFLICTS + ("NoSuchKey",),
                                     Bucket=self.bucket, Key=self.object_key(stack, profile), IfMatch=token)
        return not code


BACKENDS = tuple(REGISTRY)


def get_backend(backend, **options):
    """The backend named `backend`, made from the lock options (see
    LockBackend.from_options); options a backend does not use are ignored."""
    if backend not in REGISTRY:
        raise LockError(f"unknown run lock backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return REGISTRY[backend].from_options(options)


__all__ = ["LockError", "LockConfigError", "LockRefused", "LockHeld", "LockLost", "validate_identity",
           "default_identity", "new_record", "get_backend", "LockBackend", "is_stale", "run_ended",
           "summary", "COLLECTION_VERSION"]
