# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel parameters for a table of CIS controls, key by key.

Values are persisted in one drop-in file and applied live one key at a time by
writing /proc/sys. There is deliberately no ``sysctl --system``: a reload
re-applies every file and resets what Docker and ecs-init set at run time
(IPv4 forwarding, route_localnet).
"""
from __future__ import annotations

import glob
import json
import os
import re

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import (
    CisError,
    enforce,
    finish,
    read_text,
    write_text,
)

# The order systemd-sysctl and `sysctl --system` read drop-ins in: by file
# name across these directories, the first directory winning for a name.
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
NAMESPACED = ("net.",)

_LINE = re.compile(r"^\s*-?\s*([^=\s#;][^=]*?)\s*=\s*(.*?)\s*$")


def normalize_key(key):
    return key.strip().replace("/", ".")


def normalize_value(value):
    return " ".join(str(value).split())


def drop_in_files(dirs=SYSCTL_DIRS, legacy="/etc/sysctl.conf"):
    """Every file that sets kernel parameters at boot, in the order they are read."""
    chosen = {}
    for directory in dirs:
        for path in glob.glob(os.path.join(directory, "*.conf")):
            chosen.setdefault(os.path.basename(path), path)
    files = [chosen[name] for name in sorted(chosen)]
    real = {os.path.realpath(p) for p in files}
    if os.path.exists(legacy) and os.path.realpath(legacy) not in real:
        files.append(legacy)
    return files


def persisted_values(files):
    """{key: (value, file)} as the boot would leave them: the last file setting a key wins."""
    values = {}
    for path in files:
        for raw in (read_text(path) or "").splitlines():
            match = _LINE.match(raw)
            if match:
                values[normalize_key(match.group(1))] = (normalize_value(match.group(2)), path)
    return values


def proc_path(key, proc_root="/proc/sys"):
    return os.path.join(proc_root, *key.split("."))


def read_live(key, proc_root="/proc/sys"):
    """The running value, or None when the kernel has no such parameter."""
    text = read_text(proc_path(key, proc_root))
    return None if text is None else normalize_value(text)


def upsert(text, settings):
    """The drop-in text with each key set to its value, other lines untouched."""
    lines = (text or "").splitlines()
    pending = dict(settings)
    out = []
    for raw in lines:
        match = _LINE.match(raw)
        key = normalize_key(match.group(1)) if match else None
        if key in pending:
            if pending[key] is not None:
                out.append("%s = %s" % (key, pending[key]))
                pending[key] = None
            continue
        out.append(raw)
    if not lines:
        out.append("# Kernel parameters of the CIS controls, managed by guardrail.ecs.cis_hardening.")
    for key in sorted(k for k, v in pending.items() if v is not None):
        out.append("%s = %s" % (key, pending[key]))
    return "\n".join(out) + "\n"


def write_live(key, value, live_all, proc_root="/proc/sys"):
    """Applies one key live through /proc/sys. Returns (live value after, written, note)."""
    if not (live_all or key.startswith(NAMESPACED)):
        return (read_live(key, proc_root), False,
                " (not applied live: kernel.*, vm.* and fs.* belong to the machine running this container)")
    try:
        with open(proc_path(key, proc_root), "w") as handle:
            handle.write(value)
    except OSError as exc:
        return read_live(key, proc_root), False, " (live write refused: %s)" % exc.strerror
    return read_live(key, proc_root), True, ""


def key_status(value, live, stored, compliant_before, may_change):
    """The status of one key: live and persisted values against the wanted one."""
    if compliant_before:
        return "pass"
    if live == value and stored == value:
        return "fixed"
    if stored == value and may_change:
        return "pending_reboot"
    return "failed"


def docker_ipv6(path="/etc/docker/daemon.json"):
    """Whether Docker is configured with IPv6 networks, which need IPv6 forwarding."""
    try:
        config = json.loads(read_text(path) or "{}")
    except ValueError:
        return False
    return isinstance(config, dict) and config.get("ipv6") is True


def waived_keys(control, docker_config="/etc/docker/daemon.json"):
    """{key: reason} of the keys a control leaves as found (``waived_settings``, and ``keep_for_docker_ipv6``
    when Docker runs IPv6 networks); the other keys are enforced."""
    waived = {normalize_key(k): str(v) for k, v in (control.get("waived_settings") or {}).items() if v}
    if control.get("keep_for_docker_ipv6") and docker_ipv6(docker_config):
        for key in control["keep_for_docker_ipv6"]:
            waived.setdefault(normalize_key(key), "Docker runs IPv6 networks (%s: ipv6 true), which need it" % docker_config)
    return waived


def _boot_values(persist_file, dirs, legacy):
    """{key: (value, file)} as the boot applies them, the role's file included even when it is new."""
    files = drop_in_files(dirs, legacy)
    if persist_file not in files:
        files.append(persist_file)
    return persisted_values(files)


