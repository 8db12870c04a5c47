# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: profile
short_description: The merged configuration of a profile
version_added: 0.1.0
description:
  - Returns the configuration M(guardrail.ecs.render) renders a stack with, for each profile named,
    that is C(<profiles_dir>/<profile>.yml) with the profiles it C(extends:) merged in (dictionaries merged
    key by key, lists and other values replaced, cycles refused), without the C(extends) key.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  _terms:
    description: Profile names.
    required: true
    type: list
    elements: str
  repo_path:
    description: The stack repository. Default the playbook's directory.
    type: path
  profiles_dir:
    description: Directory of the profiles, relative to O(repo_path).
    type: str
    default: profiles
seealso:
  - module: guardrail.ecs.render
"""

EXAMPLES = r"""
- name: Show how many replicas prod runs
  ansible.builtin.debug:
    msg: "{{ lookup('guardrail.ecs.profile', 'prod', repo_path='/srv/infra').service.replicas }}"
"""

RETURN = r"""
_raw:
  description: One merged configuration (a dictionary) per profile named.
  type: list
  elements: dict
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.guardrail.ecs.plugins.plugin_utils import render as render_utils


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        repo_path = self.get_option("repo_path") or self._loader.get_basedir()
        profiles = os.path.join(repo_path, self.get_option("profiles_dir"))
        if not render_utils.inside(repo_path, profiles):
            raise AnsibleLookupError(f"profiles_dir {profiles} escapes the repository {repo_path}")
        try:
            return [render_utils.load_profile(profiles, term) for term in terms]
        except render_utils.RenderError as exc:
            raise AnsibleLookupError(str(exc)) from exc
