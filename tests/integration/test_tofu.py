"""guardrail.ecs.tofu and the tofu_output lookup through ansible-playbook with
the real tofu/terraform binary, on a stack of built-in resources."""
import json

import pytest

from conftest import run_playbook, task_results
from workflow_helpers import state_outputs

STACK = """
terraform {
  backend "local" {}
}

variable "n" {
  type    = number
  default = 12
}

variable "release" {
  type    = string
  default = "one"
}

variable "secret" {
  type      = string
  sensitive = true
  default   = "default-secret"
}

resource "terraform_data" "many" {
  count = var.n
  input = count.index
}

resource "terraform_data" "marker" {
  input            = var.release
  triggers_replace = [var.release]
}

resource "terraform_data" "guarded" {
  input = sensitive(var.secret)
}

output "count" {
  value = length(terraform_data.many)
}

output "release" {
  value = terraform_data.marker.output
}

output "marker_id" {
  value = terraform_data.marker.id
}

output "secret" {
  value     = var.secret
  sensitive = true
}
"""

SECRET = "TopSecret-4711"

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    project: PROJECT
    secret_vars: {secret: "%s"}
  tasks:
%%s
""" % SECRET


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "stack"
    path.mkdir()
    (path / "main.tf").write_text(STACK)
    return path


def play(project, tasks, **kwargs):
    text = (PLAY % tasks).replace("PROJECT", str(project))
    rc, out, err = run_playbook(text, cwd=project.parent, **kwargs)
    return rc, dict(task_results(out)), out, err


LIFECYCLE = """
    - name: create
      guardrail.ecs.tofu: {project_path: "{{ project }}", variables: "{{ secret_vars }}"}
    - name: again
      guardrail.ecs.tofu: {project_path: "{{ project }}", variables: "{{ secret_vars }}"}
    - name: check replace
      guardrail.ecs.tofu: {project_path: "{{ project }}", variables: "{{ secret_vars | combine({'release': 'two'}) }}"}
      check_mode: true
    - name: replace
      guardrail.ecs.tofu: {project_path: "{{ project }}", variables: "{{ secret_vars | combine({'release': 'two'}) }}"}
      diff: true
    - name: shrink
      guardrail.ecs.tofu: {project_path: "{{ project }}", variables: "{{ secret_vars | combine({'release': 'two', 'n': 10}) }}"}
    - name: change secret
      guardrail.ecs.tofu: {project_path: "{{ project }}", variables: {secret: other-secret, release: two, n: 10}}
      diff: true
    - name: outputs
      guardrail.ecs.tofu: {project_path: "{{ project }}", command: output, show_sensitive: true}
    - name: lookup
      ansible.builtin.set_fact:
        looked_up: "{{ lookup('guardrail.ecs.tofu_output', project) }}"
        release: "{{ lookup('guardrail.ecs.tofu_output', project, name='release') }}"
"""


def counts(create=0, update=0, delete=0, replace=0):
    return {"create": create, "update": update, "delete": delete, "replace": replace}


def test_lifecycle_counts_outputs_and_secrets(project):
    rc, results, out, err = play(project, LIFECYCLE)
    assert rc == 0, (json.dumps(out)[-3000:], err)

    create = results["create"]
    assert create["changed"] and create["applied"] and create["initialised"]
    assert create["counts"] == counts(create=14)
    assert create["outputs"]["count"] == 12 and create["outputs"]["secret"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"

    again = results["again"]
    assert not again["changed"] and not again["applied"] and not again["initialised"]
    assert again["counts"] == counts()
    assert again["outputs"] == create["outputs"]

    check = results["check replace"]
    assert check["changed"] and not check["applied"] and check["counts"] == counts(replace=1)
    assert check["outputs"]["release"] == "one" or check["outputs"]["release"] == "two"

    replace = results["replace"]
    assert replace["changed"] and replace["applied"] and replace["counts"] == counts(replace=1)
    assert [r["address"] for r in replace["resources"]] == ["terraform_data.marker"]
    assert replace["diff"][0]["before_header"] == "terraform_data.marker (replace)"
    assert '"one"' in replace["diff"][0]["before"]
    # Only secrets are masked: a plain variable's value shows in the diff as tofu reports it.
    assert '"two"' in replace["diff"][0]["after"] and "********" not in replace["diff"][0]["after"]
    assert replace["outputs"]["marker_id"] != create["outputs"]["marker_id"]

    assert results["shrink"]["counts"] == counts(delete=2)
    secret_change = results["change secret"]
    assert secret_change["counts"] == counts(update=1)

    outputs = results["outputs"]
    assert not outputs["changed"]
    assert outputs["outputs"]["secret"] == "other-secret"
    assert "other-secret" not in outputs["stdout"]
    assert outputs["outputs"] == state_outputs(project)
    facts = results["lookup"]["ansible_facts"]
    assert facts["release"] == "two"
    assert facts["looked_up"]["secret"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert facts["looked_up"]["count"] == 10

    # Secrets passed as variables never reach the output, the diff or the logs.
    text = json.dumps(out) + err
    assert SECRET not in text, text[max(0, text.find(SECRET) - 600):text.find(SECRET) + 100]
    assert "other-secret" not in json.dumps(secret_change)


def test_check_mode_changes_nothing(project):
    tasks = """
    - name: plan only
      guardrail.ecs.tofu: {project_path: "{{ project }}"}
"""
    rc, results, _out, err = play(project, tasks, check=True)
    assert rc == 0, err
    assert results["plan only"]["changed"] and results["plan only"]["counts"] == counts(create=14)
    assert not (project / "terraform.tfstate").exists()


def test_plan_destroy_and_workspace(project):
    tasks = """
    - name: apply staging
      guardrail.ecs.tofu: {project_path: "{{ project }}", workspace: staging, variables: {n: 2}}
    - name: plan default
      guardrail.ecs.tofu: {project_path: "{{ project }}", command: plan, variables: {n: 2}}
    - name: destroy staging
      guardrail.ecs.tofu: {project_path: "{{ project }}", command: destroy, workspace: staging, variables: {n: 2}}
    - name: validate
      guardrail.ecs.tofu: {project_path: "{{ project }}", command: validate}
"""
    rc, results, out, err = play(project, tasks)
    assert rc == 0, (json.dumps(out)[-3000:], err)
    assert results["apply staging"]["counts"] == counts(create=4)
    assert (project / "terraform.tfstate.d" / "staging" / "terraform.tfstate").exists()
    assert not (project / "terraform.tfstate").exists()
    assert not (project / ".terraform" / "environment").exists()
    plan = results["plan default"]
    assert plan["changed"] and plan["counts"] == counts(create=4) and not plan["applied"]
    destroy = results["destroy staging"]
    assert destroy["changed"] and destroy["counts"] == counts(delete=4) and destroy["outputs"] == {}
    assert not results["validate"]["changed"]


def test_failure_carries_tool_error(project):
    (project / "broken.tf").write_text('resource "terraform_data" {\n')
    tasks = """
    - name: broken
      guardrail.ecs.tofu: {project_path: "{{ project }}"}
      ignore_errors: true
    - name: missing directory
      guardrail.ecs.tofu: {project_path: "{{ project }}/nope"}
      ignore_errors: true
"""
    rc, results, _out, err = play(project, tasks)
    assert rc == 0, err
    broken = results["broken"]
    assert broken["failed"] and "failed (rc=1)" in broken["msg"]
    assert "Error:" in broken["msg"] and "broken.tf" in broken["msg"]
    assert "is not a directory" in results["missing directory"]["msg"]
