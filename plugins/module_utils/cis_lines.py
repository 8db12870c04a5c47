# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration lines for a table of CIS controls, across many files in one pass.

A control holds ``lines``, each one of:

- ``{path, key, value}``: the setting ``key<separator>value`` (other lines setting
  the key are replaced); ``compare: le|ge`` accepts a stricter number;
- ``{path, line}``: this exact line is present (``match``, a regex, names the
  lines it replaces);
- ``{path, absent}``: no active line matches this regex (``path`` may be a glob);
- ``{kmod}``: the kernel module cannot be loaded (modprobe.d) and is not loaded;
- ``{path, grub_arg}``: the kernel command line in /etc/default/grub has the argument
  (``absent`` on that file removes matching arguments, not the line); both are
  ``pending_reboot`` until /proc/cmdline agrees;
- any file item may add ``live_command`` and ``live_expect`` (a regex): set in the file
  but not in force (``getenforce`` for SELinux) is ``pending_reboot``;
- ``{command, expect}``: the command's output matches (evaluated after all writes);
  ``fix`` is a command that makes it match.

Per-file settings (``files``) give the mode of a new file, its first lines, a
``validate`` command (``%s`` is the path; a failed validation restores the
file) and ``on_change`` commands (reloads) run once when the file changed.
"""
from __future__ import annotations

import glob
import os
import re

from ansible_collections.guardrail.ecs.plugins.module_utils.cis_common import (
    CisError, enforce, finish, read_text, run, write_text)

ITEM_KINDS = ("key", "line", "absent", "absent_arg", "kmod", "grub_arg", "command")


def item_kind(item):
    for kind in ITEM_KINDS:
        if kind in item:
            return kind
    raise CisError("line item %r names none of %s" % (item, ", ".join(ITEM_KINDS)))


def _active(raw):
    stripped = raw.strip()
    return bool(stripped) and not stripped.startswith(("#", ";"))


def _key_pattern(key, separator, ignore_case):
    sep = r"\s*=\s*" if separator.strip() == "=" else r"\s+"
    return re.compile(r"^\s*%s(?:%s)(.*?)\s*$" % (re.escape(key), sep), re.I if ignore_case else 0)


def _compare(current, wanted, how, ignore_case):
    if current is None:
        return False
    if how in ("le", "ge"):
        try:
            number = int(current.split()[0])
        except (ValueError, IndexError):
            return False
        return number <= int(wanted) if how == "le" else number >= int(wanted)
    if ignore_case:
        return current.lower() == str(wanted).lower()
    return current == str(wanted)


class FileEdit:
    """The lines of one file, edited in memory."""

    def __init__(self, path, options):
        self.path = path
        self.options = options or {}
        self.before = read_text(path)
        self.lines = (self.before or "").splitlines()
        if self.before is None and self.options.get("header"):
            self.lines = list(self.options["header"])

    def text(self):
        return "\n".join(self.lines) + "\n" if self.lines else ""

    @property
    def changed(self):
        return self.text() != (self.before or "")

    # Each check returns (compliant, observed); each fix edits self.lines.
    def check_key(self, item):
        pattern = _key_pattern(item["key"], item.get("separator", " "), item.get("ignore_case", False))
        values = [m.group(1) for m in (pattern.match(raw) for raw in self.lines if _active(raw)) if m]
        first = values[0] if values else None
        ok = _compare(first, item["value"], item.get("compare", "eq"), item.get("ignore_case", False))
        ok = ok and all(v == first for v in values)
        return ok, "%s %s" % (item["key"], first if first is not None else "unset")

    def fix_key(self, item):
        separator = item.get("separator", " ")
        pattern = _key_pattern(item["key"], separator, item.get("ignore_case", False))
        wanted = "%s%s%s" % (item["key"], separator, item["value"])
        out, placed = [], False
        for raw in self.lines:
            if _active(raw) and pattern.match(raw):
                if not placed:
                    out.append(wanted)
                    placed = True
                continue
            out.append(raw)
        if not placed:
            # sshd reads the first value of a key, and a Match block runs to the end of the file.
            at = next((i for i, raw in enumerate(out) if re.match(r"^\s*Match\s", raw)), len(out))
            out.insert(at, wanted)
        self.lines = out

    def check_line(self, item):
        present = item["line"] in (raw.strip() for raw in self.lines)
        conflicts = self._conflicts(item)
        return present and not conflicts, "%s: %s" % (item["line"], "present" if present else "missing")

    def _conflicts(self, item):
        if not item.get("match"):
            return []
        pattern = re.compile(item["match"])
        return [raw for raw in self.lines if _active(raw) and pattern.search(raw) and raw.strip() != item["line"]]

    def fix_line(self, item):
        conflicts = set(self._conflicts(item))
        out, placed = [], item["line"] in (raw.strip() for raw in self.lines)
        for raw in self.lines:
            if raw in conflicts:
                if not placed:
                    out.append(item["line"])
                    placed = True
                continue
            out.append(raw)
        if not placed:
            out.append(item["line"])
        self.lines = out

    def check_absent(self, item):
        pattern = re.compile(item["absent"])
        found = []
        for raw in self.lines:
            if not _active(raw):
                continue
            cmdline = _grub_cmdline(raw)
            if cmdline is not None:
                found.extend(token for token in cmdline[1] if pattern.search(token))
            elif pattern.search(raw):
                found.append(raw.strip())
        return not found, ("%s: %s" % (self.path, "; ".join(found)) if found else "")

    def fix_absent(self, item):
        pattern = re.compile(item["absent"])
        out = []
        for raw in self.lines:
            cmdline = _grub_cmdline(raw) if _active(raw) else None
            if cmdline is not None:
                # A kernel command line is a list of tokens: drop the matching ones, keep the rest.
                name, tokens = cmdline
                kept = [token for token in tokens if not pattern.search(token)]
                out.append(raw if kept == tokens else '%s="%s"' % (name, " ".join(kept)))
            elif not (_active(raw) and pattern.search(raw)):
                out.append(raw)
        self.lines = out

    def _arg_lines(self, item):
        """Indexes of the active lines matching ``match`` whose arguments hold ``absent_arg``."""
        pattern = re.compile(item["match"])
        return [index for index, raw in enumerate(self.lines)
                if _active(raw) and pattern.search(raw) and item["absent_arg"] in raw.split()]

    def check_absent_arg(self, item):
        # A module's argument is a token of its line: the line itself stays (pam_unix without nullok).
        found = [self.lines[index].strip() for index in self._arg_lines(item)]
        return not found, ("%s: %s" % (self.path, "; ".join(found)) if found else "")

    def fix_absent_arg(self, item):
        for index in self._arg_lines(item):
            raw = self.lines[index]
            self.lines[index] = re.sub(r"[ \t]+%s(?=[ \t]|$)" % re.escape(item["absent_arg"]), "", raw)

    def has_grub_cmdline(self):
        return any(_grub_cmdline(raw) for raw in self.lines if _active(raw))

    def _grub_line(self):
        for index, raw in enumerate(self.lines):
            cmdline = _grub_cmdline(raw)
            if cmdline and cmdline[0] == "GRUB_CMDLINE_LINUX":
                return index, cmdline[1]
        return None, []

    def check_grub_arg(self, item):
        _index, args = self._grub_line()
        name = item["grub_arg"].split("=")[0]
        current = [a for a in args if a.split("=")[0] == name]
        return current == [item["grub_arg"]], "GRUB_CMDLINE_LINUX has %s" % (" ".join(current) or "no %s" % name)

    def fix_grub_arg(self, item):
        index, args = self._grub_line()
        name = item["grub_arg"].split("=")[0]
        args = [a for a in args if a.split("=")[0] != name] + [item["grub_arg"]]
        line = 'GRUB_CMDLINE_LINUX="%s"' % " ".join(args)
        if index is None:
            self.lines.append(line)
        else:
            self.lines[index] = line


_GRUB_CMDLINE = re.compile(r'^\s*(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=(["\']?)(.*)\2\s*$')


def _grub_cmdline(raw):
    """(variable, tokens) for a GRUB_CMDLINE_LINUX[_DEFAULT] line of /etc/default/grub, else None."""
    match = _GRUB_CMDLINE.match(raw)
    return (match.group(1), match.group(3).split()) if match else None


def live_kernel_args(path="/proc/cmdline"):
    """The running kernel's command line as tokens, or None when it cannot be read."""
    text = read_text(path)
    return None if text is None else text.split()


