"""The workflow survives its own death: bin/guardrail (and the workflow task)
killed or signalled at several points of an apply whose resource takes
seconds. Every case counts the creations that completed (exactly one over
the killed run and the next), the state entries, the lock, and what the
next run does. Real git with a bare remote, the real terraform/tofu binary.

Set GUARDRAIL_KILL_MATRIX=path to have the matrix written there as a table."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import ROOT, VENV_BIN, ansible_env, git
from workflow_helpers import commit, make_stack_repo, remote_head, remote_lock, workflow

GUARDRAIL = ROOT / "bin" / "guardrail"
STEPS = ("render", "git_check", "lock", "exec", "git_push", "unlock")
# The provisioner marks its start, sleeps, then records a completed creation:
# a creation cut short by an interrupt never reaches the second line.
SLOW = """terraform {{
  backend "local" {{}}
}}

resource "terraform_data" "slow" {{
  input = "{{{{ profile_name }}}}"
  provisioner "local-exec" {{
    command = "echo started >> '{log}.started'; sleep {seconds}; echo ${{self.id}} >> '{log}'"
  }}
}}
"""
MATRIX = []


@pytest.fixture
def slow_repo(git_repo, tmp_path):
    clone, remote = git_repo
    make_stack_repo(clone)
    log = tmp_path / "creations"
    commit(clone, "stacks/slow/main.tf.j2", SLOW.format(log=log, seconds=6), push=True)
    return clone, remote, log


def project(clone):
    return clone / ".dist" / "prod" / "slow"


def start(clone, env=None, out=None, command=("apply", "-auto-approve")):
    full_env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID=f"run-{time.time_ns()}")
    full_env.update(env or {})
    # Output to files: the test must not be what keeps a pipe open.
    sink = open(out or os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    proc = subprocess.Popen([sys.executable, str(GUARDRAIL), *STEPS, "--", "slow", "prod", "tofu", *command],
                            cwd=clone, env=full_env, stdout=sink, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sink.close()
    return proc


def guardrail(clone, *args, run_id="run-next"):
    env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID=run_id)
    return subprocess.run([sys.executable, str(GUARDRAIL), *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def tool_processes(directory, word=None):
    """Pids of live processes (tofu and its provisioners) working in
    `directory`, those with `word` among their arguments when given."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/cwd") == str(directory) and (
                        word is None or word.encode() in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")):
                    found.append(int(pid))
            except OSError:
                continue
    return found


def wait_for(predicate, what, timeout=90):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def state_entries(clone):
    path = project(clone) / "terraform.tfstate"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [f"{r['type']}.{r['name']}" + (" (tainted)" if any(i.get("status") == "tainted" for i in r["instances"])
                                          else "")
            for r in data.get("resources", [])]


def lines(path):
    return path.read_text().split() if path.exists() else []


POINTS = {
    # tofu apply runs, nothing is being created yet (planning, refreshing)
    "planning": lambda clone, log: bool(tool_processes(project(clone), "apply")),
    # the resource is being created: its provisioner sleeps
    "creating": lambda clone, log: bool(lines(log.with_name(log.name + ".started"))),
}


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("signame", ["SIGKILL", "SIGHUP", "SIGTERM", "SIGINT"])
def test_signal_to_the_command_loses_no_state(slow_repo, signame, point):
    clone, remote, log = slow_repo
    proc = start(clone)
    wait_for(lambda: POINTS[point](clone, log) or proc.poll() is not None, point)
    assert proc.poll() is None, "the command ended before it could be signalled"
    os.kill(proc.pid, getattr(signal, signame))
    rc = proc.wait(timeout=120)
    if signame == "SIGKILL":
        # The orphaned tofu goes on: while it lives, the lock is live and
        # nobody — not even the same owner — takes it over.
        if tool_processes(project(clone), "apply"):
            early = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
            assert early.returncode == 2, early.stdout + early.stderr
            assert "still running" in early.stderr, early.stderr
        wait_for(lambda: not tool_processes(project(clone)), "the orphaned tofu to end")
    assert not tool_processes(project(clone)), "a process still works in the rendered directory"
    created_first = len(lines(log))
    entries_first = state_entries(clone)
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("slow", "prod")
    lock_first = (holder or {}).get("state", "free")
    ended = run_lock.run_ended(holder) if holder else "free"
    assert not (clone / ".dist" / "prod" / "slow" / ".terraform.tfstate.lock.info").exists() or ended

    nxt = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    created = lines(log)
    MATRIX.append((signame, point, rc, created_first, ", ".join(entries_first) or "-", lock_first,
                   f"exit {nxt.returncode}, created {len(created) - created_first}"
                   f"{', took over' if 'took over' in nxt.stdout + nxt.stderr else ''}"))
    assert len(created) == 1, f"{len(created)} creations completed: {created}"
    assert state_entries(clone) == ["terraform_data.slow"]
    assert remote_lock(remote, "slow") is None
    assert remote_head(remote) == git("rev-parse", "HEAD", cwd=clone)
    again = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
    assert again.returncode == 0 and len(lines(log)) == 1, again.stdout + again.stderr
    if signame == "SIGKILL":
        assert "took over" in nxt.stdout, nxt.stdout
    else:
        assert rc != 0 and lock_first == "interrupted", (rc, lock_first)


@pytest.fixture(scope="module", autouse=True)
def kill_matrix():
    yield
    target = os.environ.get("GUARDRAIL_KILL_MATRIX")
    if target and MATRIX:
        rows = ["| signal | point | wrapper exit | completed creations | state after | lock after | next run |",
                "|---|---|---|---|---|---|---|"]
        rows += ["| " + " | ".join(str(c) for c in row) + " |" for row in MATRIX]
        with open(target, "a", encoding="utf-8") as out:
            out.write("\n".join(rows) + "\n")


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGHUP", "SIGTERM", "SIGINT", "SIGINT+SIGTERM"])
def test_signal_to_ansible_playbook_loses_no_state(slow_repo, tmp_path, signame):
    """The workflow task: ansible-playbook signalled while the resource is
    created (SIGINT+SIGTERM: an AWX cancel, SIGTERM a second after SIGINT)."""
    clone, remote, log = slow_repo
    task = {"repo_path": str(clone), "stack": "slow", "profile": "prod", "owner": "tester"}
    playbook = tmp_path / "slow.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                        "    - guardrail.ecs.workflow: " + json.dumps(task) + "\n")
    with open(tmp_path / "play.log", "w", encoding="utf-8") as sink:
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
                                cwd=tmp_path, env=ansible_env(), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    started = log.with_name(log.name + ".started")
    wait_for(lambda: lines(started) or proc.poll() is not None, "the resource's creation")
    assert proc.poll() is None, (tmp_path / "play.log").read_text()
    for number, name in enumerate(signame.split("+")):
        if number:
            time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, getattr(signal, name))
    proc.wait(timeout=120)
    # The worker that ran the task is in a session of its own: it (and the
    # tofu it started) may outlive ansible-playbook while tofu stops.
    wait_for(lambda: not tool_processes(project(clone)) and not tool_processes(tmp_path), "tofu and the worker to end")
    created_first = len(lines(log))
    entries_first = state_entries(clone)
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("slow", "prod")
    lock_first = (holder or {}).get("state", "free")
    rc, result, err = workflow(clone, stack="slow", owner="tester")
    MATRIX.append((f"{signame} (ansible-playbook)", "creating", proc.returncode, created_first,
                   ", ".join(entries_first) or "-", lock_first,
                   f"rc {rc}, created {len(lines(log)) - created_first}"
                   f"{', took over' if result.get('taken_over') else ''}"))
    assert rc == 0, (result.get("msg"), err)
    assert len(lines(log)) == 1, lines(log)
    if signame == "SIGHUP":
        # ansible-playbook does not pass SIGHUP on: its worker, in a session
        # of its own, finishes the run (applied, pushed, unlocked).
        assert lock_first == "free" and created_first == 1, (holder, created_first)
    elif signame != "SIGKILL":
        # What AWX's cancel sends: the task stops tofu gracefully and records why.
        assert lock_first == "interrupted", holder
        assert created_first == 0 and entries_first == ["terraform_data.slow (tainted)"], entries_first
    assert state_entries(clone) == ["terraform_data.slow"]
    assert remote_lock(remote, "slow") is None


