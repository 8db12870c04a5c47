# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File modes, owners, contents and absence for a table of CIS controls.

A control holds ``files``, each with ``path`` (a glob is allowed) and any of:
``mode`` (the most permissive mode allowed: extra bits are removed, stricter
modes pass), ``owner`` and ``group`` (a name or a list of accepted names; the
first is set), ``content`` (exact text; the file is created when missing),
``state: absent`` (the file must not exist), ``recurse`` (apply ``mode``,
``owner`` and ``group`` to the regular files below a directory), ``exclude``
(globs left out of a recursion) and ``missing`` (the status when nothing
matches: ``pass``, ``failed`` or ``not_applicable``; default ``pass``).
"""
from __future__ import annotations

import fnmatch
import glob
import grp
import os
import pwd
import stat

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import (
    CisError,
    enforce,
    finish,
    read_text,
    sample,
    write_text,
)


def _names(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _describe(path, st):
    return "%s %04o %s:%s" % (path, stat.S_IMODE(st.st_mode), _user(st.st_uid), _group(st.st_gid))


def _targets(spec):
    paths = sorted(glob.glob(spec["path"])) if glob.has_magic(spec["path"]) else (
        [spec["path"]] if os.path.lexists(spec["path"]) else [])
    if not spec.get("recurse"):
        return paths
    found = []
    excludes = spec.get("exclude", [])
    for top in paths:
        for directory, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(directory, name)
                if any(fnmatch.fnmatch(path, pattern) for pattern in excludes):
                    continue
                if os.path.isfile(path) and not os.path.islink(path):
                    found.append(path)
    return found


def _check_one(path, spec):
    """(compliant, problems) for one existing path."""
    st = os.lstat(path)
    problems = []
    if spec.get("mode") is not None:
        allowed = int(str(spec["mode"]), 8)
        if stat.S_IMODE(st.st_mode) & ~allowed:
            problems.append("mode")
    if _names(spec.get("owner")) and _user(st.st_uid) not in _names(spec.get("owner")):
        problems.append("owner")
    if _names(spec.get("group")) and _group(st.st_gid) not in _names(spec.get("group")):
        problems.append("group")
    if spec.get("content") is not None and read_text(path) != spec["content"]:
        problems.append("content")
    return problems


def _fix_one(path, spec, problems):
    st = os.lstat(path)
    if "content" in problems:
        write_text(path, spec["content"])
    if "mode" in problems:
        os.chmod(path, stat.S_IMODE(st.st_mode) & int(str(spec["mode"]), 8))
    if "owner" in problems or "group" in problems:
        uid = pwd.getpwnam(_names(spec["owner"])[0]).pw_uid if "owner" in problems else -1
        gid = grp.getgrnam(_names(spec["group"])[0]).gr_gid if "group" in problems else -1
        os.chown(path, uid, gid, follow_symlinks=False)


def apply(controls, audit_only=False, check_mode=False):
    """Evaluates and enforces a table of file controls. Returns (results, changed)."""
    changed = False
    results = []
    for control in controls:
        specs = control.get("files")
        if not isinstance(specs, list) or not specs:
            raise CisError("control %s: 'files' must be a non-empty list" % control.get("id"))
        may_change = enforce(control, audit_only, check_mode)
        statuses, evidence = [], []
        for spec in specs:
            if "path" not in spec:
                raise CisError("control %s: every file needs a path" % control["id"])
            for key in ("owner", "group"):
                lookup = pwd.getpwnam if key == "owner" else grp.getgrnam
                for name in _names(spec.get(key))[:1]:
                    try:
                        lookup(name)
                    except KeyError:
                        raise CisError("control %s: %s %s does not exist on this host" % (control["id"], key, name))
            targets = _targets(spec)
            if spec.get("state") == "absent":
                if not targets:
                    statuses.append("pass")
                    evidence.append("%s absent" % spec["path"])
                elif may_change:
                    for path in targets:
                        os.unlink(path)
                    changed = True
                    statuses.append("fixed")
                    evidence.append("removed %s" % sample(targets))
                else:
                    statuses.append("failed")
                    evidence.append("present: %s" % sample(targets))
                continue
            if not targets:
                if spec.get("content") is not None:
                    if may_change:
                        write_text(spec["path"], spec["content"], int(str(spec.get("mode", "0644")), 8))
                        _fix_one(spec["path"], spec, _check_one(spec["path"], spec))
                        changed = True
                        statuses.append("fixed")
                        evidence.append("created %s" % _describe(spec["path"], os.lstat(spec["path"])))
                    else:
                        statuses.append("failed")
                        evidence.append("%s missing" % spec["path"])
                    continue
                missing = spec.get("missing", "pass")
                statuses.append(missing)
                evidence.append("%s: nothing there" % spec["path"])
                continue
            bad = {}
            for path in targets:
                problems = _check_one(path, spec)
                if problems:
                    bad[path] = problems
            if not bad:
                statuses.append("pass")
                if len(targets) == 1:
                    evidence.append(_describe(targets[0], os.lstat(targets[0])))
                else:
                    evidence.append("%s: %d files as required" % (spec["path"], len(targets)))
                continue
            found = [_describe(p, os.lstat(p)) + " (" + ",".join(bad[p]) + ")" for p in sorted(bad)]
            if may_change:
                for path, problems in sorted(bad.items()):
                    _fix_one(path, spec, problems)
                changed = True
                statuses.append("fixed")
                fixed = [_describe(p, os.lstat(p)) for p in sorted(bad)]
                evidence.append("was %s; now %s" % (sample(found, 5), sample(fixed, 5)))
            else:
                statuses.append("failed")
                evidence.append(sample(found, 10))
        results.append(finish(control, statuses, evidence))
    return results, changed
