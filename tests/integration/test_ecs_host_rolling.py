"""guardrail.ecs.ecs_host rolling an ECS cluster: lab hosts as the container
instances, ECS on a moto server over real HTTP.

Three privileged lab hosts (the full image: real Docker, the ECS agent and
ecs-init stand-ins behind a CIS-style firewall, tests/lab/ecs_agent_standins.yml)
are registered as the container instances of the moto cluster `prod`. Each runs
one task of the replica service `web` and one of the daemon `log-router`; the
stand-in scheduler (ecs_rollout_helpers.Scheduler) moves service tasks off
DRAINING instances. The agent's connection is the one thing moto cannot see:
`AgentLink` reports each host's ecs.service state as agentConnected, so a
rebooting host's agent is disconnected until its ecs.service is back.

Role set: the play runs with ecs_host_roles: [agent_firewall]. cis_hardening
takes about 3.5 minutes per host on this 2-core machine, and the CIS comparison
would run it twice more per host; three hosts with every role would not fit the
suite's time. The CIS comparison has its own test, with cis_hardening in
audit-only mode as the role set (a scan takes well under a minute).
The hosts are containers restarted by podman (--restart=always) when systemd
reboots; their boot_id is the machine's (lab-init shields /proc/sys/kernel),
so the play is told to tell boots apart by PID 1's start time.
"""
import json
import re
import subprocess
import threading
import time
import uuid

import pytest
import yaml

from conftest import ROOT, VENV_BIN, ansible_env, run_playbook, task_results
from ecs_image_guard_helpers import clients
from ecs_rollout_helpers import (
    Scheduler,
    cluster,
    hold_task_states,
    running_tasks,
    service,
    set_agent_connected,
    statuses,
)

pytestmark = pytest.mark.skipif(
    subprocess.run(["podman", "image", "exists", "localhost/guardrail-lab:debian12"], check=False,
                   env=ansible_env(CONTAINERS_CONF=str(ROOT / "tests" / "lab" / "containers.conf"))).returncode != 0,
    reason="SKIPPED LOUDLY: the full lab image localhost/guardrail-lab:debian12 is missing (make lab-image)")

LAB_ENV = {"CONTAINERS_CONF": str(ROOT / "tests" / "lab" / "containers.conf")}
IMAGE = "localhost/guardrail-lab:debian12"
PLAYBOOK = ROOT / "playbooks" / "ecs_host.yml"
BOOT_MARK = "cut -d' ' -f22 /proc/1/stat"


def podman(*args, check=True, timeout=180):
    proc = subprocess.run(["podman", *args], env=ansible_env(**LAB_ENV), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
    return proc


def booted(name, timeout=120):
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(1)
    pytest.fail(f"lab host {name} did not boot: {state}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Three lab hosts with the ECS stand-ins, shared by the module's tests."""
    prefix = f"rollout-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{n}" for n in (1, 2, 3)]
    try:
        for name in names:
            podman("run", "-d", "--name", name, "--hostname", name, "--privileged", "--systemd=always",
                   "--restart=always", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", IMAGE,
                   "/usr/local/sbin/lab-init")
        for name in names:
            booted(name)
        work = tmp_path_factory.mktemp("standins")
        inventory = work / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": {n: None for n in names}, "vars": {
            "ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3"}}}))
        rc, out, err = run_playbook(ROOT / "tests" / "lab" / "ecs_agent_standins.yml", inventory=str(inventory),
                                    extra_vars={"lab_docker": "real"}, env=LAB_ENV, cwd=work)
        assert rc == 0, f"stand-ins failed: {err} {json.dumps(out)[-3000:]}"
        yield names
    finally:
        for name in names:
            podman("rm", "-f", name, check=False)


class AgentLink(threading.Thread):
    """agentConnected of each host's container instance follows its ecs.service."""

    def __init__(self, hosts, interval=1.0):
        super().__init__(daemon=True)
        self.hosts = hosts  # {container name: EC2 instance id}
        self.interval = interval
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(self.interval):
            for name, ec2_id in self.hosts.items():
                state = podman("exec", name, "systemctl", "is-active", "ecs.service", check=False, timeout=30)
                set_agent_connected(ec2_id, state.stdout.strip() == "active")


