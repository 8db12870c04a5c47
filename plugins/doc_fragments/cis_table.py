# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # The options every CIS table module takes besides its table
    # (module_utils/cis/common.py TABLE_ARGUMENT_SPEC).
    DOCUMENTATION = r"""
options:
  audit_only:
    description: Evaluate only; change nothing.
    type: bool
    default: false
"""
