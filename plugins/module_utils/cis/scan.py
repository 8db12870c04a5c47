# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of a table of CIS controls that read the system: one filesystem walk,
the account databases, mounts, file contents, command output, listeners.

A control holds ``check`` and its parameters:

- ``world_writable`` (fixes: removes o+w from files, adds the sticky bit to
  directories), ``unowned``, ``suid_sgid`` (listed for review): all three share
  ONE walk of the local filesystems, pruning ``prune`` paths and every mount of
  a pseudo or remote filesystem;
- ``mount`` with ``path``, ``options`` and ``separate``: the options live and in the
  path's /etc/fstab entry (fixes: remounts, and adds them to the entry, or adds an
  entry for a tmpfs; a mount fixed live only is ``failed``: lost at reboot);
- ``aide_scheduled``: an enabled AIDE timer or a cron line running ``aide --check``
  (fixes: enables the packaged timer, else writes /etc/cron.d/cis-aide);
- ``accounts`` with ``test`` (see ACCOUNT_TESTS);
- ``regex_absent`` / ``regex_present`` with ``paths`` (globs) and ``pattern``;
- ``command`` with ``argv`` and ``expect`` (a regex the output must match) or
  ``expect_absent``;
- ``local_only`` with ``port``: nothing but loopback listens on the TCP port;
- ``shell_less_locked``: accounts whose shell is not in /etc/shells are locked
  (fixes: ``usermod -L``);
- ``listeners_have_rules`` with ``family`` (4 or 6): every TCP and UDP port open
  on an address other than loopback is named by a rule (ACCEPT, DROP, REJECT) of
  INPUT or a chain it jumps to, or accepted by a rule naming no port;
- any check with ``ipv6: true`` is not applicable on a host without IPv6;
- ``unused_fs_modules`` with ``keep``: every filesystem of the running kernel (a
  directory of its kernel/fs) is mounted, disabled in modprobe.d (``install <module>
  /bin/false`` and ``blacklist <module>``) or kept.
