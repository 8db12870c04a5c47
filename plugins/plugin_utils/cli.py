# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `guardrail` command: the change workflow from a shell, without
Ansible's playbook machinery.

    guardrail [options] STEP... -- STACK PROFILE CMD...
    guardrail [options] drift -- STACKS PROFILES TOOL

STACK may also be a comma list, `all` or `affected` (plugin_utils/stacks.py).

It runs the same engine as the guardrail.ecs.workflow action plugin
(plugin_utils/workflow.py), with a template function built on Ansible's
templar alone. Exit codes: 0 done, 1 a step failed, 2 refused (dirty or
behind work tree, lock held, saved plan not applicable), 3 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import plans, run_lock
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils
from ansible_collections.guardrail.ecs.plugins.plugin_utils import api, stacks
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow as engine

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2, 3
TOOLS = ("tofu", "terraform")
# tofu subcommands the engine runs itself (change detection, saved plans);
# every other command line is run as given in the rendered directory.
ENGINE_COMMANDS = ("plan", "apply", "destroy")
AUTO_APPROVE = ("-auto-approve", "--auto-approve")
USAGE = "guardrail [options] STEP... -- STACK PROFILE CMD...  |  guardrail [options] drift -- STACKS PROFILES TOOL"
EPILOG = """\
steps: render git_check lock exec git_push unlock unlock_any (in that order; hyphens
or underscores alike, and build for render: build git-check ... unlock-any)
CMD: `tofu plan` saves the plan and prints its id; `tofu apply ID` applies exactly
that plan; `tofu apply` and `tofu destroy` plan and apply; any other command line
(`tofu state list`, `tofu output`, `make check`) runs as given in the rendered
directory. `tofu` runs tofu, or terraform when tofu is not installed.

  alias tofu='guardrail build git-check lock exec git-push unlock-any -- alpha prod tofu'

STACK: one stack, a comma list (network,cluster), `all`, or `affected` (the stacks
whose committed inputs changed since the commit last applied to them, or since
--since REF). Several stacks run in dependency order (stacks/NAME/stack.yml
`depends_on:`), up to --parallelism at once, destroy in reverse order; a summary
table ends the run.

drift: `guardrail drift -- all prod,staging tofu` plans every stack x profile with
refresh, without a lock (a locked stack is skipped), and writes drift.json and
drift.html to --report (default .dist/drift); exit code 2 when drift is found.

exit codes: 0 done, 1 a step failed, 2 refused (dirty or behind work tree, lock
held, saved plan not applicable, plan policy) or drift found, 3 bad input.
"""
# (flag, parameter, environment variable, help)
OPTIONS = (
    ("--repo", "repo_path", "GUARDRAIL_REPO", "the stack repository (default: the current directory)"),
    ("--owner", "owner", "GUARDRAIL_OWNER", "lock owner (default: user@host)"),
    ("--run-id", "run_id", "GUARDRAIL_RUN_ID", "this run's id in the lock record"),
    ("--lock-backend", "lock_backend", "GUARDRAIL_LOCK_BACKEND", f"{', '.join(run_lock.BACKENDS)} (default: git)"),
    ("--lock-remote", "lock_remote", "GUARDRAIL_LOCK_REMOTE", "git lock: the remote holding lock refs"),
    ("--lock-table", "lock_table", "GUARDRAIL_LOCK_TABLE", "dynamodb lock: the table"),
    ("--lock-bucket", "lock_bucket", "GUARDRAIL_LOCK_BUCKET", "s3 lock: the bucket"),
    ("--lock-key", "lock_key", "GUARDRAIL_LOCK_KEY", "dynamodb/s3 lock: the key"),
    ("--lock-message", "lock_message", "GUARDRAIL_LOCK_MESSAGE", "a note stored in the lock record"),
    ("--region", "region", "GUARDRAIL_REGION", "AWS region of the lock backend"),
    ("--aws-profile", "aws_profile", "GUARDRAIL_AWS_PROFILE", "AWS named profile of the lock backend"),
    ("--endpoint-url", "endpoint_url", "GUARDRAIL_ENDPOINT_URL", "AWS endpoint of the lock backend"),
    ("--push-remote", "push_remote", "GUARDRAIL_PUSH_REMOTE", "remote git_push pushes to"),
    ("--stacks-dir", "stacks_dir", "GUARDRAIL_STACKS_DIR", "stacks directory (default: stacks)"),
    ("--profiles-dir", "profiles_dir", "GUARDRAIL_PROFILES_DIR", "profiles directory (default: profiles)"),
    ("--dest", "dest", "GUARDRAIL_DEST", "rendered directory (default: .dist/PROFILE/STACK)"),
    ("--binary", "binary", "GUARDRAIL_BINARY", "tofu or terraform executable"),
    ("--workspace", "workspace", "GUARDRAIL_WORKSPACE", "tofu workspace"),
)


