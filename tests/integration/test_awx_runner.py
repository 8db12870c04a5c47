"""Every playbook in playbooks/ launched through ansible-runner the way AWX
launches a job: a private data directory holding the project, env/extravars
(with awx_job_id and awx_user_name, as AWX adds them), env/envvars, env/settings
and an inventory; then the job's status and its job events are asserted.

CASES is a table, playbook -> (setup, assertions). A playbook without an entry
fails test_every_playbook_has_a_case, so none is forgotten.
"""
import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ansible_runner
import pytest
import yaml

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import AWS_TEST_ENV, ROOT, ansible_env, run_playbook
from ecs_image_guard_helpers import deployment_ids, incident

PLAYBOOKS = ROOT / "playbooks"
AWX_JOB = {"awx_job_id": 4242, "awx_user_name": "alice", "awx_job_template_name": "guardrail",
           "tower_job_id": 4242, "tower_user_name": "alice"}
LOCALHOST = "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
LAB_ENV = {"CONTAINERS_CONF": str(ROOT / "tests" / "lab" / "containers.conf")}
PROBE = "/usr/local/bin/lab-task-probe"
# agent_firewall has no default: lab hosts are reached from podman's default network.
LAB_SSH_SOURCES = ["10.88.0.0/16"]


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
    open_imds = podman("exec", name, PROBE, "http://169.254.169.254/latest/meta-data/", check=False)
    assert open_imds.returncode == 0, "the stand-in should reproduce the field failure first: IMDS open to tasks"

    def check(runner, events):
        assert runner.status == "successful", runner.stdout.read()
        assert role_events(events, "agent_firewall"), "no agent_firewall task ran"
        probe = podman("exec", name, PROBE, "http://169.254.170.2/v2/credentials")
        assert "AccessKeyId" in probe.stdout, "the task cannot reach its credentials after the job"
        imds = podman("exec", name, PROBE, "http://169.254.169.254/latest/meta-data/", check=False)
        assert imds.returncode != 0, "bridge-mode tasks must not reach the instance metadata service"

    return Job(extravars={"target": name, "agent_firewall_ssh_sources": LAB_SSH_SOURCES}, inventory=inventory,
               envvars=LAB_ENV, check=check)


def ecs_host_case(request):
    tmp_path = request.getfixturevalue("tmp_path_factory").mktemp("ecs-host")
    name, inventory = lab_host(request, tmp_path)
    reports = tmp_path / "reports"
    open_imds = podman("exec", name, PROBE, "http://169.254.169.254/latest/meta-data/", check=False)
    assert open_imds.returncode == 0, "the stand-in should reproduce the field failure first: IMDS open to tasks"

    def check(runner, events):
        assert runner.status == "successful", runner.stdout.read()
        assert role_events(events, "cis_hardening"), "no cis_hardening task ran"
        assert role_events(events, "agent_firewall"), "no agent_firewall task ran"
        hosts = {e["event_data"].get("host") for e in events if e["event"] == "runner_on_ok"}
        assert hosts == {name}
        probe = podman("exec", name, PROBE, "http://169.254.170.2/v2/credentials")
        assert "AccessKeyId" in probe.stdout, "the task cannot reach its credentials after the job"

    return Job(extravars={"target": name, "cis_hardening_level": 2, "cis_hardening_install_packages": False,
                          "cis_hardening_report_dir": str(reports), "agent_firewall_ssh_sources": LAB_SSH_SOURCES},
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


# ---- tofu_change: every workflow option a job template sets reaches the workflow


def workflow_options():
    """The options guardrail.ecs.workflow documents, its doc fragments included."""
    from ansible.plugins.loader import fragment_loader
    from ansible.utils.plugin_docs import get_docstring

    doc = get_docstring(str(ROOT / "plugins" / "modules" / "workflow.py"), fragment_loader,
                        collection_name="guardrail.ecs")[0]
    return doc["options"]


def test_tofu_change_passes_every_workflow_option():
    play = yaml.safe_load((PLAYBOOKS / "tofu_change.yml").read_text())[0]
    task = next(t for t in play["tasks"] if "guardrail.ecs.workflow" in t)
    passed = set(task["guardrail.ecs.workflow"])
    documented = workflow_options()
    options = set(documented)
    assert options, "no options parsed from the workflow documentation"
    assert not options - passed, f"tofu_change drops workflow options: {sorted(options - passed)}"
    assert not passed - options, f"tofu_change passes unknown options: {sorted(passed - options)}"
    # A group is built from the extra vars in one expression, one key per suboption.
    for group in (name for name, doc in documented.items() if doc.get("suboptions")):
        built = task["vars"][f"tofu_change_{group}"]
        keys = set(re.findall(r"'(\w+)': ", built))
        assert keys == set(documented[group]["suboptions"]), (group, keys)


STACK_EXTRA = """variable "note" {
  type = string
}

output "note" {
  value     = var.note
  sensitive = true
}

output "release" {
  value = var.release
}
"""


def tofu_repo(tmp_path, clone):
    """The example stacks under tf/ (stacks_dir, profiles_dir), a stack file
    with a sensitive output, two unpushed commits, a `locks` remote for the
    lock tags and a `mirror` remote to push to; origin then unreachable, so
    only fetch=false lets git_check pass."""
    import shutil

    from conftest import git

    for part in ("stacks", "profiles"):
        shutil.copytree(ROOT / "examples" / part, clone / "tf" / part)
    git("add", "tf", cwd=clone)
    git("commit", "-q", "-m", "stacks", cwd=clone)
    git("push", "-q", cwd=clone)
    (clone / "tf" / "stacks" / "alpha" / "note.tf").write_text(STACK_EXTRA)
    git("add", "tf", cwd=clone)
    git("commit", "-q", "-m", "note", cwd=clone)
    (clone / "tf" / "NOTES").write_text("second unpushed commit\n")
    git("add", "tf", cwd=clone)
    git("commit", "-q", "-m", "notes", cwd=clone)
    remotes = {}
    for name in ("locks", "mirror"):
        remotes[name] = tmp_path / f"{name}.git"
        git("init", "-q", "--bare", "-b", "main", str(remotes[name]), cwd=tmp_path)
        git("remote", "add", name, str(remotes[name]), cwd=clone)
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=clone)
    (tmp_path / "release.tfvars").write_text('release = "from-file"\n')
    return remotes


