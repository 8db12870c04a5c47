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
  ``fix`` is a command that makes it match;
- ``{effective, value, path}``: the value the program uses (see cis_effective) for the key
  ``effective``, read from ``main`` and the drop-in directories ``dirs`` (highest priority
  first) and from the arguments of the PAM module ``pam: {module, paths}``; ``flag: true`` for a
  bare keyword. The fix sets it in ``path`` and takes a weaker value out of every file and PAM
  line that would win over it (a weaker drop-in below the first directory is hidden by a copy
  of the same name there, without the key);
- ``{sudo_default, value, path}``: the sudoers ``Defaults`` parameter, globally (the last one
  read wins) and in every scoped ``Defaults``; the fix sets it in ``path`` and takes weaker
  values out of the other sudoers files (each one validated with ``visudo -cf``); with
  ``flag: true`` instead of ``value`` a boolean parameter must be on and ``!name`` is weaker;
- ``{sshd, expect}``: ``sshd -T -C`` (``sshd`` is the argv without ``-C``) matches ``expect`` for
  root, a normal user and a connection matching each ``Match`` block of ``config``.

``key``, ``effective`` and ``sudo_default`` take ``compare: le|ge`` (a stricter number passes)
and ``min`` (a number below it fails: -1 for "never"); ``also`` lists numbers that pass besides
(``unlock_time`` 0: an account stays locked until an administrator unlocks it). A number is read as
the programs read it: its leading digits (``9e2`` is 9).

Per-file settings (``files``) give the mode of a new file, its first lines, a
``validate`` command (``%s`` is the path; a failed validation restores the
file) and ``on_change`` commands (reloads) run once when the file changed.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import effective as eff
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import line_item_problem
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import (
    CisError,
    enforce,
    finish,
    read_text,
    run,
    write_text,
)

ITEM_KINDS = ("key", "line", "absent", "absent_arg", "kmod", "grub_arg", "command", "effective", "sudo_default", "sshd")


def item_kind(item):
    for kind in ITEM_KINDS:
        if kind in item:
            return kind
    raise CisError("line item %r names none of %s" % (item, ", ".join(ITEM_KINDS)))


_active = eff.active
_key_pattern = eff.key_pattern


def _is_arg(token, name):
    """A module argument by name: ``nullok``, or ``remember`` in ``remember=5``."""
    return token == name or token.startswith(name + "=")


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
        ok = eff.item_satisfies(first, item)
        ok = ok and all(v == first for v in values)
        return ok, "%s %s" % (item["key"], first if first is not None else "unset")

    def fix_key(self, item):
        separator = item.get("separator", " ")
        pattern = _key_pattern(item["key"], separator, item.get("ignore_case", False))
        wanted = "%s%s%s" % (item["key"], separator, item["value"])
        out, placed = [], None
        for raw in self.lines:
            if _active(raw) and pattern.match(raw):
                if placed is None:
                    placed = len(out)
                    out.append(wanted)
                continue
            out.append(raw)
        # A reader that stops at a setting it does not know (``known``) never sees a line after it.
        stop = next((i for i, raw in enumerate(out) if i != placed and eff.read_stops_at([raw], item.get("known"))),
                    None)
        if placed is None:
            # sshd reads the first value of a key, and a Match block runs to the end of the file.
            at = next((i for i, raw in enumerate(out) if re.match(r"^\s*Match\s", raw)), len(out))
            out.insert(at if stop is None else min(at, stop), wanted)
        elif stop is not None and stop < placed:
            out.insert(stop, out.pop(placed))
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
                if _active(raw) and pattern.search(raw) and any(_is_arg(token, item["absent_arg"]) for token in raw.split())]

    def check_absent_arg(self, item):
        # A module's argument is a token of its line: the line itself stays (pam_unix without nullok).
        found = [self.lines[index].strip() for index in self._arg_lines(item)]
        return not found, ("%s: %s" % (self.path, "; ".join(found)) if found else "")

    def fix_absent_arg(self, item):
        for index in self._arg_lines(item):
            raw = self.lines[index]
            self.lines[index] = re.sub(r"[ \t]+%s(=\S*)?(?=[ \t]|$)" % re.escape(item["absent_arg"]), "", raw)

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


