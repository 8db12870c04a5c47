# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seed a shared volume with an application's content exactly once.

Plain Python, no AnsibleModule. The sequence that makes it safe under
concurrency and crashes (the on-disk protocol is written down once, in
roles/efs_volume/PROTOCOL.md):

1. Validate everything (paths, the whole source listing or archive, symlinks
   by where they resolve) before anything is written.
2. If the marker file is present, the volume is hydrated: done.
3. Take an exclusive flock on a lock file inside dest (flock works across NFSv4
   clients), then look for the marker again: another host may have finished
   while this one waited.
4. Deal with what a crashed run left: a staging directory this uid created
   (mode 0700) that holds a valid ready record is moved into place; anything
   else bearing a staging name is removed.
5. Copy into a hidden staging directory on the same filesystem, set owner and
   modes, sync the filesystem once, write the ready record, then rename the
   entries into dest.
6. Write the marker last (temp file, fsync, rename, fsync of dest).

A crash before step 6 never leaves a marker, so the next run finishes the job.

The volume is writable by others (every task that mounts it). Everything in
dest is reached through directory descriptors opened with O_NOFOLLOW, owner
and mode are set on opened descriptors, the lock, marker, staging and ready
names are refused unless they are what this uid created, and nothing read
from the volume is trusted for a path outside it.
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
from urllib.parse import quote_from_bytes, unquote_to_bytes

MARKER = ".guardrail-hydrated"
LOCK_FILE = ".guardrail-hydrate.lock"
LOCK_DIR = LOCK_FILE + ".d"
STAGING_PREFIX = ".guardrail-staging-"
READY_FILE = ".guardrail-ready"
READY_TMP = ".guardrail-ready.tmp"
MARKER_TMP_PREFIX = ".guardrail-hydrated.tmp-"
READY_FORMAT = "guardrail-hydrate-ready 1"
# Records read from the volume are never read past these sizes.
MARKER_MAX = 64 << 10
READY_MAX = 16 << 20
# Names in dest that never make it "non-empty" and are never pruned.
IGNORED_NAMES = frozenset(("lost+found", MARKER, LOCK_FILE, LOCK_DIR, LOCK_DIR + ".break"))
ON_EXISTING_CHOICES = ("fail", "merge", "skip")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# Symlink hops followed while judging where a source symlink resolves.
MAX_LINK_HOPS = 40

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

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW


class HydrateError(Exception):
    """Hydration refused or failed; the message says what and what to do."""


class Entry:
    """One item of the source: a directory, regular file, symlink or hard link."""

    __slots__ = ("path", "kind", "size", "mode", "uid", "gid", "mtime_ns", "target", "member", "dense")

    def __init__(self, path, kind, size=0, mode=0o644, uid=0, gid=0, mtime_ns=0, target=None,
                 member=None, dense=False):
        self.path = path
        self.kind = kind  # "dir", "file", "symlink" or "hardlink"
        self.size = size
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.target = target
        self.member = member
        # A file whose blocks cover its size has no hole to look for.
        self.dense = dense


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


def _system_dir(path):
    return path in SYSTEM_DIRS or any(path == tree or path.startswith(tree + "/")
                                      for tree in SYSTEM_TREES)


def check_dest(dest):
    """The absolute path dest stands for, resolved once: refuses a relative
    dest, `..`, a dest that is itself a symlink, and system directories
    (also when a symlinked parent leads into one)."""
    if not dest or not os.path.isabs(dest):
        raise HydrateError(f"dest must be an absolute path, got {dest!r}")
    if _has_dotdot(dest):
        raise HydrateError(f"dest must not contain '..': {dest!r}")
    normal = os.path.normpath(dest)
    resolved = normal if normal == "/" else os.path.join(
        os.path.realpath(os.path.dirname(normal)), os.path.basename(normal))
    for candidate in (normal, resolved, os.path.realpath(normal)):
        if _system_dir(candidate):
            raise HydrateError(
                f"refusing to hydrate the system directory {candidate!r}: give the mounted "
                "volume or a directory in it")
    if os.path.islink(normal):
        raise HydrateError(
            f"dest {normal!r} is a symlink: refusing to follow it; give the directory it should be")
    if os.path.lexists(resolved) and not os.path.isdir(resolved):
        raise HydrateError(f"dest {normal!r} exists and is not a directory")
    return resolved


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
        if not os.access(src, os.R_OK):
            raise HydrateError(f"src {src!r} is not readable by uid {os.geteuid()} (use become)")
        return "archive", src
    raise HydrateError(f"src {src!r} is neither a directory nor an archive file")