def live_command_problem(item):
    """'' when ``live_command`` shows the setting is in force, else what it shows (set in the file, not yet live)."""
    rc, out, err = run(item["live_command"])
    text = (out + err).strip()
    if rc == 0 and re.search(item.get("live_expect", ""), text, re.M):
        return ""
    return "%s says %s: takes effect at the next boot" % (" ".join(item["live_command"]), text[:100] or "rc %d" % rc)


def live_kernel_problem(item, kind, cmdline):
    """What the running kernel's command line still lacks (grub_arg) or still has (absent), or ''."""
    if cmdline is None:
        return ""
    if kind == "grub_arg":
        return "" if item["grub_arg"] in cmdline else "running kernel lacks %s" % item["grub_arg"]
    found = [token for token in cmdline if re.search(item["absent"], token)]
    return "running kernel has %s" % " ".join(found) if found else ""


# The audit rule field ``-F arch=`` of each table a machine has, and the ``ausyscall`` name of that table.
# aarch64 has no 32-bit table: auditctl refuses ``arch=b32`` rules there.
AUDIT_ARCHES = {
    "x86_64": (("b64", "x86_64"), ("b32", "i386")),
    "aarch64": (("b64", "aarch64"),),
}
# Syscalls of the old tables that the generic table (aarch64 and newer ports) lacks: only their *at forms exist.
GENERIC_TABLE_LACKS = frozenset((
    "open", "creat", "chmod", "chown", "lchown", "rename", "unlink", "rmdir", "mkdir", "mknod", "link", "symlink",
    "readlink", "access", "stat", "lstat", "utime", "utimes", "futimesat", "time", "stime", "fork", "vfork",
    "chown32", "fchown32", "lchown32", "fchownat32",
))
_AUDIT_SYSCALL_RULE = re.compile(r"^\s*-a\s.*-F\s+arch=(\S+)\s.*-S\s")


