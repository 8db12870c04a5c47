"""Benchmark of the guardrail command, measured side by side in one run.

A no-change `apply` through bin/guardrail (steps render git_check lock exec
git_push unlock; the git lock on a local bare remote) against the raw
commands a careful person types for the same guarantees: git fetch, git
status, a lock tag created and pushed, tofu/terraform apply -auto-approve,
git push, the lock tag deleted. Interleaved rounds, medians. Target: <= 1.5x.
Also printed: the ad-hoc `ansible localhost -m guardrail.ecs.workflow` figure,
each step's share of the command's time, and the command's fixed cost (the
interpreter starting and exiting, and the imports every run needs), timed in
the same rounds: what the ratio would be if every step cost exactly what the
raw commands cost. The command remembers the command lines it parsed and
the options it validated (in the benchmark's own XDG_CACHE_HOME); the same
rounds also time the run whose command line was never seen before, which
parses it with argparse and imports ansible-core's ArgumentSpecValidator
("first run of these options").

Usage: .venv/bin/python benchmarks/cli.py [--quick] [--rounds N]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow import BINARY, ROOT, make_repo, run, workflow_cmd  # noqa: E402 pylint: disable=wrong-import-position

GUARDRAIL = ROOT / "bin" / "guardrail"
STEPS = ["render", "git_check", "lock", "exec", "git_push", "unlock"]
TAG = "guardrail-lock/alpha/prod"
# What every run of the command pays before its first step: the collection
# found as bin/guardrail finds it, the command line's module imported.
IMPORTS = f"""
import sys, types
for name, path in (("ansible_collections", None), ("ansible_collections.guardrail", None),
                   ("ansible_collections.guardrail.ecs", {str(ROOT)!r})):
    module = types.ModuleType(name)
    module.__path__ = [path] if path else []
    sys.modules[name] = module
