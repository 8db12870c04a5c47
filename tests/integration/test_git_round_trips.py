"""What breaks the git round trips of a run: the remote read once per question
(git_check, the re-check under the lock) and the branch, the applied marker and
the lock released in one atomic push. Found by a review that tried to break them;
each test states the guarantee it holds."""
import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.common import git as gitops
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import ROOT, git
from lock_helpers import clone
from workflow_helpers import make_stack_repo, remote_lock

GUARDRAIL = ROOT / "bin" / "guardrail"


def guardrail(clone_path, *args):
    env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="run-1")
    return subprocess.run([sys.executable, str(GUARDRAIL), "--yes", "--json", *args], cwd=clone_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def commit(repo, name, text="x\n"):
    (repo / name).write_text(text)
    git("add", name, cwd=repo)
    git("commit", "-q", "-m", f"change {name}", cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


@pytest.fixture
def other(git_repo, tmp_path):
    return clone(git_repo[1], tmp_path / "other")


def take_lock(work):
    backend = run_lock.GitLockBackend(repo_path=str(work))
    record = run_lock.new_record("alpha", "prod", "tester", "run-1")
    backend.acquire("alpha", "prod", record)
    return backend, record, backend.release_with_push("alpha", "prod", record)


# --- 1. recheck's fast path trusts HEAD: a clone reset behind its upstream while
#        the run waited for the lock is applied (no render step in the run).
RESET_AS_THE_LOCK_IS_TAKEN = """#!/bin/sh
while read -r old new ref; do case "$ref" in refs/guardrail/locks/*)
  [ "$new" = 0000000000000000000000000000000000000000 ] && continue
  ( unset GIT_DIR GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
    cd "@WORK@" && git reset -q --hard HEAD~1 )
  rm -f "$0";; esac; done
"""


def test_head_reset_behind_upstream_while_waiting_is_not_applied(git_repo):
    work, remote = git_repo
    make_stack_repo(work)
    (work / ".gitignore").write_text(".dist/\n")
    git("add", ".gitignore", cwd=work)
    git("commit", "-q", "-m", "ignore", cwd=work)
    git("push", "-q", cwd=work)
    assert guardrail(work, "render", "--", "alpha", "prod", "terraform", "apply").returncode == 0
    upstream = git("rev-parse", "HEAD", cwd=work)
    hook = remote / "hooks" / "post-receive"
    hook.write_text(RESET_AS_THE_LOCK_IS_TAKEN.replace("@WORK@", str(work)))
    hook.chmod(0o755)
    proc = guardrail(work, "git_check", "lock", "exec", "git_push", "unlock", "--", "alpha", "prod",
                     "terraform", "apply")
    result = json.loads(proc.stdout)
    steps = {s["step"]: s["status"] for s in result["steps"]}
    assert git("rev-parse", "HEAD", cwd=work) != upstream, "the clone was reset behind its upstream"
    # Guarantee: nothing is applied from a clone behind its upstream (the pre-change code refuses at exec).
    assert steps["exec"] == "failed", (steps, result["msg"])


# --- 2. a dest git tracks files in is no longer refused when the run has no render step.
def test_exec_in_a_dest_tracked_by_git_is_refused(git_repo):
    work, _remote = git_repo
    make_stack_repo(work)
    (work / "tracked").mkdir()
    (work / "tracked" / "main.tf").write_text('resource "terraform_data" "t" {}\n')
    git("add", "tracked", cwd=work)
    git("commit", "-q", "-m", "tracked", cwd=work)
    git("push", "-q", cwd=work)
    proc = guardrail(work, "--dest", "tracked", "lock", "exec", "unlock", "--", "alpha", "prod",
                     "terraform", "apply")
    assert not (work / "tracked" / "terraform.tfstate").exists(), "tofu ran in (and wrote state into) a tracked dir"
    assert proc.returncode != 0 and "tracked by git" in proc.stdout + proc.stderr


# --- 3. timeouts: the message names the command that hung.
def test_a_hanging_remote_is_reported_as_the_remote_not_as_git_status(git_repo):
    work, _remote = git_repo
    checked = gitops.check(str(work))
    git("config", "remote.origin.uploadpack", "sleep 20; git-upload-pack", cwd=work)
    for call in (lambda: gitops.check(str(work), timeout=2), lambda: gitops.recheck(str(work), checked, timeout=2)):
        with pytest.raises(gitops.GitError) as caught:
            call()
        assert "ls-remote" in str(caught.value), str(caught.value)


def test_a_git_that_finished_in_time_is_not_reported_as_timed_out(git_repo):
    work, _remote = git_repo
    started = gitops.start_git(["rev-parse", "HEAD"], str(work), timeout=1)
    time.sleep(1.2)  # another git command runs meanwhile, within its own timeout
    assert started.proc.poll() == 0
    assert started.result().returncode == 0


# --- 4. the atomic path reports (and does) other things than the separate path.
def test_atomic_push_range_is_full_object_ids_as_the_separate_path(git_repo):
    work, _remote = git_repo
    applied = commit(work, "a.tf")
    checked = gitops.check(str(work))
    _backend, _record, release = take_lock(work)
    result = gitops.push_applied(str(work), applied, [("alpha", "prod")], release=release,
                                 expected=checked["upstream_commit"])[0]
    assert result["released"]
    old, _dots, new = result["range"].partition("..")
    assert len(old) == len(new) == 40, result["range"]


def test_atomic_push_does_not_recreate_a_branch_deleted_during_the_apply(git_repo):
    work, remote = git_repo
    head = git("rev-parse", "HEAD", cwd=work)
    checked = gitops.check(str(work))
    _backend, _record, release = take_lock(work)
    git("branch", "trunk", "main", cwd=remote)
    git("update-ref", "-d", "refs/heads/main", cwd=remote)
    # Deleted by someone without the run lock: refused, and not made again.
    with pytest.raises(gitops.PushRefused, match="was deleted on origin while the run held its lock") as refused:
        gitops.push_applied(str(work), head, [("alpha", "prod")], release=release,
                            expected=checked["upstream_commit"])
    assert refused.value.cause == "gone"
    assert not git("for-each-ref", "refs/heads/main", cwd=remote)
    assert remote_lock(remote) is not None


def test_an_atomic_push_that_times_out_after_landing_leaves_no_false_lock_story(git_repo):
    """The push lands (branch and lock delete) but git's report comes late:
    push_applied raises, so the workflow says the lock stays held, marked failed."""
    work, remote = git_repo
    applied = commit(work, "a.tf")
    checked = gitops.check(str(work))
    _backend, _record, release = take_lock(work)
    hook = remote / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\nsleep 4\n")
    hook.chmod(0o755)
    raised = None
    try:
        gitops.push_applied(str(work), applied, [("alpha", "prod")], release=release,
                            expected=checked["upstream_commit"], timeout=2)
    except gitops.GitError as exc:
        raised = exc
    time.sleep(3)
    landed = git("rev-parse", "main", cwd=remote) == applied
    assert not (raised and landed and remote_lock(remote) is None), \
        f"raised {raised!s:.80} yet the branch landed and the lock is gone"


# -- a second review: the branch moved under the lock, a dest through a symlink ------

STEPS = ["render", "git_check", "lock", "exec", "git_push", "unlock"]
RACE_TF = """resource "terraform_data" "race" {
  triggers_replace = [timestamp()]
  provisioner "local-exec" {
    command = "if [ -n \\"$REVIEW_RACE\\" ]; then sh \\"$REVIEW_RACE\\"; fi"
  }
}
"""


def guardrail_json(work, *args, env=None):
    full = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="run-1")
    full.update(env or {})
    proc = subprocess.run([sys.executable, str(GUARDRAIL), "--yes", "--json", *args], cwd=work, env=full,
                          capture_output=True, text=True, timeout=300, check=False)
    try:
        return proc, json.loads(proc.stdout)
    except ValueError:
        return proc, {"raw": proc.stdout + proc.stderr}


def setup(git_repo, tmp_path):
    work, remote = git_repo
    make_stack_repo(work)
    (work / ".gitignore").write_text(".dist/\n")
    (work / "stacks" / "alpha" / "race.tf").write_text(RACE_TF)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "race", cwd=work)
    git("push", "-q", cwd=work)
    base = git("rev-parse", "HEAD", cwd=work)
    (work / "stacks" / "alpha" / "extra.tf").write_text('resource "terraform_data" "extra" {}\n')
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "ours, one ahead", cwd=work)
    return work, remote, base


