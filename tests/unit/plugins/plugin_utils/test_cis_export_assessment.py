"""Automated/Manual in the export is what the benchmark says, row by row.

CIS Amazon Linux 2023 v1.0.0 marks each recommendation "(Automated)" or "(Manual)" in its
title; ComplianceAsCode's controls/cis_al2023.yml (version 1.0.0) carries those titles as
published. Below are the Manual ones: the catalogue's rows must carry them as the benchmark
does, not as Debian 12's recommendation of the same title is assessed.
"""
import csv
import io
from pathlib import Path

from ansible_collections.guardrail.ecs.plugins.plugin_utils import cis_catalogue
from ansible_collections.guardrail.ecs.plugins.plugin_utils.cis_export import assessment, to_csv

CATALOGUE = Path(__file__).resolve().parents[4] / "roles" / "cis_hardening" / "catalogue"

AL2023_MANUAL = {
    "1.2.1": "Ensure GPG keys are configured",
    "1.2.3": "Ensure package manager repositories are configured",
    "1.2.4": "Ensure repo_gpgcheck is globally activated",
    "1.8": "Ensure updates, patches, and additional security software are installed",
    "2.4": "Ensure nonessential services listening on the system are removed or masked",
    "3.1.1": "Ensure IPv6 status is identified",
    "3.4.2.5": "Ensure firewalld drops unnecessary services and ports",
    "3.4.2.6": "Ensure nftables established connections are configured",
    "4.4.1": "Ensure custom authselect profile is used",
    "5.1.1.2": "Ensure rsyslog service is enabled",
    "5.1.1.5": "Ensure logging is configured",
    "5.1.2.1.1": "Ensure systemd-journal-remote is installed",
    "5.1.2.1.2": "Ensure systemd-journal-remote is configured",
    "5.1.2.1.3": "Ensure systemd-journal-remote is enabled",
    "5.1.2.5": "Ensure journald is not configured to send logs to rsyslog",
    "5.1.2.6": "Ensure journald log rotation is configured per site policy",
    "5.1.2.7": "Ensure journald default file permissions configured",
    "5.2.3.21": "Ensure the running and on disk configuration is the same",
    "5.3": "Ensure logrotate is configured",
    "6.1.10": "Audit system file permissions",
    "6.1.13": "Ensure SUID and SGID files are reviewed",
}
# Debian 12 assesses this one Manually; CIS Amazon Linux 2023 v1.0.0 assesses it Automated.
AL2023_AUTOMATED_WHERE_DEBIAN_IS_MANUAL = {"5.1.1.6": "Ensure rsyslog is configured to send logs to a remote log host"}


def _for_al2023(value):
    return value.get("al2023") if isinstance(value, dict) else value


def al2023_catalogue():
    """{id: (title, assessment)} of the rows the al2023 manifest reads."""
    rows = {}
    for row in cis_catalogue.load(str(CATALOGUE), "al2023"):
        row_id = _for_al2023(row["id"])
        if row_id:
            rows[str(row_id)] = (_for_al2023(row["title"]), _for_al2023(row.get("assessment")) or "Automated")
    return rows


def al2023_rows():
    return {control_id: title for control_id, (title, _assessment) in al2023_catalogue().items()}


def manual_ids():
    return {"al2023": frozenset(i for i, (_title, kind) in al2023_catalogue().items() if kind == "Manual")}


def test_the_catalogue_carries_these_recommendations_under_the_benchmark_s_ids_and_titles():
    rows = al2023_rows()
    for control_id, title in {**AL2023_MANUAL, **AL2023_AUTOMATED_WHERE_DEBIAN_IS_MANUAL}.items():
        assert rows.get(control_id) == title, (control_id, rows.get(control_id), title)


def test_al2023_rows_are_exported_manual_exactly_where_the_benchmark_says():
    manual = manual_ids()
    wrong = {}
    for control_id, title in al2023_rows().items():
        expected = "Manual" if control_id in AL2023_MANUAL else "Automated"
        exported = assessment("al2023", control_id, manual)
        if exported != expected:
            wrong[control_id] = "%s: exported %s, the benchmark says %s" % (title, exported, expected)
    assert wrong == {}


def test_the_csv_column_follows_the_benchmark():
    doc = {"benchmark": "al2023", "benchmark_name": "CIS Amazon Linux 2023 Benchmark", "benchmark_version": "v1.0.0",
           "generated": "2026-12-06T23:00:00Z",
           "controls": [{"id": i, "title": t, "level": 1, "status": "pass"}
                        for i, t in {**AL2023_MANUAL, **AL2023_AUTOMATED_WHERE_DEBIAN_IS_MANUAL}.items()]}
    column = {row["rule_id"]: row["assessment"] for row in csv.DictReader(io.StringIO(to_csv(doc, manual_ids())))}
    assert len(column) == len(doc["controls"])
    assert {i: a for i, a in column.items() if a != ("Manual" if i in AL2023_MANUAL else "Automated")} == {}
