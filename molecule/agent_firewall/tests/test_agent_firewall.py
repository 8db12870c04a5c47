"""Promises of guardrail.ecs.agent_firewall on a CIS-hardened ECS host: the lab
image's real Docker daemon, tasks that are real bridge-mode `docker run`
containers, and stand-ins for the ECS agent and the metadata service
(tests/lab/ecs_agent_standins.yml). Tests run in file order: the restarts,
then the boot files a user writes by hand, then a boot file that no longer
loads, each followed by a reboot of the host."""
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[3]
CONTAINER = "lab-agent_firewall"
TASK_IMAGE = "lab/busybox"
# busybox's wget crashes on the lab image: the request is written with nc.
PROBE_SCRIPT = 'printf "GET %s HTTP/1.0\\r\\n\\r\\n" "$2" | nc -w 3 "$1" 80'
# (address, path, what the answer holds)
CREDENTIALS = ("169.254.170.2", "/v2/credentials", "AccessKeyId")
IMDS = ("169.254.169.254", "/latest/meta-data/", "instance-id")
RULES_FILE = "/etc/iptables/rules.v4"
PROBE_TABLE = Path(os.environ.get("LAB_PROBE_TABLE", ROOT / ".cache" / "agent_firewall-probes.txt"))
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


class Probe(NamedTuple):
    rc: int
    stdout: str
    stderr: str
    reached: bool

    @property
    def body(self):
        return self.stdout.split("\r\n\r\n", 1)[-1]


def probe(host, target):
    """A real bridge-mode task (`docker run`) asking target's address:80 for its path."""
    address, path, marker = target
    result = host.run("docker run --rm %s sh -c %s probe %s %s", TASK_IMAGE, PROBE_SCRIPT, address, path)
    # 125-127: docker run itself failed, which says nothing about the firewall.
    assert result.rc not in (125, 126, 127), f"docker run failed: {result.stderr}"
    return Probe(result.rc, result.stdout, result.stderr, result.rc == 0 and marker in result.stdout)


def assert_task_path(host, phase):
    """Credentials reachable and the metadata service blocked from a task; the
    outcome is added to the probe table."""
    credentials, imds = probe(host, CREDENTIALS), probe(host, IMDS)
    record_probes(phase, credentials, imds)
    assert credentials.reached, f"{phase}: no credentials: rc={credentials.rc} {credentials.stderr}"
    assert not imds.reached and imds.rc != 0, f"{phase}: a task reached the metadata service: {imds.stdout}"


def record_probes(phase, credentials, imds):
    def cell(result):
        return f"{'reached' if result.reached else 'blocked'} (rc={result.rc})"
    PROBE_TABLE.parent.mkdir(parents=True, exist_ok=True)
    with PROBE_TABLE.open("a") as table:
        table.write(f"| {phase} | {cell(credentials)} | {cell(imds)} |\n")


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


def test_before_the_role_a_task_got_no_credentials_and_reached_the_metadata_service(host):
    seen = {}
    for name, target in (("credentials", CREDENTIALS), ("imds", IMDS)):
        record = json.loads(host.file(f"/var/lib/lab-probes/before-{name}.json").content_string)
        seen[name] = Probe(record["rc"], record["stdout"], record["stderr"],
                           record["rc"] == 0 and target[2] in record["stdout"])
        assert record["rc"] not in (125, 126, 127), f"prepare's docker run failed: {record}"
    PROBE_TABLE.parent.mkdir(parents=True, exist_ok=True)
    PROBE_TABLE.write_text("| phase | task -> credentials (169.254.170.2) | task -> IMDS (169.254.169.254) |\n"
                           "| --- | --- | --- |\n")
    record_probes("before the role", seen["credentials"], seen["imds"])
    assert not seen["credentials"].reached and seen["credentials"].rc != 0, seen["credentials"]
    assert seen["imds"].reached, seen["imds"]


def test_task_fetches_credentials_from_the_agent(host):
    result = probe(host, CREDENTIALS)
    assert result.reached, result.stderr
    assert json.loads(result.body)["AccessKeyId"] == "ASIALABSTANDIN000000"


def test_task_cannot_reach_the_metadata_service(host):
    assert_task_path(host, "after the role")
    host_itself = host.run("curl -sS --max-time 3 http://%s%s" % IMDS[:2])
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
        assert result.reached, result.stderr
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
        assert not probe(host, CREDENTIALS).reached, "credentials still reachable without the jump"
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
    assert probe(host, CREDENTIALS).reached, "the re-apply unit did not restore the jump"


def test_docker_restart_keeps_the_rules(host):
    host.check_output("systemctl restart docker")
    host.check_output("systemctl is-active agent-firewall")
    assert_task_path(host, "after systemctl restart docker")
    assert_rules_in_place(host)


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
    assert probe(host, CREDENTIALS).reached


def assert_rules_in_place(host):
    """DOCKER-USER first in FORWARD, each jump there once, no rule twice in any chain."""
    assert host.iptables.rules("filter", "FORWARD")[1] == "-A FORWARD -j DOCKER-USER"
    for table, source, target in JUMPS:
        assert host.iptables.rules(table, source).count(f"-A {source} -j {target}") == 1, (source, target)
    for table in ("filter", "nat"):
        rules = [rule for rule in host.iptables.rules(table) if rule.startswith("-A ")]
        assert len(rules) == len(set(rules)), sorted({r for r in rules if rules.count(r) > 1})


def converge_changes(host):
    """Runs the role; the names of the tasks that reported a change."""
    rc, out = run_playbook(CONVERGE)
    assert rc == 0, [r.get("msg") for _name, r in host_results(out) if r.get("failed")]
    return [name for name, result in host_results(out) if result.get("changed")]


