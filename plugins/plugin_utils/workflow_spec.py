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

Validation is a function of the options, this spec and the installed
ansible-core. The command line, which otherwise never imports Ansible on a
run that renders nothing, asks `validate` to remember its answers
(`memo=True`): options validated once before are not validated again until
the options, the spec or ansible-core change (see `_memo_key` for what is
never remembered).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys

from ansible_collections.guardrail.ecs.plugins.module_utils.common.aws import AWS_ARGUMENT_SPEC
from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import read_cache, remember
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


def validate(options, memo=False):
    """(engine parameters, deprecation messages) from the workflow's options,
    nested or (deprecated) flat, validated against WORKFLOW_ARGUMENT_SPEC with
    Ansible's ArgumentSpecValidator. WorkflowError naming every problem when
    they do not validate: nothing has run. `memo`: answer from the user's
    cache when these very options were validated before (module docstring)."""
    nested, deprecations = nest(dict(options))
    key = _memo_key(nested) if memo else None
    params = _memo_read(key) if key else None
    if params is None:
        params = _validated(nested)
        if key:
            _memo_write(key, params)
    else:
        # Not remembered (a command line may carry what the cache must not
        # keep); a `raw` option is validated as given.
        params["command"] = nested.get("command", WORKFLOW_ARGUMENT_SPEC["command"]["default"])
    return params, deprecations


def rememberable(options):
    """Whether validate(options, memo=True) remembers these options: no
    secret and nothing that depends on the environment is ever written."""
    return _memo_key(nest(dict(options))[0]) is not None


def _validated(nested):
    # Here, not at the top: the validator is the only part of Ansible the
    # command line needs before a render.
    try:
        from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise WorkflowError(
            f"ansible-core is not installed for the Python that runs this ({sys.executable}): install it there "
            f"({sys.executable} -m pip install ansible-core), or use a Python that has it (for the guardrail "
            "command: GUARDRAIL_PYTHON); nothing was run") from exc
    checked = ArgumentSpecValidator(WORKFLOW_ARGUMENT_SPEC).validate(nested)
    if checked.error_messages:
        raise WorkflowError("; ".join(checked.error_messages) + "; nothing was run")
    return engine_params(checked.validated_parameters)


# -- remembered validations ----------------------------------------------------

MEMO_FILE = "validated-options.json"
# Distinct option sets kept; the one validated first is forgotten first.
MEMO_ENTRIES = 32
# What ArgumentSpecValidator's answer depends on besides the options and the
# spec: these files of the installed ansible-core (their path, size, mtime).
VALIDATOR_FILES = ("release.py", "module_utils/common/arg_spec.py", "module_utils/common/parameters.py",
                   "module_utils/common/validation.py", "module_utils/parsing/convert_bool.py",
                   "module_utils/common/text/converters.py", "module_utils/common/text/formatters.py")
# A URL carrying credentials (https://user:token@host/...): never written.
CREDENTIALS_RE = re.compile(r"://[^/@\s]*@")


def _memo_key(nested):
    """The digest naming these options' validation, or None when it must not
    be remembered: options that are not plain data (strings, numbers, bools,
    lists, dicts with string keys; a group given as a dict), that give a
    value to a no_log option or carry a URL with credentials (no secret is
    written to the cache), or that carry `$` or `~` (a path's value depends
    on the environment); or when ansible-core cannot be found (validating
    says so). Besides the options, the key holds the spec, the files of
    ansible-core's validator and this file (how validated options become the
    engine's parameters), each by path, size and mtime: an upgrade of either
    is validated afresh."""
    if not _plain(nested) or not _groups_plain(WORKFLOW_ARGUMENT_SPEC, nested):
        return None
    try:
        options = json.dumps(nested, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    if ("$" in options or "~" in options or CREDENTIALS_RE.search(options)
            or _secret_given(WORKFLOW_ARGUMENT_SPEC, nested)):
        return None
    found = importlib.util.find_spec("ansible")
    if found is None or not found.submodule_search_locations:
        return None
    package = os.path.realpath(list(found.submodule_search_locations)[0])
    stats = []
    for path in [os.path.join(package, name) for name in VALIDATOR_FILES] + [os.path.realpath(__file__)]:
        try:
            info = os.stat(path)
        except OSError:
            return None
        stats.append([path, info.st_size, info.st_mtime_ns])
    material = json.dumps([options, spec_text(), stats, list(sys.version_info[:2])])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def spec_text():
    """WORKFLOW_ARGUMENT_SPEC as text: what a remembered answer was made
    with (a spec changed since is answered afresh)."""
    return json.dumps(WORKFLOW_ARGUMENT_SPEC, sort_keys=True, default=repr)


def _plain(value):
    """Whether `value` is data JSON gives back as it was: no tuple (it comes
    back a list) and no key other than a string (1 and "1" are one key)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float))


def _groups_plain(spec, values):
    """Whether every group of `spec` given in `values` is given as a dict (the
    validator also takes one as a JSON or k=v string, which could hold a
    no_log option `_secret_given` would not see)."""
    for name, option in spec.items():
        for given in (name, *option.get("aliases", ())):
            value = values.get(given)
            if option.get("options") and value is not None and not (
                    isinstance(value, dict) and _groups_plain(option["options"], value)):
                return False
    return True


def _secret_given(spec, values):
    """Whether `values` gives a no_log option of `spec` (or of its groups) a
    value, under its name or an alias."""
    for name, option in spec.items():
        for given in (name, *option.get("aliases", ())):
            value = values.get(given)
            if value in (None, "", [], {}):
                continue
            if option.get("no_log"):
                return True
            if option.get("options") and isinstance(value, dict) and _secret_given(option["options"], value):
                return True
    return False


def _memo_read(key):
    """The engine parameters remembered under `key`, None when there are none
    (or they are not what engine_params gives: a cache from another version).
    Only a cache file the user alone can write is read (common.files)."""
    params = read_cache(MEMO_FILE).get(key)
    if not isinstance(params, dict) or set(params) != _engine_names():
        return None
    return params


def _memo_write(key, params):
    remember(MEMO_FILE, key, {k: v for k, v in params.items() if k != "command"}, MEMO_ENTRIES)


def _engine_names():
    """The names engine_params gives (the command's own is not remembered)."""
    return ({k for k in WORKFLOW_ARGUMENT_SPEC if k not in GROUPS} | set(FLAT_NAMES)) - {"command"}
