"""Helpers for the many-stack tests: a stack repository of five stacks with a
diamond (net -> db, app -> web) and an independent one (solo), whose
resources write start and end timestamps to a log with local-exec, and the
guardrail command run as a user runs it."""
import json
import os
import subprocess
import sys

from conftest import ROOT, git

GUARDRAIL = ROOT / "bin" / "guardrail"
STEPS = ("render", "git_check", "lock", "exec", "git_push", "unlock")
DEPENDS = {"net": [], "db": ["net"], "app": ["net"], "web": ["db", "app"], "solo": []}
# Each stack's value joins its dependencies' outputs, so the state shows what
# the render read; the log shows when each apply ran.
TEMPLATE = """\
terraform {
  backend "local" {}
}

variable "log" {
  type = string
}

resource "terraform_data" "step" {
  input = "{{ stack_name }}{% for d in (dependencies | default({})) | sort %}+{{ dependencies[d].outputs.name }}{% endfor %}"
  provisioner "local-exec" {
    command = "echo start {{ stack_name }} $(date +%s.%N) >> \\"$LOG\\"; sleep SLEEP; echo end {{ stack_name }} $(date +%s.%N) >> \\"$LOG\\"; exit EXIT"
    environment = {
      LOG = var.log
    }
  }
}

output "name" {
  value = terraform_data.step.output
}
"""


def stack_text(sleep=1, exit_code=0):
    return TEMPLATE.replace("SLEEP", str(sleep)).replace("EXIT", str(exit_code))


def make_repo(clone, stacks=None, sleep=1, fail=()):
    """Writes the stacks (name -> dependencies), a prod profile, commits and pushes."""
    stacks = DEPENDS if stacks is None else stacks
    (clone / "profiles").mkdir()
    (clone / "profiles" / "base.yml").write_text("team: platform\n")
    (clone / "profiles" / "prod.yml").write_text("extends: base\nenvironment: prod\n")
    for name, deps in stacks.items():
        folder = clone / "stacks" / name
        folder.mkdir(parents=True)
        (folder / "main.tf.j2").write_text(stack_text(sleep, 3 if name in fail else 0))
        if deps:
            # A plan before the dependencies exist reads these.
            mocks = {dep: {"name": f"mock-{dep}"} for dep in deps}
            (folder / "stack.yml").write_text(f"depends_on: {json.dumps(deps)}\n"
                                              f"mock_outputs: {json.dumps(mocks)}\n")
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "stacks", cwd=clone)
    git("push", "-q", cwd=clone)
    return clone


def command(clone, stack, *cmd, steps=STEPS, options=(), profile="prod", log=None, env=None):
    """(argv, environment) of a bin/guardrail run as a user types it."""
    full_env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="run-1")
    full_env.update(env or {})
    extra = ["--var", f"log={log}"] if log else []
    if any(c in ("apply", "destroy") for c in cmd):
        extra.append("--yes")
    return ([sys.executable, str(GUARDRAIL), "--repo", str(clone), *extra, *options, *steps, "--", stack,
             profile, *cmd], full_env)


def start_guardrail(clone, stack, *cmd, **kwargs):
    """bin/guardrail started in the background, its output piped."""
    args, full_env = command(clone, stack, *cmd, **kwargs)
    return subprocess.Popen(args, cwd=clone, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def guardrail(clone, stack, *cmd, timeout=600, **kwargs):
    """Runs bin/guardrail. With --json among the options, returns (proc, parsed JSON)."""
    options = kwargs.get("options", ())
    args, full_env = command(clone, stack, *cmd, **kwargs)
    proc = subprocess.run(args, cwd=clone, env=full_env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if "--json" in options:
        try:
            return proc, json.loads(proc.stdout)
        except ValueError as exc:
            raise AssertionError(f"no JSON: {proc.stdout} {proc.stderr}") from exc
    return proc


def intervals(log):
    """{stack: (start, end)} from the log the resources wrote."""
    found = {}
    for line in log.read_text().splitlines():
        kind, name, moment = line.split()
        start, end = found.get(name, (None, None))
        found[name] = (float(moment), end) if kind == "start" else (start, float(moment))
    return found


def overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def state_value(clone, stack, profile="prod"):
    data = json.loads((clone / ".dist" / profile / stack / "terraform.tfstate").read_text())
    for resource in data["resources"]:
        if resource["name"] == "step":
            return resource["instances"][0]["attributes"]["input"]["value"]
    return None


def remote_refs(remote, prefix):
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname)", prefix], cwd=remote,
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return sorted(out.split())


def outcomes(result):
    return {row["stack"]: row["outcome"] for row in result["stacks"]}