def summary(proc, result, remote):
    steps = {s["step"]: (s["status"], s.get("changed")) for s in result.get("steps", [])}
    heads = git("for-each-ref", "--format=%(refname) %(objectname:short)", cwd=remote)
    return (f"rc={proc.returncode} changed={result.get('changed')} steps={steps}\nmsg={result.get('msg')}\n"
            f"git_push={[s.get('result') for s in result.get('steps', []) if s['step'] == 'git_push']}\n"
            f"unlock={[s.get('result') for s in result.get('steps', []) if s['step'] == 'unlock']}\n"
            f"remote refs:\n{heads}")


def race_script(tmp_path, text):
    script = tmp_path / "race.sh"
    script.write_text("set -e\n" + text + f"\nrm -f '{script}'\n")
    return str(script)


DELETE_MAIN_AS_THE_LOCK_IS_TAKEN = (
    '#!/bin/sh\nwhile read -r o n r; do case "$r" in refs/guardrail/locks/*)\n'
    '[ "$n" = 0000000000000000000000000000000000000000 ] && continue\n'
    'git update-ref -d refs/heads/main; rm -f "$0";; esac; done\n')


@pytest.mark.parametrize("stacks", ["alpha", "all"])
def test_branch_deleted_while_waiting_for_the_lock(git_repo, tmp_path, stacks):
    """A branch deleted on the remote while the run waits for the lock (a
    default branch renamed), for one stack or every stack: nothing is
    applied, and the branch is not made again."""
    work, remote, _base = setup(git_repo, tmp_path)
    hook = remote / "hooks" / "post-receive"
    hook.write_text(DELETE_MAIN_AS_THE_LOCK_IS_TAKEN)
    hook.chmod(0o755)
    proc, result = guardrail_json(work, *STEPS, "--", stacks, "prod", "terraform", "apply")
    assert proc.returncode != 0 and "no longer exists on the remote" in proc.stdout, summary(proc, result, remote)
    assert not git("for-each-ref", "refs/heads/main", cwd=remote), "the deleted branch was made again"
    assert not (work / ".dist" / "prod" / "alpha" / "terraform.tfstate").exists(), "applied"


