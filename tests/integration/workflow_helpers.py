"""Helpers for the render, tofu and workflow tests: a stack repository made
from examples/ in a clone with a bare remote, and the workflow run as a user
runs it (ansible-playbook)."""
import json
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT, git, run_playbook, task_results

EXAMPLES = ROOT / "examples"


def make_stack_repo(clone):
    """Copies the example stacks and profiles into `clone`, commits and pushes."""
    for part in ("stacks", "profiles"):
        shutil.copytree(EXAMPLES / part, clone / part)
    git("add", "stacks", "profiles", cwd=clone)
    git("commit", "-q", "-m", "example stacks", cwd=clone)
    git("push", "-q", cwd=clone)
    return clone


def commit(clone, path, text, message="change", push=False):
    target = clone / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git("add", path, cwd=clone)
    git("commit", "-q", "-m", message, cwd=clone)
    if push:
        git("push", "-q", cwd=clone)


def workflow(clone, check=False, diff=False, env=None, **args):
    """Runs one guardrail.ecs.workflow task. Returns (rc, result, stderr)."""
    task = {"repo_path": str(clone), "stack": "alpha", "profile": "prod"}
    task.update(args)
    playbook = ("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                "    - name: workflow\n      guardrail.ecs.workflow: " + json.dumps(task) + "\n")
    # Outside the clone: run_playbook writes the playbook file into cwd.
    rc, out, err = run_playbook(playbook, check=check, diff=diff, env=env, cwd=clone.parent)
    results = task_results(out)
    assert results, f"no task result: {out} {err}"
    return rc, results[-1][1], err


def remote_lock(remote, stack="alpha", profile="prod"):
    """The lock ref on the bare remote, or None."""
    proc = subprocess.run(["git", "for-each-ref", "--format=%(refname)",
                           f"refs/guardrail/locks/{stack}/{profile}"],
                          cwd=remote, capture_output=True, text=True, check=True, timeout=30)
    return proc.stdout.strip() or None


def remote_head(remote, branch="main"):
    return git("rev-parse", f"refs/heads/{branch}", cwd=remote)


def state_outputs(project):
    """`output -json` read straight from the binary, as {name: value}."""
    binary = shutil.which("tofu") or shutil.which("terraform")
    proc = subprocess.run([binary, "output", "-json"], cwd=project, capture_output=True, text=True,
                          check=True, timeout=120)
    return {name: o["value"] for name, o in json.loads(proc.stdout).items()}


def statuses(result):
    return [(s["step"], s["status"]) for s in result["steps"]]


__all__ = ["Path", "make_stack_repo", "commit", "workflow", "remote_lock", "remote_head",
           "state_outputs", "statuses", "git"]


# On the remote: the moment the first run lock arrives, someone's commit lands
# on main (after git_check, before the upstream is checked again).
PUSHED_AS_THE_LOCK_IS_TAKEN = """\
#!/bin/sh
while read -r old new ref; do
    case "$ref" in refs/guardrail/locks/*)
        [ "$new" = 0000000000000000000000000000000000000000 ] && continue
        tree=$(git rev-parse 'refs/heads/main^{tree}')
        theirs=$(GIT_AUTHOR_NAME=T GIT_AUTHOR_EMAIL=t@x GIT_COMMITTER_NAME=T GIT_COMMITTER_EMAIL=t@x \\
            git commit-tree "$tree" -p refs/heads/main -m theirs)
        git update-ref refs/heads/main "$theirs"
        rm -f "$0" ;;
    esac
done
"""


def push_as_the_lock_is_taken(remote):
    """Stages the race: a commit lands on the remote's main the moment the
    first run lock arrives there (a post-receive hook, removed once fired)."""
    hook = Path(remote) / "hooks" / "post-receive"
    hook.write_text(PUSHED_AS_THE_LOCK_IS_TAKEN)
    hook.chmod(0o755)
