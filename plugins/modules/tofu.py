#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tofu
short_description: Run OpenTofu or Terraform with exact change detection
version_added: 0.1.0
description:
  - Runs one tofu/terraform command in a project directory.
  - V(plan), V(apply) and V(destroy) run C(init) first when the directory is not initialised.
    V(apply) and V(destroy) plan with C(-out) and apply that plan file, so exactly what was
    planned is applied; nothing is applied when the plan has no change.
  - C(changed), the counts and the diff come from the plan's JSON (C(show -json)); creates, updates,
    deletes and replacements are counted exactly, whatever their number.
  - Variables are passed as C(TF_VAR_*) environment variables, never on the command line;
    C(TF_VAR_*) variables already in the environment are not passed on. The workspace is passed as
    C(TF_WORKSPACE), so the workspace selected on disk is left unchanged.
  - Failure messages carry the tool's own error text.
  - V(plan) saves the plan (mode 0600, in C(.guardrail-plans/) inside O(project_path), never
    anywhere else) and returns its RV(plan_id) and a short summary; V(apply) with O(plan_id)
    applies exactly that plan and removes it.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  project_path:
    description: The directory holding the configuration (for a rendered stack, C(.dist/<profile>/<stack>)).
    type: path
    required: true
  command:
    description:
      - The command to run.
      - V(plan) reports C(changed) when applying would change something; V(init), V(validate)
        and V(output) never change infrastructure.
    type: str
    choices: [init, validate, plan, apply, destroy, output]
    default: apply
  binary:
    description:
      - The executable, a name on E(PATH) or a path.
      - Default C(tofu) when on E(PATH), else C(terraform).
    type: str
  workspace:
    description: The workspace, passed as E(TF_WORKSPACE).
    type: str
  variables:
    description:
      - Input variables, passed as C(TF_VAR_<name>) environment variables.
      - Strings are passed as they are; other values as JSON, which tofu reads as HCL.
      - Values of variables tofu marks sensitive are masked wherever they appear in the result; once a
        plan has run, the other values are plain and pass through unchanged.
    type: dict
    default: {}
  var_files:
    description: Variable files (C(-var-file)), relative to O(project_path) or absolute.
    type: list
    elements: path
    default: []
  backend_config:
    description: Backend settings passed to C(init) as C(-backend-config=KEY=VALUE).
    type: dict
    default: {}
  backend_config_files:
    description: Backend configuration files passed to C(init) as C(-backend-config=PATH).
    type: list
    elements: path
    default: []
  lock:
    description: State locking (C(-lock)); unset leaves the tool's default.
    type: bool
  lock_timeout:
    description: How long to wait for the state lock (C(-lock-timeout)), for example V(30s).
    type: str
  parallelism:
    description: Concurrent operations (C(-parallelism)).
    type: int
  targets:
    description: Resource addresses to limit the operation to (C(-target)).
    type: list
    elements: str
    default: []
  replace:
    description: Resource addresses to replace (C(-replace)).
    type: list
    elements: str
    default: []
  show_sensitive:
    description: Return sensitive outputs in clear instead of masked.
    type: bool
    default: false
  timeout:
    description:
      - Seconds each tofu command may run. Then, as on SIGINT or SIGTERM of the task, tofu (which
        runs in its own process group) is sent SIGINT and given 60 seconds to stop in-flight
        operations and write its state, then SIGTERM, then SIGKILL; the error reports what tofu said.
    type: int
    default: 3600
  plan_id:
    description:
      - With O(command=apply), apply exactly the plan saved by an earlier V(plan) that returned
        this id, instead of planning again.
      - Refused before anything runs when no such plan is saved in O(project_path), or it was made
        from another commit (of the git work tree holding O(project_path)) or for another
        O(stack) and O(profile); refused when tofu reports it stale. A successful apply removes it.
    type: str
  stack:
    description: The stack the project directory was rendered from; recorded in a saved plan and checked on apply.
    type: str
  profile:
    description: The profile the project directory was rendered for; recorded in a saved plan and checked on apply.
    type: str
attributes:
  check_mode:
    support: full
    description: V(apply) and V(destroy) plan only and report the same C(changed); V(init) does not run.
  diff_mode:
    support: full
    description: Before and after of every resource that changes.
  platform:
    support: full
    platforms: posix
    description: Needs the tofu or terraform executable on the target.
seealso:
  - module: guardrail.ecs.workflow
  - plugin: guardrail.ecs.tofu_output
    plugin_type: lookup
notes:
  - In check mode V(apply) still runs C(init) when needed, since plan cannot run without it;
    C(init) changes only the working directory, never infrastructure.
"""

EXAMPLES = r"""
- name: Apply the rendered stack alpha for prod
  guardrail.ecs.tofu:
    project_path: "{{ repo }}/.dist/prod/alpha"
    command: apply
    variables:
      release: "2024-06"
  register: alpha

- name: Show what changed
  ansible.builtin.debug:
    msg: "{{ alpha.counts }} -> {{ alpha.outputs }}"

- name: Plan a destroy in another workspace (in check mode destroy only plans)
  guardrail.ecs.tofu:
    project_path: "{{ repo }}/.dist/prod/alpha"
    command: destroy
    workspace: staging
  check_mode: true

- name: Plan, and keep the plan for review
  guardrail.ecs.tofu:
    project_path: "{{ repo }}/.dist/prod/alpha"
    command: plan
  register: reviewed

- name: Apply exactly the reviewed plan
  guardrail.ecs.tofu:
    project_path: "{{ repo }}/.dist/prod/alpha"
    command: apply
    plan_id: "{{ reviewed.plan_id }}"
"""

RETURN = r"""
plan_id:
  description: With V(plan), the id of the saved plan, to give as O(plan_id) to V(apply); with O(plan_id), the plan applied.
  returned: when a plan was saved or applied
  type: str
  sample: 3f2a9c01d4e5b6a7
