#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: iptables_chains
short_description: Own a few iptables chains, and their jumps, on a host whose other rules belong to others
version_added: 0.1.0
description:
  - Loads the rules of the chains it owns with C(iptables-restore --noflush), one table per load,
    so Docker's, ecs-init's and the administrator's rules stay untouched.
  - Places each jump into an owned chain ahead of the first rule of the chain it sits in that could drop
    traffic (target DROP, REJECT or RETURN, or a jump to a chain holding a DROP or REJECT, such as a
    log-and-drop chain), so the owned rules work under a default-deny firewall. A jump already ahead of
    every such rule stays where it is; duplicates are removed. RV(placements) says where each jump is.
  - A table that iptables has not created yet (nf_tables creates tables on first use) is created with its
    built-in chains.
  - Compares with C(iptables-save) first and loads nothing when the host already holds the rules,
    so a second run reports no change.
  - When iptables refuses a table, the tables already loaded by this run are put back as they were,
    and the module fails with iptables' own message; the previous rules stay in place.
  - With O(path), merges the same chains and jumps into an iptables-save file that the host restores
    at boot, leaving every other line of that file as it is; nothing else of the live ruleset
    (such as Docker's or ecs-init's rules) is written to it. Chains declared as C(:NAME - [0:0]),
    C(-N NAME) or C(--new-chain NAME) are each declared once.
  - Before anything changes, the whole merged file is loaded for real with C(iptables-restore) inside a
    scratch network namespace (C(unshare --net)); when that load fails, the module fails with the
    loader's message and changes neither the live rules nor the file, so the host never boots with a
    file that does not load.
  - Sets the policies of built-in chains (O(policies)) in the same load as the rules, so a DROP policy
    never lands without the rules that keep the management path open. A policy the live ruleset lost
    while the file O(path) still holds it (the ruleset was flushed or replaced) is set back with a warning.
  - With O(state=absent), deletes the owned chains and the jumps to them, puts the O(policies) back to
    C(ACCEPT), and does the same in O(path); chains only needed (no O(chains[].rules)) stay.
  - IPv4 with C(iptables-save)/C(iptables-restore), IPv6 with C(ip6tables-save)/C(ip6tables-restore)
    (O(iptables_save), O(iptables_restore)).
options:
  chains:
    description: The chains to own or to need, in order; a table's chains are created in this order.
    type: list
    elements: dict
    required: true
    suboptions:
      table:
        description: The table of the chain.
        type: str
        choices: [filter, nat, mangle, raw]
        default: filter
      name:
        description:
          - The chain's name, 1 to 28 characters. Built-in chains cannot be owned; own a chain and jump to it.
        type: str
        required: true
      rules:
        description:
          - The chain's complete rule list, each rule as it follows C(-A <chain>), for example
            C(-d 127.0.0.0/8 -i docker0 -p tcp -m tcp --dport 51679 -j ACCEPT).
          - Rules are compared with C(iptables-save) output after normalising option order, long option
            names, addresses without a mask and the implicit C(-m tcp)/C(-m udp); a rule written in another
            form makes every run report a change, and the module warns with the form to use.
          - Omit it to only need the chain (such as C(DOCKER-USER)), which is then created when missing
            and never flushed.
        type: list
        elements: str
      jump_from:
        description:
          - Chains of the same table that must jump to this chain, ahead of their first terminal rule.
          - A chain listed here must exist or be one of O(chains) without O(chains[].rules).
        type: list
        elements: str
        default: []
      omit_rules_found_in:
        description:
          - Chains of the same table to look in before loading; a rule of O(chains[].rules) that one of
            them already holds (for example the NAT rules ecs-init installs in C(PREROUTING)) is left out,
            so it is not there twice.
        type: list
        elements: str
        default: []
  policies:
    description:
      - "Policies of built-in chains of the C(filter) table, such as C({INPUT: DROP, FORWARD: DROP})."
      - Each is C(ACCEPT) or C(DROP); chains not named keep theirs.
    type: dict
    default: {}
  state:
    description:
      - V(present) loads the chains, jumps and policies; V(absent) removes the owned chains and their jumps,
        and sets O(policies) back to C(ACCEPT).
    type: str
    choices: [present, absent]
    default: present
  path:
    description:
      - An iptables-save file restored at boot (C(/etc/iptables/rules.v4), C(/etc/sysconfig/iptables))
        to merge the chains and jumps into. Created with mode 0600 when missing.
    type: path
  iptables_save:
    description: The iptables-save command to read the live rules with.
    type: str
    default: iptables-save
  iptables_restore:
    description: The iptables-restore command to load rules with.
    type: str
    default: iptables-restore
  unshare:
    description: The unshare command (util-linux) that gives the proof load of O(path) its own network namespace.
    type: str
    default: unshare
