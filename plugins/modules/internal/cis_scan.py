#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_scan
short_description: Read-mostly CIS checks in one pass, including the single filesystem walk
version_added: 0.1.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Takes a whole table of controls whose evaluation reads the system and returns one result per control.
  - The world-writable, unowned and SUID/SGID controls share ONE walk of the local filesystems, which prunes
    O(prune) (container storage, C(/proc), C(/sys), C(/dev), C(/run)) and every mount of a pseudo or remote
    filesystem. It never descends into image layers.
  - "Checks: C(world_writable) (fixes: removes o+w from files, sets the sticky bit on directories), C(unowned),
    C(suid_sgid) (listed for review), C(mount) (C(path), C(options), C(separate); the options must be live and in the
    path's fstab entry; fixes: remount and the fstab entry, a new entry for a tmpfs such as C(/tmp) of tmp.mount; a
    mount fixed live that cannot be persisted stays C(failed)), C(aide_scheduled) (an enabled AIDE timer or a cron
    entry running C(aide --check); fixes: enables the packaged timer, else writes C(/etc/cron.d/cis-aide)),
    C(accounts) (C(test), one of the account database tests), C(regex_absent) and C(regex_present) (C(paths),
    C(pattern)), C(command) (C(argv), C(expect) or C(expect_absent)), C(local_only) (C(port)), C(shell_less_locked)
    (accounts whose shell is not in C(/etc/shells) are locked; fixes: C(usermod -L)), C(unused_fs_modules) (C(keep):
    every filesystem of the running kernel, a directory of its kernel/fs, is mounted, disabled in modprobe.d by
    install and blacklist lines, or kept) and C(listeners_have_rules) (C(family) 4 or 6: every TCP and UDP port open
    beyond loopback is named by a rule of INPUT or a chain it jumps to)."
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  controls:
    description:
      - The table. Each control has C(id), C(check) and the check's parameters.
      - C(waived) (a reason) evaluates the control without changing it and reports it C(waived).
      - C(ipv6) (true) reports the control C(not_applicable) on a host without IPv6 (no address in
        C(/proc/net/if_inet6)).
    type: list
    elements: dict
    required: true
  prune:
    description: Paths the walk never enters.
    type: list
    elements: path
    default: [/proc, /sys, /dev, /run, /var/lib/docker, /var/lib/containerd, /var/lib/ecs, /var/lib/containers]
extends_documentation_fragment:
  - guardrail.ecs.cis_table
notes:
  - Check mode evaluates and reports like O(audit_only).
"""

EXAMPLES = r"""
- name: 6.1.11, 6.1.12, 6.1.13, 6.2.9 | One scan
  guardrail.ecs.internal.cis_scan:
    controls:
      - {id: "6.1.11", check: world_writable}
      - {id: "6.1.12", check: unowned}
      - {id: "6.1.13", check: suid_sgid}
      - {id: "6.2.9", check: accounts, test: uid0_only}
"""

RETURN = r"""
results:
  description: One result per control.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "6.2.9"
      status: pass
      evidence: "UID 0 accounts besides root: none"
scan:
  description: The filesystem walk, when a control needed it. C(null) otherwise.
  returned: always
  type: dict
  sample:
    entries: 21234
    seconds: 0.8
    pruned: [/proc, /run, /sys, /var/lib/docker]
    suid_sgid: [/usr/bin/passwd, /usr/bin/su]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import run_table_module
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.scan import DEFAULT_PRUNE, apply


def main():
    run_table_module(
        AnsibleModule,
        dict(prune=dict(type="list", elements="path", default=list(DEFAULT_PRUNE))),
        lambda p, check_mode: apply(p["controls"], p["prune"], p["audit_only"], check_mode),
        returns=("scan",), check_mode_changes=False)


if __name__ == "__main__":
    main()
