"""guardrail.ecs.workflow and the tofu_change playbook end to end: a clone with a
bare remote, the git lock backend on that remote, the real tofu/terraform binary."""
import json

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import ROOT, run_playbook, task_results
from workflow_helpers import commit, git, make_stack_repo, remote_head, remote_lock, state_outputs, statuses, workflow

ALL = ["render", "git_check", "lock", "exec", "git_push", "unlock"]


@pytest.fixture
def stack_repo(git_repo):
    clone, remote = git_repo
    make_stack_repo(clone)
    return clone, remote


def dest(clone):
    return clone / ".dist" / "prod" / "alpha"


def test_full_workflow_applies_pushes_and_unlocks(stack_repo):
    clone, remote = stack_repo
    commit(clone, "stacks/alpha/note.tf", "# a change to push\n")
    rc, result, err = workflow(clone)
    assert rc == 0, (result.get("msg"), err)
    assert statuses(result) == [(s, "ok") for s in ALL]
    assert all(isinstance(s["duration"], float) for s in result["steps"])
    assert result["counts"] == {"create": 5, "update": 0, "delete": 0, "replace": 0}
    assert remote_head(remote) == git("rev-parse", "HEAD", cwd=clone)
    assert remote_lock(remote) is None
    assert result["outputs"] == state_outputs(dest(clone))
    assert result["outputs"]["service_name"] == "web-prod" and result["outputs"]["replicas"] == 3
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""

    rc, again, err = workflow(clone)
    assert rc == 0, (again, err)
    assert again["changed"] is False
    changed = {s["step"]: s["changed"] for s in again["steps"]}
    assert changed["render"] is False and changed["exec"] is False and changed["git_push"] is False
    assert again["counts"] == {"create": 0, "update": 0, "delete": 0, "replace": 0}
    assert again["outputs"] == result["outputs"]
    assert remote_lock(remote) is None


def test_exec_failure_keeps_lock_pushes_nothing_and_same_owner_proceeds(stack_repo):
    clone, remote = stack_repo
    pushed = remote_head(remote)
    commit(clone, "stacks/alpha/broken.tf", 'resource "terraform_data" {\n')
    rc, result, _err = workflow(clone)
    assert rc != 0
    assert result["failed_step"] == "exec"
    assert statuses(result) == [("render", "ok"), ("git_check", "ok"), ("lock", "ok"), ("exec", "failed"),
                                ("git_push", "skipped"), ("unlock", "skipped")]
    assert "stays held by" in result["msg"] and "nothing was pushed" in result["msg"]
    assert "steps [unlock]" in result["msg"] and "unlock_any" in result["msg"]
    assert "Error" in result["msg"]  # the tool's own error text
    assert remote_lock(remote) is not None
    assert remote_head(remote) == pushed
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("alpha", "prod")
    assert holder["owner"] == result["owner"] and holder["run_id"] == result["run_id"]

    (clone / "stacks/alpha/broken.tf").write_text("# fixed\n")
    git("commit", "-q", "-a", "--amend", "-m", "fixed", cwd=clone)
    rc, result, err = workflow(clone)
    assert rc == 0, (result.get("msg"), err)
    assert statuses(result) == [(s, "ok") for s in ALL]
    assert remote_head(remote) == git("rev-parse", "HEAD", cwd=clone)
    assert remote_lock(remote) is None


def test_dirty_tree_takes_no_lock_and_runs_nothing(stack_repo):
    clone, remote = stack_repo
    (clone / "stray.txt").write_text("not committed\n")
    rc, result, _err = workflow(clone)
    assert rc != 0
    assert result["failed_step"] == "git_check"
    assert "untracked" in result["msg"] and "No lock was taken and nothing ran" in result["msg"]
    assert statuses(result)[2:] == [(s, "skipped") for s in ALL[2:]]
    assert remote_lock(remote) is None
    assert not (dest(clone) / "terraform.tfstate").exists()