class AllBut:
    """A syscall table known only by what it lacks (``ausyscall`` missing)."""

    def __init__(self, lacks):
        self.lacks = frozenset(lacks)

    def __contains__(self, name):
        return name not in self.lacks

    def __eq__(self, other):
        return isinstance(other, AllBut) and other.lacks == self.lacks

    __hash__ = None


def host_syscall_tables(machine=None):
    """{audit arch field: syscall names} for the tables of this machine, from ``ausyscall <arch> --dump``."""
    machine = machine or os.uname().machine
    arches = AUDIT_ARCHES.get(machine, (("b64", machine),))
    tables = {}
    for field, name in arches:
        rc, out, _err = run(["ausyscall", name, "--dump"])
        names = {parts[1] for parts in (line.split() for line in out.splitlines())
                 if len(parts) == 2 and parts[0].isdigit()} if rc == 0 else set()
        if names:
            tables[field] = names
        else:
            tables[field] = AllBut(GENERIC_TABLE_LACKS if machine not in ("x86_64", "i686", "i386") else ())
    return tables


def is_audit_syscall_rule(line):
    return bool(_AUDIT_SYSCALL_RULE.match(line))


def adapt_audit_rule(line, tables):
    """The audit rule for the host's syscall tables: None when its arch or all its syscalls are missing."""
    tokens = line.split()
    arch = next((t[len("arch="):] for i, t in enumerate(tokens) if t.startswith("arch=") and tokens[i - 1] == "-F"), None)
    if arch not in tables:
        return None
    out, syscalls, at = [], [], None
    index = 0
    while index < len(tokens):
        if tokens[index] == "-S" and index + 1 < len(tokens):
            syscalls.extend(tokens[index + 1].split(","))
            if at is None:
                at = len(out)
                out.append(None)
            index += 2
            continue
        out.append(tokens[index])
        index += 1
    kept = [name for name in syscalls if name in tables[arch]]
    if not kept:
        return None
    out[at:at + 1] = ["-S", ",".join(kept)]
    return " ".join(out)


def adapt_audit_item(item, tables):
    """(item, note): a ``line`` item with an audit syscall rule made fit for the host's tables.

    A rule the host cannot load becomes an ``absent`` item, so a copy an earlier run wrote goes away."""
    line = item["line"]
    adapted = adapt_audit_rule(line, tables)
    if adapted == line:
        return item, ""
    exact = r"^\s*%s\s*$" % re.escape(line)
    if adapted is None:
        arch = re.search(r"arch=(\S+)", line).group(1)
        why = ("%s: no %s syscall table on this host" % (arch, "32-bit" if arch == "b32" else arch) if arch not in tables
               else "%s: none of its syscalls exist on this host" % arch)
        return {"path": item["path"], "absent": exact, "adapted": True}, "rule left out (%s)" % why
    dropped = sorted(set(re.search(r"-S\s+(\S+)", line).group(1).split(",")) - set(adapted.split(" -S ")[1].split()[0].split(",")))
    return dict(item, line=adapted, match=exact), "without %s (not on this host's table)" % ", ".join(dropped)


