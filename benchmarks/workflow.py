"""Benchmark of the change workflow, measured side by side in one run.

(a) guardrail.ecs.tofu apply against community.general.terraform apply on the
    same stack: tasks alternate in one playbook, each applying a real change
    (a replacement); the figure is the ratio of median task wall times.
    Target: <= 0.8.
(b) the whole guardrail.ecs.workflow task (`ansible localhost -m ...`, Ansible's
    start included) on a stack with no change, against the raw command
    sequence it replaces: tofu apply, git push, lock tag push and delete. The
    figure is the added seconds (median). Target: <= 1.5 s.

Usage: .venv/bin/python benchmarks/workflow.py [--quick] [--rounds N]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BINARY = shutil.which("tofu") or shutil.which("terraform")

STACK = """
variable "release" {
  type    = string
  default = "initial"
}

resource "terraform_data" "fleet" {
  count = 20
  input = { index = count.index, size = "m5.large" }
}

resource "terraform_data" "release" {
  input            = var.release
  triggers_replace = [var.release]
}

output "release" {
  value = terraform_data.release.output
}

output "fleet_size" {
  value = length(terraform_data.fleet)
}
"""


def env():
    result = dict(os.environ)
    # As on a user's machine, Python caches compiled bytecode: a shell that
    # disables it would time compiling the collection on every run instead.
    result.pop("PYTHONDONTWRITEBYTECODE", None)
    result.update(
        PATH=f"{VENV_BIN}:{result.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_NOCOLOR="1",
        GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid",
    )
    return result


def run(cmd, cwd, extra_env=None, **kwargs):
    proc = subprocess.run(cmd, cwd=cwd, env=dict(env(), **(extra_env or {})), capture_output=True, text=True,
                          timeout=900, check=False, **kwargs)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def seconds(span):
    def parse(text):
        from datetime import datetime
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return parse(span["end"]) - parse(span["start"])


def bench_modules(work, rounds):
    project = work / "modules"
    project.mkdir()
    (project / "main.tf").write_text(STACK)
    tasks = []
    for i in range(rounds + 1):
        # Round 0 warms both up (first create, init); it is not counted.
        for name, module in (("ours", "guardrail.ecs.tofu"), ("theirs", "community.general.terraform")):
            args = {"project_path": str(project), "variables": {"release": f"{name}-{i}"}}
            if module == "community.general.terraform":
                args.update(state="present", binary_path=BINARY)
            else:
                args.update(command="apply", binary=BINARY)
            tasks.append({"name": f"{name} {i}", module: args})
        # Alternate which module goes first, so neither always follows the other.
        if i % 2:
            tasks[-2], tasks[-1] = tasks[-1], tasks[-2]
    playbook = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                 "vars": {"ansible_python_interpreter": sys.executable}, "tasks": tasks}]
    path = work / "modules.yml"
    path.write_text(json.dumps(playbook))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(path)], cwd=work,
                          env=dict(env(), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json"),
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        sys.exit(f"benchmark (a) playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    times = {"ours": [], "theirs": []}
    for task in json.loads(proc.stdout)["plays"][0]["tasks"]:
        name, index = task["task"]["name"].split()
        result = task["hosts"]["localhost"]
        if not result.get("changed"):
            sys.exit(f"benchmark (a): task {task['task']['name']} applied nothing")
        if index != "0":
            times[name].append(seconds(task["task"]["duration"]))
    return {k: statistics.median(v) for k, v in times.items()}, times


def make_repo(work):
    remote = work / "remote.git"
    clone = work / "infra"
    run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], work)
    run(["git", "clone", "-q", str(remote), str(clone)], work)
    run(["git", "checkout", "-q", "-b", "main"], clone)
    for part in ("stacks", "profiles"):
        shutil.copytree(ROOT / "examples" / part, clone / part)
    run(["git", "add", "stacks", "profiles"], clone)
    run(["git", "commit", "-q", "-m", "stacks"], clone)
    run(["git", "push", "-q", "-u", "origin", "main"], clone)
    return clone


def workflow_cmd(clone):
    return [str(VENV_BIN / "ansible"), "localhost", "-m", "guardrail.ecs.workflow", "-a",
            json.dumps({"stack": "alpha", "profile": "prod", "lock": {"owner": "bench"}, "repo_path": str(clone)})]


def raw_sequence(clone):
    """What a careful person types for the same run, without any checks."""
    dest = clone / ".dist" / "prod" / "alpha"
    tag = "refs/tags/guardrail-lock/alpha/prod"
    run(["git", "tag", "-a", "-m", "owner: bench", "guardrail-lock/alpha/prod", "HEAD"], clone)
    run(["git", "push", "-q", "origin", tag], clone)
    run([BINARY, "apply", "-auto-approve", "-input=false", "-no-color"], dest)
    run(["git", "push", "-q"], clone)
    run(["git", "push", "-q", "--delete", "origin", tag], clone)
    run(["git", "tag", "-d", "guardrail-lock/alpha/prod"], clone)


def bench_workflow(work, rounds):
    clone = make_repo(work)
    first = run(workflow_cmd(clone), clone)  # creates everything; not counted
    if "CHANGED" not in first.stdout:
        sys.exit(f"benchmark (b): the first workflow run changed nothing:\n{first.stdout[-2000:]}")
    ours, raw, bare = [], [], []
    for i in range(rounds):
        for kind in (("workflow", "raw", "bare") if i % 2 == 0 else ("bare", "raw", "workflow")):
            start = time.monotonic()
            if kind == "bare":
                run([str(VENV_BIN / "ansible"), "localhost", "-m", "ansible.builtin.debug", "-a", "msg=start"], clone)
                bare.append(time.monotonic() - start)
            elif kind == "workflow":
                proc = run(workflow_cmd(clone), clone)
                result = json.loads(proc.stdout[proc.stdout.index("{"):])
                if result["counts"] != {"create": 0, "update": 0, "delete": 0, "replace": 0}:
                    sys.exit(f"benchmark (b): the stack was not unchanged: {result['counts']}")
                ours.append(time.monotonic() - start)
            else:
                raw_sequence(clone)
                raw.append(time.monotonic() - start)
    return statistics.median(ours), statistics.median(raw), statistics.median(bare)


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
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmp:
        work = Path(tmp)
        medians, times = bench_modules(work, rounds)
        ratio = medians["ours"] / medians["theirs"]
        print(f"(a) apply of one replacement on a 22-resource stack, median task wall time over {rounds} alternating rounds:")
        print(f"    guardrail.ecs.tofu           {medians['ours']:.3f} s  (all: {', '.join(f'{t:.2f}' for t in times['ours'])})")
        print(f"    community.general.terraform  {medians['theirs']:.3f} s  (all: {', '.join(f'{t:.2f}' for t in times['theirs'])})")
        print(f"    ratio {ratio:.2f}x (target <= 0.80x): {'met' if ratio <= 0.8 else 'NOT met'}")
        ours, raw, bare = bench_workflow(work, rounds)
        added = ours - raw
        print(f"(b) no-change run, median wall time over {rounds} alternating rounds:")
        print(f"    ansible localhost -m guardrail.ecs.workflow  {ours:.3f} s (Ansible start included)")
        print(f"    raw: lock tag push, apply, git push, tag delete  {raw:.3f} s")
        print(f"    added {added:.3f} s (target <= 1.5 s): {'met' if added <= 1.5 else 'NOT met'}")
        print(f"    for scale: Ansible's own start and one debug task take {bare:.3f} s here")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
