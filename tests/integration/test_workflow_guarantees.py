"""The workflow's promises in the situations that used to break them: re-renders
beside local state, hostile `dest`, uncommitted templates, interrupted applies,
secrets and masking, pushes after plans, tofu's own lock, a lost push race.
Real git with bare remotes and clones, the real terraform/tofu binary."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import ROOT, VENV_BIN, ansible_env, git
from workflow_helpers import (
    commit,
    make_stack_repo,
    push_as_the_lock_is_taken,
    remote_head,
    remote_lock,
    statuses,
    workflow,
)

BINARY = shutil.which("tofu") or shutil.which("terraform")
SLOW = """terraform {
  backend "local" {}
}

resource "terraform_data" "slow" {
  input = "{{ profile_name }}"
  provisioner "local-exec" {
    command = "sleep 30"
  }
}
"""


@pytest.fixture
def stack_repo(git_repo):
    clone, remote = git_repo
    make_stack_repo(clone)
    return clone, remote


def dest(clone, stack="alpha"):
    return clone / ".dist" / "prod" / stack


def tool(*args, cwd):
    assert BINARY, "neither tofu nor terraform is on PATH"
    return subprocess.run([BINARY, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def processes_in(directory):
    """Pids of live processes whose working directory is `directory`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(directory):
                found.append(int(pid))
        except OSError:
            continue
    return found


# -- item 3: rendering never destroys what it did not write --------------------

def test_rerender_keeps_relative_local_state_and_tofu_files(stack_repo):
    clone, _remote = stack_repo
    commit(clone, "stacks/alpha/main.tf.j2",
           (clone / "stacks/alpha/main.tf.j2").read_text().replace(
               'backend "local" {}', 'backend "local" {\n    path = "state/alpha.tfstate"\n  }'),
           push=True)
    rc, result, err = workflow(clone, steps=["render", "git_check", "exec"])
    assert rc == 0, (result.get("msg"), err)
    state = dest(clone) / "state" / "alpha.tfstate"
    assert state.is_file()
    (dest(clone) / "errored.tfstate").write_text("{}\n")
    (dest(clone) / "reviewed.tfplan").write_text("plan\n")
    commit(clone, "stacks/alpha/outputs.tf", "# outputs moved\n", push=True)
    rc, result, err = workflow(clone, steps=["render"])
    assert rc == 0, (result.get("msg"), err)
    assert state.is_file() and (dest(clone) / "errored.tfstate").is_file()
    assert (dest(clone) / "reviewed.tfplan").is_file()
    assert "terraform_data.service" in tool("state", "list", cwd=dest(clone)).stdout
    # What render wrote and no longer renders does go.
    commit(clone, "stacks/alpha/extra.tf", "# extra\n", push=True)
    assert workflow(clone, steps=["render"])[0] == 0
    assert (dest(clone) / "extra.tf").is_file()
    git("rm", "-q", "stacks/alpha/extra.tf", cwd=clone)
    git("commit", "-q", "-m", "drop extra", cwd=clone)
    assert workflow(clone, steps=["render"])[0] == 0
    assert not (dest(clone) / "extra.tf").exists() and state.is_file()


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("bad", [".git", "profiles", "stacks", "stacks/..", ".git/guardrail", "tracked"])
def test_dest_outside_the_rendering_area_refused_with_nothing_deleted(stack_repo, bad):
    clone, _remote = stack_repo
    commit(clone, "tracked/keep.txt", "tracked\n", push=True)
    before = snapshot(clone)
    rc, result, _err = workflow(clone, render={"dest": bad}, steps=["render"])
    assert rc != 0
    assert "dest" in result["msg"] and "nothing was run" in result["msg"], result["msg"]
    assert snapshot(clone) == before
    assert git("status", "--porcelain", cwd=clone) == ""


def work_tree(root):
    return [p for p in snapshot(root) if p != ".git" and not p.startswith(".git/")]


