# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan policy: rules committed in `policy.yml` at the repository root,
checked against a plan's JSON (`show -json`) before it is applied or saved.

    max_changes: 20                     # resource changes one stack's plan may hold
    protect:                            # changes refused on matching resources
      - profiles: [prod]                # glob patterns (default: every profile)
        stacks: ["*"]                   # glob patterns (default: every stack)
        resources: ["terraform_data.*"] # glob patterns on resource addresses
        deny: [delete, replace]         # among create, update, replace, delete
    require_tags:                       # tags every created or updated resource must carry
      - profiles: [prod]
        resources: ["aws_*"]
        attribute: tags                 # dotted path in the planned values (default: tags)
        tags: [team, cost_center]

The policy is read from the committed HEAD only: a policy.yml that is
untracked, modified or deleted in the work tree refuses the run, since the
rules in force would not be the ones the user sees.
"""
from __future__ import annotations

import fnmatch
import os

from ansible_collections.guardrail.ecs.plugins.module_utils.common import git as git_utils
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import plans
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils

POLICY_FILE = "policy.yml"
ACTIONS = ("create", "update", "replace", "delete")
TOP_KEYS = ("max_changes", "protect", "require_tags")
RULE_KEYS = {"protect": {"profiles", "stacks", "resources", "deny"},
             "require_tags": {"profiles", "stacks", "resources", "attribute", "tags"}}
REQUIRED = {"protect": ("resources", "deny"), "require_tags": ("resources", "tags")}


class PolicyError(Exception):
    """policy.yml is not committed as it is, or does not follow the schema."""


class PolicyViolation(plans.PlanRefused):
    """A plan breaks the policy; `offending` lists {address, action, rule}."""

    def __init__(self, message, offending):
        super().__init__(message)
        self.offending = offending


def _strings(value, where):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{POLICY_FILE}: {where} must be a non-empty list of strings")
    return value


def validate(data):
    """The policy as {"max_changes": int|None, "protect": [...], "require_tags": [...]}
    with defaults filled in; PolicyError naming the first problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{POLICY_FILE} must be a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise PolicyError(f"{POLICY_FILE}: unknown key(s) {', '.join(unknown)}: use {', '.join(TOP_KEYS)}")
    limit = data.get("max_changes")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise PolicyError(f"{POLICY_FILE}: max_changes must be a whole number >= 0, not {limit!r}")
    policy = {"max_changes": limit}
    for kind in ("protect", "require_tags"):
        rules = data.get(kind) or []
        if not isinstance(rules, list):
            raise PolicyError(f"{POLICY_FILE}: {kind} must be a list of rules")
        policy[kind] = []
        for index, rule in enumerate(rules):
            where = f"{kind}[{index}]"
            if not isinstance(rule, dict):
                raise PolicyError(f"{POLICY_FILE}: {where} must be a mapping")
            extra = sorted(set(rule) - RULE_KEYS[kind])
            if extra:
                raise PolicyError(f"{POLICY_FILE}: {where}: unknown key(s) {', '.join(extra)}: use "
                                  f"{', '.join(sorted(RULE_KEYS[kind]))}")
            for key in REQUIRED[kind]:
                if key not in rule:
                    raise PolicyError(f"{POLICY_FILE}: {where} needs {key}")
            checked = {key: _strings(rule.get(key, ["*"]), f"{where}.{key}")
                       for key in ("profiles", "stacks", "resources")}
            if kind == "protect":
                checked["deny"] = _strings(rule["deny"], f"{where}.deny")
                bad = [a for a in checked["deny"] if a not in ACTIONS]
                if bad:
                    raise PolicyError(f"{POLICY_FILE}: {where}.deny: unknown action(s) {', '.join(bad)}: "
                                      f"use {', '.join(ACTIONS)}")
            else:
                checked["tags"] = _strings(rule["tags"], f"{where}.tags")
                attribute = rule.get("attribute", "tags")
                if not isinstance(attribute, str) or not all(attribute.split(".")):
                    raise PolicyError(f"{POLICY_FILE}: {where}.attribute must be a dotted path such as "
                                      "tags or input.tags")
                checked["attribute"] = attribute
            policy[kind].append(checked)
    return policy


