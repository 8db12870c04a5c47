# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: tofu_output
short_description: The outputs of a tofu/terraform stack directory
version_added: 0.1.0
description:
  - Returns the outputs (C(output -json)) of each project directory named, as a dictionary of values,
    or one output's value with O(name).
  - Sensitive outputs are masked unless O(show_sensitive=true).
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  _terms:
    description: Project directories, for a rendered stack C(<repo>/.dist/<profile>/<stack>).
    required: true
    type: list
    elements: path
  name:
    description: Return only this output's value; a missing output is an error.
    type: str
  binary:
    description: The executable (default C(tofu) when on E(PATH), else C(terraform)).
    type: str
  workspace:
    description: The workspace, passed as E(TF_WORKSPACE).
    type: str
  show_sensitive:
    description: Return sensitive outputs in clear.
    type: bool
    default: false
seealso:
  - module: guardrail.ecs.tofu
"""

EXAMPLES = r"""
- name: Every output of stack alpha for prod
  ansible.builtin.debug:
    msg: "{{ lookup('guardrail.ecs.tofu_output', '/srv/infra/.dist/prod/alpha') }}"

- name: One output
  ansible.builtin.debug:
    msg: "{{ lookup('guardrail.ecs.tofu_output', '/srv/infra/.dist/prod/alpha', name='service_name') }}"
"""

RETURN = r"""
_raw:
  description: Per directory, a dictionary of output values, or the value of O(name).
  type: list
  elements: raw
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        name = self.get_option("name")
        values = []
        for term in terms:
            try:
                tofu = tofu_utils.Tofu(term, binary=self.get_option("binary"),
                                       workspace=self.get_option("workspace"))
                outputs = tofu_utils.mask_outputs(tofu.outputs(), self.get_option("show_sensitive"))
            except tofu_utils.TofuError as exc:
                raise AnsibleLookupError(f"outputs of {term}: {exc}") from exc
            if name is None:
                values.append(outputs)
            elif name in outputs:
                values.append(outputs[name])
            else:
                raise AnsibleLookupError(f"{term} has no output {name!r} (it has: {', '.join(outputs) or 'none'})")
        return values
