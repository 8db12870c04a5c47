# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The value a program actually uses when several places can set it.

- layered configuration (libpwquality, systemd-journald, systemd-coredump): a main file, then the
  ``*.conf`` drop-ins of a list of directories sorted by file name, a name in an earlier directory
  hiding the same name in a later one; the last file setting a key wins;
- PAM module arguments: ``key=value`` (or a bare flag) on a module's line wins over the module's
  configuration file for every service using that line;
- sudoers ``Defaults``: /etc/sudoers and what it includes, in order; the last global ``Defaults``
  wins, and a scoped one (``Defaults:user``, ``@host``, ``>runas``, ``!cmnd``) wins for its scope;
- sshd: ``sshd -T -C`` for representative connections: root, a normal user, and one per ``Match``
  block of the configuration.

Functions here read text handed to them (``lines_of(path)`` gives a file's current lines, edits
included) and never write.
"""
from __future__ import annotations

import glob
import ipaddress
import os
import re

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError

# systemd's configuration directories, highest priority first (a name in /etc hides the same name below).
SYSTEMD_DIRS = ("/etc/systemd/{0}.conf.d", "/run/systemd/{0}.conf.d", "/usr/local/lib/systemd/{0}.conf.d",
                "/usr/lib/systemd/{0}.conf.d")


def active(raw):
    stripped = raw.strip()
    return bool(stripped) and not stripped.startswith(("#", ";"))


def key_pattern(key, separator=" ", ignore_case=False):
    sep = r"\s*=\s*" if separator.strip() == "=" else r"\s+"
    return re.compile(r"^\s*%s(?:%s)(.*?)\s*$" % (re.escape(key), sep), re.I if ignore_case else 0)


_LEADING_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)")


def _number(text):
    """The number a program's integer parser reads at the start (``9e2`` is 9), or None."""
    match = _LEADING_NUMBER.match(str(text))
    return float(match.group(1)) if match else None


def satisfies(current, wanted, how="eq", ignore_case=False, minimum=None, also=None):
    """Whether a value meets the wanted one: ``le``/``ge`` accept a stricter number, ``minimum``
    refuses numbers below it (-1 meaning "never" for a limit), ``also`` lists numbers that pass
    whatever the comparison says (faillock's ``unlock_time = 0``: never unlock by time)."""
    if also is not None and (not isinstance(also, (list, tuple)) or any(_number(v) is None for v in also)):
        raise CisError("also must be a list of numbers, not %r" % (also,))
    if current is None:
        return False
    if how in ("le", "ge"):
        number = _number(current)
        if number is not None and any(number == _number(value) for value in also or ()):
            return True
        if number is None or (minimum is not None and number < float(minimum)):
            return False
        return number <= float(wanted) if how == "le" else number >= float(wanted)
    if ignore_case:
        return str(current).lower() == str(wanted).lower()
    return str(current) == str(wanted)


def item_satisfies(current, item):
    return satisfies(current, item.get("value"), item.get("compare", "eq"), item.get("ignore_case", False),
                     item.get("min"), item.get("also"))


# ---------------------------------------------------------------- layered configuration files
def layered_sources(main, dirs, extra=()):
    """The files in the order they are read: ``main``, then drop-ins by name (``extra``: paths that
    will exist, such as a drop-in about to be written)."""
    chosen = {}
    candidates = {}
    for directory in dirs:
        for path in glob.glob(os.path.join(directory, "*.conf")):
            candidates.setdefault(directory, []).append(path)
    for path in extra:
        if os.path.dirname(path) in dirs and path.endswith(".conf"):
            candidates.setdefault(os.path.dirname(path), []).append(path)
    for directory in dirs:
        for path in sorted(candidates.get(directory, [])):
            chosen.setdefault(os.path.basename(path), path)
    files = [main] if main and main not in chosen.values() else []
    return files + [chosen[name] for name in sorted(chosen)]


def _known_name(raw):
    """(name, value) of a line as libpwquality before 1.3.0 reads it: a comment starts at '#', the name
    ends at a blank only, then blanks and one '=' are skipped. None for an empty line."""
    text = raw.split("#", 1)[0].strip()
    if not text:
        return None
    parts = text.split(None, 1)
    value = parts[1].lstrip() if len(parts) > 1 else ""
    return parts[0], (value[1:].lstrip() if value.startswith("=") else value)


def read_stops_at(lines, known):
    """With ``known`` (the settings a reader knows), the first active line it stops at, else None."""
    for raw in lines if known else ():
        setting = _known_name(raw)
        if setting and setting[0] not in known:
            return raw.strip()
    return None


