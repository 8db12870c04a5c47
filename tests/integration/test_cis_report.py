"""The controller side of cis_hardening through ansible-playbook: cis_plan honours
--tags and rule toggles per control, cis_report writes the host and fleet pages."""
import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import STATUSES
from conftest import ROOT, VENV_BIN, ansible_env

TEMPLATES = ROOT / "roles" / "cis_hardening" / "templates"
PLAYBOOK = """
- hosts: all
  connection: local
  gather_facts: false
  vars:
    catalogue:
      - {id: {al2023: "3.2.1", al2: "3.3.1"}, title: Ensure IP forwarding is disabled, level: 1, kind: sysctl,
         waived: Docker needs it, waived_by: cis_hardening_keep_ip_forward, settings: {settings: {net.ipv4.ip_forward: 0}}}
      - {id: {al2023: "4.2.7"}, title: Ensure SSH root login is disabled, level: 1, kind: lines,
         settings: {lines: [{path: /x, key: PermitRootLogin, value: "no"}]}}
      - {id: {al2023: "3.1.2"}, title: Ensure DCCP is disabled, level: 2, kind: lines, settings: {lines: [{kmod: dccp}]}}
      - {id: {al2023: "1.9"}, title: Ensure crypto policy is not legacy, level: 1, kind: scan, not_applicable: no policy here,
         settings: {check: command, argv: ["true"], expect: ""}}
  tasks:
    - name: Plan
      guardrail.ecs.internal.cis_plan:
        catalogue: "{{ catalogue }}"
        benchmark: al2023
        level: 2
      register: plan
      tags: [always]
    - name: Report
      guardrail.ecs.internal.cis_report:
        controls: "{{ plan.controls }}"
        results:
          - "{{ plan.decided }}"
          - "{{ plan.tables.sysctl | map(attribute='id') | map('community.general.dict_kv', 'id')
               | map('combine', {'status': 'waived', 'evidence': 'live 1', 'reason': plan.tables.sysctl[0].waived}) | list }}"
          - "{{ [{'id': '4.2.7', 'status': 'fixed', 'evidence': 'PermitRootLogin <no> & more'}]
               if plan.tables.lines | selectattr('id', 'equalto', '4.2.7') | list else [] }}"
        report_dir: "{{ report_dir }}"
        host: "{{ inventory_hostname }}"
        benchmark: al2023
        level: 2
        templates: "%s"
      tags: [always]
"""


def play(tmp_path, *args, hosts="web-1,web-2,", extra=None):
    book = tmp_path / "play.yml"
    book.write_text(PLAYBOOK % TEMPLATES)
    extra = dict({"report_dir": str(tmp_path / "reports")}, **(extra or {}))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", hosts, str(book), "-e", json.dumps(extra), *args],
                          cwd=tmp_path, env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json"),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((tmp_path / "reports" / "web-1.json").read_text())


def test_report_files_and_fleet_page(tmp_path):
    report = play(tmp_path)
    by_id = {c["id"]: c for c in report["controls"]}
    assert sorted(by_id) == ["1.9", "3.1.2", "3.2.1", "4.2.7"]
    assert by_id["3.2.1"]["status"] == "waived" and "cis_hardening_keep_ip_forward" in by_id["3.2.1"]["reason"]
    assert by_id["1.9"]["status"] == "not_applicable" and by_id["1.9"]["reason"] == "no policy here"
    assert by_id["3.1.2"]["status"] == "failed"  # no result: reported, never dropped
    assert report["summary"]["statuses"] == {"waived": 1, "not_applicable": 1, "failed": 1, "fixed": 1}
    html = (tmp_path / "reports" / "web-1.html").read_text()
    assert "PermitRootLogin &lt;no&gt; &amp;" in html  # evidence is escaped
    assert "<svg" in html and "Section 3" in html
    index = (tmp_path / "reports" / "index.html").read_text()
    assert 'href="web-1.html"' in index and 'href="web-2.html"' in index
    assert (tmp_path / "reports" / "web-2.json").exists()


def test_tags_select_single_rows(tmp_path):
    report = play(tmp_path, "--tags", "rule_4.2.7", hosts="web-1,")
    assert [c["id"] for c in report["controls"]] == ["4.2.7"]
    report = play(tmp_path, "--skip-tags", "section3", hosts="web-1,")
    assert [c["id"] for c in report["controls"]] == ["1.9", "4.2.7"]
    report = play(tmp_path, "--tags", "level1-server", hosts="web-1,")
    assert "3.1.2" not in [c["id"] for c in report["controls"]]