class EditBook:
    """Every file a run reads or edits, each edited once in memory."""

    def __init__(self, files):
        self.files = files
        self.edits = {}

    def edit(self, path, validate=None):
        if path not in self.edits:
            self.edits[path] = FileEdit(path, self.files.get(path))
        edit = self.edits[path]
        if validate and not edit.options.get("validate"):
            edit.options = dict(edit.options, validate=validate)
        return edit

    def lines(self, path):
        """A file's lines as edited so far, without creating an edit (no header for a file not written)."""
        if path in self.edits:
            return self.edits[path].lines
        return (read_text(path) or "").splitlines() if os.path.isfile(path) else []


def _effective_sources(item, extra=()):
    return eff.layered_sources(item.get("main"), item.get("dirs") or [], extra)


def _pam(item):
    """The PAM side of an effective item: (module, files, args_only) or None."""
    pam = item.get("pam")
    if not pam:
        return None
    return pam["module"], eff.pam_files(pam["paths"]), eff.truthy(pam.get("args_only", False))


def check_effective(book, item):
    """(compliant, observed) for a layered setting and its PAM module arguments.

    With ``pam.args_only`` the module reads no configuration file (PAM before 1.4): each of its lines
    must carry the argument, else the module's ``default`` applies."""
    key, pam = item["effective"], _pam(item)
    args_only = bool(pam and pam[2])
    value, source = (item.get("default"), "default") if args_only else eff.conf_value(_effective_sources(item), book.lines, item)
    ok = bool(value) if item.get("flag") else eff.item_satisfies(value, item)
    seen = ["%s %s (%s)" % (key, "set" if value is True else value if value is not None else "unset", source or "nowhere")]
    if pam:
        module, files, _args_only = pam
        lines = eff.pam_lines(files, module, book.lines)
        line_ok = []
        for path, _index, args in lines:
            arg = eff.pam_arg(args, key)
            good = (bool(arg) or ok) if item.get("flag") else (ok if arg is None else eff.item_satisfies(arg, item))
            line_ok.append(good)
            note = "%s %s in %s" % (module, "without %s" % key if arg is None else "%s=%s" % (key, arg), path)
            if not good and (arg is not None or args_only) and note not in seen:
                seen.append(note)
        if item.get("flag"):
            ok = bool(lines) and all(line_ok) if (args_only or not ok) else ok
        else:
            ok = all(line_ok) and (ok or (args_only and bool(lines)))
    return ok, "; ".join(seen)


def fix_effective(book, item):
    key, dirs, pam = item["effective"], list(item.get("dirs") or []), _pam(item)
    if not (pam and pam[2]):
        _fix_layers(book, item, key, dirs)
    if pam:
        module, files, args_only = pam
        wanted = True if item.get("flag") else item["value"]
        for path, index, args in eff.pam_lines(files, module, book.lines):
            arg = eff.pam_arg(args, key)
            weak = (not arg) if item.get("flag") else (arg is not None and not eff.item_satisfies(arg, item))
            if weak and (args_only or arg is not None):
                # Normalised, not removed: the line keeps saying what it enforces.
                edit = book.edit(path)
                edit.lines[index] = eff.with_pam_arg(edit.lines[index], key, wanted)
            elif args_only and arg is None and not eff.item_satisfies(item.get("default"), item):
                edit = book.edit(path)
                edit.lines[index] = eff.with_pam_arg(edit.lines[index], key, wanted)


def _fix_layers(book, item, key, dirs):
    target = book.edit(item["path"])
    if item.get("flag"):
        target.fix_line({"line": key})
        return
    target.fix_key({"key": key, "value": item["value"], "separator": item.get("separator", "="),
                    "ignore_case": item.get("ignore_case", False), "known": item.get("known")})
    sources = _effective_sources(item, [item["path"]])
    pattern = eff.key_pattern(key, item.get("separator", "="), item.get("ignore_case", False))
    for path in sources[sources.index(item["path"]) + 1:] if item["path"] in sources else sources:
        values = eff.file_values(book.lines(path), item)
        if not values or eff.item_satisfies(values[-1], item):
            continue
        if dirs and os.path.dirname(path) in dirs[1:]:
            # A vendor or runtime drop-in: a file of the same name in the first directory hides it (made
            # once, from the drop-in, then edited like any file when several keys need it).
            shadow = os.path.join(dirs[0], os.path.basename(path))
            if shadow not in book.edits:
                book.edit(shadow).lines = list(book.lines(path))
            path = shadow
        edit = book.edit(path)
        edit.lines = [raw for raw in edit.lines if not (eff.active(raw) and pattern.match(raw))]


