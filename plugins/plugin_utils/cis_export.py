# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's compliance report in the formats an auditor's tools read.

- CSV: one row per control (benchmark, rule id, title, profile, Automated/Manual,
  status, evidence, reason, timestamp).
- XCCDF 1.2: a Benchmark holding one Rule per control, the Profile of the run's level
  and the run's TestResult (one rule-result per control, with the evidence and the
  reason as messages), as NIST IR 7275 rev 4 lays it out and OpenSCAP reads it.
"""
from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET

XCCDF_NS = "http://checklists.nist.gov/xccdf/1.2"
DC_NS = "http://purl.org/dc/elements/1.1/"
# The platform each benchmark is written for, as a CPE name.
PLATFORMS = {
    "debian12": "cpe:2.3:o:debian:debian_linux:12:*:*:*:*:*:*:*",
    "al2": "cpe:2.3:o:amazon:amazon_linux:2:*:*:*:*:*:*:*",
    "al2023": "cpe:2.3:o:amazon:amazon_linux:2023:*:*:*:*:*:*:*",
}
# The reverse-DNS part of every XCCDF id this collection writes.
ID_OWNER = "ecs.guardrail"
CSV_FIELDS = ("benchmark", "rule_id", "title", "profile", "assessment", "status", "evidence", "reason", "timestamp")
# Our statuses as XCCDF results: a waived control is tailored out of the run's profile (the reason
# says why); pending_reboot is compliant on disk but not live, which is a failure until the reboot.
XCCDF_RESULTS = {
    "pass": "pass",
    "fixed": "fixed",
    "failed": "fail",
    "pending_reboot": "fail",
    "not_applicable": "notapplicable",
    "waived": "notselected",
}
# Characters XML 1.0 cannot carry (command output may hold them).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NAME = re.compile(r"[^A-Za-z0-9.-]")


def profile_name(level):
    return "Level %s - Server" % level


def assessment(benchmark, control_id, manual_ids):
    """Automated or Manual, as the benchmark marks the recommendation."""
    return "Manual" if control_id in manual_ids.get(str(benchmark), ()) else "Automated"


def to_csv(doc, manual_ids):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    benchmark = "%s %s" % (doc.get("benchmark_name", ""), doc.get("benchmark_version", ""))
    for row in doc["controls"]:
        writer.writerow([benchmark.strip(), row["id"], row["title"], profile_name(row["level"]),
                         assessment(doc.get("benchmark"), row["id"], manual_ids), row["status"],
                         row.get("evidence", ""), row.get("reason", ""), doc["generated"]])
    return out.getvalue()


def _xid(kind, name):
    return "xccdf_%s_%s_%s" % (ID_OWNER, kind, _NAME.sub("_", str(name)))


def _text(value):
    return _NOT_XML.sub("?", str(value or ""))


def _sub(parent, tag, text=None, **attrs):
    node = ET.SubElement(parent, "{%s}%s" % (XCCDF_NS, tag), {k.replace("_", "-"): str(v) for k, v in attrs.items()})
    if text is not None:
        node.text = _text(text)
    return node


def score(rows):
    """The default model's score: passing share of the scored (pass, fixed or fail) results, 0-100."""
    results = [XCCDF_RESULTS.get(r["status"], "unknown") for r in rows]
    scored = [r for r in results if r in ("pass", "fixed", "fail")]
    return 100.0 * sum(1 for r in scored if r != "fail") / len(scored) if scored else 100.0


def to_xccdf(doc, started, manual_ids):
    """The report as an XCCDF 1.2 Benchmark with its TestResult (a string of XML)."""
    ET.register_namespace("", XCCDF_NS)
    ET.register_namespace("dc", DC_NS)
    benchmark = str(doc.get("benchmark") or "site")
    level = doc.get("level") or 1
    root = ET.Element("{%s}Benchmark" % XCCDF_NS, {"id": _xid("benchmark", benchmark), "resolved": "1",
                                                   "{http://www.w3.org/XML/1998/namespace}lang": "en"})
    _sub(root, "status", "accepted", date=doc["generated"][:10])
    _sub(root, "title", doc.get("benchmark_name") or benchmark)
    _sub(root, "description", "Results of guardrail.ecs.cis_hardening %s on %s"
         % (doc.get("collection_version", ""), doc["host"]))
    if benchmark in PLATFORMS:
        _sub(root, "platform", idref=PLATFORMS[benchmark])
    _sub(root, "version", doc.get("benchmark_version") or "unknown")
    metadata = _sub(root, "metadata")
    ET.SubElement(metadata, "{%s}creator" % DC_NS).text = "guardrail.ecs cis_hardening"
    ET.SubElement(metadata, "{%s}source" % DC_NS).text = _text(doc.get("benchmark_name") or benchmark)
    profile = _sub(root, "Profile", id=_xid("profile", "level%s_server" % level))
    _sub(profile, "title", profile_name(level))
    for row in doc["controls"]:
        _sub(profile, "select", idref=_xid("rule", row["id"]),
             selected="false" if row["status"] == "waived" else "true")
    for row in doc["controls"]:
        rule = _sub(root, "Rule", id=_xid("rule", row["id"]), selected="true",
                    role="unscored" if assessment(benchmark, row["id"], manual_ids) == "Manual" else "full")
        _sub(rule, "title", "%s %s" % (row["id"], row["title"]))
        _sub(rule, "description", "CIS %s, section %s, %s (%s)" % (
            row["id"], row["section"], profile_name(row["level"]), assessment(benchmark, row["id"], manual_ids)))
    result = _sub(root, "TestResult", id=_xid("testresult", "%s_%s" % (doc["host"], doc["generated"])),
                  start_time=started, end_time=doc["generated"], version=doc.get("benchmark_version") or "unknown",
                  test_system="cpe:/a:guardrail:ecs:%s" % doc.get("collection_version", ""))
    _sub(result, "title", "guardrail.ecs cis_hardening on %s" % doc["host"])
    if doc.get("audit_only") or doc.get("check_mode"):
        _sub(result, "remark", "audit only: nothing was changed")
    _sub(result, "profile", idref=_xid("profile", "level%s_server" % level))
    _sub(result, "target", doc["host"])
    facts = _sub(result, "target-facts")
    _sub(facts, "fact", doc["host"], name="urn:xccdf:fact:asset:identifier:host_name", type="string")
    if doc.get("os"):
        _sub(facts, "fact", doc["os"], name="urn:xccdf:fact:asset:identifier:os_name", type="string")
    for row in doc["controls"]:
        rule_result = _sub(result, "rule-result", idref=_xid("rule", row["id"]), time=doc["generated"],
                           role="unscored" if assessment(benchmark, row["id"], manual_ids) == "Manual" else "full")
        _sub(rule_result, "result", XCCDF_RESULTS.get(row["status"], "unknown"))
        if row.get("reason"):
            _sub(rule_result, "message", row["reason"], severity="info")
        if row.get("evidence"):
            _sub(rule_result, "message", row["evidence"], severity="info")
        if row["status"] == "pending_reboot":
            _sub(rule_result, "message", "set on disk; the live value changes at the next boot", severity="warning")
    _sub(result, "score", "%.6f" % score(doc["controls"]), system="urn:xccdf:scoring:default", maximum="100.000000")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