# The registry of file items: kind -> (check(edit, item) -> (compliant, observed), fix(edit, item) edits the lines).
FILE_ITEMS = {
    "key": (FileEdit.check_key, FileEdit.fix_key),
    "line": (FileEdit.check_line, FileEdit.fix_line),
    "absent": (FileEdit.check_absent, FileEdit.fix_absent),
    "absent_arg": (FileEdit.check_absent_arg, FileEdit.fix_absent_arg),
    "grub_arg": (FileEdit.check_grub_arg, FileEdit.fix_grub_arg),
}


def _modules_loaded(path="/proc/modules"):
    return {line.split()[0] for line in (read_text(path) or "").splitlines() if line.strip()}


def expand(controls, paths):
    """Controls with ``per_path: {path, line}`` get one line per path (``{path}`` in the line)."""
    out = []
    for control in controls:
        template = control.get("per_path")
        if template:
            control = dict(control)
            control["lines"] = list(control.get("lines") or []) + [
                {"path": template["path"], "line": template["line"].replace("{path}", p)} for p in sorted(set(paths))]
        out.append(control)
    return out


def apply(controls, files=None, modprobe_file="/etc/modprobe.d/cis-hardening.conf", modprobe_unload=True,
          audit_only=False, check_mode=False, proc_modules="/proc/modules", per_path_values=None,
          proc_cmdline="/proc/cmdline", audit_tables=None):
    """Evaluates and enforces a table of line controls. Returns (results, changed, diffs)."""
    if isinstance(files, list):
        files = {f["path"]: f for f in files}
    files = files or {}
    controls = expand(controls, per_path_values or [])
    edits = {}
    plan = []  # (control, [(item, kind, edit or None, compliant, observed)])

    def edit_for(path):
        if path not in edits:
            edits[path] = FileEdit(path, files.get(path))
        return edits[path]

    for control in controls:
        if not isinstance(control.get("lines"), list) or not (control["lines"] or control.get("per_path")):
            raise CisError("control %s: 'lines' must be a non-empty list" % control.get("id"))
        entries = []
        for item in control["lines"]:
            kind = item_kind(item)
            adapted_note = ""
            if kind == "line" and is_audit_syscall_rule(item["line"]):
                if audit_tables is None:
                    audit_tables = host_syscall_tables()
                item, adapted_note = adapt_audit_item(item, audit_tables)
                kind = item_kind(item)
            if kind == "kmod":
                entries.append((item, kind, None, None, None))
                continue
            if kind == "command":
                entries.append((item, kind, None, None, None))
                continue
            if "path" not in item:
                raise CisError("control %s: line item %r needs a path" % (control["id"], item))
            if item.get("requires") and not os.path.exists(item["requires"]):
                entries.append((item, "skip", None, True, "%s is not installed" % item["requires"]))
                continue
            paths = sorted(glob.glob(item["path"])) if kind == "absent" and glob.has_magic(item["path"]) else [item["path"]]
            for path in paths:
                if kind == "absent" and not os.path.exists(path) and not item.get("adapted"):
                    continue
                edit = edit_for(path)
                ok, observed = FILE_ITEMS[kind][0](edit, item)
                if adapted_note:
                    observed = "; ".join(o for o in (observed, adapted_note) if o)
                entries.append((item, kind, edit, ok, observed))
        plan.append((control, entries))

    # Kernel modules: both lines in one modprobe.d file.
    loaded = _modules_loaded(proc_modules)
    for control, entries in plan:
        for index, (item, kind, _edit, _ok, _observed) in enumerate(entries):
            if kind != "kmod":
                continue
            edit = edit_for(modprobe_file)
            name = item["kmod"]
            install_ok, _observed = edit.check_line({"line": "install %s /bin/false" % name,
                                                     "match": r"^\s*install\s+%s\s" % re.escape(name)})
            blacklist_ok, _observed = edit.check_line({"line": "blacklist %s" % name})
            entries[index] = (item, kind, edit, install_ok and blacklist_ok and name not in loaded,
                              "modprobe.d: %s; loaded: %s" % ("disabled" if install_ok and blacklist_ok else "not disabled",
                                                              "yes" if name in loaded else "no"))

    # Fix in memory, in table order (in check mode too, for the diff).
    for control, entries in plan:
        if not enforce(control, audit_only, False):
            continue
        for item, kind, edit, ok, _observed in entries:
            if ok or edit is None:
                continue
            if kind == "kmod":
                name = item["kmod"]
                edit.fix_line({"line": "install %s /bin/false" % name, "match": r"^\s*install\s+%s\s" % re.escape(name)})
                edit.fix_line({"line": "blacklist %s" % name})
            else:
                FILE_ITEMS[kind][1](edit, item)

    # Write, validate, roll back on failure.
    failed_files = {}
    written = []
    diffs = []
    for path, edit in sorted(edits.items()):
        if not edit.changed:
            continue
        diffs.append({"before": edit.before or "", "after": edit.text(), "before_header": path, "after_header": path})
        if audit_only or check_mode:
            continue
        mode = int(str(edit.options.get("mode", "0644")), 8)
        write_text(path, edit.text(), mode)
        validate = edit.options.get("validate")
        if validate:
            rc, out, err = run([a.replace("%s", path) for a in validate])
            if rc != 0:
                if edit.before is None:
                    os.unlink(path)
                else:
                    write_text(path, edit.before)
                failed_files[path] = "validation failed, file restored: %s" % (err or out).strip()[:300]
                continue
        written.append(path)

    # Files the table owns keep their mode, whoever changed it.
    if not (audit_only or check_mode):
        for path, edit in sorted(edits.items()):
            wanted = edit.options.get("mode")
            if wanted is None or path in failed_files or not os.path.exists(path):
                continue
            wanted = int(str(wanted), 8)
            if os.stat(path).st_mode & 0o7777 != wanted:
                os.chmod(path, wanted)
                if path not in written:
                    written.append(path)

    reload_notes = {}
    for path in written:
        for argv in edits[path].options.get("on_change", []):
            rc, out, err = run(argv)
            if rc != 0:
                reload_notes[path] = "%s failed: %s" % (" ".join(argv), (err or out).strip()[:200])

    unloaded_failed = set()
    if written or not (audit_only or check_mode):
        for control, entries in plan:
            if not enforce(control, audit_only, check_mode):
                continue
            for item, kind, _edit, _ok, _observed in entries:
                if kind == "kmod" and item["kmod"] in loaded:
                    if not modprobe_unload:
                        unloaded_failed.add(item["kmod"])
                        continue
                    rc, _out, _err = run(["modprobe", "-r", item["kmod"]])
                    if rc != 0:
                        unloaded_failed.add(item["kmod"])
    loaded_now = _modules_loaded(proc_modules)

    results = []
    cmdline = None
    for control, entries in plan:
        statuses, evidence = [], []
        may_change = enforce(control, audit_only, check_mode)
        for item, kind, edit, ok, observed in entries:
            if kind == "skip":
                statuses.append("not_applicable")
                evidence.append(observed)
                continue
            if kind == "command":
                rc, out, err = run(item["command"])
                matched = re.search(item["expect"], out + err, re.M) is not None
                status = "pass" if matched else "failed"
                if not matched and item.get("fix") and may_change:
                    run(item["fix"])
                    rc, out, err = run(item["command"])
                    if re.search(item["expect"], out + err, re.M):
                        status = "fixed"
                statuses.append(status)
                evidence.append("%s: %s" % (" ".join(item["command"]), (out + err).strip()[:200] or "rc %d" % rc))
                continue
            note = ""
            if ok:
                status = "pass"
            elif not may_change:
                status = "failed"
            elif edit.path in failed_files:
                status = "failed"
                note = failed_files[edit.path]
            else:
                status = "fixed"
                if edit.path in reload_notes:
                    note = reload_notes[edit.path]
                if kind == "kmod" and item["kmod"] in loaded_now:
                    status = "pending_reboot"
                    note = "still loaded: %s" % ("the kernel belongs to the machine running this container"
                                                 if not modprobe_unload else "modprobe -r refused")
            if status != "failed" and item.get("live_command"):
                problem = live_command_problem(item)
                if problem:
                    status, note = "pending_reboot", problem
            if status != "failed" and (kind == "grub_arg" or (kind == "absent" and edit.has_grub_cmdline())):
                if cmdline is None:
                    cmdline = live_kernel_args(proc_cmdline)
                problem = live_kernel_problem(item, kind, cmdline)
                if status == "fixed" and cmdline is None:
                    status, note = "pending_reboot", "takes effect at the next boot"
                elif problem:
                    status, note = "pending_reboot", problem + ", takes effect at the next boot"
            statuses.append(status)
            text = observed or ""
            if kind in ("key", "line", "grub_arg"):
                text = "%s: %s" % (edit.path, observed)
            evidence.append("%s%s" % (text, " (%s)" % note if note else ""))
        results.append(finish(control, statuses, evidence))
    changed = bool(written) or bool(loaded - loaded_now) or (check_mode and bool(diffs))
    return results, changed, diffs
