# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # Where a stack repository keeps its templates and profiles, and the data
    # templates see: shared by render and workflow.
    DOCUMENTATION = r"""
options:
  stacks_dir:
    description: Directory of the stacks, relative to O(repo_path).
    type: str
    default: stacks
  profiles_dir:
    description: Directory of the profiles, relative to O(repo_path).
    type: str
    default: profiles
  vars:
    description: Template variables on top of the profile's configuration.
    type: dict
    default: {}
"""
