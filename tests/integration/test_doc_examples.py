"""Every EXAMPLES block of the collection's modules and lookups, parsed out of
the plugin and run as written, with only its placeholders replaced: /srv/infra
and {{ repo }} become a real stack repository (a clone with a bare remote, the
example stacks pushed), {{ playbook_dir }} is that clone, and AWS calls go to a
moto server (AWS_ENDPOINT_URL) holding the table and bucket the examples name.

RUN lists, per plugin, what an example run must leave behind. NOT_RUN lists
the examples that cannot run here, each with the reason. An example in neither
table fails test_every_example_is_listed, so a new one is never forgotten."""
import ast
import json
import re

import boto3
import pytest
import yaml

from conftest import ROOT, git, run_playbook
from workflow_helpers import make_stack_repo, remote_head, remote_lock

PLUGINS = sorted(p for p in [*(ROOT / "plugins").glob("*/*.py"), *(ROOT / "plugins" / "modules" / "internal").glob("*.py")]
                 if p.parent.name in ("modules", "lookup", "internal") and p.name != "__init__.py")

LAB_HOST = ("changes the system configuration of the host it runs on (root, real /etc and services): "
            "it runs in the molecule scenarios on lab containers, not on the test machine")
NOT_RUN = {
    "cis_files": LAB_HOST,
    "cis_lines": LAB_HOST,
    "cis_pam": LAB_HOST,
    "cis_scan": LAB_HOST,
    "cis_services": LAB_HOST,
    "cis_sysctl": LAB_HOST,
    "cis_plan": "internal to the cis_hardening role: needs the role's catalogue variables in scope",
    "cis_report": "internal to the cis_hardening role: needs the results the role's tasks register",
    "iptables_chains": "loads iptables rules into the host's kernel: runs in molecule/agent_firewall",
    "ecs_image_guard": "needs ECS services with deployments and ECR images deleted under them, "
                       "which test_ecs_image_guard builds in moto; the examples name clusters that do not exist",
    "ecs_container_instance": "the examples name EC2 instance ids, which moto draws at random; "
                              "test_ecs_container_instance makes the same calls on a moto cluster and "
                              "test_ecs_host_rolling makes them through the ecs_host playbook",
    "efs_hydrate": "the examples seed /srv/uploads and /srv/shared as root from package paths; "
                   "test_efs_hydrate and the adversarial suite run the module",
}


def examples_of(path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "EXAMPLES":
            tasks = yaml.safe_load(node.value.value)
            assert isinstance(tasks, list) and tasks, f"{path.name}: EXAMPLES is not a list of tasks"
            return tasks
    raise AssertionError(f"{path.name} has no EXAMPLES")


def plugin_id(path):
    return f"{path.parent.name}/{path.stem}"


# ---- the world the examples run in


@pytest.fixture
def world(git_repo, moto, tmp_path):
    clone, remote = git_repo
    make_stack_repo(clone)
    (clone / ".git" / "info" / "exclude").write_text("/playbooks/\n/examples.yml\n/build/\n")
    for region in ("eu-west-1", "us-east-1"):
        boto3.client("dynamodb", region_name=region, endpoint_url=moto).create_table(
            TableName="tofu-locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    boto3.client("s3", region_name="us-east-1", endpoint_url=moto).create_bucket(Bucket="acme-tofu-state")
    return {"clone": clone, "remote": remote, "moto": moto}


def prepare_render(world):
    return world["clone"] / "playbooks"


def check_render(world, results):
    clone = world["clone"]
    assert (clone / ".dist" / "prod" / "alpha" / "main.tf").is_file()
    assert (clone / "build" / "alpha" / "main.tf").is_file()


def apply_alpha(world):
    """The stack applied once through the workflow (what tofu_output and tofu read)."""
    setup = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - guardrail.ecs.workflow:\n"
             f"        repo_path: {world['clone']}\n        stack: alpha\n        profile: prod\n"
             "        steps: [render, exec]\n")
    rc, out, err = run_playbook(setup, cwd=world["clone"].parent)
    assert rc == 0, f"setup apply failed: {json.dumps(out)[-2000:]} {err}"


def prepare_tofu(world):
    render = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - guardrail.ecs.render:\n"
              f"        repo_path: {world['clone']}\n        stack: alpha\n        profile: prod\n")
    rc, out, err = run_playbook(render, cwd=world["clone"].parent)
    assert rc == 0, f"setup render failed: {json.dumps(out)[-2000:]} {err}"
    return world["clone"]


def check_tofu(world, results):
    applied = results["Apply the rendered stack alpha for prod"]
    assert applied["changed"] and applied["counts"]["create"] > 0, applied
    destroy = results["Plan a destroy in another workspace (in check mode destroy only plans)"]
    state = world["clone"] / ".dist" / "prod" / "alpha" / "terraform.tfstate.d" / "staging"
    assert not (state / "terraform.tfstate").exists() or not json.loads(
        (state / "terraform.tfstate").read_text()).get("resources"), "check mode must not change staging"
    assert destroy.get("command") == "destroy", destroy


def check_git_check(world, results):
    for name, result in results.items():
        assert not result.get("failed"), (name, result)


