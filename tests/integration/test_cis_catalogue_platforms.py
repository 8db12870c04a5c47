"""The role's own catalogue through ansible-playbook and cis_plan, per platform: a Debian 12 host
is planned against CIS Debian Linux 12 ids, titles and levels; the Amazon Linux columns carry the
benchmarks' levels and the controls that were missing; values set once reach every row."""
import json
import re

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
      guardrail.ecs.internal.cis_plan:
        catalogue_dir: %(role)s/catalogue
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


def test_each_amazon_benchmark_reports_its_own_titles(al2023, al2):
    # AL2's firewall section is iptables (3.4.4.x; nftables is 3.4.3.x, not applicable here):
    # the ids the rows share with AL2023's nftables/firewalld controls must not carry AL2023's titles.
    meta = {c["id"]: c["title"] for c in al2["controls"]}
    assert meta["3.4.1.1"] == "Ensure iptables is installed"
    assert meta["3.4.4.2.1"] == "Ensure iptables loopback traffic is configured"
    assert meta["3.4.4.2.2"] == "Ensure iptables outbound and established connections are configured"
    assert meta["3.4.4.2.4"] == "Ensure iptables default deny firewall policy"
    assert meta["1.5.1.4"] == "Ensure the SELinux state is enforcing or permissive"
    assert {i: t for i, t in meta.items() if i.startswith("3.4.4.") and "nftables" in t} == {}
    for planned in (al2023, al2):
        assert [c["id"] for c in planned["controls"] if "Debian" in c["title"] or "AppArmor" in c["title"]] == []
    assert {c["id"]: c["title"] for c in al2023["controls"]}["1.6.1.1"] == "Ensure SELinux is installed"


def test_missing_al2023_controls_are_evaluated(al2023):
    meta = {c["id"]: c for c in al2023["controls"]}
    missing = ["1.2.1", "1.2.3", "1.6.1.6", "1.8", "2.4", "3.1.1", "5.1.1.5", "5.1.2.6", "5.1.2.7", "6.1.10"]
    assert [i for i in missing if i not in meta] == []
    by_id = rows(al2023)
    assert [i["effective"] for i in by_id["5.1.2.6"]["lines"]] == ["SystemMaxUse", "SystemKeepFree", "RuntimeMaxUse",
                                                                   "RuntimeKeepFree", "MaxFileSec"]


def test_check_only_controls_are_remediated_or_say_why(al2023):
    listed = ["1.2.2", "1.2.4", "1.3.2", "1.6.1.4", "1.9", "2.2.15", "3.4.2.2", "3.4.2.3", "3.4.2.4", "3.4.2.5",
              "3.4.2.6", "4.2.14", "4.3.4", "4.4.1", "4.4.2", "4.5.3", "4.6.1.5", "4.6.2", "4.6.4", "5.3", "6.2.2",
              "6.2.8", "6.2.9", "6.2.10", "6.2.11"]
    meta = {c["id"]: c for c in al2023["controls"]}
    by_id = rows(al2023)
    decided = {d["id"]: d for d in al2023["decided"]}
    # 1.3.2 is a scan that schedules the AIDE check when none is.
    remediated = [i for i in listed if i in by_id and not by_id[i].get("audit_only")
                  and (by_id[i]["kind"] != "scan" or by_id[i].get("check") == "aide_scheduled")]
    explained = [i for i in listed if meta[i].get("check_only") and (i in decided or by_id[i].get("audit_only"))]
    not_applicable = [i for i in listed if decided.get(i, {}).get("status") == "not_applicable"]
    assert sorted(set(listed) - set(remediated) - set(explained) - set(not_applicable)) == []
    assert {"1.2.2", "1.3.2", "1.9", "2.2.15", "4.2.14", "4.4.2", "4.5.3", "4.6.4"} <= set(remediated) | set(not_applicable)
    assert by_id["4.4.2"]["kind"] == "pam" and by_id["4.4.2"]["modules"] == ["faillock"]
    # A cron line mentioning aide is not a check: the scan needs a scheduled `aide --check`.
    assert by_id["1.3.2"]["check"] == "aide_scheduled"


def test_a_value_set_once_reaches_every_row(tmp_path):
    al2 = rows(plan(tmp_path, "Amazon-2", cis_hardening_password_min_length=16))
    al2023 = rows(plan(tmp_path, "Amazon-2023", cis_hardening_password_min_length=16))
    debian = rows(plan(tmp_path, "Debian-12", cis_hardening_password_min_length=16))
    minlen = [i for table in (al2["4.4.2.2.3"], al2023["4.5.1"], debian["5.3.3.2.2"]) for i in table["lines"]
              if i.get("effective") == "minlen"]
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
    assert by_id["site.1"]["files"][0]["content"].startswith("Authorized access only")
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


# ---------------------------------------------------------------- rows an auditor would fail
# Each row is taken from the plan as the role renders it and evaluated by the engine (audit only)
# against files under a temporary root: the check must fail the host an auditor fails.

