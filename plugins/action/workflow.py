# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for guardrail.ecs.workflow: render, git check, lock, exec,
push and unlock for one (stack, profile), or for several stacks in
dependency order (plugin_utils/stacks.py), in one task.

The steps live in plugin_utils/workflow.py and run in-process on the
controller; this plugin validates the arguments (plugin_utils/workflow_spec.py,
warning of each deprecated flat name) and hands the engine Ansible's templar.
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.guardrail.ecs.plugins.plugin_utils import api, stacks, workflow_spec
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow as engine
from ansible_collections.guardrail.ecs.plugins.plugin_utils.templar import templater
from ansible_collections.guardrail.ecs.plugins.plugin_utils.workflow import (  # noqa: F401 pylint: disable=unused-import
    DEFAULT_STEPS,
    STEPS,
    net_changed,
)

display = Display()


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
        try:
            params, deprecations = workflow_spec.validate(self._task.args)
        except engine.WorkflowError as exc:
            raise AnsibleActionFail(str(exc), obj=self._task.args) from exc
        for message in deprecations:
            display.deprecated(message, version="0.4.0", collection_name="guardrail.ecs")
        try:
            # The engine masks what is secret (credentials, values tofu marks
            # sensitive) and nothing else: masking every no_log option value
            # wherever it appears would corrupt plain values equal to it.
            template = templater(self._templar)
            if params["steps"] == ["drift"]:
                result.update(self.drift(params, template, task_vars))
            elif stacks.selects_many(params["stack"]):
                result.update(stacks.run(params, template, check_mode=self._task.check_mode,
                                         diff=self._task.diff, variables=task_vars or {}))
            else:
                params = stacks.with_dependencies(params, check_mode=self._task.check_mode)
                result.update(api.run_validated(params, template, check_mode=self._task.check_mode,
                                                diff=self._task.diff, variables=task_vars or {}).data)
        except engine.WorkflowError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        return result

    @staticmethod
    def drift(params, template, task_vars):
        """steps [drift]: the drift report, failed when any stack drifted so a
        scheduled job shows it."""
        profiles = params["profile"].split(",")
        report = stacks.drift(dict(params, profile=profiles[0]), template, profiles, variables=task_vars or {},
                              report_dir=params["report_dir"])
        errors = [r for r in report["stacks"] if r["status"] == "error"]
        if report["drift"]:
            report.update(failed=True, msg=f"drift in {', '.join(report['drift'])}: see {report['files']['html']}")
        elif errors:
            report.update(failed=True, msg="; ".join(f"{r['stack']}/{r['profile']}: {r['msg']}" for r in errors))
        else:
            report["msg"] = f"no drift in {len(report['stacks'])} stack(s)"
        report["changed"] = False
        return report