def _within(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def _inside(relpath):
    """True when a normalised relative path stays inside its root."""
    return relpath != ".." and not relpath.startswith("../") and not os.path.isabs(relpath)


def resolve_in_tree(link_path, links):
    """Where the symlink `link_path` resolves in the tree the source becomes,
    following the tree's own symlinks (`links`: path -> target) hop by hop.
    Returns the resolved relative path, or None when it leaves the tree
    (an absolute target, `..` above the root, or too many hops)."""
    hops = 0
    parts = [p for p in os.path.dirname(link_path).split("/") if p]
    pending = links[link_path].split("/")
    if links[link_path].startswith("/"):
        return None
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        here = "/".join(parts)
        target = links.get(here)
        if target is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or target.startswith("/"):
            return None
        parts.pop()
        pending = target.split("/") + pending
    return "/".join(parts)


def _escaping_links(entries):
    """Symlink entries that resolve outside the tree, judged by resolution."""
    links = {e.path: e.target for e in entries if e.kind == "symlink"}
    return [f"symlink {path} -> {target} resolves outside the tree"
            for path, target in links.items() if resolve_in_tree(path, links) is None]


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

    Refuses device files, FIFOs, sockets, files this uid cannot read, and
    symlinks that resolve outside the tree (through other links too).
    A file with several names in the tree is copied once and linked."""
    entries = []
    problems = []
    inodes = {}
    check_read = os.geteuid() != 0
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
                if check_read and not os.access(d.path, os.R_OK | os.X_OK):
                    problems.append(f"directory {path} is not readable by uid {os.geteuid()}")
                entries.append(Entry(path, "dir", 0, mode, st.st_uid, st.st_gid, st.st_mtime_ns))
                subdirs.append(path)
            elif stat.S_ISREG(st.st_mode):
                if check_read and not os.access(d.path, os.R_OK):
                    problems.append(f"file {path} is not readable by uid {os.geteuid()}")
                first = inodes.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
                if first is not None:
                    entries.append(Entry(path, "hardlink", 0, mode, st.st_uid, st.st_gid,
                                         st.st_mtime_ns, target=first))
                    continue
                if st.st_nlink > 1:
                    inodes[(st.st_dev, st.st_ino)] = path
                entries.append(Entry(path, "file", st.st_size, mode, st.st_uid, st.st_gid,
                                     st.st_mtime_ns, dense=st.st_blocks * 512 >= st.st_size))
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(d.path)
                entries.append(Entry(path, "symlink", 0, 0o777, st.st_uid, st.st_gid,
                                     st.st_mtime_ns, target=target))
            else:
                problems.append(f"{path} is a device file, FIFO or socket")
        stack.extend(reversed(subdirs))
    problems.extend(_escaping_links(entries))
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
    symlinks that resolve outside the archive's tree, hard links that leave it, and device files."""
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
    problems.extend(_escaping_links(by_path.values()))
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
    from ansible_collections.guardrail.ecs.plugins.module_utils.common import aws

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


def _refuse_reserved(entries, where):
    """The hydrator's own names at the top of the source would replace its
    lock, marker or staging trees."""
    reserved = [e.path for e in entries
                if "/" not in e.path and e.path != "lost+found"
                and (e.path in IGNORED_NAMES or _is_ours(e.path))]
    if reserved:
        raise HydrateError(f"refusing the source {where}: it holds the hydrator's own names "
                           + ", ".join(reserved[:5]))


def load_source(src, dest, aws_options=None, workdir=None):
    kind, location = check_src(src, dest)
    if kind == "dir":
        entries = scan_dir(location)
        _refuse_reserved(entries, location)
        return Source("dir", location, entries, _digest_listing(entries))
    if kind == "s3":
        location = fetch_s3(src, aws_options, workdir)
    entries = scan_archive(location)
    _refuse_reserved(entries, src)
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
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.is_root = self.euid == 0
        # Owners, besides this uid and root, of a marker or lock file it accepts.
        self.trusted = (uid,) if uid is not None else ()

    def mode(self, entry):
        if entry.kind == "dir":
            return self.dir_mode if self.dir_mode is not None else entry.mode
        return self.file_mode if self.file_mode is not None else entry.mode

    def ids(self, entry):
        """Owner ids to set, like cp -a and tar: the source's ids only as root."""
        uid = self.uid if self.uid is not None else (entry.uid if self.is_root else -1)
        gid = self.gid if self.gid is not None else (entry.gid if self.is_root else -1)
        return uid, gid


# ------------------------------------------------------- descriptors in dest

def _open_dirs(root_fd, rel):
    """A descriptor of directory `rel` below `root_fd`, each component opened
    without following a symlink (ELOOP or ENOTDIR when one is)."""
    fd = os.dup(root_fd)
    try:
        for part in rel.split("/"):
            if part in ("", "."):
                continue
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_at(parent_fd, name):
    """Removes `name` below `parent_fd`; a directory's content through
    descriptors, never following a symlink, depth first on a list (never on
    the Python stack: trees may be thousands of levels deep)."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    # (descriptor of a directory being emptied, its parent's descriptor, its name)
    stack = [(os.open(name, _DIR_FLAGS, dir_fd=parent_fd), parent_fd, name)]
    try:
        while stack:
            fd, parent, here = stack[-1]
            child_dir = None
            for child in os.listdir(fd):
                try:
                    if stat.S_ISDIR(os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode):
                        child_dir = (os.open(child, _DIR_FLAGS, dir_fd=fd), fd, child)
                        break
                    os.unlink(child, dir_fd=fd)
                except FileNotFoundError:
                    continue
            if child_dir is not None:
                stack.append(child_dir)
                continue
            stack.pop()
            os.close(fd)
            os.rmdir(here, dir_fd=parent)
    finally:
        for fd, _parent, _here in stack:
            os.close(fd)


def _refused(label, problem):
    return HydrateError(
        f"{label} {problem}, which is not what the hydrator creates: refusing to use it. "
        "Another writer of the volume put it there; remove it after checking who did")


def _owned_problem(st, kind_ok, kind_name, trusted=()):
    """Why `st` is not one of the hydrator's files: trusted owners are this
    uid, root and `trusted` (the uid files are given to: an unprivileged run
    as the application's user writes the marker as that user)."""
    if not kind_ok(st.st_mode):
        return f"is not a {kind_name}"
    if st.st_uid not in (os.geteuid(), 0, *trusted):
        return f"is owned by uid {st.st_uid}"
    if stat.S_ISREG(st.st_mode) and st.st_nlink != 1:
        return f"has {st.st_nlink} hard links"
    if st.st_mode & 0o022:
        return f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _open_checked(dir_fd, name, flags, want, create_mode=0o644):
    """Opens `name` below `dir_fd` only once its type is known: an O_PATH
    descriptor (which opens nothing: no FIFO blocks, no device driver runs,
    no link is followed) is checked with `want(st_mode)`, then reopened
    through /proc/self/fd with `flags`, the same inode by construction.
    Without /proc, the open is O_NONBLOCK | O_NOCTTY and the identity is
    compared. Returns (fd, stat); ValueError when the type is wrong."""
    while True:
        try:
            path_fd = os.open(name, os.O_PATH | _NOFOLLOW, dir_fd=dir_fd)
            break
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
        try:
            # O_EXCL: a name planted since the lookup fails the open, never followed.
            fd = os.open(name, flags | os.O_EXCL | _NOFOLLOW, create_mode, dir_fd=dir_fd)
            return fd, os.fstat(fd)
        except FileExistsError:
            continue
    try:
        st = os.fstat(path_fd)
        if not want(st.st_mode):
            raise ValueError(_KIND_NAMES.get(stat.S_IFMT(st.st_mode), "special file"))
        flags &= ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)
        try:
            fd = os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            fd = os.open(name, flags | _NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise ValueError("replaced while being opened")
        return fd, opened
    finally:
        os.close(path_fd)


_KIND_NAMES = {stat.S_IFLNK: "symlink", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket",
               stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
               stat.S_IFDIR: "directory", stat.S_IFREG: "regular file"}


def _open_own_file(dir_fd, name, flags, label, create_mode=0o644, trusted=()):
    """Opens one of the hydrator's own files below `dir_fd`; refuses it
    unless it is a regular file owned by this uid (or root, or `trusted`)
    and writable by nobody else. Anything else there is never opened."""
    try:
        fd, st = _open_checked(dir_fd, name, flags, stat.S_ISREG, create_mode)
    except ValueError as exc:
        raise _refused(label, f"is a {exc}, not a regular file") from None
    problem = _owned_problem(st, stat.S_ISREG, "regular file", trusted)
    if problem:
        os.close(fd)
        raise _refused(label, problem)
    return fd, st


def _read_limited(fd, limit):
    chunks, total = [], 0
    while total <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    data = b"".join(chunks)
    return None if len(data) > limit else data


# ------------------------------------------------------------------ the lock

def _who():
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class DestLock:
    """An exclusive flock on dest/.guardrail-hydrate.lock, held until close().

    The lock file stays: unlinking it would let a waiter lock an orphaned inode.
    It is opened relative to dest's descriptor, never through a symlink."""

    def __init__(self, dest_fd, dest, timeout, poll=0.05, trusted=()):
        self.dest_fd = dest_fd
        self.trusted = trusted
        self.path = os.path.join(dest, LOCK_FILE)
        self.timeout = timeout
        self.poll = poll
        self.fd = None

    def __enter__(self):
        label = f"the lock file {self.path}"
        try:
            fd = _open_own_file(self.dest_fd, LOCK_FILE, os.O_RDWR | os.O_CREAT, label,
                                trusted=self.trusted)[0]
            writable = True
        except PermissionError:
            # Created by root: a read-only descriptor can still be flocked.
            fd = _open_own_file(self.dest_fd, LOCK_FILE, os.O_RDONLY, label, trusted=self.trusted)[0]
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
                holder = (_read_limited(fd, 512) or b"").decode("utf-8", "replace").strip()
                os.close(fd)
                raise HydrateError(
                    f"timed out after {self.timeout}s waiting for the lock {self.path}, "
                    f"held by {holder or 'unknown'}; raise lock_timeout if a large copy is running")
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


def sync_filesystem(fd):
    """Flushes every dirty page and inode of the filesystem holding the open
    directory `fd`.

    One syncfs() instead of an fsync per file and directory: the same
    guarantee for the staging tree at a fraction of the cost. Falls back to
    sync() where syncfs is unavailable."""
    if _SYNCFS is None or _SYNCFS(fd) != 0:
        os.sync()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_atomic_at(dir_fd, name, data, tmp_name):
    """Writes `name` below `dir_fd`: a new temp file (O_EXCL, so never through
    a planted link), fsync, rename over whatever `name` is, fsync the directory."""
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


# -------------------------------------------------------------------- records

def _valid_marker(data):
    """A marker record: a JSON object of scalars and short lists, on one line."""
    if not isinstance(data, dict):
        return False
    for key, value in data.items():
        if not isinstance(key, str) or isinstance(value, dict):
            return False
        if isinstance(value, list) and not all(isinstance(v, (str, int, float, bool)) for v in value):
            return False
    return True


def read_marker(dest_fd, dest, trusted=()):
    """The marker's record, or None when dest is not hydrated. Refuses a
    marker that is not the hydrator's (a symlink, a FIFO, another owner);
    never returns bytes that do not parse as a marker record."""
    if dest_fd is None:
        return None
    try:
        fd, st = _open_own_file(dest_fd, MARKER, os.O_RDONLY, f"the marker {dest}/{MARKER}",
                                trusted=trusted)
    except FileNotFoundError:
        return None
    try:
        data = _read_limited(fd, MARKER_MAX)
    finally:
        os.close(fd)
    try:
        record = json.loads(data.decode("utf-8")) if data is not None else None
    except ValueError:
        record = None
    return record if _valid_marker(record) else {"unreadable": True}


def write_marker(dest_fd, marker):
    data = (json.dumps(marker, sort_keys=True, indent=2) + "\n").encode()
    _write_atomic_at(dest_fd, MARKER, data, f"{MARKER_TMP_PREFIX}{uuid.uuid4().hex}")


def _encode_path(path):
    return quote_from_bytes(os.fsencode(path), safe="/")


def check_prune_path(path):
    """A prune entry is relative, normalised, without `..`, and never one of
    the hydrator's own names."""
    if (not path or "\0" in path or path.startswith("/") or os.path.normpath(path) != path
            or _has_dotdot(path) or path == "."):
        raise ValueError(f"prune path {path!r} is not a normalised relative path")
    top = path.split("/", 1)[0]
    if top in IGNORED_NAMES or _is_ours(top):
        raise ValueError(f"prune path {path!r} names the hydrator's own files")
    return path


def format_ready(overwrite, prune, marker):
    """The ready record: one key=value per line (see PROTOCOL.md)."""
    lines = [f"format={READY_FORMAT}", "overwrite=" + ("true" if overwrite else "false"),
             "marker=" + json.dumps(marker, sort_keys=True)]
    lines.extend("prune=" + _encode_path(check_prune_path(p)) for p in prune)
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_ready(data):
    """Validates a ready record against its schema. Returns dict(overwrite,
    prune, marker); raises ValueError naming the first problem."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the record is not ASCII") from None
    if not text.endswith("\n"):
        raise ValueError("the record is truncated")
    lines = text[:-1].split("\n")
    if lines[0] != f"format={READY_FORMAT}":
        raise ValueError("the first line is not format=" + READY_FORMAT)
    record = {"prune": []}
    for line in lines[1:]:
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {line[:40]!r} is not key=value")
        if key == "prune":
            record["prune"].append(check_prune_path(os.fsdecode(unquote_to_bytes(value))))
        elif key in ("overwrite", "marker") and key not in record:
            if key == "overwrite":
                if value not in ("true", "false"):
                    raise ValueError("overwrite must be true or false")
                record["overwrite"] = value == "true"
            else:
                marker = json.loads(value) if len(value) <= MARKER_MAX else None
                if not _valid_marker(marker):
                    raise ValueError("marker is not a JSON object of scalars")
                record["marker"] = marker
        else:
            raise ValueError(f"unexpected or repeated key {key[:40]!r}")
    if "overwrite" not in record or "marker" not in record:
        raise ValueError("overwrite or marker is missing")
    return record


def _read_ready(staging_fd, label):
    """The ready record of a staging tree this uid created, or None when it has
    none or an invalid one."""
    try:
        fd, st = _open_own_file(staging_fd, READY_FILE, os.O_RDONLY, label)
    except FileNotFoundError:
        return None
    except HydrateError:
        return None
    try:
        if st.st_uid != os.geteuid() or st.st_size > READY_MAX:
            return None
        data = _read_limited(fd, READY_MAX)
    finally:
        os.close(fd)
    try:
        return parse_ready(data) if data is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------ copying

def _copy_range(src_fd, dst_fd, start, end):
    """Copies [start, end) to the same offsets; dst_fd's position is start.
    Returns where the copy stopped (end, unless the source is shorter)."""
    offset = start
    while offset < end:
        try:
            sent = os.sendfile(dst_fd, src_fd, offset, min(COPY_CHUNK, end - offset))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            sent = 0
            chunk = os.pread(src_fd, min(1 << 20, end - offset), offset)
            if chunk:
                _write_all(dst_fd, chunk)
                sent = len(chunk)
        if sent == 0:
            break
        offset += sent
    return offset


def _copy_file_data(src_fd, dst_fd, size, dense):
    """Copies the data of a new, empty file, holes left as holes
    (SEEK_DATA/SEEK_HOLE). A dense file is copied in one go: per file, the
    system calls are the cost (20,000 files, 200,000 entries)."""
    if dense:
        if _copy_range(src_fd, dst_fd, 0, size) != size:
            os.ftruncate(dst_fd, size)
        return
    offset = written = 0
    while offset < size:
        try:
            data = os.lseek(src_fd, offset, os.SEEK_DATA)
            hole = min(os.lseek(src_fd, data, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # only a hole remains
            data, hole = offset, size
        if data >= size:
            break
        if data != written:
            os.lseek(dst_fd, data, os.SEEK_SET)
        offset = written = _copy_range(src_fd, dst_fd, data, hole)
        if written != hole:
            break
    if written != size:
        os.ftruncate(dst_fd, size)


def _copy_stream_sparse(reader, dst_fd):
    """Copies an archive member; blocks of zeros become holes."""
    length = 0
    while True:
        chunk = reader.read(1 << 20)
        if not chunk:
            break
        if chunk.count(0) == len(chunk):
            os.lseek(dst_fd, len(chunk), os.SEEK_CUR)
        else:
            _write_all(dst_fd, chunk)
        length += len(chunk)
    os.ftruncate(dst_fd, length)


def _apply_meta(fd, entry, policy, created_mode=None):
    """Owner and mode on an open descriptor, never on a path. created_mode:
    the mode of an entry this run just created in its staging tree (owned by
    this uid and group: the staging tree is 0700, never setgid), so that only
    what differs is set."""
    uid, gid = policy.ids(entry)
    if created_mode is not None:
        uid = -1 if uid == policy.euid else uid
        gid = -1 if gid == policy.egid else gid
    if uid != -1 or gid != -1:
        os.chown(fd, uid, gid)
    # chmod after chown: chown clears setuid/setgid bits.
    mode = policy.mode(entry)
    if mode != created_mode or uid != -1 or gid != -1:
        os.chmod(fd, mode)


def _copy_order(source, entries):
    """Directories parents first, then files (in archive order, so a compressed
    archive is streamed once), then links, whose targets must exist first."""
    dirs = [e for e in entries if e.kind == "dir"]
    files = [e for e in entries if e.kind == "file"]
    if source.kind == "archive":
        files.sort(key=lambda e: e.member.offset_data)
    links = [e for e in entries if e.kind == "symlink"] + [e for e in entries if e.kind == "hardlink"]
    return dirs, files, links


class _Dirs:
    """Descriptors of the directories of a tree, opened one component at a
    time without following symlinks. Only the chain from the root to the
    last directory asked for stays open: a tree of any width or depth costs
    as many descriptors as it is deep."""

    def __init__(self, root_fd):
        self.root_fd = root_fd
        self.parts = []
        self.fds = []

    def get(self, rel):
        parts = rel.split("/") if rel else []
        keep = 0
        while keep < min(len(parts), len(self.parts)) and parts[keep] == self.parts[keep]:
            keep += 1
        for fd in self.fds[keep:]:
            os.close(fd)
        del self.fds[keep:], self.parts[keep:]
        for part in parts[keep:]:
            self.fds.append(os.open(part, _DIR_FLAGS, dir_fd=self.fds[-1] if self.fds else self.root_fd))
            self.parts.append(part)
        return self.fds[-1] if self.fds else self.root_fd

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.parts, self.fds = [], []


def _create_mode(policy, entry, umask):
    """The mode to create a file with: its own when the umask leaves it as it
    is (no chmod needed after), else 0600 until _apply_meta sets it. Either
    way only this uid can reach it, through the 0700 staging tree."""
    mode = policy.mode(entry)
    return mode if not mode & 0o7000 and not mode & umask else 0o600


def _write_file(source, tar, src_dir_fd, parent_fd, name, entry, policy, umask):
    created = _create_mode(policy, entry, umask)
    dst_fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, created, dir_fd=parent_fd)
    try:
        if tar is None:
            src_fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=src_dir_fd)
            try:
                _copy_file_data(src_fd, dst_fd, entry.size, entry.dense)
            finally:
                os.close(src_fd)
        else:
            _copy_stream_sparse(tar.extractfile(entry.member), dst_fd)
        _apply_meta(dst_fd, entry, policy, created & ~umask)
        os.utime(dst_fd, ns=(entry.mtime_ns, entry.mtime_ns))
    finally:
        os.close(dst_fd)


def copy_into(source, staging_fd, entries, policy):
    """Writes `entries` below the staging directory. Parents that are not
    copied (they already exist in dest) become plain placeholders, merged away
    on the move."""
    dirs, files, links = _copy_order(source, entries)
    copied_dirs = {e.path for e in dirs}
    placeholders = set()
    for e in entries:
        parent = os.path.dirname(e.path)
        while parent and parent not in copied_dirs and parent not in placeholders:
            placeholders.add(parent)
            parent = os.path.dirname(parent)
    tree, targets = _Dirs(staging_fd), _Dirs(staging_fd)
    # The source's directories by descriptor too: one lookup per file, not a
    # walk of its whole path.
    src_root_fd = os.open(source.location, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) \
        if source.kind == "dir" else None
    src_dirs = _Dirs(src_root_fd)
    umask = os.umask(0o077)
    os.umask(umask)
    tar = None
    try:
        for rel in sorted(placeholders, key=lambda p: p.count("/")):
            os.mkdir(os.path.basename(rel), 0o700, dir_fd=tree.get(os.path.dirname(rel)))
        for e in dirs:
            os.mkdir(os.path.basename(e.path), 0o700, dir_fd=tree.get(os.path.dirname(e.path)))
        tar = tarfile.open(source.archive_path, "r:*") if source.kind == "archive" else None
        for e in files:
            parent, _sep, name = e.path.rpartition("/")
            _write_file(source, tar, src_dirs.get(parent) if tar is None else None, tree.get(parent), name,
                        e, policy, umask)
        for e in links:
            parent_fd, name = tree.get(os.path.dirname(e.path)), os.path.basename(e.path)
            if e.kind == "symlink":
                os.symlink(e.target, name, dir_fd=parent_fd)
                uid, gid = policy.ids(e)
                if uid != -1 or gid != -1:
                    os.chown(name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
                os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=parent_fd, follow_symlinks=False)
            else:
                target_dir, target_name = os.path.split(e.target)
                os.link(target_name, name, src_dir_fd=targets.get(target_dir), dst_dir_fd=parent_fd,
                        follow_symlinks=False)
        # Directory owner, mode and times last: a read-only mode would stop a
        # non-root copy, and creating children changes the times.
        for e in reversed(dirs):
            fd = tree.get(e.path)
            _apply_meta(fd, e, policy, 0o700 & ~umask)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
    finally:
        if tar is not None:
            tar.close()
        tree.close()
        targets.close()
        src_dirs.close()
        if src_root_fd is not None:
            os.close(src_root_fd)


def _is_ours(name):
    return name.startswith(STAGING_PREFIX) or name.startswith(MARKER_TMP_PREFIX)


def _dest_entries(dest):
    """Top-level names in dest (a path or an open descriptor) that count as content."""
    if dest is None:
        return []
    try:
        names = os.listdir(dest)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n not in IGNORED_NAMES and not _is_ours(n))


def _another_filesystem(rel):
    return HydrateError(
        f"{rel} in dest is on another filesystem (a mount point): hydration renames within one "
        "filesystem and never writes across mounts; unmount it, or hydrate it as its own dest")


def move_into(from_fd, to_fd, overwrite):
    """Renames the staging tree's entries into dest, descending into
    directories that already exist there, through descriptors only, depth
    first on a list. Each rename is atomic and replaces a symlink rather than
    following it; a rerun after a crash picks up what is left in staging.
    A directory of dest that became a symlink, or is another filesystem,
    stops the run: nothing is moved through it."""
    device = os.fstat(to_fd).st_dev
    # (staging directory, dest directory, relative path, names left to move)
    stack = [(from_fd, to_fd, "", sorted(n for n in os.listdir(from_fd) if n != READY_FILE))]
    try:
        while stack:
            src_fd, dst_fd, rel, names = stack[-1]
            if not names:
                stack.pop()
                if rel:
                    os.close(src_fd)
                    os.close(dst_fd)
                continue
            name = names.pop()
            path = f"{rel}/{name}" if rel else name
            try:
                to_st = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
            except FileNotFoundError:
                _rename(src_fd, dst_fd, name, path)
                continue
            from_is_dir = stat.S_ISDIR(os.stat(name, dir_fd=src_fd, follow_symlinks=False).st_mode)
            if from_is_dir and stat.S_ISDIR(to_st.st_mode):
                sub_from = os.open(name, _DIR_FLAGS, dir_fd=src_fd)
                try:
                    sub_to = os.open(name, _DIR_FLAGS, dir_fd=dst_fd)
                except OSError as exc:
                    os.close(sub_from)
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        raise HydrateError(f"{path} in dest changed while hydrating (now a symlink or "
                                           "gone): nothing was moved through it; run again") from None
                    raise
                if os.fstat(sub_to).st_dev != device:
                    os.close(sub_from)
                    os.close(sub_to)
                    raise _another_filesystem(path)
                stack.append((sub_from, sub_to, path, sorted(os.listdir(sub_from))))
            elif overwrite and not from_is_dir and not stat.S_ISDIR(to_st.st_mode):
                _rename(src_fd, dst_fd, name, path)
    finally:
        for src_fd, dst_fd, rel, _names in stack:
            if rel:
                os.close(src_fd)
                os.close(dst_fd)


def _rename(src_fd, dst_fd, name, path):
    try:
        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise _another_filesystem(os.path.dirname(path) or ".") from None
        raise


def _meta_differs(st, mode, uid, gid):
    return ((mode is not None and stat.S_IMODE(st.st_mode) != mode)
            or (uid not in (None, -1) and st.st_uid != uid)
            or (gid not in (None, -1) and st.st_gid != gid))


class Plan:
    """What a run changes, decided before anything is written."""

    def __init__(self):
        self.copy = []      # entries to write into staging
        self.fix_meta = []  # directories dest has, with the wrong owner or mode
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


def make_plan(source, dest_fd, policy, overwrite, prune):
    """Compares the source with dest, reached only through `dest_fd` (never
    by its path again: dest may have been swapped since it was opened).
    Refuses type clashes, which could only be resolved by deleting user data
    (a file where the source has a directory, or the reverse), and
    directories of dest on another filesystem.

    With `overwrite` (force), a file is copied again unless dest has a
    regular file there with the same size, modification time, owner, mode and
    content: files are replaced by a rename, never changed in place, so an
    inode linked from outside dest is never touched."""
    result = Plan()
    if dest_fd is None:
        result.fix_root = True
        result.copy = list(source.entries)
        return result
    dest_st = os.fstat(dest_fd)
    result.fix_root = _meta_differs(dest_st, policy.dir_mode, policy.uid, policy.gid)
    if not _dest_entries(dest_fd):
        result.copy = list(source.entries)
        return result
    clashes, absent_dirs, clashed = [], set(), set()
    compare, inodes, copied = [], {}, set()
    dirs = _Dirs(dest_fd)
    try:
        for entry in source.entries:
            parent, name = os.path.split(entry.path)
            if parent in clashed:
                clashed.add(entry.path)
                continue
            if parent in absent_dirs:
                if entry.kind == "dir":
                    absent_dirs.add(entry.path)
                result.copy.append(entry)
                continue
            try:
                st = os.stat(name, dir_fd=dirs.get(parent), follow_symlinks=False)
            except FileNotFoundError:
                if entry.kind == "dir":
                    absent_dirs.add(entry.path)
                result.copy.append(entry)
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise HydrateError(f"{parent} in dest changed while hydrating (now a symlink); "
                                       "nothing was changed, run again") from None
                raise
            if entry.kind == "dir":
                if not stat.S_ISDIR(st.st_mode):
                    clashes.append(f"{entry.path} is a directory in the source but not in dest")
                    clashed.add(entry.path)
                elif st.st_dev != dest_st.st_dev:
                    raise _another_filesystem(entry.path)
                elif overwrite and _meta_differs(st, policy.mode(entry), *policy.ids(entry)):
                    result.fix_meta.append(entry)
            elif stat.S_ISDIR(st.st_mode):
                clashes.append(f"{entry.path} is a directory in dest but not in the source")
            elif not overwrite:
                result.kept.append(entry.path)
            elif entry.kind == "symlink":
                if not stat.S_ISLNK(st.st_mode) or os.readlink(name, dir_fd=dirs.get(parent)) != entry.target:
                    result.copy.append(entry)
            elif entry.kind == "hardlink":
                inodes[entry.path] = (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
            elif (not stat.S_ISREG(st.st_mode) or st.st_size != entry.size
                  or st.st_mtime_ns != entry.mtime_ns
                  or _meta_differs(st, policy.mode(entry), *policy.ids(entry))):
                result.copy.append(entry)
            else:
                inodes[entry.path] = (st.st_dev, st.st_ino)
                compare.append(entry)
        if clashes:
            raise HydrateError("dest and the source disagree, nothing was changed: "
                               + "; ".join(clashes[:10]))
        dirs.close()
        result.copy.extend(e for e in _differing_content(source, dirs, compare))
        copied.update(e.path for e in result.copy)
        # A hard link group is copied whole when any of its names differs
        # (force) or is missing: links are made in staging, to a copy there,
        # never to a file dest has (it may be linked from outside dest).
        groups = {}
        by_path = {e.path: e for e in source.entries}
        for entry in source.entries:
            if entry.kind == "hardlink":
                groups.setdefault(entry.target, []).append(entry)
        for target, links in groups.items():
            members = [by_path[target], *links]
            if (any(e.path in copied for e in members)
                    or (overwrite and any(inodes.get(e.path) != inodes.get(target) for e in links))):
                result.copy.extend(e for e in members if e.path not in copied)
                copied.update(e.path for e in members)
        if prune:
            result.prune = _unwanted(dest_fd, dirs, {e.path for e in source.entries})
    finally:
        dirs.close()
    return result


def _differing_content(source, dirs, entries):
    """The entries whose content differs from the regular file dest has at
    their path, compared byte for byte (archive members in archive order)."""
    tar = tarfile.open(source.archive_path, "r:*") if source.kind == "archive" else None
    try:
        if tar is not None:
            entries = sorted(entries, key=lambda e: e.member.offset_data)
        for entry in entries:
            parent, name = os.path.split(entry.path)
            try:
                fd = _open_checked(dirs.get(parent), name, os.O_RDONLY, stat.S_ISREG)[0]
            except (OSError, ValueError):
                yield entry
                continue
            try:
                if tar is not None:
                    reader = tar.extractfile(entry.member)
                    same = _same_bytes(reader.read, fd)
                else:
                    with open(os.path.join(source.location, entry.path), "rb") as f:
                        same = _same_bytes(f.read, fd)
            finally:
                os.close(fd)
            if not same:
                yield entry
    finally:
        if tar is not None:
            tar.close()


def _same_bytes(read, fd):
    while True:
        ours = read(1 << 20)
        theirs = os.read(fd, len(ours) or 1)
        while theirs and len(theirs) < len(ours):
            more = os.read(fd, len(ours) - len(theirs))
            if not more:
                break
            theirs += more
        if ours != theirs:
            return False
        if not ours:
            return True


def _unwanted(dest_fd, dirs, wanted):
    """Paths in dest that the source does not have, listed through
    descriptors (a directory swapped for a symlink is listed as a name, never
    followed), breadth first on a list."""
    unwanted, stack = [], [""]
    while stack:
        rel = stack.pop()
        try:
            fd = dirs.get(rel)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                continue
            raise
        with os.scandir(fd) as it:
            children = sorted((d.name, d.is_dir(follow_symlinks=False)) for d in it)
        for name, is_dir in children:
            if not rel and (name in IGNORED_NAMES or _is_ours(name)):
                continue
            path = f"{rel}/{name}" if rel else name
            if path not in wanted:
                unwanted.append(path)
            elif is_dir:
                stack.append(path)
    return unwanted


# ------------------------------------------------------------------ the run

def _prune(dest_fd, paths):
    """Removes validated relative paths below dest, never through a symlink."""
    for rel in paths:
        parent, name = os.path.split(check_prune_path(rel))
        try:
            fd = _open_dirs(dest_fd, parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                continue  # gone, or a symlink now: nothing of dest's to remove there
            raise
        try:
            _remove_at(fd, name)
        finally:
            os.close(fd)


def _finish(dest_fd, staging_fd, staging_name, ready, marker):
    """From a synced staging tree with its ready record to the marker: the part
    that a rerun repeats after a crash."""
    move_into(staging_fd, dest_fd, ready["overwrite"])
    _prune(dest_fd, ready["prune"])
    sync_filesystem(dest_fd)
    write_marker(dest_fd, marker)
    _remove_at(dest_fd, staging_name)


def _open_own_staging(dest_fd, name):
    """A descriptor of a staging directory this uid created (mode 0700), or
    None for anything else at a staging name."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dest_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return None
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
        os.close(fd)
        return None
    return fd


def recover(dest_fd, dest, trusted=()):
    """Finishes or removes what an interrupted run left; call with the lock
    held. Only a staging tree this uid created with a valid ready record is
    finished; whatever else bears the hydrator's names is removed, without
    following links. A ready tree whose marker dest already has belongs to a
    run killed after its marker: it is removed, not finished again (its prune
    entries may name files the volume's users made since).
    Returns the marker written for a finished run, or None."""
    finished = None
    for name in sorted(os.listdir(dest_fd)):
        if not _is_ours(name):
            continue
        ready = None
        fd = _open_own_staging(dest_fd, name) if name.startswith(STAGING_PREFIX) else None
        if fd is not None:
            try:
                ready = _read_ready(fd, f"{dest}/{name}/{READY_FILE}")
                if ready is not None and read_marker(dest_fd, dest, trusted) == ready["marker"]:
                    ready = None
                if ready is not None:
                    ready["marker"]["recovered"] = _now()
                    _finish(dest_fd, fd, name, ready, ready["marker"])
                    finished = ready["marker"]
            finally:
                os.close(fd)
        if ready is None:
            _remove_at(dest_fd, name)
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


def _fix_dir_meta(dest_fd, entry, policy):
    """Owner and mode of a directory dest already has, set on a descriptor
    opened one component at a time without following links (files are never
    fixed in place: the plan copies them again)."""
    try:
        fd = _open_dirs(dest_fd, entry.path)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise HydrateError(f"{entry.path} in dest changed while hydrating (now a symlink or "
                               "gone); nothing was applied to it, run again") from None
        raise
    try:
        if os.fstat(fd).st_dev != os.fstat(dest_fd).st_dev:
            raise _another_filesystem(entry.path)
        _apply_meta(fd, entry, policy)
    finally:
        os.close(fd)


def apply_plan(source, dest_fd, dest, policy, plan, overwrite, prune, previous_marker):
    name = STAGING_PREFIX + uuid.uuid4().hex
    os.mkdir(name, 0o700, dir_fd=dest_fd)
    staging_fd = os.open(name, _DIR_FLAGS, dir_fd=dest_fd)
    ready_written = False
    try:
        if os.fstat(staging_fd).st_uid != os.geteuid():
            raise _refused(f"{dest}/{name}", "was replaced while hydrating")
        os.chmod(staging_fd, 0o700)
        copy_into(source, staging_fd, plan.copy, policy)
        for e in plan.fix_meta:
            _fix_dir_meta(dest_fd, e, policy)
        if plan.fix_root:
            os.chown(dest_fd, policy.uid if policy.uid is not None else -1,
                     policy.gid if policy.gid is not None else -1)
            if policy.dir_mode is not None:
                os.chmod(dest_fd, policy.dir_mode)
        # Every file and directory of the staging tree durable before anything moves.
        sync_filesystem(staging_fd)
        marker = _marker_record(source, plan, previous_marker)
        ready = {"overwrite": overwrite, "prune": plan.prune if prune else [], "marker": marker}
        _write_atomic_at(staging_fd, READY_FILE, format_ready(**ready), READY_TMP)
        ready_written = True
        _finish(dest_fd, staging_fd, name, ready, marker)
    except BaseException:
        if not ready_written:
            _remove_at(dest_fd, name)
        raise
    finally:
        os.close(staging_fd)
    return marker


def _refuse_existing(dest, existing):
    listed = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
    raise HydrateError(
        f"{dest} is not empty and has no marker {MARKER} (found: {listed}); set on_existing "
        "to merge to add the source's files to it, or to skip to leave it as it is")


def _open_dest(dest):
    """dest's descriptor (None when it does not exist yet), never through a symlink."""
    try:
        return os.open(dest, _DIR_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise HydrateError(f"dest {dest!r} is a symlink or not a directory: refusing it") from None
        raise


def _check_same_dest(dest_fd, dest):
    """dest's path must still name the directory opened at the start: a dest
    swapped while this run waited for the lock is refused, before anything in
    it is read or listed."""
    parent, name = os.path.split(dest)
    here = os.fstat(dest_fd)
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            now = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(parent_fd)
    except OSError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (here.st_dev, here.st_ino):
        raise HydrateError(
            f"{dest} was replaced while waiting for the lock (it is now a symlink, another directory "
            "or gone): nothing was changed; check who replaced it, then run again")


def _check_not_root(policy):
    """Early refusals without root: before the lock and staging exist."""
    if policy.is_root:
        return
    if policy.uid is not None and policy.uid != os.geteuid():
        raise HydrateError(f"owner {policy.uid} needs root: this run is uid {os.geteuid()} (use become)")
    if policy.gid is not None and policy.gid not in os.getgroups() and policy.gid != os.getegid():
        raise HydrateError(f"group {policy.gid} needs root or membership: this run is uid "
                           f"{os.geteuid()} (use become)")


def _check_dest_writable(dest, policy):
    """Without root, a dest this user cannot write is refused before the lock."""
    if policy.is_root:
        return
    existing = dest
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HydrateError(f"{existing} is not writable by uid {os.geteuid()}: cannot hydrate "
                           f"{dest} (use become, or give a dest this user owns)")


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
    _check_not_root(policy)
    result = dict(changed=False, seeded=False, recovered=False, files=0, bytes=0, digest=None,
                  dest=dest, pruned=[], kept=[], marker=None)

    def done(**values):
        result.update(values)
        result["duration"] = round(time.monotonic() - started, 3)
        return result

    dest_fd = _open_dest(dest)
    try:
        marker = read_marker(dest_fd, dest, policy.trusted)
        if marker is not None and not force:
            if not any(_is_ours(name) for name in os.listdir(dest_fd)):
                return done(marker=marker, digest=marker.get("digest"),
                            msg=f"{dest} is already hydrated (marker {MARKER})")
            # Killed between the marker and the removal of its staging tree.
            return _tidy_hydrated(dest_fd, dest, policy, marker, lock_timeout, check_mode, done)
        _check_dest_writable(dest, policy)
        with tempfile.TemporaryDirectory(prefix="guardrail-hydrate-") as workdir:
            # The whole source is validated before anything is written to dest.
            source = load_source(src, dest, aws_options, workdir if kind == "s3" else None)
            result["digest"] = source.digest
            _check_writable_dirs(source, policy)
            if check_mode:
                return _check(source, dest, dest_fd, policy, on_existing, force, prune, marker, done)
            if dest_fd is None:
                os.makedirs(dest, 0o755, exist_ok=True)
                dest_fd = _open_dest(dest)
            return _locked_run(source, src, dest, dest_fd, policy, on_existing, force, prune,
                               lock_timeout, result, done)
    finally:
        if dest_fd is not None:
            os.close(dest_fd)


def _tidy_hydrated(dest_fd, dest, policy, marker, lock_timeout, check_mode, done):
    """A hydrated dest that still holds what an interrupted run left: finished
    or removed under the lock, as a run that found no marker would."""
    msg = f"{dest} is already hydrated (marker {MARKER}); what an interrupted run left "
    if check_mode:
        return done(changed=True, marker=marker, digest=marker.get("digest"), msg=msg + "would be removed")
    with DestLock(dest_fd, dest, lock_timeout, trusted=policy.trusted):
        _check_same_dest(dest_fd, dest)
        if not any(_is_ours(name) for name in os.listdir(dest_fd)):
            # What looked interrupted was the seeder still tidying up, under the lock we waited for.
            marker = read_marker(dest_fd, dest, policy.trusted) or marker
            return done(marker=marker, digest=marker.get("digest"),
                        msg=f"{dest} is already hydrated (marker {MARKER})")
        recovered = recover(dest_fd, dest, policy.trusted)
        marker = read_marker(dest_fd, dest, policy.trusted) or marker
    if recovered is not None:
        # A forced run killed after its ready record, before its marker.
        msg = f"{dest}: finished a hydration that was interrupted"
    else:
        msg += "was removed"
    return done(changed=True, recovered=recovered is not None, marker=marker, digest=marker.get("digest"),
                msg=msg)


def _locked_run(source, src, dest, dest_fd, policy, on_existing, force, prune, lock_timeout,
                result, done):
    with DestLock(dest_fd, dest, lock_timeout, trusted=policy.trusted):
        _check_same_dest(dest_fd, dest)
        recovered = recover(dest_fd, dest, policy.trusted)
        marker = read_marker(dest_fd, dest, policy.trusted)
        if recovered is not None:
            result.update(changed=True, seeded=True, recovered=True)
        if marker is not None and not force:
            if recovered is not None:
                return done(marker=marker, digest=marker.get("digest"),
                            files=marker.get("copied_files", 0), bytes=marker.get("copied_bytes", 0),
                            msg=f"{dest}: finished a hydration that was interrupted")
            if marker.get("digest") != source.digest:
                # The loser of a race between two versions: it read its source for nothing.
                message = (f"{dest} is already hydrated from another source (marker digest "
                           f"{marker.get('digest')}, this source {source.digest}): left as it is; "
                           "set force to bring it to this source")
                return done(marker=marker, digest=marker.get("digest"), msg=message, warnings=[message])
            return done(marker=marker, digest=marker.get("digest"),
                        msg=f"{dest} is already hydrated (marker {MARKER})")
        existing = _dest_entries(dest_fd)
        if marker is None and existing:
            if on_existing == "fail":
                _refuse_existing(dest, existing)
            if on_existing == "skip":
                return done(msg=f"{dest} is not empty and has no marker; left as it is "
                                "(on_existing=skip)")
        work = make_plan(source, dest_fd, policy, force, prune)
        if marker is not None and not work.changed:
            return done(marker=marker, msg=f"{dest} already matches {src}")
        marker_written = apply_plan(source, dest_fd, dest, policy, work, force, prune, marker)
        return done(changed=True, seeded=result["seeded"] or marker is None,
                    files=work.files, bytes=work.bytes, pruned=work.prune, kept=work.kept,
                    marker=marker_written,
                    msg=f"{dest}: copied {work.files} files ({work.bytes} bytes) from {src}")


def _check_writable_dirs(source, policy):
    """Without root, a directory that its owner cannot write can be neither
    filled nor renamed into place."""
    if policy.is_root:
        return
    if policy.dir_mode is not None and not policy.dir_mode & 0o200:
        raise HydrateError(f"dir_mode {policy.dir_mode:04o} must let the owner write when not running as root")
    read_only = [e.path for e in source.entries if e.kind == "dir" and not policy.mode(e) & 0o200]
    if read_only:
        raise HydrateError("source directories that their owner cannot write need root or a dir_mode "
                           "with owner write: " + ", ".join(read_only[:5]))


def _check(source, dest, dest_fd, policy, on_existing, force, prune, marker, done):
    """Check mode: what a run would do, with no lock and nothing written."""
    existing = _dest_entries(dest_fd)
    if marker is None and existing:
        if on_existing == "fail":
            _refuse_existing(dest, existing)
        if on_existing == "skip":
            return done(msg=f"{dest} is not empty and has no marker; would leave it as it is")
    work = make_plan(source, dest_fd, policy, force, prune)
    changed = marker is None or work.changed
    return done(changed=changed, seeded=marker is None, files=work.files, bytes=work.bytes,
                pruned=work.prune, kept=work.kept,
                would_copy=[e.path for e in work.copy if e.kind != "dir"][:WOULD_COPY_LIMIT],
                msg=f"{dest}: would copy {work.files} files ({work.bytes} bytes) from {source.location}")