@pytest.mark.parametrize("how", ["committed", "staged"])
@pytest.mark.parametrize("steps", [None, ["lock", "exec", "unlock"]])
def test_a_dest_git_tracks_files_in_is_refused_before_the_lock_whatever_the_steps(stack_repo, how, steps):
    """A rendered directory holding a file git tracks (committed, or only
    staged) is refused before any lock, by every run that renders or runs
    tofu there: all the steps (HEAD's tree read with the committed ids, and
    git_check for a staged file) or exec alone (git's index asked)."""
    clone, remote = stack_repo
    tracked = clone / "tracked"
    tracked.mkdir()
    (tracked / "main.tf").write_text('resource "terraform_data" "kept" {}\n')
    git("add", "tracked", cwd=clone)
    if how == "committed":
        git("commit", "-q", "-m", "tracked", cwd=clone)
        git("push", "-q", cwd=clone)
    before = work_tree(clone)
    rc, result, _err = workflow(clone, render={"dest": "tracked"}, **({"steps": steps} if steps else {}))
    assert rc != 0
    if how == "staged" and steps is None:
        # Not in HEAD's tree: the render step's own check (a render made anew) or git_check names it.
        assert result["failed_step"] in ("render", "git_check") and "tracked/main.tf" in result["msg"], result
    else:
        assert "holds files tracked by git" in result["msg"] and "nothing was run" in result["msg"], result["msg"]
    assert work_tree(clone) == before
    assert remote_lock(remote) is None


# -- item 4: what runs is what is committed --------------------------------------

PIPE_TEMPLATE = "# {{ lookup('pipe', 'touch %s') }}\n"


@pytest.mark.parametrize("check", [False, True])
def test_uncommitted_template_is_never_evaluated(stack_repo, tmp_path, check):
    clone, remote = stack_repo
    marker = tmp_path / "marker"
    (clone / "stacks/alpha/evil.tf.j2").write_text(PIPE_TEMPLATE % marker)
    rc, result, _err = workflow(clone, check=check)
    assert rc != 0 and result["failed_step"] == "render"
    assert "evil.tf.j2" in result["msg"] and "commit" in result["msg"]
    assert not marker.exists()
    assert remote_lock(remote) is None


def test_modified_or_ignored_sources_are_never_evaluated(stack_repo, tmp_path):
    clone, _remote = stack_repo
    marker = tmp_path / "marker"
    main = clone / "stacks/alpha/main.tf.j2"
    main.write_text(main.read_text() + PIPE_TEMPLATE % marker)
    rc, result, _err = workflow(clone, steps=["render"])
    assert rc != 0 and "main.tf.j2" in result["msg"] and not marker.exists()
    git("checkout", "--", "stacks", cwd=clone)
    (clone / ".git/info/exclude").write_text("*.ignored.j2\n")
    (clone / "stacks/alpha/x.ignored.j2").write_text(PIPE_TEMPLATE % marker)
    (clone / "profiles/prod.yml").write_text((clone / "profiles/prod.yml").read_text() + "extra: 1\n")
    rc, result, _err = workflow(clone, steps=["render"])
    assert rc != 0 and "x.ignored.j2" in result["msg"] and "prod.yml" in result["msg"]
    assert not marker.exists()


# -- item 5: an interrupted apply keeps its state --------------------------------

def slow_repo(clone):
    commit(clone, "stacks/slow/main.tf.j2", SLOW, push=True)


def assert_state_kept(clone):
    project = dest(clone, "slow")
    deadline = time.monotonic() + 60
    while processes_in(project) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_in(project) == [], "a process still runs in the rendered directory"
    listed = tool("state", "list", cwd=project)
    assert listed.stdout.split() == ["terraform_data.slow"], (listed.stdout, listed.stderr)
    shown = json.loads(tool("show", "-json", cwd=project).stdout)
    resource = shown["values"]["root_module"]["resources"][0]
    assert resource.get("tainted") is True


def test_timeout_interrupts_apply_gracefully(stack_repo):
    clone, remote = stack_repo
    slow_repo(clone)
    rc, result, err = workflow(clone, stack="slow", tofu={"options": {"timeout": 8}})
    assert rc != 0, err
    assert result["failed_step"] == "exec"
    assert "timed out after 8s" in result["msg"] and "SIGINT" in result["msg"]
    assert "Interrupt received" in result["msg"] or "interrupt" in result["msg"].lower()
    assert_state_kept(clone)
    assert remote_lock(remote, "slow") is not None  # kept for the same owner to resume
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("slow", "prod")
    if hasattr(run_lock.LockBackend, "set_state"):
        assert holder.get("state") == "interrupted"