def load(repo_path, committed=None):
    """The validated policy committed at the root of `repo_path`, or None when
    HEAD has none. Refuses (PolicyError) a policy.yml that is untracked,
    modified or deleted in the work tree. `committed`: the object id of
    HEAD:policy.yml when the caller has read it ("" when HEAD has none); the
    file is then compared with it by its git object id, with no git process."""
    path = os.path.join(repo_path, POLICY_FILE)
    on_disk = None
    if os.path.lexists(path):
        try:
            with open(path, "rb") as handle:
                on_disk = handle.read()
        except OSError as exc:
            raise PolicyError(f"cannot read {path}: {exc}") from exc
    if committed is None:
        shown = git_utils.run_git_proc(["cat-file", "blob", f"HEAD:{POLICY_FILE}"], repo_path)
        exists = shown.returncode == 0
        unchanged = exists and on_disk is not None and on_disk.decode("utf-8", "replace") == shown.stdout
    else:
        exists = bool(committed)
        unchanged = exists and on_disk is not None and git_utils.blob_id(on_disk, committed) == committed
    if not exists:
        if on_disk is not None:
            raise PolicyError(f"{POLICY_FILE} is not committed: the policy in force is the committed one; "
                              "commit it (or remove it); nothing was run")
        return None
    if not unchanged or os.path.islink(path):
        state = "deleted" if on_disk is None else "modified"
        raise PolicyError(f"{POLICY_FILE} is {state} in the work tree: the policy in force is the "
                          "committed one; commit or restore it; nothing was run")
    import yaml  # pylint: disable=import-outside-toplevel

    try:
        data = yaml.safe_load(on_disk)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{POLICY_FILE} is not valid YAML: {exc}") from exc
    return validate(data)


def _matches(value, patterns):
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _resource_matches(change, patterns):
    """Patterns match the full address, the address within its module
    (`terraform_data.*` matches `module.net.terraform_data.x` too), or either
    without its instance key (`terraform_data.x` matches `terraform_data.x[0]`)."""
    address = change.get("address") or ""
    module = change.get("module_address")
    local = address[len(module) + 1:] if module and address.startswith(module + ".") else address
    names = {address, local}
    if change.get("index") is not None:
        names |= {n[:n.rfind("[")] for n in names if n.endswith("]")}
    return any(_matches(n, patterns) for n in names)


def _dig(value, path):
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def violations(policy, plan, stack, profile, allow=()):
    """The offending changes of `plan` (show -json) as [{address, action, rule}]."""
    changes = []
    for change in plan.get("resource_changes") or []:
        kind = tofu_utils.action_kind((change.get("change") or {}).get("actions"))
        if kind in ACTIONS:
            changes.append((change, kind))
    found = []
    for index, rule in enumerate(policy["protect"]):
        if not (_matches(profile, rule["profiles"]) and _matches(stack, rule["stacks"])):
            continue
        for change, kind in changes:
            if kind in rule["deny"] and change["address"] not in allow and _resource_matches(change, rule["resources"]):
                found.append({"address": change["address"], "action": kind,
                              "rule": f"protect[{index}] denies {kind} of {', '.join(rule['resources'])} "
                                      f"in profile {profile}"})
    for index, rule in enumerate(policy["require_tags"]):
        if not (_matches(profile, rule["profiles"]) and _matches(stack, rule["stacks"])):
            continue
        for change, kind in changes:
            if kind == "delete" or not _resource_matches(change, rule["resources"]):
                continue
            detail = change.get("change") or {}
            if _dig(detail.get("after_unknown"), rule["attribute"]) is True:
                continue
            tags = _dig(detail.get("after"), rule["attribute"])
            missing = [t for t in rule["tags"] if not isinstance(tags, dict) or t not in tags]
            if missing:
                found.append({"address": change["address"], "action": kind,
                              "rule": f"require_tags[{index}]: {rule['attribute']} lacks {', '.join(missing)}"})
    limit = policy["max_changes"]
    if limit is not None and len(changes) > limit:
        found.extend({"address": change["address"], "action": kind,
                      "rule": f"max_changes: {len(changes)} changes, at most {limit}"}
                     for change, kind in changes)
    return found


def checker(policy, stack, profile, allow=()):
    """A plan_check for tofu_utils.Tofu: raises PolicyViolation for a plan
    that breaks `policy`, listing every offending resource."""
    def check(plan):
        found = violations(policy, plan, stack, profile, allow)
        if found:
            listed = "; ".join(f"{v['address']} ({v['action']}: {v['rule']})" for v in found)
            raise PolicyViolation(f"plan policy ({POLICY_FILE}) refused the plan of {stack}/{profile}: "
                                  f"{listed}; nothing was applied or saved (name an address in the "
                                  "allow list to let a protected change through)", found)
    return check