from ansible_collections.guardrail.ecs.plugins.plugin_utils import cli
"""
VALIDATOR = "import argparse; from ansible.module_utils.common.arg_spec import ArgumentSpecValidator"
FIXED = {"interpreter": [sys.executable, "-c", "pass"], "validator": [sys.executable, "-c", VALIDATOR],
         "imports": [sys.executable, "-c", IMPORTS]}


def guardrail_cmd():
    """As a user runs it: the executable itself (its shebang starts Python the
    way it chooses), on this benchmark's Python."""
    return [str(GUARDRAIL), "--json", "--owner", "bench", *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve"]


def guardrail_run(cmd, cwd):
    """In the benchmark's own cache (XDG_CACHE_HOME beside the clone)."""
    return run(cmd, cwd, extra_env={"GUARDRAIL_PYTHON": sys.executable, "XDG_CACHE_HOME": str(cwd.parent / "cache")})


def forget_validations(clone):
    """The next run parses and validates its options as their first run does."""
    for name in ("validated-options.json", "parsed-command-lines.json"):
        (clone.parent / "cache" / "guardrail" / name).unlink()


def raw_sequence(clone):
    """What a careful person types for the same run."""
    dest = clone / ".dist" / "prod" / "alpha"
    run(["git", "fetch", "-q"], clone)
    status = run(["git", "status", "--porcelain", "--branch"], clone).stdout
    if "behind" in status:
        sys.exit(f"raw sequence: the clone is behind: {status}")
    run(["git", "tag", "-a", "-m", "owner: bench", TAG, "HEAD"], clone)
    run(["git", "push", "-q", "origin", f"refs/tags/{TAG}"], clone)
    run([BINARY, "apply", "-auto-approve", "-input=false", "-no-color"], dest)
    run(["git", "push", "-q"], clone)
    run(["git", "push", "-q", "--delete", "origin", f"refs/tags/{TAG}"], clone)
    run(["git", "tag", "-d", TAG], clone)


def ours(clone, shares):
    proc = guardrail_run(guardrail_cmd(), clone)
    result = json.loads(proc.stdout)
    if result.get("failed") or result.get("counts") != {"create": 0, "update": 0, "delete": 0, "replace": 0}:
        sys.exit(f"guardrail run was not a no-change apply: {proc.stdout[-3000:]}")
    for step in result["steps"]:
        shares.setdefault(step["step"], []).append(step["duration"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 10")
    parser.add_argument("--rounds", type=int, help="rounds of each comparison")
    options = parser.parse_args()
    rounds = options.rounds or (3 if options.quick else 10)
    if not BINARY:
        sys.exit("neither tofu nor terraform is on PATH")
    print(f"binary: {BINARY}; rounds: {rounds}; load average: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    # Python writes a module's bytecode the first time it imports it, unless
    # told not to (PYTHONDONTWRITEBYTECODE): written here, so that a module
    # edited since is not compiled again in every round.
    run([sys.executable, "-m", "compileall", "-q", str(ROOT / "plugins")], ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        clone = make_repo(Path(tmp))
        first = guardrail_run(guardrail_cmd(), clone)  # renders and creates everything; not counted
        if not json.loads(first.stdout).get("changed"):
            sys.exit(f"the first run changed nothing: {first.stdout[-2000:]}")
        times = {"guardrail": [], "raw": [], "ansible": [], "first": [], **{kind: [] for kind in FIXED}}
        first_shares = {}
        shares = {}
        for i in range(rounds):
            kinds = ["guardrail", "raw", "first"] if i % 2 == 0 else ["first", "raw", "guardrail"]
            # The ad-hoc Ansible figure, for comparison only: every third round.
            if i % 3 == 0:
                kinds.append("ansible")
            kinds += list(FIXED)
            for kind in kinds:
                start = time.monotonic()
                if kind == "first":
                    forget_validations(clone)
                    start = time.monotonic()
                    ours(clone, first_shares)
                elif kind == "guardrail":
                    ours(clone, shares)
                elif kind == "raw":
                    raw_sequence(clone)
                elif kind in FIXED:
                    run(FIXED[kind], clone)
                else:
                    run(workflow_cmd(clone), clone)
                times[kind].append(time.monotonic() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["guardrail"] / med["raw"]
        print(f"no-change apply, median wall time over {rounds} interleaved rounds:")
        print(f"    bin/guardrail {' '.join(STEPS)}  {med['guardrail']:.3f} s  "
              f"(all: {', '.join(f'{t:.2f}' for t in times['guardrail'])})")
        print(f"    raw: fetch, status, lock tag push, apply, push, tag delete  {med['raw']:.3f} s  "
              f"(all: {', '.join(f'{t:.2f}' for t in times['raw'])})")
        print(f"    ratio {ratio:.2f}x (target <= 1.50x): {'met' if ratio <= 1.5 else 'NOT met'}")
        print(f"    first run of these options (validated, not remembered): {med['first']:.3f} s, "
              f"{med['first'] / med['raw']:.2f}x raw")
        print(f"    for comparison: ansible localhost -m guardrail.ecs.workflow  {med['ansible']:.3f} s "
              f"({med['ansible'] / med['raw']:.2f}x raw, {len(times['ansible'])} rounds)")
        total = med["guardrail"]
        steps_total = sum(statistics.median(v) for v in shares.values())
        print("    share of the guardrail command's median time, by step:")
        for name in STEPS:
            value = statistics.median(shares[name])
            print(f"      {name:<10} {value:.3f} s  {100 * value / total:4.1f} %")
        print(f"      {'(process)':<10} {total - steps_total:.3f} s  {100 * (total - steps_total) / total:4.1f} %"
              "  Python start, imports, output")
        fixed = med["imports"]
        print(f"    fixed cost of every run: {1000 * fixed:.0f} ms (the interpreter alone "
              f"{1000 * med['interpreter']:.0f} ms); a first run of its options also imports argparse and "
              f"ansible-core's ArgumentSpecValidator: {1000 * (med['validator'] - med['interpreter']):.0f} ms "
              "imported alone")
        print(f"    the run beyond it: {1000 * (med['guardrail'] - fixed):.0f} ms against the raw commands' "
              f"{1000 * med['raw']:.0f} ms ({(med['guardrail'] - fixed) / med['raw']:.2f}x); steps costing "
              f"exactly the raw commands would give {(fixed + med['raw']) / med['raw']:.2f}x")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