attributes:
  check_mode:
    support: full
    description: Reads the live rules and the file and reports what would change; loads and writes nothing.
  diff_mode:
    support: full
    description: Shows the owned chains and the chains holding the jumps, and the file, before and after.
notes:
  - Requires root and C(iptables-save)/C(iptables-restore) (legacy or nf_tables); with O(path), C(unshare).
seealso:
  - name: The role guardrail.ecs.agent_firewall
    description: Uses this module to let ECS tasks reach the agent through a CIS-hardened firewall.
    link: https://github.com/guardrail-ecs/guardrail.ecs/blob/main/roles/agent_firewall/README.md
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
"""

EXAMPLES = r"""
- name: Let tasks on docker0 reach the ECS agent, ahead of the host's DROP rules, and keep it at boot
  guardrail.ecs.iptables_chains:
    chains:
      - name: AGENT-FW-INPUT
        rules:
          - -d 127.0.0.0/8 -i docker0 -p tcp -m tcp --dport 51679 -j ACCEPT
        jump_from: [INPUT]
    path: /etc/iptables/rules.v4

- name: Keep bridge-mode tasks away from the instance metadata service
  guardrail.ecs.iptables_chains:
    chains:
      - name: DOCKER-USER
        jump_from: [FORWARD]
      - name: AGENT-FW-DOCKER
        rules:
          - -d 169.254.169.254/32 -i docker+ -j DROP
        jump_from: [DOCKER-USER]

- name: Default-deny for IPv6, keeping loopback and established connections
  guardrail.ecs.iptables_chains:
    iptables_save: ip6tables-save
    iptables_restore: ip6tables-restore
    path: /etc/iptables/rules.v6
    policies: {INPUT: DROP, FORWARD: DROP}
    chains:
      - name: AGENT-FW-INPUT
        rules:
          - -i lo -j ACCEPT
          - -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        jump_from: [INPUT]

- name: Take the chains away again, with their jumps, live and in the boot file
  guardrail.ecs.iptables_chains:
    state: absent
    path: /etc/iptables/rules.v4
    policies: {INPUT: DROP}
    chains:
      - name: AGENT-FW-INPUT
        rules: []

- name: Send 169.254.170.2:80 to the agent unless ecs-init already does
  guardrail.ecs.iptables_chains:
    chains:
      - table: nat
        name: AGENT-FW-PREROUTING
        rules:
          - -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679
        jump_from: [PREROUTING]
        omit_rules_found_in: [PREROUTING]
"""

RETURN = r"""
commands:
  description: Per table, the commands loaded (or, in check mode, that would be loaded) with C(iptables-restore --noflush).
  returned: always
  type: dict
  sample: {"filter": ["-N AGENT-FW-INPUT", "-A AGENT-FW-INPUT -i docker0 -j ACCEPT", "-I INPUT 2 -j AGENT-FW-INPUT"]}
omitted_rules:
  description: Rules left out because a chain in O(chains[].omit_rules_found_in) already holds them.
  returned: always
  type: list
  elements: dict
  sample: [{"table": "nat", "chain": "AGENT-FW-PREROUTING", "found_in": "PREROUTING",
            "rule": "-d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679"}]
chains:
  description:
    - The chains as loaded, in the order of O(chains); C(rules) is what the chain holds once the rules found
      elsewhere (RV(omitted_rules)) are left out, or null for a chain that is only needed.
  returned: always
  type: list
  elements: dict
  sample: [{"table": "filter", "name": "AGENT-FW-INPUT", "jump_from": ["INPUT"],
            "rules": ["-d 127.0.0.0/8 -i docker0 -p tcp -m tcp --dport 51679 -j ACCEPT"]}]
placements:
  description:
    - Where each jump sits after the run (1-based C(position) in C(chain)), and the first rule that could
      drop traffic it is ahead of (C(ahead_of), null when no such rule follows).
  returned: always
  type: list
  elements: dict
  sample: [{"table": "filter", "chain": "INPUT", "jump": "AGENT-FW-INPUT", "position": 3, "ahead_of": "-j LOGDROP"}]
policies:
  description: The policies changed (or, in check mode, that would be changed), with the live policy before.
  returned: always
  type: list
  elements: dict
  sample: [{"table": "filter", "chain": "INPUT", "before": "ACCEPT", "after": "DROP"}]
path_changed:
  description: Whether the file in O(path) was (or, in check mode, would be) rewritten.
  returned: always
  type: bool
  sample: false
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.guardrail.ecs.plugins.module_utils.firewall import iptables