"""
from __future__ import annotations

import glob
import grp
import os
import pwd
import re
import socket
import stat
import time

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import (
    CisError,
    enforce,
    finish,
    read_text,
    run,
    sample,
    write_text,
)

PSEUDO_FS = frozenset((
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs",
    "pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "autofs", "binfmt_misc", "rpc_pipefs",
    "nsfs", "efivarfs", "selinuxfs", "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs",
    "fuse.sshfs", "fuse.s3fs", "fuse.lxcfs", "nfsd", "sunrpc", "squashfs", "iso9660", "udf",
))
DEFAULT_PRUNE = ("/proc", "/sys", "/dev", "/run", "/var/lib/docker", "/var/lib/containerd", "/var/lib/ecs",
                 "/var/lib/containers")
WALK_CHECKS = ("world_writable", "unowned", "suid_sgid")


def mounts(path="/proc/self/mountinfo"):
    """[(mount point, fstype, options set)] from mountinfo."""
    found = []
    for line in (read_text(path) or "").splitlines():
        left, _sep, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 6 or len(extra) < 3:
            continue
        point = fields[4].encode().decode("unicode_escape")
        options = set(fields[5].split(",")) | set(extra[2].split(","))
        found.append((point, extra[0], options))
    return found


def walk(prune, mount_table):
    """One pass over the local filesystems. Returns (findings, stats)."""
    pruned = set(p.rstrip("/") or "/" for p in prune)
    pruned |= {point for point, fstype, _o in mount_table if point != "/" and
               (fstype in PSEUDO_FS or fstype.startswith("fuse."))}
    uids = {u.pw_uid for u in pwd.getpwall()}
    gids = {g.gr_gid for g in grp.getgrall()}
    ww_files, ww_dirs, unowned, suid = [], [], [], []
    started = time.monotonic()
    counted = 0
    for directory, dirnames, filenames in os.walk("/", topdown=True):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(directory, d) not in pruned)
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            counted += 1
            mode = st.st_mode
            if st.st_uid not in uids or st.st_gid not in gids:
                unowned.append(path)
            if stat.S_ISLNK(mode):
                continue
            if mode & stat.S_IWOTH:
                if stat.S_ISDIR(mode):
                    if not mode & stat.S_ISVTX:
                        ww_dirs.append(path)
                elif stat.S_ISREG(mode):
                    ww_files.append(path)
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                suid.append(path)
    stats = {"entries": counted, "seconds": round(time.monotonic() - started, 2), "pruned": sorted(pruned)}
    return {"world_writable_files": ww_files, "world_writable_dirs": ww_dirs, "unowned": unowned,
            "suid_sgid": suid}, stats


def _passwd():
    rows = []
    for line in (read_text("/etc/passwd") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 7:
            rows.append(parts)
    return rows


def _colon_file(path):
    return [line.split(":") for line in (read_text(path) or "").splitlines() if line.count(":") >= 3]


def _login_defs(key, default):
    for line in (read_text("/etc/login.defs") or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return default
    return default


def _nologin(shell):
    return shell.endswith(("/nologin", "/false"))


class _Accounts:
    """The account databases, read once for a test."""

    def __init__(self, exempt):
        self.passwd = _passwd()
        self.shadow = _colon_file("/etc/shadow")
        self.group = _colon_file("/etc/group")
        self.uid_min = _login_defs("UID_MIN", 1000)
        self.exempt = exempt
        self.interactive = [p for p in self.passwd if p[0] != "nobody" and (int(p[2]) >= self.uid_min or p[0] == "root")
                            and not _nologin(p[6])]

    def root_shadow_field(self):
        root = [s for s in self.shadow if s[0] == "root"]
        return root[0][1] if root else ""


def _dupes(values):
    seen, dup = set(), set()
    for value in values:
        (dup if value in seen else seen).add(value)
    return sorted(dup)


def _shadowed(db):
    bad = [p[0] for p in db.passwd if p[1] != "x"]
    return not bad, "accounts not using shadow: %s" % (sample(bad) or "none")


def _empty_password(db):
    bad = [s[0] for s in db.shadow if s[1] == ""]
    return not bad, "empty password fields: %s" % (sample(bad) or "none")


def _groups_exist(db):
    known = {g[2] for g in db.group}
    bad = ["%s (gid %s)" % (p[0], p[3]) for p in db.passwd if p[3] not in known]
    return not bad, "primary groups missing from /etc/group: %s" % (sample(bad) or "none")


def _duplicates(field, table):
    def test(db):
        bad = _dupes(row[field] for row in getattr(db, table))
        return not bad, "duplicates: %s" % (sample(bad) or "none")
    return test


def _uid0_only(db):
    bad = [p[0] for p in db.passwd if p[2] == "0" and p[0] != "root"]
    return not bad, "UID 0 accounts besides root: %s" % (sample(bad) or "none")


def _gid0_only(db):
    bad = [p[0] for p in db.passwd if p[3] == "0" and p[0] not in ("root", "sync", "shutdown", "halt", "operator")]
    return not bad, "accounts with primary GID 0 besides root: %s" % (sample(bad) or "none")


def _gid0_group_only(db):
    bad = [g[0] for g in db.group if g[2] == "0" and g[0] != "root"]
    return not bad, "groups with GID 0 besides root: %s" % (sample(bad) or "none")


def _root_access_controlled(db):
    # passwd -S: P (a password), L (locked: ! or *) pass; NP (empty) fails.
    field = db.root_shadow_field()
    state = "NP" if not field else ("L" if field.startswith(("!", "*")) else "P")
    return state != "NP", "root password status %s" % state


def _root_gid0(db):
    root = [p for p in db.passwd if p[0] == "root"]
    return bool(root) and root[0][3] == "0", "root primary GID %s" % (root[0][3] if root else "missing")


def _root_password_set(db):
    field = db.root_shadow_field()
    ok = bool(field) and not field.startswith(("!", "*"))
    return ok, "root password %s" % ("set" if ok else "not set or locked")


def _system_accounts_nologin(db):
    bad = [p[0] for p in db.passwd if int(p[2]) < db.uid_min and p[0] not in db.exempt and not _nologin(p[6])]
    return not bad, "system accounts with a login shell: %s" % (sample(bad) or "none")


def _last_change_past(db):
    today = int(time.time() // 86400)
    bad = [s[0] for s in db.shadow if s[2].isdigit() and int(s[2]) > today]
    return not bad, "password changed in the future: %s" % (sample(bad) or "none")


def _shells_no_nologin(_db):
    bad = [line.strip() for line in (read_text("/etc/shells") or "").splitlines()
           if line.strip().endswith("/nologin")]
    return not bad, "nologin in /etc/shells: %s" % (sample(bad) or "none")


def _root_path(_db):
    # The PATH root gets from a login shell (/etc/profile and friends).
    _rc, out, _err = run(["/bin/sh", "-lc", 'printf %s "$PATH"'])
    out = out.strip() or os.environ.get("PATH", "")
    bad = []
    for part in out.split(":"):
        if part in ("", "."):
            bad.append("empty or '.' entry")
            continue
        try:
            st = os.stat(part)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            bad.append(part)
    return not bad, "root PATH %s: %s" % (out, "problems in " + sample(bad) if bad else "ok")


def _home_dirs(db):
    bad = []
    for p in db.interactive:
        home = p[5]
        try:
            st = os.stat(home)
        except OSError:
            bad.append("%s: %s missing" % (p[0], home))
            continue
        if st.st_uid != int(p[2]) or st.st_mode & 0o027:
            bad.append("%s: %s %04o" % (p[0], home, stat.S_IMODE(st.st_mode)))
    return not bad, "interactive home directories: %s" % (sample(bad) or "owned and 0750 or stricter")


def _unsafe_dot_file(path, uid):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        return False
    name = os.path.basename(path)
    if name in (".forward", ".rhosts"):
        return True
    if name == ".netrc" and st.st_mode & 0o177:
        return True
    return bool(st.st_mode & 0o022 or st.st_uid != uid)


def _dot_files(db):
    bad = [path for p in db.interactive for path in glob.glob(os.path.join(p[5], ".*")) if _unsafe_dot_file(path, int(p[2]))]
    return not bad, "dot files: %s" % (sample(bad) or "none insecure")


_ACCOUNT_CHECKS = {
    "shadowed": _shadowed,
    "empty_password": _empty_password,
    "groups_exist": _groups_exist,
    "duplicate_uid": _duplicates(2, "passwd"),
    "duplicate_gid": _duplicates(2, "group"),
    "duplicate_user": _duplicates(0, "passwd"),
    "duplicate_group": _duplicates(0, "group"),
    "uid0_only": _uid0_only,
    "root_gid0": _root_gid0,
    "root_path": _root_path,
    "root_password_set": _root_password_set,
    "system_accounts_nologin": _system_accounts_nologin,
    "last_change_past": _last_change_past,
    "home_dirs": _home_dirs,
    "dot_files": _dot_files,
    "shells_no_nologin": _shells_no_nologin,
    "gid0_only": _gid0_only,
    "gid0_group_only": _gid0_group_only,
    "root_access_controlled": _root_access_controlled,
}
ACCOUNT_TESTS = tuple(_ACCOUNT_CHECKS)


def account_test(test, exempt=("root", "sync", "shutdown", "halt", "nobody")):
    """(compliant, evidence) for one account database test."""
    db = _Accounts(exempt)
    if test not in _ACCOUNT_CHECKS:
        raise CisError("unknown accounts test %r (known: %s)" % (test, ", ".join(ACCOUNT_TESTS)))
    return _ACCOUNT_CHECKS[test](db)


def _fstab_add_options(point, options, fstab="/etc/fstab"):
    text = read_text(fstab)
    if text is None:
        return False
    out, changed = [], False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.lstrip().startswith("#") and fields[1] == point:
            current = fields[3].split(",")
            missing = [o for o in options if o not in current]
            if missing:
                fields[3] = ",".join([o for o in current if o != "defaults"] + missing)
                line = "\t".join(fields)
                changed = True
        out.append(line)
    if changed:
        write_text(fstab, "\n".join(out) + "\n")
    return changed


def fstab_options(point, fstab="/etc/fstab"):
    """The options of the active /etc/fstab entry for a mount point, or None when it has none."""
    for line in (read_text(fstab) or "").splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.lstrip().startswith("#") and fields[1] == point:
            return set(fields[3].split(","))
    return None


KEPT_FLAGS = ("nodev", "nosuid", "noexec", "ro")


def persist_mount_options(point, fstype, options, fstab="/etc/fstab", live=()):
    """Puts the options in /etc/fstab: the entry of the point, or a new entry for a tmpfs (tmp.mount, /dev/shm).

    Returns what was done, or None when the options cannot be persisted (no entry, not a tmpfs)."""
    if fstab_options(point, fstab) is not None:
        return "fstab updated" if _fstab_add_options(point, options, fstab) else "fstab already has them"
    if fstype != "tmpfs":
        return None
    text = read_text(fstab) or ""
    # The new entry keeps the flags the mount has live, or the next control of the same mount finds them missing.
    flags = [o for o in KEPT_FLAGS if o in live and o not in options] + list(options)
    entry = "\t".join(("tmpfs", point, "tmpfs", ",".join(["defaults"] + flags), "0", "0"))
    write_text(fstab, text + ("" if not text or text.endswith("\n") else "\n") + entry + "\n", 0o644)
    return "fstab entry added (a tmpfs entry in /etc/fstab takes over from tmp.mount)"


def check_mount(control, mount_table, may_change, mountinfo, fstab):
    """(status, evidence, changed) of a mount control: live options, and the fstab entry that keeps them."""
    point = control["path"]
    entry = [m for m in mount_table if m[0] == point]
    if control.get("separate"):
        return ("pass" if entry else "failed",
                "%s is %s" % (point, "a separate %s mount" % entry[-1][1] if entry else "not a separate mount"), False)
    if not entry:
        return "not_applicable", "%s is not a separate mount" % point, False
    wanted = control["options"]
    missing = [o for o in wanted if o not in entry[-1][2]]
    stored = fstab_options(point, fstab)
    unpersisted = [o for o in wanted if stored is not None and o not in stored]
    seen = "%s mounted with %s; missing %s" % (point, ",".join(sorted(entry[-1][2] & set(wanted))) or "none",
                                               ",".join(missing) or "nothing")
    if unpersisted:
        seen += "; %s not in /etc/fstab" % ",".join(unpersisted)
    if not missing and not unpersisted:
        return "pass", seen, False
    if not may_change:
        return "failed", seen, False
    persisted = persist_mount_options(point, entry[-1][1], wanted, fstab, entry[-1][2])
    notes = []
    if missing:
        rc, _out, err = run(["mount", "-o", "remount," + ",".join(wanted), point])
        notes.append("remount %s" % ("ok" if rc == 0 else "failed: " + err.strip()[:150]))
    now = [m for m in mounts(mountinfo) if m[0] == point]
    still = [o for o in wanted if not now or o not in now[-1][2]]
    if persisted:
        notes.append(persisted)
    if still:
        return "failed", "%s; %s" % (seen, "; ".join(notes)), True
    if not persisted:
        notes.append("remounted live only: no /etc/fstab entry for %s, lost at reboot" % point)
        return "failed", "%s; %s" % (seen, "; ".join(notes)), True
    return "fixed", "%s; %s" % (seen, "; ".join(notes)), True


AIDE_TIMERS = ("dailyaidecheck.timer", "aidecheck.timer")
AIDE_CRON_PATHS = ("/etc/crontab", "/etc/cron.d/*", "/var/spool/cron/crontabs/root", "/var/spool/cron/root")
_AIDE_CHECK = re.compile(r"(^|[\s/])aide(\.wrapper)?\s.*(--check|\s-C\b)")


def aide_schedules(timers, cron_paths):
    """Where an AIDE check is scheduled: enabled timers and active cron lines that run ``aide --check``."""
    found = []
    for timer in timers:
        _rc, out, _err = run(["systemctl", "is-enabled", timer])
        if out.strip() == "enabled":
            found.append("%s enabled" % timer)
    for spec in cron_paths:
        for path in sorted(glob.glob(spec)):
            for line in (read_text(path) or "").splitlines():
                line = line.strip()
                if line and not line.startswith("#") and not re.match(r"^\w+\s*=", line) and _AIDE_CHECK.search(line):
                    found.append("%s: %s" % (path, line))
    return found


def aide_database(control, may_change, aide):
    """(ok, evidence, changed): the database a scheduled check compares with exists (``database``); made,
    when missing, by ``init`` (``aide --init``, bounded by ``init_timeout``) and moving what it wrote
    (``database_new``) into place. An interrupted init leaves only ``database_new``, redone next run."""
    database = control.get("database")
    if not database or os.path.exists(database):
        return True, ("database %s" % database) if database else "", False
    if not aide or not os.path.exists(aide):
        return False, "aide is not installed: no database at %s" % database, False
    if not may_change:
        return False, "no AIDE database at %s (aide --init)" % database, False
    started = time.monotonic()
    rc, out, err = run(control["init"], timeout=int(control.get("init_timeout") or 900))
    if rc == 0 and os.path.exists(control["database_new"]):
        os.replace(control["database_new"], database)
    took = "%s: rc %d in %.0f s" % (" ".join(control["init"]), rc, time.monotonic() - started)
    if not os.path.exists(database):
        # Nothing was put in place: a failed init is no change (a partial database_new is redone next run).
        return False, "no AIDE database at %s; %s %s" % (database, took, (err or out).strip()[-150:]), False
    return True, "database %s written (%s)" % (database, took), True


def check_aide_scheduled(control, may_change):
    """(status, evidence, changed): an AIDE database exists and a timer or cron entry runs ``aide --check``;
    fixed by ``aide --init`` and by enabling the packaged timer, else by a cron.d entry."""
    timers = control.get("timers") or AIDE_TIMERS
    cron_paths = control.get("cron_paths") or AIDE_CRON_PATHS
    aide = control.get("aide") or next((p for p in ("/usr/bin/aide", "/usr/sbin/aide") if os.path.exists(p)), None)
    db_ok, db_evidence, db_changed = aide_database(control, may_change, aide)
    found = aide_schedules(timers, cron_paths)
    if found or not db_ok:
        status = ("fixed" if db_changed else "pass") if db_ok else "failed"
        return status, "; ".join(e for e in (db_evidence, "scheduled: %s" % (sample(found, 5) or "nothing")) if e), db_changed
    if not may_change:
        return "failed", "no enabled timer (%s) and no cron entry running aide --check" % ", ".join(timers), False
    if not aide or not os.path.exists(aide):
        return "failed", "aide is not installed: nothing to schedule", False
    installed = []
    for timer in timers:
        _rc, out, _err = run(["systemctl", "is-enabled", timer])
        if out.strip() and out.strip() not in ("not-found", "masked"):
            installed.append(timer)
    if installed:
        rc, out, err = run(["systemctl", "enable", "--now", installed[0]])
        done = "systemctl enable --now %s%s" % (installed[0], "" if rc == 0 else " failed: " + (err or out).strip()[:150])
    else:
        cron_file = control.get("cron_file") or "/etc/cron.d/cis-aide"
        write_text(cron_file, "0 5 * * * root %s --check\n" % aide, 0o644)
        done = "wrote %s" % cron_file
    found = aide_schedules(timers, cron_paths)
    return ("fixed" if found else "failed"), "; ".join(e for e in (db_evidence, done, "scheduled: %s" % (
        sample(found, 5) or "nothing")) if e), True


def listening_sockets(protos=("tcp", "udp"), root="/proc/net"):
    """(protocol, v6, address, port) of each TCP socket in LISTEN and each bound UDP socket, from /proc/net."""
    for proto in protos:
        for v6 in (False, True):
            for line in (read_text(os.path.join(root, proto + ("6" if v6 else ""))) or "").splitlines()[1:]:
                fields = line.split()
                if len(fields) < 4 or fields[3] != ("0A" if proto == "tcp" else "07") or ":" not in fields[1]:
                    continue
                address, hexport = fields[1].split(":", 1)
                yield proto, v6, address, int(hexport, 16)


def _listeners(port):
    return [(address, _is_loopback(address, v6))
            for _proto, v6, address, bound in listening_sockets(("tcp",)) if bound == port]


class Context:
    """What the checks of one run share: the walk's findings, the mount table, the paths to read."""

    def __init__(self, findings=None, scan=None, mount_table=(), mountinfo="/proc/self/mountinfo", fstab="/etc/fstab"):
        self.findings = findings or {}
        self.scan = scan or {"entries": 0}
        self.mount_table = list(mount_table)
        self.mountinfo = mountinfo
        self.fstab = fstab


