# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of the change workflow: one argument spec, nested by the step
that reads each option, which the workflow task, the library entry point
(api.py) and the `guardrail` command all validate with.

The top level names the run (stack, profile, steps, command, where the
repository is, how many stacks at once) and carries the collection's shared
AWS options, so `module_defaults: group/guardrail.ecs.aws` reaches them; the
rest is grouped under `render`, `git`, `lock` and `tofu`.

The flat names of 0.2 (`lock_backend`, `exec_timeout`, ...) still work until
0.4.0: `validate` moves each into its group and reports its deprecation.
"""
from __future__ import annotations

import sys

from ansible_collections.guardrail.ecs.plugins.module_utils.common.aws import AWS_ARGUMENT_SPEC
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from ansible_collections.guardrail.ecs.plugins.plugin_utils.workflow import DEFAULT_STEPS, WorkflowError

RENDER_SPEC = dict(
    stacks_dir=dict(type="str", default="stacks"),
    profiles_dir=dict(type="str", default="profiles"),
    dest=dict(type="str"),
    vars=dict(type="dict", default={}),
)
GIT_SPEC = dict(
    max_ahead=dict(type="int", default=1),
    allow_detached=dict(type="bool", default=False),
    fetch=dict(type="bool", default=True),
    push_remote=dict(type="str"),
)
LOCK_SPEC = dict(
    backend=dict(type="str", default="git", choices=list(run_lock.BACKENDS)),
    owner=dict(type="str"),
    run_id=dict(type="str"),
    message=dict(type="str", default=""),
    remote=dict(type="str"),
    table=dict(type="str"),
    bucket=dict(type="str"),
    key=dict(type="str", no_log=False),
    takeover=dict(type="bool", default=True),
    ttl=dict(type="int"),
)
TOFU_SPEC = dict(
    binary=dict(type="str"),
    workspace=dict(type="str"),
    variables=dict(type="dict", default={}, no_log=True),
    var_files=dict(type="list", elements="path", default=[]),
    options=dict(type="dict", default={}, no_log=True),
    show_sensitive=dict(type="bool", default=False),
    timeout=dict(type="int", default=3600),
    plan_id=dict(type="str"),
    policy_allow=dict(type="list", elements="str", default=[]),
)
GROUPS = dict(render=RENDER_SPEC, git=GIT_SPEC, lock=LOCK_SPEC, tofu=TOFU_SPEC)

WORKFLOW_ARGUMENT_SPEC = dict(
    stack=dict(type="str", required=True),
    profile=dict(type="str", required=True),
    steps=dict(type="list", elements="str", default=DEFAULT_STEPS),
    command=dict(type="raw", default="apply"),
    repo_path=dict(type="path"),
    parallelism=dict(type="int", default=4),
    since=dict(type="str"),
    report_dir=dict(type="path"),
    **{group: dict(type="dict", options=spec, apply_defaults=True) for group, spec in GROUPS.items()},
    **AWS_ARGUMENT_SPEC,
)

# The flat names of 0.2 -> (group, name in the group). The engine reads its
# parameters under these names (`engine_params`).
FLAT_NAMES = {
    "stacks_dir": ("render", "stacks_dir"),
    "profiles_dir": ("render", "profiles_dir"),
    "dest": ("render", "dest"),
    "vars": ("render", "vars"),
    "max_ahead": ("git", "max_ahead"),
    "allow_detached": ("git", "allow_detached"),
    "fetch": ("git", "fetch"),
    "push_remote": ("git", "push_remote"),
    "lock_backend": ("lock", "backend"),
    "owner": ("lock", "owner"),
    "run_id": ("lock", "run_id"),
    "lock_message": ("lock", "message"),
    "lock_remote": ("lock", "remote"),
    "lock_table": ("lock", "table"),
    "lock_bucket": ("lock", "bucket"),
    "lock_key": ("lock", "key"),
    "lock_takeover": ("lock", "takeover"),
    "lock_ttl": ("lock", "ttl"),
    "binary": ("tofu", "binary"),
    "workspace": ("tofu", "workspace"),
    "variables": ("tofu", "variables"),
    "var_files": ("tofu", "var_files"),
    "tofu_options": ("tofu", "options"),
    "show_sensitive": ("tofu", "show_sensitive"),
    "exec_timeout": ("tofu", "timeout"),
    "plan_id": ("tofu", "plan_id"),
    "policy_allow": ("tofu", "policy_allow"),
}
# The action plugin repeats it: Ansible's sanity test wants the version written out.
FLAT_REMOVED_IN = dict(version="0.4.0", collection_name="guardrail.ecs")


def nest(options):
    """(`options` with every flat name of 0.2 moved into its group, one
    deprecation message per flat name given). WorkflowError when a flat name
    and its nested form are both given with different values, or when a
    group is not a dict a flat name could join."""
    nested = {k: v for k, v in options.items() if k not in FLAT_NAMES}
    deprecations, problems = [], []
    for flat in sorted(set(options) & set(FLAT_NAMES)):
        group, name = FLAT_NAMES[flat]
        value = options[flat]
        deprecations.append(f"the workflow option {flat} is deprecated, and removed in "
                            f"{FLAT_REMOVED_IN['version']}: write it as {group}: {{{name}: ...}}")
        members = nested.get(group)
        if members is None:
            members = {}
        elif not isinstance(members, dict):
            problems.append(f"{flat} (deprecated, now {group}.{name}) cannot be merged into {group}, "
                            f"which is not a dict: give {name} under {group}")
            continue
        if name in members and members[name] != value:
            problems.append(f"{flat} ({value!r}) and {group}.{name} ({members[name]!r}) are both given and "
                            f"differ: {flat} is the deprecated spelling of {group}.{name}, give only "
                            f"{group}.{name}")
            continue
        nested[group] = dict(members, **{name: value})
    if problems:
        raise WorkflowError("; ".join(problems) + "; nothing was run")
    return nested, deprecations


def engine_params(validated):
    """The workflow engine's parameters (flat, under the names of 0.2) from
    options validated against WORKFLOW_ARGUMENT_SPEC."""
    params = {k: v for k, v in validated.items() if k not in GROUPS}
    for flat, (group, name) in FLAT_NAMES.items():
        params[flat] = (validated.get(group) or {}).get(name)
    return params


def validate(options):
    """(engine parameters, deprecation messages) from the workflow's options,
    nested or (deprecated) flat, validated against WORKFLOW_ARGUMENT_SPEC with
    Ansible's ArgumentSpecValidator. WorkflowError naming every problem when
    they do not validate: nothing has run."""
    # Here, not at the top: the validator is the only part of Ansible the
    # command line needs before a render.
    try:
        from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise WorkflowError(
            f"ansible-core is not installed for the Python that runs this ({sys.executable}): install it there "
            f"({sys.executable} -m pip install ansible-core), or use a Python that has it (for the guardrail "
            "command: GUARDRAIL_PYTHON); nothing was run") from exc

    nested, deprecations = nest(dict(options))
    checked = ArgumentSpecValidator(WORKFLOW_ARGUMENT_SPEC).validate(nested)
    if checked.error_messages:
        raise WorkflowError("; ".join(checked.error_messages) + "; nothing was run")
    return engine_params(checked.validated_parameters), deprecations