def file_values(lines, item):
    """The values the active lines give the item's key, in order (a flag gives True). With ``known``
    the file is read as a reader that stops at the first setting it does not know (libpwquality 1.2)."""
    known = item.get("known")
    if known:
        values = []
        for raw in lines:
            setting = _known_name(raw)
            if not setting:
                continue
            if setting[0] not in known:
                break
            if setting[0] == item["effective"]:
                values.append(True if item.get("flag") else setting[1])
        return values
    if item.get("flag"):
        return [True for raw in lines if active(raw) and raw.strip() == item["effective"]]
    pattern = key_pattern(item["effective"], item.get("separator", "="), item.get("ignore_case", False))
    return [m.group(1) for m in (pattern.match(raw) for raw in lines if active(raw)) if m]


def conf_value(sources, lines_of, item):
    """(value, source) from the layered files; the item's ``default`` when none sets it."""
    value, source = item.get("default"), "default" if "default" in item else None
    stops = []
    for path in sources:
        lines = lines_of(path)
        values = file_values(lines, item)
        if values:
            value, source = values[-1], path
        stop = read_stops_at(lines, item.get("known"))
        if stop:
            stops.append("%s is not read past %r, a setting it does not know" % (path, stop))
    if stops:
        source = "; ".join([source or "nowhere"] + stops)
    return value, source


# ---------------------------------------------------------------- PAM module arguments
def pam_files(globs):
    """The files holding PAM lines, each once (a link is read and edited where it points)."""
    found = []
    for pattern in globs:
        for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            real = os.path.realpath(path)
            if os.path.isfile(real) and real not in found:
                found.append(real)
    return found


def pam_lines(paths, module, lines_of):
    """[(path, index, args)] of the active lines calling ``module`` (stack files and pam-configs profiles)."""
    out = []
    for path in paths:
        for index, raw in enumerate(lines_of(path)):
            if not active(raw):
                continue
            tokens = raw.split()
            at = next((i for i, t in enumerate(tokens) if os.path.basename(t) == module), None)
            if at is not None:
                out.append((path, index, tokens[at + 1:]))
    return out


def pam_arg(args, key):
    """The value of ``key=value`` among a line's arguments (the last one), True for a bare flag, else None."""
    value = None
    for arg in args:
        name, sep, rest = arg.partition("=")
        if name == key:
            value = rest if sep else True
    return value


def with_pam_arg(raw, key, value):
    """The PAM line with ``key=value`` (a bare ``key`` when value is True) in place of any ``key`` argument."""
    wanted = key if value is True else "%s=%s" % (key, value)
    pattern = re.compile(r"(?<=[ \t])%s(?:=\S*)?(?=[ \t]|$)" % re.escape(key))
    if pattern.search(raw):
        return pattern.sub(wanted, raw, count=1)
    return raw.rstrip() + " " + wanted


def truthy(value):
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


# ---------------------------------------------------------------- sudoers Defaults
_INCLUDE = re.compile(r"^\s*[@#]include(dir)?\s+(\S+|\"[^\"]+\")\s*$")
# Defaults, a scope (":users", "@hosts", ">runas", "!commands": a list, blanks allowed after the
# sigil and around commas, names may be quoted), then the parameters.
_SCOPE_NAME = r"(?:\"[^\"]*\"|[^\s,\"]+)"
_DEFAULTS = re.compile(r"^\s*Defaults((?:[:@>!]\s*%s(?:\s*,\s*%s)*)?)\s+(.*)$" % (_SCOPE_NAME, _SCOPE_NAME))
# A comment: '#' outside quotes that is not a uid ("#1000") and not an #include.
_COMMENT = re.compile(r"\s*#(?!\d)(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$).*$")


def _is_comment_line(raw):
    stripped = raw.lstrip()
    return stripped.startswith("#") and not re.match(r"#(include|includedir)\s|#\d", stripped)


def without_comment(text):
    """(code, comment) of a sudoers line: sudo ignores everything from a comment's '#'."""
    match = _COMMENT.search(text)
    return (text[:match.start()], text[match.start():]) if match else (text, "")


def _logical_lines(lines):
    """[(first index, [indexes], text)] with backslash continuations joined (a comment line ends
    with its own backslash: sudo drops it with the comment)."""
    out, current, indexes = [], "", []
    for index, raw in enumerate(lines):
        indexes.append(index)
        if raw.rstrip().endswith("\\") and not _is_comment_line(raw):
            current += raw.rstrip()[:-1] + " "
            continue
        out.append((indexes[0], indexes, current + raw))
        current, indexes = "", []
    if indexes:
        out.append((indexes[0], indexes, current))
    return out


