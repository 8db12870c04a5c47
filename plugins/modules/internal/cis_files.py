#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_files
short_description: File modes, owners, contents and absence for a table of CIS controls
version_added: 0.1.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Takes a whole table of controls, each with the files it governs, and returns one result per control.
  - C(mode) is the most permissive mode allowed; extra permission bits are removed and stricter modes pass,
    as the benchmark asks ("or more restrictive").
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  controls:
    description:
      - The table. Each control has C(id) and C(files), a list of file specifications with C(path) (a glob is
        allowed) and any of C(mode), C(owner), C(group) (a name or a list of accepted names, the first is set),
        C(content) (exact text, created when missing), C(state=absent), C(recurse) (apply to the regular files
        below a directory), C(exclude) (globs left out of a recursion) and C(missing) (the status when nothing
        matches, V(pass), V(failed) or V(not_applicable)).
      - C(waived) (a reason) evaluates the control without changing it and reports it C(waived).
    type: list
    elements: dict
    required: true
extends_documentation_fragment:
  - guardrail.ecs.cis_table
notes:
  - Check mode evaluates and reports like O(audit_only), and returns C(changed) when enforcing would change the host.
"""

EXAMPLES = r"""
- name: 6.1.1, 4.1.8 | File permissions
  guardrail.ecs.internal.cis_files:
    controls:
      - id: "6.1.1"
        files:
          - {path: /etc/passwd, mode: "0644", owner: root, group: root}
      - id: "4.1.8"
        files:
          - {path: /etc/cron.deny, state: absent}
          - {path: /etc/cron.allow, content: "", mode: "0640", owner: root, group: root}
"""

RETURN = r"""
results:
  description: One result per control.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "6.1.1"
      status: pass
      evidence: /etc/passwd 0644 root:root
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import run_table_module
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.files import apply


def main():
    run_table_module(AnsibleModule, {}, lambda p, check_mode: apply(p["controls"], audit_only=p["audit_only"], check_mode=check_mode))


if __name__ == "__main__":
    main()
