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

import hashlib
import json
import os
import sys

from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import read_cache, remember
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import plans
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils
from ansible_collections.guardrail.ecs.plugins.plugin_utils import api, stacks, workflow_spec
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow as engine

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2, 3
TOOLS = engine.TOOLS
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
# How the command line spells an option of the workflow's argument spec
# (workflow_spec.py, "group.name" for one in a group) where the rule `--NAME`
# (top level) or `--GROUP-NAME` does not: the flags of 0.2, kept. Every flag
# but a repeated one is also GUARDRAIL_ and the flag in capitals
# (GUARDRAIL_LOCK_BACKEND).
SPELLINGS = {
    "repo_path": "--repo",
    "report_dir": "--report",
    "render.stacks_dir": "--stacks-dir",
    "render.profiles_dir": "--profiles-dir",
    "render.dest": "--dest",
    "git.fetch": "--fetch",
    "git.push_remote": "--push-remote",
    "lock.owner": "--owner",
    "lock.run_id": "--run-id",
    "tofu.binary": "--binary",
    "tofu.workspace": "--workspace",
    "tofu.variables": "--var",
    "tofu.var_files": "--var-file",
    "tofu.timeout": "--timeout",
    "tofu.policy_allow": "--allow",
}
# Options that are no flag: the positions give them (STEP... -- STACK PROFILE
# CMD..., `tofu apply PLAN_ID`); credentials come from the environment through
# boto3's chain (a flag would show them to `ps`); structured values need the
# task or the API.
NOT_FLAGS = ("stack", "profile", "steps", "command", "tofu.plan_id", "access_key", "secret_key",
             "session_token", "render.vars", "tofu.options")


class BadInput(Exception):
    """The command line is wrong; nothing was run."""


def flag_options():
    """(path, spec, flag) of every option of the workflow's argument spec that
    the command line takes as a flag; `path` is NAME or GROUP.NAME."""
    for name, spec in workflow_spec.WORKFLOW_ARGUMENT_SPEC.items():
        members = spec.get("options")
        leaves = [(f"{name}.{n}", s) for n, s in members.items()] if members else [(name, spec)]
        for path, leaf in leaves:
            if path not in NOT_FLAGS:
                yield path, leaf, SPELLINGS.get(path) or "--" + path.replace(".", "-").replace("_", "-")


def environment_variable(flag):
    return "GUARDRAIL_" + flag[2:].upper().replace("-", "_")


def parser(described=False):
    """The parser of the command line: a flag for each option flag_options
    yields, typed and with choices as the argument spec says; its defaults
    left to the spec (a flag not given is None). `described`: with each
    option's description from the workflow module's documentation, for --help.
    (argparse is imported here: a command line parsed before is not parsed
    again, see parse_words.)"""
    import argparse  # pylint: disable=import-outside-toplevel

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise BadInput(message)

    p = Parser(prog="guardrail", usage=USAGE, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Runs the change workflow for one stack and profile.")
    descriptions = option_descriptions() if described else {}
    for path, spec, flag in flag_options():
        kind = spec.get("type", "str")
        text = descriptions.get(path, "")
        if spec.get("default") not in (None, "", [], {}):
            text += f" (default: {spec['default']})"
        metavar = "NAME=VALUE" if kind == "dict" else path.rpartition(".")[2].upper()
        if kind in ("list", "dict"):
            p.add_argument(flag, dest=path, action="append", metavar=metavar,
                           help=f"{text} (repeat the flag for more)" if described else None)
            continue
        env = environment_variable(flag)
        arguments = dict(dest=path, default=os.environ.get(env) or None, help=f"{text} [{env}]" if described else None)
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **arguments)
        else:
            p.add_argument(flag, type=int if kind == "int" else str, choices=spec.get("choices"), metavar=None
                           if spec.get("choices") else metavar, **arguments)
    p.add_argument("--always-render", action="store_true",
                   default=bool(os.environ.get("GUARDRAIL_ALWAYS_RENDER")),
                   help="render even when the committed inputs are unchanged (for templates "
                        "whose lookups read something outside the repository) [GUARDRAIL_ALWAYS_RENDER]")
    p.add_argument("--yes", action="store_true",
                   help="apply or destroy without asking (as tofu's -auto-approve, which is accepted "
                        "after the command too); without it, on a terminal the plan is shown and "
                        "confirmed first, and with no terminal the run is refused")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("steps", nargs="*", metavar="STEP")
    return p