def test_second_owner_refused_while_lock_held(stack_repo):
    clone, remote = stack_repo
    rc, result, err = workflow(clone, lock={"owner": "alice", "run_id": "run-1"},
                               steps=["render", "git_check", "lock"])
    assert rc == 0, (result.get("msg"), err)
    rc, result, _err = workflow(clone, lock={"owner": "bob"})
    assert rc != 0 and result["failed_step"] == "lock"
    assert "held by alice (run run-1" in result["msg"]
    assert not (dest(clone) / "terraform.tfstate").exists()
    rc, result, _err = workflow(clone, lock={"owner": "bob"}, steps=["unlock"])
    assert rc != 0 and "alice" in result["msg"] and "unlock_any" in result["msg"]
    assert remote_lock(remote) is not None
    # unlock_any releases only its owner's locks: bob must name alice to release hers.
    rc, result, _err = workflow(clone, lock={"owner": "bob"}, steps=["unlock_any"])
    assert rc != 0 and result["refused"] and "owner=alice" in result["msg"], result
    assert remote_lock(remote) is not None
    rc, result, err = workflow(clone, lock={"owner": "alice"}, steps=["unlock-any"])
    assert rc == 0 and result["changed"], (result, err)
    assert result["steps"][0]["result"]["released"]["run_id"] == "run-1"
    assert remote_lock(remote) is None


def deprecations(result, err):
    """The deprecations Ansible shows: in the task result (ansible-core 2.19
    and later, with the collection and the version of removal) or on stderr."""
    found = [d["msg"] for d in result.get("deprecations") or []
             if (d.get("collection_name"), d.get("version")) == ("guardrail.ecs", "0.4.0")]
    # On stderr (before 2.19), only this collection's: ansible-core may deprecate its own things there.
    for warning in " ".join(err.split()).split("[DEPRECATION WARNING]")[1:]:
        if "guardrail.ecs" in warning or "0.4.0" in warning:
            found.append(warning)
    return " ".join(found)


def test_flat_names_of_0_2_work_with_a_deprecation_and_the_same_result(stack_repo):
    """A playbook written for 0.2 (flat names) runs as the nested form does,
    with one deprecation warning per flat name; both forms of one option
    with different values are refused before anything runs."""
    clone, remote = stack_repo
    flat = dict(owner="alice", run_id="run-flat", lock_message="from 0.2", exec_timeout=600,
                variables={"release": "v2"}, max_ahead=1, steps=["render", "git_check", "lock", "exec"])
    rc, old, err = workflow(clone, **flat)
    assert rc == 0, (old.get("msg"), err)
    warned = deprecations(old, err)
    for name in ("owner", "run_id", "lock_message", "exec_timeout", "variables", "max_ahead"):
        assert f"the workflow option {name} is deprecated, and removed in 0.4.0" in warned, (name, old, err)
    record = git("cat-file", "-p", "refs/guardrail/locks/alpha/prod", cwd=remote)
    assert "run-flat" in record and "from 0.2" in record, record
    rc, released, err = workflow(clone, lock={"owner": "alice", "run_id": "run-flat"}, steps=["unlock"])
    assert rc == 0 and released["changed"] and not deprecations(released, err), (released, err)

    nested = dict(lock={"owner": "alice", "run_id": "run-flat", "message": "from 0.2"},
                  tofu={"timeout": 600, "variables": {"release": "v2"}}, git={"max_ahead": 1},
                  steps=["render", "git_check", "lock", "exec"])
    rc, new, err = workflow(clone, **nested)
    assert rc == 0 and not deprecations(new, err), (new.get("msg"), err)
    assert statuses(new) == statuses(old) == [(s, "ok") for s in flat["steps"]]
    assert (new["owner"], new["run_id"], new["outputs"]) == (old["owner"], old["run_id"], old["outputs"])
    assert workflow(clone, lock={"owner": "alice", "run_id": "run-flat"}, steps=["unlock"])[0] == 0

    rc, both, _err = workflow(clone, owner="bob", lock={"owner": "alice"})
    assert rc != 0 and "owner ('bob') and lock.owner ('alice') are both given and differ" in both["msg"], both
    assert remote_lock(remote) is None and "steps" not in both


