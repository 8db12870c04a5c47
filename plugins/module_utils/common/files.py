# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one way to replace a file: readers see the old content or
the new, never a part, and a crash leaves no half-written file behind; and
the user's cache, where the collection keeps what it can rebuild
(`read_cache`, `write_cache`)."""
from __future__ import annotations

import json
import os
import stat
import tempfile


def write_atomic(path, data, mode=None, durable=True):
    """Replaces `path` with `data` (str or bytes) through a temporary file in
    the same directory, flushed to disk before the rename unless `durable` is
    false (a cache that can be rebuilt, as git treats its loose objects).

    `mode` None keeps an existing file's mode and owner (a new file gets 0644);
    otherwise the file gets `mode` and the writer as owner."""
    directory = os.path.dirname(path) or "."
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=".guardrail-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        elif old is not None:
            os.chmod(tmp, old.st_mode & 0o7777)
            if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                os.chown(tmp, old.st_uid, old.st_gid)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def user_cache(name):
    """The path of the collection's cache file `name` for the user running it:
    $XDG_CACHE_HOME/guardrail/`name`, ~/.cache/guardrail/`name` when that is
    unset or not absolute (as the XDG base directory specification says: a
    relative one would put the cache in the current directory, a checkout).
    Only what a run can rebuild is kept there."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):
        base = os.path.expanduser("~/.cache")
    return os.path.join(base, "guardrail", name)


# A cache file larger than this is not read (nothing the collection keeps comes near it).
CACHE_MAX_BYTES = 1 << 20


def read_cache(name):
    """The JSON object kept in the user's cache file `name`; {} when there is
    none, or it is not a regular file the user owns and only the user may
    write (a symlink, a FIFO, a file somebody else could have written), or
    it does not parse (damaged, too large, too deeply nested)."""
    try:
        fd = os.open(user_cache(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022
                or info.st_size > CACHE_MAX_BYTES):
            return {}
        data = b""
        while len(data) <= CACHE_MAX_BYTES:
            chunk = os.read(fd, CACHE_MAX_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return {}
    finally:
        os.close(fd)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def write_cache(name, value):
    """Replaces the user's cache file `name` with the JSON of `value`, private
    to the user (0600 in a 0700 directory when it creates it). A cache that
    cannot be written only costs a later run the work it would have saved."""
    path = user_cache(name)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomic(path, json.dumps(value), mode=0o600, durable=False)
    except OSError:
        pass


def remember(name, key, value, keep):
    """Keeps `value` under `key` in the user's cache file `name` (a JSON
    object), with the `keep` entries written last: the oldest is forgotten
    first."""
    entries = read_cache(name)
    entries.pop(key, None)
    entries[key] = value
    write_cache(name, dict(list(entries.items())[-keep:]))