def sudoers_params(text):
    """[(name, value)] of one Defaults parameter list (``!name`` gives value False)."""
    params = []
    for part in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", text):
        part = part.strip()
        if not part:
            continue
        match = re.match(r"^(!*)\s*([A-Za-z_]+)\s*(?:[+-]?=\s*(.*))?$", part)
        if match:
            negated, name, value = match.groups()
            params.append((name, False if negated else (value.strip().strip('"') if value is not None else True)))
    return params


def sudoers_entries(root, lines_of, name, depth=0, seen=None):
    """[(path, [indexes], scope, value)] of the Defaults lines setting ``name``, in the order sudo reads them."""
    seen = set() if seen is None else seen
    if depth > 8 or root in seen:
        return []
    seen.add(root)
    entries = []
    for _first, indexes, text in _logical_lines(lines_of(root)):
        include = _INCLUDE.match(text)
        if include:
            target = include.group(2).strip('"')
            if not os.path.isabs(target):
                target = os.path.join(os.path.dirname(root), target)
            if include.group(1):
                names = sorted(n for n in (os.listdir(target) if os.path.isdir(target) else [])
                               if "." not in n and not n.endswith("~"))
                targets = [os.path.join(target, n) for n in names]
            else:
                targets = [target]
            for path in targets:
                entries.extend(sudoers_entries(path, lines_of, name, depth + 1, seen))
            continue
        if not active(text):
            continue
        match = _DEFAULTS.match(without_comment(text)[0])
        if match:
            for param, value in sudoers_params(match.group(2)):
                if param == name:
                    entries.append((root, indexes, match.group(1) or "", value))
    return entries


def sudoers_value(value):
    """A Defaults integer value as a number: ``!name`` is 0."""
    return 0 if value is False else value


def without_sudoers_param(text, name):
    """The Defaults line without ``name`` (its comment kept); None when nothing else is left on it."""
    code, comment = without_comment(text)
    match = _DEFAULTS.match(code)
    if not match:
        return text
    kept = [p.strip() for p in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", match.group(2))
            if p.strip() and not re.match(r"^!*\s*%s\b" % re.escape(name), p.strip())]
    return "Defaults%s %s%s" % (match.group(1) or "", ", ".join(kept), comment) if kept else None


# ---------------------------------------------------------------- sshd connections
_MATCH_KEYS = {"user": "user", "group": None, "host": "host", "address": "addr", "localaddress": "laddr",
               "localport": "lport", "rdomain": "rdomain"}


def sshd_config_lines(path, lines_of, depth=0):
    """The active lines of sshd_config with its Include files in place (globs sorted, relative to /etc/ssh)."""
    out = []
    if depth > 8:
        return out
    for raw in lines_of(path):
        if not active(raw):
            continue
        tokens = raw.split()
        if tokens[0].lower() == "include":
            for pattern in tokens[1:]:
                if not os.path.isabs(pattern):
                    pattern = os.path.join("/etc/ssh", pattern)
                for included in sorted(glob.glob(pattern)):
                    out.extend(sshd_config_lines(included, lines_of, depth + 1))
            continue
        out.append(raw.strip())
    return out


def _example(pattern, kind):
    """A value matching one sshd pattern (``*``/``?`` filled in; a CIDR gives its first host)."""
    if kind == "addr" and "/" in pattern:
        try:
            network = ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return None
        return str(next(iter(network.hosts()), network.network_address))
    filler = "1" if kind in ("addr", "laddr", "lport") else "x"
    return pattern.replace("*", filler).replace("?", filler)


def sshd_connections(config_lines, base, members):
    """[(label, {criterion: value})]: the base connections, then one per Match block of the config.

    ``members(group)`` names an account in the group (None when the group has none)."""
    connections = [("connection %s" % ",".join("%s=%s" % kv for kv in sorted(spec.items())), dict(spec))
                   for spec in base]
    for raw in config_lines:
        tokens = raw.split()
        if tokens[0].lower() != "match":
            continue
        spec, problem = dict(base[-1]), ""
        criteria = tokens[1:]
        for index in range(0, len(criteria) - 1, 2):
            name, value = criteria[index].lower(), criteria[index + 1]
            positive = [p for p in value.split(",") if not p.startswith("!")]
            if not positive:
                continue
            if name == "group":
                account = next((members(g) for g in positive if members(g)), None)
                if account is None:
                    problem = "no account in group %s" % value
                else:
                    spec["user"] = account
            elif _MATCH_KEYS.get(name):
                example = _example(positive[0], _MATCH_KEYS[name])
                if example is not None:
                    spec[_MATCH_KEYS[name]] = example
        connections.append(("Match %s" % " ".join(criteria), spec if not problem else None))
    return connections


def sshd_argv(argv, spec):
    return list(argv) + ["-C", ",".join("%s=%s" % (k, spec[k]) for k in sorted(spec))]
