# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seed a shared volume with an application's content exactly once.

Plain Python, no AnsibleModule. The sequence that makes it safe under
concurrency and crashes:

1. Validate everything (paths, the whole source listing or archive) before
   anything is written.
2. If the marker file is present, the volume is hydrated: done.
3. Take an exclusive flock on a lock file inside dest (flock works across NFSv4
   clients), then look for the marker again: another host may have finished
   while this one waited.
4. Deal with what a crashed run left: a staging directory that was fully
   written and synced (it holds the ready file) is moved into place; any other
   staging directory is removed.
5. Copy into a hidden staging directory on the same filesystem, set owner and
   modes, sync the filesystem once, write the ready file, then rename the
   entries into dest.
6. Write the marker last (temp file, fsync, rename, fsync of dest).

A crash before step 6 never leaves a marker, so the next run finishes the job.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import grp
import hashlib
import json
import os
import pwd
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import uuid

MARKER = ".guardrail-hydrated"
LOCK_FILE = ".guardrail-hydrate.lock"
STAGING_PREFIX = ".guardrail-staging-"
READY_FILE = ".guardrail-ready"
MARKER_TMP_PREFIX = ".guardrail-hydrated.tmp-"
# Names in dest that never make it "non-empty" and are never pruned.
IGNORED_NAMES = frozenset(("lost+found", MARKER, LOCK_FILE))
ON_EXISTING_CHOICES = ("fail", "merge", "skip")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")

# A dest equal to one of these is refused; so is anything below SYSTEM_TREES.
SYSTEM_DIRS = frozenset((
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
    "/var", "/var/lib", "/var/log", "/var/tmp", "/usr/local",
))
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                "/proc", "/sbin", "/sys", "/usr")

COPY_CHUNK = 1 << 30
# Check mode lists at most this many paths that it would copy.
WOULD_COPY_LIMIT = 1000


class HydrateError(Exception):
    """Hydration refused or failed; the message says what and what to do."""


class Entry:
    """One item of the source: a directory, regular file, symlink or hard link."""

    __slots__ = ("path", "kind", "size", "mode", "uid", "gid", "mtime_ns", "target", "member")

    def __init__(self, path, kind, size=0, mode=0o644, uid=0, gid=0, mtime_ns=0, target=None,
                 member=None):
        self.path = path
        self.kind = kind  # "dir", "file", "symlink" or "hardlink"
        self.size = size
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.target = target
        self.member = member


class Source:
    """A validated source: its entries in copy order and a digest."""

    def __init__(self, kind, location, entries, digest, archive_path=None):
        self.kind = kind  # "dir" or "archive"
        self.location = location
        self.entries = entries
        self.digest = digest
        self.archive_path = archive_path

    @property
    def files(self):
        return sum(1 for e in self.entries if e.kind in ("file", "hardlink"))

    @property
    def bytes(self):
        return sum(e.size for e in self.entries if e.kind == "file")


# --------------------------------------------------------------------- paths

def _has_dotdot(path):
    return ".." in path.split("/")


def check_dest(dest):
    """Refuses a relative dest, `..`, and system directories (also through symlinks)."""
    if not dest or not os.path.isabs(dest):
        raise HydrateError(f"dest must be an absolute path, got {dest!r}")
    if _has_dotdot(dest):
        raise HydrateError(f"dest must not contain '..': {dest!r}")
    normal = os.path.normpath(dest)
    for candidate in (normal, os.path.realpath(normal)):
        if candidate in SYSTEM_DIRS or any(
                candidate == tree or candidate.startswith(tree + "/") for tree in SYSTEM_TREES):
            raise HydrateError(
                f"refusing to hydrate the system directory {candidate!r}: give the mounted "
                "volume or a directory in it")
    if os.path.lexists(normal) and not os.path.isdir(normal):
        raise HydrateError(f"dest {normal!r} exists and is not a directory")
    return normal