def kill_run_and_tofu(clone, log, command=("apply", "-auto-approve")):
    """Starts a run and SIGKILLs it and its tofu while the resource is created."""
    proc = start(clone, command=command)
    started = log.with_name(log.name + ".started")
    wait_for(lambda: lines(started) or proc.poll() is not None, "the resource's creation")
    applying = tool_processes(project(clone), "apply")
    assert applying, "no tofu apply runs"
    os.kill(proc.pid, signal.SIGKILL)
    for pid in applying:
        os.killpg(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    wait_for(lambda: not tool_processes(project(clone)), "the killed processes to go")


def test_state_lock_left_by_a_killed_tofu_is_released_and_said(slow_repo):
    """The command and its tofu both killed: tofu's local state lock stays
    behind; the next run removes it (no process holds the state), says so,
    and converges."""
    clone, remote, log = slow_repo
    kill_run_and_tofu(clone, log)
    lock_info = project(clone) / ".terraform.tfstate.lock.info"
    assert lock_info.exists(), "tofu left no state lock: the situation this test is about did not happen"
    nxt = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert "removed the state lock tofu left" in nxt.stdout and "took over" in nxt.stdout, nxt.stdout
    assert not lock_info.exists()
    assert lines(log) and state_entries(clone) == ["terraform_data.slow"]
    assert remote_lock(remote, "slow") is None


def in_pid_namespace():
    try:
        probe = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "sh", "-c", "echo $$"],
                               capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return False
    return probe.stdout.strip() == "1"