def test_rule_variable_turns_a_control_off(tmp_path):
    report = play(tmp_path, hosts="web-1,", extra={"cis_hardening_rule_4_2_7": False})
    row = next(c for c in report["controls"] if c["id"] == "4.2.7")
    assert row["status"] == "waived" and "cis_hardening_rule_4_2_7: false" in row["reason"]


def test_bad_toggle_is_refused(tmp_path):
    book = tmp_path / "play.yml"
    book.write_text(PLAYBOOK % TEMPLATES)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "web-1,", str(book), "-e",
                           json.dumps({"report_dir": str(tmp_path / "r"), "cis_hardening_rule_4_2_7": "maybe"})],
                          cwd=tmp_path, env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and "cis_hardening_rule_4_2_7 must be true or false" in proc.stdout
    assert not (tmp_path / "r").exists()
    assert os.path.isdir(tmp_path)
    assert Path(book).exists()


EVIDENCE_PLAYBOOK = """
- hosts: all
  connection: local
  gather_facts: false
  vars:
    catalogue:
      - {id: {debian12: "1.1.1.1"}, title: Ensure cramfs kernel module is not available, level: 1, kind: lines,
         settings: {lines: [{kmod: cramfs}]}}
      - {id: {debian12: "5.1.20"}, title: Ensure sshd PermitRootLogin is disabled, level: 1, kind: lines,
         settings: {lines: [{path: /x, key: PermitRootLogin, value: "no"}]}}
      - {id: {debian12: "7.1.1"}, title: Ensure permissions on /etc/passwd are configured, level: 1, kind: files,
         settings: {files: [{path: /etc/passwd, mode: "0644"}]}}
      - {id: {debian12: "7.2.2"}, title: Ensure /etc/shadow password fields are not empty, level: 1, kind: scan,
         check_only: the owner locks accounts, settings: {check: accounts, test: empty_password}}
      - {id: {debian12: "6.1.3.4"}, title: Ensure rsyslog log file creation mode is configured, level: 1, kind: lines,
         settings: {lines: [{path: /y, line: $FileCreateMode 0640}]}}
  tasks:
    - name: Plan
      guardrail.ecs.internal.cis_plan:
        catalogue: "{{ catalogue }}"
        benchmark: debian12
        level: 1
      register: plan
    - name: Report
      guardrail.ecs.internal.cis_report:
        controls: "{{ plan.controls }}"
        results:
          - - {id: "1.1.1.1", status: pass, evidence: "cramfs: install /bin/false"}
            - {id: "5.1.20", status: fixed, evidence: "/x: PermitRootLogin", before: "PermitRootLogin yes", after: "PermitRootLogin no"}
            - {id: "7.1.1", status: fixed, evidence: "was /etc/passwd 0666 root:root; now /etc/passwd 0644 root:root"}
            - {id: "7.2.2", status: failed, evidence: "empty password: <svc>"}
            - {id: "6.1.3.4", status: fixed, evidence: "/y: $FileCreateMode 0640: missing"}
        report_dir: "{{ report_dir }}"
        host: "{{ inventory_hostname }}"
        benchmark: debian12
        os: Debian 12.7
        level: 1
        templates: "%s"
"""


class _Rows(HTMLParser):
    """The report's control rows (id, data attributes, text per cell) and its form controls."""

    def __init__(self):
        super().__init__()
        self.rows, self.inputs, self.options, self.tags, self.cell = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and "data-status" in attrs:
            self.rows.append({"id": attrs["id"], "status": attrs["data-status"], "section": attrs["data-section"], "cells": []})
        elif tag == "td" and self.rows:
            self.cell = []
            self.rows[-1]["cells"].append(self.cell)
        elif tag == "input":
            self.inputs.append(attrs)
        elif tag == "option":
            self.options.append(attrs["value"])

    def handle_data(self, data):
        if self.cell is not None and data.strip():
            self.cell.append(data.strip())