# Each check takes (control, may_change, context) and returns (status, evidence, changed).
def check_world_writable(_control, may_change, ctx):
    files, dirs = ctx.findings["world_writable_files"], ctx.findings["world_writable_dirs"]
    if not files and not dirs:
        return "pass", ("no world-writable files, no world-writable directories without the sticky bit "
                        "(%d entries scanned)" % ctx.scan["entries"]), False
    if not may_change:
        return "failed", "world-writable: %s" % sample(files + dirs), False
    for path in files:
        os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~stat.S_IWOTH)
    for path in dirs:
        os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_ISVTX)
    return "fixed", "removed o+w from %s; set the sticky bit on %s" % (
        sample(files) or "no file", sample(dirs) or "no directory"), True


def check_unowned(_control, _may_change, ctx):
    bad = ctx.findings["unowned"]
    return ("failed" if bad else "pass",
            "unowned or ungrouped: %s" % (sample(bad) or "none (%d entries scanned)" % ctx.scan["entries"]), False)


def check_suid_sgid(_control, _may_change, ctx):
    found = ctx.findings["suid_sgid"]
    return "pass", "%d SUID/SGID files for review: %s" % (len(found), sample(found)), False


def check_mount_row(control, may_change, ctx):
    return check_mount(control, ctx.mount_table, may_change, ctx.mountinfo, ctx.fstab)


