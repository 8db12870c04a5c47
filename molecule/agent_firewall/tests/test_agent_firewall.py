"""Promises of guardrail.ecs.agent_firewall on an ECS host with no firewall of
its own: the lab image's real Docker daemon (with IPv6 networks), tasks that
are real `docker run` containers on docker0, on networks made by `docker
network create` before and after the role ran, and on an IPv6 network, and
stand-ins for the ECS agent and the metadata service
(tests/lab/ecs_agent_standins.yml). Tests run in file order: the restarts,
removal, a flushed ruleset, then the boot files a user writes by hand, then a
boot file that no longer loads, each followed by a reboot of the host."""
import json
import os
import re
import shutil
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
IMDS6 = ("fd00:ec2::254", "/latest/meta-data/", "instance-id")
RULES_FILE = "/etc/iptables/rules.v4"
RULES_FILE6 = "/etc/iptables/rules.v6"
# docker0, a `docker network create` network and an IPv6 one, all made before the role ran (prepare.yml).
NETWORKS = ("bridge", "lab-user", "lab-v6")
IPV6_NETWORKS = ("lab-v6", "lab-later")
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
POLICIES = ("-P INPUT DROP", "-P FORWARD DROP", "-P OUTPUT ACCEPT")


class Probe(NamedTuple):
    rc: int
    stdout: str
    stderr: str
    reached: bool

    @property
    def body(self):
        return self.stdout.split("\r\n\r\n", 1)[-1]


def probe(host, target, network="bridge"):
    """A real task (`docker run` on network) asking target's address:80 for its path."""
    address, path, marker = target
    result = host.run("docker run --rm --network %s %s sh -c %s probe %s %s", network, TASK_IMAGE, PROBE_SCRIPT,
                      address, path)
    # 125-127: docker run itself failed, which says nothing about the firewall.
    assert result.rc not in (125, 126, 127), f"docker run failed: {result.stderr}"
    return Probe(result.rc, result.stdout, result.stderr, result.rc == 0 and marker in result.stdout)


def assert_task_path(host, phase, networks=NETWORKS):
    """From a task on each network: credentials reachable, the metadata service
    blocked (over IPv6 too on the IPv6 network); each outcome goes into the
    probe table."""
    problems = []
    for network in networks:
        targets = [("credentials", CREDENTIALS, True), ("IMDS", IMDS, False)]
        if network in IPV6_NETWORKS:
            targets.append(("IMDS over IPv6", IMDS6, False))
        for name, target, wanted in targets:
            result = probe(host, target, network)
            record_probe(network, name, phase, result)
            if result.reached != wanted:
                problems.append(f"{network} -> {name}: {'reached' if result.reached else 'blocked'} "
                                f"(rc={result.rc} {result.stderr.strip()})")
    assert not problems, f"{phase}: {problems}"


def record_probe(network, name, phase, result):
    PROBE_TABLE.parent.mkdir(parents=True, exist_ok=True)
    with PROBE_TABLE.open("a") as table:
        outcome = "reached" if result.reached else "blocked"
        table.write(f"| {network} | {name} | {phase} | {outcome} (rc={result.rc}) |\n")


def chain_rules(host, table, chain):
    out = host.check_output(f"iptables -w -t {table} -S {chain}")
    return [line for line in out.splitlines() if line.startswith("-A ")]


def live_rules(host, command="iptables"):
    """iptables-save without counters and comment lines, for comparisons."""
    out = host.check_output(f"{command}-save")
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


def test_before_the_role_tasks_on_every_network_reached_the_metadata_service(host):
    PROBE_TABLE.parent.mkdir(parents=True, exist_ok=True)
    PROBE_TABLE.write_text("| network | path | event | result |\n| --- | --- | --- | --- |\n")
    seen = {}
    for name, network, path, target in (("bridge-credentials", "bridge", "credentials", CREDENTIALS),
                                        ("bridge-imds", "bridge", "IMDS", IMDS),
                                        ("lab-user-imds", "lab-user", "IMDS", IMDS),
                                        ("lab-v6-imds6", "lab-v6", "IMDS over IPv6", IMDS6)):
        record = json.loads(host.file(f"/var/lib/lab-probes/before-{name}.json").content_string)
        assert record["rc"] not in (125, 126, 127), f"prepare's docker run failed: {record}"
        seen[name] = Probe(record["rc"], record["stdout"], record["stderr"],
                           record["rc"] == 0 and target[2] in record["stdout"])
        record_probe(network, path, "before the role", seen[name])
    assert [name for name, result in seen.items() if not result.reached] == [], seen


