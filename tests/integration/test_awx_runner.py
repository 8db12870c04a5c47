"""Every playbook in playbooks/ launched through ansible-runner the way AWX
launches a job: a private data directory holding the project, env/extravars
(with awx_job_id and awx_user_name, as AWX adds them), env/envvars, env/settings
and an inventory; then the job's status and its job events are asserted.

CASES is a table, playbook -> (setup, assertions). A playbook without an entry
fails test_every_playbook_has_a_case, so none is forgotten.
"""
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ansible_runner
import pytest
import yaml

from ansible_collections.guardrail.ecs.plugins.module_utils import run_lock

from conftest import AWS_TEST_ENV, ROOT, ansible_env, run_playbook
from ecs_image_guard_helpers import deployment_ids, incident

PLAYBOOKS = ROOT / "playbooks"
AWX_JOB = {"awx_job_id": 4242, "awx_user_name": "alice", "awx_job_template_name": "guardrail",
           "tower_job_id": 4242, "tower_user_name": "alice"}
LOCALHOST = "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
LAB_ENV = {"CONTAINERS_CONF": str(ROOT / "tests" / "lab" / "containers.conf")}
PROBE = "/usr/local/bin/lab-task-probe"


@dataclass
class Job:
    """What a case hands to the launcher, and what it checks afterwards."""
    extravars: dict
    inventory: str = LOCALHOST
    envvars: dict = None
    check: Callable = None


def awx_launch(private, playbook, job):
    """Lays out the private data directory as AWX does and runs the job."""
    (private / "env").mkdir(parents=True)
    (private / "inventory").mkdir()
    (private / "project").symlink_to(ROOT)  # AWX checks the project out; this checkout is it
    (private / "env" / "extravars").write_text(json.dumps(dict(AWX_JOB, **job.extravars)))
    env = {k: v for k, v in ansible_env(**(job.envvars or {})).items()
           if k.startswith(("ANSIBLE_", "AWS_", "PATH", "CONTAINERS_CONF", "HOME"))}
    (private / "env" / "envvars").write_text(json.dumps(env))
    (private / "env" / "settings").write_text(json.dumps({"job_timeout": 900, "suppress_ansible_output": True}))
    (private / "inventory" / "hosts.yml").write_text(job.inventory)
    return ansible_runner.run(private_data_dir=str(private), playbook=f"playbooks/{playbook}",
                              ident=str(AWX_JOB["awx_job_id"]), quiet=True)


def events_of(runner):
    return list(runner.events)


def task_events(events, task, kind="runner_on_ok"):
    return [e for e in events if e["event"] == kind and e.get("event_data", {}).get("task") == task]


def result_of(events, task):
    found = task_events(events, task)
    assert found, f"no runner_on_ok event for task {task!r}: " + ", ".join(
        sorted({e["event"] + ":" + e.get("event_data", {}).get("task", "") for e in events}))
    return found[-1]["event_data"]["res"]


def podman(*args, check=True):
    proc = subprocess.run(["podman", *args], env=ansible_env(**LAB_ENV), capture_output=True, text=True,
                          timeout=120, check=False)
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
    return proc


def lab_host(request, tmp_path):
    """A lab host (privileged podman container booting systemd, as in the
    molecule scenarios) made an ECS container instance stand-in; removed after
    the test. Returns (name, inventory text) with the podman connection AWX
    would get from an inventory source."""
    name = f"awx-lab-{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: subprocess.run([str(ROOT / "scripts" / "lab-host"), "down", name],
                                                env=ansible_env(**LAB_ENV), capture_output=True, timeout=120,
                                                check=False))
    up = subprocess.run([str(ROOT / "scripts" / "lab-host"), "up", name], env=ansible_env(**LAB_ENV),
                        capture_output=True, text=True, timeout=180, check=False)
    assert up.returncode == 0, f"lab host did not start: {up.stdout}{up.stderr}"
    inventory = yaml.safe_dump({"all": {
        "children": {"ecs_hosts": {"hosts": {name: None}}},
        "vars": {"ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3"},
    }})
    (tmp_path / "lab.yml").write_text(inventory)
    rc, out, err = run_playbook(ROOT / "tests" / "lab" / "ecs_agent_standins.yml", inventory=str(tmp_path / "lab.yml"),
                                env=LAB_ENV, cwd=tmp_path)
    assert rc == 0, f"stand-ins failed: {err} {json.dumps(out)[-2000:]}"
    return name, inventory


def role_events(events, role):
    return [e for e in events if e["event"] == "runner_on_ok" and e.get("event_data", {}).get("role") == role]


# ---- cases: one per playbook


def ecs_image_guard_case(request):
    endpoint = request.getfixturevalue("moto")
    world = incident(endpoint)
    before = deployment_ids(world["clients"], "prod", ["web"])

    def check(runner, events):
        assert runner.status == "successful", runner.stdout.read()
        res = result_of(events, "Find services pulling a deleted image digest")
        assert res["changed"] is True
        assert {r["service"] for r in res["redeployed"]} == {"web", "worker"}
        assert deployment_ids(world["clients"], "prod", ["web"]) != before
        report = result_of(events, "Report affected and redeployed services")
        assert any("prod/web container web" in line for line in report["msg"])

    return Job(extravars={"aws_region": "us-east-1", "aws_endpoint_url": endpoint, "ecs_image_guard_mode": "recover"},
               envvars=AWS_TEST_ENV, check=check)