@pytest.mark.parametrize("what", ["push", "delete", "forceback", "takeover"])
def test_the_branch_moved_during_the_apply_is_never_pushed_over(git_repo, tmp_path, what):
    """Someone without the run lock moves the branch while the apply runs:
    pushes on top, deletes it, or moves it back; or takes the lock over."""
    work, remote, base = setup(git_repo, tmp_path)
    other = clone(remote, tmp_path / "other")
    git("config", "user.name", "O", cwd=other)
    git("config", "user.email", "o@x", cwd=other)
    first = git("rev-list", "--max-parents=0", "HEAD", cwd=work)
    scripts = {
        "push": f"cd '{other}' && echo t > theirs && git add theirs && git commit -qm theirs && git push -q",
        "delete": f"git -C '{remote}' update-ref -d refs/heads/main",
        "forceback": f"git -C '{remote}' update-ref refs/heads/main {first}",
        "takeover": (f"cd '{other}' && git push -q origin :refs/guardrail/locks/alpha/prod && "
                     f"PYTHONPATH= GUARDRAIL_OWNER=mallory GUARDRAIL_RUN_ID=run-9 '{sys.executable}' '{GUARDRAIL}' "
                     "--json lock -- alpha prod terraform plan >/dev/null"),
    }
    proc, result = guardrail_json(work, *STEPS, "--", "alpha", "prod", "terraform", "apply",
                                  env={"REVIEW_RACE": race_script(tmp_path, scripts[what])})
    report = summary(proc, result, remote)
    lock = git("for-each-ref", "--format=%(contents)", "refs/guardrail/locks/alpha/prod", cwd=remote)
    assert not (tmp_path / "race.sh").exists(), "the race did not run"
    steps = {s["step"]: s["status"] for s in result["steps"]}
    assert steps["exec"] == "ok", report
    main = git("for-each-ref", "--format=%(objectname)", "refs/heads/main", cwd=remote)
    if what == "takeover":
        # The branch lands; the lock is mallory's now, and unlock says so.
        assert steps["git_push"] == "ok" and steps["unlock"] == "failed", report
        assert main == git("rev-parse", "HEAD", cwd=work) and '"owner": "mallory"' in lock, report
        assert "no longer this run's: mallory (run run-9) holds it" in result["msg"], report
        assert "Release it with steps [unlock]" not in result["msg"], report
        return
    # Whoever moved the branch did it without the run lock: nothing is pushed over it, the lock stays held.
    assert steps["git_push"] == "failed" and '"owner": "tester"' in lock, report
    expected = {"push": "behind", "delete": "was deleted on origin", "forceback": "was moved back"}[what]
    assert expected in result["msg"] and "stays held" in result["msg"], report
    assert main == {"push": main, "delete": "", "forceback": first}[what], report