@pytest.mark.skipif(not in_pid_namespace(), reason="SKIPPED LOUDLY: `unshare -p -f --mount-proc` is not "
                    "available here (needs root or user namespaces): the PID namespace case is untested")
def test_holder_in_another_pid_namespace_is_never_judged_gone(slow_repo, tmp_path):
    """A run in a PID namespace of its own (a container, `unshare -p`) records
    a pid that means nothing outside it: a run from another clone of the same
    owner must still find its lock live."""
    clone, remote, log = slow_repo
    other = tmp_path / "other clone"
    git("clone", "-q", str(remote), str(other), cwd=tmp_path)
    env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="contained")
    with open(tmp_path / "holder.log", "w", encoding="utf-8") as sink:
        holder = subprocess.Popen(["unshare", "-p", "-f", "--mount-proc", sys.executable, str(GUARDRAIL), *STEPS,
                                   "--", "slow", "prod", "tofu", "apply", "-auto-approve"], cwd=clone, env=env, stdout=sink,
                                  stderr=subprocess.STDOUT)
    started = log.with_name(log.name + ".started")
    wait_for(lambda: lines(started) or holder.poll() is not None, "the contained run's creation")
    record = run_lock.get_backend("git", repo_path=str(clone)).read("slow", "prod")
    assert record["pid_ns"] != run_lock.pid_namespace(), record
    assert run_lock.run_ended(record) is None
    second = guardrail(other, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve", run_id="outside")
    assert second.returncode == 2, second.stdout + second.stderr
    assert "held by tester (run contained" in second.stderr and "wait for it to end" in second.stderr
    assert holder.wait(timeout=120) == 0, (tmp_path / "holder.log").read_text()
    assert len(lines(log)) == 1
    assert remote_lock(remote, "slow") is None


# -- apply and push are bound to one commit ------------------------------------

def test_commit_made_during_apply_is_not_pushed(slow_repo):
    clone, remote, log = slow_repo
    before = git("rev-parse", "HEAD", cwd=clone)
    proc = start(clone)
    started = log.with_name(log.name + ".started")
    wait_for(lambda: lines(started) or proc.poll() is not None, "the resource's creation")
    commit(clone, "notes.txt", "made while the apply ran\n", message="unreviewed")
    assert proc.wait(timeout=120) == 1
    assert remote_head(remote) == before, "a commit made during the apply was pushed"
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("slow", "prod")
    assert holder["state"] == "failed" and "moved" in holder["detail"], holder
    assert len(lines(log)) == 1


def test_push_refuses_a_branch_moved_during_the_run(slow_repo):
    clone, remote, log = slow_repo
    before = git("rev-parse", "HEAD", cwd=clone)
    out = log.with_name("run.out")
    proc = start(clone, out=out)
    started = log.with_name(log.name + ".started")
    wait_for(lambda: lines(started) or proc.poll() is not None, "the resource's creation")
    commit(clone, "notes.txt", "made while the apply ran\n", message="unreviewed")
    assert proc.wait(timeout=120) == 1
    text = out.read_text()
    assert "checkout moved during the run" in text and f"{before} was applied" in text, text
    assert "nothing was pushed" in text and "{self.owner}" not in text and "marked failed" in text, text
    assert remote_head(remote) == before


def test_plan_from_hand_edited_rendered_files_is_refused(slow_repo):
    """A plan made by a bare exec from hand-edited rendered files smuggles a
    resource past review: the full workflow refuses to apply it."""
    clone, remote, _log = slow_repo
    done = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    main_tf = clone / ".dist" / "prod" / "alpha" / "main.tf"
    main_tf.write_text(main_tf.read_text() + '\nresource "terraform_data" "smuggled" {\n  input = "x"\n}\n')
    planned = guardrail(clone, "exec", "--", "alpha", "prod", "tofu", "plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "smuggled" in planned.stdout
    plan_id = planned.stdout.split("Saved plan ")[1][:16]
    applied = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", plan_id)
    assert applied.returncode == 2, applied.stdout + applied.stderr
    assert "not made by the workflow from committed content" in applied.stderr, applied.stderr
    listed = subprocess.run([os.environ.get("GUARDRAIL_BINARY") or "terraform", "state", "list"],
                            cwd=clone / ".dist" / "prod" / "alpha", capture_output=True, text=True, check=False)
    assert "smuggled" not in listed.stdout
    # A plan made with the render step from committed content is applied.
    planned = guardrail(clone, "render", "exec", "--", "alpha", "prod", "tofu", "plan")
    plan_id = planned.stdout.split("Saved plan ")[1][:16]
    applied = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", plan_id)
    assert applied.returncode == 0, applied.stdout + applied.stderr


# -- paths, modes, timeouts, secrets, messages -----------------------------------

def test_symlinked_plan_store_is_refused_and_left_alone(slow_repo, tmp_path):
    clone, _remote, _log = slow_repo
    done = guardrail(clone, "render", "--", "alpha", "prod", "tofu", "plan")
    assert done.returncode == 0, done.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o755)
    (foreign / "old.tfplan").write_text("not ours\n")
    (clone / ".dist" / "prod" / "alpha" / ".guardrail-plans").symlink_to(foreign)
    planned = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "plan")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "is a symlink" in planned.stderr, planned.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["old.tfplan"]
    assert (foreign.stat().st_mode & 0o777) == 0o755