def check_aide_row(control, may_change, _ctx):
    return check_aide_scheduled(control, may_change)


def check_accounts(control, _may_change, _ctx):
    ok, text = account_test(control["test"])
    return ("pass" if ok else "failed"), text, False


def regex_hits(pattern, paths):
    """Active lines matching the regex in the files the globs name: ["path: line", ...]."""
    pattern = re.compile(pattern, re.M)
    hits = []
    for spec in paths:
        for path in sorted(glob.glob(spec)):
            for line in (read_text(path) or "").splitlines():
                if line.strip() and not line.lstrip().startswith("#") and pattern.search(line):
                    hits.append("%s: %s" % (path, line.strip()))
    return hits


def check_regex(control, _may_change, _ctx):
    hits = regex_hits(control["pattern"], control["paths"])
    ok = not hits if control["check"] == "regex_absent" else bool(hits)
    return ("pass" if ok else "failed",
            sample(hits, 5) if hits else "no line matches /%s/ in %s" % (control["pattern"], ", ".join(control["paths"])),
            False)


def check_command(control, _may_change, _ctx):
    # A number in a YAML argv (-maxdepth 2) is an argument like any other.
    argv = [str(arg) for arg in control["argv"]]
    rc, out, err = run(argv)
    text = (out + err).strip()
    if "expect" in control:
        ok = re.search(control["expect"], text, re.M) is not None
    else:
        ok = rc != 127 and re.search(control["expect_absent"], text, re.M) is None
    return ("pass" if ok else "failed"), "%s: %s" % (" ".join(argv), text[:300] or "rc %d, no output" % rc), False


