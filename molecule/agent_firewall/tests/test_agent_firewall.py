"""Promises of guardrail.ecs.agent_firewall on a CIS-hardened ECS host stand-in
(tests/lab/ecs_agent_standins.yml). Tests run in file order; the simulated
reboot is last."""
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CONTAINER = "lab-agent_firewall"
CREDENTIALS = "http://169.254.170.2/v2/credentials"
IMDS = "http://169.254.169.254/latest/meta-data/"
PROBE = "/usr/local/bin/lab-task-probe"
RULES_FILE = "/etc/iptables/rules.v4"
OWN_CHAINS = {
    "filter": ["AGENT-FW-INPUT", "AGENT-FW-OUTPUT", "AGENT-FW-DOCKER"],
    "nat": ["AGENT-FW-PREROUTING", "AGENT-FW-NAT-OUTPUT"],
}
JUMPS = [
    ("filter", "INPUT", "AGENT-FW-INPUT"),
    ("filter", "OUTPUT", "AGENT-FW-OUTPUT"),
    ("filter", "FORWARD", "DOCKER-USER"),
    ("filter", "DOCKER-USER", "AGENT-FW-DOCKER"),
    ("nat", "PREROUTING", "AGENT-FW-PREROUTING"),
    ("nat", "OUTPUT", "AGENT-FW-NAT-OUTPUT"),
]


def probe(host, url):
    return host.run(f"{PROBE} {url}")


def chain_rules(host, table, chain):
    out = host.check_output(f"iptables -w -t {table} -S {chain}")
    return [line for line in out.splitlines() if line.startswith("-A ")]


def live_rules(host):
    """iptables-save without counters and comment lines, for comparisons."""
    out = host.check_output("iptables-save")
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in out.splitlines() if not line.startswith("#")]


