"""Extending the catalogue: site controls, per-id overrides, and the schema that names a bad row."""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import CatalogueError, extend, merge, select

CATALOGUE = [
    {"id": {"al2023": "4.2.16", "debian12": "5.1.16"}, "title": "Ensure sshd MaxAuthTries is configured", "level": 1,
     "kind": "lines", "settings": {"lines": [{"path": "/etc/ssh/sshd_config.d/cis.conf", "key": "MaxAuthTries", "value": 4}],
                                   "note": "kept"}},
    {"id": {"al2023": "3.1.2", "debian12": "3.2.1"}, "title": {"al2023": "Ensure DCCP is disabled",
                                                               "debian12": "Ensure dccp kernel module is not available"},
     "level": {"al2023": 2, "debian12": 2}, "kind": "lines", "settings": {"lines": [{"kmod": "dccp"}]}},
]
SITE = {"id": "site.1", "title": "Ensure the site banner names the team", "level": 1, "kind": "files",
        "settings": {"files": [{"path": "/etc/motd", "content": "team\n"}]}}


def test_site_controls_are_planned_with_the_catalogue():
    rows = extend(CATALOGUE, [SITE], {}, "debian12")
    plan = select(rows, "debian12", 1)
    assert [c["id"] for c in plan["controls"]] == ["5.1.16", "site.1"]
    assert plan["tables"]["files"] == [{"id": "site.1", "files": [{"path": "/etc/motd", "content": "team\n"}]}]
    assert select(extend(CATALOGUE, [SITE], {}, "al2023"), "al2023", 1)["controls"][-1]["section"] == "site"


def test_override_merges_settings_and_replaces_fields_for_the_benchmark_only():
    overrides = {"5.1.16": {"settings": {"lines": [{"path": "/etc/ssh/sshd_config.d/cis.conf", "key": "MaxAuthTries",
                                                    "value": 3}]}},
                 "3.2.1": {"level": 1, "waived": "the DCCP module is already absent from this kernel build"}}
    rows = extend(CATALOGUE, [], overrides, "debian12")
    plan = select(rows, "debian12", 1)
    lines = {r["id"]: r for r in plan["tables"]["lines"]}
    assert lines["5.1.16"]["lines"][0]["value"] == 3 and lines["5.1.16"]["note"] == "kept"
    assert lines["3.2.1"]["waived"].startswith("the DCCP module")
    # The other benchmark's level and the caller's catalogue are untouched.
    assert rows[1]["level"] == {"al2023": 2, "debian12": 1}
    assert CATALOGUE[0]["settings"]["lines"][0]["value"] == 4
    assert "3.1.2" not in [c["id"] for c in select(extend(CATALOGUE, [], {}, "al2023"), "al2023", 1)["controls"]]


@pytest.mark.parametrize("extra,overrides,message", [
    ([dict(SITE, level=3)], {}, "cis_hardening_catalogue_extra row 0 (id site.1): field level must be 1 or 2, not 3"),
    ([dict(SITE, kind="shell")], {}, "cis_hardening_catalogue_extra row 0 (id site.1): field kind must be one of"),
    ([dict(SITE, id=1.10)], {}, "field id must be a non-empty string, not 1.1 (quote ids in YAML"),
    ([dict(SITE, id="../x")], {}, "field id '../x' is not a control id"),
    ([dict(SITE, setting={})], {}, "(id site.1): field setting is not a catalogue field"),
    ([dict(SITE, settings={"file": []})], {}, "(id site.1): field settings needs files for kind files"),
    ([{k: v for k, v in SITE.items() if k != "title"}], {}, "(id site.1): field title is required"),
    ([dict(SITE, id={"debian12": "5.1.16"})], {}, "5.1.16 is already a control of the debian12 catalogue; "
                                                  "change it with cis_hardening_overrides"),
    (["5.1.16"], {}, "cis_hardening_catalogue_extra row 0: a control must be a mapping"),
    ([], {"9.9.9": {"level": 1}}, "cis_hardening_overrides: 9.9.9 is not a control of the debian12 catalogue"),
    ([], {"5.1.16": {"id": "5.1.17"}}, "cis_hardening_overrides 5.1.16: field id cannot be overridden"),
    ([], {"5.1.16": {"level": "two"}}, "cis_hardening_overrides (id 5.1.16): field level must be 1 or 2, not 'two'"),
    ([], {"3.2.1": {"level": 0}}, "cis_hardening_overrides (id 3.2.1): field level.debian12 must be 1 or 2, not 0"),
    ([], {"5.1.16": {"kind": "pam"}}, "cis_hardening_overrides (id 5.1.16): field settings needs modules for kind pam"),
    ([], ["5.1.16"], "cis_hardening_overrides must be a mapping"),
])
def test_a_bad_row_is_named_with_its_field(extra, overrides, message):
    with pytest.raises(CatalogueError) as caught:
        extend(CATALOGUE, extra, overrides, "debian12")
    assert message in str(caught.value)


def test_a_bad_catalogue_row_is_named():
    bad = CATALOGUE + [{"id": {"debian12": "7.1.1"}, "title": "t", "level": 1, "kind": "files", "settings": {"files": "x"},
                        "waived": ["no"]}]
    with pytest.raises(CatalogueError, match=r"cis_hardening_catalogue row 2 \(id 7.1.1\): field waived must be a string"):
        extend(bad, [], {}, "debian12")


def test_check_only_rows_are_evaluated_never_changed_and_say_why():
    row = dict(CATALOGUE[0], check_only="the site owns sshd")
    plan = select(extend([row], [], {}, "debian12"), "debian12", 1)
    assert plan["tables"]["lines"][0]["audit_only"] is True
    merged = merge(plan["controls"], [{"id": "5.1.16", "status": "failed", "evidence": "MaxAuthTries 6"}])
    assert merged[0]["reason"] == "check only: the site owns sshd"


def test_fixed_rows_carry_before_and_after():
    plan = select(CATALOGUE, "debian12", 2)
    merged = {r["id"]: r for r in merge(plan["controls"], [
        {"id": "5.1.16", "status": "fixed", "evidence": "e", "before": "MaxAuthTries 6", "after": "MaxAuthTries 4"},
        {"id": "3.2.1", "status": "fixed", "evidence": "was /x 0644; now /x 0600"}])}
    assert (merged["5.1.16"]["before"], merged["5.1.16"]["after"]) == ("MaxAuthTries 6", "MaxAuthTries 4")
    assert (merged["3.2.1"]["before"], merged["3.2.1"]["after"]) == ("/x 0644", "/x 0600")