def parse_s3_url(src):
    rest = src[len("s3://"):]
    bucket, key = rest.split("/", 1) if "/" in rest else (rest, "")
    if not bucket or not key or key.endswith("/"):
        raise HydrateError(f"src {src!r} must be s3://bucket/key of a .tar or .tar.gz archive")
    return bucket, key


def check_src(src, dest):
    """Classifies src as ("s3", url) | ("dir", path) | ("archive", path)."""
    if not src:
        raise HydrateError("src is required")
    if src.startswith("s3://"):
        parse_s3_url(src)
        return "s3", src
    if not os.path.isabs(src):
        raise HydrateError(f"src must be an absolute path or s3://bucket/key, got {src!r}")
    if _has_dotdot(src):
        raise HydrateError(f"src must not contain '..': {src!r}")
    src = os.path.normpath(src)
    if not os.path.exists(src):
        raise HydrateError(f"src {src!r} does not exist")
    if os.path.isdir(src):
        real_src, real_dest = os.path.realpath(src), os.path.realpath(dest)
        if _within(real_dest, real_src) or _within(real_src, real_dest):
            raise HydrateError(f"src {src!r} and dest {dest!r} must not contain each other")
        return "dir", src
    if os.path.isfile(src):
        return "archive", src
    raise HydrateError(f"src {src!r} is neither a directory nor an archive file")