def check_local_only(control, _may_change, _ctx):
    found = _listeners(int(control["port"]))
    bad = [a for a, loopback in found if not loopback]
    return ("failed" if bad else "pass",
            "tcp/%s listeners: %s" % (control["port"], "%d, %d not on loopback" % (len(found), len(bad)) if found else "none"),
            False)


def _login_shells():
    """The login shells of /etc/shells: its active lines but nologin."""
    return {line.strip() for line in (read_text("/etc/shells") or "").splitlines()
            if line.strip() and not line.lstrip().startswith("#") and not line.strip().endswith("/nologin")}


def check_shell_less_locked(_control, may_change, _ctx):
    """Accounts other than root without a login shell of /etc/shells have a locked password (! or *)."""
    shells = _login_shells()
    if not shells:
        # Without the list every account looks shell-less: locking them all would lock out every login.
        return "failed", "/etc/shells lists no login shell: nothing locked", False
    shadow = {s[0]: s[1] for s in _colon_file("/etc/shadow")}
    bad = [p[0] for p in _passwd() if p[0] != "root" and p[6] not in shells
           and not shadow.get(p[0], "").startswith(("!", "*"))]
    # usermod -L of an account missing from /etc/shadow would write "!x" into /etc/passwd (7.2.1 fails).
    unshadowed = [name for name in bad if name not in shadow]
    bad = [name for name in bad if name in shadow]
    if unshadowed:
        return "failed", "accounts without a login shell missing from /etc/shadow (7.2.1): %s; not locked: %s" % (
            sample(unshadowed), sample(bad) or "none"), False
    if not bad:
        return "pass", "accounts without a login shell that are not locked: none", False
    if not may_change:
        return "failed", "accounts without a login shell that are not locked: %s" % sample(bad), False
    failed = [name for name in bad if run(["usermod", "-L", name])[0] != 0]
    if failed:
        return "failed", "usermod -L failed for %s (of %s)" % (sample(failed), sample(bad)), len(failed) < len(bad)
    return "fixed", "locked (usermod -L): %s" % sample(bad), True