def test_design_spelling_of_the_steps_runs_the_workflow(stack_repo):
    clone, remote = stack_repo
    before = remote_head(remote)
    commit(clone, "stacks/alpha/note.tf", "# spelled as the design spells it\n")
    rc, result, err = workflow(clone, lock={"owner": "alice"},
                               steps=["build", "git-check", "lock", "exec", "git-push", "unlock-any"])
    assert rc == 0, (result.get("msg"), err)
    assert statuses(result) == [(step, "ok") for step in
                                ("render", "git_check", "lock", "exec", "git_push", "unlock_any")]
    assert remote_head(remote) != before, "git-push did not push"
    assert remote_lock(remote) is None, "unlock-any left the lock"
    assert (dest(clone) / "terraform.tfstate").exists()


def test_check_mode_runs_plan_only(stack_repo):
    clone, remote = stack_repo
    before = remote_head(remote)
    commit(clone, "stacks/alpha/note.tf", "# unpushed\n")
    rc, result, err = workflow(clone, check=True, diff=True)
    assert rc == 0, (result.get("msg"), err)
    assert result["changed"] is True
    assert result["counts"]["create"] == 5
    exec_step = next(s for s in result["steps"] if s["step"] == "exec")
    assert exec_step["result"]["applied"] is False
    assert any("terraform_data.service" in d.get("after_header", "") for d in result["diff"])
    assert not (dest(clone) / "terraform.tfstate").exists()
    assert remote_head(remote) == before
    assert remote_lock(remote) is None


def test_replacement_reported_and_outputs_match_state(stack_repo):
    clone, _remote = stack_repo
    rc, first, err = workflow(clone)
    assert rc == 0, (first, err)
    rc, result, err = workflow(clone, tofu={"variables": {"release": "v2"}})
    assert rc == 0, (result.get("msg"), err)
    assert result["changed"] is True
    assert result["counts"] == {"create": 0, "update": 0, "delete": 0, "replace": 1}
    assert [r["address"] for r in result["resources"]] == ["terraform_data.deployment"]
    assert result["outputs"]["deployment_id"] != first["outputs"]["deployment_id"]
    assert result["outputs"] == state_outputs(dest(clone))


def test_argv_command_runs_in_rendered_directory(stack_repo):
    clone, remote = stack_repo
    rc, result, err = workflow(clone, command=["sh", "-c", "pwd; ls main.tf"])
    assert rc == 0, (result.get("msg"), err)
    exec_step = next(s for s in result["steps"] if s["step"] == "exec")
    assert exec_step["result"]["stdout"] == f"{dest(clone)}\nmain.tf\n"
    assert remote_lock(remote) is None


BAD_INPUT = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: unknown step
      guardrail.ecs.workflow: {repo_path: "%(repo)s", stack: alpha, profile: prod, steps: [render, deploy]}
      ignore_errors: true
    - name: out of order
      guardrail.ecs.workflow: {repo_path: "%(repo)s", stack: alpha, profile: prod, steps: [lock, render]}
      ignore_errors: true
    - name: escaping stack
      guardrail.ecs.workflow: {repo_path: "%(repo)s", stack: ../../etc, profile: prod}
      ignore_errors: true
    - name: escaping dest
      guardrail.ecs.workflow: {repo_path: "%(repo)s", stack: alpha, profile: prod, render: {dest: ../out}}
      ignore_errors: true
    - name: unknown command
      guardrail.ecs.workflow: {repo_path: "%(repo)s", stack: alpha, profile: prod, command: deploy}
      ignore_errors: true
    - name: empty steps
      guardrail.ecs.workflow: {repo_path: "%(repo)s", stack: alpha, profile: prod, steps: []}
      ignore_errors: true