def prepare_git_push(world):
    clone = world["clone"]
    (clone / "CHANGE").write_text("applied\n")
    git("add", "CHANGE", cwd=clone)
    git("commit", "-q", "-m", "applied change", cwd=clone)
    return clone


def check_git_push(world, results):
    assert remote_head(world["remote"]) == git("rev-parse", "HEAD", cwd=world["clone"])
    assert results["Push the applied change"]["changed"] is True


def check_workflow(world, results):
    assert results["Apply stack alpha for prod, the whole way"]["changed"] is True
    assert [s["step"] for s in results["Plan only, without locking"]["steps"]] == ["render", "git_check", "exec"]
    grouped = results["Apply with a DynamoDB run lock, tofu variables and a shorter timeout"]
    assert [s["status"] for s in grouped["steps"]] == ["ok"] * 6, grouped
    assert next(s for s in grouped["steps"] if s["step"] == "lock")["result"]["record"]["message"] == "release 2024.06"
    assert remote_lock(world["remote"]) is None, "the last example releases every lock"
    assert results["Apply every stack in dependency order, two at a time"]["order"] == ["alpha"]
    assert results["Plan only the stacks a change touched since the last apply of each"]["stacks"] == []
    drift = results["Report drift of every stack in prod (a comma list of profiles also works; fails when any drifted)"]
    assert drift["drift"] == [] and (world["clone"] / ".dist" / "drift-prod" / "drift.html").is_file()


def check_run_lock(world, results):
    items = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=world["moto"]).scan(
        TableName="tofu-locks")["Items"]
    assert items, "the DynamoDB example took no lock"
    assert remote_lock(world["remote"]) is None, "the git lock was given back, then broken"
    assert "Report who holds the S3 lock, and whether it is older than a day" in results


def check_profile(world, results):
    assert results["Show how many replicas prod runs"]["msg"] == 3


def prepare_tofu_output(world):
    apply_alpha(world)
    return world["clone"]


def check_tofu_output(world, results):
    assert "service_name" in results["Every output of stack alpha for prod"]["msg"]
    assert results["One output"]["msg"] == "web-prod"


def check_run_lock_lookup(world, results):
    assert results["Tell who holds the lock of alpha/prod"]["msg"] == "alpha/prod is free"


# plugin -> (prepare(world) -> playbook directory or None for the clone, check(world, results))
RUN = {
    "modules/render": (prepare_render, check_render),
    "modules/tofu": (prepare_tofu, check_tofu),
    "modules/git_check": (None, check_git_check),
    "modules/git_push": (prepare_git_push, check_git_push),
    "modules/workflow": (None, check_workflow),
    "modules/run_lock": (None, check_run_lock),
    "lookup/profile": (None, check_profile),
    "lookup/tofu_output": (prepare_tofu_output, check_tofu_output),
    "lookup/run_lock": (None, check_run_lock_lookup),
}


def test_every_example_is_listed():
    unlisted = [plugin_id(p) for p in PLUGINS if plugin_id(p) not in RUN and p.stem not in NOT_RUN]
    assert not unlisted, f"EXAMPLES neither run nor listed as not runnable (with the reason): {unlisted}"
    stale = sorted(set(RUN) - {plugin_id(p) for p in PLUGINS}) + sorted(set(NOT_RUN) - {p.stem for p in PLUGINS})
    assert not stale, f"listed plugins that do not exist: {stale}"
    for path in PLUGINS:
        examples_of(path)


def substitute(text, world):
    text = text.replace("/srv/infra", str(world["clone"]))
    return re.sub(r"\{\{ repo \}\}", str(world["clone"]), text)


@pytest.mark.parametrize("plugin", sorted(RUN))
def test_examples_run_as_written(plugin, world):
    path = ROOT / "plugins" / f"{plugin}.py"
    tasks = examples_of(path)
    prepare, check = RUN[plugin]
    where = (prepare(world) if prepare else None) or world["clone"]
    where.mkdir(parents=True, exist_ok=True)
    text = substitute(yaml.safe_dump(tasks, sort_keys=False), world)
    playbook = where / "examples.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n"
                        "  vars:\n    ansible_python_interpreter: '{{ ansible_playbook_python }}'\n  tasks:\n"
                        + "".join(f"    {line}\n" for line in text.splitlines()))
    rc, out, err = run_playbook(playbook, env={"AWS_ENDPOINT_URL": world["moto"]}, cwd=world["clone"].parent)
    playbook.unlink()
    assert "plays" in out, f"{plugin}: no output: {out} {err}"
    results = {}
    for task in out["plays"][0]["tasks"]:
        results[task["task"]["name"]] = task["hosts"]["localhost"]
    missing = [t["name"] for t in tasks if t["name"] not in results]
    assert rc == 0 and not missing, f"{plugin}: rc={rc}, not run: {missing}\n" + json.dumps(
        {k: v.get("msg", v) for k, v in results.items()}, default=str)[-3000:] + err[-2000:]
    failed = {k: v.get("msg") for k, v in results.items() if v.get("failed")}
    assert not failed, f"{plugin}: {failed}"
    check(world, results)