class Watcher(threading.Thread):
    """Polls the container instances' status through the API during the run."""

    def __init__(self, endpoint, names, interval=0.5):
        super().__init__(daemon=True)
        self.c = clients(endpoint)
        self.names = names  # {EC2 instance id: host}
        self.interval = interval
        self.samples = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(self.interval):
            self.samples.append((time.time(), statuses(self.c, "prod")))

    def max_not_active(self):
        return max(sum(1 for s in sample.values() if s != "ACTIVE") for _t, sample in self.samples)

    def timeline(self):
        """{host: [(first seen DRAINING, first seen ACTIVE again)]} relative to the first sample."""
        start = self.samples[0][0]
        spans = {host: [] for host in self.names.values()}
        previous = {}
        for when, sample in self.samples:
            for ec2_id, status in sample.items():
                host = self.names[ec2_id]
                if status == "DRAINING" and previous.get(ec2_id) != "DRAINING":
                    spans[host].append([round(when - start, 1), None])
                if status == "ACTIVE" and previous.get(ec2_id) == "DRAINING":
                    spans[host][-1][1] = round(when - start, 1)
                previous[ec2_id] = status
        return spans


def inventory(where, ids):
    """The lab hosts with their EC2 instance ids (as aws_ec2 sets instance_id),
    and localhost with this Python (boto3) for the delegated AWS calls."""
    path = where / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {
        "children": {"ecs_hosts": {"hosts": {n: {"instance_id": i} for n, i in ids.items()}}},
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python")}},
        "vars": {"ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3"},
    }}))
    return str(path)


@pytest.fixture
def cluster_world(moto, lab, tmp_path):
    """The moto cluster with the lab hosts as instances, the scheduler, the
    agent link and the status watcher running; an inventory for the play."""
    hold_task_states(moto)
    c = clients(moto)
    ids = cluster(c, "prod", lab)
    service(c, "prod", "web", [ids[n] for n in lab])
    service(c, "prod", "log-router", [ids[n] for n in lab], memory=64, daemon=True)
    threads = [Scheduler(moto, "prod", delay=0.3), AgentLink({n: ids[n] for n in lab}),
               Watcher(moto, {ids[n]: n for n in lab})]
    for thread in threads:
        thread.start()
    world = {"c": c, "ids": ids, "inventory": inventory(tmp_path, ids), "watcher": threads[2], "scheduler": threads[0],
             "endpoint": moto, "tmp": tmp_path}
    yield world
    threads[1].halt.set()
    threads[2].halt.set()
    threads[0].stop()