def _sudo_entries(book, item):
    return eff.sudoers_entries(item.get("sudoers", "/etc/sudoers"), book.lines, item["sudo_default"])


def _sudo_ok(value, item):
    """A Defaults value meets the item: a ``flag`` must be on (``!name`` turns it off)."""
    if item.get("flag"):
        return value is True
    return eff.item_satisfies(eff.sudoers_value(value), item)


def _sudo_text(name, value):
    if value is True or value is False:
        return ("" if value else "!") + name
    return "%s=%s" % (name, value)


def check_sudo_default(book, item):
    entries = _sudo_entries(book, item)
    globals_ = [e for e in entries if not e[2]]
    weak = [e for e in entries if not _sudo_ok(e[3], item)]
    effective = globals_[-1][3] if globals_ else None
    ok = effective is not None and _sudo_ok(effective, item) and not weak
    where = globals_[-1][0] if globals_ else "no Defaults"
    shown = ("on" if effective else "off") if item.get("flag") and effective is not None else eff.sudoers_value(effective)
    seen = ["%s %s globally (%s)" % (item["sudo_default"], shown if effective is not None else "unset", where)]
    seen.extend("Defaults%s %s in %s" % (scope, _sudo_text(item["sudo_default"], value), path)
                for path, _indexes, scope, value in weak)
    return ok, "; ".join(seen)


def fix_sudo_default(book, item):
    name, validate = item["sudo_default"], item.get("validate", ["visudo", "-cf", "%s"])
    if item.get("flag"):
        line, match = "Defaults %s" % name, r"^\s*Defaults\s+!*\s*%s\s*$" % re.escape(name)
    else:
        line, match = "Defaults %s=%s" % (name, item["value"]), r"^\s*Defaults\s+%s\s*=\s*\S+\s*$" % re.escape(name)
    book.edit(item["path"], validate).fix_line({"line": line, "match": match})
    # One edit per line, from the bottom of each file (a line may negate the parameter twice).
    weak = {(e[0], e[1][0]): e for e in _sudo_entries(book, item) if not _sudo_ok(e[3], item)}.values()
    for path, indexes, _scope, _value in sorted(weak, key=lambda e: (e[0], -e[1][0])):
        edit = book.edit(path, validate)
        text = " ".join(edit.lines[i].rstrip().rstrip("\\") for i in indexes)
        kept = eff.without_sudoers_param(text, name)
        edit.lines[indexes[0]:indexes[-1] + 1] = [kept] if kept else []


# Items that read and edit several files: kind -> (check(book, item), fix(book, item)).
BOOK_ITEMS = {
    "effective": (check_effective, fix_effective),
    "sudo_default": (check_sudo_default, fix_sudo_default),
}