def _live_and_wanted(controls, waivers, audit_only, check_mode, proc_root):
    """Step 1: each key's live value, and the values to enforce (keys the running kernel has, not waived)."""
    initial_live = {}
    wanted = {}
    for control in controls:
        for key, value in control["settings"].items():
            key = normalize_key(key)
            initial_live[key] = read_live(key, proc_root)
            if key in waivers[control["id"]]:
                continue
            if enforce(control, audit_only, check_mode) and initial_live[key] is not None:
                wanted[key] = normalize_value(value)
    return initial_live, wanted


def _persist(wanted, initial, persist_file, dirs, legacy):
    """Step 2: the wanted values written to the role's file. Returns (changed, diff, boot values now)."""
    before_text = read_text(persist_file)
    to_persist = {k: v for k, v in wanted.items() if initial.get(k, (None, None)) != (v, persist_file)}
    if not to_persist:
        return False, None, initial
    changed, diff = False, None
    after_text = upsert(before_text, to_persist)
    if after_text != (before_text or ""):
        changed = True
        diff = {"before": before_text or "", "after": after_text,
                "before_header": persist_file, "after_header": persist_file}
        write_text(persist_file, after_text, 0o644)
    return changed, diff, _boot_values(persist_file, dirs, legacy)


def _control_result(control, waived, values, may_change, live_all, proc_root):
    """Step 3, per control: each key applied live where it may change, then its status.
    values: (live values before, boot values before, boot values now). Returns (result, changed live)."""
    initial_live, initial, current = values
    statuses, evidence, left = [], [], []
    changed = False
    for key, value in control["settings"].items():
        key, value = normalize_key(key), normalize_value(value)
        live = initial_live[key]
        if live is None:
            statuses.append("not_applicable")
            evidence.append("%s: not in the running kernel" % key)
            continue
        if key in waived:
            stored, source = current.get(key, (None, None))
            if live != value or stored not in (None, value):
                left.append("%s: %s" % (key, waived[key]))
            evidence.append("%s: left as found (waived), live %s%s" % (
                key, live, ", persisted %s in %s" % (stored, source) if stored is not None else ""))
            continue
        compliant_before = live == value and initial.get(key, (None,))[0] == value
        note = ""
        if may_change and live != value:
            live, wrote, note = write_live(key, value, live_all, proc_root)
            changed = changed or wrote
        stored, source = current.get(key, (None, None))
        statuses.append(key_status(value, live, stored, compliant_before, may_change))
        where = "persisted %s in %s" % (stored, source) if stored is not None else "not persisted"
        evidence.append("%s: want %s, live %s%s, %s" % (key, value, live, note, where))
    result = finish(control, statuses, evidence)
    if left and result["status"] in ("pass", "fixed", "not_applicable"):
        result["status"] = "waived"
        result["reason"] = "; ".join(left)
    return result, changed


def apply(controls, persist_file, live_all=True, audit_only=False, check_mode=False,
          proc_root="/proc/sys", dirs=SYSCTL_DIRS, legacy="/etc/sysctl.conf", docker_config="/etc/docker/daemon.json"):
    """Evaluates and enforces a table of sysctl controls.

    ``live_all`` false means only namespaced keys (net.*) are applied live, as
    on a host running inside a container, where kernel.*, vm.* and fs.* belong
    to the machine; the rest is persisted and reported pending_reboot.
    A control's ``waived_settings`` ({key: reason}) are left as found and shown; when one of
    them is not the wanted value, the control is ``waived`` (unless an enforced key failed).
    Returns (results, changed, diff).
    """
    for control in controls:
        if not isinstance(control.get("settings"), dict) or not control["settings"]:
            raise CisError("control %s: 'settings' must be a non-empty mapping of key to value" % control.get("id"))
    initial = _boot_values(persist_file, dirs, legacy)
    waivers = {control["id"]: waived_keys(control, docker_config) for control in controls}
    initial_live, wanted = _live_and_wanted(controls, waivers, audit_only, check_mode, proc_root)
    changed, diff, current = _persist(wanted, initial, persist_file, dirs, legacy)
    results = []
    for control in controls:
        result, changed_live = _control_result(control, waivers[control["id"]], (initial_live, initial, current),
                                               enforce(control, audit_only, check_mode), live_all, proc_root)
        changed = changed or changed_live
        results.append(result)
    return results, changed, diff
