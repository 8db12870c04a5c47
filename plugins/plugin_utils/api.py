# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The change workflow as a library: the one entry point the `guardrail`
command, the guardrail.ecs.workflow action plugin and any other program (a
web hook, a chat bot) call.

    from ansible_collections.guardrail.ecs.plugins.plugin_utils.api import run_workflow

    result = run_workflow({"repo_path": "/srv/infra", "stack": "alpha", "profile": "prod",
                           "steps": ["render", "git_check", "lock", "exec", "git_push", "unlock"],
                           "lock": {"owner": "webhook@example"}})
    for step in result.steps:
        print(step.step, step.status, step.changed)

`options` are the guardrail.ecs.workflow task's options, nested as the task
takes them (`lock: {backend, owner, ...}`, `tofu: {...}`; workflow_spec.py),
validated with the same argument spec before any step runs; a problem raises
WorkflowError and nothing runs. The flat names of 0.2 still work until 0.4.0,
each with a DeprecationWarning. A step that fails or refuses does not raise:
it is in the result (`failed`, `refused`, `failed_step`, the step's outcome).
"""
from __future__ import annotations

import warnings
from collections import namedtuple

from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow as engine
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow_spec
from ansible_collections.guardrail.ecs.plugins.plugin_utils.templar import standalone_templater

WorkflowError = engine.WorkflowError


class StepOutcome(namedtuple("StepOutcome", ("step", "status", "changed", "duration", "msg", "result"))):
    """One step as it ran, a named tuple: `step` (str), `status` (str: ok,
    failed or skipped), `changed` (bool), `duration` (float, seconds), `msg`
    (str, default "") and `result` (dict, what the step returned, default {})."""

    __slots__ = ()

    def __new__(cls, step, status, changed, duration, msg="", result=None):
        return super().__new__(cls, step, status, changed, duration, msg, {} if result is None else result)


class WorkflowResult(namedtuple("WorkflowResult", ("changed", "failed", "refused", "failed_step", "msg", "steps",
                                                   "data"))):
    """A run, a named tuple: whether it `changed` anything, how it ended
    (`failed`, `refused`: bool; `failed_step`: str or None; `msg`: str),
    each step's outcome (`steps`, a tuple of StepOutcome) and `data` (dict),
    the whole result as the workflow task reports it: what to store or send
    as JSON."""

    __slots__ = ()

    @classmethod
    def from_engine(cls, data):
        steps = tuple(StepOutcome(step=r["step"], status=r["status"], changed=r["changed"],
                                  duration=r["duration"], msg=r.get("msg", ""),
                                  result=r["result"] if isinstance(r.get("result"), dict) else {})
                      for r in data.get("steps") or [])
        return cls(changed=bool(data.get("changed")), failed=bool(data.get("failed")),
                   refused=bool(data.get("refused")), failed_step=data.get("failed_step"),
                   msg=data.get("msg", ""), steps=steps, data=data)


def validate(options):
    """The engine's parameters from `options` (defaults applied);
    WorkflowError naming every problem when they do not validate."""
    return _validated(options)


def _validated(options):
    params, deprecations = workflow_spec.validate(options)
    for message in deprecations:
        # stacklevel: the program that called validate or run_workflow.
        warnings.warn(message, DeprecationWarning, stacklevel=3)
    return params


def run_workflow(options, template=None, check_mode=False, diff=False, variables=None, fast=False, echo=None):
    """Validates `options` and runs the steps they name (see the module
    docstring). `template`: a render template function (default: Ansible's
    templar alone, made only if a render needs it); `variables`: the play's
    variables (AWX job ids name the lock owner); `fast` and `echo`: as the
    command line runs (skip a render whose committed inputs are unchanged;
    stream tofu's output)."""
    return run_validated(_validated(options), template, check_mode=check_mode, diff=diff, variables=variables,
                         fast=fast, echo=echo)


def run_validated(params, template=None, check_mode=False, diff=False, variables=None, fast=False, echo=None):
    """run_workflow for the engine's parameters, as workflow_spec.validate
    (the action plugin and the command line) or `validate` returned them."""
    data = engine.run(params, template or standalone_templater(), check_mode=check_mode, diff=diff,
                      variables=variables, fast=fast, echo=echo)
    return WorkflowResult.from_engine(data)