def container_ip():
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf"))
    out = subprocess.run(["podman", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", CONTAINER],
                         capture_output=True, text=True, env=env, check=True, timeout=30).stdout.strip()
    assert out, f"no IP address for {CONTAINER}"
    return out


def tcp_banner(address, port, timeout=3):
    """The first bytes the peer sends, or the exception connecting raised."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            return conn.recv(64)
    except OSError as exc:
        return exc


def run_playbook(text, *args, extra_vars=None):
    """ansible-playbook against this scenario's host; (rc, output)."""
    env = dict(os.environ)
    env.update(ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    playbook = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp")) / f"verify-{os.getpid()}.yml"
    playbook.write_text(textwrap.dedent(text))
    cmd = ["ansible-playbook", "-i", inventory, str(playbook), *args]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    finally:
        playbook.unlink()
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"ansible-playbook printed no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def host_results(out):
    return [(task["task"]["name"], result) for play in out["plays"] for task in play["tasks"]
            for result in task["hosts"].values()]


CONVERGE = """
- hosts: all
  gather_facts: false
  roles:
    - guardrail.ecs.agent_firewall
"""


def test_before_the_role_tasks_could_not_fetch_credentials(host):
    before = json.loads(host.file("/var/lib/lab-probes/before-credentials.json").content_string)
    assert before["rc"] != 0, f"the task fetched credentials before the role: {before}"
    assert "AccessKeyId" not in before["stdout"]


def test_before_the_role_tasks_reached_the_metadata_service(host):
    before = json.loads(host.file("/var/lib/lab-probes/before-imds.json").content_string)
    assert before["rc"] == 0 and "instance-id" in before["stdout"], before


def test_task_fetches_credentials_from_the_agent(host):
    result = probe(host, CREDENTIALS)
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"] == "ASIALABSTANDIN000000"


def test_task_cannot_reach_the_metadata_service(host):
    result = probe(host, IMDS)
    assert result.rc != 0, f"task reached the metadata service: {result.stdout}"
    host_itself = host.run("curl -sS --max-time 3 " + IMDS)
    assert host_itself.rc == 0 and "instance-id" in host_itself.stdout, "the metadata stand-in is down"


def test_ssh_is_accepted_from_off_host():
    banner = tcp_banner(container_ip(), 22)
    assert isinstance(banner, bytes) and banner.startswith(b"SSH-2.0"), banner


def test_introspection_port_is_closed_off_host_and_open_on_loopback(host):
    assert not isinstance(tcp_banner(container_ip(), 51678), bytes)
    assert host.run("curl -sS --max-time 3 http://127.0.0.1:51678/v1/metadata").rc == 0


def test_credentials_and_ssh_work_without_the_hosts_established_rules(host):
    # Default-deny at its strictest: the role's own chains carry the replies.
    host_rules = [("INPUT", "-p tcp -m state --state ESTABLISHED -j ACCEPT"),
                  ("OUTPUT", "-p tcp -m state --state NEW,ESTABLISHED -j ACCEPT")]
    positions = [(chain, chain_rules(host, "filter", chain).index(f"-A {chain} {rule}") + 1, rule)
                 for chain, rule in host_rules]
    for chain, _position, rule in positions:
        host.check_output(f"iptables -w -D {chain} {rule}")
    try:
        result = probe(host, CREDENTIALS)
        assert result.rc == 0, result.stderr
        banner = tcp_banner(container_ip(), 22)
        assert isinstance(banner, bytes) and banner.startswith(b"SSH-2.0"), banner
    finally:
        for chain, position, rule in positions:
            host.check_output(f"iptables -w -I {chain} {position} {rule}")


def test_route_localnet_is_on_and_persisted(host):
    assert host.sysctl("net.ipv4.conf.all.route_localnet") == 1
    assert "net.ipv4.conf.all.route_localnet=1" in host.file("/etc/sysctl.d/90-agent-firewall.conf").content_string


def test_awsvpc_tasks_are_blocked_by_the_agent_setting(host):
    config = host.file("/etc/ecs/ecs.config")
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in config.content_string.splitlines()
    assert config.mode == 0o600


@pytest.mark.parametrize("table,source,target", JUMPS)
def test_each_jump_is_there_once_ahead_of_every_drop(host, table, source, target):
    rules = chain_rules(host, table, source)
    jump = f"-A {source} -j {target}"
    assert rules.count(jump) == 1, rules
    terminal = [i for i, rule in enumerate(rules) if rule.split()[-1] in ("DROP", "REJECT", "RETURN")]
    assert not terminal or rules.index(jump) < terminal[0], rules


def test_own_chains_hold_no_duplicates(host):
    for table, chains in OWN_CHAINS.items():
        for chain in chains:
            rules = chain_rules(host, table, chain)
            assert len(rules) == len(set(rules)), (chain, rules)


def test_ecs_init_nat_rules_are_not_duplicated(host):
    # The ecs-init stand-in installed both NAT rules; the role's nat chains stay empty.
    assert chain_rules(host, "nat", "AGENT-FW-PREROUTING") == []
    assert chain_rules(host, "nat", "AGENT-FW-NAT-OUTPUT") == []
    prerouting = chain_rules(host, "nat", "PREROUTING")
    assert sum("169.254.170.2/32" in rule for rule in prerouting) == 1, prerouting


def test_rules_file_holds_the_role_chains_and_no_dynamic_rules(host):
    text = host.file(RULES_FILE).content_string
    for chains in OWN_CHAINS.values():
        for chain in chains:
            assert f":{chain} - [0:0]" in text
    assert "-A INPUT -j AGENT-FW-INPUT" in text
    assert "-A AGENT-FW-DOCKER -d 169.254.169.254/32 -i docker+ -j DROP" in text
    # The CIS rules stay; Docker's and ecs-init's live rules were not saved.
    assert "-A INPUT -s 127.0.0.0/8 -j DROP" in text
    for dynamic in ("docker0 -j ACCEPT", "MASQUERADE", "--to-destination 127.0.0.1:51679",
                    "-i eth0 -p tcp -m tcp --dport 51678", "NETAVARK"):
        assert dynamic not in text, dynamic
    assert host.run(f"iptables-restore --test {RULES_FILE}").rc == 0


def test_reapply_unit_runs_after_the_restore_and_before_docker_and_ecs(host):
    assert host.service("agent-firewall").is_enabled
    shown = host.check_output("systemctl show agent-firewall -p After -p Before -p PartOf")
    assert "netfilter-persistent.service" in shown
    before = next(line for line in shown.splitlines() if line.startswith("Before="))
    assert "docker.service" in before and "ecs.service" in before


def test_check_mode_shows_a_lost_jump_and_changes_nothing(host):
    host.check_output("iptables -w -D INPUT -j AGENT-FW-INPUT")
    try:
        assert probe(host, CREDENTIALS).rc != 0, "credentials still reachable without the jump"
        saved = live_rules(host)
        rc, out = run_playbook(CONVERGE, "--check", "--diff")
        assert rc == 0
        loaded = [r for name, r in host_results(out) if "Accept tasks' traffic" in name]
        assert loaded and loaded[0]["changed"], loaded
        live_diff = loaded[0]["diff"][0]
        assert "-A INPUT -j AGENT-FW-INPUT" not in live_diff["before"]
        assert "-A INPUT -j AGENT-FW-INPUT" in live_diff["after"]
        assert live_rules(host) == saved, "check mode changed the live rules"
    finally:
        host.check_output("systemctl restart agent-firewall")
    assert probe(host, CREDENTIALS).rc == 0, "the re-apply unit did not restore the jump"


def test_docker_restart_keeps_the_rules(host):
    host.check_output("systemctl restart docker")
    host.check_output("systemctl is-active agent-firewall")
    assert probe(host, CREDENTIALS).rc == 0
    assert probe(host, IMDS).rc != 0
    assert chain_rules(host, "filter", "FORWARD")[0] == "-A FORWARD -j DOCKER-USER"


def test_invalid_cidr_is_refused_with_a_clear_message_and_changes_nothing(host):
    saved = live_rules(host)
    saved_file = host.file(RULES_FILE).content_string
    rc, out = run_playbook(CONVERGE, extra_vars={"agent_firewall_ssh_sources": ["10.0.0.0/33"]})
    assert rc != 0
    failed = [(name, r) for name, r in host_results(out) if r.get("failed")]
    assert failed and "agent_firewall_ssh_sources" in failed[0][1]["msg"] and "10.0.0.0/33" in failed[0][1]["msg"]
    assert live_rules(host) == saved
    assert host.file(RULES_FILE).content_string == saved_file


def test_a_refused_rule_set_leaves_the_previous_rules_and_reports_iptables_error(host):
    saved = live_rules(host)
    saved_file = host.file(RULES_FILE).content_string
    rc, out = run_playbook("""
        - hosts: all
          gather_facts: false
          tasks:
            - name: Load a rule set whose nat table iptables refuses
              guardrail.ecs.iptables_chains:
                path: /etc/iptables/rules.v4
                chains:
                  - name: AGENT-FW-INPUT
                    rules: ["-p tcp -m tcp --dport 2222 -j ACCEPT"]
                    jump_from: [INPUT]
                  - table: nat
                    name: AGENT-FW-PREROUTING
                    rules: ["-p tcp -m tcp --dport 80 -j NO-SUCH-TARGET"]
                    jump_from: [PREROUTING]
        """)
    assert rc != 0
    result = host_results(out)[0][1]
    # The whole boot file is loaded in a scratch network namespace first: the refusal comes
    # before anything live or on disk is touched, with the loader's own message.
    assert "would not load at boot, so nothing was changed" in result["msg"], result["msg"]
    assert "NO-SUCH-TARGET" in result["msg"], result["msg"]
    assert live_rules(host) == saved, "the filter table was not put back"
    assert host.file(RULES_FILE).content_string == saved_file
    assert probe(host, CREDENTIALS).rc == 0


def test_after_a_reboot_the_rules_are_back_and_tasks_still_get_credentials(host):
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf"))
    subprocess.run(["podman", "restart", CONTAINER], env=env, check=True, timeout=120, capture_output=True)
    deadline = time.time() + 120
    state = ""
    while time.time() < deadline:
        state = host.run("systemctl is-system-running").stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    assert state in ("running", "degraded"), f"host did not finish booting: {state}"
    failed = host.check_output("systemctl list-units --failed --no-legend --plain")
    assert "agent-firewall" not in failed and "docker.service" not in failed, failed
    assert host.run("systemctl is-active agent-firewall").stdout.strip() == "active"
    listening = False
    for _attempt in range(30):
        listening = "LISTEN" in host.run("ss -ltn 'sport = :51679'").stdout
        if listening:
            break
        time.sleep(1)
    assert listening, "the agent stand-in did not come back"
    result = probe(host, CREDENTIALS)
    assert result.rc == 0 and "AccessKeyId" in result.stdout, result.stderr
    assert probe(host, IMDS).rc != 0
    for table, source, target in JUMPS:
        assert chain_rules(host, table, source).count(f"-A {source} -j {target}") == 1, (source, target)