def rebase(value, root):
    """The row with every /etc, /run and /usr path moved under root."""
    if isinstance(value, dict):
        return {k: rebase(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase(v, root) for v in value]
    if isinstance(value, str) and value.startswith(("/etc/", "/run/", "/usr/")):
        return str(root) + value
    return value


def evaluate(row, root, files, audit_only=True):
    from ansible_collections.guardrail.ecs.plugins.module_utils.cis import lines as cis_lines
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    table = {k: v for k, v in rebase(row, root).items() if k != "kind"}
    results, _changed, _diffs = cis_lines.apply([table], audit_only=audit_only, modprobe_file=str(root / "modprobe.conf"),
                                                proc_modules=str(root / "modules"))
    return results[0]


def sshd_rows(planned):
    found = {}
    for row in planned["tables"]["lines"]:
        keys = [i for i in row["lines"] if "key" in i and i["path"].startswith("/etc/ssh/sshd_config")]
        if keys and not row.get("waived"):
            found[row["id"]] = (keys, [i for i in row["lines"] if i.get("sshd") == ["/usr/sbin/sshd", "-T"]])
    return found


@pytest.mark.parametrize("platform", ["debian", "al2023", "al2"])
def test_sshd_rows_check_the_effective_configuration(platform, request):
    """A setting in the role's drop-in is not in force when sshd_config has no Include of it, or an earlier
    file sets the key: sshd uses the first value. The auditor reads `sshd -T`, and so must the row."""
    planned = request.getfixturevalue(platform)
    found = sshd_rows(planned)
    assert len(found) >= 15, sorted(found)
    for control_id, (keys, effective) in found.items():
        assert len(effective) == len(keys), "%s: no sshd -T check for %s" % (control_id, [k["key"] for k in keys])
        for item, check in zip(keys, effective):
            key, value = item["key"].lower(), str(item["value"])
            good = "port 22\n%s %s\nusepam yes\n" % (key, value.lower() if item.get("ignore_case") else value)
            assert re.search(check["expect"], good, re.M), (control_id, check["expect"], good)
            if item.get("compare") == "le":
                weaker = "%s %d\n" % (key, int(value) + 1)
                assert re.search(check["expect"], "%s %d\n" % (key, int(value) - 1), re.M), control_id
            elif value.lower() in ("yes", "no"):
                weaker = "%s %s\n" % (key, {"yes": "no", "no": "yes"}[value.lower()])
            else:
                weaker = "%s %s,3des-cbc\n" % (key, value) if "," in value else "%s other\n" % key
            assert not re.search(check["expect"], "port 22\n" + weaker, re.M), (control_id, check["expect"], weaker)


@pytest.mark.parametrize("platform,control_id", [("debian", "5.3.3.2.2"), ("al2", "4.4.2.2.3"), ("al2023", "4.5.1")])
def test_minlen_weakened_in_conf_d_or_on_the_pam_line_fails(tmp_path, platform, control_id, request):
    """libpwquality reads pwquality.conf.d after pwquality.conf (from 1.3.0: not AL2's 1.2.3), and arguments
    on the pam_pwquality line win over both: a minlen of 8 in either is what the host enforces."""
    row = rows(request.getfixturevalue(platform))[control_id]
    pam = "/etc/pam.d/common-password" if platform == "debian" else "/etc/pam.d/system-auth"
    base = {"/etc/security/pwquality.conf": "minlen = 14\nminclass = 4\n",
            pam: "password requisite pam_pwquality.so retry=3\npassword required pam_unix.so\n"}
    assert evaluate(row, tmp_path / "ok", base)["status"] == "pass"
    conf_d = dict(base, **{"/etc/security/pwquality.conf.d/50-site.conf": "minlen = 8\n"})
    result = evaluate(row, tmp_path / "conf_d", conf_d)
    if platform == "al2":
        assert result["status"] == "pass", result
    else:
        assert result["status"] == "failed" and "minlen 8 (%s" % (tmp_path / "conf_d") in result["evidence"]
    stricter = dict(base, **{"/etc/security/pwquality.conf.d/50-site.conf": "minlen = 20\n"})
    assert evaluate(row, tmp_path / "stricter", stricter)["status"] == "pass"
    on_line = dict(base, **{pam: "password requisite pam_pwquality.so retry=3 minlen=8\npassword required pam_unix.so\n"})
    result = evaluate(row, tmp_path / "pam", on_line)
    assert result["status"] == "failed" and "minlen=8" in result["evidence"]


@pytest.mark.parametrize("platform,control_id", [("debian", "5.4.1.1"), ("al2", "4.5.1.2"), ("al2023", "4.6.1.1")])
def test_password_expiry_of_existing_accounts_is_checked(tmp_path, platform, control_id, request):
    """login.defs only sets the default for new accounts; the auditor also reads each password's maximum age."""
    row = rows(request.getfixturevalue(platform))[control_id]
    defs = {"/etc/login.defs": "PASS_MAX_DAYS 365\n"}
    ok = dict(defs, **{"/etc/shadow": "root:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:1:365:7:30::\n"})
    assert evaluate(row, tmp_path / "ok", ok)["status"] == "pass"
    bad = dict(defs, **{"/etc/shadow": "root:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:1:99999:7:30::\n"})
    result = evaluate(row, tmp_path / "bad", bad)
    assert result["status"] == "failed" and "alice" in result["evidence"]


@pytest.mark.parametrize("platform,control_id", [("debian", "4.4.2.1"), ("al2023", "3.4.2.7"), ("al2", "3.4.4.2.4")])
def test_default_deny_exception_still_fails_an_open_input_policy(platform, control_id, request):
    """The container-host exception covers FORWARD and OUTPUT only: a host whose INPUT policy is ACCEPT
    fails, it is not reported waived."""
    planned = request.getfixturevalue(platform)
    row = rows(planned)[control_id]
    meta = {c["id"]: c for c in planned["controls"]}[control_id]
    assert "waived" not in row, row
    assert "cis_hardening_firewall_container_exceptions" in meta["check_only"]
    open_input = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"
    closed_input = "-P INPUT DROP\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-A INPUT -i lo -j ACCEPT\n"
    assert not re.search(row["expect"], open_input, re.M)
    assert re.search(row["expect"], closed_input, re.M)


@pytest.mark.parametrize("platform,control_id", [("debian", "6.1.3.3"), ("al2023", "5.1.1.3"), ("al2", "5.1.1.3")])
def test_journald_setting_overridden_by_a_later_drop_in_fails(tmp_path, platform, control_id, request):
    """journald takes the last drop-in that sets a key: ForwardToSyslog=no in 90-local.conf wins over the role's 60-."""
    row = rows(request.getfixturevalue(platform))[control_id]
    ours = {"/etc/systemd/journald.conf.d/60-cis-hardening.conf": "[Journal]\nForwardToSyslog=yes\n"}
    assert evaluate(row, tmp_path / "ok", ours)["status"] == "pass"
    later = dict(ours, **{"/etc/systemd/journald.conf.d/90-local.conf": "[Journal]\nForwardToSyslog=no\n"})
    result = evaluate(row, tmp_path / "later", later)
    assert result["status"] == "failed" and "ForwardToSyslog no (%s" % (tmp_path / "later") in result["evidence"]


@pytest.mark.parametrize("platform,control_id", [("debian", "6.1.3.4"), ("al2023", "5.1.1.4")])
def test_rsyslog_wider_file_mode_elsewhere_fails(tmp_path, platform, control_id, request):
    """$FileCreateMode applies to the actions after it: 0644 in another file makes log files world-readable."""
    row = rows(request.getfixturevalue(platform))[control_id]
    ours = {"/etc/rsyslog.d/60-cis-hardening.conf": "$FileCreateMode 0640\n",
            "/etc/rsyslog.conf": "$FileCreateMode 0600\n$IncludeConfig /etc/rsyslog.d/*.conf\nauth,authpriv.* /var/log/auth.log\n"}
    assert evaluate(row, tmp_path / "ok", ours)["status"] == "pass"
    wider = dict(ours, **{"/etc/rsyslog.d/99-local.conf": "$FileCreateMode 0644\n"})
    result = evaluate(row, tmp_path / "wider", wider)
    assert result["status"] == "failed" and "0644" in result["evidence"]


@pytest.mark.parametrize("platform,control_id", [("debian", "3.3.1"), ("al2023", "3.2.1"), ("al2", "3.3.1")])
def test_ip_forward_waiver_leaves_ipv6_forwarding_enforced(platform, control_id, request):
    """Docker needs IPv4 forwarding, not IPv6 forwarding: only the IPv4 key is waived (naming its variable);
    IPv6 forwarding is left as found only when Docker runs IPv6 networks."""
    row = rows(request.getfixturevalue(platform))[control_id]
    assert "waived" not in row, row
    assert set(row["settings"]) == {"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
    assert "cis_hardening_keep_ip_forward" in row["waived_settings"]["net.ipv4.ip_forward"]
    assert not row["waived_settings"]["net.ipv6.conf.all.forwarding"]
    assert row["keep_for_docker_ipv6"] == ["net.ipv6.conf.all.forwarding"]


# ---------------------------------------------------------------- values that another file or a PAM line decides
@pytest.mark.parametrize("platform,control_id,conf,module,good,weak", [
    ("debian", "5.3.3.1.1", "/etc/security/faillock.conf", "pam_faillock.so", "deny = 5\n", "preauth deny=10"),
    ("debian", "5.3.3.1.1", "/etc/security/faillock.conf", "pam_faillock.so", "deny = 5\n", "authfail deny=0"),
    ("al2023", "4.5.2", "/etc/security/faillock.conf", "pam_faillock.so", "deny = 5\nunlock_time = 900\n", "preauth unlock_time=60"),
    ("debian", "5.3.3.3.1", "/etc/security/pwhistory.conf", "pam_pwhistory.so", "remember = 24\nenforce_for_root\n", "remember=1"),
])
def test_pam_line_arguments_weaker_than_the_conf_file_fail_and_are_normalised(tmp_path, platform, control_id, conf,
                                                                              module, good, weak, request):
    """pam_faillock and pam_pwhistory take an argument on their line over their .conf file."""
    row = rows(request.getfixturevalue(platform))[control_id]
    kind = "password" if module == "pam_pwhistory.so" else "auth"
    stack = "/etc/pam.d/common-%s" % kind
    files = {conf: good, stack: "%s requisite %s use_authtok\n%s required pam_unix.so\n" % (kind, module, kind)}
    assert evaluate(row, tmp_path / "ok", files)["status"] == "pass"
    files[stack] = "%s requisite %s %s\n%s required pam_unix.so\n" % (kind, module, weak, kind)
    profile = "/usr/share/pam-configs/cis-local"
    files[profile] = "Auth:\n\trequisite\t%s %s\n" % (module, weak)
    result = evaluate(row, tmp_path / "weak", files)
    assert result["status"] == "failed" and weak.split()[-1] in result["evidence"], result
    fixed = evaluate(row, tmp_path / "weak", {}, audit_only=False)
    assert fixed["status"] == "fixed", fixed
    for path in (stack, profile):
        text = (tmp_path / "weak" / path.lstrip("/")).read_text()
        assert weak.split()[-1] not in text and module in text, text
    assert evaluate(row, tmp_path / "weak", {}, audit_only=False)["status"] == "pass"


@pytest.mark.parametrize("platform,control_id", [("debian", "5.3.3.1.2"), ("al2023", "4.5.2")])
def test_unlock_time_zero_is_compliant_and_short_times_are_not(tmp_path, platform, control_id, request):
    """The benchmark accepts unlock_time = 0 (locked until an administrator unlocks) or >= 900."""
    row = rows(request.getfixturevalue(platform))[control_id]
    stack = "/etc/pam.d/common-auth"
    for name, conf, line, status in (("zero", "deny = 5\nunlock_time = 0\n", "preauth", "pass"),
                                     ("zero-line", "deny = 5\nunlock_time = 900\n", "preauth unlock_time=0", "pass"),
                                     ("short", "deny = 5\nunlock_time = 1\n", "preauth", "failed")):
        files = {"/etc/security/faillock.conf": conf,
                 stack: "auth requisite pam_faillock.so %s\nauth required pam_unix.so\n" % line}
        result = evaluate(row, tmp_path / name, files)
        assert result["status"] == status, (name, result)


PWQUALITY_WEAK = [
    ("minlen", "5.3.3.2.2", "minlen = 8", "minlen=8"),
    ("difok", "5.3.3.2.1", "difok = 0", "difok=1"),
    ("minclass", "5.3.3.2.3", "minclass = 1", "minclass=2"),
    ("dcredit", "5.3.3.2.3", "dcredit = 2", "dcredit=3"),
    ("maxrepeat", "5.3.3.2.4", "maxrepeat = 0", "maxrepeat=9"),
    ("maxsequence", "5.3.3.2.5", "maxsequence = 0", "maxsequence=8"),
    ("dictcheck", "5.3.3.2.6", "dictcheck = 0", "dictcheck=0"),
    ("enforcing", "5.3.3.2.7", "enforcing = 0", "enforcing=0"),
]
PWQUALITY_GOOD = ("minlen = 14\nminclass = 4\ndifok = 2\nmaxrepeat = 3\nmaxsequence = 3\ndictcheck = 1\nenforcing = 1\n"
                  "enforce_for_root\n")


@pytest.mark.parametrize("key,control_id,in_conf_d,on_line", PWQUALITY_WEAK)
def test_every_pwquality_setting_counts_conf_d_and_the_pam_line(tmp_path, key, control_id, in_conf_d, on_line, debian):
    """Every pwquality row reads pwquality.conf, then pwquality.conf.d/*.conf (later files win), then the
    pam_pwquality arguments; a weaker value anywhere that wins fails, and the fix takes it out."""
    row = rows(debian)[control_id]
    pam = "/etc/pam.d/common-password"
    base = {"/etc/security/pwquality.conf": PWQUALITY_GOOD,
            pam: "password requisite pam_pwquality.so retry=3\npassword required pam_unix.so\n"}
    assert evaluate(row, tmp_path / "ok", base)["status"] == "pass"
    # A later drop-in that fixes it again wins over a weak earlier one.
    good_line = "dcredit = -1" if key == "dcredit" else [line for line in PWQUALITY_GOOD.splitlines() if line.startswith(key)][0]
    masked = dict(base, **{"/etc/security/pwquality.conf.d/10-weak.conf": in_conf_d + "\n",
                           "/etc/security/pwquality.conf.d/20-good.conf": good_line + "\n"})
    assert evaluate(row, tmp_path / "masked", masked)["status"] == "pass"
    weak = dict(base, **{"/etc/security/pwquality.conf.d/50-site.conf": in_conf_d + "\n"})
    result = evaluate(row, tmp_path / "conf_d", weak)
    assert result["status"] == "failed" and "50-site.conf" in result["evidence"], result
    fixed = evaluate(row, tmp_path / "conf_d", {}, audit_only=False)
    assert fixed["status"] == "fixed" and evaluate(row, tmp_path / "conf_d", {})["status"] == "pass"
    on_pam = dict(base, **{pam: "password requisite pam_pwquality.so retry=3 %s\npassword required pam_unix.so\n" % on_line})
    result = evaluate(row, tmp_path / "pam", on_pam)
    assert result["status"] == "failed" and on_line in result["evidence"], result
    assert evaluate(row, tmp_path / "pam", {}, audit_only=False)["status"] == "fixed"
    assert on_line not in (tmp_path / "pam" / pam.lstrip("/")).read_text()


def test_amazon_linux_2_pwquality_reads_no_conf_d(tmp_path, al2):
    """AL2 ships libpwquality 1.2.3; pwquality.conf.d is read from 1.3.0 on. A drop-in there changes
    nothing on AL2, so it neither fails nor satisfies a row, and the fix leaves it alone."""
    row = rows(al2)["4.4.2.2.3"]
    pam = {"/etc/pam.d/system-auth": "password requisite pam_pwquality.so try_first_pass retry=3\n"}
    ignored_weak = dict(pam, **{"/etc/security/pwquality.conf": "minlen = 14\n",
                                "/etc/security/pwquality.conf.d/50-site.conf": "minlen = 8\n"})
    assert evaluate(row, tmp_path / "weak", ignored_weak)["status"] == "pass"
    ignored_good = dict(pam, **{"/etc/security/pwquality.conf": "minlen = 8\n",
                                "/etc/security/pwquality.conf.d/50-site.conf": "minlen = 14\n"})
    result = evaluate(row, tmp_path / "good", ignored_good)
    assert result["status"] == "failed" and "pwquality.conf.d" not in result["evidence"], result
    assert evaluate(row, tmp_path / "good", {}, audit_only=False)["status"] == "fixed"
    assert "minlen = 14" in (tmp_path / "good/etc/security/pwquality.conf").read_text()
    assert (tmp_path / "good/etc/security/pwquality.conf.d/50-site.conf").read_text() == "minlen = 14\n"


@pytest.mark.parametrize("conf,stops", [
    ("minlen=14\n", "minlen=14"),                        # 1.2.3 ends a name at a blank only
    ("dictcheck = 1\nminlen = 14\n", "dictcheck"),       # no dictcheck before 1.3.0: reading stops there
    ("difok = 5\nenforce_for_root\nminlen = 14 # site\n", "enforce_for_root"),
])
def test_amazon_linux_2_pwquality_conf_is_read_as_libpwquality_1_2_3_reads_it(tmp_path, al2, conf, stops):
    """libpwquality 1.2.3 stops reading pwquality.conf at the first setting it does not know; the fix puts the
    setting where it is read, and the evidence says where reading stopped."""
    row = rows(al2)["4.4.2.2.3"]
    files = {"/etc/pam.d/system-auth": "password requisite pam_pwquality.so try_first_pass retry=3\n",
             "/etc/security/pwquality.conf": conf}
    result = evaluate(row, tmp_path, files)
    assert result["status"] == "failed" and stops in result["evidence"], result
    assert evaluate(row, tmp_path, {}, audit_only=False)["status"] == "fixed"
    lines = (tmp_path / "etc/security/pwquality.conf").read_text().splitlines()
    assert all(lines.index("minlen = 14") < i for i, line in enumerate(lines) if line.startswith(stops)), lines
    assert evaluate(row, tmp_path, {})["status"] == "pass"


def test_amazon_linux_2_has_no_dictcheck_to_set(al2, debian):
    """1.2.3 always runs the cracklib check and has no dictcheck setting (a dictcheck line would stop the file
    being read): not applicable on AL2, written on Debian."""
    decided = {d["id"]: d for d in al2["decided"]}
    assert decided["4.4.2.2.7"]["status"] == "not_applicable" and "1.2.3" in decided["4.4.2.2.7"]["reason"]
    assert "5.3.3.2.6" in rows(debian)


def test_enforce_for_root_on_the_pam_line_counts(tmp_path, debian):
    row = rows(debian)["5.3.3.2.8"]
    pam = {"/etc/pam.d/common-password": "password requisite pam_pwquality.so retry=3 enforce_for_root\n",
           "/etc/security/pwquality.conf": "minlen = 14\n"}
    assert evaluate(row, tmp_path / "line", pam)["status"] == "pass"
    pam["/etc/pam.d/common-password"] = "password requisite pam_pwquality.so retry=3\n"
    assert evaluate(row, tmp_path / "none", pam)["status"] == "failed"


@pytest.mark.parametrize("platform,control_id", [("debian", "5.4.1.5"), ("al2023", "4.6.1.4")])
@pytest.mark.parametrize("useradd,expected", [("INACTIVE=30\n", "pass"), ("INACTIVE=10\n", "pass"), ("INACTIVE=-1\n", "failed"),
                                              ("INACTIVE=\n", "failed"), ("INACTIVE=45\n", "failed"), ("# INACTIVE=-1\n", "failed")])
def test_inactive_is_at_most_the_limit_and_never_disabled(tmp_path, platform, control_id, useradd, expected, request):
    row = rows(request.getfixturevalue(platform))[control_id]
    shadow = "root:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:1:365:7:::30\n".replace(":::30", ":30::")
    result = evaluate(row, tmp_path, {"/etc/default/useradd": useradd, "/etc/shadow": shadow})
    assert result["status"] == expected, result
    if expected == "failed":
        assert evaluate(row, tmp_path, {}, audit_only=False)["status"] in ("fixed", "failed")
        assert "INACTIVE=30" in (tmp_path / "etc/default/useradd").read_text()
    else:
        assert useradd in (tmp_path / "etc/default/useradd").read_text()


@pytest.mark.parametrize("shadow_inactive", ["", "-1", "60"])
def test_inactive_of_existing_accounts_is_checked(tmp_path, shadow_inactive, debian):
    row = rows(debian)["5.4.1.5"]
    shadow = "root:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:1:365:7:%s::\n" % shadow_inactive
    result = evaluate(row, tmp_path, {"/etc/default/useradd": "INACTIVE=30\n", "/etc/shadow": shadow})
    assert result["status"] == "failed" and "alice" in result["evidence"]


SUDOERS = "Defaults env_reset\n@includedir /etc/sudoers.d\n"


@pytest.mark.parametrize("other,expected", [
    ("", "pass"),
    ("Defaults timestamp_timeout=30\n", "failed"),
    ("Defaults env_reset, timestamp_timeout=-1\n", "failed"),
    ("Defaults:deploy timestamp_timeout=-1\n", "failed"),
    ("Defaults    env_keep += \"HOME\", \\\n    timestamp_timeout = 60\n", "failed"),
    ("Defaults !timestamp_timeout\n", "pass"),
    ("Defaults timestamp_timeout=5\n", "pass"),
])
def test_sudo_timestamp_timeout_overridden_in_sudoers_d(tmp_path, other, expected, debian):
    """sudo reads /etc/sudoers then sudoers.d in name order: the last global Defaults wins, a Defaults:user wins
    for that user, and -1 never asks again."""
    row = rows(debian)["5.2.6"]
    row = dict(row, lines=[dict(i, validate=["true"]) for i in row["lines"]])
    files = {"/etc/sudoers": SUDOERS.replace("/etc/", str(tmp_path) + "/etc/"),
             "/etc/sudoers.d/cis-hardening": "Defaults timestamp_timeout=15\n"}
    if other:
        files["/etc/sudoers.d/zz-local"] = other
    result = evaluate(row, tmp_path, files)
    assert result["status"] == expected, result
    if expected == "failed":
        assert evaluate(row, tmp_path, {}, audit_only=False)["status"] == "fixed"
        assert "timestamp_timeout" not in (tmp_path / "etc/sudoers.d/zz-local").read_text()
        assert evaluate(row, tmp_path, {})["status"] == "pass"


@pytest.mark.parametrize("platform,control_id", [("debian", "5.2.2"), ("al2023", "4.3.2"), ("al2", "4.3.2")])
def test_sudo_use_pty_is_read_where_sudo_reads_it(tmp_path, platform, control_id, request):
    """The benchmark's audit: ``Defaults use_pty`` somewhere in the sudoers files and ``!use_pty`` nowhere. Set in
    /etc/sudoers already (Debian's default) it passes and nothing is written twice; negated later, it fails
    and the fix takes the negation out."""
    row = rows(request.getfixturevalue(platform))[control_id]
    row = dict(row, lines=[dict(i, validate=["true"]) for i in row["lines"]])
    sudoers = SUDOERS.replace("/etc/", str(tmp_path) + "/etc/")
    files = {"/etc/sudoers": "Defaults\tuse_pty\n" + sudoers}
    assert evaluate(row, tmp_path, files, audit_only=False)["status"] == "pass"
    assert not (tmp_path / "etc/sudoers.d/cis-hardening").exists()
    negated = {"/etc/sudoers.d/zz-local": "Defaults env_reset, !use_pty\nDefaults:deploy !use_pty\n"}
    result = evaluate(row, tmp_path, negated)
    assert result["status"] == "failed" and "zz-local" in result["evidence"], result
    assert evaluate(row, tmp_path, {}, audit_only=False)["status"] == "fixed"
    assert (tmp_path / "etc/sudoers.d/zz-local").read_text() == "Defaults env_reset\n"
    assert evaluate(row, tmp_path, {})["status"] == "pass"
    unset = tmp_path / "unset"
    result = evaluate(row, unset, {"/etc/sudoers": SUDOERS.replace("/etc/", str(unset) + "/etc/")}, audit_only=False)
    assert result["status"] == "fixed", result
    assert (unset / "etc/sudoers.d/cis-hardening").read_text().splitlines().count("Defaults use_pty") == 1


@pytest.mark.parametrize("platform,control_id,key,value,weak", [
    ("debian", "6.1.2.3", "Compress", "yes", "no"),
    ("debian", "6.1.2.4", "Storage", "persistent", "volatile"),
    ("al2023", "1.5.3", "Storage", "none", "external"),
    ("al2023", "1.5.4", "ProcessSizeMax", "0", "2G"),
])
@pytest.mark.parametrize("where", ["/etc/systemd/{0}.conf.d/90-local.conf", "/usr/lib/systemd/{0}.conf.d/99-vendor.conf",
                                   "/run/systemd/{0}.conf.d/70-runtime.conf"])
def test_systemd_drop_in_that_wins_decides_and_the_fix_wins_back(tmp_path, platform, control_id, key, value, weak,
                                                                 where, request):
    row = rows(request.getfixturevalue(platform))[control_id]
    unit = "journald" if control_id.startswith("6.") else "coredump"
    section = "Journal" if unit == "journald" else "Coredump"
    ours = "/etc/systemd/%s.conf.d/60-cis-hardening.conf" % unit
    files = {ours: "[%s]\n%s=%s\n" % (section, key, value),
             "/etc/systemd/%s.conf" % unit: "[%s]\n%s=%s\n" % (section, key, weak)}
    assert evaluate(row, tmp_path, files)["status"] == "pass"
    later = where.format(unit)
    files = {later: "[%s]\n%s=%s\nOther=1\n" % (section, key, weak)}
    result = evaluate(row, tmp_path, files)
    assert result["status"] == "failed" and later.rsplit("/", 1)[-1] in result["evidence"], result
    assert evaluate(row, tmp_path, {}, audit_only=False)["status"] == "fixed"
    assert evaluate(row, tmp_path, {})["status"] == "pass"
    hidden = tmp_path / ("etc/systemd/%s.conf.d/" % unit + later.rsplit("/", 1)[-1])
    assert "Other=1" in hidden.read_text() and "%s=%s" % (key, weak) not in hidden.read_text()


@pytest.mark.parametrize("control_id,stack,weak,wanted", [
    ("4.4.2.1.2", "auth required pam_faillock.so preauth silent deny=10\nauth required pam_unix.so\n", "deny=10",
     ["deny=5", "unlock_time=900"]),
    ("4.4.2.3.2", "password required pam_pwhistory.so remember=5 use_authtok\n", "remember=5", ["remember=24", "enforce_for_root"]),
])
def test_al2_pam_modules_read_their_lines_only(tmp_path, control_id, stack, weak, wanted, al2):
    """PAM 1.1.8 has no faillock.conf or pwhistory.conf: a compliant file there changes nothing, the line decides."""
    row = rows(al2)[control_id]
    files = {"/etc/security/faillock.conf": "deny = 5\nunlock_time = 900\n",
             "/etc/security/pwhistory.conf": "remember = 24\nenforce_for_root\n", "/etc/pam.d/system-auth": stack}
    result = evaluate(row, tmp_path, files)
    assert result["status"] == "failed" and weak in result["evidence"], result
    evaluate(row, tmp_path, {}, audit_only=False)
    text = (tmp_path / "etc/pam.d/system-auth").read_text()
    assert weak not in text and all(w in text for w in wanted), text
    assert evaluate(row, tmp_path, {})["status"] == "pass"


def test_one_vendor_drop_in_weakening_two_journald_keys_is_hidden_once(tmp_path, debian):
    """Two rows fixing the same vendor drop-in in one run: the copy in /etc loses both keys, keeps the rest."""
    by_id = rows(debian)
    from ansible_collections.guardrail.ecs.plugins.module_utils.cis import lines as cis_lines
    vendor = tmp_path / "usr/lib/systemd/journald.conf.d/99-vendor.conf"
    vendor.parent.mkdir(parents=True)
    vendor.write_text("[Journal]\nCompress=no\nStorage=volatile\nSplitMode=uid\n")
    table = [{k: v for k, v in rebase(by_id[i], tmp_path).items() if k != "kind"} for i in ("6.1.2.3", "6.1.2.4")]
    results, changed, _diffs = cis_lines.apply(table)
    assert changed and [r["status"] for r in results] == ["fixed", "fixed"], results
    assert (tmp_path / "etc/systemd/journald.conf.d/99-vendor.conf").read_text() == "[Journal]\nSplitMode=uid\n"
    results, changed, _diffs = cis_lines.apply(table)
    assert not changed and [r["status"] for r in results] == ["pass", "pass"], results


# ---------------------------------------------------------------- the whole Debian 12 benchmark
DEBIAN_ROWS_ADDED = {
    "1.1.1.6": 2, "1.1.1.10": 1, "1.3.1.3": 1, "1.3.1.4": 2, "1.4.1": 1, "1.7.2": 1, "1.7.3": 1, "1.7.4": 1, "1.7.5": 1,
    "1.7.6": 1, "1.7.7": 1, "1.7.8": 1, "1.7.9": 1, "1.7.10": 1, "2.3.2.1": 1, "2.3.2.2": 1, "3.1.2": 1, "4.4.2.4": 1,
    "4.4.3.1": 1, "4.4.3.4": 1, "5.3.1.1": 1, "5.3.3.1.3": 2, "5.3.3.3.2": 1, "5.3.3.3.3": 1, "5.3.3.4.2": 1,
    "5.3.3.4.3": 1, "5.3.3.4.4": 1, "5.4.2.2": 1, "5.4.2.3": 1, "5.4.2.4": 1, "5.4.2.6": 1, "5.4.2.8": 1, "6.1.1.4": 1}


def test_every_debian_12_recommendation_is_reported(debian):
    """CIS Debian Linux 12 v1.1.0 has 310 recommendations; each is a row, with the benchmark's level, and
    each one not applied says why."""
    meta = {c["id"]: c for c in debian["controls"]}
    assert len(meta) == 310
    assert {i: meta[i]["level"] for i in DEBIAN_ROWS_ADDED} == DEBIAN_ROWS_ADDED
    decided = {d["id"]: d for d in debian["decided"]}
    assert "overlay2" in rows(debian)["1.1.1.6"]["waived"] and rows(debian)["1.1.1.6"]["lines"] == [{"kmod": "overlay"}]
    assert decided["2.3.2.1"]["status"] == "not_applicable" and "chrony" in decided["2.3.2.1"]["reason"]
    for control_id in ("1.1.1.10", "1.3.1.3", "4.4.2.4", "5.3.1.1", "5.4.2.2", "5.4.2.6"):
        assert meta[control_id].get("check_only"), control_id
    assert rows(debian)["5.4.2.8"]["check"] == "shell_less_locked" and not rows(debian)["5.4.2.8"].get("audit_only")


def test_gdm_rows_apply_only_where_gdm_is_installed(tmp_path, debian):
    import yaml
    config = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["cis_hardening_config_files"]
    files = {str(tmp_path) + f["path"]: {"path": str(tmp_path) + f["path"], "header": f.get("header")}
             for f in config if isinstance(f["path"], str) and f["path"].startswith("/etc/dconf/")}
    from ansible_collections.guardrail.ecs.plugins.module_utils.cis import lines as cis_lines
    gdm_rows = [{k: v for k, v in rebase(rows(debian)[i], tmp_path).items() if k != "kind"}
                for i in ("1.7.2", "1.7.3", "1.7.4", "1.7.5", "1.7.6", "1.7.7", "1.7.8", "1.7.9", "1.7.10")]

    def run(audit_only):
        results, changed, _diffs = cis_lines.apply(gdm_rows, files=files, audit_only=audit_only,
                                                   modprobe_file=str(tmp_path / "modprobe.conf"),
                                                   proc_modules=str(tmp_path / "modules"))
        return {r["id"]: r["status"] for r in results}, changed

    statuses, changed = run(False)
    assert set(statuses.values()) == {"not_applicable"} and not changed
    assert not (tmp_path / "etc" / "dconf").exists()
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/gdm3").write_text("")
    (tmp_path / "etc/gdm3").mkdir(parents=True)
    # Debian's gdm3 reads daemon.conf (custom.conf is other distributions' name for it).
    (tmp_path / "etc/gdm3/daemon.conf").write_text("[daemon]\n[xdmcp]\nEnable=true\n")
    assert set(run(True)[0].values()) == {"failed"}
    statuses, changed = run(False)
    assert set(statuses.values()) == {"fixed"} and changed, statuses
    assert (tmp_path / "etc/dconf/db/gdm.d/00-login-screen").read_text() == "[org/gnome/login-screen]\ndisable-user-list=true\n"
    assert (tmp_path / "etc/dconf/db/local.d/00-session-idle").read_text().splitlines()[0] == "[org/gnome/desktop/session]"
    assert "Enable=true" not in (tmp_path / "etc/gdm3/daemon.conf").read_text()
    assert (tmp_path / "etc/dconf/profile/gdm").read_text().splitlines() == [
        "user-db:user", "system-db:gdm", "file-db:/var/lib/gdm3/greeter-dconf-defaults"]
    assert (tmp_path / "etc/dconf/db/local.d/locks/00-media-autorun").read_text() == "/org/gnome/desktop/media-handling/autorun-never\n"
    assert run(False) == ({i: "pass" for i in statuses}, False)


COMMON_PASSWORD = ("password\trequisite\tpam_pwquality.so retry=3\n"
                   "password\t[success=1 default=ignore]\tpam_unix.so obscure use_authtok try_first_pass yescrypt remember=5\n"
                   "password\trequisite\tpam_deny.so\n")


def test_pam_unix_remember_is_taken_out_and_the_rest_of_the_line_kept(tmp_path, debian):
    row = rows(debian)["5.3.3.4.2"]
    pam = {"/etc/pam.d/common-password": COMMON_PASSWORD}
    assert evaluate(row, tmp_path, pam)["status"] == "failed"
    assert evaluate(row, tmp_path, {}, audit_only=False)["status"] == "fixed"
    text = (tmp_path / "etc/pam.d/common-password").read_text()
    assert "pam_unix.so obscure use_authtok try_first_pass yescrypt\n" in text and "remember" not in text
    for control_id in ("5.3.3.4.3", "5.3.3.4.4"):
        assert evaluate(rows(debian)[control_id], tmp_path, {})["status"] == "pass"
    weak = COMMON_PASSWORD.replace(" use_authtok", "").replace(" yescrypt", " md5")
    for control_id in ("5.3.3.4.3", "5.3.3.4.4"):
        assert evaluate(rows(debian)[control_id], tmp_path / "weak", {"/etc/pam.d/common-password": weak})["status"] == "failed"


def test_root_in_pwhistory_and_faillock_is_one_setting_each(tmp_path, debian):
    """5.3.3.3.1 and 5.3.3.3.2 both need enforce_for_root in pwhistory.conf: one run fixes both and writes it once;
    5.3.3.1.3 needs even_deny_root in faillock.conf."""
    from ansible_collections.guardrail.ecs.plugins.module_utils.cis import lines as cis_lines
    files = {"/etc/security/pwhistory.conf": "remember = 24\n", "/etc/security/faillock.conf": "deny = 5\n",
             "/etc/pam.d/common-password": COMMON_PASSWORD.replace(
                 "password\trequisite\tpam_deny.so", "password\trequisite\tpam_pwhistory.so use_authtok")}
    for path, text in files.items():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(text)
    table = [{k: v for k, v in rebase(rows(debian)[i], tmp_path).items() if k != "kind"}
             for i in ("5.3.3.3.1", "5.3.3.3.2", "5.3.3.1.3")]
    results, changed, _diffs = cis_lines.apply(table, modprobe_file=str(tmp_path / "m.conf"), proc_modules=str(tmp_path / "p"))
    assert {r["id"]: r["status"] for r in results} == {"5.3.3.3.1": "fixed", "5.3.3.3.2": "fixed", "5.3.3.1.3": "fixed"}
    assert (tmp_path / "etc/security/pwhistory.conf").read_text().split().count("enforce_for_root") == 1
    assert "even_deny_root" in (tmp_path / "etc/security/faillock.conf").read_text().split()
    results, changed, _diffs = cis_lines.apply(table, modprobe_file=str(tmp_path / "m.conf"), proc_modules=str(tmp_path / "p"))
    assert not changed and {r["status"] for r in results} == {"pass"}
    assert evaluate(rows(debian)["5.3.3.3.3"], tmp_path, {})["status"] == "pass"


@pytest.mark.parametrize("platform", ["debian", "al2023", "al2"])
def test_every_command_a_row_runs_is_a_list_of_strings(platform, request):
    """YAML reads `-maxdepth 2` as a number: a row's command must still reach the engines as strings."""
    bad = []
    for kind, table in request.getfixturevalue(platform)["tables"].items():
        for row in table:
            commands = [row.get("argv")] + [item.get("command") for item in row.get("lines", []) if isinstance(item, dict)]
            bad += ["%s %s: %r" % (kind, row["id"], c) for c in commands if c and not all(isinstance(a, str) for a in c)]
    assert bad == []


AL2_ROWS_ADDED = [
    "1.2.1", "1.2.4", "1.2.5", "1.3.1", "1.5.1.6", "2.2.22", "3.1.1", "3.1.2", "3.1.3", "3.4.2.2", "3.4.2.3", "3.4.2.4",
    "3.4.3.2", "3.4.3.3", "3.4.3.4", "3.4.3.5", "3.4.3.6", "3.4.3.7", "3.4.3.8", "3.4.3.9", "3.4.4.1.1", "3.4.4.2.3",
    "3.4.4.2.5", "3.4.4.2.6", "3.4.4.3.3", "3.4.4.3.4", "3.4.4.3.5", "3.4.4.3.6", "4.3.4", "4.4.1.1", "4.4.1.2",
    "4.4.2.1.1", "4.4.2.1.3", "4.4.2.1.4", "4.4.2.3.1", "4.4.2.3.3", "4.4.2.3.4", "4.4.2.4.2", "4.4.2.4.3", "4.4.2.4.4",
    "4.5.2.2", "5.1.1.5", "5.1.2.6", "6.1.14"]


def test_every_amazon_linux_2_recommendation_is_reported(al2):
    """CIS Amazon Linux 2 v3.0.0: 289 recommendations, each a row; nftables and firewalld are not applicable where
    the firewall is iptables, the PAM rows read AL2's system-auth and password-auth."""
    meta = {c["id"]: c for c in al2["controls"]}
    assert len(meta) == 289 and [i for i in AL2_ROWS_ADDED if i not in meta] == []
    levels = {i: meta[i]["level"] for i in ("3.1.1", "4.3.4", "4.4.2.1.4", "6.1.14", "3.4.4.1.1")}
    assert levels == {"3.1.1": 2, "4.3.4": 2, "4.4.2.1.4": 1, "6.1.14": 2, "3.4.4.1.1": 1}
    decided = {d["id"]: d for d in al2["decided"]}
    for control_id in ("3.4.2.2", "3.4.2.3", "3.4.2.4", "3.4.3.2", "3.4.3.5", "3.4.3.9"):
        assert decided[control_id]["status"] == "not_applicable" and "iptables" in decided[control_id]["reason"]
    by_id = rows(al2)
    assert by_id["4.4.2.1.1"]["kind"] == "pam" and by_id["4.4.2.1.1"]["modules"] == ["faillock"]
    assert by_id["3.4.4.1.1"]["packages_present"] == ["iptables", "iptables-services"]
    assert meta["4.4.2.4.2"]["title"] == "Ensure pam_unix does not include remember"


def test_amazon_linux_2_pam_unix_remember_is_taken_out_of_both_stacks(tmp_path, al2):
    row = rows(al2)["4.4.2.4.2"]
    unix = "password    sufficient    pam_unix.so sha512 shadow try_first_pass use_authtok remember=5\n"
    stacks = {"/etc/pam.d/system-auth": unix, "/etc/pam.d/password-auth": unix}
    result = evaluate(row, tmp_path, stacks)
    assert result["status"] == "failed" and "password-auth" in result["evidence"] and "system-auth" in result["evidence"]
    assert evaluate(row, tmp_path, {}, audit_only=False)["status"] == "fixed"
    for name in ("system-auth", "password-auth"):
        assert (tmp_path / "etc/pam.d" / name).read_text() == unix.replace(" remember=5", "")
    assert evaluate(rows(al2)["4.4.2.4.3"], tmp_path, {})["status"] == "pass"


def test_amazon_linux_2_pam_unix_rows_read_password_auth_too(tmp_path, al2):
    """sshd's stack on Amazon Linux is password-auth (a link to password-auth-ac): nullok there fails and is taken
    out of the link's target, and the link stays."""
    good = "password    sufficient    pam_unix.so sha512 shadow try_first_pass use_authtok\n"
    (tmp_path / "etc/pam.d").mkdir(parents=True)
    (tmp_path / "etc/pam.d/system-auth").write_text("auth sufficient pam_unix.so try_first_pass\n" + good)
    weak = good.replace(" sha512", "").replace(" use_authtok", "")
    (tmp_path / "etc/pam.d/password-auth-ac").write_text("auth sufficient pam_unix.so nullok try_first_pass\n" + weak)
    (tmp_path / "etc/pam.d/password-auth").symlink_to("password-auth-ac")
    nullok = rows(al2)["4.4.2.4.1"]
    assert evaluate(nullok, tmp_path, {})["status"] == "failed"
    for control_id in ("4.4.2.4.3", "4.4.2.4.4"):
        result = evaluate(rows(al2)[control_id], tmp_path, {})
        assert result["status"] == "failed" and "password-auth" in result["evidence"], result
    assert evaluate(nullok, tmp_path, {}, audit_only=False)["status"] == "fixed"
    assert (tmp_path / "etc/pam.d/password-auth").is_symlink()
    assert "nullok" not in (tmp_path / "etc/pam.d/password-auth-ac").read_text()


@pytest.mark.parametrize("grub,ok", [
    ('set superusers="root"\npassword_pbkdf2 root grub.pbkdf2.sha512.10000.ABC.DEF\n', True),
    ("password_pbkdf2 root grub.pbkdf2.sha512.10000.ABC.DEF\n", False),
    ('set superusers="root"\npassword root plain\n', False)])
def test_bootloader_password_needs_superusers_and_a_pbkdf2_hash(debian, grub, ok):
    row = rows(debian)["1.4.1"]
    assert (re.search(row["expect"], grub, re.M) is not None) == ok


def test_each_debian_title_is_its_own(debian):
    meta = {c["id"]: c["title"] for c in debian["controls"]}
    assert meta["4.3.3"] == "Ensure iptables are flushed with nftables"
    assert meta["1.7.10"] == "Ensure XDMCP is not enabled"


@pytest.mark.parametrize("platform", ["debian", "al2"])
def test_every_ip6tables_row_is_not_applicable_without_ipv6(platform, request):
    planned = request.getfixturevalue(platform)
    titles = {c["id"]: c["title"] for c in planned["controls"]}
    ip6 = [row for row in planned["tables"]["scan"] if "ip6tables" in titles[row["id"]]]
    assert len(ip6) == (4 if platform == "debian" else 6)
    assert [row["id"] for row in ip6 if not row.get("ipv6")] == []


@pytest.mark.parametrize("platform", ["Debian-12", "Amazon-2023", "Amazon-2"])
def test_sshd_rows_are_not_applicable_without_an_ssh_server(tmp_path, platform):
    absent = plan(tmp_path, platform, cis_hardening_sshd_installed=False)
    present = plan(tmp_path, platform, cis_hardening_sshd_installed=True)
    sshd_rows = {r["id"] for r in rows(present).values()
                 if "sshd" in json.dumps(r) and r["kind"] in ("lines", "files")
                 and not any(p in json.dumps(r) for p in ("/etc/audit", "sudo", "pam"))}
    assert len(sshd_rows) >= 15, sorted(sshd_rows)
    decided = {d["id"]: d for d in absent["decided"]}
    assert sshd_rows <= set(decided), sorted(sshd_rows - set(decided))
    for control_id in sshd_rows:
        assert decided[control_id]["status"] == "not_applicable"
        assert "no SSH server is installed" in decided[control_id]["reason"]


def test_every_not_applicable_row_of_the_plan_has_a_reason(debian):
    assert all(d["reason"] for d in debian["decided"] if d["status"] == "not_applicable")