IPV4_LOOPBACK_IN_V6 = "0000000000000000FFFF0000"


def _is_loopback(address, v6):
    if not v6:
        return address.endswith("7F")
    # /proc/net/tcp6 prints each 32-bit word in host order: ::1 is 00000000000000000000000001000000 on
    # little-endian hosts; ::ffff:127.x.y.z is an IPv4 loopback address.
    return (address in ("00000000000000000000000001000000", "0" * 31 + "1")
            or (address.startswith(IPV4_LOOPBACK_IN_V6) and address.endswith("7F")))


def open_ports(family, root="/proc/net"):
    """{(protocol, port)} listened on (TCP LISTEN, bound UDP) on addresses other than loopback. A wildcard IPv6
    socket ([::]) takes IPv4 connections too (net.ipv6.bindv6only=0), so it counts for IPv4 as well."""
    return {(proto, port) for proto, v6, address, port in listening_sockets(root=root)
            if not _is_loopback(address, v6) and ((family == 6) == v6 or (family == 4 and v6 and address == "0" * 32))}


PORT_FLAGS = ("--dport", "--dports", "--destination-port", "--destination-ports")


def _port_numbers(text, proto):
    """Ports of a --dport/--dports value (22, 8000:8100, 80,443, ssh); names that do not resolve are left out."""
    ports = []
    for part in text.split(","):
        low, _sep, high = part.partition(":")
        try:
            bounds = [int(low) if low.isdigit() else socket.getservbyname(low, proto or "tcp")]
            bounds.append(int(high) if high.isdigit() else socket.getservbyname(high, proto or "tcp") if high else bounds[0])
        except OSError:
            continue
        ports.extend(range(bounds[0], bounds[1] + 1))
    return ports


