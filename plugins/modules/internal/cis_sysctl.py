#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_sysctl
short_description: Kernel parameters for a table of CIS controls, key by key
version_added: 0.1.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Takes a whole table of controls, each with the kernel parameters it requires, and returns one result per control.
  - Values are persisted in one drop-in file (O(persist_file)) and applied live one key at a time through C(/proc/sys).
    It never runs C(sysctl --system), which would re-apply every file and reset what Docker and ecs-init set at run time.
  - With O(live_all=false) (a host running inside a container) only C(net.*) keys are applied live; C(kernel.*), C(vm.*)
    and C(fs.*) belong to the machine running the container, so they are persisted and reported C(pending_reboot).
  - A later drop-in file that overrides a value is reported as C(failed), naming the file.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  controls:
    description:
      - The table. Each control has C(id) and C(settings), a mapping of parameter name to value.
      - C(waived) (a reason) evaluates the control without changing it and reports it C(waived).
      - C(audit_only) on one control evaluates it without changing it.
      - C(waived_settings), a mapping of parameter to reason (empty for none), leaves those parameters as found
        and shows them; C(keep_for_docker_ipv6), a list of parameters left as found when Docker runs IPv6
        networks (C(ipv6) true in /etc/docker/daemon.json). The other parameters are enforced, and the
        control is C(waived) when a parameter left as found is not the wanted value.
    type: list
    elements: dict
    required: true
  persist_file:
    description: The drop-in file that holds the values.
    type: path
    default: /etc/sysctl.d/90-cis-hardening.conf
  live_all:
    description: Apply every key live. When false, only C(net.*) keys are applied live.
    type: bool
    default: true
extends_documentation_fragment:
  - guardrail.ecs.cis_table
notes:
  - Check mode evaluates and reports like O(audit_only), and returns C(changed) when enforcing would change the host. Diff mode shows the drop-in file.
"""

EXAMPLES = r"""
- name: 3.3.8, 1.5.1 | Kernel parameters
  guardrail.ecs.internal.cis_sysctl:
    controls:
      - id: "3.3.8"
        settings:
          net.ipv4.tcp_syncookies: 1
      - id: "1.5.1"
        settings:
          kernel.randomize_va_space: 2
    live_all: "{{ ansible_facts.virtualization_role != 'guest' or ansible_facts.virtualization_type not in ['podman', 'docker', 'container', 'lxc'] }}"
"""

RETURN = r"""
results:
  description: One result per control.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "3.3.8"
      status: pass
      evidence: "net.ipv4.tcp_syncookies: want 1, live 1, persisted 1 in /etc/sysctl.d/90-cis-hardening.conf"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import run_table_module
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.sysctl import apply


def main():
    run_table_module(
        AnsibleModule,
        dict(persist_file=dict(type="path", default="/etc/sysctl.d/90-cis-hardening.conf"),
             live_all=dict(type="bool", default=True)),
        lambda p, check_mode: apply(p["controls"], p["persist_file"], live_all=p["live_all"],
                                    audit_only=p["audit_only"], check_mode=check_mode),
        returns=("diff",))


if __name__ == "__main__":
    main()