@pytest.mark.parametrize("steps", [["git_check", "lock", "exec", "git_push", "unlock"], ["lock", "exec", "unlock"]])
def test_dest_reached_through_an_ignored_symlink_into_a_tracked_dir(git_repo, steps):
    """HEAD's tree names the rendered directory as written: through a symlink
    into a tracked directory, git's index is asked, and refuses."""
    work, remote = git_repo
    make_stack_repo(work)
    (work / ".gitignore").write_text(".dist/\n")
    (work / "keep" / "alpha").mkdir(parents=True)
    (work / "keep" / "alpha" / "main.tf").write_text('resource "terraform_data" "kept" {}\n')
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "keep", cwd=work)
    git("push", "-q", cwd=work)
    (work / ".dist" / "prod").mkdir(parents=True)
    (work / ".dist" / "prod" / "alpha").symlink_to("../../keep/alpha")
    proc, result = guardrail_json(work, *steps, "--", "alpha", "prod", "terraform", "apply")
    assert proc.returncode != 0 and "tracked by git" in result["msg"], result
    assert not (work / "keep" / "alpha" / "terraform.tfstate").exists(), "tofu wrote its state into a tracked dir"


def test_absolute_dest_through_a_symlinked_checkout_path(git_repo, tmp_path):
    """$PWD is the logical path (/tmp -> /private/tmp on macOS): --dest "$PWD/keep/alpha"."""
    work, remote = git_repo
    make_stack_repo(work)
    (work / "keep" / "alpha").mkdir(parents=True)
    (work / "keep" / "alpha" / "main.tf").write_text('resource "terraform_data" "kept" {}\n')
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "keep", cwd=work)
    git("push", "-q", cwd=work)
    link = tmp_path / "link"
    link.symlink_to(work)
    proc, result = guardrail_json(link, "--dest", str(link / "keep" / "alpha"), "git_check", "lock", "exec",
                                  "git_push", "unlock", "--", "alpha", "prod", "terraform", "apply")
    assert proc.returncode != 0, result
    assert not (work / "keep" / "alpha" / "terraform.tfstate").exists(), "tofu wrote its state into a tracked dir"


def test_an_atomic_push_that_timed_out_and_did_not_land_is_not_reported_as_landed(git_repo):
    """Nothing to push (HEAD is the upstream); the push hangs and is refused,
    and meanwhile an operator breaks the lock: what the remote holds is
    reported, and nothing is said to have landed."""
    work, remote = git_repo
    head = git("rev-parse", "HEAD", cwd=work)
    checked = gitops.check(str(work))
    backend = run_lock.GitLockBackend(repo_path=str(work))
    record = run_lock.new_record("alpha", "prod", "tester", "run-1")
    backend.acquire("alpha", "prod", record)
    release = backend.release_with_push("alpha", "prod", record)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n( unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n"
                    "  git update-ref -d refs/guardrail/locks/alpha/prod )\nsleep 4\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(gitops.GitError, match="timed out after 2s.*the run lock at nothing"):
        gitops.push_applied(str(work), head, [("alpha", "prod")], release=release,
                            expected=checked["upstream_commit"], timeout=2)
    time.sleep(3)
    assert not git("for-each-ref", "refs/guardrail/applied/alpha/prod", cwd=remote)
