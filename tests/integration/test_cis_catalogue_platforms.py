"""The role's own catalogue through ansible-playbook and cis_plan, per platform: a Debian 12 host
is planned against CIS Debian Linux 12 ids, titles and levels; the Amazon Linux columns carry the
benchmarks' levels and the controls that were missing; values set once reach every row."""
import json

import pytest

from conftest import ROOT, run_playbook

ROLE = ROOT / "roles" / "cis_hardening"
PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - %(role)s/defaults/main.yml
    - %(role)s/vars/main.yml
    - %(role)s/vars/%(platform)s.yml
  tasks:
    - name: Plan
      guardrail.ecs.cis_plan:
        catalogue: "{{ cis_hardening_catalogue }}"
        benchmark: "{{ cis_hardening_benchmark_id }}"
        level: "{{ cis_hardening_level }}"
        extra: "{{ cis_hardening_catalogue_extra }}"
        overrides: "{{ cis_hardening_overrides }}"
"""


def plan(tmp_path, platform, expect_rc=0, **extra):
    book = tmp_path / "plan.yml"
    book.write_text(PLAYBOOK % {"role": ROLE, "platform": platform})
    rc, result, err = run_playbook(book, extra_vars=dict({"cis_hardening_level": 2}, **extra), cwd=tmp_path)
    assert rc == expect_rc, json.dumps(result)[-3000:] + err[-2000:]
    return result["plays"][0]["tasks"][0]["hosts"]["localhost"]


def rows(planned):
    """Every row sent to a module, by id, with its kind."""
    found = {}
    for kind, table in planned["tables"].items():
        for row in table:
            found[row["id"]] = dict(row, kind=kind)
    return found


@pytest.fixture(scope="module")
def debian(tmp_path_factory):
    return plan(tmp_path_factory.mktemp("debian"), "Debian-12")


@pytest.fixture(scope="module")
def al2023(tmp_path_factory):
    return plan(tmp_path_factory.mktemp("al2023"), "Amazon-2023")


@pytest.fixture(scope="module")
def al2(tmp_path_factory):
    return plan(tmp_path_factory.mktemp("al2"), "Amazon-2")


def test_debian_is_planned_against_its_own_benchmark(debian):
    assert debian["benchmark"] == {"id": "debian12", "name": "CIS Debian Linux 12 Benchmark", "version": "v1.1.0"}
    meta = {c["id"]: c for c in debian["controls"]}
    # Ids that mean another control in CIS Amazon Linux 2023.
    assert meta["1.1.1.1"]["title"] == "Ensure cramfs kernel module is not available"
    assert meta["3.2.1"]["title"] == "Ensure dccp kernel module is not available"
    # AL2023's root-login id is Debian's ufw default deny, not applicable where the firewall is iptables.
    assert meta["4.2.7"]["title"] == "Ensure ufw default deny firewall policy"
    assert {d["id"]: d["status"] for d in debian["decided"]}["4.2.7"] == "not_applicable"
    assert meta["5.1.20"]["title"] == "Ensure sshd PermitRootLogin is disabled"
    assert meta["3.3.1"]["title"] == "Ensure ip forwarding is disabled"
    assert meta["7.1.1"]["title"] == "Ensure permissions on /etc/passwd are configured"
    # Debian levels: every partition control is Level 1, router advertisements Level 2.
    assert meta["1.1.2.4.1"]["level"] == 1 and meta["1.1.2.7.4"]["level"] == 1
    assert meta["3.3.11"]["level"] == 2 and meta["5.1.8"]["level"] == 2
    by_id = rows(debian)
    assert by_id["1.1.1.1"]["lines"] == [{"kmod": "cramfs"}]
    assert by_id["3.2.1"]["lines"] == [{"kmod": "dccp"}]
    assert by_id["5.1.20"]["lines"][0]["key"] == "PermitRootLogin"
    # No AL2023-only control leaks in under its own id.
    assert "1.9" not in meta and "4.4.1" not in meta and "1.6.1.3" not in meta


def test_debian_only_requirements(debian):
    by_id = rows(debian)
    core = by_id["1.5.3"]
    assert core["kind"] == "lines"
    assert {"line": "* hard core 0"}.items() <= core["lines"][0].items()
    assert any(i.get("key") == "fs.suid_dumpable" and str(i["value"]) == "0" for i in core["lines"])
    assert any(i.get("command") == ["sysctl", "-n", "fs.suid_dumpable"] for i in core["lines"])
    for control_id, module in (("5.3.2.1", "unix"), ("5.3.2.2", "faillock"), ("5.3.2.3", "pwquality"), ("5.3.2.4", "pwhistory")):
        assert by_id[control_id]["kind"] == "pam" and by_id[control_id]["modules"] == [module]
    for control_id, key in (("5.1.6", "Ciphers"), ("5.1.12", "KexAlgorithms"), ("5.1.15", "MACs")):
        item = by_id[control_id]["lines"][0]
        assert item["key"] == key and "cbc" not in item["value"] and item["path"].startswith("/etc/ssh/sshd_config.d/")


def test_amazon_levels_follow_the_benchmarks(tmp_path, al2023, al2):
    mount_options = ["1.1.3.2", "1.1.3.3", "1.1.4.2", "1.1.4.3", "1.1.4.4", "1.1.5.2", "1.1.5.3", "1.1.5.4",
                     "1.1.6.2", "1.1.6.3", "1.1.6.4", "1.1.7.2", "1.1.7.3"]
    meta = {c["id"]: c for c in al2023["controls"]}
    assert {i: meta[i]["level"] for i in mount_options} == {i: 1 for i in mount_options}
    assert meta["1.1.3.1"]["level"] == 2  # the separate partitions stay Level 2
    meta = {c["id"]: c for c in al2["controls"]}
    assert (meta["1.1.2.3.2"]["level"], meta["1.1.2.3.3"]["level"], meta["1.2.3"]["level"]) == (1, 1, 2)
    level_one = {c["id"] for c in plan(tmp_path, "Amazon-2023", cis_hardening_level=1)["controls"]}
    assert set(mount_options) <= level_one


def test_missing_al2023_controls_are_evaluated(al2023):
    meta = {c["id"]: c for c in al2023["controls"]}
    missing = ["1.2.1", "1.2.3", "1.6.1.6", "1.8", "2.4", "3.1.1", "5.1.1.5", "5.1.2.6", "5.1.2.7", "6.1.10"]
    assert [i for i in missing if i not in meta] == []
    by_id = rows(al2023)
    assert [i["key"] for i in by_id["5.1.2.6"]["lines"]] == ["SystemMaxUse", "SystemKeepFree", "RuntimeMaxUse",
                                                             "RuntimeKeepFree", "MaxFileSec"]


def test_check_only_controls_are_remediated_or_say_why(al2023):
    listed = ["1.2.2", "1.2.4", "1.3.2", "1.6.1.4", "1.9", "2.2.15", "3.4.2.2", "3.4.2.3", "3.4.2.4", "3.4.2.5",
              "3.4.2.6", "4.2.14", "4.3.4", "4.4.1", "4.4.2", "4.5.3", "4.6.1.5", "4.6.2", "4.6.4", "5.3", "6.2.2",
              "6.2.8", "6.2.9", "6.2.10", "6.2.11"]
    meta = {c["id"]: c for c in al2023["controls"]}
    by_id = rows(al2023)
    decided = {d["id"]: d for d in al2023["decided"]}
    remediated = [i for i in listed if i in by_id and by_id[i]["kind"] != "scan" and not by_id[i].get("audit_only")]
    explained = [i for i in listed if meta[i].get("check_only") and (i in decided or by_id[i].get("audit_only"))]
    not_applicable = [i for i in listed if decided.get(i, {}).get("status") == "not_applicable"]
    assert sorted(set(listed) - set(remediated) - set(explained) - set(not_applicable)) == []
    assert {"1.2.2", "1.3.2", "1.9", "2.2.15", "4.2.14", "4.4.2", "4.5.3", "4.6.4"} <= set(remediated) | set(not_applicable)
    assert by_id["4.4.2"]["kind"] == "pam" and by_id["4.4.2"]["modules"] == ["faillock"]
    # A cron line mentioning aide is not a check unless AIDE runs.
    assert by_id["1.3.2"]["lines"][0]["command"] == ["/usr/sbin/aide", "--version"]


def test_a_value_set_once_reaches_every_row(tmp_path):
    al2 = rows(plan(tmp_path, "Amazon-2", cis_hardening_password_min_length=16))
    al2023 = rows(plan(tmp_path, "Amazon-2023", cis_hardening_password_min_length=16))
    debian = rows(plan(tmp_path, "Debian-12", cis_hardening_password_min_length=16))
    minlen = [i for table in (al2["4.4.2.2.3"], al2023["4.5.1"], debian["5.3.3.2.2"]) for i in table["lines"]
              if i.get("key") == "minlen"]
    assert len(minlen) == 3 and {int(i["value"]) for i in minlen} == {16}


SITE_CONTROL = {"id": "site.1", "title": "Ensure the team banner is in place", "level": 1, "kind": "files",
                "settings": {"files": [{"path": "/etc/motd", "content": "{{ cis_hardening_banner }}"}]}}


def test_site_controls_and_overrides_through_role_variables(tmp_path):
    planned = plan(tmp_path, "Debian-12", cis_hardening_catalogue_extra=[SITE_CONTROL], cis_hardening_overrides={
        "5.1.6": {"settings": {"lines": [{"path": "/etc/ssh/sshd_config.d/00-cis-hardening.conf", "key": "Ciphers",
                                          "value": "aes256-gcm@openssh.com"}]}},
        "3.2.1": {"waived": "no DCCP in this kernel build", "waived_by": "cis_hardening_overrides"},
        "1.1.1.7": {"level": 1}})
    by_id = rows(planned)
    assert by_id["site.1"]["files"][0]["content"].startswith("Authorized uses only")
    assert by_id["5.1.6"]["lines"][0]["value"] == "aes256-gcm@openssh.com"
    assert "no DCCP" in by_id["3.2.1"]["waived"]
    levels = {c["id"]: c["level"] for c in planned["controls"]}
    assert levels["1.1.1.7"] == 1 and levels["site.1"] == 1


@pytest.mark.parametrize("extra,message", [
    ({"cis_hardening_catalogue_extra": [dict(SITE_CONTROL, level=3)]},
     "cis_hardening_catalogue_extra row 0 (id site.1): field level must be 1 or 2, not 3"),
    ({"cis_hardening_overrides": {"5.1.6": {"setting": {}}}},
     "cis_hardening_overrides 5.1.6: field setting cannot be overridden"),
    ({"cis_hardening_overrides": {"1.9": {"level": 1}}},
     "cis_hardening_overrides: 1.9 is not a control of the debian12 catalogue"),
])
def test_a_bad_extension_names_the_row_and_field(tmp_path, extra, message):
    result = plan(tmp_path, "Debian-12", expect_rc=2, **extra)
    assert result["failed"] and message in result["msg"]
    assert "tables" not in result