def runner_result(runner, task="Run the workflow"):
    events = events_of(runner)
    found = task_events(events, task) or task_events(events, task, "runner_on_failed")
    assert found, runner.stdout.read()
    return found[-1]["event_data"]["res"]


def test_tofu_change_options_reach_the_workflow(git_repo, tmp_path):
    import shutil

    from conftest import git

    clone = git_repo[0]
    remotes = tofu_repo(tmp_path, clone)
    extravars = {
        "stack": "alpha", "profile": "prod", "repo_path": str(clone),
        "steps": "render,git_check,lock,exec,git_push", "command": "apply",
        "stacks_dir": "tf/stacks", "profiles_dir": "tf/profiles", "template_vars": {"zones": ["q"]},
        "dest": ".dist/custom/alpha", "binary": shutil.which("tofu") or shutil.which("terraform"),
        "workspace": "blue", "variables": {"note": "from-env"}, "var_files": [str(tmp_path / "release.tfvars")],
        "tofu_options": {"parallelism": 3}, "show_sensitive": True, "exec_timeout": 600,
        "max_ahead": 2, "allow_detached": False, "fetch": False, "push_remote": "mirror",
        "owner": "bob", "run_id": "job-77", "message": "release 7", "lock_backend": "git", "lock_remote": "locks",
    }
    runner = awx_launch(tmp_path / "private", "tofu_change.yml", Job(extravars=extravars))
    res = runner_result(runner)
    assert runner.status == "successful", res
    assert [s["step"] for s in res["steps"]] == ["render", "git_check", "lock", "exec", "git_push"]
    assert (res["owner"], res["run_id"]) == ("bob", "job-77")
    # lock_remote, owner, run_id, lock_message: the record on the `locks` remote
    from workflow_helpers import remote_lock
    assert remote_lock(remotes["locks"]) == "refs/guardrail/locks/alpha/prod"
    record = git("cat-file", "-p", "refs/guardrail/locks/alpha/prod", cwd=remotes["locks"])
    for expected in ("bob", "job-77", "release 7"):
        assert expected in record, record
    # push_remote: the mirror got the branch; stacks_dir/profiles_dir/dest/vars: rendered there
    assert git("rev-parse", "refs/heads/main", cwd=remotes["mirror"]) == git("rev-parse", "HEAD", cwd=clone)
    rendered = clone / ".dist" / "custom" / "alpha"
    assert json.loads((rendered / "zones.tf.json").read_text())["output"]["zones"]["value"] == ["q"]
    # workspace, variables, var_files, show_sensitive, binary, command
    state = json.loads((rendered / "terraform.tfstate.d" / "blue" / "terraform.tfstate").read_text())
    outputs = {k: v["value"] for k, v in state["outputs"].items()}
    assert (outputs["note"], outputs["release"], outputs["zones"]) == ("from-env", "from-file", ["q"]), outputs
    assert "note" in res["outputs"] and res["outputs"]["release"] == "from-file", res["outputs"]


def test_tofu_change_limits_reach_the_workflow(git_repo, tmp_path):
    """max_ahead, exec_timeout and allow_detached, each at a value that fails
    (or passes) only when the option arrived."""
    from conftest import git

    clone = git_repo[0]
    tofu_repo(tmp_path, clone)
    base = {"stack": "alpha", "profile": "prod", "repo_path": str(clone), "fetch": False,
            "stacks_dir": "tf/stacks", "profiles_dir": "tf/profiles"}
    # two unpushed commits: max_ahead=1 refuses
    runner = awx_launch(tmp_path / "p1", "tofu_change.yml",
                        Job(extravars=dict(base, steps="render,git_check", max_ahead=1)))
    assert runner.status == "failed" and "ahead" in runner_result(runner)["msg"], runner_result(runner)
    # an argument list past exec_timeout is stopped
    runner = awx_launch(tmp_path / "p2", "tofu_change.yml",
                        Job(extravars=dict(base, steps="render,exec", command=["sleep", "30"], exec_timeout=2)))
    res = runner_result(runner)
    assert runner.status == "failed" and ("timed out" in res["msg"] or "timeout" in res["msg"]), res
    # a detached HEAD passes git_check with allow_detached
    git("checkout", "-q", "--detach", cwd=clone)
    runner = awx_launch(tmp_path / "p3", "tofu_change.yml",
                        Job(extravars=dict(base, steps="render,git_check", allow_detached=True, max_ahead=5)))
    assert runner.status == "successful", runner_result(runner)


