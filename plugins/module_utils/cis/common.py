# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pieces of the CIS table modules: control results, commands, file writes.

Every CIS module takes a table of controls of one shape and returns one result
per control: ``{"id", "status", "evidence"}`` with status one of STATUSES.
"""
from __future__ import annotations

import os

from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import write_atomic
from ansible_collections.guardrail.ecs.plugins.module_utils.common.process import run  # noqa: F401 pylint: disable=unused-import  # the CIS engines import it from here

STATUSES = ("pass", "fixed", "failed", "waived", "not_applicable", "pending_reboot")

# When one control has several items, the control takes the most severe status.
_SEVERITY = {"not_applicable": 0, "pass": 1, "fixed": 2, "pending_reboot": 3, "failed": 4}

EVIDENCE_ITEMS = 20


class CisError(Exception):
    """Bad input for a CIS table: the message says which control and what to fix."""


def combine(statuses):
    """The status of a control made of items with these statuses."""
    statuses = [s for s in statuses if s]
    if not statuses:
        return "not_applicable"
    return max(statuses, key=lambda s: _SEVERITY[s])


def finish(control, statuses, evidence, reason=None):
    """A control's result. Waived controls keep their evidence but report waived."""
    result = {"id": control["id"], "status": combine(statuses), "evidence": "; ".join(e for e in evidence if e)}
    if control.get("waived"):
        result["status"] = "waived"
        result["reason"] = control["waived"]
    elif reason:
        result["reason"] = reason
    return result


def enforce(control, audit_only, check_mode):
    """Whether the module may change the host for this control."""
    return not (audit_only or check_mode or control.get("waived") or control.get("audit_only"))


def would_change(results, check_mode, audit_only):
    """In check mode, whether enforcing would have changed the host: a failed control the run may fix."""
    return bool(check_mode and not audit_only and any(r["status"] == "failed" for r in results))


def sample(items, limit=EVIDENCE_ITEMS):
    """A short list for evidence: the first few items and how many there are in all."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return "%s and %d more" % (", ".join(items[:limit]), len(items) - limit)


def read_text(path):
    """The text of a file, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_text(path, text, mode=None):
    """Replaces a file atomically, keeping the old file's mode and owner when there is one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, text, mode=None if os.path.exists(path) else (0o644 if mode is None else mode))


# The options every table module takes, besides its own.
TABLE_ARGUMENT_SPEC = dict(
    controls=dict(type="list", elements="dict", required=True),
    audit_only=dict(type="bool", default=False),
)


def run_table_module(module_class, argument_spec, engine, returns=(), check_mode_changes=True):
    """The whole main() of a CIS table module (`module_class` is Ansible's
    AnsibleModule, which the module imports): its options (`argument_spec`
    and TABLE_ARGUMENT_SPEC), check mode, then engine(params, check_mode) ->
    (results, changed, *more), named by `returns` in the result ("diff" only
    in diff mode). With `check_mode_changes`, check mode reports changed where
    enforcing would change the host (would_change). Bad input or a file that
    cannot be written fails the task with the engine's message."""
    module = module_class(argument_spec=dict(TABLE_ARGUMENT_SPEC, **argument_spec), supports_check_mode=True)
    params = module.params
    try:
        results, changed, *more = engine(params, module.check_mode)
    except (CisError, OSError) as exc:
        module.fail_json(msg=str(exc))
    if check_mode_changes:
        changed = changed or would_change(results, module.check_mode, params["audit_only"])
    out = dict(changed=changed, results=results)
    for name, value in zip(returns, more):
        if name != "diff" or (module._diff and value):  # pylint: disable=protected-access
            out[name] = value
    module.exit_json(**out)