def rule_ports(rules, start="INPUT"):
    """What the rules reachable from ``start`` of an ``iptables -S`` listing say about destination ports:
    ({(protocol, port)} named by a rule, {protocol} accepted whatever the port). Jumps (-j, -g) to the
    table's own chains are followed; a negated port or protocol names nothing."""
    chains = {}
    for rule in rules.splitlines():
        tokens = rule.split()
        if len(tokens) >= 2 and tokens[0] == "-A":
            chains.setdefault(tokens[1], []).append(tokens[2:])
    named, wholesale = set(), set()
    seen, todo = {start}, [start]
    while todo:
        for tokens in chains.get(todo.pop(), []):
            flags = {t: i for i, t in enumerate(tokens)}
            target = next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in ("-j", "-g")), None)
            if target in chains and target not in seen:
                seen.add(target)
                todo.append(target)
            if any(tokens[i - 1] == "!" for i, t in enumerate(tokens) if i and t in ("-p",) + PORT_FLAGS):
                continue
            proto = tokens[flags["-p"] + 1] if "-p" in flags and flags["-p"] + 1 < len(tokens) else None
            port_flags = [f for f in PORT_FLAGS if f in flags]
            ports = []
            for flag in port_flags:
                if flags[flag] + 1 < len(tokens):
                    ports += _port_numbers(tokens[flags[flag] + 1], proto)
            if ports and target in ("ACCEPT", "DROP", "REJECT"):
                named.update((proto, port) for port in ports)
            elif not port_flags and target == "ACCEPT" and not (
                    {"--state", "--ctstate"} & set(flags) or ("-i" in flags and tokens[flags["-i"] + 1:][:1] == ["lo"])):
                wholesale.add(proto)
    return named, wholesale


def check_listeners_have_rules(control, _may_change, _ctx):
    family = int(control.get("family", 4))
    ports = open_ports(family, control.get("proc_net", "/proc/net"))
    tool = "iptables" if family == 4 else "ip6tables"
    rc, out, err = run([tool, "-S"])
    if rc != 0:
        return "failed", "%s -S: %s" % (tool, (out + err).strip()[:200] or "rc %d" % rc), False
    named, wholesale = rule_ports(out)
    bad = sorted("%s/%d" % (proto, port) for proto, port in ports
                 if not ({None, proto} & wholesale or {(None, port), (proto, port)} & named))
    return ("failed" if bad else "pass",
            "IPv%d ports open beyond loopback with no rule in INPUT or the chains it jumps to: %s (of %d open)"
            % (family, sample(bad) or "none", len(ports)), False)


MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
# Directories of kernel/fs that hold libraries of filesystems, not filesystems.
FS_HELPER_DIRS = ("nls", "nfs_common", "quota", "netfs", "fscache", "cachefiles", "jbd2", "lockd", "exportfs", "dlm",
                  "smbfs_common", "unicode", "crypto", "verity")
# Filesystem types whose kernel/fs directory has another name.
FSTYPE_DIRS = {"vfat": "fat", "msdos": "fat", "iso9660": "isofs", "nfs4": "nfs", "overlay": "overlayfs",
               "cifs": "smb", "smb3": "smb", "ntfs3": "ntfs3", "fuseblk": "fuse", "fusectl": "fuse", "autofs": "autofs"}


def fs_modules(release, modules_root="/lib/modules"):
    """{filesystem (a directory of kernel/fs): [its module names]} of a kernel release, or None when its modules
    are not on the host. Modules directly in kernel/fs (binfmt_misc, mbcache) are not filesystems."""
    base = os.path.join(modules_root, release, "kernel", "fs")
    if not os.path.isdir(base):
        return None
    found = {}
    for entry in sorted(os.listdir(base)):
        if entry in FS_HELPER_DIRS or not os.path.isdir(os.path.join(base, entry)):
            continue
        for _dirpath, _dirs, files in os.walk(os.path.join(base, entry)):
            for name in files:
                for suffix in MODULE_SUFFIXES:
                    if name.endswith(suffix):
                        found.setdefault(entry, []).append(name[:-len(suffix)].replace("-", "_"))
    return found


MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/lib/modprobe.d", "/usr/lib/modprobe.d")


def disabled_modules(dirs=MODPROBE_DIRS):
    """Modules modprobe will neither load on request (``install <name> /bin/false``) nor by alias
    (``blacklist <name>``): both lines, as the benchmarks ask."""
    install, blacklist = set(), set()
    for directory in dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*.conf"))):
            for line in (read_text(path) or "").splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "install" and parts[2] in ("/bin/false", "/bin/true",
                                                                              "/usr/bin/false", "/usr/bin/true"):
                    install.add(parts[1].replace("-", "_"))
                elif len(parts) >= 2 and parts[0] == "blacklist":
                    blacklist.add(parts[1].replace("-", "_"))
    return install & blacklist


def check_unused_fs_modules(control, _may_change, ctx):
    release = os.uname().release
    filesystems = fs_modules(release, control.get("modules_root", "/lib/modules"))
    if filesystems is None:
        return "not_applicable", "no modules of kernel %s on this host" % release, False
    mounted = set()
    for _point, fstype, _options in ctx.mount_table:
        base = fstype.split(".")[0]
        mounted.update((fstype, base, FSTYPE_DIRS.get(fstype, base)))
    keep = set(control.get("keep", []))
    disabled = disabled_modules(control.get("modprobe_dirs") or MODPROBE_DIRS)
    open_ = sorted(name for name, modules in filesystems.items()
                   if name not in mounted and name not in keep and not set(modules) <= disabled)
    return ("failed" if open_ else "pass",
            "filesystems of kernel %s neither mounted, disabled (install and blacklist) nor kept (%s): %s"
            % (release, ", ".join(sorted(keep)) or "none kept", sample(open_, 12) or "none"), False)


def ipv6_enabled(if_inet6="/proc/net/if_inet6"):
    """Whether the host has IPv6: an address in /proc/net/if_inet6 (none when the kernel has IPv6 off by
    ipv6.disable=1 or net.ipv6.conf.all.disable_ipv6=1)."""
    return bool((read_text(if_inet6) or "").strip())


CHECKS = {
    "world_writable": check_world_writable,
    "unowned": check_unowned,
    "suid_sgid": check_suid_sgid,
    "mount": check_mount_row,
    "aide_scheduled": check_aide_row,
    "accounts": check_accounts,
    "regex_absent": check_regex,
    "regex_present": check_regex,
    "command": check_command,
    "local_only": check_local_only,
    "shell_less_locked": check_shell_less_locked,
    "unused_fs_modules": check_unused_fs_modules,
    "listeners_have_rules": check_listeners_have_rules,
}
# The checks that change the host when a control fails; the others report what a person must act on, so a
# catalogue row using one says why in check_only (or not_applicable, waived).
FIXING_CHECKS = frozenset(("world_writable", "mount", "aide_scheduled", "shell_less_locked"))


def apply(controls, prune=DEFAULT_PRUNE, audit_only=False, check_mode=False, mountinfo="/proc/self/mountinfo",
          fstab="/etc/fstab"):
    """Evaluates a table of read-mostly checks. Returns (results, changed, scan)."""
    for control in controls:
        if control.get("check") not in CHECKS:
            raise CisError("control %s: unknown check %r (known: %s)"
                           % (control.get("id"), control.get("check"), ", ".join(sorted(CHECKS))))
    mount_table = mounts(mountinfo)
    scan = None
    findings = {}
    if any(c["check"] in WALK_CHECKS for c in controls):
        findings, scan = walk(prune, mount_table)
        scan["suid_sgid"] = findings["suid_sgid"]
    ctx = Context(findings, scan, mount_table, mountinfo, fstab)
    changed = False
    results = []
    for control in controls:
        if control.get("ipv6") and not ipv6_enabled(control.get("if_inet6", "/proc/net/if_inet6")):
            results.append(finish(control, ["not_applicable"], ["IPv6 is off on this host: no address in /proc/net/if_inet6"]))
            continue
        status, text, did_change = CHECKS[control["check"]](control, enforce(control, audit_only, check_mode), ctx)
        changed = changed or did_change
        results.append(finish(control, [status], [text]))
    return results, changed, scan
