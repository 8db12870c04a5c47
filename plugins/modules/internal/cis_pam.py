#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_pam
short_description: PAM modules in the PAM stack for a table of CIS controls
version_added: 0.2.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Takes a whole table of controls, each naming the PAM modules (C(faillock), C(pwquality), C(pwhistory)) that
    must be called by the PAM stack, and returns one result per control.
  - The check reads the stack the services use (Debian C(/etc/pam.d/common-auth), C(common-account),
    C(common-password); Amazon Linux C(system-auth) and C(password-auth)), not the modules' configuration files.
  - "The fix depends on O(method): C(pam_auth_update) writes profiles to C(/usr/share/pam-configs) and enables them
    with C(pam-auth-update) (pam_pwquality's profile comes with C(libpam-pwquality)); C(authselect) enables the
    features C(with-faillock) and C(with-pwhistory); C(files) adds the lines around C(pam_unix) in C(system-auth)
    and C(password-auth) (the file a link points to)."
  - C(pam-auth-update) keeps a stack an administrator edited by hand; the control is then C(failed) with what is missing.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  controls:
    description:
      - The table. Each control has C(id) and C(modules), a list of C(faillock), C(pwquality) and C(pwhistory).
      - C(waived) (a reason) evaluates the control without changing it and reports it C(waived).
      - C(audit_only) on one control evaluates it without changing it.
    type: list
    elements: dict
    required: true
  method:
    description: How the platform builds its PAM stack.
    type: str
    required: true
    choices: [pam_auth_update, authselect, files]
  pwhistory_args:
    description: The arguments of C(pam_pwhistory.so) in the line this module adds (methods C(pam_auth_update), C(files)).
    type: str
    default: remember=24 enforce_for_root try_first_pass use_authtok
extends_documentation_fragment:
  - guardrail.ecs.cis_table
notes:
  - Check mode evaluates and reports like O(audit_only), and returns C(changed) when enforcing would change the host.
"""

EXAMPLES = r"""
- name: 5.3.2.x | PAM modules enabled
  guardrail.ecs.internal.cis_pam:
    controls:
      - id: "5.3.2.2"
        modules: [faillock]
      - id: "5.3.2.3"
        modules: [pwquality]
    method: pam_auth_update
"""

RETURN = r"""
results:
  description: One result per control.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "5.3.2.2"
      status: fixed
      evidence: "pam_faillock added to the stack (pam-auth-update)"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import run_table_module
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.pam import DEFAULT_PWHISTORY_ARGS, METHODS, apply


def main():
    run_table_module(
        AnsibleModule,
        dict(method=dict(type="str", required=True, choices=list(METHODS)),
             pwhistory_args=dict(type="str", default=DEFAULT_PWHISTORY_ARGS)),
        lambda p, check_mode: apply(p["controls"], p["method"], audit_only=p["audit_only"], check_mode=check_mode,
                                    pwhistory_args=p["pwhistory_args"]))


if __name__ == "__main__":
    main()
