#!/usr/bin/env python3
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the change workflow from Python, as a web hook or a chat bot would.

    PYTHONPATH=<dir holding ansible_collections/guardrail/ecs> \
        python3 examples/workflow_api.py REPO STACK PROFILE [STEP...]

Prints one line per step and exits 0 when every step succeeded, 1 when one
failed, 2 when the run was refused, 3 on bad input (nothing run).
"""
import sys

from ansible_collections.guardrail.ecs.plugins.plugin_utils.api import WorkflowError, run_workflow


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 3
    repo, stack, profile, *steps = argv
    options = {"repo_path": repo, "stack": stack, "profile": profile,
               "lock": {"owner": "webhook@example"}}
    if steps:
        options["steps"] = steps
    try:
        result = run_workflow(options)
    except WorkflowError as exc:
        sys.stderr.write(f"bad input: {exc}\n")
        return 3
    for step in result.steps:
        print(f"{step.step} {step.status}{' changed' if step.changed else ''} {step.duration:.2f}s")
    if result.failed:
        sys.stderr.write(f"{result.failed_step}: {result.msg}\n")
        return 2 if result.refused else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