def test_ecs_restart_keeps_the_rules_and_a_run_after_the_restarts_changes_nothing(host):
    # ecs-init inserts its rules at the top of INPUT at every start.
    host.check_output("systemctl restart ecs")
    wait_listening(host, 51679)
    assert_task_path(host, "after systemctl restart ecs")
    assert_rules_in_place(host)
    assert converge_changes(host) == []


def reboot(host):
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf"))
    subprocess.run(["podman", "restart", CONTAINER], env=env, check=True, timeout=180, capture_output=True)
    deadline = time.time() + 180
    state = ""
    while time.time() < deadline:
        state = host.run("systemctl is-system-running").stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    assert state in ("running", "degraded"), f"host did not finish booting: {state}"
    failed = host.check_output("systemctl list-units --failed --no-legend --plain")
    assert "agent-firewall" not in failed and "docker.service" not in failed, failed
    wait_listening(host, 51679)


def write_file(host, path, text):
    host.check_output("printf '%%s' %s > %s", text, path)


def wait_listening(host, port):
    for _attempt in range(60):
        if "LISTEN" in host.run(f"ss -ltn 'sport = :{port}'").stdout:
            return
        time.sleep(1)
    pytest.fail(f"nothing listens on port {port}: the agent stand-in did not come back")


# Boot files a user wrote by hand: a CIS-style firewall whose INPUT ends in a
# jump to a log-and-drop chain, declaring its chains (DOCKER-USER included)
# in one spelling or the other.
HAND_WRITTEN = """\
# Written by hand.
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
{declare_log_drop}
{declare_docker_user}
-A INPUT -i lo -j ACCEPT
-A INPUT -s 127.0.0.0/8 -j DROP
-A INPUT -p tcp -m state --state ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
-A INPUT -j LOG-DROP
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -p tcp -m state --state NEW,ESTABLISHED -j ACCEPT
-A OUTPUT -p udp -m state --state NEW,ESTABLISHED -j ACCEPT
-A LOG-DROP -j LOG --log-prefix "dropped: "
-A LOG-DROP -j DROP
-A DOCKER-USER -j RETURN
COMMIT
"""
SPELLINGS = {
    "-N": {"declare_log_drop": "-N LOG-DROP", "declare_docker_user": "-N DOCKER-USER"},
    ":": {"declare_log_drop": ":LOG-DROP - [0:0]", "declare_docker_user": ":DOCKER-USER - [0:0]"},
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_a_hand_written_boot_file_is_merged_and_loads_at_the_next_boot(host, spelling):
    write_file(host, RULES_FILE, HAND_WRITTEN.format(**SPELLINGS[spelling]))
    assert host.run(f"unshare --net iptables-restore {RULES_FILE}").rc == 0, "the hand-written file does not load"
    converge_changes(host)
    text = host.file(RULES_FILE).content_string
    declarations = [line for line in text.splitlines() if line in (":DOCKER-USER - [0:0]", "-N DOCKER-USER")]
    assert len(declarations) == 1, text
    assert "-A INPUT -j LOG-DROP" in text and "-A LOG-DROP -j DROP" in text
    lines = text.splitlines()
    assert lines.index("-A INPUT -j AGENT-FW-INPUT") < lines.index("-A INPUT -j LOG-DROP"), text
    reboot(host)
    assert host.run("systemctl is-failed netfilter-persistent").stdout.strip() == "active"
    assert "-P INPUT DROP" in host.iptables.rules("filter"), "the boot file was not loaded"
    assert "-A INPUT -j LOG-DROP" in host.iptables.rules("filter", "INPUT")
    banner = tcp_banner(container_ip(), 22)
    assert isinstance(banner, bytes) and banner.startswith(b"SSH-2.0"), banner
    assert_task_path(host, f"after a reboot (hand-written boot file, {spelling} spelling)")
    assert_rules_in_place(host)
    assert converge_changes(host) == []


BROKEN = "-A INPUT -p tcp --no-such-option -j ACCEPT"


def test_a_boot_file_that_does_not_load_is_refused_and_nothing_changes(host):
    text = host.file(RULES_FILE).content_string
    broken = text.replace("\nCOMMIT\n", f"\n{BROKEN}\nCOMMIT\n", 1)
    assert broken != text
    write_file(host, RULES_FILE, broken)
    saved = live_rules(host)
    rc, out = run_playbook(CONVERGE)
    assert rc != 0
    failed = [result for _name, result in host_results(out) if result.get("failed")]
    assert failed and "would not load at boot, so nothing was changed" in failed[0]["msg"], failed
    assert "--no-such-option" in failed[0]["msg"], failed[0]["msg"]
    assert host.file(RULES_FILE).content_string == broken
    assert live_rules(host) == saved


def test_a_boot_file_that_does_not_load_boots_the_host_closed(host):
    # Debian's netfilter-persistent tests the file first (IPTABLES_TEST_RULESET=yes
    # by default), skips one that fails, and succeeds: its unit is no witness.
    reboot(host)
    assert BROKEN in host.file(RULES_FILE).content_string
    assert host.run("systemctl is-failed netfilter-persistent").stdout.strip() == "active"
    rules = host.iptables.rules("filter")
    for chain in ("INPUT", "FORWARD", "OUTPUT"):
        assert f"-P {chain} DROP" in rules, rules
    banner = tcp_banner(container_ip(), 22)
    assert isinstance(banner, bytes) and banner.startswith(b"SSH-2.0"), banner
    assert_task_path(host, "after a reboot with a boot file that does not load")
    journal = host.check_output("journalctl -b -u agent-firewall --no-pager")
    assert "closing the host" in journal and RULES_FILE in journal, journal