class SshdConnections:
    """``sshd -T -C`` for each representative connection, run once per connection."""

    def __init__(self, item, uid_min=1000):
        self.item = item
        self.outputs = {}
        self.uid_min = uid_min
        self._connections = None

    def _accounts(self):
        return [line.split(":") for line in (read_text("/etc/passwd") or "").splitlines() if line.count(":") >= 6]

    def _member(self, group):
        rows = [line.split(":") for line in (read_text("/etc/group") or "").splitlines() if line.count(":") >= 3]
        row = next((r for r in rows if r[0] == group), None)
        if row is None:
            return None
        members = [m for m in row[3].split(",") if m]
        primary = [a[0] for a in self._accounts() if a[3] == row[2]]
        return (members + primary or [None])[0]

    def connections(self):
        if self._connections is None:
            accounts = self._accounts()
            normal = next((a[0] for a in accounts if a[2].isdigit() and int(a[2]) >= self.uid_min
                           and not a[6].endswith(("nologin", "false"))), "nobody")
            base = [{"user": user, "host": "client.example", "addr": "192.0.2.10", "laddr": "192.0.2.1", "lport": "22"}
                    for user in ("root", normal)]
            config = eff.sshd_config_lines(self.item.get("config", "/etc/ssh/sshd_config"),
                                           lambda p: (read_text(p) or "").splitlines())
            self._connections = eff.sshd_connections(config, base, self._member)
        return self._connections

    def check(self, item):
        """(status, evidence): failed when any connection's effective configuration misses ``expect``."""
        misses, notes, ran = [], [], 0
        for label, spec in self.connections():
            if spec is None:
                notes.append("%s: no account matches it" % label)
                continue
            argv = eff.sshd_argv(item["sshd"], spec)
            key = tuple(argv)
            if key not in self.outputs:
                self.outputs[key] = run(argv)
            rc, out, err = self.outputs[key]
            ran += 1
            if rc != 0 or not re.search(item["expect"], out, re.M):
                named = re.search(r"\^(\w+)", item["expect"])
                got = [line for line in out.splitlines() if named and line.lower().startswith(named.group(1).lower() + " ")][:3]
                misses.append("%s: %s" % (label, "; ".join(got) or (err or out).strip()[:120] or "rc %d" % rc))
        if misses:
            # Not fixed: a Match block is written for the logins it matches, and rewriting it can cut them off.
            return "failed", "sshd -T -C: %s (a Match block is left to its owner: fix or remove it)" % "; ".join(misses + notes)
        return "pass", "sshd -T -C: %d connections (root, a normal user, each Match block) match%s" % (
            ran, "; " + "; ".join(notes) if notes else "")


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


def _plan_entries(control, book, syscall_tables):
    """Step 1, per control: (item, kind, edit or None, compliant, observed) for each of its line items, as the
    files are now. Kernel modules, commands and sshd items are evaluated in later steps."""
    if not isinstance(control.get("lines"), list) or not (control["lines"] or control.get("per_path")):
        raise CisError("control %s: 'lines' must be a non-empty list" % control.get("id"))
    entries = []
    for item in control["lines"]:
        kind = item_kind(item)
        problem = line_item_problem(item)
        if problem:
            raise CisError("control %s: line item %s" % (control.get("id"), problem))
        adapted_note = ""
        if kind == "line" and is_audit_syscall_rule(item["line"]):
            item, adapted_note = adapt_audit_item(item, syscall_tables())
            kind = item_kind(item)
        if kind == "kmod":
            entries.append((item, kind, None, None, None))
            continue
        if item.get("requires") and not os.path.exists(item["requires"]):
            entries.append((item, "skip", None, True, "%s is not installed" % item["requires"]))
            continue
        if kind in ("command", "sshd"):
            entries.append((item, kind, None, None, None))
            continue
        if "path" not in item:
            raise CisError("control %s: line item %r needs a path" % (control["id"], item))
        if kind in BOOK_ITEMS:
            ok, observed = BOOK_ITEMS[kind][0](book, item)
            entries.append((item, kind, None if ok else book.edit(item["path"]), ok, observed))
            continue
        paths = sorted(glob.glob(item["path"])) if kind == "absent" and glob.has_magic(item["path"]) else [item["path"]]
        for path in paths:
            if kind == "absent" and not os.path.exists(path) and not item.get("adapted"):
                continue
            edit = book.edit(path)
            ok, observed = FILE_ITEMS[kind][0](edit, item)
            if adapted_note:
                observed = "; ".join(o for o in (observed, adapted_note) if o)
            entries.append((item, kind, edit, ok, observed))
    return entries


def _kmod_lines(name):
    return ({"line": "install %s /bin/false" % name, "match": r"^\s*install\s+%s\s" % re.escape(name)},
            {"line": "blacklist %s" % name})


def _check_kmods(plan, book, modprobe_file, loaded):
    """Step 2: kernel modules are disabled by both lines in one modprobe.d file, and not loaded."""
    for _control, entries in plan:
        for index, (item, kind, _edit, _ok, _observed) in enumerate(entries):
            if kind != "kmod":
                continue
            edit = book.edit(modprobe_file)
            name = item["kmod"]
            install, blacklist = _kmod_lines(name)
            install_ok, _observed = edit.check_line(install)
            blacklist_ok, _observed = edit.check_line(blacklist)
            entries[index] = (item, kind, edit, install_ok and blacklist_ok and name not in loaded,
                              "modprobe.d: %s; loaded: %s" % ("disabled" if install_ok and blacklist_ok else "not disabled",
                                                              "yes" if name in loaded else "no"))


