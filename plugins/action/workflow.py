# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for guardrail.ecs.workflow: render, git check, lock, exec,
push and unlock for one (stack, profile), in one task.

The steps live in plugin_utils/workflow.py and run in-process on the
controller; this plugin validates the arguments and hands the engine
Ansible's templar.
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.guardrail.ecs.plugins.plugin_utils import api
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow as engine
from ansible_collections.guardrail.ecs.plugins.plugin_utils.templar import templater
from ansible_collections.guardrail.ecs.plugins.plugin_utils.workflow import (  # noqa: F401 pylint: disable=unused-import
    DEFAULT_STEPS,
    STEPS,
    WORKFLOW_ARGUMENT_SPEC,
    net_changed,
)


def validate_steps(steps):
    try:
        return engine.validate_steps(steps)
    except engine.WorkflowError as exc:
        raise AnsibleActionFail(str(exc)) from exc


def validate_command(command):
    try:
        return engine.validate_command(command)
    except engine.WorkflowError as exc:
        raise AnsibleActionFail(str(exc)) from exc


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, params = self.validate_argument_spec(argument_spec=WORKFLOW_ARGUMENT_SPEC)
        try:
            # The engine masks what is secret (credentials, values tofu marks
            # sensitive) and nothing else: masking every no_log option value
            # wherever it appears would corrupt plain values equal to it.
            result.update(api.run_validated(params, templater(self._templar), check_mode=self._task.check_mode,
                                            diff=self._task.diff, variables=task_vars or {}).data)
        except engine.WorkflowError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        return result
