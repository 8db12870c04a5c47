# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Packages and systemd units for a table of CIS controls, in a few commands.

A control holds any of ``packages_absent``, ``packages_present``,
``services_masked`` (stopped and masked; a unit that is not installed passes),
``services_enabled`` (enabled and started) and ``services_disabled`` (stopped
and not enabled). The whole table is queried with one dpkg/rpm call and one
``systemctl show``, and changed with one call per kind of change.
"""
from __future__ import annotations

import os

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError, enforce, finish, run

KEYS = ("packages_absent", "packages_present", "services_masked", "services_enabled", "services_disabled")


def _unit(name):
    return name if "." in name else name + ".service"


def installed_packages(names, manager):
    """The subset of names that is installed."""
    names = sorted(set(names))
    if not names:
        return set()
    if manager == "apt":
        _rc, out, _err = run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\n"] + names)
        return {line.split("\t")[0].split(":")[0] for line in out.splitlines()
                if line.endswith("\tinstalled")}
    _rc, out, _err = run(["rpm", "-q", "--qf", "%{NAME}\n"] + names)
    return {line.strip() for line in out.splitlines() if line.strip() in names}


def unit_states(units):
    """{unit: {LoadState, UnitFileState, ActiveState}} from one systemctl call."""
    units = sorted(set(_unit(u) for u in units))
    if not units:
        return {}
    rc, out, err = run(["systemctl", "show", "--no-pager", "-p", "Id,LoadState,UnitFileState,ActiveState", "--"] + units)
    if rc != 0 and not out:
        raise CisError("systemctl show failed: %s" % err.strip())
    states = {}
    blocks = [b for b in out.split("\n\n") if b.strip()]
    for unit, block in zip(units, blocks):
        current = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[unit] = current
    return states


def _masked(state):
    return state.get("LoadState") in ("not-found", "masked") or state.get("UnitFileState") == "masked"


def _enabled(state):
    return state.get("LoadState") == "loaded" and state.get("UnitFileState") in (
        "enabled", "enabled-runtime", "static", "alias", "indirect", "generated")


def _running(state):
    """Enabled and active: what "enabled and active" controls (cron, auditd, rsyslog...) ask."""
    return _enabled(state) and state.get("ActiveState") == "active"


def _disabled(state):
    return (state.get("LoadState") != "loaded" or state.get("UnitFileState") not in ("enabled", "enabled-runtime")) \
        and state.get("ActiveState") != "active"


def _describe(unit, state):
    return "%s %s/%s/%s" % (unit, state.get("LoadState", "?"), state.get("UnitFileState") or "-",
                            state.get("ActiveState", "?"))


def apt_lists_missing(lists_dir="/var/lib/apt/lists"):
    """True when apt has no package lists (a fresh or cleaned host): an install would not find anything."""
    try:
        return not any("_Packages" in name for name in os.listdir(lists_dir))
    except OSError:
        return True


def _validate(controls, manager):
    for control in controls:
        if not any(control.get(k) for k in KEYS):
            raise CisError("control %s: give at least one of %s" % (control.get("id"), ", ".join(KEYS)))
    if manager not in ("apt", "dnf", "yum"):
        raise CisError("package manager must be apt, dnf or yum, not %r" % manager)


def _changes(controls, before_pkgs, before_units, remove_packages, install_packages, audit_only):
    """Step 1: what the enforced controls need done, {remove, install, mask, enable, disable: names}."""
    todo = {key: set() for key in ("remove", "install", "mask", "enable", "disable")}
    for control in controls:
        if not enforce(control, audit_only, False):
            continue
        if remove_packages:
            todo["remove"] |= {p for p in control.get("packages_absent") or [] if p in before_pkgs}
        if install_packages:
            todo["install"] |= {p for p in control.get("packages_present") or [] if p not in before_pkgs}
        todo["mask"] |= {_unit(u) for u in control.get("services_masked") or [] if not _masked(before_units[_unit(u)])}
        todo["enable"] |= {_unit(u) for u in control.get("services_enabled") or []
                           if not _enabled(before_units[_unit(u)]) or before_units[_unit(u)].get("ActiveState") != "active"}
        todo["disable"] |= {_unit(u) for u in control.get("services_disabled") or []
                            if not _disabled(before_units[_unit(u)])}
    return todo


def _would_change(todo, before_units):
    """Check mode: whether running the changes would change something."""
    # A unit that is not installed (or is masked) cannot be enabled: the run fails on it, changing nothing.
    return bool(todo["remove"] or todo["install"] or todo["mask"] or todo["disable"]) or any(
        before_units[u].get("LoadState") == "loaded"
        and (not _enabled(before_units[u]) or before_units[u].get("ActiveState") != "failed") for u in todo["enable"])


class _Commands:
    """The commands run, and per package or unit why its command failed."""

    def __init__(self):
        self.commands = []
        self.notes = {}

    def do(self, argv, names, timeout=600):
        rc, out, err = run(argv, timeout=timeout)
        self.commands.append({"cmd": argv, "rc": rc})
        if rc != 0:
            lines = (err or out).strip().splitlines()
            for name in names:
                self.notes[name] = "%s: %s" % (" ".join(argv[:3]), lines[-1] if lines else "rc %d" % rc)


def _change_packages(todo, manager, apt_lists, commands):
    """Step 2: one removal and one installation command."""
    remove, install = todo["remove"], todo["install"]
    if remove:
        if manager == "apt":
            commands.do(["apt-get", "-y", "-q", "purge"] + sorted(remove), remove)
        else:
            commands.do([manager, "-y", "-q", "remove"] + sorted(remove), remove)
    if install:
        if manager == "apt":
            if apt_lists_missing(apt_lists):
                commands.do(["apt-get", "-q", "update"], install)
            commands.do(["apt-get", "-y", "-q", "install", "--no-install-recommends"] + sorted(install), install)
        else:
            commands.do([manager, "-y", "-q", "install"] + sorted(install), install)


def _change_units(todo, before_units, commands):
    """Step 3: mask, disable, then enable and start unit by unit. Returns whether a unit was started."""
    if todo["mask"]:
        commands.do(["systemctl", "mask", "--now"] + sorted(todo["mask"]), todo["mask"], 120)
    if todo["disable"]:
        commands.do(["systemctl", "disable", "--now"] + sorted(todo["disable"]), todo["disable"], 120)
    started = False
    for unit in sorted(todo["enable"]):
        # One by one: a unit that cannot start (auditd inside a container) must not stop the others.
        if not _enabled(before_units[unit]):
            commands.do(["systemctl", "enable", unit], [unit], 120)
        if before_units[unit].get("ActiveState") != "active":
            rc, _out, err = run(["systemctl", "start", unit], timeout=120)
            if rc == 0:
                commands.commands.append({"cmd": ["systemctl", "start", unit], "rc": rc})
                started = True
            else:
                commands.notes.setdefault(unit, "start failed: %s" % err.strip()[:200])
    return started


def _control_result(control, before, after, notes, remove_packages, install_packages):
    """Step 4, per control: each package and unit before and after the changes."""
    (before_pkgs, before_units), (after_pkgs, after_units) = before, after
    statuses, evidence = [], []
    for pkg in control.get("packages_absent") or []:
        was, now = pkg in before_pkgs, pkg in after_pkgs
        statuses.append("pass" if not was else ("fixed" if not now else "failed"))
        evidence.append("%s %s" % (pkg, "installed" if now else ("removed" if was else "not installed"))
                        + (" (%s)" % notes[pkg] if pkg in notes else "")
                        + (" (removal disabled: cis_hardening_remove_packages)" if now and not remove_packages else ""))
    for pkg in control.get("packages_present") or []:
        was, now = pkg in before_pkgs, pkg in after_pkgs
        statuses.append("pass" if was else ("fixed" if now else "failed"))
        evidence.append("%s %s" % (pkg, "installed" if now else "not installed")
                        + (" (%s)" % notes[pkg] if pkg in notes else "")
                        + (" (installation disabled: cis_hardening_install_packages)" if not now and not install_packages else ""))
    for key, test in (("services_masked", _masked), ("services_enabled", _running), ("services_disabled", _disabled)):
        for name in control.get(key) or []:
            unit = _unit(name)
            was, now = test(before_units[unit]), test(after_units[unit])
            if key == "services_enabled" and now and after_units[unit].get("ActiveState") != "active":
                notes.setdefault(unit, "enabled but not running")
            statuses.append("pass" if was else ("fixed" if now else "failed"))
            evidence.append(_describe(unit, after_units[unit]) + (" (%s)" % notes[unit] if unit in notes else ""))
    return finish(control, statuses, evidence)


def apply(controls, manager="apt", remove_packages=True, install_packages=True, audit_only=False, check_mode=False,
          apt_lists="/var/lib/apt/lists"):
    """Evaluates and enforces a table of package and service controls. Returns (results, changed, commands).

    In check mode nothing runs and ``changed`` says whether the run would run a change: a package it
    may install or remove, a unit to mask, disable, enable or start. A unit whose last start failed
    (ActiveState ``failed``) is not counted: the run tries again, and reports a change only if it starts;
    nor is a unit that is not installed or is masked, which the run cannot enable."""
    _validate(controls, manager)
    packages = [p for c in controls for k in ("packages_absent", "packages_present") for p in c.get(k) or []]
    units = [u for c in controls for k in KEYS[2:] for u in c.get(k) or []]
    before_pkgs = installed_packages(packages, manager)
    before_units = unit_states(units)
    todo = _changes(controls, before_pkgs, before_units, remove_packages, install_packages, audit_only)
    would = False
    if check_mode:
        would = _would_change(todo, before_units)
        todo = {key: set() for key in todo}
    commands = _Commands()
    _change_packages(todo, manager, apt_lists, commands)
    started = _change_units(todo, before_units, commands)
    changed = would if check_mode else any(c["rc"] == 0 for c in commands.commands) or started
    after_pkgs = installed_packages(packages, manager) if (todo["remove"] or todo["install"]) else before_pkgs
    after_units = unit_states(units) if (todo["mask"] or todo["enable"] or todo["disable"]) else before_units
    results = [_control_result(control, (before_pkgs, before_units), (after_pkgs, after_units), commands.notes,
                               remove_packages, install_packages) for control in controls]
    return results, changed, commands.commands
