"""The iptables_chains module's result shaping over a host whose iptables
commands are replaced by an in-memory stand-in. molecule/agent_firewall runs
the module against real iptables."""
import json

import pytest
from ansible.module_utils import basic
from module_args import patch_module_args

from ansible_collections.guardrail.ecs.plugins.module_utils.firewall import iptables
from ansible_collections.guardrail.ecs.plugins.modules import iptables_chains

LIVE = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -s 127.0.0.0/8 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
COMMIT
"""
CHAINS = [
    {"name": "AGENT-FW-INPUT", "rules": ["-d 127.0.0.0/8 -i docker0 -p tcp -m tcp --dport 51679 -j ACCEPT"],
     "jump_from": ["INPUT"]},
    {"table": "nat", "name": "AGENT-FW-PREROUTING",
     "rules": ["-d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679"],
     "jump_from": ["PREROUTING"], "omit_rules_found_in": ["PREROUTING"]},
]


class FakeHost:
    def __init__(self, refuse_table=None):
        self.loads = []
        self.proofs = []
        self.refuse_table = refuse_table
        self.refuse_proof = None

    def run(self, argv, data=None, timeout=None):
        if argv[0].endswith("iptables-save"):
            return 0, LIVE, ""
        if argv[0].endswith("unshare"):
            assert argv[1:] == ["--net", "/usr/sbin/iptables-restore"]
            self.proofs.append(data)
            return (1, "", self.refuse_proof) if self.refuse_proof else (0, "", "")
        self.loads.append(data)
        if self.refuse_table and data.startswith("*" + self.refuse_table):
            return 2, "", "iptables-restore: line 3 failed"
        return 0, "", ""


@pytest.fixture
def fake_host(monkeypatch):
    host = FakeHost()
    monkeypatch.setattr(iptables, "run", host.run)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, *args, **kwargs: "/usr/sbin/" + name)
    return host


def run_module(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            iptables_chains.main()
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # Once controller code is imported in the same process (another test file),
    # ansible-core 2.19 sends module warnings to the display, not the result.
    result["_warning_text"] = json.dumps(result.get("warnings", [])) + captured.err
    return result


def test_check_mode_reports_the_change_with_a_diff_and_loads_nothing(fake_host, capsys, tmp_path):
    rules_file = tmp_path / "rules.v4"
    result = run_module(capsys, chains=CHAINS, path=str(rules_file), _ansible_check_mode=True, _ansible_diff=True)
    assert result["changed"] and result["path_changed"]
    assert result["commands"]["filter"][-1] == "-I INPUT 2 -j AGENT-FW-INPUT"
    live, saved = result["diff"]
    assert "+-A INPUT -j AGENT-FW-INPUT" not in live["before"] and "-A INPUT -j AGENT-FW-INPUT" in live["after"]
    assert saved["before"] == "" and ":AGENT-FW-INPUT - [0:0]" in saved["after"]
    assert fake_host.loads == [] and not rules_file.exists()


def test_a_run_loads_each_table_and_writes_the_rules_file(fake_host, capsys, tmp_path):
    rules_file = tmp_path / "rules.v4"
    result = run_module(capsys, chains=CHAINS, path=str(rules_file))
    assert result["changed"]
    assert [load.splitlines()[0] for load in fake_host.loads] == ["*filter", "*nat"]
    assert result["chains"][1]["rules"] == CHAINS[1]["rules"]
    assert "-A AGENT-FW-INPUT -d 127.0.0.0/8" in rules_file.read_text()
    assert rules_file.stat().st_mode & 0o777 == 0o600


def test_a_refused_table_fails_with_iptables_message_and_leaves_the_file(fake_host, capsys, tmp_path):
    fake_host.refuse_table = "nat"
    rules_file = tmp_path / "rules.v4"
    rules_file.write_text(LIVE)
    result = run_module(capsys, chains=CHAINS, path=str(rules_file))
    assert result["failed"]
    assert "refused table nat: iptables-restore: line 3 failed" in result["msg"]
    assert [load.splitlines()[0] for load in fake_host.loads] == ["*filter", "*nat", "*filter"]
    assert rules_file.read_text() == LIVE


def test_bad_input_fails_before_loading(fake_host, capsys):
    result = run_module(capsys, chains=[{"name": "INPUT", "rules": []}])
    assert result["failed"] and "built in" in result["msg"]
    assert fake_host.loads == []


def test_the_whole_merged_file_is_proven_to_load_before_anything_changes(fake_host, capsys, tmp_path):
    rules_file = tmp_path / "rules.v4"
    hand_written = "*filter\n:INPUT DROP [0:0]\n-N DOCKER-USER\n-A INPUT -j NOWHERE\nCOMMIT\n"
    rules_file.write_text(hand_written)
    fake_host.refuse_proof = "iptables-restore v1.8.9 (nf_tables): Couldn't load target `NOWHERE'\nError occurred at line: 4"
    result = run_module(capsys, chains=CHAINS, path=str(rules_file))
    assert result["failed"]
    assert "would not load at boot, so nothing was changed" in result["msg"]
    assert "Couldn't load target `NOWHERE'" in result["msg"]
    assert fake_host.proofs and fake_host.proofs[0].startswith("*filter")
    assert fake_host.loads == [] and rules_file.read_text() == hand_written


def test_placements_say_where_each_jump_is(fake_host, capsys, tmp_path):
    result = run_module(capsys, chains=CHAINS, path=str(tmp_path / "rules.v4"))
    assert {"table": "filter", "chain": "INPUT", "jump": "AGENT-FW-INPUT", "position": 2,
            "ahead_of": "-s 127.0.0.0/8 -j DROP"} in result["placements"]
    assert len(fake_host.proofs) == 1


def test_a_policy_the_live_ruleset_lost_is_set_back_with_a_warning(fake_host, capsys, tmp_path, monkeypatch):
    # The boot file holds INPUT DROP; the live ruleset was flushed to ACCEPT.
    monkeypatch.setattr(fake_host, "run", lambda argv, data=None, timeout=None: (
        (0, LIVE.replace(":INPUT DROP", ":INPUT ACCEPT"), "") if argv[0].endswith("iptables-save")
        else FakeHost.run(fake_host, argv, data, timeout)))
    monkeypatch.setattr(iptables, "run", fake_host.run)
    rules_file = tmp_path / "rules.v4"
    rules_file.write_text(LIVE)
    result = run_module(capsys, chains=CHAINS, path=str(rules_file), policies={"INPUT": "DROP"})
    assert result["policies"] == [{"table": "filter", "chain": "INPUT", "before": "ACCEPT", "after": "DROP"}]
    assert fake_host.loads[0].splitlines()[1] == ":INPUT DROP [0:0]"
    # ansible-core 2.19 returns warnings as objects: look in their text.
    assert "the live policy of INPUT was ACCEPT, not DROP as in %s" % rules_file in result["_warning_text"]


def test_a_first_run_sets_policies_without_a_warning(fake_host, capsys, tmp_path):
    result = run_module(capsys, chains=CHAINS, path=str(tmp_path / "rules.v4"), policies={"OUTPUT": "ACCEPT"})
    assert result["policies"] == [{"table": "filter", "chain": "OUTPUT", "before": "DROP", "after": "ACCEPT"}]
    # Warnings collect process-wide across these in-process runs: look for this run's only.
    assert "live policy of OUTPUT" not in result["_warning_text"]
    assert ":OUTPUT ACCEPT [0:0]" in (tmp_path / "rules.v4").read_text()


def test_absent_loads_the_removal_and_takes_the_chains_out_of_the_file(fake_host, capsys, tmp_path):
    rules_file = tmp_path / "rules.v4"
    run_module(capsys, chains=CHAINS, path=str(rules_file), policies={"INPUT": "DROP"})
    fake_host.loads.clear()
    result = run_module(capsys, chains=CHAINS, path=str(rules_file), policies={"INPUT": "DROP"}, state="absent")
    assert result["policies"] == [{"table": "filter", "chain": "INPUT", "before": "DROP", "after": "ACCEPT"}]
    assert "AGENT-FW" not in rules_file.read_text() and ":INPUT ACCEPT [0:0]" in rules_file.read_text()
