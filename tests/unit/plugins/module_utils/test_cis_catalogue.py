"""Control selection: benchmark ids, levels, toggles, tags, decided statuses."""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import (
    BENCHMARKS,
    CatalogueError,
    merge,
    rule_variable,
    select,
    summary,
)

CATALOGUE = [
    {"id": {"al2023": "3.2.1", "al2": "3.3.1"}, "title": "Ensure IP forwarding is disabled", "level": 1,
     "kind": "sysctl", "waived": "Docker needs it", "waived_by": "cis_hardening_keep_ip_forward",
     "settings": {"settings": {"net.ipv4.ip_forward": 0}}},
    {"id": {"al2023": "3.1.2", "al2": "3.2.1"}, "title": "Ensure DCCP is disabled", "level": 2, "kind": "lines",
     "settings": {"lines": [{"kmod": "dccp"}]}},
    {"id": {"al2023": "1.9"}, "title": "Ensure crypto policy is not legacy", "level": 1, "kind": "scan",
     "not_applicable": "no crypto policy here", "settings": {"check": "command", "argv": ["true"], "expect": ""}},
    {"id": {"al2023": "1.1.2.1", "al2": "1.1.2.1.1"}, "title": "Ensure /tmp is a separate partition", "level": 1,
     "kind": "scan", "not_applicable": "", "settings": {"check": "mount", "path": "/tmp", "separate": True}},
]


def ids(plan):
    return [c["id"] for c in plan["controls"]]


def test_level_one_leaves_out_level_two():
    plan = select(CATALOGUE, "al2023", 1)
    assert ids(plan) == ["1.1.2.1", "1.9", "3.2.1"]
    plan = select(CATALOGUE, "al2023", 2)
    assert ids(plan) == ["1.1.2.1", "1.9", "3.1.2", "3.2.1"]


def test_benchmark_ids_and_missing_controls():
    plan = select(CATALOGUE, "al2", 2)
    assert ids(plan) == ["1.1.2.1.1", "3.2.1", "3.3.1"]
    assert plan["tables"]["sysctl"][0]["id"] == "3.3.1"


def test_rows_carry_settings_and_waiver_with_its_variable():
    row = select(CATALOGUE, "al2023", 1)["tables"]["sysctl"][0]
    assert row["settings"] == {"net.ipv4.ip_forward": 0}
    assert "cis_hardening_keep_ip_forward" in row["waived"]


def test_not_applicable_decided_on_the_controller():
    plan = select(CATALOGUE, "al2023", 1)
    decided = {d["id"]: d for d in plan["decided"]}
    assert decided["1.9"]["status"] == "not_applicable" and decided["1.9"]["reason"] == "no crypto policy here"
    assert [r["id"] for r in plan["tables"]["scan"]] == ["1.1.2.1"]


def test_toggle_turns_a_control_off_and_reports_it():
    plan = select(CATALOGUE, "al2023", 2, toggles={"3.1.2": False})
    assert plan["tables"]["lines"] == []
    decided = {d["id"]: d for d in plan["decided"]}
    assert decided["3.1.2"]["status"] == "waived"
    assert rule_variable("3.1.2") == "cis_hardening_rule_3_1_2"
    assert "cis_hardening_rule_3_1_2" in decided["3.1.2"]["reason"]


@pytest.mark.parametrize("run_tags,skip_tags,expected", [
    (["rule_3.1.2"], [], ["3.1.2"]),
    (["rule_3_1_2"], [], ["3.1.2"]),
    (["section3"], [], ["3.1.2", "3.2.1"]),
    (["level2-server"], [], ["1.1.2.1", "1.9", "3.1.2", "3.2.1"]),
    (["all"], ["section3"], ["1.1.2.1", "1.9"]),
    (["agent_firewall"], [], []),
])
def test_tags_select_rows(run_tags, skip_tags, expected):
    assert ids(select(CATALOGUE, "al2023", 2, run_tags=run_tags, skip_tags=skip_tags)) == expected


def test_level_one_controls_carry_both_level_tags():
    plan = select(CATALOGUE, "al2023", 2)
    tags = {c["id"]: c["tags"] for c in plan["controls"]}
    assert {"level1-server", "level2-server"} <= set(tags["3.2.1"])
    assert "level1-server" not in tags["3.1.2"]