def roll(world, **extra):
    extra_vars = {"ecs_host_cluster": "prod", "ecs_host_serial": 1, "ecs_host_aws_region": "us-east-1",
                  "ecs_host_aws_endpoint_url": world["endpoint"], "ecs_host_roles": ["agent_firewall"],
                  "ecs_host_poll_interval": 1, "ecs_host_drain_timeout": 120, "ecs_host_agent_timeout": 120,
                  "ecs_host_probe_image": "lab/busybox", "ecs_host_boot_time_command": BOOT_MARK,
                  "agent_firewall_ssh_sources": ["10.88.0.0/16"]}
    extra_vars.update(extra)
    started = time.time()
    rc, out, err = run_playbook(PLAYBOOK, extra_vars=extra_vars, inventory=world["inventory"], cwd=world["tmp"],
                                env=dict(LAB_ENV, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"),
                                timeout=1500)
    return rc, out, err, round(time.time() - started, 1)


def table(out):
    rows = [r["msg"] for name, r in task_results(out, "localhost") if name.startswith("Per-host summary")]
    for play in out.get("plays", []):
        for task in play["tasks"]:
            if task["task"]["name"].startswith("Per-host summary"):
                rows.extend(r["msg"] for r in task["hosts"].values() if "msg" in r)
    assert rows, "no summary table"
    return rows[-1]


def failures(out):
    return [(host, name, r.get("msg")) for play in out.get("plays", []) for task in play["tasks"]
            for host, r in task["hosts"].items() for name in [task["task"]["name"]] if r.get("failed")]


def test_three_hosts_one_at_a_time(cluster_world, lab):
    world = cluster_world
    rc, out, err, seconds = roll(world)
    assert rc == 0, (failures(out), err[-2000:])
    watcher = world["watcher"]
    assert watcher.max_not_active() == 1, "more than one instance was out of service at once"
    spans = watcher.timeline()
    assert all(len(spans[n]) == 1 and spans[n][0][1] is not None for n in lab), spans
    order = sorted(lab, key=lambda n: spans[n][0][0])
    for first, second in zip(order, order[1:]):
        assert spans[first][0][1] <= spans[second][0][0], f"{second} drained before {first} returned: {spans}"
    assert set(statuses(world["c"], "prod").values()) == {"ACTIVE"}
    tasks = running_tasks(world["c"], "prod")
    assert sum(tasks["web"].values()) == 3 and sum(tasks["log-router"].values()) == 3, tasks
    rows = table(out)
    assert rows[0].startswith("host | instance | drained s")
    for name in lab:
        [row] = [r for r in rows if r.startswith(name + " |")]
        cells = row.split(" | ")
        assert cells[1] == world["ids"][name] and float(cells[2]) > 0
        assert cells[4] == "no" and cells[5].startswith("ok (agent, credentials path") and cells[6] == "yes"
    probe = podman("exec", lab[0], "docker", "run", "--rm", "lab/busybox", "sh", "-c",
                   "printf 'GET /v2/credentials HTTP/1.0\\r\\n\\r\\n' | nc -w 5 169.254.170.2 80")
    assert "AccessKeyId" in probe.stdout
    calls = {}
    for name in lab:
        for task, result in task_results(out, name):
            for action, count in result.get("api_calls", {}).items():
                calls.setdefault(name, {}).setdefault(task, {})[action] = count
    print(json.dumps({"seconds": seconds, "timeline": spans, "samples": len(watcher.samples),
                      "moves": len(world["scheduler"].moves), "table": rows, "api_calls": calls}, indent=1))


def test_capacity_guard_refuses_the_batch(moto, lab, tmp_path):
    """Each instance holds one 4000 MiB task of `big` (7482 MiB each): with
    minimumHealthyPercent 100 no host can leave."""
    hold_task_states(moto)
    c = clients(moto)
    ids = cluster(c, "prod", lab)
    service(c, "prod", "big", [ids[n] for n in lab], memory=4000)
    rc, out, err, _seconds = roll({"endpoint": moto, "inventory": inventory(tmp_path, ids), "tmp": tmp_path})
    assert rc != 0
    [(host, _name, message)] = [f for f in failures(out) if f[1] == "Stop the run"]
    assert host == lab[0]
    assert f"{lab[0]} ({ids[lab[0]]}) was not drained in cluster prod" in message
    assert ("service big: desired 3 x minimumHealthyPercent 100% = 3 healthy tasks needed; 2 run on the 2 "
            "instances that stay ACTIVE + 0 of 1 moving tasks fit") in message
    assert set(statuses(c, "prod").values()) == {"ACTIVE"}
    ran = [name for name, _r in task_results(out, lab[0])]
    after = ran[[n.startswith("Drain the container instance") for n in ran].index(True) + 1:]
    assert after and set(after) <= {"Stop the run, the host out of service", "Fail as the step failed", "Record why the host stopped", "Stop the run",
                                    "Mark the host's row of the summary", "Summary of the rolling change",
                                    "Per-host summary (drained seconds, changes, rebooted, verification, back "
                                    "ACTIVE, API calls)"}, f"a step ran after the refusal: {after}"


def test_failed_verification_leaves_the_host_draining_and_stops(cluster_world, lab):
    """A misconfiguration the roles accept: the task bridge list forgets
    docker0, so bridge-mode tasks lose their credentials path."""
    world = cluster_world
    rc, out, err, _seconds = roll(world, agent_firewall_task_bridges=["ecs-bridge"])
    assert rc != 0
    stops = [f for f in failures(out) if f[1] == "Stop the run"]
    assert [host for host, _n, _m in stops] == [lab[0]], failures(out)
    message = stops[0][2]
    assert f"{lab[0]} ({world['ids'][lab[0]]}) stays DRAINING in cluster prod" in message
    assert "Verify the credentials path answers" in message and "169.254.170.2:80" in message
    ids = world["ids"]
    assert statuses(world["c"], "prod") == {ids[lab[0]]: "DRAINING", ids[lab[1]]: "ACTIVE", ids[lab[2]]: "ACTIVE"}
    assert world["watcher"].max_not_active() == 1
    rows = table(out)
    [row] = [r for r in rows if r.startswith(lab[0] + " |")]
    cells = row.split(" | ")
    assert cells[2].endswith(" (still)") and float(cells[2].split()[0]) > 0
    assert cells[5].startswith("FAILED: Verify the credentials path answers")
    assert cells[6] == "no (DRAINING)" and int(cells[7]) > 0
    assert rows[-1] == f"not reached: {lab[1]}, {lab[2]}"


def test_a_host_that_needs_a_reboot_is_rebooted_and_verified(cluster_world, lab):
    """agent_firewall changes the agent's configuration but is told not to
    restart the agent: the change waits for a reboot, so the play reboots that
    host (and no other) before verifying it."""
    world = cluster_world
    target = lab[1]
    podman("exec", target, "sh", "-c", "sed -i '/ECS_AWSVPC_BLOCK_IMDS/d' /etc/ecs/ecs.config 2>/dev/null; :")
    marks = {n: podman("exec", n, "sh", "-c", BOOT_MARK).stdout.strip() for n in lab}
    restarts = {n: podman("inspect", "-f", "{{.RestartCount}}", n).stdout.strip() for n in lab}
    rc, out, err, _seconds = roll(world, target=target, agent_firewall_awsvpc_block_imds=True,
                                  agent_firewall_restart_ecs=False)
    assert rc == 0, (failures(out), err[-2000:])
    assert podman("exec", target, "sh", "-c", BOOT_MARK).stdout.strip() != marks[target], "not rebooted"
    assert int(podman("inspect", "-f", "{{.RestartCount}}", target).stdout) == int(restarts[target]) + 1
    for other in lab:
        if other != target:
            assert podman("exec", other, "sh", "-c", BOOT_MARK).stdout.strip() == marks[other]
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in podman("exec", target, "cat", "/etc/ecs/ecs.config").stdout
    assert statuses(world["c"], "prod")[world["ids"][target]] == "ACTIVE"
    [row] = [r for r in table(out) if r.startswith(target + " |")]
    cells = row.split(" | ")
    assert cells[4] == "yes (agent_firewall)" and cells[5].startswith("ok (agent, credentials path")
    assert cells[6] == "yes"
    print(json.dumps({task: result["api_calls"] for task, result in task_results(out, target)
                      if "api_calls" in result}, indent=1))


def test_a_cis_regression_leaves_the_host_draining_and_stops(cluster_world, lab):
    """The CIS comparison: the role set is cis_hardening in audit-only mode, so
    the failed count after the change is the baseline's unless the host
    regressed (with agent_firewall in the set, its first run on a host fixes
    firewall rows and can hide a regression in the net count). The credentials
    probe is off: an earlier test leaves the first host's task path closed on
    purpose, and this test is about the CIS comparison. While the second host drains (after
    its baseline scan, before the role's scan: the play waits for its tasks to
    move), /etc/shadow becomes world-readable, as a bad package or change might
    leave it (Debian 12 7.1.5). The first host's count does not rise: ACTIVE.
    The second's rises: it stays DRAINING, and the run stops naming it and the
    counts; the third is not reached."""
    world = cluster_world
    ids = world["ids"]
    regressed = lab[1]

    def make_shadow_world_readable(ec2_id):
        if ec2_id == ids[regressed]:
            podman("exec", regressed, "chmod", "0644", "/etc/shadow")

    mode = podman("exec", regressed, "stat", "-c", "%a", "/etc/shadow").stdout.strip()
    world["scheduler"].while_draining = make_shadow_world_readable
    try:
        rc, out, err, seconds = roll(world, ecs_host_roles=["cis_hardening"], cis_hardening_audit_only=True, ecs_host_probe=False,
                                     cis_hardening_report_dir=str(world["tmp"] / "reports"))
    finally:
        podman("exec", regressed, "chmod", mode, "/etc/shadow")
    assert rc != 0, "the run went on past a host whose CIS failed count rose"
    stops = [f for f in failures(out) if f[1] == "Stop the run"]
    assert [host for host, _n, _m in stops] == [regressed], failures(out)
    message = stops[0][2]
    assert f"{regressed} ({ids[regressed]}) stays DRAINING in cluster prod" in message, message
    assert "Verify the CIS scan fails no more controls than before" in message, message
    counts = re.search(r"the CIS scan of \S+ fails (\d+) controls, (\d+) before the change", message)
    assert counts and int(counts.group(1)) == int(counts.group(2)) + 1, message
    assert statuses(world["c"], "prod") == {ids[lab[0]]: "ACTIVE", ids[regressed]: "DRAINING", ids[lab[2]]: "ACTIVE"}
    assert world["watcher"].max_not_active() == 1
    rows = table(out)
    [kept] = [r for r in rows if r.startswith(lab[0] + " |")]
    cells = kept.split(" | ")
    before_after = re.search(r"CIS failed (\d+) <= (\d+)\)", cells[5])
    assert cells[5].startswith("ok (agent, CIS failed") and before_after, kept
    assert before_after.group(1) == before_after.group(2) and cells[6] == "yes", kept
    [stopped] = [r for r in rows if r.startswith(regressed + " |")]
    cells = stopped.split(" | ")
    assert cells[5].startswith("FAILED: Verify the CIS scan fails no more controls than before"), stopped
    assert cells[6] == "no (DRAINING)", stopped
    assert rows[-1] == f"not reached: {lab[2]}"
    print(json.dumps({"seconds": seconds, "table": rows, "stop": message}, indent=1))