def option_descriptions():
    """{path: the first sentence of its description} from the workflow
    module's documentation (what `ansible-doc guardrail.ecs.workflow` shows),
    read only for --help."""
    import ast  # pylint: disable=import-outside-toplevel
    import re  # pylint: disable=import-outside-toplevel

    import yaml  # pylint: disable=import-outside-toplevel

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modules", "workflow.py")
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    text = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", None) == "DOCUMENTATION")
    found = {}

    def walk(options, prefix):
        for name, doc in options.items():
            description = doc.get("description") or ""
            description = description[0] if isinstance(description, list) else description
            description = re.sub(r"\b[A-Z]+\(([^)]*)\)", r"\1", description)
            found[prefix + name] = description.split(". ")[0].rstrip(".")
            walk(doc.get("suboptions") or {}, f"{prefix}{name}.")
    walk(yaml.safe_load(text).get("options") or {}, "")
    return found


def parse(argv):
    """(the workflow's options from the command line, nested as the argument
    spec takes them, not yet validated; the command line's own flags; what
    the words before `--` gave, to remember once the options
    validate (remember_words))."""
    if "--" not in argv:
        raise BadInput("missing `--`: " + USAGE)
    cut = argv.index("--")
    words, rest = argv[:cut], argv[cut + 1:]
    if len(rest) < 3:
        raise BadInput("after `--` give STACK PROFILE CMD...: " + USAGE)
    key = words_key(words)
    known = remembered_words(key)
    given = known or parse_words(words)
    # What the words gave, kept apart (json: a copy) to be remembered once the options validate.
    memo = (None if known else key, json.dumps(given))
    options, flags = given
    stack, profile, cmd = rest[0], rest[1], rest[2:]
    typed = cmd
    approved = flags["yes"]
    if os.path.basename(cmd[0]) in TOOLS and any(a in AUTO_APPROVE for a in cmd[1:]):
        approved = True
        cmd = [a for a in cmd if a not in AUTO_APPROVE]
    options.update(stack=stack, profile=profile)
    flags = {"always_render": flags["always_render"], "approved": approved}
    tofu = options.setdefault("tofu", {})
    if options["steps"] == ["drift"]:
        options["command"] = "plan"
        if os.path.basename(cmd[0]) != "tofu":
            tofu.setdefault("binary", cmd[0])
        return options, flags, memo
    found = command_params(cmd, tofu.get("binary"))
    if isinstance(found["command"], list) and os.path.basename(cmd[0]) in TOOLS:
        found["command"] = approved_as_typed(found["command"], typed, approved)
    options["command"] = found["command"]
    if found["plan_id"]:
        tofu["plan_id"] = found["plan_id"]
    return options, flags, memo


def parse_words(words):
    """(the options given by the flags and the steps, {"always_render",
    "yes"}) of the command line's words before `--`."""
    namespace = parser().parse_args(words)
    options = {"steps": namespace.steps}
    for path, spec, flag in flag_options():
        value = getattr(namespace, path)
        if value is None:
            continue
        if spec.get("type") == "dict":
            value = pairs(flag, value)
        elif "path" in (spec.get("type"), spec.get("elements")):
            # Relative to where the command runs, as a shell user means it.
            value = ([os.path.abspath(os.path.expanduser(v)) for v in value] if isinstance(value, list)
                     else os.path.abspath(os.path.expanduser(value)))
        group, _dot, name = path.rpartition(".")
        (options.setdefault(group, {}) if group else options)[name] = value
    return options, {"always_render": namespace.always_render, "yes": namespace.yes}


# -- remembered command lines ----------------------------------------------------

# The words before `--` of command lines whose options validated, and what
# they parsed to: a command line typed again is not parsed again (argparse is
# not even imported). Kept beside the remembered validations (workflow_spec).
PARSED_FILE = "parsed-command-lines.json"
PARSED_ENTRIES = 32