def test_html_report_is_audit_evidence(tmp_path):
    book = tmp_path / "play.yml"
    book.write_text(EVIDENCE_PLAYBOOK % TEMPLATES)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "deb-1,", str(book), "-e",
                           json.dumps({"report_dir": str(tmp_path / "reports")})],
                          cwd=tmp_path, env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "reports" / "deb-1.json").read_text())
    version = re.search(r"^version:\s*(\S+)", (ROOT / "galaxy.yml").read_text(), re.M).group(1)
    assert (report["benchmark_name"], report["benchmark_version"], report["os"], report["collection_version"]) == \
        ("CIS Debian Linux 12 Benchmark", "v1.1.0", "Debian 12.7", version)
    html = (tmp_path / "reports" / "deb-1.html").read_text()
    # Header: benchmark with version, host OS, collection version, time.
    assert re.search(r'id="benchmark">CIS Debian Linux 12 Benchmark v1\.1\.0 \(debian12\), Level 1 server<', html)
    assert 'id="os">Debian 12.7<' in html and ">guardrail.ecs %s<" % version in html
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">', html)
    parsed = _Rows()
    parsed.feed(html)
    # Failures first, then fixed, then pass.
    assert [(r["id"], r["status"]) for r in parsed.rows] == [
        ("rule-7.2.2", "failed"), ("rule-5.1.20", "fixed"), ("rule-6.1.3.4", "fixed"), ("rule-7.1.1", "fixed"),
        ("rule-1.1.1.1", "pass")]
    rows = {r["id"]: r for r in parsed.rows}
    assert rows["rule-5.1.20"]["cells"][4] == ["Automated"]  # as the benchmark assesses it
    assert "check only: the owner locks accounts" in rows["rule-7.2.2"]["cells"][7]
    assert "empty password: <svc>" in rows["rule-7.2.2"]["cells"][6]  # escaped text, read back as text
    # A fixed control shows what the host had and what it has.
    assert rows["rule-5.1.20"]["cells"][6][-4:] == ["before", "PermitRootLogin yes", "after", "PermitRootLogin no"]
    assert rows["rule-7.1.1"]["cells"][6][-4:] == ["before", "/etc/passwd 0666 root:root", "after", "/etc/passwd 0644 root:root"]
    # Without them the page says so rather than passing the observation off as the result.
    assert "before" not in rows["rule-6.1.3.4"]["cells"][6] and "recorded no before and after" in " ".join(rows["rule-6.1.3.4"]["cells"][6])
    # Filters: a box per status, the sections, a search field.
    assert sorted(i["value"] for i in parsed.inputs if i.get("name") == "status") == sorted(STATUSES)
    assert parsed.options == ["", "1", "5", "6", "7"] and [r["section"] for r in parsed.rows] == ["7", "5", "6", "7", "1"]
    assert any(i.get("type") == "search" for i in parsed.inputs)
    # One self-contained file: no stylesheet, script or image fetched from anywhere.
    assert not [a for t, a in parsed.tags if t in ("link", "img", "iframe") or (t == "script" and "src" in a)]
    assert not re.search(r"""(src|href)=["']?(https?:)?//|@import|url\(""", html)


# The page's own script, run by node against the rows of the rendered page: the filters hide
# exactly the rows they should. The stand-in document has only what the script touches.
FILTER_HARNESS = r"""
const page = JSON.parse(require("fs").readFileSync(0, "utf8"));
const handlers = [];
const boxes = page.statuses.map((value) => ({ value, checked: true }));
const section = { value: "" }, search = { value: "" }, shown = { textContent: "" };
const rows = page.rows.map((r) => ({ dataset: { status: r.status, section: r.section }, textContent: r.text, hidden: false,
  classList: { toggle(name, on) { if (name === "hidden") { this.owner.hidden = on; } } } }));
rows.forEach((row) => { row.classList.owner = row; });
const form = { querySelectorAll: () => boxes, addEventListener: (kind, fn) => handlers.push(fn) };
global.document = {
  getElementById: (id) => ({ filters: form, section, search, shown }[id]),
  querySelectorAll: (selector) => (selector === "#controls tbody tr" ? rows : []),
};
eval(page.script);
const visible = () => rows.map((row, i) => [page.rows[i].id, !row.hidden]).filter((x) => x[1]).map((x) => x[0]);
const out = { initial: visible() };
boxes.find((b) => b.value === "fixed").checked = false; handlers.forEach((fn) => fn());
out.no_fixed = visible(); out.shown = shown.textContent;
boxes.forEach((b) => { b.checked = true; }); section.value = "7"; handlers.forEach((fn) => fn());
out.section7 = visible();
section.value = ""; search.value = "PermitRootLogin   yes"; handlers.forEach((fn) => fn());
out.search = visible();
process.stdout.write(JSON.stringify(out));
"""


