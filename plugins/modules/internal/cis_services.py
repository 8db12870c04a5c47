#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_services
short_description: Packages and systemd units for a table of CIS controls
version_added: 0.1.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Takes a whole table of controls and returns one result per control. The table is queried with one package
    query and one C(systemctl show), and changed with one command per kind of change, so a long table costs
    a handful of commands.
  - A unit to be masked that is not installed passes ("not installed or masked"). Units to be enabled are
    enabled and started one by one; one that cannot start (auditd inside a container) is reported in the
    evidence without stopping the others.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  controls:
    description:
      - The table. Each control has C(id) and any of C(packages_absent), C(packages_present), C(services_masked),
        C(services_enabled), C(services_disabled) (lists of names; a unit name without a suffix is a service).
      - C(waived) (a reason) evaluates the control without changing it and reports it C(waived).
    type: list
    elements: dict
    required: true
  package_manager:
    description: How packages are queried and changed.
    type: str
    choices: [apt, dnf, yum]
    default: apt
  remove_packages:
    description: Remove installed packages that a control forbids. When false they are reported C(failed).
    type: bool
    default: true
  install_packages:
    description: Install missing packages that a control requires. When false they are reported C(failed).
    type: bool
    default: true
extends_documentation_fragment:
  - guardrail.ecs.cis_table
notes:
  - Check mode evaluates and reports like O(audit_only), and returns C(changed) when enforcing would run a change
    (install or remove a package, mask, disable, enable or start a unit). A failed control the run may not fix
    (O(install_packages=false), a unit whose last start failed) is reported C(failed) without C(changed).
"""

EXAMPLES = r"""
- name: 2.2.2, 2.2.16, 2.1.1 | Services and packages
  guardrail.ecs.internal.cis_services:
    package_manager: apt
    controls:
      - id: "2.2.2"
        packages_absent: [avahi-daemon]
      - id: "2.2.16"
        services_masked: [nfs-server]
      - id: "2.1.1"
        packages_present: [chrony]
        services_enabled: [chrony]
"""

RETURN = r"""
results:
  description: One result per control.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "2.2.16"
      status: pass
      evidence: nfs-server.service not-found/-/inactive
commands:
  description: The commands that changed the host, with their exit status.
  returned: always
  type: list
  elements: dict
  sample:
    - cmd: [systemctl, mask, --now, rpcbind.service, rpcbind.socket]
      rc: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import run_table_module
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.services import apply


def main():
    run_table_module(
        AnsibleModule,
        dict(package_manager=dict(type="str", choices=["apt", "dnf", "yum"], default="apt"),
             remove_packages=dict(type="bool", default=True),
             install_packages=dict(type="bool", default=True)),
        lambda p, check_mode: apply(p["controls"], p["package_manager"], p["remove_packages"],
                                    p["install_packages"], p["audit_only"], check_mode),
        returns=("commands",), check_mode_changes=False)


if __name__ == "__main__":
    main()