def _fix_in_memory(plan, book, audit_only):
    """Step 3: the fixes, in table order, on the texts in memory (in check mode too, for the diff)."""
    for control, entries in plan:
        if not enforce(control, audit_only, False):
            continue
        for item, kind, edit, ok, _observed in entries:
            if ok or edit is None:
                continue
            if kind == "kmod":
                for line in _kmod_lines(item["kmod"]):
                    edit.fix_line(line)
            elif kind in BOOK_ITEMS:
                BOOK_ITEMS[kind][1](book, item)
            else:
                FILE_ITEMS[kind][1](edit, item)


def _write_files(edits, audit_only, check_mode):
    """Step 4: the changed files written and validated, each restored when its validation fails.
    Returns (diffs, written paths, {path: why it failed})."""
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
        # A link is kept and its target edited (AL2: /etc/pam.d/password-auth -> password-auth-ac).
        target = os.path.realpath(path)
        write_text(target, edit.text(), mode)
        validate = edit.options.get("validate")
        if validate:
            rc, out, err = run([a.replace("%s", path) for a in validate])
            if rc != 0:
                if edit.before is None:
                    os.unlink(target)
                else:
                    write_text(target, edit.before)
                failed_files[path] = "validation failed, file restored: %s" % (err or out).strip()[:300]
                continue
        written.append(path)
    return diffs, written, failed_files


def _keep_modes(edits, written, failed_files):
    """Step 5: files the table owns keep their mode, whoever changed it (a chmod counts as written)."""
    for path, edit in sorted(edits.items()):
        wanted = edit.options.get("mode")
        if wanted is None or path in failed_files or not os.path.exists(path):
            continue
        wanted = int(str(wanted), 8)
        if os.stat(path).st_mode & 0o7777 != wanted:
            os.chmod(path, wanted)
            if path not in written:
                written.append(path)


def _reload(edits, written):
    """Step 6: each written file's on_change commands. Returns {path: the command that failed}."""
    reload_notes = {}
    for path in written:
        for argv in edits[path].options.get("on_change", []):
            rc, out, err = run(argv)
            if rc != 0:
                reload_notes[path] = "%s failed: %s" % (" ".join(argv), (err or out).strip()[:200])
    return reload_notes


def _unload_kmods(plan, loaded, audit_only, check_mode, modprobe_unload):
    """Step 7: the disabled modules that are loaded are unloaded (where the kernel is the host's)."""
    if not modprobe_unload:
        return
    for control, entries in plan:
        if not enforce(control, audit_only, check_mode):
            continue
        for item, kind, _edit, _ok, _observed in entries:
            if kind == "kmod" and item["kmod"] in loaded:
                run(["modprobe", "-r", item["kmod"]])


@dataclasses.dataclass
class _Outcome:
    """What the writing steps left, for the results: failed validations, failed reloads, modules still loaded,
    and the sshd connections and kernel command line, each read once per run."""

    files: dict
    check_mode: bool
    failed_files: dict
    reload_notes: dict
    loaded_now: set
    modprobe_unload: bool
    proc_cmdline: str
    sshd: dict = dataclasses.field(default_factory=dict)
    _cmdline: object = None
    _cmdline_read: bool = False

    def cmdline(self):
        if not self._cmdline_read:
            self._cmdline = live_kernel_args(self.proc_cmdline)
            self._cmdline_read = True
        return self._cmdline


def _command_status(item, may_change):
    rc, out, err = run(item["command"])
    matched = re.search(item["expect"], out + err, re.M) is not None
    status = "pass" if matched else "failed"
    if not matched and item.get("fix") and may_change:
        run(item["fix"])
        rc, out, err = run(item["command"])
        if re.search(item["expect"], out + err, re.M):
            status = "fixed"
    return status, "%s: %s" % (" ".join(item["command"]), (out + err).strip()[:200] or "rc %d" % rc)


