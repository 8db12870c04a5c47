#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin of the same name, on the controller; this file documents it.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cis_report
short_description: Write a host's CIS compliance report and the fleet page
version_added: 0.1.0
description:
  - Internal to the C(guardrail.ecs.cis_hardening) role, which calls it with tables built from its
    catalogue; not a public interface, its options may change in any release.
  - Runs on the controller. Merges the selected controls with the results of the CIS modules and writes
    C(<report_dir>/<host>.json) and a self-contained C(<report_dir>/<host>.html) (inline CSS and SVG, no
    external assets), then C(<report_dir>/index.html) linking every host report found in the directory.
  - Every control carries id, title, section, level, Automated/Manual (as the benchmark assesses it), status,
    evidence and, for waivers and not-applicable controls, the reason. A selected control without a result is
    reported C(failed); a not-applicable result without a reason takes the module's finding as its reason.
  - Every run also keeps its own record in C(<report_dir>/runs/<host>/<UTC time>/) - C(report.json),
    C(report.html), C(report.csv) and C(xccdf-results.xml), an XCCDF 1.2 Benchmark with the run's TestResult -
    and points C(<report_dir>/runs/<host>/latest) at it, so what an earlier run fixed stays on file.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  controls:
    description: The C(controls) returned by M(guardrail.ecs.internal.cis_plan).
    type: list
    elements: dict
    required: true
  results:
    description: Lists of results (of the modules and the plan's C(decided)).
    type: list
    elements: list
    required: true
  report_dir:
    description: Where the reports go, on the controller. A relative path is relative to the current directory.
    type: path
    required: true
  host:
    description: The host name, which names the files.
    type: str
    required: true
  templates:
    description: The directory holding C(report.html.j2) and C(fleet.html.j2).
    type: path
    required: true
  benchmark:
    description: The benchmark id; the report shows it with the benchmark's name and version.
    type: str
  os:
    description: The host's operating system, shown in the report (for example C(Debian 12.7)).
    type: str
  level:
    description: Shown in the report.
    type: int
  audit_only:
    description: Shown in the report.
    type: bool
    default: false
  run:
    description: Extra facts about the run shown in the JSON (for example the scan statistics).
    type: dict
  started:
    description: When the run started (UTC, C(YYYY-MM-DDThh:mm:ssZ)), the XCCDF TestResult's start time.
    type: str
"""

EXAMPLES = r"""
- name: Write the compliance report
  guardrail.ecs.internal.cis_report:
    controls: "{{ cis_hardening_plan.controls }}"
    results:
      - "{{ cis_hardening_plan.decided }}"
      - "{{ cis_hardening_sysctl.results | default([]) }}"
    report_dir: reports
    host: "{{ inventory_hostname }}"
    templates: "{{ role_path }}/templates"
"""

RETURN = r"""
json:
  description: Path of the JSON report.
  returned: always
  type: str
  sample: /work/reports/lab-1.json
html:
  description: Path of the HTML report.
  returned: always
  type: str
  sample: /work/reports/lab-1.html
index:
  description: Path of the fleet page.
  returned: always
  type: str
  sample: /work/reports/index.html
record:
  description: This run's record - its directory, the C(latest) link and the paths of its four files.
  returned: always
  type: dict
  sample: {dir: /work/reports/runs/lab-1/20261206T201500Z, latest: /work/reports/runs/lab-1/latest,
           json: /work/reports/runs/lab-1/20261206T201500Z/report.json,
           html: /work/reports/runs/lab-1/20261206T201500Z/report.html,
           csv: /work/reports/runs/lab-1/20261206T201500Z/report.csv,
           xccdf: /work/reports/runs/lab-1/20261206T201500Z/xccdf-results.xml}
summary:
  description: Counts per status and per section.
  returned: always
  type: dict
  sample: {total: 212, statuses: {pass: 150, fixed: 40}, sections: {"1": {pass: 30}}}
"""