def test_the_host_is_default_deny_in_iptables_and_ip6tables(host):
    for command in ("iptables", "ip6tables"):
        rules = host.check_output(f"{command} -S").splitlines()
        assert [line for line in rules if line.startswith("-P ")] == list(POLICIES), (command, rules)
    for path in (RULES_FILE, RULES_FILE6):
        text = host.file(path).content_string
        for line in (":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]"):
            assert line in text, (path, text)


def test_ssh_is_dropped_from_a_source_not_listed(host):
    # A task container (172.17.0.0/16, not in agent_firewall_ssh_sources) tries the host's SSH port.
    result = host.run("docker run --rm %s nc -w 3 172.17.0.1 22", TASK_IMAGE)
    assert result.rc not in (125, 126, 127), result.stderr
    assert "SSH-2.0" not in result.stdout and result.rc != 0, result.stdout


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
    # ecs-init's drop of the introspection port (51678) from off-host, which it
    # puts first at every start, drops nothing the role's chain lets through:
    # the jump may stay behind it. Every other drop must come after the jump.
    terminal = [i for i, rule in enumerate(rules) if rule.split()[-1] in ("DROP", "REJECT", "RETURN")
                and "--dport 51678" not in rule]
    assert not terminal or rules.index(jump) < terminal[0], rules


def test_own_chains_hold_no_duplicates(host):
    for table, chains in OWN_CHAINS.items():
        for chain in chains:
            rules = chain_rules(host, table, chain)
            assert len(rules) == len(set(rules)), (chain, rules)


def test_the_role_keeps_its_own_nat_rules_beside_ecs_inits(host):
    # A restore of the boot file flushes ecs-init's rules: the role's must not depend on them.
    assert chain_rules(host, "nat", "AGENT-FW-PREROUTING") == [
        "-A AGENT-FW-PREROUTING -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679"]
    assert len(chain_rules(host, "nat", "AGENT-FW-NAT-OUTPUT")) == 1
    assert "-A AGENT-FW-PREROUTING -d 169.254.170.2/32" in host.file(RULES_FILE).content_string


def test_rules_file_holds_the_role_chains_and_no_dynamic_rules(host):
    text = host.file(RULES_FILE).content_string
    for chains in OWN_CHAINS.values():
        for chain in chains:
            assert f":{chain} - [0:0]" in text
    assert "-A INPUT -j AGENT-FW-INPUT" in text
    assert "-A AGENT-FW-DOCKER -d 169.254.169.254/32 -j DROP" in text
    assert "-A AGENT-FW-INPUT -s 127.0.0.0/8 -j DROP" in text
    # Docker's and ecs-init's live rules were not saved.
    # The role's own DNAT is there; ecs-init's (in PREROUTING itself) is not.
    for dynamic in ("docker0 -j ACCEPT", "MASQUERADE", "-A PREROUTING -d 169.254.170.2",
                    "-i eth0 -p tcp -m tcp --dport 51678", "NETAVARK"):
        assert dynamic not in text, dynamic
    assert host.run(f"iptables-restore --test {RULES_FILE}").rc == 0
    text6 = host.file(RULES_FILE6).content_string
    assert "-A AGENT-FW-FORWARD -d fd00:ec2::254/128 -j DROP" in text6 and "DOCKER-ISOLATION" not in text6
    assert host.run(f"ip6tables-restore --test {RULES_FILE6}").rc == 0


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
        loaded = [r for name, r in host_results(out) if "Load the default-deny" in name]
        assert loaded and loaded[0]["changed"], loaded
        live_diff = loaded[0]["results"][0]["diff"][0]
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


def converge_changes(host, extra_vars=None):
    """Runs the role; the names of the tasks that reported a change."""
    rc, out = run_playbook(CONVERGE, extra_vars=extra_vars)
    assert rc == 0, [r.get("msg") for _name, r in host_results(out) if r.get("failed")]
    return [name for name, result in host_results(out) if result.get("changed")]


def test_ecs_restart_keeps_the_rules_and_a_run_after_the_restarts_changes_nothing(host):
    # ecs-init inserts its rules at the top of INPUT at every start.
    host.check_output("systemctl restart ecs")
    wait_listening(host, 51679)
    assert_task_path(host, "after systemctl restart ecs")
    assert_rules_in_place(host)
    assert converge_changes(host) == []


