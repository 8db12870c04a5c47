"""Benchmark of runs over many stacks, side by side in one run.

A repository of 10 independent stacks, each one terraform_data whose create
sleeps 1 s (local-exec, standing in for a slow cloud API), the git lock on a
local bare remote, bin/guardrail with the full steps:

1. `apply` of `all` at --parallelism 1 and at --parallelism 4, each on a fresh
   clone (every stack creates);
2. after a commit touching one stack: `plan` of `affected` against `plan` of
   `all` (a plan is what a reviewer asks for on every push).

Usage: .venv/bin/python benchmarks/stacks.py [--stacks N] [--sleep S]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUARDRAIL = ROOT / "bin" / "guardrail"
STEPS = ["render", "git_check", "lock", "exec", "git_push", "unlock"]
STACK = """\
terraform {
  backend "local" {}
}

resource "terraform_data" "slow" {
  input = "{{ stack_name }}"
  provisioner "local-exec" {
    command = "sleep SLEEP"
  }
}
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=120,
                   env=dict(os.environ, **GIT_ENV))


def make_clone(base, name, stacks, sleep):
    remote, clone = base / f"{name}.git", base / name
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=base)
    git("clone", "-q", str(remote), str(clone), cwd=base)
    git("checkout", "-q", "-b", "main", cwd=clone)
    (clone / "profiles").mkdir()
    (clone / "profiles" / "prod.yml").write_text("environment: prod\n")
    for index in range(stacks):
        folder = clone / "stacks" / f"s{index:02d}"
        folder.mkdir(parents=True)
        (folder / "main.tf.j2").write_text(STACK.replace("SLEEP", str(sleep)))
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "stacks", cwd=clone)
    git("push", "-q", "-u", "origin", "main", cwd=clone)
    return clone


def timed(clone, stack, command, parallelism):
    cmd = [sys.executable, str(GUARDRAIL), "--owner", "bench", "--yes", "--parallelism", str(parallelism), *STEPS, "--",
           stack, "prod", "tofu", command]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=clone, capture_output=True, text=True, timeout=1800, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[2:])} failed:\n{proc.stdout}\n{proc.stderr}")
    selected = sum(1 for line in proc.stdout.splitlines() if line.split()[-1:] in (["ok"], ["changed"]))
    return elapsed, selected


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=1.0)
    args = parser.parse_args()
    if not (shutil.which("tofu") or shutil.which("terraform")):
        sys.exit("neither tofu nor terraform is on PATH")
    with tempfile.TemporaryDirectory(prefix="guardrail-stacks-bench-") as tmp:
        base = Path(tmp)
        rows = []
        for parallelism in (1, 4):
            clone = make_clone(base, f"p{parallelism}", args.stacks, args.sleep)
            elapsed, count = timed(clone, "all", "apply", parallelism)
            rows.append((f"apply all, --parallelism {parallelism}", count, elapsed))
        target = clone / "stacks" / "s03" / "main.tf.j2"
        target.write_text(target.read_text() + "# touched\n")
        git("commit", "-q", "-am", "touch one stack", cwd=clone)
        git("push", "-q", cwd=clone)
        for stack in ("affected", "all"):
            elapsed, count = timed(clone, stack, "plan", 4)
            rows.append((f"plan {stack} after a one-stack commit, --parallelism 4", count, elapsed))
    print(f"{args.stacks} independent stacks, {args.sleep:g} s per create")
    print(f"{'run':<52} {'stacks':>6} {'wall s':>8}")
    for label, count, elapsed in rows:
        print(f"{label:<52} {count:>6} {elapsed:>8.2f}")
    print(f"parallelism 4 vs 1: {rows[0][2] / rows[1][2]:.2f}x faster; "
          f"affected vs all: {rows[3][2] / rows[2][2]:.2f}x faster")


if __name__ == "__main__":
    main()