def test_tofu_change_aws_lock_options_reach_the_workflow(git_repo, tmp_path, moto):
    import boto3

    from lock_helpers import TABLE, create_aws_resources

    clone = git_repo[0]
    tofu_repo(tmp_path, clone)
    create_aws_resources(moto)
    extravars = {"stack": "alpha", "profile": "prod", "repo_path": str(clone), "steps": "lock",
                 "lock_backend": "dynamodb", "lock_table": TABLE, "lock_key": "states/alpha.tfstate",
                 "aws_region": "us-east-1", "aws_endpoint_url": moto, "access_key": "testing",
                 "secret_key": "testing", "session_token": "testing", "owner": "carol"}
    runner = awx_launch(tmp_path / "private", "tofu_change.yml", Job(extravars=extravars))
    assert runner.status == "successful", runner_result(runner)
    items = boto3.client("dynamodb", endpoint_url=moto).scan(TableName=TABLE)["Items"]
    assert any("states/alpha.tfstate" in item["LockID"]["S"] and "carol" in json.dumps(item) for item in items), items


def test_a_job_runs_the_shipped_playbook_on_a_detached_project_checkout(git_repo, tmp_path):
    """As AWX runs a job template: the project is a sync of the stack
    repository (HEAD detached at the branch's head) laid out as the README
    says - the collection under collections/ and an ansible.cfg naming that
    path - and the job's playbook is the collection's own tofu_change.yml (no
    wrapper of the user's), with no repo_path (the job runs in the project).
    ansible-runner runs as a separate process with no ANSIBLE_* variable of
    this suite, so only the project's own ansible.cfg finds the collection.
    The job output names the branch compared and every resource change."""
    from conftest import VENV_BIN, git
    from workflow_helpers import commit, make_stack_repo, remote_lock

    clone, remote = git_repo
    make_stack_repo(clone)
    vendored = clone / "collections" / "ansible_collections" / "guardrail"
    vendored.mkdir(parents=True)
    (vendored / "ecs").symlink_to(ROOT)
    git("add", "collections", cwd=clone)
    commit(clone, "ansible.cfg", "[defaults]\ncollections_path = ./collections\n", push=True)
    private = tmp_path / "private"
    for part in ("env", "inventory"):
        (private / part).mkdir(parents=True)
    project = private / "project"
    git("clone", "-q", str(remote), str(project), cwd=tmp_path)
    synced = git("rev-parse", "origin/main", cwd=project)
    git("checkout", "-q", "--detach", synced, cwd=project)
    (private / "env" / "extravars").write_text(json.dumps(dict(AWX_JOB, stack="alpha", profile="prod")))
    (private / "inventory" / "hosts.yml").write_text(LOCALHOST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    playbook = "collections/ansible_collections/guardrail/ecs/playbooks/tofu_change.yml"
    proc = subprocess.run([str(VENV_BIN / "ansible-runner"), "run", str(private), "-p", playbook,
                           "--ident", "job"], env=env, capture_output=True, text=True, timeout=600, check=False)
    artifacts = private / "artifacts" / "job"
    status = (artifacts / "status").read_text().strip() if (artifacts / "status").exists() else None
    events = [json.loads(path.read_text()) for path in sorted((artifacts / "job_events").glob("*.json"))]
    assert status == "successful", (proc.stdout[-4000:], proc.stderr[-2000:])
    res = result_of(events, "Run the workflow")
    assert [(s["step"], s["status"]) for s in res["steps"]] == [
        (step, "ok") for step in ("render", "git_check", "lock", "exec", "git_push", "unlock")]
    assert res["steps"][1]["result"]["msg"] == (f"detached HEAD {synced[:12]} is the head of origin/main: "
                                                "compared with origin/main")
    assert res["steps"][4]["changed"] is False and "nothing to push" in res["steps"][4]["result"]["msg"]
    listed = result_of(events, "List the resource changes")["msg"]
    assert listed[0] == res["steps"][1]["result"]["msg"]
    assert "create terraform_data.service" in listed and "create terraform_data.zone_c" in listed, listed
    assert listed[-1].startswith("counts: ") and '"create": 5' in listed[-1], listed
    assert "create terraform_data.service" in proc.stdout, "the job output does not show the change"
    assert (project / ".dist" / "prod" / "alpha" / "terraform.tfstate").exists()
    assert remote_lock(remote) is None
    assert git("rev-parse", "refs/heads/main", cwd=remote) == synced