summary:
  description: One line per resource change (action and address), then the counts.
  returned: when a plan was saved or applied
  type: list
  elements: str
  sample: ["  create   terraform_data.service", "Plan: 1 to create, 0 to update, 0 to replace, 0 to delete"]
plan_text:
  description: With V(plan), tofu's own human plan (each resource's changed attributes), sensitive values masked.
  returned: when a plan was saved
  type: str
  sample: "  # terraform_data.service will be created\n  + resource \"terraform_data\" \"service\" {...}\n"
command:
  description: The command run.
  returned: always
  type: str
  sample: apply
counts:
  description: Resource changes in the plan, by kind; a replacement counts once, as V(replace).
  returned: always
  type: dict
  sample: {"create": 2, "update": 0, "delete": 0, "replace": 1}
resources:
  description: Every resource the plan changes, with before and after values (sensitive values masked).
  returned: always
  type: list
  elements: dict
  sample: [{"address": "terraform_data.deployment", "action": "replace", "before": {}, "after": {}}]
outputs_changed:
  description: Names of outputs whose value the plan changes.
  returned: always
  type: list
  elements: str
  sample: ["deployment_id"]
outputs:
  description: Output values by name after the command; sensitive ones masked unless O(show_sensitive).
  returned: always
  type: dict
  sample: {"service_name": "web-prod"}
applied:
  description: Whether a plan was applied.
  returned: always
  type: bool
  sample: true
initialised:
  description: Whether C(init) ran.
  returned: always
  type: bool
  sample: false
stdout:
  description: The tool's standard output, every command in order.
  returned: always
  type: str
  sample: "Apply complete! Resources: 1 added, 0 changed, 0 destroyed."
stderr:
  description: The tool's standard error, every command in order.
  returned: always
  type: str
  sample: ""
binary:
  description: The executable that ran.
  returned: always
  type: str
  sample: /usr/local/bin/terraform
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.common import git as git_utils
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import plans
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils

ARGUMENT_SPEC = dict(
    project_path=dict(type="path", required=True),
    command=dict(type="str", default="apply", choices=list(tofu_utils.COMMANDS)),
    binary=dict(type="str"),
    workspace=dict(type="str"),
    variables=dict(type="dict", default={}, no_log=True),
    var_files=dict(type="list", elements="path", default=[]),
    show_sensitive=dict(type="bool", default=False),
    plan_id=dict(type="str"),
    stack=dict(type="str"),
    profile=dict(type="str"),
    **tofu_utils.OPTIONS_SPEC,
)


def saved_plan(tofu, params, check_mode):
    """The result of a plan that is saved, or of applying a saved plan; None
    for every other command."""
    context = dict(commit=git_utils.head_commit(tofu.project_path), stack=params["stack"],
                   profile=params["profile"])
    if params["command"] == "plan" and not check_mode:
        with tofu_utils.INTERRUPTS.guard():
            result = plans.save(tofu, **context)
        outputs = {}
    elif params["command"] == "apply" and params["plan_id"]:
        if check_mode:
            meta = plans.check(tofu.project_path, params["plan_id"], **context)
            counts = meta.get("counts") or {}
            return dict(changed=bool(meta.get("changed")), command="apply", applied=False,
                        initialised=False, plan_id=params["plan_id"], counts=counts,
                        resources=meta.get("resources") or [], outputs_changed=[], outputs={},
                        summary=plans.summary_lines(meta.get("resources") or [], counts))
        with tofu_utils.INTERRUPTS.guard():
            result = plans.apply(tofu, params["plan_id"], **context)
        outputs = result.pop("outputs_raw")
    else:
        return None
    result.setdefault("outputs_changed", [])
    result.update(command=params["command"], applied=result.get("applied", False),
                  initialised=False,
                  outputs=tofu_utils.mask_outputs(outputs, params["show_sensitive"]))
    return result


def unmask_plain_variables(module, tofu, command):
    """Once a plan has told which variables tofu treats as sensitive, the
    others are plain values: they stop being masked wherever an equal
    string appears (a variable `release=prod` would mask every `prod`)."""
    if command not in ("plan", "apply", "destroy"):
        return
    for value in tofu.variables.values():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value)
            if text not in tofu.secrets:
                module.no_log_values.discard(text)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if params["plan_id"] and params["command"] != "apply":
        module.fail_json(msg=f"plan_id is for command apply, not {params['command']}")
    tofu = None
    try:
        tofu = tofu_utils.Tofu(
            params["project_path"], binary=params["binary"], workspace=params["workspace"],
            variables=params["variables"], var_files=params["var_files"],
            backend_config=params["backend_config"],
            backend_config_files=params["backend_config_files"], lock=params["lock"],
            lock_timeout=params["lock_timeout"], parallelism=params["parallelism"],
            targets=params["targets"], replace=params["replace"], timeout=params["timeout"])
        result = saved_plan(tofu, params, module.check_mode)
        if result is None:
            result = tofu.execute(params["command"], check_mode=module.check_mode,
                                  show_sensitive=params["show_sensitive"])
    except plans.PlanRefused as exc:
        module.fail_json(msg=str(exc), refused=True)
    except tofu_utils.TofuError as exc:
        module.fail_json(msg=str(exc), rc=exc.rc, stdout=tofu.stdout if tofu else "",
                         stderr=tofu.stderr if tofu else exc.stderr)
    result.update(stdout=tofu.stdout, stderr=tofu.stderr, binary=tofu.binary)
    unmask_plain_variables(module, tofu, params["command"])
    if module._diff and result["resources"] and "before" in result["resources"][0]:
        result["diff"] = tofu_utils.diff_text(result["resources"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
