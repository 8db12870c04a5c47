#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_lines
short_description: Configuration lines for a table of CIS controls, across many files at once
version_added: 0.1.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Takes a whole table of controls, each with the configuration lines it requires (sshd drop-in, login.defs,
    PAM, journald, auditd.conf, audit rules, modprobe.d, limits, sudoers and the like), edits every file once,
    and returns one result per control.
  - A file with a C(validate) command is checked after writing and restored when the check fails, so a
    broken sshd or sudoers file never stays in place. C(on_change) commands (reloads) run once per changed file.
  - Audit rules with C(-F arch=) and C(-S) are fitted to the host's syscall tables (C(ausyscall <arch> --dump)),
    so there is no C(arch=b32) rule on aarch64 and no syscall the table lacks (C(open), C(creat), C(chmod), C(chown),
    C(rename), C(unlink) on aarch64); a rule left with no syscall is left out and removed if an earlier run wrote it.
  - Kernel arguments in C(/etc/default/grub) are edited token by token and compared with C(/proc/cmdline);
    a control whose arguments are not live yet is C(pending_reboot).
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  controls:
    description:
      - The table. Each control has C(id) and C(lines), a list of items, each one of
        C({path, key, value}) (optional C(separator), default a space; C(ignore_case); C(compare) V(le) or V(ge)
        to accept a stricter number), C({path, line}) (optional C(match), a regex naming the lines it replaces),
        C({path, absent}) (a regex no active line may match; C(path) may be a glob),
        C({path, match, absent_arg}) (an argument no active line matching C(match) may hold; the line stays),
        C({kmod}) (the kernel module is disabled in O(modprobe_file) and not loaded),
        C({path, grub_arg}) (an argument of C(GRUB_CMDLINE_LINUX)) or C({command, expect}) (the command's output
        must match the regex after all writes; C(fix), a command run when it does not).
      - Items whose value several places decide. C({effective, value, path}) is the key C(effective) as the program
        uses it, read from C(main), then the C(*.conf) drop-ins of C(dirs) by name (highest priority directory
        first), then the arguments of the PAM module C(pam.module) in the files C(pam.paths); C(flag) for a bare
        keyword, C(default) when nothing sets it. The fix sets it in C(path), removes a weaker value from files
        read later and from the PAM lines, and hides a weaker drop-in outside the first directory with a copy of
        the same name there.
      - C({sudo_default, value, path}) is a sudoers C(Defaults) parameter, read from C(sudoers) and its includes
        (the last global one wins; every scoped one counts); the fix sets it in C(path) and removes weaker ones
        from the other files, each validated with C(validate) (default C(visudo -cf)). With C(flag=true) instead of
        C(value) it is a boolean parameter that must be on, and C(!name) is weaker.
      - C({sshd, expect}) runs C(sshd) (an argv) with C(-C) for root, a normal user and a connection matching
        each C(Match) block of C(config); each output must match C(expect).
      - C(key), C(effective) and C(sudo_default) take C(compare) V(le) or V(ge), C(min), a number below which
        the value fails (-1 meaning never), and C(also), a list of numbers that pass besides (faillock's
        C(unlock_time=0)). A number is read as programs read it, from its leading digits.
      - An item with C(requires) (a path) is not applicable when that path does not exist.
      - C(waived) (a reason) evaluates the control without changing it and reports it C(waived).
    type: list
    elements: dict
    required: true
  files:
    description:
      - Per-file settings, a list of C(path) with C(mode) of the file (kept on every run), C(header) (lines a new file starts with),
        C(validate) (argv, C(%s) is the path) and C(on_change) (a list of argv run once when the file changed).
    type: list
    elements: dict
    default: []
  per_path_values:
    description:
      - Paths for controls with C(per_path) (C({path, line}), C({path}) in the line standing for each value),
        for example the SUID/SGID files found by M(guardrail.ecs.internal.cis_scan) for the privileged-command audit rules.
    type: list
    elements: str
    default: []
  modprobe_file:
    description: The modprobe.d file for C(kmod) items.
    type: path
    default: /etc/modprobe.d/cis-hardening.conf
  modprobe_unload:
    description: Unload a disabled module that is loaded. False inside a container, whose kernel is the machine's.
    type: bool
    default: true
  audit_only:
    description: Evaluate only; change nothing.
    type: bool
    default: false
notes:
  - Check mode evaluates and reports like O(audit_only), and returns C(changed) when enforcing would change the host.
  - Diff mode shows every file that would change.
"""

EXAMPLES = r"""
- name: 4.2.7, 1.1.1.3 | Configuration lines
  guardrail.ecs.internal.cis_lines:
    files:
      - path: /etc/ssh/sshd_config.d/00-cis-hardening.conf
        mode: "0600"
        validate: [/usr/sbin/sshd, -t]
        on_change:
          - [systemctl, try-reload-or-restart, ssh.service]
    controls:
      - id: "4.2.7"
        lines:
          - {path: /etc/ssh/sshd_config.d/00-cis-hardening.conf, key: PermitRootLogin, value: "no"}
      - id: "1.1.1.3"
        lines:
          - kmod: cramfs
"""

RETURN = r"""
results:
  description: One result per control.
  returned: always
  type: list
  elements: dict
  sample:
    - id: "4.2.7"
      status: fixed
      evidence: "/etc/ssh/sshd_config.d/00-cis-hardening.conf: PermitRootLogin unset"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.lines import apply


def main():
    module = AnsibleModule(
        argument_spec=dict(
            controls=dict(type="list", elements="dict", required=True),
            files=dict(type="list", elements="dict", default=[]),
            modprobe_file=dict(type="path", default="/etc/modprobe.d/cis-hardening.conf"),
            modprobe_unload=dict(type="bool", default=True),
            per_path_values=dict(type="list", elements="str", default=[]),
            audit_only=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        results, changed, diffs = apply(p["controls"], p["files"], p["modprobe_file"], p["modprobe_unload"],
                                        p["audit_only"], module.check_mode,
                                        per_path_values=p["per_path_values"])
    except (CisError, OSError) as exc:
        module.fail_json(msg=str(exc))
    out = dict(changed=changed, results=results)
    if module._diff and diffs:
        out["diff"] = diffs
    module.exit_json(**out)


if __name__ == "__main__":
    main()