def _within(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def _inside(relpath):
    """True when a normalised relative path stays inside its root."""
    return relpath != ".." and not relpath.startswith("../") and not os.path.isabs(relpath)


def _link_stays_inside(link_relpath, target):
    if os.path.isabs(target):
        return False
    resolved = os.path.normpath(os.path.join(os.path.dirname(link_relpath), target))
    return _inside(resolved)


# -------------------------------------------------------------------- sources

def _digest_listing(entries):
    """A digest of a directory's listing: paths, kinds, sizes, mtimes, modes and
    link targets. Cheap on 20,000 files, and it changes whenever a file is
    replaced, resized or touched."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.kind}\0{e.path}\0{e.size}\0{e.mtime_ns}\0{e.mode:o}\0{e.target or ''}\n"
                 .encode("utf-8", "surrogateescape"))
    return "sha256-listing:" + h.hexdigest()


def scan_dir(root):
    """Validated entries of a local directory, parents before children.

    Refuses device files, FIFOs, sockets and symlinks that escape the tree
    (absolute targets included: they would point outside dest once copied)."""
    entries = []
    problems = []
    stack = [""]
    while stack:
        rel = stack.pop()
        base = os.path.join(root, rel) if rel else root
        try:
            with os.scandir(base) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            raise HydrateError(f"cannot read source directory {base!r}: {exc.strerror}") from exc
        subdirs = []
        for d in children:
            path = f"{rel}/{d.name}" if rel else d.name
            st = d.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                entries.append(Entry(path, "dir", 0, mode, st.st_uid, st.st_gid, st.st_mtime_ns))
                subdirs.append(path)
            elif stat.S_ISREG(st.st_mode):
                entries.append(Entry(path, "file", st.st_size, mode, st.st_uid, st.st_gid,
                                     st.st_mtime_ns))
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(d.path)
                if not _link_stays_inside(path, target):
                    problems.append(f"symlink {path} -> {target} escapes the source")
                entries.append(Entry(path, "symlink", 0, 0o777, st.st_uid, st.st_gid,
                                     st.st_mtime_ns, target=target))
            else:
                problems.append(f"{path} is a device file, FIFO or socket")
        stack.extend(reversed(subdirs))
    if problems:
        raise HydrateError("refusing the source {}: {}".format(root, "; ".join(problems[:10])))
    return entries


def _hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def scan_archive(path):
    """Validated entries of a tar archive, read in full before anything is written.

    Refuses absolute member names, `..`, members below a symlink member,
    symlinks and hard links that leave the archive's tree, and device files."""
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise HydrateError(f"cannot read archive {path!r}: {exc}") from exc
    problems = []
    by_path = {}
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise HydrateError(f"cannot read archive {path!r}: {exc}") from exc
    for m in members:
        raw = m.name
        if raw.startswith("/") or os.path.isabs(raw):
            problems.append(f"member {raw} has an absolute path")
            continue
        if _has_dotdot(raw):
            problems.append(f"member {raw} contains '..'")
            continue
        rel = os.path.normpath(raw)
        if rel == ".":
            continue
        if m.isdir():
            entry = Entry(rel, "dir", 0, m.mode & 0o7777, m.uid, m.gid, int(m.mtime) * 10 ** 9)
        elif m.isreg():
            entry = Entry(rel, "file", m.size, m.mode & 0o7777, m.uid, m.gid,
                          int(m.mtime) * 10 ** 9, member=m)
        elif m.issym():
            if not _link_stays_inside(rel, m.linkname):
                problems.append(f"symlink {rel} -> {m.linkname} escapes the destination")
                continue
            entry = Entry(rel, "symlink", 0, 0o777, m.uid, m.gid, int(m.mtime) * 10 ** 9,
                          target=m.linkname)
        elif m.islnk():
            target = os.path.normpath(m.linkname) if m.linkname else ""
            if os.path.isabs(m.linkname) or _has_dotdot(m.linkname) or not _inside(target):
                problems.append(f"hard link {rel} -> {m.linkname} escapes the destination")
                continue
            linked = by_path.get(target)
            if linked is None or linked.kind != "file":
                problems.append(f"hard link {rel} -> {m.linkname} does not name an earlier file")
                continue
            entry = Entry(rel, "hardlink", 0, linked.mode, m.uid, m.gid, linked.mtime_ns,
                          target=target)
        else:
            problems.append(f"member {rel} is a device file, FIFO or other special file")
            continue
        previous = by_path.get(rel)
        if previous is not None and (previous.kind == "dir") != (entry.kind == "dir"):
            problems.append(f"member {rel} appears both as a directory and as a file")
            continue
        by_path[rel] = entry
    # A member below a symlink would be written through that link.
    for rel in by_path:
        parent = os.path.dirname(rel)
        while parent:
            parent_entry = by_path.get(parent)
            if parent_entry is not None and parent_entry.kind != "dir":
                problems.append(f"member {rel} lies below the non-directory member {parent}")
                break
            parent = os.path.dirname(parent)
    if problems:
        raise HydrateError("refusing the archive {}: {}".format(path, "; ".join(problems[:10])))
    # Implicit parents (archives may omit directory members) come first.
    entries = []
    seen_dirs = set()
    for rel in sorted(by_path, key=lambda p: (p.count("/"), p)):
        parent = os.path.dirname(rel)
        missing = []
        while parent and parent not in by_path and parent not in seen_dirs:
            missing.append(parent)
            parent = os.path.dirname(parent)
        for d in reversed(missing):
            seen_dirs.add(d)
            entries.append(Entry(d, "dir", 0, 0o755, 0, 0, 0))
        entries.append(by_path[rel])
    return entries


def fetch_s3(src, aws_options, directory):
    """Downloads s3://bucket/key into `directory`; returns the local path."""
    from ansible_collections.guardrail.ecs.plugins.module_utils import aws

    bucket, key = parse_s3_url(src)
    s3 = aws.client("s3", aws_options or {})
    response = aws.call(s3, "get_object", Bucket=bucket, Key=key)
    local = os.path.join(directory, "source" + (".tar.gz" if key.endswith((".gz", ".tgz")) else ".tar"))
    body = response["Body"]
    try:
        with open(local, "wb") as f:
            shutil.copyfileobj(body, f, 1 << 20)
    finally:
        body.close()
    return local


def load_source(src, dest, aws_options=None, workdir=None):
    kind, location = check_src(src, dest)
    if kind == "dir":
        entries = scan_dir(location)
        return Source("dir", location, entries, _digest_listing(entries))
    if kind == "s3":
        location = fetch_s3(src, aws_options, workdir)
    entries = scan_archive(location)
    return Source("archive", src, entries, _hash_file(location), archive_path=location)


# ------------------------------------------------------------- owner and mode

def resolve_owner(owner, group):
    uid = gid = None
    if owner not in (None, ""):
        owner = str(owner)
        if owner.isdigit():
            uid = int(owner)
        else:
            try:
                uid = pwd.getpwnam(owner).pw_uid
            except KeyError:
                raise HydrateError(f"owner {owner!r} does not exist on this host") from None
    if group not in (None, ""):
        group = str(group)
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise HydrateError(f"group {group!r} does not exist on this host") from None
    return uid, gid


def parse_mode(value, name):
    """An octal string ("0640") or the integer YAML makes of 0640."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        try:
            mode = int(text, 8)
        except ValueError:
            raise HydrateError(f"{name} must be an octal mode such as '0755', got {value!r}") from None
    if not 0 <= mode <= 0o7777:
        raise HydrateError(f"{name} {value!r} is out of range")
    return mode


class Policy:
    """What owner and modes each copied entry gets."""

    def __init__(self, uid=None, gid=None, dir_mode=None, file_mode=None):
        self.uid = uid
        self.gid = gid
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self.is_root = os.geteuid() == 0

    def mode(self, entry):
        if entry.kind == "dir":
            return self.dir_mode if self.dir_mode is not None else entry.mode
        return self.file_mode if self.file_mode is not None else entry.mode

    def ids(self, entry):
        """Owner ids to set, like cp -a and tar: the source's ids only as root."""
        uid = self.uid if self.uid is not None else (entry.uid if self.is_root else -1)
        gid = self.gid if self.gid is not None else (entry.gid if self.is_root else -1)
        return uid, gid


# ------------------------------------------------------------------ the lock

def _who():
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class DestLock:
    """An exclusive flock on dest/.guardrail-hydrate.lock, held until close().

    The lock file stays: unlinking it would let a waiter lock an orphaned inode."""

    def __init__(self, dest, timeout, poll=0.05):
        self.path = os.path.join(dest, LOCK_FILE)
        self.timeout = timeout
        self.poll = poll
        self.fd = None

    def __enter__(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            writable = True
        except PermissionError:
            # Created by another user: a read-only descriptor can still be flocked.
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            writable = False
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise HydrateError(f"cannot lock {self.path}: {exc.strerror}") from exc
            if time.monotonic() >= deadline:
                holder = _read_text(self.path).strip() or "unknown"
                os.close(fd)
                raise HydrateError(
                    f"timed out after {self.timeout}s waiting for the lock {self.path}, "
                    f"held by {holder}; raise lock_timeout if a large copy is running")
            time.sleep(self.poll)
        if writable:
            # Who holds it, for the message of anyone who times out waiting.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{_who()} since {_now()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return False


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------ durability

def _syncfs_function():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError, TypeError):
        return None


_SYNCFS = _syncfs_function()


def sync_filesystem(path):
    """Flushes every dirty page and inode of the filesystem holding `path`.

    One syncfs() instead of an fsync per file and directory: the same
    guarantee for the staging tree at a fraction of the cost. Falls back to
    sync() where syncfs is unavailable."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _SYNCFS is None or _SYNCFS(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, data, tmp_prefix):
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f"{tmp_prefix}{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps(data, sort_keys=True, indent=2) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)


def read_marker(dest):
    """The marker's content, or None when dest is not hydrated."""
    path = os.path.join(dest, MARKER)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HydrateError(f"cannot read the marker {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError:
        data = {"unreadable": text[:200]}
    return data if isinstance(data, dict) else {"unreadable": text[:200]}


# ------------------------------------------------------------------ copying

def _copy_file_data(src_fd, dst_fd, size):
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(dst_fd, src_fd, offset, min(COPY_CHUNK, size - offset))
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS) and offset == 0:
                _copy_file_data_plain(src_fd, dst_fd)
                return
            raise
        if sent == 0:
            break
        offset += sent


def _copy_file_data_plain(src_fd, dst_fd):
    while True:
        chunk = os.read(src_fd, 1 << 20)
        if not chunk:
            return
        os.write(dst_fd, chunk)


def _apply_meta(fd_or_path, entry, policy, is_link=False):
    uid, gid = policy.ids(entry)
    if uid != -1 or gid != -1:
        if is_link:
            os.lchown(fd_or_path, uid, gid)
        else:
            os.chown(fd_or_path, uid, gid)
    if not is_link:
        # chmod after chown: chown clears setuid/setgid bits.
        os.chmod(fd_or_path, policy.mode(entry))


def _copy_order(source, entries):
    """Directories parents first, then files (in archive order, so a compressed
    archive is streamed once), then links, whose targets must exist first."""
    dirs = [e for e in entries if e.kind == "dir"]
    files = [e for e in entries if e.kind == "file"]
    if source.kind == "archive":
        files.sort(key=lambda e: e.member.offset_data)
    links = [e for e in entries if e.kind == "symlink"] + [e for e in entries if e.kind == "hardlink"]
    return dirs, files, links


def _write_file(source, tar, staging, entry, policy):
    target = os.path.join(staging, entry.path)
    dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if tar is None:
            src_fd = os.open(os.path.join(source.location, entry.path), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _copy_file_data(src_fd, dst_fd, entry.size)
            finally:
                os.close(src_fd)
        else:
            reader = tar.extractfile(entry.member)
            with os.fdopen(os.dup(dst_fd), "wb") as out:
                shutil.copyfileobj(reader, out, 1 << 20)
        _apply_meta(dst_fd, entry, policy)
        os.utime(dst_fd, ns=(entry.mtime_ns, entry.mtime_ns))
    finally:
        os.close(dst_fd)


def copy_into(source, staging, dest, entries, policy):
    """Writes `entries` below `staging`. Parents that are not copied (they
    already exist in dest) become plain placeholders, merged away on the move."""
    dirs, files, links = _copy_order(source, entries)
    copied_dirs = {e.path for e in dirs}
    placeholders = set()
    for e in entries:
        parent = os.path.dirname(e.path)
        while parent and parent not in copied_dirs and parent not in placeholders:
            placeholders.add(parent)
            parent = os.path.dirname(parent)
    for rel in sorted(placeholders, key=lambda p: p.count("/")):
        os.mkdir(os.path.join(staging, rel), 0o700)
    for e in dirs:
        os.mkdir(os.path.join(staging, e.path), 0o700)
    tar = tarfile.open(source.archive_path, "r:*") if source.kind == "archive" else None
    try:
        for e in files:
            _write_file(source, tar, staging, e, policy)
    finally:
        if tar is not None:
            tar.close()
    for e in links:
        path = os.path.join(staging, e.path)
        if e.kind == "symlink":
            os.symlink(e.target, path)
            _apply_meta(path, e, policy, is_link=True)
            os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
        else:
            linked = os.path.join(staging, e.target)
            os.link(linked if os.path.lexists(linked) else os.path.join(dest, e.target), path)
    # Directory owner, mode and times last: a read-only mode would stop a
    # non-root copy, and creating children changes the times.
    for e in reversed(dirs):
        path = os.path.join(staging, e.path)
        _apply_meta(path, e, policy)
        os.utime(path, ns=(e.mtime_ns, e.mtime_ns))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _is_ours(name):
    return name.startswith(STAGING_PREFIX) or name.startswith(MARKER_TMP_PREFIX)


def _dest_entries(dest):
    """Top-level names in dest that count as content."""
    try:
        names = os.listdir(dest)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n not in IGNORED_NAMES and not _is_ours(n))


def move_into(staging, dest, overwrite):
    """Renames staging's entries into dest, descending into directories that
    already exist there. Each rename is atomic; a rerun after a crash picks up
    what is left in staging."""
    stack = [""]
    while stack:
        rel = stack.pop()
        for name in sorted(os.listdir(os.path.join(staging, rel) if rel else staging)):
            if not rel and name == READY_FILE:
                continue
            path = f"{rel}/{name}" if rel else name
            from_path = os.path.join(staging, path)
            to_path = os.path.join(dest, path)
            try:
                to_st = os.lstat(to_path)
            except FileNotFoundError:
                os.rename(from_path, to_path)
                continue
            from_is_dir = stat.S_ISDIR(os.lstat(from_path).st_mode)
            if from_is_dir and stat.S_ISDIR(to_st.st_mode):
                stack.append(path)
            elif overwrite and not from_is_dir and not stat.S_ISDIR(to_st.st_mode):
                os.rename(from_path, to_path)


def _same(entry, st):
    """True when what dest holds at entry's path already has entry's content."""
    kind = entry.kind
    if kind == "symlink":
        return stat.S_ISLNK(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return False
    return kind == "hardlink" or (st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns)


def _meta_differs(st, mode, uid, gid):
    return ((mode is not None and stat.S_IMODE(st.st_mode) != mode)
            or (uid not in (None, -1) and st.st_uid != uid)
            or (gid not in (None, -1) and st.st_gid != gid))


class Plan:
    """What a run changes, decided before anything is written."""

    def __init__(self):
        self.copy = []      # entries to write into staging
        self.fix_meta = []  # entries present with the right content but the wrong owner or mode
        self.kept = []      # paths dest already has, left as they are
        self.prune = []     # paths in dest that are not in the source
        self.fix_root = False

    @property
    def changed(self):
        return bool(self.copy or self.fix_meta or self.prune or self.fix_root)

    @property
    def files(self):
        return sum(1 for e in self.copy if e.kind in ("file", "hardlink"))

    @property
    def bytes(self):
        return sum(e.size for e in self.copy if e.kind == "file")


def make_plan(source, dest, policy, overwrite, prune):
    """Compares the source with dest. Refuses type clashes, which could only be
    resolved by deleting user data (a file where the source has a directory,
    or the reverse)."""
    result = Plan()
    if os.path.isdir(dest):
        st = os.stat(dest)
        result.fix_root = _meta_differs(st, policy.dir_mode, policy.uid, policy.gid)
    else:
        result.fix_root = True
    if not _dest_entries(dest):
        result.copy = list(source.entries)
        return result
    clashes = []
    absent_dirs = set()
    clashed = set()
    for entry in source.entries:
        if os.path.dirname(entry.path) in clashed:
            clashed.add(entry.path)
            continue
        if os.path.dirname(entry.path) in absent_dirs:
            if entry.kind == "dir":
                absent_dirs.add(entry.path)
            result.copy.append(entry)
            continue
        try:
            st = os.lstat(os.path.join(dest, entry.path))
        except FileNotFoundError:
            if entry.kind == "dir":
                absent_dirs.add(entry.path)
            result.copy.append(entry)
            continue
        if entry.kind == "dir":
            if not stat.S_ISDIR(st.st_mode):
                clashes.append(f"{entry.path} is a directory in the source but not in dest")
                clashed.add(entry.path)
            elif overwrite and _meta_differs(st, policy.mode(entry), *policy.ids(entry)):
                result.fix_meta.append(entry)
        elif stat.S_ISDIR(st.st_mode):
            clashes.append(f"{entry.path} is a directory in dest but not in the source")
        elif not overwrite:
            result.kept.append(entry.path)
        elif not _same(entry, st):
            result.copy.append(entry)
        elif entry.kind == "file" and _meta_differs(st, policy.mode(entry), *policy.ids(entry)):
            result.fix_meta.append(entry)
    if clashes:
        raise HydrateError("dest and the source disagree, nothing was changed: "
                           + "; ".join(clashes[:10]))
    if prune:
        wanted = {e.path for e in source.entries}
        stack = [""]
        while stack:
            rel = stack.pop()
            base = os.path.join(dest, rel) if rel else dest
            with os.scandir(base) as it:
                for d in sorted(it, key=lambda d: d.name):
                    if not rel and (d.name in IGNORED_NAMES or _is_ours(d.name)):
                        continue
                    path = f"{rel}/{d.name}" if rel else d.name
                    if path not in wanted:
                        result.prune.append(path)
                    elif d.is_dir(follow_symlinks=False):
                        stack.append(path)
    return result


# ------------------------------------------------------------------ the run

def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _prune(dest, paths):
    for rel in paths:
        path = os.path.join(dest, rel)
        if os.path.lexists(path):
            _remove(path)


def _finish(staging, dest, ready, marker):
    """From a synced staging tree with its ready file to the marker: the part
    that a rerun repeats after a crash."""
    move_into(staging, dest, bool(ready.get("overwrite")))
    _prune(dest, ready.get("prune") or [])
    sync_filesystem(dest)
    write_json_atomic(os.path.join(dest, MARKER), marker, MARKER_TMP_PREFIX)
    shutil.rmtree(staging)


def recover(dest):
    """Finishes or removes what an interrupted run left; call with the lock
    held. Returns the marker written for a finished run, or None."""
    finished = None
    for name in sorted(os.listdir(dest)):
        if not _is_ours(name):
            continue
        path = os.path.join(dest, name)
        ready = read_json(os.path.join(path, READY_FILE)) if name.startswith(STAGING_PREFIX) else {}
        if ready.get("marker") and not os.path.islink(path):
            ready["marker"]["recovered"] = _now()
            _finish(path, dest, ready, ready["marker"])
            finished = ready["marker"]
        else:
            _remove(path)
    return finished


def _marker_record(source, plan, previous):
    now = _now()
    return {
        "source": source.location,
        "digest": source.digest,
        "files": source.files,
        "bytes": source.bytes,
        "copied_files": plan.files,
        "copied_bytes": plan.bytes,
        "time": now,
        "first_hydrated": (previous or {}).get("first_hydrated", (previous or {}).get("time", now)),
        "who": _who(),
    }


def apply_plan(source, dest, policy, plan, overwrite, prune, previous_marker):
    staging = os.path.join(dest, STAGING_PREFIX + uuid.uuid4().hex)
    os.mkdir(staging, 0o700)
    copy_into(source, staging, dest, plan.copy, policy)
    for e in plan.fix_meta:
        _apply_meta(os.path.join(dest, e.path), e, policy)
    if plan.fix_root:
        os.chown(dest, policy.uid if policy.uid is not None else -1,
                 policy.gid if policy.gid is not None else -1)
        if policy.dir_mode is not None:
            os.chmod(dest, policy.dir_mode)
    # Every file and directory of the staging tree durable before anything moves.
    sync_filesystem(staging)
    marker = _marker_record(source, plan, previous_marker)
    ready = {"overwrite": overwrite, "prune": plan.prune if prune else [], "marker": marker}
    write_json_atomic(os.path.join(staging, READY_FILE), ready, ".guardrail-ready.tmp-")
    _finish(staging, dest, ready, marker)
    return marker


def _refuse_existing(dest, existing):
    listed = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
    raise HydrateError(
        f"{dest} is not empty and has no marker {MARKER} (found: {listed}); set on_existing "
        "to merge to add the source's files to it, or to skip to leave it as it is")


def hydrate(src, dest, owner=None, group=None, dir_mode=None, file_mode=None,
            on_existing="fail", force=False, prune=False, lock_timeout=900,
            check_mode=False, aws_options=None):
    """Hydrates dest from src exactly once. Returns a dict with changed, seeded,
    files, bytes (copied by this run), digest, duration, and details."""
    started = time.monotonic()
    if on_existing not in ON_EXISTING_CHOICES:
        raise HydrateError(f"on_existing must be one of {', '.join(ON_EXISTING_CHOICES)}")
    dest = check_dest(dest)
    kind = check_src(src, dest)[0]
    uid, gid = resolve_owner(owner, group)
    policy = Policy(uid, gid, parse_mode(dir_mode, "dir_mode"), parse_mode(file_mode, "file_mode"))
    result = dict(changed=False, seeded=False, recovered=False, files=0, bytes=0, digest=None,
                  dest=dest, pruned=[], kept=[], marker=None)

    def done(**values):
        result.update(values)
        result["duration"] = round(time.monotonic() - started, 3)
        return result

    marker = read_marker(dest)
    if marker is not None and not force:
        return done(marker=marker, digest=marker.get("digest"),
                    msg=f"{dest} is already hydrated (marker {MARKER})")

    with tempfile.TemporaryDirectory(prefix="guardrail-hydrate-") as workdir:
        # The whole source is validated before anything is written to dest.
        source = load_source(src, dest, aws_options, workdir if kind == "s3" else None)
        result["digest"] = source.digest
        _check_writable_dirs(source, policy)
        if check_mode:
            return _check(source, dest, policy, on_existing, force, prune, marker, done)
        if not os.path.isdir(dest):
            os.makedirs(dest, 0o755)
        with DestLock(dest, lock_timeout):
            recovered = recover(dest)
            marker = read_marker(dest)
            if recovered is not None:
                result.update(changed=True, seeded=True, recovered=True)
            if marker is not None and not force:
                if recovered is not None:
                    return done(marker=marker, digest=marker.get("digest"),
                                files=marker.get("copied_files", 0), bytes=marker.get("copied_bytes", 0),
                                msg=f"{dest}: finished a hydration that was interrupted")
                return done(marker=marker, digest=marker.get("digest"),
                            msg=f"{dest} is already hydrated (marker {MARKER})")
            existing = _dest_entries(dest)
            if marker is None and existing:
                if on_existing == "fail":
                    _refuse_existing(dest, existing)
                if on_existing == "skip":
                    return done(msg=f"{dest} is not empty and has no marker; left as it is "
                                    "(on_existing=skip)")
            work = make_plan(source, dest, policy, force, prune)
            if marker is not None and not work.changed:
                return done(marker=marker, msg=f"{dest} already matches {src}")
            marker_written = apply_plan(source, dest, policy, work, force, prune, marker)
            return done(changed=True, seeded=result["seeded"] or marker is None,
                        files=work.files, bytes=work.bytes, pruned=work.prune, kept=work.kept,
                        marker=marker_written,
                        msg=f"{dest}: copied {work.files} files ({work.bytes} bytes) from {src}")


def _check_writable_dirs(source, policy):
    """Without root, files cannot be given to another owner, and a directory
    that its owner cannot write can be neither filled nor renamed into place."""
    if policy.is_root:
        return
    if policy.uid is not None and policy.uid != os.geteuid():
        raise HydrateError(f"owner {policy.uid} needs root: this run is uid {os.geteuid()} (use become)")
    if policy.dir_mode is not None and not policy.dir_mode & 0o200:
        raise HydrateError(f"dir_mode {policy.dir_mode:04o} must let the owner write when not running as root")
    read_only = [e.path for e in source.entries if e.kind == "dir" and not policy.mode(e) & 0o200]
    if read_only:
        raise HydrateError("source directories that their owner cannot write need root or a dir_mode "
                           "with owner write: " + ", ".join(read_only[:5]))


def _check(source, dest, policy, on_existing, force, prune, marker, done):
    """Check mode: what a run would do, with no lock and nothing written."""
    existing = _dest_entries(dest)
    if marker is None and existing:
        if on_existing == "fail":
            _refuse_existing(dest, existing)
        if on_existing == "skip":
            return done(msg=f"{dest} is not empty and has no marker; would leave it as it is")
    work = make_plan(source, dest, policy, force, prune)
    changed = marker is None or work.changed
    return done(changed=changed, seeded=marker is None, files=work.files, bytes=work.bytes,
                pruned=work.prune, kept=work.kept,
                would_copy=[e.path for e in work.copy if e.kind != "dir"][:WOULD_COPY_LIMIT],
                msg=f"{dest}: would copy {work.files} files ({work.bytes} bytes) from {source.location}")