def test_bad_input_is_refused():
    with pytest.raises(CatalogueError, match="level"):
        select(CATALOGUE, "al2023", 3)
    with pytest.raises(CatalogueError, match="twice"):
        select(CATALOGUE + CATALOGUE[:1], "al2023", 1)
    with pytest.raises(CatalogueError, match="kind"):
        select([{"id": "9.9", "kind": "nope"}], "al2023", 1)


def test_merge_and_summary():
    plan = select(CATALOGUE, "al2023", 2)
    result = {"id": "3.2.1", "status": "waived", "evidence": "live 1", "reason": "Docker"}
    rows = merge(plan["controls"], plan["decided"] + [result])
    by_id = {r["id"]: r for r in rows}
    assert by_id["3.1.2"]["status"] == "failed" and "did not run" in by_id["3.1.2"]["evidence"]
    assert by_id["3.2.1"]["reason"] == "Docker"
    counts = summary(rows)
    assert counts["total"] == 4
    assert counts["statuses"] == {"not_applicable": 1, "failed": 2, "waived": 1}
    assert list(counts["sections"]) == ["1", "3"]


def test_a_not_applicable_result_without_a_reason_takes_its_evidence_once():
    plan = select(CATALOGUE, "al2023", 2)
    found = [{"id": "3.1.2", "status": "not_applicable",
              "evidence": "/usr/sbin/gdm3 is not installed; /usr/sbin/gdm3 is not installed"},
             {"id": "3.2.1", "status": "not_applicable", "evidence": ""}]
    by_id = {r["id"]: r for r in merge(plan["controls"], plan["decided"] + found)}
    assert by_id["3.1.2"]["reason"] == "/usr/sbin/gdm3 is not installed"
    assert by_id["3.2.1"]["reason"], "a not-applicable row without any reason"
    assert all(r["reason"] for r in by_id.values() if r["status"] == "not_applicable")


def test_the_manual_recommendations_are_rows_of_their_benchmark_with_a_manual_title():
    import re
    from pathlib import Path

    from ansible_collections.guardrail.ecs.plugins.plugin_utils.cis_catalogue import load
    directory = Path(__file__).resolve().parents[4] / "roles" / "cis_hardening" / "catalogue"
    # Every Manual recommendation asks a person to review something against site policy.
    manual_words = re.compile(r"GPG keys|repositories|updates, patches|approved services|authorized timeserver|IPv6 status|"
                              r"outbound|flushed|complexity|minimum password days|journald log file|authentication is|"
                              r"rsyslog logging|remote log host|logrotate|running and on disk|SUID and SGID|unused filesystems")
    # Amazon Linux 2023's Manual list is checked against the published benchmark in test_cis_export_assessment.
    for benchmark in set(BENCHMARKS) - {"al2023"}:
        manual = {}
        for row in load(str(directory), benchmark):
            row_id = row["id"].get(benchmark) if isinstance(row["id"], dict) else row["id"]
            title = row["title"].get(benchmark) if isinstance(row["title"], dict) else row["title"]
            assessment = row["assessment"].get(benchmark) if isinstance(row["assessment"], dict) else row["assessment"]
            if row_id and assessment == "Manual":
                manual[str(row_id)] = title
        assert manual, benchmark
        for control_id, title in manual.items():
            assert manual_words.search(title), (benchmark, control_id, title)


def test_the_assessment_of_the_run_benchmark_reaches_the_report_row():
    rows = [dict(CATALOGUE[0], assessment={"al2023": "Manual", "al2": "Automated"})]
    for benchmark, expected in (("al2023", "Manual"), ("al2", "Automated")):
        plan = select(rows, benchmark, 2)
        assert plan["controls"][0]["assessment"] == expected
        assert merge(plan["controls"], plan["decided"])[0]["assessment"] == expected
    # A site control says nothing: the benchmark's own recommendations are the Manual ones.
    assert select(CATALOGUE[:1], "al2023", 2)["controls"][0]["assessment"] == "Automated"


def test_an_assessment_other_than_automated_or_manual_is_refused():
    from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import validate_row
    with pytest.raises(CatalogueError, match=r"field assessment.al2 must be one of Automated, Manual, not 'manual'"):
        validate_row(dict(CATALOGUE[0], assessment={"al2": "manual"}), "cis_hardening_catalogue_extra", 0, "al2")