class BadInput(Exception):
    """The command line is wrong; nothing was run."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise BadInput(message)


def parser():
    p = _Parser(prog="guardrail", usage=USAGE, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Runs the change workflow for one stack and profile.")
    for flag, dest, env, text in OPTIONS:
        p.add_argument(flag, dest=dest, default=os.environ.get(env), help=f"{text} [{env}]")
    p.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE",
                   help="a tofu variable (passed as TF_VAR_NAME)")
    p.add_argument("--var-file", dest="var_files", action="append", default=[], help="a tofu var file")
    p.add_argument("--timeout", dest="exec_timeout", type=int,
                   default=int(os.environ.get("GUARDRAIL_TIMEOUT") or 3600),
                   help="seconds exec may run; then tofu gets SIGINT [GUARDRAIL_TIMEOUT]")
    p.add_argument("--no-fetch", dest="fetch", action="store_false", help="git_check does not fetch")
    p.add_argument("--always-render", action="store_true",
                   default=bool(os.environ.get("GUARDRAIL_ALWAYS_RENDER")),
                   help="render even when the committed inputs are unchanged (for templates "
                        "whose lookups read something outside the repository) [GUARDRAIL_ALWAYS_RENDER]")
    p.add_argument("--yes", action="store_true",
                   help="apply or destroy without asking (as tofu's -auto-approve, which is accepted "
                        "after the command too); without it, on a terminal the plan is shown and "
                        "confirmed first, and with no terminal the run is refused")
    p.add_argument("--parallelism", type=int, default=int(os.environ.get("GUARDRAIL_PARALLELISM") or 4),
                   help="stacks run at once when several are selected [GUARDRAIL_PARALLELISM]")
    p.add_argument("--since", default=os.environ.get("GUARDRAIL_SINCE"),
                   help="`affected`: compare with this ref instead of each stack's last applied commit "
                        "[GUARDRAIL_SINCE]")
    p.add_argument("--allow", dest="policy_allow", action="append", default=[], metavar="ADDRESS",
                   help="let the plan policy pass a protected change of this resource address")
    p.add_argument("--report", help="drift: the report directory (default .dist/drift)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("steps", nargs="*", metavar="STEP")
    return p


def parse(argv):
    """(params for the workflow engine, options) from the command line."""
    if "--" not in argv:
        raise BadInput("missing `--`: " + USAGE)
    cut = argv.index("--")
    options = parser().parse_args(argv[:cut])
    rest = argv[cut + 1:]
    if len(rest) < 3:
        raise BadInput("after `--` give STACK PROFILE CMD...: " + USAGE)
    stack, profile, cmd = rest[0], rest[1], rest[2:]
    approved = options.yes
    if os.path.basename(cmd[0]) in TOOLS and any(a in AUTO_APPROVE for a in cmd[1:]):
        approved = True
        cmd = [a for a in cmd if a not in AUTO_APPROVE]
    variables = {}
    for item in options.variables:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadInput(f"--var {item!r}: use NAME=VALUE")
        variables[name] = value
    params = {flag_dest: getattr(options, flag_dest) for _flag, flag_dest, _env, _text in OPTIONS}
    params.update(stack=stack, profile=profile, steps=options.steps, variables=variables,
                  var_files=[os.path.abspath(f) for f in options.var_files],
                  exec_timeout=options.exec_timeout, fetch=options.fetch, parallelism=options.parallelism,
                  since=options.since, policy_allow=options.policy_allow)
    flags = {"always_render": options.always_render, "approved": approved}
    if options.steps == ["drift"]:
        params.update(command="plan", plan_id=None, report=options.report,
                      binary=options.binary or (cmd[0] if os.path.basename(cmd[0]) != "tofu" else None))
        return params, flags
    params.update(command_params(cmd, options.binary))
    return params, flags


def command_params(cmd, binary=None):
    """{"command", "plan_id"} for the engine from the command line after
    STACK PROFILE."""
    tool, args = os.path.basename(cmd[0]), cmd[1:]
    if tool in TOOLS:
        if args and args[0] in ENGINE_COMMANDS and len(args) == 1:
            return {"command": args[0], "plan_id": None}
        if len(args) == 2 and args[0] == "apply" and plans.PLAN_ID_RE.match(args[1]):
            return {"command": "apply", "plan_id": args[1]}
        try:
            path = tofu_utils.find_binary(binary)
        except tofu_utils.TofuError as exc:
            raise BadInput(str(exc)) from exc
        return {"command": [path, *args], "plan_id": None}
    return {"command": list(cmd), "plan_id": None}


def defaults(params):
    """`params` completed with the workflow argument spec's defaults."""
    full = {}
    for name, spec in engine.WORKFLOW_ARGUMENT_SPEC.items():
        value = params.get(name)
        full[name] = spec.get("default") if value is None else value
        if isinstance(full[name], (dict, list)):
            full[name] = type(full[name])(full[name])
    full["lock_backend"] = full["lock_backend"] or "git"
    choices = engine.WORKFLOW_ARGUMENT_SPEC["lock_backend"]["choices"]
    if full["lock_backend"] not in choices:
        raise BadInput(f"lock backend {full['lock_backend']!r}: use one of {', '.join(choices)}")
    if not full["steps"]:
        raise BadInput("name at least one step before `--`: " + USAGE)
    if full["repo_path"]:
        full["repo_path"] = os.path.abspath(os.path.expanduser(full["repo_path"]))
    return full