def test_state_and_plans_are_private(slow_repo):
    clone, _remote, _log = slow_repo
    project_dir = clone / ".dist" / "prod" / "alpha"
    applied = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve")
    assert applied.returncode == 0, applied.stderr
    (project_dir / "terraform.tfstate").chmod(0o644)  # as an older run left it
    commit(clone, "stacks/alpha/more.tf", 'resource "terraform_data" "more" {\n  input = "y"\n}\n', push=True)
    planned = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "plan")
    plan_id = planned.stdout.split("Saved plan ")[1][:16]
    assert (project_dir / ".guardrail-plans" / f"{plan_id}.tfplan").stat().st_mode & 0o777 == 0o600
    assert guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", plan_id).returncode == 0
    for name in ("terraform.tfstate", "terraform.tfstate.backup"):
        assert (project_dir / name).stat().st_mode & 0o777 == 0o600, name


def test_timeout_applies_to_the_engine_apply(slow_repo):
    clone, remote, log = slow_repo
    started = time.monotonic()
    proc = guardrail(clone, "--timeout", "3", *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "timed out after 3s" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 30
    assert lines(log) == []
    assert remote_lock(remote, "slow") is not None


SECRET = "hunter2-output-value"


def test_pass_through_output_never_returns_sensitive_values(slow_repo):
    clone, _remote, _log = slow_repo
    commit(clone, "stacks/alpha/secret.tf", f'output "token" {{\n  value     = "{SECRET}"\n  sensitive = true\n}}\n',
           push=True)
    assert guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve").returncode == 0
    for cmd in (["output", "-json"], ["show", "-json"], ["output", "-raw", "token"]):
        shown = guardrail(clone, "--json", "render", "exec", "--", "alpha", "prod", "tofu", *cmd)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert SECRET not in shown.stdout, (cmd, shown.stdout)
        assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in shown.stdout, (cmd, shown.stdout)


REJECT_LOCK_DELETES = """#!/bin/sh
while read old new ref; do
  case "$ref" in refs/guardrail/locks/*)
    [ "$new" = 0000000000000000000000000000000000000000 ] && { echo "lock deletes are refused" >&2; exit 1; };;
  esac
done
exit 0
"""


def test_unlock_failing_after_apply_says_what_succeeded(slow_repo):
    clone, remote, _log = slow_repo
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(REJECT_LOCK_DELETES)
    hook.chmod(0o755)
    commit(clone, "stacks/alpha/more.tf", 'resource "terraform_data" "more" {\n  input = "y"\n}\n')
    proc = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    head = git("rev-parse", "HEAD", cwd=clone)
    assert f"commit {head} was applied" in proc.stderr and "and pushed" in proc.stderr, proc.stderr
    assert "Release it with steps [unlock] and run_id run-next" in proc.stderr, proc.stderr
    assert remote_head(remote) == head
    holder = run_lock.get_backend("git", repo_path=str(clone)).read("alpha", "prod")
    assert holder["state"] == "failed" and "lock deletes are refused" in holder["detail"], holder


@pytest.mark.parametrize("backend", ["dynamodb", "s3"])
def test_orphaned_tofu_keeps_an_aws_run_lock_live_from_another_clone(slow_repo, tmp_path, moto, backend):
    """The lock records (boot id, lock file, pids) travel in every backend's
    record: a run from another clone on the host sees the orphan alive."""
    from lock_helpers import BUCKET, TABLE, create_aws_resources

    clone, remote, log = slow_repo
    create_aws_resources(moto)
    options = (["--lock-backend", "dynamodb", "--lock-table", TABLE] if backend == "dynamodb" else
               ["--lock-backend", "s3", "--lock-bucket", BUCKET]) + ["--endpoint-url", moto, "--region", "us-east-1"]
    other = tmp_path / "other clone"
    git("clone", "-q", str(remote), str(other), cwd=tmp_path)
    env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="killed")
    with open(os.devnull, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen([sys.executable, str(GUARDRAIL), *options, *STEPS, "--", "slow", "prod", "tofu",
                                 "apply", "-auto-approve"], cwd=clone, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    started = log.with_name(log.name + ".started")
    wait_for(lambda: lines(started) or proc.poll() is not None, "the resource's creation")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    early = guardrail(other, *options, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve", run_id="other")
    assert early.returncode == 2, early.stdout + early.stderr
    assert "held by tester (run killed" in early.stderr and "wait for it to end" in early.stderr, early.stderr
    wait_for(lambda: not tool_processes(project(clone)), "the orphaned tofu to end")
    assert len(lines(log)) == 1
    nxt = guardrail(clone, *options, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
    assert nxt.returncode == 0 and "took over" in nxt.stdout, nxt.stdout + nxt.stderr
    assert len(lines(log)) == 1 and state_entries(clone) == ["terraform_data.slow"]


# -- render writes only under the lock -------------------------------------------

def snapshot(directory):
    """{relative path: (bytes, mtime_ns)} of every file under `directory`."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_render_writes_nothing_while_another_run_holds_the_lock(slow_repo):
    """A colleague's run holds the lock: a run whose committed templates
    changed is refused at the lock, and its render has written nothing."""
    clone, remote, _log = slow_repo
    first = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    held = guardrail(clone, "--owner", "colleague", "lock", "--", "alpha", "prod", "tofu", "apply", run_id="theirs")
    assert held.returncode == 0, held.stdout + held.stderr
    commit(clone, "stacks/alpha/extra.tf", 'resource "terraform_data" "extra" {\n  input = "z"\n}\n', push=True)
    dest = clone / ".dist" / "prod" / "alpha"
    before = snapshot(dest)
    refused = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "held by colleague (run theirs" in refused.stderr, refused.stderr
    assert snapshot(dest) == before, "render wrote while another run held the lock"
    # Once the lock is free the same run renders (the test above is not one
    # that passes because render never writes).
    released = guardrail(clone, "--owner", "colleague", "unlock", "--", "alpha", "prod", "tofu", "apply",
                         run_id="theirs")
    assert released.returncode == 0, released.stdout + released.stderr
    done = guardrail(clone, *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (dest / "extra.tf").exists() and snapshot(dest) != before
    assert remote_lock(remote, "alpha") is None


def test_render_alone_still_writes_without_a_lock(slow_repo):
    clone, remote, _log = slow_repo
    held = guardrail(clone, "--owner", "colleague", "lock", "--", "alpha", "prod", "tofu", "apply", run_id="theirs")
    assert held.returncode == 0, held.stdout + held.stderr
    done = guardrail(clone, "render", "--", "alpha", "prod", "tofu", "plan")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (clone / ".dist" / "prod" / "alpha" / "main.tf").exists()
    assert remote_lock(remote, "alpha") is not None


# -- tofu's state lock in a remote backend ------------------------------------------

S3_BACKEND = """backend "s3" {{
    bucket                      = "{bucket}"
    key                         = "slow/prod.tfstate"
    region                      = "us-east-1"
    use_lockfile                = true
    use_path_style              = true
    skip_credentials_validation = true
    skip_requesting_account_id  = true
    skip_metadata_api_check     = true
    skip_region_validation      = true
    endpoints = {{ s3 = "{endpoint}" }}
  }}"""
STATE_KEY = "slow/prod.tfstate"


@pytest.fixture
def s3_slow_repo(slow_repo, moto):
    """The slow stack with its state (and tofu's lock, the S3-native
    `<key>.tflock`) in a bucket of the moto server."""
    import boto3

    clone, remote, log = slow_repo
    s3 = boto3.client("s3", endpoint_url=moto)
    s3.create_bucket(Bucket="states")
    template = SLOW.replace('backend "local" {{}}', S3_BACKEND)
    template = template.format(log=log, seconds=6, bucket="states", endpoint=moto)
    commit(clone, "stacks/slow/main.tf.j2", template, push=True)
    return clone, remote, log, s3


def s3_state_entries(s3):
    try:
        body = s3.get_object(Bucket="states", Key=STATE_KEY)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return []
    return [f"{r['type']}.{r['name']}" for r in json.loads(body).get("resources", [])]


def s3_state_lock(s3):
    try:
        return json.loads(s3.get_object(Bucket="states", Key=STATE_KEY + ".tflock")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


@pytest.mark.parametrize("command", [["apply", "-auto-approve"], ["apply", "-auto-approve", "-parallelism=3"]],
                         ids=["engine", "passed-through"])
def test_state_lock_in_s3_left_by_a_killed_tofu_is_force_unlocked_once(s3_slow_repo, command):
    """The command and its tofu both SIGKILLed mid-create: tofu's lock object
    stays in the bucket. The next run takes the run lock over, finds the
    lock's tofu gone, runs force-unlock once, says so, and converges; as well
    when that run's command line is passed through as typed (an extra flag)."""
    clone, remote, log, s3 = s3_slow_repo
    kill_run_and_tofu(clone, log)
    left = s3_state_lock(s3)
    assert left and left["ID"], "tofu left no state lock: the situation this test is about did not happen"
    assert not (project(clone) / ".terraform.tfstate.lock.info").exists()
    created_first, entries_first = len(lines(log)), s3_state_entries(s3)
    lock_first = run_lock.get_backend("git", repo_path=str(clone)).read("slow", "prod")["state"]

    nxt = guardrail(clone, "--json", *STEPS, "--", "slow", "prod", "tofu", *command)
    result = json.loads(nxt.stdout)
    assert nxt.returncode == 0, (result.get("msg"), nxt.stderr)
    assert result["taken_over"].startswith("took over"), result
    assert left["ID"] in result["state_lock_released"] and "force-unlock" in result["state_lock_released"], result
    exec_step = next(s for s in result["steps"] if s["step"] == "exec")
    if len(command) > 2:
        assert exec_step["result"]["cmd"][1:] == command, exec_step["result"]
    else:
        assert exec_step["result"]["stdout"].count("successfully unlocked") == 1, exec_step["result"]["stdout"]
    assert s3_state_lock(s3) is None
    assert len(lines(log)) == 1 and s3_state_entries(s3) == ["terraform_data.slow"]
    assert remote_lock(remote, "slow") is None
    again = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
    assert again.returncode == 0 and len(lines(log)) == 1, again.stdout + again.stderr
    assert "state lock:" not in again.stdout
    MATRIX.append((f"SIGKILL (command and its tofu), s3 backend, next run {' '.join(command)}", "creating", -9,
                   created_first,
                   ", ".join(entries_first) or "-", lock_first,
                   f"exit {nxt.returncode}, created {len(lines(log)) - created_first}, took over, force-unlock once"))


def test_state_lock_left_while_applying_a_saved_plan_is_force_unlocked_once(s3_slow_repo):
    """The run applying a saved plan and its tofu SIGKILLed mid-create: the
    next run applying that plan takes the run lock over, releases tofu's lock
    once, and either applies the plan or refuses it as stale (the killed tofu
    wrote the state); nothing is created twice, and a new plan converges."""
    clone, remote, log, s3 = s3_slow_repo
    planned = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan_id = re.search(r"Saved plan ([0-9a-f]{16})", planned.stdout).group(1)
    kill_run_and_tofu(clone, log, command=("apply", plan_id))
    left = s3_state_lock(s3)
    assert left and left["ID"], "tofu left no state lock: the situation this test is about did not happen"

    nxt = guardrail(clone, "--json", *STEPS, "--", "slow", "prod", "tofu", "apply", plan_id)
    result = json.loads(nxt.stdout)
    assert result["taken_over"].startswith("took over"), result
    assert left["ID"] in (result.get("state_lock_released") or ""), result
    assert s3_state_lock(s3) is None
    if nxt.returncode != 0:
        assert "stale" in result["msg"] and "applied nothing" in result["msg"], result["msg"]
        again = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
        assert again.returncode == 0, again.stdout + again.stderr
    assert len(lines(log)) == 1 and s3_state_entries(s3) == ["terraform_data.slow"]
    assert remote_lock(remote, "slow") is None


def test_state_lock_held_by_someone_else_is_refused_with_its_info(s3_slow_repo):
    """tofu's lock held by a colleague's tofu (no run of this workflow):
    nothing is unlocked, nothing applied, and the refusal shows whose lock."""
    clone, remote, log, s3 = s3_slow_repo
    theirs = {"ID": "0b9c7c52-colleague", "Operation": "OperationTypeApply", "Info": "", "Who": "colleague@elsewhere",
              "Version": "1.11.4", "Created": "2026-01-01T10:00:00.000000Z", "Path": f"states/{STATE_KEY}"}
    s3.put_object(Bucket="states", Key=STATE_KEY + ".tflock", Body=json.dumps(theirs))
    refused = guardrail(clone, *STEPS, "--", "slow", "prod", "tofu", "apply", "-auto-approve")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    for word in ("0b9c7c52-colleague", "colleague@elsewhere", "force-unlock 0b9c7c52-colleague"):
        assert word in refused.stderr, refused.stderr
    assert s3_state_lock(s3) == theirs
    assert lines(log) == [] and remote_lock(remote, "slow") is None
