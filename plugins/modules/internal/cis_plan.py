#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin of the same name, on the controller; this file documents it.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_plan
short_description: Pick the CIS controls of a run from a catalogue
version_added: 0.1.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Runs on the controller only (no remote execution). Splits a control catalogue into one table per module
    kind (C(sysctl), C(lines), C(files), C(services), C(scan), C(pam)) for the benchmark and level.
  - A variable C(cis_hardening_rule_<id with underscores>) set to false turns a control off; it is then
    reported C(waived) with that variable as the reason.
  - Honours C(--tags) and C(--skip-tags) per control, although the tasks that carry the tables are tagged
    C(always) - each control has the tags C(rule_<id>), C(rule_<id with underscores>), C(section<N>),
    C(level1-server) and/or C(level2-server), C(cis_hardening) and C(cis_<kind>).
  - Controls with a C(not_applicable) reason are decided here and not sent to the host.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  catalogue:
    description:
      - The control catalogue as a list of resolved rows (no parameter references). Exactly one of O(catalogue)
        and O(catalogue_dir) is required.
    type: list
    elements: dict
  catalogue_dir:
    description:
      - "A directory of catalogue files, as the role's C(catalogue/) - C(manifest-<benchmark>.yml) lists the section
        files the benchmark reads; each row's C({param: name}) references are replaced by the values of those
        variables on the controller before anything else."
    type: path
  benchmark:
    description: Which benchmark's ids to use.
    type: str
    choices: [al2023, al2, debian12]
    required: true
  extra:
    description:
      - Site controls appended to the catalogue, rows of the same shape. An id the catalogue already has for
        the benchmark is refused (change that control with O(overrides)).
    type: list
    elements: dict
  overrides:
    description:
      - Per control id of the benchmark, the fields to change - C(title), C(level), C(assessment), C(kind), C(settings),
        C(not_applicable), C(waived), C(waived_by). C(settings) is merged key by key (mappings recursively,
        lists replaced); the other fields are replaced.
      - The catalogue with O(extra) and O(overrides) merged in is validated before anything is picked; an error
        names the row (where it comes from, its index and id) and the field.
    type: dict
  level:
    description: The profile, Level 1 or Level 2 server (Level 2 includes Level 1).
    type: int
    choices: [1, 2]
    required: true
"""

EXAMPLES = r"""
- name: Pick the controls of this run
  guardrail.ecs.internal.cis_plan:
    catalogue_dir: "{{ role_path }}/catalogue"
    benchmark: al2023
    level: 2
  register: cis_hardening_plan
"""

RETURN = r"""
tables:
  description: The rows for each module kind.
  returned: always
  type: dict
  sample: {sysctl: [{id: "3.3.8", settings: {net.ipv4.tcp_syncookies: 1}}], lines: [], files: [], services: [], scan: [], pam: []}
benchmark:
  description: The benchmark of the run, with the name and version its ids come from.
  returned: always
  type: dict
  sample: {id: debian12, name: CIS Debian Linux 12 Benchmark, version: v1.1.0}
decided:
  description: Results decided on the controller (turned off, not applicable).
  returned: always
  type: list
  elements: dict
  sample: [{id: "1.1.2.1", status: not_applicable, evidence: not evaluated, reason: "mounts belong to the container runtime"}]
controls:
  description: Id, title, level, assessment (Automated or Manual), section, kind and tags of every selected control.
  returned: always
  type: list
  elements: dict
  sample: [{id: "3.3.8", title: Ensure TCP SYN Cookies is enabled, level: 1, assessment: Automated, section: "3", kind: sysctl}]
selected:
  description: How many controls the run covers.
  returned: always
  type: int
  sample: 212
"""