def test_sigint_to_ansible_playbook_interrupts_apply_gracefully(stack_repo, tmp_path):
    clone, _remote = stack_repo
    slow_repo(clone)
    task = {"repo_path": str(clone), "stack": "slow", "profile": "prod"}
    playbook = tmp_path / "slow.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                        "    - guardrail.ecs.workflow: " + json.dumps(task) + "\n")
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
                            cwd=tmp_path, env=ansible_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    project = dest(clone, "slow")
    deadline = time.monotonic() + 60
    while not any("sleep" in open(f"/proc/{pid}/cmdline").read() for pid in processes_in(project)
                  if os.path.exists(f"/proc/{pid}/cmdline")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out
    assert_state_kept(clone)
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("slow", "prod")
    assert holder is not None
    if hasattr(run_lock.LockBackend, "set_state"):
        assert holder.get("state") == "interrupted"


TOFU_CALLER = """
import sys
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu
tofu.Tofu(sys.argv[1]).execute("apply")
"""


@pytest.mark.parametrize("target", ["process", "terminal group"])
def test_ctrl_c_of_a_python_caller_lets_tofu_write_state(stack_repo, target):
    """Ctrl-C of a program calling the tofu functions (a terminal signals the
    whole foreground group; a supervisor signals the process)."""
    clone, _remote = stack_repo
    slow_repo(clone)
    assert workflow(clone, stack="slow", steps=["render"])[0] == 0
    project = dest(clone, "slow")
    env = ansible_env(PYTHONPATH=str(ROOT / ".cache" / "collections"))
    proc = subprocess.Popen([sys.executable, "-c", TOFU_CALLER, str(project)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not any("sleep" in open(f"/proc/{pid}/cmdline").read() for pid in processes_in(project)
                  if os.path.exists(f"/proc/{pid}/cmdline")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    if target == "process":
        proc.send_signal(signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out
    assert "interrupted by SIGINT" in out, out
    assert_state_kept(clone)


# -- item 6: no secret in any output, no corruption by masking -------------------

SECRET = "s3cr3t-from-var-file"


def secret_repo(clone):
    commit(clone, "stacks/alpha/secret.tf", 'variable "db_password" {\n  type = string\n'
           '  sensitive = true\n}\n\nresource "terraform_data" "db" {\n  input = var.db_password\n}\n')
    commit(clone, "secrets.tfvars", f'db_password = "{SECRET}"\n', push=True)


@pytest.mark.parametrize("verbosity", ["", "-vvv"])
def test_sensitive_variable_from_var_file_never_printed(stack_repo, tmp_path, verbosity):
    clone, _remote = stack_repo
    secret_repo(clone)
    task = {"repo_path": str(clone), "stack": "alpha", "profile": "prod",
            "var_files": [str(clone / "secrets.tfvars")], "variables": {"release": "prod"}}
    playbook = tmp_path / "secret.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                        "    - guardrail.ecs.workflow: " + json.dumps(task) + "\n"
                        "      register: applied\n"
                        "    - ansible.builtin.debug:\n        var: applied\n")
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)]
    proc = subprocess.run(cmd + ([verbosity] if verbosity else []), cwd=tmp_path, env=ansible_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "terraform_data.db" in proc.stdout
    assert SECRET not in proc.stdout and SECRET not in proc.stderr


def test_plain_values_pass_through_unchanged(stack_repo):
    clone, _remote = stack_repo
    rc, result, err = workflow(clone, tofu={"variables": {"release": "prod"}, "options": {"parallelism": 5}})
    assert rc == 0, (result.get("msg"), err)
    assert result["profile"] == "prod" and result["dest"].endswith("/prod/alpha")
    assert result["counts"]["create"] == 5
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" not in json.dumps(result)
    # A secret given through the AWS options is still masked wherever it appears.
    rc, result, _err = workflow(clone, steps=["exec"], command=["echo", "key-abcdef-123"],
                                secret_key="key-abcdef-123")
    assert rc == 0
    assert "key-abcdef-123" not in json.dumps(result)


def test_tofu_module_masks_sensitive_variables_only(stack_repo, tmp_path):
    clone, _remote = stack_repo
    secret_repo(clone)
    assert workflow(clone, steps=["render"])[0] == 0
    task = {"project_path": str(dest(clone)), "variables": {"release": "prod", "db_password": SECRET}}
    playbook = tmp_path / "tofu.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n"
                        "  vars:\n    ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
                        "  tasks:\n    - guardrail.ecs.tofu: " + json.dumps(task) + "\n")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-vvv"],
                          cwd=tmp_path, env=ansible_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert '"service_name": "web-prod"' in proc.stdout, proc.stdout


# -- item 7: plan never pushes ---------------------------------------------------

def test_plan_never_pushes(stack_repo):
    clone, remote = stack_repo
    before = remote_head(remote)
    commit(clone, "stacks/alpha/note.tf", "# unpushed\n")
    rc, result, err = workflow(clone, command="plan")
    assert rc == 0, (result.get("msg"), err)
    assert remote_head(remote) == before
    push = next(s for s in result["steps"] if s["step"] == "git_push")
    assert push["changed"] is False and "plan" in push["result"]["msg"]
    rc, result, err = workflow(clone)
    assert rc == 0, (result.get("msg"), err)
    assert remote_head(remote) == git("rev-parse", "HEAD", cwd=clone)


# -- item 8: tofu's own lock -----------------------------------------------------

def test_lock_key_on_the_state_key_refused_and_the_lock_given_back(stack_repo, moto):
    clone, _remote = stack_repo
    commit(clone, "stacks/alpha/backend.tf.json", json.dumps({"terraform": {"backend": {"s3": {
        "bucket": "states", "key": "alpha/prod.tfstate", "region": "us-east-1",
        "dynamodb_table": "locks", "use_lockfile": True}}}}), push=True)
    (clone / "stacks/alpha/main.tf.j2").write_text(
        (clone / "stacks/alpha/main.tf.j2").read_text().replace('backend "local" {}', ""))
    git("commit", "-q", "-am", "s3 backend", cwd=clone)
    git("push", "-q", cwd=clone)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    import boto3

    # The run lock is taken before the rendered backend is read: its table and bucket exist.
    boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1").create_table(
        TableName="locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket="states")
    for lock in ({"backend": "dynamodb", "table": "locks", "key": "states/alpha/prod.tfstate"},
                 {"backend": "s3", "bucket": "states", "key": "alpha/prod.tfstate"}):
        rc, result, _err = workflow(clone, env=env, lock=lock, endpoint_url=moto, region="us-east-1")
        assert rc != 0 and result["failed_step"] == "lock", result
        assert "tofu's own lock" in result["msg"] and "deadlock" in result["msg"], result["msg"]
        assert "Leave lock.key unset" in result["msg"], result["msg"]
        assert "the run lock this run took was released" in result["msg"], result["msg"]
        assert result["refused"] and statuses(result)[3:] == [(s, "skipped") for s in ("exec", "git_push", "unlock")]
        held = run_lock.get_backend(lock["backend"], region="us-east-1", endpoint_url=moto, access_key="testing",
                                    secret_key="testing", **{k: v for k, v in lock.items() if k != "backend"})
        assert held.read("alpha", "prod") is None, "the refused run left its run lock held"


# -- item 9: the upstream moved while we waited -----------------------------------

def test_upstream_rechecked_after_lock_and_nothing_applied(stack_repo, tmp_path):
    clone, remote = stack_repo
    other = tmp_path / "other"
    git("clone", "-q", str(remote), str(other), cwd=tmp_path)
    commit(clone, "stacks/alpha/note.tf", "# mine\n")
    # git_check passes (fetch sees nothing new); someone pushes before the lock step.
    rc, result, err = workflow(clone, steps=["render", "git_check"])
    assert rc == 0, (result.get("msg"), err)
    commit(other, "theirs.txt", "theirs\n", push=True)
    rc, result, err = workflow(clone, steps=["lock", "exec", "git_push", "unlock"])
    assert rc != 0 and result["failed_step"] == "exec", (result.get("msg"), err)
    assert "behind" in result["msg"] and "nothing was applied" in result["msg"], result["msg"]
    assert not (dest(clone) / "terraform.tfstate").exists()
    assert remote_lock(remote) is None  # this run took it and gives it back


def test_push_landing_as_the_lock_is_taken_in_one_run_is_seen_and_nothing_applied(stack_repo):
    """One run, all steps: git_check fetched a moment ago, then someone's push
    lands exactly while this run takes the lock (a post-receive hook on the
    remote moves main when the lock ref arrives). exec must fetch again."""
    clone, remote = stack_repo
    commit(clone, "stacks/alpha/note.tf", "# mine\n")
    push_as_the_lock_is_taken(remote)
    before = remote_head(remote)
    rc, result, err = workflow(clone)
    assert remote_head(remote) != before, "the hook did not fire: the race was not staged"
    assert rc != 0 and result["failed_step"] == "exec", (result.get("msg"), err)
    assert "behind" in result["msg"] and "nothing was applied" in result["msg"], result["msg"]
    assert not (dest(clone) / "terraform.tfstate").exists()
    assert remote_lock(remote) is None


def test_push_lost_after_apply_keeps_lock_and_says_what_was_applied(stack_repo, tmp_path):
    clone, remote = stack_repo
    other = tmp_path / "other"
    git("clone", "-q", str(remote), str(other), cwd=tmp_path)
    commit(clone, "stacks/alpha/note.tf", "# mine\n")
    # The other clone pushes while our apply runs: its commit lands from a
    # local-exec provisioner, after the pre-exec upstream check.
    commit(clone, "stacks/alpha/race.tf", 'resource "terraform_data" "race" {\n'
           '  provisioner "local-exec" {\n'
           f'    command = "cd {other} && git commit -q --allow-empty -m theirs && git push -q"\n'
           '  }\n}\n')
    head = git("rev-parse", "HEAD", cwd=clone)
    rc, result, err = workflow(clone, git={"max_ahead": 2}, env={"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@x",
                                                                 "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@x"})
    assert rc != 0 and result["failed_step"] == "git_push", (result.get("msg"), err)
    msg = result["msg"]
    assert "applied" in msg and head in msg and "stays held" in msg, msg
    assert remote_lock(remote) is not None
    assert remote_head(remote) != head


def hook(remote, name, text):
    path = remote / "hooks" / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


ZERO = "0" * 40


def test_branch_marker_and_release_land_in_one_atomic_push(stack_repo, tmp_path):
    """git_push then unlock: the branch, the applied marker and the lock's
    delete reach the remote in one push (one post-receive), so the lock is
    free exactly when the branch has landed."""
    clone, remote = stack_repo
    log = tmp_path / "received"
    hook(remote, "post-receive", f"cat >> '{log}'\necho --- >> '{log}'\n")
    commit(clone, "stacks/alpha/note.tf", "# mine\n")
    applied = git("rev-parse", "HEAD", cwd=clone)
    rc, result, err = workflow(clone)
    assert rc == 0, (result.get("msg"), err)
    assert result["steps"][-1]["result"]["msg"].startswith("released in the same atomic push"), result["steps"][-1]
    last = [line.split() for line in log.read_text().split("---\n")[-2].splitlines()]
    assert sorted((ref, new) for _old, new, ref in last) == sorted([
        ("refs/heads/main", applied), ("refs/guardrail/applied/alpha/prod", applied),
        ("refs/guardrail/locks/alpha/prod", ZERO)])
    assert remote_head(remote) == applied and remote_lock(remote) is None


@pytest.mark.parametrize("refused", ["the lock's delete", "the branch"])
def test_a_refusal_in_the_atomic_push_lands_nothing_and_each_step_says_what_happened(stack_repo, refused):
    """A server hook refuses one ref of the atomic push: none of it lands,
    and the branch, the marker and the lock are pushed each on its own as
    they were before: a branch refused keeps the lock held (git_push failed);
    a delete refused leaves the branch pushed and only the lock held."""
    clone, remote = stack_repo
    pattern = "refs/guardrail/locks/*" if refused == "the lock's delete" else "refs/heads/main"
    hook(remote, "update", f'case "$1" in {pattern}) [ "$3" = {ZERO} ] || [ "{pattern}" = refs/heads/main ] '
                           f'&& {{ echo "refused by policy: $1" >&2; exit 1; }} ;; esac\nexit 0\n')
    before = remote_head(remote)
    commit(clone, "stacks/alpha/note.tf", "# mine\n")
    applied = git("rev-parse", "HEAD", cwd=clone)
    rc, result, err = workflow(clone)
    assert rc != 0, (result.get("msg"), err)
    assert remote_lock(remote) is not None, "the lock stays held"
    marker = git("for-each-ref", "--format=%(objectname)", "refs/guardrail/applied/alpha/prod", cwd=remote)
    if refused == "the branch":
        assert result["failed_step"] == "git_push" and "refused by policy: refs/heads/main" in result["msg"]
        assert remote_head(remote) == before and "stays held" in result["msg"], result["msg"]
        assert marker != applied, "nothing of the run was marked applied"
    else:
        assert result["failed_step"] == "unlock" and "refused by policy" in result["msg"], result["msg"]
        assert remote_head(remote) == applied and marker == applied
        assert "Everything else succeeded" in result["msg"], result["msg"]


OLD_TERRAFORM = "#!/bin/sh\necho 'Terraform v1.2.9'\necho 'on linux_amd64'\n"
NOT_TOFU = "#!/bin/sh\necho 'GNU Make 4.3'\n"


def stand_in(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("case", ["no binary", "old terraform", "not tofu", "unknown tofu_option",
                                  "bad tofu_option value", "missing stack", "missing profile",
                                  "missing var file", "missing relative var file"])
def test_every_check_that_needs_no_lock_runs_before_the_lock(case, git_repo, tmp_path):
    """Each refusal leaves the remote without a lock and tofu unrun."""
    clone, remote = git_repo
    make_stack_repo(clone)
    cache = tmp_path / "cache"  # a fresh version cache: the stand-ins are asked, not remembered
    args = dict(lock={"owner": "alice", "run_id": "run-1"}, tofu={})
    steps = ["render", "git_check", "lock", "exec", "git_push", "unlock"]
    expect = case
    if case == "no binary":
        args["tofu"]["binary"] = str(tmp_path / "no-such-tofu")
        expect = "no-such-tofu"
    elif case == "old terraform":
        args["tofu"]["binary"] = stand_in(tmp_path, "terraform", OLD_TERRAFORM)
        expect = "older than the 1.5.0"
    elif case == "not tofu":
        args["tofu"]["binary"] = stand_in(tmp_path, "tofu", NOT_TOFU)
        expect = "is not OpenTofu or Terraform"
    elif case == "unknown tofu_option":
        args["tofu"]["options"] = {"paralelism": 2}
        expect = "paralelism"
    elif case == "bad tofu_option value":
        args["tofu"]["options"] = {"parallelism": "many"}
        expect = "parallelism"
    elif case == "missing stack":
        args["stack"] = "beta"
        steps = ["lock", "exec", "unlock"]
        expect = "stack 'beta' not found"
    elif case == "missing profile":
        args["profile"] = "qa"
        steps = ["lock", "exec", "unlock"]
        expect = "profile 'qa' not found"
    elif case == "missing var file":
        args["tofu"]["var_files"] = [str(tmp_path / "absent.tfvars")]
        expect = "absent.tfvars does not exist"
    elif case == "missing relative var file":
        args["tofu"]["var_files"] = ["absent.tfvars"]
        expect = "absent.tfvars not found in the rendered directory"
    rc, result, err = workflow(clone, steps=steps, env={"XDG_CACHE_HOME": str(cache)}, **args)
    assert rc != 0, result
    assert expect in result["msg"], result["msg"]
    assert remote_lock(remote, profile=args.get("profile", "prod"), stack=args.get("stack", "alpha")) is None
    assert not list(clone.glob(".dist/*/*/terraform.tfstate")), "tofu ran"
