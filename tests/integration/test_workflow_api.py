"""The engine as a library: examples/workflow_api.py, a third-party program,
runs the workflow through plugin_utils.api on a real stack repository (real
git, the real tofu/terraform binary) and reads each step's outcome."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from workflow_helpers import make_stack_repo, remote_head, remote_lock

EXAMPLE = ROOT / "examples" / "workflow_api.py"
# The checkout as an installed collection: <COLLECTIONS>/ansible_collections/guardrail/ecs.
COLLECTIONS = ROOT / ".cache" / "collections"
STEPS = ["render", "git_check", "lock", "exec", "git_push", "unlock"]


def run_example(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
    return subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def repo(git_repo):
    clone, remote = git_repo
    make_stack_repo(clone)
    return clone, remote


def test_example_runs_every_step_and_reports_each_outcome(repo):
    clone, remote = repo
    proc = run_example(clone, "alpha", "prod", cwd=clone.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert [line[0] for line in lines] == STEPS
    assert all(line[1] == "ok" for line in lines), proc.stdout
    assert "changed" in dict((line[0], line) for line in lines)["exec"], proc.stdout
    assert (clone / ".dist" / "prod" / "alpha").is_dir()
    assert remote_lock(remote) is None, "the example's run left its lock"


def test_a_refused_run_is_a_result_not_an_exception(repo):
    clone, remote = repo
    (clone / "stacks" / "alpha" / "dirty.tf").write_text("# not committed\n")
    before = remote_head(remote)
    proc = run_example(clone, "alpha", "prod", cwd=clone.parent)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["render", "failed"], proc.stdout
    assert remote_lock(remote) is None and remote_head(remote) == before


def test_bad_options_are_refused_before_any_step(repo):
    clone, remote = repo
    proc = run_example(clone, "alpha", "prod", "lock", "render", cwd=clone.parent)
    assert proc.returncode == 3 and "bad input" in proc.stderr and proc.stdout == ""
    assert remote_lock(remote) is None