def _file_status(item, kind, edit, ok, may_change, outcome):
    """The status of a file item after the writes, and a note on why it is not simply fixed."""
    if ok:
        return "pass", ""
    if not may_change:
        return "failed", ""
    if edit.path in outcome.failed_files:
        return "failed", outcome.failed_files[edit.path]
    status, note = "fixed", outcome.reload_notes.get(edit.path, "")
    if kind == "kmod" and item["kmod"] in outcome.loaded_now:
        status = "pending_reboot"
        note = "still loaded: %s" % ("the kernel belongs to the machine running this container"
                                     if not outcome.modprobe_unload else "modprobe -r refused")
    return status, note


def _live_status(item, kind, edit, status, note, outcome):
    """A fix in the files that the running system does not use yet is pending_reboot."""
    if status != "failed" and item.get("live_command"):
        problem = live_command_problem(item)
        if problem:
            status, note = "pending_reboot", problem
    if status != "failed" and (kind == "grub_arg" or (kind == "absent" and edit.has_grub_cmdline())):
        cmdline = outcome.cmdline()
        problem = live_kernel_problem(item, kind, cmdline)
        if status == "fixed" and cmdline is None:
            status, note = "pending_reboot", "takes effect at the next boot"
        elif problem:
            status, note = "pending_reboot", problem + ", takes effect at the next boot"
    return status, note


def _item_result(item, kind, edit, ok, observed, may_change, outcome):
    """Step 8, per item: (status, evidence)."""
    if kind == "skip":
        return "not_applicable", observed
    if kind == "sshd":
        connections = outcome.sshd.setdefault(item.get("config", "/etc/ssh/sshd_config"), SshdConnections(item))
        return connections.check(item)
    if kind == "command":
        return _command_status(item, may_change)
    status, note = _file_status(item, kind, edit, ok, may_change, outcome)
    if status == "fixed" and kind in BOOK_ITEMS and not outcome.check_mode:
        # What the program will read now, from the files as written.
        ok_now, observed = BOOK_ITEMS[kind][0](EditBook(outcome.files), item)
        if not ok_now:
            status = "failed"
    status, note = _live_status(item, kind, edit, status, note, outcome)
    text = observed or ""
    if kind in ("key", "line", "grub_arg"):
        text = "%s: %s" % (edit.path, observed)
    return status, "%s%s" % (text, " (%s)" % note if note else "")


def apply(controls, files=None, modprobe_file="/etc/modprobe.d/cis-hardening.conf", modprobe_unload=True,
          audit_only=False, check_mode=False, proc_modules="/proc/modules", per_path_values=None,
          proc_cmdline="/proc/cmdline", audit_tables=None):
    """Evaluates and enforces a table of line controls. Returns (results, changed, diffs)."""
    if isinstance(files, list):
        files = {f["path"]: f for f in files}
    files = files or {}
    controls = expand(controls, per_path_values or [])
    book = EditBook(files)
    tables = [audit_tables]

    def syscall_tables():
        if tables[0] is None:
            tables[0] = host_syscall_tables()
        return tables[0]

    plan = [(control, _plan_entries(control, book, syscall_tables)) for control in controls]
    loaded = _modules_loaded(proc_modules)
    _check_kmods(plan, book, modprobe_file, loaded)
    _fix_in_memory(plan, book, audit_only)
    diffs, written, failed_files = _write_files(book.edits, audit_only, check_mode)
    if not (audit_only or check_mode):
        _keep_modes(book.edits, written, failed_files)
    reload_notes = _reload(book.edits, written)
    if written or not (audit_only or check_mode):
        _unload_kmods(plan, loaded, audit_only, check_mode, modprobe_unload)
    loaded_now = _modules_loaded(proc_modules)
    outcome = _Outcome(files, check_mode, failed_files, reload_notes, loaded_now, modprobe_unload, proc_cmdline)
    results = []
    for control, entries in plan:
        may_change = enforce(control, audit_only, check_mode)
        statuses, evidence = [], []
        for item, kind, edit, ok, observed in entries:
            status, text = _item_result(item, kind, edit, ok, observed, may_change, outcome)
            statuses.append(status)
            evidence.append(text)
        results.append(finish(control, statuses, evidence))
    changed = bool(written) or bool(loaded - loaded_now) or (check_mode and bool(diffs))
    return results, changed, diffs