def test_a_network_created_after_the_role_is_covered(host):
    # Docker puts a new network's accept rules at the top of FORWARD, in ip6tables too.
    host.check_output("docker network create --ipv6 --subnet fd00:d0c:0:3::/64 lab-later")
    assert_task_path(host, "network created after the role", networks=("lab-later",))
    assert converge_changes(host) == []


def test_restarting_netfilter_persistent_keeps_credentials_and_runs_stay_unchanged(host):
    # A full restore of the boot files: Docker's and ecs-init's rules are gone, the role's are not.
    host.check_output("systemctl restart netfilter-persistent")
    assert "AGENT-FW" in host.check_output("iptables-save -t nat")
    assert_task_path(host, "after systemctl restart netfilter-persistent")
    assert converge_changes(host) == []
    assert converge_changes(host) == []
    host.check_output("systemctl restart docker")
    assert_task_path(host, "after restarting netfilter-persistent, then docker")


def role_free(lines):
    return [line for line in lines if "AGENT-FW" not in line and not line.startswith(":")]


def test_absent_removes_exactly_the_roles_rules_live_and_at_boot(host):
    others = {command: role_free(live_rules(host, command)) for command in ("iptables", "ip6tables")}
    rc, out = run_playbook(CONVERGE, extra_vars={"agent_firewall_state": "absent"})
    assert rc == 0, [r.get("msg") for _name, r in host_results(out) if r.get("failed")]
    for command, path in (("iptables", RULES_FILE), ("ip6tables", RULES_FILE6)):
        after = live_rules(host, command)
        assert "AGENT-FW" not in "\n".join(after), after
        assert role_free(after) == others[command], command
        policies = [line for line in host.check_output(f"{command} -S").splitlines() if line.startswith("-P ")]
        assert policies == ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"], policies
        text = host.file(path).content_string
        assert "AGENT-FW" not in text and "DROP [0:0]" not in text, text
        assert host.run(f"unshare --net {command}-restore {path}").rc == 0
    for path in ("/etc/systemd/system/agent-firewall.service", "/usr/local/libexec/agent-firewall-apply",
                 "/usr/local/lib/agent-firewall"):
        assert not host.file(path).exists, path
    assert "ECS_AWSVPC_BLOCK_IMDS=true" not in host.file("/etc/ecs/ecs.config").content_string
    assert converge_changes(host, {"agent_firewall_state": "absent"}) == []
    converge_changes(host)
    assert_task_path(host, "after state absent, then present again")


def nft_in_the_host_s_network(*args):
    """nft run by this machine in the lab host's network namespace: installing nftables on the
    host under test would change what is tested."""
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("SKIPPED LOUDLY: no `nft` on this machine to flush the lab host's ruleset with "
                    "(Debian: apt-get install nftables)")
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf"))
    pid = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", CONTAINER], env=env, capture_output=True,
                         text=True, check=True, timeout=30).stdout.strip()
    proc = subprocess.run(["nsenter", "--target", pid, "--net", nft, *args], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_after_nft_flush_ruleset_a_run_restores_the_policies_and_says_so(host):
    assert not host.exists("nft"), "nftables is on the host under test: it must come from the machine"
    nft_in_the_host_s_network("flush", "ruleset")
    assert "-P INPUT ACCEPT" in host.check_output("iptables -S")
    rc, out = run_playbook(CONVERGE)
    assert rc == 0, [r.get("msg") for _name, r in host_results(out) if r.get("failed")]
    loaded = [r for name, r in host_results(out) if "Load the default-deny" in name]
    # Warnings are strings before ansible-core 2.19, objects after, on the items or the task: look in their text.
    warnings = json.dumps(loaded)
    assert "the live policy of INPUT was ACCEPT, not DROP" in warnings and RULES_FILE6 in warnings, warnings
    for command in ("iptables", "ip6tables"):
        rules = host.check_output(f"{command} -S").splitlines()
        assert [line for line in rules if line.startswith("-P ")] == list(POLICIES), (command, rules)
    host.check_output("systemctl restart docker")
    assert_task_path(host, "after nft flush ruleset, a run and a docker restart")
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
    # The loop's items carry the module's message.
    assert failed and "would not load at boot, so nothing was changed" in json.dumps(failed), failed
    assert "--no-such-option" in json.dumps(failed), failed
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