def words_key(words):
    """The digest naming how `words` parse here, or None when they must be
    parsed afresh: a word or GUARDRAIL_ variable holding `~` or `$` (its
    value depends on the environment), a request for help. Besides the
    words, the key holds every GUARDRAIL_ variable the parser reads (the
    flags' defaults), the directory (relative paths are made absolute in
    it), this file (size and mtime), the argument spec the flags are made
    from, and the Python version."""
    names = [environment_variable(flag) for _path, _spec, flag in flag_options()] + ["GUARDRAIL_ALWAYS_RENDER"]
    environment = {name: os.environ.get(name) for name in names}
    if any("~" in text or "$" in text for text in [*words, *filter(None, environment.values())]) or \
            any(word.startswith("-h") or word.startswith("--he") for word in words):
        return None
    try:
        where = os.getcwd()
        info = os.stat(os.path.realpath(__file__))
    except OSError:
        return None
    material = json.dumps([words, environment, where, [info.st_size, info.st_mtime_ns], workflow_spec.spec_text(),
                           list(sys.version_info[:2])])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def remembered_words(key):
    """What parse_words gave for the words of `key`, or None."""
    entry = read_cache(PARSED_FILE).get(key) if key else None
    if not (isinstance(entry, dict) and isinstance(entry.get("options"), dict)
            and isinstance(entry["options"].get("steps"), list) and isinstance(entry.get("flags"), dict)
            and set(entry["flags"]) == {"always_render", "yes"}
            and all(isinstance(v, bool) for v in entry["flags"].values())
            and all(isinstance(v, dict) for k, v in entry["options"].items() if k in workflow_spec.GROUPS)
            and set(entry["options"]) <= {"steps", *workflow_spec.WORKFLOW_ARGUMENT_SPEC}):
        return None
    return entry["options"], entry["flags"]


def remember_words(memo, options):
    """Remembers what the words before `--` parsed to (`memo`, from parse),
    once the `options` they gave validated, and only where the validation
    itself is remembered: no secret, nothing that depends on the environment
    (workflow_spec.rememberable)."""
    key, given = memo
    if not key or not workflow_spec.rememberable(options):
        return
    options, flags = json.loads(given)
    remember(PARSED_FILE, key, {"options": options, "flags": flags}, PARSED_ENTRIES)


def approved_as_typed(command, typed, approved):
    """A tofu command line passed through runs as typed, -auto-approve kept;
    --yes gives its apply or destroy -auto-approve (there tofu cannot ask).
    An apply or destroy left without it is refused by the engine."""
    if any(a in AUTO_APPROVE for a in typed[1:]):
        return [command[0], *typed[1:]]
    name = engine.tofu_subcommand(command)
    if approved and name in engine.PUSHING:
        # After the command, tofu's global options (-chdir=DIR) before it.
        at = command.index(name, 1) + 1
        return [*command[:at], "-auto-approve", *command[at:]]
    return command


def pairs(flag, items):
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadInput(f"{flag} {item!r}: use NAME=VALUE")
        found[name] = value
    return found


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


def validated(options):
    """The engine's parameters from the command line's options, validated
    against the workflow's argument spec before anything runs; BadInput
    naming every problem."""
    if not options.get("steps"):
        raise BadInput("name at least one step before `--`: " + USAGE)
    try:
        params, _deprecations = workflow_spec.validate(options, memo=True)
    except engine.WorkflowError as exc:
        raise BadInput(str(exc)) from exc
    return params


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
    if result.get("state_lock_released"):
        stream.write(f"state lock: {result['state_lock_released']}\n")
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
    if {"-h", "--help"} & set(argv[:argv.index("--")] if "--" in argv else argv):
        sys.stdout.write(parser(described=True).format_help())
        return EXIT_OK
    as_json = "--json" in argv[:argv.index("--")] if "--" in argv else False
    try:
        options, flags, memo = parse(argv)
        if options["steps"] == ["drift"]:
            return drift(options, as_json)
        params = validated(options)
        remember_words(memo, options)
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


def drift(options, as_json):
    """`guardrail drift -- STACKS PROFILES TOOL`: the drift report; exit code
    2 when any stack drifted, 1 when any could not be checked."""
    profiles = options["profile"].split(",")
    params = validated(dict(options, profile=profiles[0], steps=["render"]))
    result = stacks.drift(params, api.standalone_templater(), profiles, report_dir=params["report_dir"])
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