def echo_line(line):
    try:
        sys.stdout.write(line)
        sys.stdout.flush()
    except OSError:
        # A reader gone (`| head`) or a terminal hung up (EIO after SIGHUP).
        discard_stdout()


def discard_stdout():
    """Whoever read our output went away (`| head`): the run goes on to its
    end (an apply is not cut short, the lock is released), its output
    discarded."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def echo_events(line):
    """One line of a `-json` event stream, as its human message."""
    try:
        event = json.loads(line)
        line = event.get("@message", "") + "\n" if isinstance(event, dict) else line
    except ValueError:
        pass
    echo_line(line)


def human(result, stream):
    """The human report: one line per step, the plan summary, the message."""
    for record in result.get("steps") or []:
        status = record["status"]
        if status == "ok" and record.get("result", {}).get("skipped"):
            status = "skipped"
        elif status == "failed" and result.get("refused"):
            status = "refused"
        stream.write(f"{record['step']:<10} {status:<7} changed={int(bool(record['changed']))} "
                     f"{record['duration']:6.2f}s\n")
    if result.get("taken_over"):
        stream.write(f"lock: {result['taken_over']}\n")
    for line in result.get("summary") or []:
        stream.write(line + "\n")
    if result.get("plan_id") and not result.get("failed") and result.get("command_kind") == "plan":
        stream.write(f"Saved plan {result['plan_id']}; apply exactly this plan with: "
                     f"tofu apply {result['plan_id']}\n")
    if result.get("failed"):
        sys.stderr.write(f"guardrail: {'refused' if result.get('refused') else 'failed'}: "
                         f"{result.get('msg')}\n")


def exec_result(result):
    """What the exec step returned, {} when it did not run."""
    for record in result.get("steps") or []:
        if record["step"] == "exec" and isinstance(record.get("result"), dict):
            return record["result"]
    return {}


def exec_output(result):
    """(stdout, stderr) of the exec step, to show as the tool printed them."""
    found = exec_result(result)
    return found.get("stdout") or "", found.get("stderr") or ""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(parser().format_help())
        return EXIT_OK
    as_json = "--json" in argv[:argv.index("--")] if "--" in argv else False
    try:
        params, flags = parse(argv)
        if params["steps"] == ["drift"]:
            return drift(params, as_json)
        params = defaults(params)
        params["always_render"] = flags["always_render"]
        echo = None if as_json else (echo_line, echo_events)
        if stacks.selects_many(params["stack"]):
            if needs_approval(params) and not flags["approved"]:
                return _stopped(f"`{params['command']}` of several stacks is not confirmed stack by stack: "
                                "pass -auto-approve (or --yes), or plan them first; nothing was run",
                                as_json, "refused", EXIT_REFUSED)
            return report_many(stacks.run(params, api.standalone_templater(), fast=True), as_json)
        params = stacks.with_dependencies(params)
        if needs_approval(params) and not flags["approved"]:
            return approve_then_apply(params, echo, as_json)
        result = api.run_validated(params, fast=True, echo=echo).data
    except BadInput as exc:
        return _bad(str(exc), as_json)
    except engine.WorkflowError as exc:
        return _bad(str(exc), as_json)
    return finish(result, params, as_json)


def finish(result, params, as_json):
    """Reports a run; its exit code."""
    result["command_kind"] = params["command"] if isinstance(params["command"], str) else "exec"
    try:
        report(result, as_json)
    except OSError:
        discard_stdout()
    if not result.get("failed"):
        return EXIT_OK
    return EXIT_REFUSED if result.get("refused") else EXIT_FAILED


def needs_approval(params):
    """An apply or destroy nobody has seen the plan of: tofu itself would ask."""
    steps = [str(s).replace("-", "_") for s in params["steps"]]
    return params["command"] in ("apply", "destroy") and not params["plan_id"] and "exec" in steps


def approve_then_apply(params, echo, as_json):
    """As tofu does without -auto-approve: on a terminal, the plan first
    (saved, under the lock, then released), a question, and only on `yes`
    exactly that plan applied (refused if anything moved meanwhile); with no
    terminal to ask on, a refusal before anything runs."""
    what = f"{params['stack']}/{params['profile']}"
    if as_json or not (sys.stdin.isatty() and sys.stdout.isatty()):
        message = (f"`{params['command']}` of {what} without a saved plan asks for confirmation, and there "
                   "is no terminal to ask on: pass -auto-approve (or --yes), or plan first (`tofu plan`) "
                   "and apply that plan (`tofu apply PLAN_ID`); nothing was run")
        return _stopped(message, as_json, "refused", EXIT_REFUSED)
    if params["command"] == "destroy":
        if not confirm(f"Do you really want to destroy all resources of {what}?"):
            return EXIT_FAILED
        return finish(api.run_validated(params, fast=True, echo=echo).data, params, as_json)
    planned = api.run_validated(dict(params, command="plan"), fast=True, echo=echo).data
    code = finish(planned, dict(params, command="plan"), as_json)
    if code != EXIT_OK:
        return code
    if not exec_result(planned).get("changed"):
        sys.stdout.write("No changes: nothing to apply.\n")
        return EXIT_OK
    if not confirm(f"Do you want to perform these actions on {what}?"):
        return EXIT_FAILED
    return finish(api.run_validated(dict(params, plan_id=planned["plan_id"]), fast=True, echo=echo).data,
                  params, as_json)


def confirm(question):
    sys.stdout.write(f"\n{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    if answer != "yes":
        sys.stdout.write("\nCancelled: nothing was applied.\n")
        return False
    return True


def report_many(result, as_json):
    """The summary table (or JSON) of a run over several stacks; its exit code."""
    if as_json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        for row in result["stacks"]:
            for note in row.get("notes") or []:
                sys.stdout.write(f"{row['stack']}: {note}\n")
            if row["outcome"] in ("failed", "refused", "skipped"):
                sys.stderr.write(f"guardrail: {row['stack']}: {row['outcome']}: {row.get('msg')}\n")
        if result.get("affected") is not None:
            for name, why in result["affected"].items():
                sys.stdout.write(f"affected: {name}: {why}\n")
        for line in result["table"]:
            sys.stdout.write(line + "\n")
        sys.stdout.write(f"{result['msg'] if not result.get('failed') else 'some stacks did not succeed'} "
                         f"({result['duration']:.2f}s)\n")
    sys.stdout.flush()
    if not result.get("failed"):
        return EXIT_OK
    return EXIT_REFUSED if result.get("refused") else EXIT_FAILED


def drift(params, as_json):
    """`guardrail drift -- STACKS PROFILES TOOL`: the drift report; exit code
    2 when any stack drifted, 1 when any could not be checked."""
    profiles = params["profile"].split(",")
    report_dir = params.pop("report")
    params = defaults(dict(params, profile=profiles[0], steps=["render"]))
    result = stacks.drift(params, api.standalone_templater(), profiles, report_dir=report_dir)
    if as_json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        for line in result["table"]:
            sys.stdout.write(line + "\n")
        sys.stdout.write(f"{len(result['drift'])} of {len(result['stacks'])} stack(s) drifted; report: "
                         f"{result['files']['html']}\n")
    if result["drift"]:
        return EXIT_REFUSED
    return EXIT_FAILED if any(r["status"] == "error" for r in result["stacks"]) else EXIT_OK


def report(result, as_json):
    if as_json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        out, err = exec_output(result)
        kind = result["command_kind"]
        plan_text = exec_result(result).get("plan_text")
        if kind == "plan" and plan_text and not result.get("failed"):
            sys.stdout.write(plan_text + "\n")
        if (kind != "plan" or result.get("failed")) and not result.get("streamed"):
            sys.stdout.write(out)
        if kind == "exec" or result.get("failed"):
            sys.stderr.write(err)
        human(result, sys.stdout)
    sys.stdout.flush()


def _bad(message, as_json):
    return _stopped(message, as_json, "bad_input", EXIT_BAD_INPUT)


def _stopped(message, as_json, why, code):
    """Reports a run stopped before anything ran (`why`: bad_input or
    refused); returns `code`."""
    if as_json:
        json.dump({"failed": True, why: True, "msg": message}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stderr.write(f"guardrail: {why.replace('_', ' ')}: {message}\n")
    return code
