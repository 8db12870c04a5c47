"""Saved plans through Ansible: guardrail.ecs.tofu and guardrail.ecs.workflow
with command plan, then apply with plan_id. Real git with a bare remote, the
real tofu/terraform binary."""
import json
import stat

from conftest import git, run_playbook, task_results
from workflow_helpers import commit, make_stack_repo, remote_lock, state_outputs, workflow

STACK = """
terraform {
  backend "local" {}
}

variable "release" {
  type    = string
  default = "one"
}

resource "terraform_data" "marker" {
  input = var.release
}

output "release" {
  value = terraform_data.marker.output
}
"""


def tofu_tasks(project, *tasks):
    body = "".join(
        f"    - name: {name}\n      guardrail.ecs.tofu: {json.dumps(dict(project_path=str(project), **args))}\n"
        "      register: out\n      ignore_errors: true\n" for name, args in tasks)
    playbook = ("- hosts: localhost\n  connection: local\n  gather_facts: false\n  vars:\n"
                "    ansible_python_interpreter: '{{ ansible_playbook_python }}'\n  tasks:\n" + body)
    rc, out, err = run_playbook(playbook, cwd=project.parent)
    return rc, dict(task_results(out)), err


def test_tofu_module_applies_exactly_the_saved_plan(git_repo):
    clone, _remote = git_repo
    project = clone / "proj"
    commit(clone, "proj/main.tf", STACK, push=True)
    (clone / ".gitignore").write_text("/proj/.terraform/\n/proj/*.tfstate*\n/proj/.guardrail-plans/\n")
    git("add", ".gitignore", cwd=clone)
    git("commit", "-q", "-m", "ignore", cwd=clone)
    _rc, results, err = tofu_tasks(project, ("plan", {"command": "plan", "variables": {"release": "reviewed"},
                                                      "stack": "s", "profile": "p"}))
    planned = results["plan"]
    assert planned.get("plan_id") and planned["changed"], (json.dumps(planned)[:3000], err)
    assert planned["summary"][-1] == "Plan: 1 to create, 0 to update, 0 to replace, 0 to delete"
    planfile = project / ".guardrail-plans" / f"{planned['plan_id']}.tfplan"
    assert stat.S_IMODE(planfile.stat().st_mode) == 0o600
    plan_id = planned["plan_id"]

    _rc, results, err = tofu_tasks(
        project,
        ("other profile", {"command": "apply", "plan_id": plan_id, "stack": "s", "profile": "q"}),
        ("apply", {"command": "apply", "plan_id": plan_id, "variables": {"release": "other"},
                   "stack": "s", "profile": "p"}),
        ("again", {"command": "apply", "plan_id": plan_id, "stack": "s", "profile": "p"}))
    assert results["other profile"]["failed"] and "made for s/p, not s/q" in results["other profile"]["msg"]
    assert results["apply"]["changed"] and not results["apply"].get("failed"), (results["apply"], err)
    assert state_outputs(project) == {"release": "reviewed"}
    assert not planfile.exists()
    assert results["again"]["failed"] and "no saved plan" in results["again"]["msg"]


def test_workflow_plan_then_apply_plan_id_and_refusal_after_a_new_commit(git_repo):
    clone, remote = git_repo
    make_stack_repo(clone)
    rc, planned, err = workflow(clone, command="plan", tofu={"variables": {"release": "reviewed"}})
    assert rc == 0 and planned.get("plan_id"), (planned, err)
    assert any("terraform_data.deployment" in line for line in planned["summary"])
    project = clone / ".dist" / "prod" / "alpha"
    commit(clone, "stacks/alpha/extra.tf", 'resource "terraform_data" "extra" {\n  input = 1\n}\n',
           push=True)
    rc, refused, _err = workflow(clone, command="apply", tofu={"plan_id": planned["plan_id"]})
    assert rc != 0 and refused["refused"] and refused["failed_step"] == "plan_id"
    assert "was made from commit" in refused["msg"]
    assert [s["status"] for s in refused["steps"]][1:] == ["skipped"] * 6
    assert not (project / "terraform.tfstate").exists() and remote_lock(remote) is None

    rc, planned, err = workflow(clone, command="plan", tofu={"variables": {"release": "reviewed"}})
    rc, applied, err = workflow(clone, command="apply", tofu={"plan_id": planned["plan_id"]})
    assert rc == 0 and applied["changed"], (applied, err)
    assert state_outputs(project)["deployment_id"]
    assert remote_lock(remote) is None