def _specs(params):
    return [
        iptables.ChainSpec(table=c["table"], name=c["name"], rules=c["rules"],
                           jump_from=c["jump_from"], omit_rules_found_in=c["omit_rules_found_in"])
        for c in params["chains"]
    ]


def _write(module, path, text):
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".iptables_chains.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    existed = os.path.exists(path)
    module.atomic_move(tmp, path)
    if not existed:
        # atomic_move gives a new file the umask's mode; the rules file is root's alone.
        os.chmod(path, 0o600)


def _lost_policies(the_plan, old_text, state):
    """Policy changes that put back what the boot file already held."""
    if not old_text or state != "present":
        return []
    try:
        saved = iptables.parse_save(old_text)
    except iptables.IptablesError:
        return []
    return [change for change in the_plan.policies
            if getattr(saved.get(change["table"], {}).get(change["chain"]), "policy", None) == change["after"]]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            chains=dict(type="list", elements="dict", required=True, options=dict(
                table=dict(type="str", default="filter", choices=list(iptables.TABLES)),
                name=dict(type="str", required=True),
                rules=dict(type="list", elements="str"),
                jump_from=dict(type="list", elements="str", default=[]),
                omit_rules_found_in=dict(type="list", elements="str", default=[]),
            )),
            policies=dict(type="dict", default={}),
            state=dict(type="str", default="present", choices=list(iptables.STATES)),
            path=dict(type="path"),
            iptables_save=dict(type="str", default="iptables-save"),
            iptables_restore=dict(type="str", default="iptables-restore"),
            unshare=dict(type="str", default="unshare"),
        ),
        supports_check_mode=True,
    )
    save_bin = module.get_bin_path(module.params["iptables_save"], required=True)
    restore_bin = module.get_bin_path(module.params["iptables_restore"], required=True)
    specs = _specs(module.params)
    path = module.params["path"]
    state = module.params["state"]
    policies = {"filter": module.params["policies"]} if module.params["policies"] else {}
    result = dict(changed=False, commands={}, omitted_rules=[], chains=[], placements=[], policies=[],
                  path_changed=False)
    try:
        live = iptables.read_live(save_bin)
        the_plan = iptables.plan(live, specs, policies, state)
        old_text = None
        new_text = None
        if path:
            if os.path.isdir(path):
                module.fail_json(msg="path %s is a directory; give the rules file" % path, **result)
            old_text = ""
            if os.path.exists(path):
                with open(path) as handle:
                    old_text = handle.read()
            new_text = iptables.merge_save_file(old_text, specs, the_plan.effective_rules, policies, state)
            unshare_bin = module.get_bin_path(module.params["unshare"], required=True)
            iptables.prove_loads(new_text, path, restore_bin, unshare_bin)
    except iptables.IptablesError as exc:
        module.fail_json(msg=to_native(exc), **result)

    result["commands"] = the_plan.commands()
    result["omitted_rules"] = the_plan.omitted
    result["placements"] = the_plan.placements
    result["policies"] = the_plan.policies
    result["chains"] = [
        dict(table=spec.table, name=spec.name, jump_from=spec.jump_from,
             rules=None if spec.rules is None else the_plan.effective_rules.get((spec.table, spec.name), []))
        for spec in specs
    ]
    result["path_changed"] = bool(path) and new_text != old_text
    result["changed"] = the_plan.changed or result["path_changed"]
    if module._diff:
        diffs = [dict(before_header="iptables (live)", after_header="iptables (live)",
                      before=the_plan.before_text(), after=the_plan.after_text())]
        if path:
            diffs.append(dict(before_header=path, after_header=path, before=old_text, after=new_text))
        result["diff"] = diffs

    for lost in _lost_policies(the_plan, old_text, state):
        module.warn("the live policy of %s was %s, not %s as in %s (the ruleset was flushed or replaced): "
                    "set back to %s" % (lost["chain"], lost["before"], lost["after"], path, lost["after"]))
    if module.check_mode:
        module.exit_json(**result)
    try:
        iptables.apply(the_plan, restore_bin)
    except iptables.IptablesError as exc:
        module.fail_json(msg=to_native(exc), **result)
    if the_plan.changed:
        try:
            loaded = iptables.read_live(save_bin)
        except iptables.IptablesError as exc:
            module.fail_json(msg="the rules were loaded, but reading them back failed: %s" % to_native(exc), **result)
        for given, saved in iptables.unsaved_forms(loaded, the_plan):
            module.warn("iptables saves the rule %r as %r; write it that way, or every run reports a change"
                        % (given, saved))
    if result["path_changed"]:
        _write(module, path, new_text)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
