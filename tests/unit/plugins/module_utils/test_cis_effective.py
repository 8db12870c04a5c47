"""Values decided by more than one place: sshd Match blocks, sysctl keys waived one by one."""
import json
import sys

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import effective as cis_effective
from ansible_collections.guardrail.ecs.plugins.module_utils.cis import lines as cis_lines
from ansible_collections.guardrail.ecs.plugins.module_utils.cis import sysctl as cis_sysctl

# A stand-in for `sshd -T -C ...`: the effective configuration of sshd_config as sshd evaluates Match blocks
# of the form "Match User a" / "Match Address 10.0.0.0/8" / "Match Group g" (the group named by the test).
FAKE_SSHD = r'''#!%s
import ipaddress, sys
spec = dict(kv.split("=", 1) for kv in sys.argv[sys.argv.index("-C") + 1].split(","))
config, settings, matched, active = open(sys.argv[1]).read().splitlines(), {}, {}, None
for line in config:
    words = line.split()
    if not words:
        continue
    if words[0] == "Match":
        kind, value = words[1].lower(), words[2]
        active = (kind == "user" and spec.get("user") == value) or (kind == "group" and spec.get("user") == "root") or (
            kind == "address" and ipaddress.ip_address(spec["addr"]) in ipaddress.ip_network(value))
        continue
    if active is None:
        settings.setdefault(words[0].lower(), words[1])
    elif active:
        matched.setdefault(words[0].lower(), words[1])
settings.update(matched)
for key, value in sorted(settings.items()):
    print(key, value.lower())
'''


def sshd_item(tmp_path, config_text, expect):
    config = tmp_path / "sshd_config"
    config.write_text(config_text)
    fake = tmp_path / "sshd"
    fake.write_text(FAKE_SSHD % sys.executable)
    fake.chmod(0o755)
    return {"sshd": [str(fake), str(config), "-T"], "expect": expect, "config": str(config)}


def run_sshd(item):
    results, _changed, _diffs = cis_lines.apply([{"id": "5.1.20", "lines": [item]}], audit_only=True)
    return results[0]


def test_a_match_block_that_weakens_a_setting_fails(tmp_path):
    item = sshd_item(tmp_path, "PermitRootLogin no\nMatch Address 10.0.0.0/8\n  PermitRootLogin yes\n", r"(?mi)^permitrootlogin\s+no$")
    result = run_sshd(item)
    assert result["status"] == "failed", result
    assert "Match Address 10.0.0.0/8" in result["evidence"] and "permitrootlogin yes" in result["evidence"]


def test_match_user_and_group_are_each_tried(tmp_path):
    for block in ("Match User deploy\n", "Match Group root\n"):
        item = sshd_item(tmp_path, "MaxAuthTries 4\n%s  MaxAuthTries 10\n" % block, r"(?m)^maxauthtries\s+[1-4]$")
        result = run_sshd(item)
        assert result["status"] == "failed" and block.strip() in result["evidence"], result


def test_match_blocks_that_keep_the_setting_pass(tmp_path):
    item = sshd_item(tmp_path, "PermitRootLogin no\nMatch User deploy\n  X11Forwarding no\n", r"(?mi)^permitrootlogin\s+no$")
    result = run_sshd(item)
    assert result["status"] == "pass" and "3 connections" in result["evidence"], result


def test_connections_cover_every_match_criterion():
    config = ["Match User alice,!bob Address 10.1.0.0/16 LocalPort 2222", "Match Host *.corp", "Match Group nobody-has-it"]
    base = [{"user": "root", "addr": "192.0.2.10"}, {"user": "alice0", "addr": "192.0.2.10"}]
    found = dict(cis_effective.sshd_connections(config, base, lambda group: None))
    assert found["Match User alice,!bob Address 10.1.0.0/16 LocalPort 2222"] == {"user": "alice", "addr": "10.1.0.1", "lport": "2222"}
    assert found["Match Host *.corp"]["host"] == "x.corp"
    assert found["Match Group nobody-has-it"] is None


def test_ipv6_forwarding_stays_enforced_when_ipv4_is_waived(tmp_path):
    proc = tmp_path / "proc"
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/ipv6/conf/all/forwarding", "1")):
        (proc / key).parent.mkdir(parents=True, exist_ok=True)
        (proc / key).write_text(value + "\n")
    control = {"id": "3.3.1", "settings": {"net.ipv4.ip_forward": 0, "net.ipv6.conf.all.forwarding": 0},
               "keep_for_docker_ipv6": ["net.ipv6.conf.all.forwarding"],
               "waived_settings": {"net.ipv4.ip_forward": "Docker needs it", "net.ipv6.conf.all.forwarding": ""}}
    persist = tmp_path / "90-cis.conf"
    kwargs = dict(proc_root=str(proc), dirs=(str(tmp_path / "sysctl.d"),), legacy=str(tmp_path / "none"),
                  docker_config=str(tmp_path / "daemon.json"))
    results, changed, _diff = cis_sysctl.apply([control], str(persist), **kwargs)
    assert changed and (proc / "net/ipv6/conf/all/forwarding").read_text() == "0"
    assert (proc / "net/ipv4/ip_forward").read_text().strip() == "1"
    assert "net.ipv6.conf.all.forwarding = 0" in persist.read_text() and "ip_forward" not in persist.read_text()
    assert results[0]["status"] == "waived" and "Docker needs it" in results[0]["reason"]
    results, changed, _diff = cis_sysctl.apply([control], str(persist), **kwargs)
    assert not changed and results[0]["status"] == "waived"


def test_docker_ipv6_networks_keep_ipv6_forwarding(tmp_path):
    proc = tmp_path / "proc"
    (proc / "net/ipv6/conf/all").mkdir(parents=True)
    (proc / "net/ipv6/conf/all/forwarding").write_text("1\n")
    (tmp_path / "daemon.json").write_text(json.dumps({"ipv6": True, "fixed-cidr-v6": "fd00::/80"}))
    control = {"id": "3.3.1", "settings": {"net.ipv6.conf.all.forwarding": 0},
               "keep_for_docker_ipv6": ["net.ipv6.conf.all.forwarding"]}
    results, changed, _diff = cis_sysctl.apply([control], str(tmp_path / "90.conf"), proc_root=str(proc),
                                               dirs=(), legacy=str(tmp_path / "none"),
                                               docker_config=str(tmp_path / "daemon.json"))
    assert not changed and (proc / "net/ipv6/conf/all/forwarding").read_text() == "1\n"
    assert results[0]["status"] == "waived" and "ipv6" in results[0]["reason"]