def test_html_filters_hide_the_rows_they_should(tmp_path):
    book = tmp_path / "play.yml"
    book.write_text(EVIDENCE_PLAYBOOK % TEMPLATES)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "deb-1,", str(book), "-e",
                           json.dumps({"report_dir": str(tmp_path / "reports")})],
                          cwd=tmp_path, env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    html = (tmp_path / "reports" / "deb-1.html").read_text()
    parsed = _Rows()
    parsed.feed(html)
    page = {"statuses": list(STATUSES), "script": re.search(r"<script>(.*?)</script>", html, re.S).group(1),
            "rows": [{"id": r["id"][len("rule-"):], "status": r["status"], "section": r["section"],
                      "text": " ".join(" ".join(cell) for cell in r["cells"])} for r in parsed.rows]}
    node = subprocess.run(["node", "-e", FILTER_HARNESS], input=json.dumps(page), capture_output=True, text=True,
                          timeout=60, check=False)
    assert node.returncode == 0, node.stderr
    seen = json.loads(node.stdout)
    assert seen["initial"] == ["7.2.2", "5.1.20", "6.1.3.4", "7.1.1", "1.1.1.1"]
    assert seen["no_fixed"] == ["7.2.2", "1.1.1.1"] and seen["shown"] == "2 of 5 shown"
    assert seen["section7"] == ["7.2.2", "7.1.1"]
    assert seen["search"] == ["5.1.20"]


XCCDF = "{http://checklists.nist.gov/xccdf/1.2}"


def test_every_run_keeps_its_record_with_a_latest_link(tmp_path):
    play(tmp_path, hosts="web-1,")
    play(tmp_path, hosts="web-1,")
    host_dir = tmp_path / "reports" / "runs" / "web-1"
    runs = sorted(p.name for p in host_dir.iterdir() if not p.name.startswith(("latest", ".")))
    assert len(runs) == 2, runs
    latest = host_dir / "latest"
    assert latest.is_symlink() and os.readlink(latest) == runs[-1]
    for run in runs:
        names = sorted(p.name for p in (host_dir / run).iterdir())
        assert names == ["report.csv", "report.html", "report.json", "xccdf-results.xml"]
    first = json.loads((host_dir / runs[0] / "report.json").read_text())
    assert first["summary"]["statuses"]["fixed"] == 1, "the first run's fixes are lost"


def test_csv_export_has_the_auditor_s_columns(tmp_path):
    import csv
    play(tmp_path, hosts="web-1,")
    latest = tmp_path / "reports" / "runs" / "web-1" / "latest"
    rows = list(csv.DictReader((latest / "report.csv").open(encoding="utf-8")))
    assert list(rows[0]) == ["benchmark", "rule_id", "title", "profile", "assessment", "status", "evidence", "reason",
                             "timestamp"]
    by_id = {r["rule_id"]: r for r in rows}
    assert by_id["4.2.7"]["benchmark"] == "CIS Amazon Linux 2023 Benchmark v1.0.0"
    assert by_id["4.2.7"]["evidence"] == "PermitRootLogin <no> & more"
    assert by_id["3.1.2"]["profile"] == "Level 2 - Server" and by_id["4.2.7"]["profile"] == "Level 1 - Server"
    assert {r["assessment"] for r in rows} == {"Automated"}
    assert by_id["1.9"]["reason"] == "no policy here"
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", r["timestamp"]) for r in rows)


def test_xccdf_export_carries_one_rule_result_per_control(tmp_path):
    import xml.etree.ElementTree as ET
    play(tmp_path, hosts="web-1,")
    root = ET.parse(tmp_path / "reports" / "runs" / "web-1" / "latest" / "xccdf-results.xml").getroot()
    assert root.tag == XCCDF + "Benchmark"
    rules = {r.get("id") for r in root.iter(XCCDF + "Rule")}
    results = {r.get("idref"): r.find(XCCDF + "result").text for r in root.iter(XCCDF + "rule-result")}
    assert set(results) == rules and len(rules) == 4
    assert results["xccdf_ecs.guardrail_rule_4.2.7"] == "fixed"
    assert results["xccdf_ecs.guardrail_rule_3.1.2"] == "fail"
    assert results["xccdf_ecs.guardrail_rule_1.9"] == "notapplicable"
    assert results["xccdf_ecs.guardrail_rule_3.2.1"] == "notselected"
    test_result = root.find(XCCDF + "TestResult")
    assert test_result.find(XCCDF + "target").text == "web-1"
    assert test_result.find(XCCDF + "score").text == "50.000000"