"""


def test_bad_input_refused_before_anything_runs(stack_repo):
    clone, remote = stack_repo
    rc, out, err = run_playbook(BAD_INPUT % {"repo": clone}, cwd=clone.parent)
    assert rc == 0, (out, err)
    results = dict(task_results(out))
    expected = {
        "unknown step": "unknown step(s) 'deploy'",
        "out of order": "step 'render' cannot come after 'lock'",
        "escaping stack": "invalid stack name '../../etc'",
        "escaping dest": "escapes the repository",
        "unknown command": "unknown command 'deploy'",
        "empty steps": "steps is empty",
    }
    for name, text in expected.items():
        assert results[name].get("failed") is True, (name, results[name])
        assert text in results[name]["msg"], (name, results[name]["msg"])
        assert "steps" not in results[name], name
    assert not (clone / ".dist").exists()
    assert remote_lock(remote) is None


def test_tofu_change_playbook_from_awx_style_extra_vars(stack_repo):
    clone, remote = stack_repo
    extra = {"stack": "alpha", "profile": "prod", "steps": "render,git_check,lock,exec",
             "command": "plan", "repo_path": str(clone), "awx_user_name": "alice", "awx_job_id": 42}
    rc, out, err = run_playbook(str(ROOT / "playbooks" / "tofu_change.yml"), extra_vars=extra, cwd=clone.parent)
    assert rc == 0, (json.dumps(out)[-2000:], err)
    result = dict(task_results(out))["Run the workflow"]
    assert [s["step"] for s in result["steps"]] == ["render", "git_check", "lock", "exec"]
    assert (result["owner"], result["run_id"]) == ("alice", "42")
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("alpha", "prod")
    assert (holder["owner"], holder["run_id"], holder["operation"]) == ("alice", "42", "plan")
    extra.update(steps=["unlock"])
    rc, out, err = run_playbook(str(ROOT / "playbooks" / "tofu_change.yml"), extra_vars=extra, cwd=clone.parent)
    assert rc == 0, (out, err)
    assert remote_lock(remote) is None


def test_tofu_change_playbook_requires_stack_and_profile(stack_repo):
    clone, _remote = stack_repo
    rc, out, _err = run_playbook(str(ROOT / "playbooks" / "tofu_change.yml"), extra_vars={"stack": "alpha"},
                                 cwd=clone.parent)
    assert rc != 0
    assert "Set the extra vars stack and profile" in json.dumps(out)


def test_dynamodb_lock_backend_through_moto(stack_repo, moto):
    import boto3

    clone, remote = stack_repo
    dynamodb = boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1")
    dynamodb.create_table(TableName="locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    options = {"endpoint_url": moto, "region": "us-east-1"}
    lock = {"backend": "dynamodb", "table": "locks"}
    rc, result, err = workflow(clone, lock=dict(lock, owner="alice", run_id="deploy-1"),
                               steps=["render", "git_check", "lock"], **options)
    assert rc == 0, (result.get("msg"), err)
    items = dynamodb.scan(TableName="locks")["Items"]
    assert [i["LockID"]["S"] for i in items] == ["guardrail/alpha/prod"]
    assert json.loads(items[0]["Info"]["S"])["Who"] == "alice"
    rc, result, _err = workflow(clone, lock=dict(lock, owner="bob"), **options)
    assert rc != 0 and result["failed_step"] == "lock" and "held by alice" in result["msg"]
    assert remote_lock(remote) is None
    # Another run of the same owner may not release it; the run that took it may.
    rc, result, _err = workflow(clone, lock=dict(lock, owner="alice", run_id="deploy-2"), steps=["unlock"], **options)
    assert rc != 0 and "held by alice (run deploy-1" in result["msg"]
    rc, result, err = workflow(clone, lock=dict(lock, owner="alice", run_id="deploy-1"), steps=["unlock"], **options)
    assert rc == 0, (result.get("msg"), err)
    assert dynamodb.scan(TableName="locks")["Items"] == []
