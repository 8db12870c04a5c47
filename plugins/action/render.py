# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for guardrail.ecs.render: renders on the controller, where the
templates, profiles and Ansible's templar are."""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.guardrail.ecs.plugins.plugin_utils import render as render_utils
from ansible_collections.guardrail.ecs.plugins.plugin_utils.templar import templater

RENDER_ARGUMENT_SPEC = dict(
    stack=dict(type="str", required=True),
    profile=dict(type="str", required=True),
    repo_path=dict(type="path", required=True),
    stacks_dir=dict(type="str", default="stacks"),
    profiles_dir=dict(type="str", default="profiles"),
    dest=dict(type="str"),
    vars=dict(type="dict", default={}),
)


def run_render(templar, params, check_mode=False):
    """Renders with validated `params`; returns the module-style result."""
    result = render_utils.render(
        params["repo_path"], params["stack"], params["profile"], templater(templar),
        extra_vars=params.get("vars") or {}, stacks_dir=params["stacks_dir"],
        profiles_dir=params["profiles_dir"], dest=params.get("dest"), check_mode=check_mode)
    return result


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, params = self.validate_argument_spec(argument_spec=RENDER_ARGUMENT_SPEC)
        try:
            rendered = run_render(self._templar, params, check_mode=self._task.check_mode)
        except render_utils.RenderError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        diff = rendered.pop("diff")
        result.update(rendered)
        if self._task.diff and diff:
            result["diff"] = diff
        return result
