# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one way to replace a file: readers see the old content or
the new, never a part, and a crash leaves no half-written file behind; and
where the collection keeps what it can rebuild (`user_cache`)."""
from __future__ import annotations

import os
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
    $XDG_CACHE_HOME/guardrail/`name` (~/.cache/guardrail/`name` by default).
    Only what a run can rebuild is kept there."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "guardrail", name)