def tofu_change_case(request):
    from workflow_helpers import make_stack_repo, remote_lock

    clone, remote = request.getfixturevalue("git_repo")
    make_stack_repo(clone)

    def check(runner, events):
        assert runner.status == "successful", runner.stdout.read()
        res = result_of(events, "Run the workflow")
        assert [s["step"] for s in res["steps"]] == ["render", "git_check", "lock", "exec"]
        assert (res["owner"], res["run_id"]) == ("alice", "4242")
        assert remote_lock(remote) == "refs/guardrail/locks/alpha/prod"
        holder = run_lock.get_backend("git", repo_path=str(clone)).read("alpha", "prod")
        assert (holder["owner"], holder["run_id"]) == ("alice", "4242"), holder

    return Job(extravars={"stack": "alpha", "profile": "prod", "steps": "render,git_check,lock,exec",
                          "command": "plan", "repo_path": str(clone)}, check=check)


def agent_firewall_case(request):
    tmp_path = request.getfixturevalue("tmp_path_factory").mktemp("agent-firewall")
    name, inventory = lab_host(request, tmp_path)
    blocked = podman("exec", name, PROBE, "http://169.254.170.2/v2/credentials", check=False)
    assert blocked.returncode != 0, "the stand-in should reproduce the hardened host's failure first"

    def check(runner, events):
        assert runner.status == "successful", runner.stdout.read()
        assert role_events(events, "agent_firewall"), "no agent_firewall task ran"
        probe = podman("exec", name, PROBE, "http://169.254.170.2/v2/credentials")
        assert "AccessKeyId" in probe.stdout, "the task cannot reach its credentials after the job"
        imds = podman("exec", name, PROBE, "http://169.254.169.254/latest/meta-data/", check=False)
        assert imds.returncode != 0, "bridge-mode tasks must not reach the instance metadata service"

    return Job(extravars={"target": name}, inventory=inventory, envvars=LAB_ENV, check=check)


def ecs_host_case(request):
    tmp_path = request.getfixturevalue("tmp_path_factory").mktemp("ecs-host")
    name, inventory = lab_host(request, tmp_path)
    reports = tmp_path / "reports"
    blocked = podman("exec", name, PROBE, "http://169.254.170.2/v2/credentials", check=False)
    assert blocked.returncode != 0, "the stand-in should reproduce the hardened host's failure first"

    def check(runner, events):
        assert runner.status == "successful", runner.stdout.read()
        assert role_events(events, "cis_hardening"), "no cis_hardening task ran"
        assert role_events(events, "agent_firewall"), "no agent_firewall task ran"
        hosts = {e["event_data"].get("host") for e in events if e["event"] == "runner_on_ok"}
        assert hosts == {name}
        probe = podman("exec", name, PROBE, "http://169.254.170.2/v2/credentials")
        assert "AccessKeyId" in probe.stdout, "the task cannot reach its credentials after the job"

    return Job(extravars={"target": name, "cis_hardening_level": 2, "cis_hardening_install_packages": False,
                          "cis_hardening_report_dir": str(reports)},
               inventory=inventory, envvars=LAB_ENV, check=check)


CASES = {
    "agent_firewall.yml": agent_firewall_case,
    "ecs_host.yml": ecs_host_case,
    "ecs_image_guard.yml": ecs_image_guard_case,
    "tofu_change.yml": tofu_change_case,
}


def test_every_playbook_has_a_case():
    playbooks = {p.name for p in PLAYBOOKS.glob("*.yml")} | {p.name for p in PLAYBOOKS.glob("*.yaml")}
    assert playbooks, "no playbooks found"
    missing = sorted(playbooks - set(CASES))
    assert not missing, f"playbooks without an AWX runner case in {Path(__file__).name}: {missing}"
    stale = sorted(set(CASES) - playbooks)
    assert not stale, f"cases for playbooks that do not exist: {stale}"


@pytest.mark.parametrize("playbook", sorted(CASES))
def test_playbook_runs_as_an_awx_job(playbook, request, tmp_path):
    text = (PLAYBOOKS / playbook).read_text()
    for play in yaml.safe_load(text):
        assert "vars_prompt" not in play, f"{playbook} prompts; AWX jobs cannot answer prompts"
    job = CASES[playbook](request)
    runner = awx_launch(tmp_path / "private", playbook, job)
    events = events_of(runner)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "playbook_on_start" and "playbook_on_stats" in kinds, kinds
    start = next(e for e in events if e["event"] == "playbook_on_start")
    assert start["event_data"]["playbook"] == f"playbooks/{playbook}"
    assert not [e for e in events if e["event"] in ("runner_on_unreachable",)], "a host was unreachable"
    job.check(runner, events)
    stats = next(e for e in events if e["event"] == "playbook_on_stats")["event_data"]
    assert not stats.get("failures") and not stats.get("dark"), stats
    assert (tmp_path / "private" / "artifacts" / str(AWX_JOB["awx_job_id"]) / "status").read_text() == "successful"
