# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The change workflow for one (stack, profile): render, git check, lock,
exec, push and unlock, in one process.

Plain Python, no Ansible playbook machinery: the caller passes the template
function (`template(text, variables) -> str`) that renders the stack, so the
workflow action plugin (Ansible's templar) and the guardrail command run the
same steps.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import time

from ansible_collections.guardrail.ecs.plugins.module_utils.common import aws
from ansible_collections.guardrail.ecs.plugins.module_utils.common import git as git_utils
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import plans, run_lock
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils
from ansible_collections.guardrail.ecs.plugins.plugin_utils import policy as policy_utils
from ansible_collections.guardrail.ecs.plugins.plugin_utils import render as render_utils

STEPS = ("render", "git_check", "lock", "exec", "git_push", "unlock", "unlock_any")
DEFAULT_STEPS = ["render", "git_check", "lock", "exec", "git_push", "unlock"]
STEP_ALIASES = {"build": "render"}
# Commands after which git_push pushes: a plan (or anything else) never does.
PUSHING = ("apply", "destroy")
# The programs a command line runs as tofu: OpenTofu and Terraform.
TOOLS = ("tofu", "terraform")
# backend_config keys whose values are credentials, masked in results.
SECRET_KEY_RE = re.compile(r"(secret|token|password|access_key|credentials|sas|client_key)", re.I)
# A line of the Lock Info tofu prints when the state lock is held (error boxes may prefix it).
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOCK_INFO_RE = re.compile(r"^[\s│]*(ID|Path|Operation|Who|Version|Created):[ \t]*(\S.*?)\s*$", re.M)
# How tofu (Go's flag package) reads a boolean option's value as true.
BOOL_TRUE = ("1", "t", "T", "true", "TRUE", "True")
# apply's and destroy's options that take no value; any other option given
# without `=` takes the next argument as its value.
TOFU_FLAGS = ("auto-approve", "compact-warnings", "concise", "consolidate-errors", "consolidate-warnings",
              "destroy", "input", "json", "lock", "no-color", "refresh", "refresh-only", "show-sensitive",
              "allow-deferral", "h", "help")
# Stack positions that select several stacks (plugin_utils/stacks.py): never stack names.
RESERVED_STACKS = ("all", "affected")


class WorkflowError(Exception):
    """Bad input: nothing was run."""


class StepFailed(Exception):
    """A step refused or failed; `result` is what it returned so far."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result or {}


def step_name(name):
    """The step a spelling names: hyphens and underscores alike, and `build`
    for render, as the design that the `guardrail` alias comes from spells them."""
    name = str(name).strip().replace("-", "_")
    return STEP_ALIASES.get(name, name)


def validate_steps(steps):
    """The steps by their names in STEPS, or a clear error when unknown,
    repeated or out of order."""
    if not steps:
        raise WorkflowError(f"steps is empty: name at least one of {', '.join(STEPS)}")
    unknown = [s for s in steps if step_name(s) not in STEPS]
    if unknown:
        raise WorkflowError(f"unknown step(s) {', '.join(map(repr, unknown))}: "
                            f"steps are {', '.join(STEPS)}, in that order (hyphens or underscores, "
                            "and build for render); nothing was run")
    steps = [step_name(s) for s in steps]
    for before, after in zip(steps, steps[1:]):
        if STEPS.index(after) <= STEPS.index(before):
            raise WorkflowError(
                f"step {after!r} cannot come after {before!r}: steps run in the order "
                f"{', '.join(STEPS)}; nothing was run")
    return list(steps)


def validate_command(command):
    if isinstance(command, str):
        if command not in tofu_utils.COMMANDS:
            raise WorkflowError(f"unknown command {command!r}: use a tofu command "
                                f"({', '.join(tofu_utils.COMMANDS)}) or an argv list")
        return command
    if isinstance(command, list) and command and all(isinstance(a, (str, int, float)) for a in command):
        command = [str(a) for a in command]
        if asks_for_approval(command):
            name = tofu_subcommand(command)
            raise WorkflowError(f"command `{' '.join(command)}` runs as given, where tofu's approval question has "
                                "nobody to answer it: add -auto-approve (the guardrail command's --yes adds it), "
                                f"or give `{name}` alone so that the workflow plans first; nothing was run")
        return command
    raise WorkflowError("command must be a tofu command name or a non-empty list of arguments")


def asks_for_approval(command):
    """Whether a tofu command line would stop at tofu's question: an apply or
    destroy without -auto-approve (an apply of a plan file asks nothing).
    Read as tofu reads it: global options (-chdir=DIR) before the command,
    the last -auto-approve[=BOOL] wins, and an option given without `=`
    other than a flag takes the next argument as its value (`-target ADDR`,
    `-var x=1`), which is no plan file."""
    name = tofu_subcommand(command)
    if name not in PUSHING:
        return False
    args = command[command.index(name, 1):]
    approved, positional, taking_value = False, [], False
    for index, arg in enumerate(args[1:], start=1):
        if taking_value:
            taking_value = False
        elif arg == "--" or not arg.startswith("-") or arg == "-":
            # Options end at the first argument that is none (or at `--`).
            positional = args[index + (arg == "--"):]
            break
        else:
            name, eq, value = arg.lstrip("-").partition("=")
            if name == "auto-approve":
                approved = not eq or value in BOOL_TRUE
            elif not eq and name not in TOFU_FLAGS:
                taking_value = True
    return not approved and not (args[0] == "apply" and positional)


def tofu_subcommand(command):
    """The tofu (or terraform) command of a command line, after the global
    options tofu takes before it (-chdir=DIR); None for another program or
    none given (`tofu -version`)."""
    if not command or os.path.basename(command[0]) not in TOOLS:
        return None
    return next((a for a in command[1:] if not a.startswith("-")), None)


class Workflow:
    """The steps of one run and everything they share."""

    def __init__(self, params, template, check_mode=False, diff=False, variables=None, fast=False, echo=None,
                 expect_commit=None):
        """`params` as workflow_spec.validate returns them; `template` renders
        one template text with a dict of variables; `variables` (Ansible's
        task variables, or None) give the default owner and run id.

        `fast` (the guardrail command) skips a render whose committed inputs
        are unchanged (unless params["always_render"]) and runs an apply
        nobody reviewed first as one `apply -json`. `echo`, when given, is
        (lines, events): callables shown each line of an exec'd command's
        output and of tofu's -json event stream as they come.

        `expect_commit`: the commit the render and exec steps must find
        checked out (a run over several stacks renders and applies every
        stack from the commit it checked first); None for any."""
        self.fast = fast
        self.expect_commit = expect_commit
        self.echo = echo
        self.streamed = False
        self.params = params
        self.template = template
        self.check_mode = check_mode
        self.diff = diff
        self.stack = params["stack"]
        self.profile = params["profile"]
        self.repo_path = os.path.realpath(params["repo_path"] or os.getcwd())
        identity = run_lock.default_identity(variables)
        self.owner = params["owner"] or identity[0]
        self.run_id = params["run_id"] or identity[1]
        self.job = run_lock.job_id(variables)
        self.command = validate_command(params["command"])
        self._backend = None
        self.diffs = []
        self.exec_result = {}
        self.rendered = {}
        self.steps = []
        self.lock_record = None
        self.applied = None  # {"commit", "branch"} once an apply/destroy succeeded
        self.tofu_secrets = set()
        self.interrupted = None
        self.lock_taken = False
        self.given_back = False  # the lock this run took, released after a refusal
        self.detached_at = None  # the remote branch a detached checkout was found to be
        self.checked = None  # what git_check found, for the re-check once the lock is held
        self.push_error = None  # the GitError git_push failed with
        self.released_with_push = False  # the lock went in git_push's atomic push
        self.lock_lost_to = None  # who holds the lock unlock found held by another run
        self.upstream_seen = None  # the upstream's commit, as re-checked once the lock was held
        self.tofu_options = dict(params["tofu_options"] or {})
        self.policy = None
        if self.stack in RESERVED_STACKS:
            raise WorkflowError(f"stack name {self.stack!r} is reserved (it selects several stacks); "
                                "nothing was run")
        self.flock_fd = self.flock_info = None
        self.taken_over = None
        # One line when exec released a state lock a killed tofu left.
        self.state_lock_released = None
        # What this run's render step put in place: the commit, and a digest of
        # the rendered files (what a saved plan must have been made from).
        self.rendered_commit = None
        self.render_digest = None
        self._committed = None
        self._tree_status = None  # tree_status(), once read
        # What the render step evaluated and has yet to write, (files, key),
        # and the result it reported (completed once the files are written).
        self.pending_render = None
        self.render_result = None
        try:
            render_utils.validate_name("stack", self.stack)
            render_utils.validate_name("profile", self.profile)
            run_lock.validate_identity(self.stack, self.profile)
            self.stack_root, self.profiles_root, self.dest = render_utils.resolve(
                self.repo_path, self.stack, self.profile, params["stacks_dir"],
                params["profiles_dir"], params["dest"])
        except (render_utils.RenderError, run_lock.LockError) as exc:
            raise WorkflowError(f"{exc}; nothing was run") from exc

    def preflight(self, steps):
        """Every check that needs no lock, before any step runs, so that a
        refusal leaves nothing locked and nothing run: the stack and profile
        exist, tofu_options are valid, and what exec runs is there (tofu or
        terraform recent enough). Raises WorkflowError naming every problem."""
        p = self.params
        problems = []
        if "render" in steps or "exec" in steps:
            if not os.path.isdir(self.stack_root):
                problems.append(f"stack {self.stack!r} not found: no directory {self.stack_root}")
            try:
                render_utils.profile_path(self.profiles_root, self.profile)
            except render_utils.RenderError as exc:
                problems.append(str(exc))
        if "exec" in steps and "render" not in steps and not os.path.isdir(self.dest):
            problems.append(f"the rendered directory {self.dest} does not exist: add the render step")
        if p["tofu_options"]:
            from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # pylint: disable=import-outside-toplevel

            checked = ArgumentSpecValidator(tofu_utils.OPTIONS_SPEC).validate(p["tofu_options"])
            problems.extend(f"tofu.options: {error}" for error in checked.error_messages)
            self.tofu_options = checked.validated_parameters
        if p["lock_backend"] != "git" and {"lock", "unlock", "unlock_any"} & set(steps) and aws.missing_boto3():
            problems.append(f"the {p['lock_backend']} run lock: {aws.missing_boto3()}")
        absolute = [f for f in p["var_files"] if os.path.isabs(f)]
        problems.extend(f"var file {f} does not exist" for f in absolute if not os.path.isfile(f))
        if "exec" in steps:
            try:
                if isinstance(self.command, str):
                    tofu_utils.check_version(p["binary"])
                elif os.sep not in self.command[0]:
                    tofu_utils.find_binary(self.command[0])
            except tofu_utils.TofuError as exc:
                problems.append(str(exc))
        if problems:
            raise WorkflowError("; ".join(problems) + "; nothing was run and nothing was locked")

    @property
    def operation(self):
        return self.command if isinstance(self.command, str) else os.path.basename(self.command[0])

    def backend(self):
        if self._backend is None:
            p = self.params
            self._backend = run_lock.get_backend(
                p["lock_backend"], repo_path=self.repo_path, remote=p["lock_remote"],
                table=p["lock_table"], key=p["lock_key"], bucket=p["lock_bucket"],
                region=p["region"], profile=p["aws_profile"], access_key=p["access_key"],
                secret_key=p["secret_key"], session_token=p["session_token"],
                endpoint_url=p["endpoint_url"])
        return self._backend

    # -- steps ---------------------------------------------------------------
    def tree_names(self):
        return [f"HEAD:./{os.path.relpath(d, self.repo_path)}" for d in (self.stack_root, self.profiles_root)]

    def dest_name(self):
        return f"HEAD:./{os.path.relpath(self.dest, self.repo_path)}"

    def committed_ids(self):
        """{name: object id or None} at HEAD of what the run reads as
        committed (HEAD, the stack and profiles trees, the policy) and of
        the rendered directory (none, unless git tracks files there), read in
        one git process the first time; {} when git cannot tell."""
        if self._committed is None:
            names = ["HEAD", *self.tree_names(), f"HEAD:{policy_utils.POLICY_FILE}", self.dest_name()]
            try:
                self._committed = git_utils.object_ids(self.repo_path, names)
            except git_utils.GitError:
                self._committed = {}
        return self._committed

    def render_key(self):
        """What the render step reads, as committed: the git trees of the
        stack and the profiles, the vars and var files; None when any of it
        is not committed (the render step proper then refuses)."""
        p = self.params
        # The var files given by path are read by tofu as they are: committed, as the render's sources.
        sources = [f for f in p["var_files"] if os.path.isabs(f)]
        try:
            render_utils.check_committed(self.repo_path, [self.stack_root, self.profiles_root, *sources],
                                         required=True, status=self.tree_status())
        except (render_utils.RenderError, git_utils.GitError):
            return None
        trees = [self.committed_ids().get(name) for name in self.tree_names()]
        if None in trees:
            return None
        return {"trees": trees, "vars": p["vars"], "stack": self.stack, "profile": self.profile,
                "var_files": p["var_files"]}

    def tree_status(self):
        """The work tree's status, ignored files included, read once for the
        render step and git_check when both come before the lock (render then
        writes nothing before git_check reads it); None otherwise (each reads
        its own)."""
        steps = self.steps
        if not ({"render", "git_check", "lock"} <= set(steps)
                and steps.index("render") < steps.index("git_check") < steps.index("lock")):
            return None
        if self._tree_status is None:
            try:
                self._tree_status = git_utils.status(self.repo_path, ignored=True)
            except git_utils.GitError:
                return None  # not a work tree: the render step's own check says so
        return self._tree_status

    def step_render(self):
        """Evaluates the templates where the step is listed, so that an
        uncommitted source or a failing template refuses the run before any
        lock; writes the files at once, or, when the lock is among the steps,
        once it is held (write_render): nothing is written under the feet of
        another run. With `fast`, keeps the rendered files when the committed
        inputs and the files it wrote last time are unchanged: rendering the
        same trees again would write the same files."""
        if "lock" in self.steps and not self.check_mode:
            # The clone's run lock file first: a tofu an earlier run of this
            # clone left running refuses the run at once.
            self.hold_flock()
        key = self.render_key() if self.fast and not self.params.get("always_render") else None
        kept = key is not None and render_utils.rendered_from(self.dest, key)
        # The commit the files are (or were) read from: a checkout moved since is refused at exec.
        self.rendered_commit = (self.committed_ids().get("HEAD") if kept else None) or self.head()
        self.check_expected_commit()
        if kept:
            self.render_result = {"changed": False, "dest": self.dest, "skipped": True,
                                  "msg": "inputs unchanged since the last render: files kept"}
            self.pending_render = None
        else:
            self.render_result = {"changed": False, "dest": self.dest, "written": False,
                                  "msg": "rendered; the files are written once the lock is held"}
            self.pending_render = (self._prepare(), key)
        if "lock" not in self.steps:
            self.write_render()
        return self.render_result

    def check_expected_commit(self):
        """A run over several stacks renders each from the commit it checked
        at its start: a checkout moved since is refused before anything of
        this stack is rendered or applied."""
        if self.expect_commit and self.rendered_commit != self.expect_commit:
            raise StepFailed(f"render refused: {moved_checkout(self.expect_commit, self.rendered_commit)}: "
                             "nothing of this stack was rendered or applied", {"refused": True, "moved": True})

    def _prepare(self):
        p = self.params
        try:
            # Only committed sources are rendered: the stack, the profiles and
            # the var files under the repository are checked before any
            # template is evaluated.
            sources = [f for f in p["var_files"] if os.path.isabs(f)]
            return render_utils.prepare(
                self.repo_path, self.stack, self.profile, self.template,
                extra_vars=p["vars"], stacks_dir=p["stacks_dir"], profiles_dir=p["profiles_dir"],
                dest=p["dest"], sources=sources, require_git="git_check" in self.steps,
                status=self.tree_status())[1]
        except (render_utils.RenderError, git_utils.GitError) as exc:
            raise StepFailed(f"render failed: {exc}") from exc

    def write_render(self):
        """Writes what the render step prepared. The rendered directory is
        written even in check mode: it is git-ignored build output, and the
        plan that check mode runs needs it."""
        if self.pending_render is not None:
            files, key = self.pending_render
            self.pending_render = None
            try:
                result = render_utils.write(self.repo_path, self.dest, files)
            except (render_utils.RenderError, OSError) as exc:
                raise StepFailed(f"render failed: {exc}") from exc
            if key is not None and not self.check_mode:
                render_utils.record_key(self.dest, key)
            self.diffs.extend(result.pop("diff"))
            self.rendered = result
            self.render_result.pop("msg", None)
            self.render_result.update(result, written=True)
        if self.render_result is not None and not self.check_mode:
            self.render_digest = render_utils.tree_digest(self.dest)

    def step_git_check(self):
        p = self.params
        try:
            result = git_utils.check(self.repo_path, max_ahead=p["max_ahead"],
                                     allow_detached=p["allow_detached"], fetch=p["fetch"],
                                     seen=self._tree_status)
        except git_utils.GitError as exc:
            raise StepFailed(f"git check failed: {exc}") from exc
        result["changed"] = False
        if not result["ok"]:
            raise StepFailed("git check refused the work tree: " + "; ".join(result["problems"]), result)
        self.checked = result
        self.detached_at = result["detached_at"]
        if result["detached_at"]:
            result["msg"] = (f"detached HEAD {result['head'][:12]} is the head of {result['detached_at']}: "
                             f"compared with {result['detached_at']}")
        elif result["upstream"]:
            result["msg"] = f"branch {result['branch']} compared with {result['upstream']}"
        return result

    def step_lock(self):
        """Takes the run lock; then, holding it, writes what the render step
        prepared and checks the rendered configuration (check_rendered). A
        refusal there gives back the lock this run took, having changed
        nothing else."""
        result = self._acquire()
        try:
            self.write_render()
            conflict = self.check_rendered()
        except StepFailed as exc:
            conflict = str(exc)
        if conflict:
            released = self._give_back()
            raise StepFailed(f"lock refused: {conflict}; "
                             f"{'the run lock this run took was released, ' if released else ''}"
                             "nothing was applied", {"refused": True, "released": released})
        return result

    def check_rendered(self):
        """Why the rendered configuration cannot run under this lock, or None."""
        conflict = self.tofu_lock_conflict()
        # Var files relative to the rendered directory exist only once it is rendered.
        missing = [f for f in self.params["var_files"] if "exec" in self.steps and not os.path.isabs(f)
                   and not os.path.isfile(os.path.join(self.dest, f))]
        if missing:
            conflict = f"var file(s) {', '.join(missing)} not found in the rendered directory {self.dest}"
        return conflict

    def _acquire(self):
        flock = self.flock_info if self.flock_fd is not None or self.check_mode else self.hold_flock()
        try:
            record = run_lock.new_record(self.stack, self.profile, self.owner, self.run_id,
                                         operation=self.operation, message=self.params["lock_message"],
                                         job=self.job, flock=flock)
            changed, held = self.backend().acquire(self.stack, self.profile, record,
                                                   check_mode=self.check_mode,
                                                   takeover=self.params["lock_takeover"],
                                                   ttl=self.params["lock_ttl"])
        except run_lock.LockConfigError as exc:
            raise StepFailed(f"lock backend configuration error: {exc}; nothing was locked") from exc
        except (run_lock.LockError, git_utils.GitError) as exc:
            raise StepFailed(f"lock refused: {exc}") from exc
        self.lock_record = held
        self.lock_taken = changed
        result = {"changed": changed, "record": held}
        if held.get("taken_over") and changed:
            result["taken_over"] = held["taken_over"]
            self.taken_over = self.describe_takeover(held["taken_over"])
            result["msg"] = self.taken_over
        return result

    def flock_path(self):
        """The file whose flock keeps this clone's run of (stack, profile)
        live: in the git directory (never rendered over, never untracked)."""
        try:
            common = git_utils.git_dirs(self.repo_path)[1]
        except git_utils.GitError:
            return os.path.join(self.dest, ".guardrail-run.lock")
        return os.path.join(common, "guardrail-run", self.stack, self.profile + ".lock")

    def hold_flock(self):
        """Takes the run's flock, inherited by every tofu it starts: the run
        lock is live while any of them lives, even after this process died.
        Refuses while a process of an earlier run still holds it."""
        path = self.flock_path()
        try:
            self.flock_fd, self.flock_info = run_lock.hold_flock(path, self.run_id)
        except BlockingIOError as exc:
            try:
                holder = self.backend().read(self.stack, self.profile)
            except (run_lock.LockError, git_utils.GitError):
                holder = None
            child = ((holder or {}).get("children") or [{}])[-1]
            still = f" (its {child.get('command') or 'tofu'}, pid {child['pid']})" if child.get("pid") else ""
            who = f"run {run_lock.describe_holder(holder)}" if holder else "an earlier run"
            raise StepFailed(
                f"lock refused: run lock {self.stack}/{self.profile} is live: a process of {who} is still "
                f"running in this clone{still} and holds {path}. Wait for it to end (tofu saves its "
                "state), then run again; "
                "nothing was run") from exc
        except OSError as exc:
            raise StepFailed(f"lock refused: cannot take the run's lock file {path}: {exc}; "
                             "nothing was run") from exc
        return self.flock_info

    def record_child(self, pid):
        """Records tofu's process in the lock: a record that outlives us says
        which process still writes the state."""
        if not self.lock_record or self.check_mode:
            return
        child = {"pid": pid, "start": run_lock.process_start(pid), "pid_ns": run_lock.pid_namespace(pid),
                 "command": self.operation}
        try:
            self.lock_record = self.backend().set_state(self.stack, self.profile, self.lock_record, "running",
                                                        extra={"children": [child]})
        except (run_lock.LockError, git_utils.GitError):
            pass

    def describe_takeover(self, old):
        """One line: whose ended run's lock was taken over, and what its tofu left."""
        ended = old.get("state") if old.get("state") in run_lock.ENDED_STATES else "its processes are gone"
        text = (f"took over the lock of ended run {old.get('run_id')} of {old.get('owner')} "
                f"(since {old.get('created')}, {ended})")
        children = [c for c in old.get("children") or [] if isinstance(c, dict)]
        if children and (old.get("state") or "running") == "running":
            text += (f"; its {children[-1].get('command') or 'tofu'} (pid {children[-1].get('pid')}) ran on "
                     "after it died and has ended: the state is what that tofu saved")
        released = release_state_locks(self.dest)
        if released:
            text += "; removed the state lock tofu left (" + "; ".join(released) + ")"
        return text

    def tofu_lock_conflict(self):
        """Why the run lock would be the very lock tofu takes for the state
        (tofu would then wait on us while we wait on tofu), or None."""
        p = self.params
        if p["lock_backend"] == "git" or (p["tofu_options"] or {}).get("lock") is False:
            return None
        backend = backend_settings(self.dest, (p["tofu_options"] or {}).get("backend_config") or {})
        if backend.get("type") != "s3" or not backend.get("key"):
            return None
        ours = p["lock_key"] or f"guardrail/{self.stack}/{self.profile}"
        key = backend["key"]
        if self.params["workspace"] and self.params["workspace"] != "default":
            key = f"{backend.get('workspace_key_prefix') or 'env:'}/{self.params['workspace']}/{key}"
        if (p["lock_backend"] == "dynamodb" and backend.get("dynamodb_table") == p["lock_table"]
                and ours == f"{backend.get('bucket')}/{key}"):
            where = f"item LockID={ours} in table {p['lock_table']}"
        elif (p["lock_backend"] == "s3" and backend.get("bucket") == p["lock_bucket"] and ours == key
              and str(backend.get("use_lockfile", "")).lower() in ("true", "1")):
            where = f"object {key}.tflock in bucket {p['lock_bucket']}"
        else:
            return None
        return (f"lock.key {ours!r} makes the run lock the {where}, which is tofu's own lock for "
                f"the state {backend.get('bucket')}/{key}: tofu would wait for the run lock while "
                "the run waits for tofu (a deadlock). Leave lock.key unset (the run lock is then "
                f"guardrail/{self.stack}/{self.profile}) or give it a key of its own; tofu's lock "
                "keeps guarding the state")

    def pushing(self):
        """Whether the command changes infrastructure (an apply or destroy)."""
        return changes_infrastructure(self.command)

    def recheck_upstream(self):
        """Just before exec, with the lock held: the branch must not be behind
        its upstream, so what is applied is what is then pushed. Returns the
        commit checked out, or None when there was nothing to re-check."""
        if "lock" not in self.steps or not self.params["fetch"] or self.check_mode:
            return None
        try:
            info = git_utils.recheck(self.repo_path, self.checked)
        except git_utils.GitError as exc:
            raise StepFailed(f"exec: cannot re-check the upstream before running: {exc}; "
                             "nothing was applied") from exc
        self.upstream_seen = info.get("upstream_commit")
        moved = upstream_moved(info, self.detached_at)
        if moved:
            # A lock held from an earlier run (re-entered) keeps guarding what
            # that run left; only a lock this run took is given back.
            released = self.lock_taken and self._release_quietly()
            what, todo = moved
            raise StepFailed(f"exec: {what}: nothing was applied{'; the run lock was released' if released else ''}. "
                             f"{todo}", {"behind": info["behind"], "upstream": self.detached_at or info["upstream"],
                                         "released": released})
        return info["head"]

    def _release_quietly(self):
        """Gives back the lock of a run refused before anything was applied."""
        try:
            self.given_back = self.backend().release(self.stack, self.profile, self.run_record())[0]
        except (run_lock.LockError, git_utils.GitError):
            return False
        return self.given_back

    def _give_back(self):
        """Releases the lock this run took, refused before it ran anything;
        whether it was released."""
        released = self.lock_taken and not self.check_mode and self._release_quietly()
        if released:
            self.lock_record = None
        return released

    def mark_lock(self, state, detail):
        """Records the run's state (failed, interrupted) in the lock record."""
        set_state = getattr(self.backend(), "set_state", None) if self.lock_record else None
        if set_state is None or self.check_mode:
            return
        try:
            self.lock_record = set_state(self.stack, self.profile, self.lock_record, state,
                                         detail=detail[:500])
        except (run_lock.LockError, git_utils.GitError):
            pass

    def head(self):
        return git_utils.head_commit(self.repo_path)

    def step_exec(self):
        if not os.path.isdir(self.dest):
            raise StepFailed(f"exec: the rendered directory {self.dest} does not exist; add the render step")
        commit = (self.recheck_upstream() or self.head()) if self.pushing() else None
        if commit and self.rendered_commit and commit != self.rendered_commit:
            raise StepFailed(f"exec ({self.operation}) refused: the checkout moved from {self.rendered_commit} "
                             f"(rendered) to {commit} during the run: what would be applied is not what is "
                             "checked out; nothing was applied. Run again", {"refused": True})
        if commit and self.expect_commit and commit != self.expect_commit:
            # Without the render step nothing above compares: the commit the
            # run checked is the only one recorded as applied, then pushed.
            raise StepFailed(f"exec ({self.operation}) refused: {moved_checkout(self.expect_commit, commit)}: "
                             "nothing of this stack was applied", {"refused": True, "moved": True})
        try:
            result = self._exec()
        except StepFailed as exc:
            self.interrupted = exc.result.get("interrupted")
            self.mark_lock("interrupted" if self.interrupted else "failed", str(exc))
            raise
        if self.pushing() and not self.check_mode and commit:
            # `upstream`: the remote branch's commit as the re-check under the lock saw it.
            self.applied = {"commit": commit, "command": self.operation,
                            "counts": result.get("counts"), "upstream": self.upstream_seen}
        return result

    def _exec(self):
        if isinstance(self.command, list):
            return self._exec_argv()
        p = self.params
        tofu = None
        try:
            tofu = self.make_tofu(p["binary"])
            if self.policy is not None:
                tofu.plan_check = policy_utils.checker(self.policy, self.stack, self.profile,
                                                       p["policy_allow"] or ())
            tofu.pass_fds = self.inherited()
            tofu.on_start = self.record_child
            result = self._run_tofu(tofu)
        except policy_utils.PolicyViolation as exc:
            # Nothing was applied: a lock this run took is given back.
            released = self.lock_taken and self._release_quietly()
            raise StepFailed(f"exec ({self.operation}) refused: {exc}"
                             f"{'; the run lock was released' if released else ''}",
                             {"refused": True, "policy_violations": exc.offending,
                              "released": released}) from exc
        except plans.PlanRefused as exc:
            raise StepFailed(f"exec ({self.operation}) refused: {exc}", {"refused": True}) from exc
        except tofu_utils.TofuError as exc:
            if tofu:
                self.tofu_secrets |= tofu.secrets
            raise StepFailed(f"exec ({self.operation}) failed: {exc}",
                             {"rc": exc.rc, "stdout": tofu.stdout if tofu else "",
                              "stderr": tofu.stderr if tofu else exc.stderr,
                              "interrupted": exc.interrupted}) from exc
        self.tofu_secrets |= tofu.secrets
        result.update(stdout=tofu.stdout, stderr=tofu.stderr, binary=tofu.binary)
        if self.diff:
            self.diffs.extend(tofu_utils.diff_text(result["resources"]))
        self.exec_result = result
        return result

    def make_tofu(self, binary):
        """The stack's tofu (or terraform) in the rendered directory, with the
        run's options; one limit for every command unless tofu's own is given."""
        p = self.params
        options = dict(self.tofu_options, timeout=self.tofu_options.get("timeout") or p["exec_timeout"])
        return tofu_utils.Tofu(self.dest, binary=binary, workspace=p["workspace"], variables=p["variables"],
                               var_files=p["var_files"], **options)

    def _run_tofu(self, tofu):
        """Runs the command; when tofu could not take the state lock because
        the tofu of the ended run this run took over left it (killed before
        it could release it), releases that lock once and runs it again."""
        try:
            return self._tofu_command(tofu)
        except tofu_utils.TofuError as exc:
            if exc.interrupted or not self.released_state_lock(tofu, str(exc), exc.stdout, exc.stderr):
                raise
        return self._tofu_command(tofu)

    def _tofu_command(self, tofu):
        result = self._saved_plan(tofu)
        if result is None:
            result = tofu.execute(self.command, check_mode=self.check_mode,
                                  show_sensitive=self.params["show_sensitive"])
        return result

    def released_state_lock(self, tofu, *output):
        """When tofu's `output` says it could not take the state lock: releases
        that lock if the ended run this run took over left it, and returns
        True (the command is then run once more); refuses otherwise. False
        when the output says nothing of the state lock."""
        info = state_lock_info("\n".join(text or "" for text in output))
        if info is None:
            return False
        self.release_state_lock(tofu, info)
        return True

    def release_state_lock(self, tofu, info):
        """Runs `tofu force-unlock` on the state lock `info` when it was left
        by the ended run this run took over; otherwise refuses, showing whose
        lock it is (the run lock this run took is given back: nothing ran)."""
        described = (f"ID {info['ID']}, {info.get('Operation') or 'an operation'} by {info.get('Who') or 'someone'} "
                     f"since {info.get('Created') or 'an unknown time'}")
        why = self.left_by_taken_over_run(info)
        if why is None:
            released = self._give_back()
            raise StepFailed(
                f"exec ({self.operation}) refused: tofu's state lock is held ({described}) and is not one "
                "the ended run this run took over left behind: another tofu may be writing the state. Wait "
                f"for it to end; if you know it is gone, release it with `tofu force-unlock {info['ID']}` in "
                f"{self.dest}. Nothing was applied{'; the run lock was released' if released else ''}",
                {"refused": True, "state_lock": info, "released": released})
        try:
            tofu.run("force-unlock", "-force", info["ID"])
        except tofu_utils.TofuError as exc:
            raise StepFailed(f"exec ({self.operation}) failed: tofu's state lock ({described}) was left by "
                             f"the ended run this run took over ({why}), and releasing it failed: {exc}",
                             {"state_lock": info}) from exc
        self.state_lock_released = (f"released tofu's state lock ({described}) with tofu force-unlock: "
                                    f"{why}")

    def left_by_taken_over_run(self, info):
        """Why tofu's state lock `info` was left by the run this run took over
        (its tofu, recorded in the run lock, is gone), or None when that is
        not certain: no run taken over, a tofu of it that lives or cannot be
        seen from here, a lock taken on another host or before that run."""
        previous = (self.lock_record or {}).get("taken_over") if self.lock_taken else None
        children = [c for c in (previous or {}).get("children") or [] if isinstance(c, dict) and c.get("pid")]
        if not children:
            return None
        rebooted = bool(previous.get("boot_id")) and previous["boot_id"] != run_lock.boot_id()
        # The run's flock (which its tofu inherited) free says all of them are
        # gone; where it cannot be seen, each recorded process must be.
        held = None if rebooted else run_lock.flock_held(previous.get("flock"), previous.get("run_id"))
        if held or (held is None and not rebooted and any(
                run_lock.process_alive(c["pid"], c.get("start"), c.get("pid_ns")) is not False for c in children)):
            return None
        if (info.get("Who") or "").rpartition("@")[2] != previous.get("host"):
            return None
        created = tofu_time(info.get("Created"))
        try:
            since = run_lock.parse_time(previous.get("created"))
        except run_lock.LockError:
            return None
        # Both clocks are this host's: a margin for the rounding of either.
        if created is None or created < since - datetime.timedelta(seconds=5):
            return None
        child = children[-1]
        return (f"it was taken by the {child.get('command') or 'tofu'} (pid {child['pid']}) of run "
                f"{previous.get('run_id')} of {previous.get('owner')}, which is gone")

    def _saved_plan(self, tofu):
        """Plans that are saved (command plan), applies of a saved plan
        (plan_id) and, with `fast`, an apply nobody reviewed first in one tofu
        invocation; None for every other command."""
        if (self.fast and self.command == "apply" and not self.params["plan_id"] and not self.check_mode
                and not self.diff and self.policy is None):
            with tofu_utils.INTERRUPTS.guard(), self.streaming(1):
                result = plans.apply_once(tofu)
            outputs = result.pop("outputs_raw")
            result.update(command="apply",
                          outputs=tofu_utils.mask_outputs(outputs, self.params["show_sensitive"]))
            return result
        context = dict(commit=self.head(), stack=self.stack, profile=self.profile)
        if self.command == "plan" and not self.check_mode:
            with tofu_utils.INTERRUPTS.guard():
                result = plans.save(tofu, render_digest=self.render_digest, **context)
            outputs = {}
        elif self.command == "apply" and self.params["plan_id"] and not self.check_mode:
            with tofu_utils.INTERRUPTS.guard():
                result = plans.apply(tofu, self.params["plan_id"], require_render=True,
                                     render_digest=render_utils.tree_digest(self.dest), **context)
            outputs = result.pop("outputs_raw")
        else:
            return None
        result.setdefault("outputs_changed", [])
        result["outputs"] = tofu_utils.mask_outputs(outputs, self.params["show_sensitive"])
        result.update(command=self.command, applied=result.get("applied", False))
        return result

    def load_policy(self):
        """The committed plan policy, for a run that plans (validated before any
        step runs); WorkflowError when policy.yml is not committed or invalid."""
        if "exec" not in self.steps or self.command not in ("plan", "apply", "destroy"):
            return None
        ids = self.committed_ids()
        try:
            self.policy = policy_utils.load(self.repo_path, committed=(
                ids.get(f"HEAD:{policy_utils.POLICY_FILE}") or "") if ids else None)
        except (policy_utils.PolicyError, git_utils.GitError) as exc:
            raise WorkflowError(f"{exc}; nothing was run") from exc
        return self.policy

    def check_dest(self):
        """Refuses before any step a rendered directory holding files git
        tracks, for a run that renders (which replaces and removes files
        there) or execs (tofu writes its state there): WorkflowError. Where
        git_check runs before the lock and no symlink leads to the directory,
        HEAD's tree is enough (read with the committed ids; git_check refuses
        a staged file); otherwise git's index is asked."""
        steps = self.steps
        if not {"render", "exec"} & set(steps):
            return
        # HEAD's tree names the directory as written; through a symlink only git's index tells.
        lexical = os.path.realpath(self.dest) == os.path.normpath(self.dest)
        try:
            if ("git_check" in steps and "lock" in steps and steps.index("git_check") < steps.index("lock")
                    and lexical and self.committed_ids()):
                if self.committed_ids().get(self.dest_name()):
                    raise render_utils.RenderError(
                        f"dest {self.dest} holds files tracked by git (committed at HEAD): render into an "
                        "ignored directory such as .dist/")
            else:
                render_utils.check_untracked(self.repo_path, self.dest)
        except render_utils.RenderError as exc:
            raise WorkflowError(f"{exc}; nothing was run") from exc

    def check_plan(self):
        """With plan_id: refuses before any step runs when the saved plan
        cannot be applied here (missing, another commit or stack/profile)."""
        plan_id = self.params["plan_id"]
        if not plan_id:
            return None
        if self.command != "apply" or "exec" not in self.steps:
            raise WorkflowError("plan_id is for command apply with the exec step; nothing was run")
        try:
            return plans.check(self.dest, plan_id, self.head(), self.stack, self.profile, require_render=True)
        except plans.PlanRefused as exc:
            raise StepFailed(f"saved plan refused: {exc}", {"refused": True}) from exc

    def _run_argv(self, env):
        """Runs the command line as given: (rc, stdout, stderr, interrupted)."""
        try:
            with self.streaming(0):
                return tofu_utils.run_process(
                    self.command, self.dest, env, self.params["exec_timeout"],
                    pass_fds=self.inherited(), on_start=self.record_child if self.pushing() else None)
        except OSError as exc:
            raise StepFailed(f"exec ({self.operation}) failed: {exc}") from exc

    def _exec_argv(self):
        if self.check_mode:
            return {"changed": False, "skipped": True, "msg": "check mode: the command was not run",
                    "cmd": self.command}
        is_tofu = os.path.basename(self.command[0]) in TOOLS
        tofu = None
        env = dict(os.environ)
        if is_tofu:
            # Run as the engine's commands are: the run's workspace and
            # variables, no question asked, and initialised with its backend options.
            try:
                tofu = self.make_tofu(self.command[0])
                tofu.pass_fds = self.inherited()
                env = tofu.env()
                if tofu_subcommand(self.command) not in (None, "init", "version", "fmt", "help"):
                    with self.streaming(0):
                        tofu.ensure_init()
            except tofu_utils.TofuError as exc:
                raise StepFailed(f"exec ({self.operation}) failed: {exc}") from exc
        rc, stdout, stderr, interrupted = self._run_argv(env)
        if tofu and rc != 0 and not interrupted and self.released_state_lock(tofu, stdout, stderr):
            # As for the engine's commands: once more, the ended run's state lock released.
            rc, stdout, stderr, interrupted = self._run_argv(env)
        if is_tofu:
            # Masked in the result like everything tofu marks sensitive.
            self.tofu_secrets |= tofu_utils.sensitive_values(stdout, self.dest)
        result = {"changed": True, "cmd": self.command, "rc": rc, "stdout": stdout, "stderr": stderr,
                  "interrupted": interrupted}
        if interrupted:
            why = (f"timed out after {self.params['exec_timeout']}s" if interrupted == "timeout"
                   else f"was interrupted by {interrupted}")
            raise StepFailed(f"exec ({self.operation}) {why}: it was sent SIGINT, then had a grace "
                             f"period, and exited with rc={rc}: {stderr.strip() or stdout.strip()}", result)
        if rc != 0:
            raise StepFailed(f"exec ({self.operation}) failed with rc={rc}: "
                             f"{stderr.strip() or stdout.strip()}", result)
        self.exec_result = result
        return result

    @contextlib.contextmanager
    def streaming(self, which):
        """Shows the standard output of the commands run inside it as it
        comes, through echo[which] (0: plain lines, 1: a -json event stream)."""
        if self.echo is None:
            yield
            return
        tofu_utils.ECHO = self.echo[which]
        self.streamed = True
        try:
            yield
        finally:
            tofu_utils.ECHO = None

    def step_git_push(self):
        if "exec" in self.steps and not self.applied and not (self.check_mode and self.pushing()):
            return {"changed": False, "skipped": True,
                    "msg": f"nothing pushed: only a successful {' or '.join(PUSHING)} pushes, "
                           f"and this run's command was {self.operation} (a plan never pushes)"}
        remote = self.params["push_remote"]
        try:
            if self.applied and not self.check_mode:
                release = self.release_with_push()
                result, markers = git_utils.push_applied(self.repo_path, self.applied["commit"],
                                                         [(self.stack, self.profile)], remote=remote,
                                                         release=release, expected=self.applied.get("upstream"))
                result["applied_marker"] = markers[0]
                if result.pop("released", False):
                    self.backend().released_with_push(self.stack, self.profile)
                    self.released_with_push = True
            else:
                result = git_utils.push(self.repo_path, remote=remote, check_mode=self.check_mode,
                                        commit=self.applied["commit"] if self.applied else None)
        except git_utils.GitError as exc:
            self.push_error = exc
            raise StepFailed(f"git push failed: {exc}") from exc
        return result

    def release_with_push(self):
        """What the git push of this run can carry to release its lock in the
        same atomic push, when step unlock comes right after git_push and the
        lock's backend can (see git_utils.push_applied); None otherwise."""
        steps = self.steps
        index = steps.index("git_push")
        if index + 1 >= len(steps) or steps[index + 1] != "unlock" or not self.lock_record:
            return None
        try:
            return self.backend().release_with_push(self.stack, self.profile, self.lock_record)
        except (run_lock.LockError, git_utils.GitError):
            return None

    def run_record(self):
        """Who this run is, for the lock: its owner and run id."""
        return self.lock_record or {"owner": self.owner, "run_id": self.run_id}

    def step_unlock(self):
        if self.released_with_push:
            return {"changed": True, "record": self.lock_record,
                    "msg": "released in the same atomic push as the branch (step git_push)"}
        try:
            changed, record = self.backend().release(self.stack, self.profile, self.run_record(),
                                                     check_mode=self.check_mode)
        except run_lock.LockConfigError as exc:
            raise StepFailed(f"lock backend configuration error: {exc}; nothing was unlocked") from exc
        except (run_lock.LockError, git_utils.GitError) as exc:
            if isinstance(exc, run_lock.LockHeld):
                self.lock_lost_to = (f"{exc.record.get('owner') or 'an unknown owner'} "
                                     f"(run {exc.record.get('run_id') or 'unknown'})")
            raise StepFailed(f"unlock refused: {exc} (steps [unlock_any] releases a lock of this "
                             "owner whichever run took it)") from exc
        return {"changed": changed, "record": record}

    def step_unlock_any(self):
        """Releases the lock this owner holds on the stack and profile,
        whichever of the owner's runs took it (a run id forgotten, another
        clone's run). Another owner's lock is refused: releasing it means
        naming that owner, so who released whose lock stays on record."""
        try:
            # The lock this run took is released as taken, without reading it first.
            held = self.lock_record or self.backend().read(self.stack, self.profile)
            if held is None:
                return {"changed": False, "record": None, "msg": "the lock was free"}
            if held.get("owner") != self.owner:
                raise run_lock.LockHeld(held, self.stack, self.profile, action="release")
            changed, record = self.backend().release(self.stack, self.profile, held,
                                                     check_mode=self.check_mode)
        except run_lock.LockConfigError as exc:
            raise StepFailed(f"lock backend configuration error: {exc}; nothing was unlocked") from exc
        except run_lock.LockHeld as exc:
            raise StepFailed(f"unlock_any refused: {exc}: unlock_any releases only the locks of owner "
                             f"{self.owner}; to release this one name its owner (lock.owner="
                             f"{exc.record.get('owner')}) or use run_lock state=absent",
                             {"refused": True}) from exc
        except (run_lock.LockError, git_utils.GitError) as exc:
            raise StepFailed(f"unlock_any failed: {exc}") from exc
        return {"changed": changed, "record": record, "released": record if changed else None}

    # -- run -----------------------------------------------------------------
    def inherited(self):
        """The descriptors every process the run starts inherits: its flock."""
        return () if self.flock_fd is None else (self.flock_fd,)

    def run(self, steps):
        self.steps = list(steps)
        try:
            with tofu_utils.INTERRUPTS.guard() as interrupts:
                return self._run(steps, interrupts)
        finally:
            if self.flock_fd is not None:
                run_lock.drop_flock(self.flock_fd)
                self.flock_fd = None

    def _run(self, steps, interrupts):
        records = []
        failure = None
        self.load_policy()
        self.check_dest()
        try:
            self.check_plan()
        except StepFailed as exc:
            failure = ("plan_id", str(exc))
            records.append({"step": "plan_id", "status": "failed", "changed": False, "duration": 0.0,
                            "msg": str(exc), "result": exc.result})
        for name in steps:
            # An unlock done by git_push's atomic push is reported whatever arrives now.
            if failure is None and interrupts.received and not (name == "unlock" and self.released_with_push):
                failure = (name, f"interrupted by {interrupts.received} before step {name}")
                records.append({"step": name, "status": "failed", "changed": False, "duration": 0.0,
                                "msg": failure[1], "result": {}})
                continue
            if failure is not None:
                records.append({"step": name, "status": "skipped", "changed": False, "duration": 0.0})
                continue
            start = time.monotonic()
            try:
                result = getattr(self, f"step_{name}")()
                status, msg = "ok", ""
            except StepFailed as exc:
                result, status, msg = exc.result, "failed", str(exc)
                failure = (name, msg)
                if name in ("git_push", "unlock") and self.lock_record:
                    # Not `running`: the run is over, and the record says why.
                    self.mark_lock("failed", msg)
            records.append({"step": name, "status": status, "changed": bool(result.get("changed")),
                            "duration": round(time.monotonic() - start, 3), "msg": msg,
                            "result": result})
        for record in records:
            if self.render_result is not None and record.get("result") is self.render_result:
                # Its files were written later, once the lock was held.
                record["changed"] = bool(self.render_result.get("changed"))
        return records, failure

    def applied_summary(self):
        counts = self.applied.get("counts") or {}
        return (f"{self.applied['command']}: "
                f"{', '.join(f'{n} {k}' for k, n in counts.items() if n) or 'no resource change'}")

    def failure_message(self, step, msg, steps):
        if step not in steps or self.given_back:
            return msg
        held = "lock" in steps and steps.index("lock") < steps.index(step)
        if step == "git_check":
            return f"{msg}. No lock was taken and nothing ran."
        if held and step == "git_push" and self.applied:
            why, todo = lost_push(self.push_error, self.applied["commit"], self.detached_at)
            return (f"{msg}. Commit {self.applied['commit']} was applied to {self.stack}/{self.profile} "
                    f"({self.applied_summary()}) but was not pushed{f': {why}' if why else ''}. The run lock "
                    f"stays held by {self.owner} (run {self.run_id}), marked failed, so nobody applies the "
                    f"upstream over it. What to do: {todo}: it applies what is then checked out, pushes it "
                    "and releases the lock.")
        if held and step == "unlock" and (self.applied or self.exec_result):
            done = (f"commit {self.applied['commit']} was applied ({self.applied_summary()})"
                    f"{' and pushed' if 'git_push' in steps else ''}" if self.applied else
                    f"{self.operation} succeeded")
            if self.lock_lost_to:
                return (f"{msg}. Everything else succeeded: {done}; the run lock {self.stack}/{self.profile} is "
                        f"no longer this run's: {self.lock_lost_to} holds it (broken or taken over while this "
                        "run held it), so there is nothing of this run's to release. Ask its holder why.")
            return (f"{msg}. Everything else succeeded: {done}; only the run lock {self.stack}/"
                    f"{self.profile} was not released (marked failed where the backend could be "
                    f"reached). Release it with steps [unlock] and run_id {self.run_id} as owner "
                    f"{self.owner} (steps [unlock_any] releases that owner's lock whichever run took it).")
        if held and step == "exec" and self.interrupted:
            return (f"{msg}. The run lock {self.stack}/{self.profile} stays held by {self.owner} "
                    f"(run {self.run_id}), marked interrupted, and nothing was pushed; tofu's state "
                    f"is in {self.dest}. Run again as the same owner to finish: tofu resumes from "
                    "that state (a resource cut mid-create is tainted and replaced).")
        if held and step in ("exec", "git_push"):
            return (f"{msg}. The run lock {self.stack}/{self.profile} stays held by {self.owner} "
                    f"(run {self.run_id}) and nothing was pushed"
                    f"{'' if step == 'exec' else ' (the exec step did run)'}. Fix or revert, then run "
                    f"again as the same owner (the ended run's lock is taken over), or release it with "
                    f"steps [unlock] and run_id {self.run_id}, or steps [unlock_any] as owner {self.owner}.")
        return msg


def net_changed(records):
    """Whether the run left anything changed. A lock this run took and
    released again is no change, so a run with nothing to do reports none."""
    by_step = {r["step"]: r for r in records}
    transient = set()
    lock, unlock = by_step.get("lock"), by_step.get("unlock") or by_step.get("unlock_any")
    if lock and unlock and lock["status"] == unlock["status"] == "ok" and lock["changed"]:
        transient = {"lock", unlock["step"]}
    return any(r["changed"] for r in records if r["step"] not in transient)


def refused(records):
    """Whether the run failed because it was refused (dirty or behind work
    tree, lock held, saved plan not applicable) rather than a step failing."""
    for record in records:
        if record["status"] != "failed":
            continue
        result = record.get("result") if isinstance(record.get("result"), dict) else {}
        return bool(result.get("refused") or record["step"] == "git_check"
                    or (record["step"] == "render" and "not committed" in record.get("msg", ""))
                    or (record["step"] in ("render", "lock") and record.get("msg", "").startswith("lock refused")))
    return False


def state_lock_info(text):
    """The Lock Info tofu prints when it cannot take the state lock ({"ID",
    "Path", "Operation", "Who", "Version", "Created"}), or None when `text`
    is not that error."""
    # A command line passed through prints in colour.
    text = ANSI_RE.sub("", text)
    if "Error acquiring the state lock" not in text:
        return None
    info = {}
    for match in LOCK_INFO_RE.finditer(text.partition("Lock Info:")[2]):
        info.setdefault(match.group(1), match.group(2))
    return info if info.get("ID") else None


def tofu_time(text):
    """A time as tofu prints it in Lock Info (`2026-01-02 10:00:00.123 +0000 UTC`,
    or RFC 3339), or None."""
    match = re.match(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d(?:\.\d+)?)\s*(Z|[+-]\d\d:?\d\d)?", text or "")
    if not match:
        return None
    try:
        return run_lock.parse_time(f"{match.group(1)}T{match.group(2)}{match.group(3) or 'Z'}")
    except run_lock.LockError:
        return None


def release_state_locks(dest):
    """Removes the local backend's state lock files (.terraform.tfstate.lock.info)
    that a tofu killed mid-run left in `dest`, each only when no process holds
    the lock on its state file. Returns what each removed lock said."""
    candidates = [os.path.join(dest, ".terraform.tfstate.lock.info")]
    workspaces = os.path.join(dest, "terraform.tfstate.d")
    with contextlib.suppress(OSError):
        candidates += [os.path.join(workspaces, name, ".terraform.tfstate.lock.info")
                       for name in sorted(os.listdir(workspaces))]
    released = []
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as handle:
                info = json.load(handle)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            info = {}
        if state_file_locked(os.path.join(os.path.dirname(path), "terraform.tfstate")):
            continue
        os.unlink(path)
        info = info if isinstance(info, dict) else {}
        released.append(f"{os.path.relpath(path, dest)}: ID {info.get('ID')}, {info.get('Operation')} "
                        f"by {info.get('Who')} since {info.get('Created')}")
    return released


def state_file_locked(path):
    """Whether a process holds the lock tofu's local backend takes on its
    state file (a POSIX record lock, which dies with its process)."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def backend_settings(dest, overrides=None):
    """The backend block of the rendered configuration as {"type", attr: value}
    (plain string and boolean attributes only), with `overrides`
    (backend_config) on top; {} when none is found."""
    found = {}
    try:
        names = sorted(os.listdir(dest))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(dest, name)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError):
            continue
        if name.endswith(".tf.json"):
            try:
                blocks = (json.loads(text).get("terraform") or {})
            except (ValueError, AttributeError):
                continue
            for block in blocks if isinstance(blocks, list) else [blocks]:
                for kind, settings in ((block or {}).get("backend") or {}).items():
                    if isinstance(settings, list):
                        settings = settings[0] if settings else {}
                    found = dict(type=kind, **{k: v for k, v in (settings or {}).items()
                                               if isinstance(v, (str, bool))})
        elif name.endswith(".tf"):
            match = re.search(r'backend\s+"([^"]+)"\s*\{([^}]*)\}', text)
            if match:
                found = {"type": match.group(1)}
                for attr in re.finditer(r'^\s*(\w+)\s*=\s*(?:"([^"]*)"|(true|false))\s*$',
                                        match.group(2), re.M):
                    found[attr.group(1)] = attr.group(2) if attr.group(2) is not None else attr.group(3)
    if found:
        found.update({k: v for k, v in (overrides or {}).items() if isinstance(v, (str, bool))})
    return found


def redact(value, secrets):
    """`value` with every occurrence of a secret in any string masked."""
    secrets = sorted((s for s in secrets if isinstance(s, str) and s), key=len, reverse=True)
    if not secrets:
        return value

    def walk(item):
        if isinstance(item, dict):
            return {walk(k): walk(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(v) for v in item]
        if isinstance(item, str):
            for secret in secrets:
                item = item.replace(secret, tofu_utils.MASK)
        return item
    return walk(value)


def secrets_of(params):
    """The values in `params` that are credentials: AWS keys and backend_config
    values under credential-like names. Plain values (a profile named like a
    variable's value, a parallelism equal to a count) are not secrets."""
    found = {params.get(k) for k in ("secret_key", "session_token", "access_key")}
    for key, value in ((params.get("tofu_options") or {}).get("backend_config") or {}).items():
        if SECRET_KEY_RE.search(str(key)):
            found.add(str(value))
    return {s for s in found if isinstance(s, str) and s}


def changes_infrastructure(command):
    """Whether `command` (a validated command: a name, or a command line)
    is an apply or destroy, whose commit is then pushed."""
    if isinstance(command, str):
        return command in PUSHING
    # After tofu's global options: `tofu -chdir=. apply` applies as well.
    return tofu_subcommand(command) in PUSHING


def upstream_moved(info, detached_at):
    """(what moved, what to do) when the checkout git_utils.check() found
    (`info`), once the locks are held, is behind what git_check compared it
    with (`detached_at`: the remote branch a detached checkout was found to
    be), or None. The one re-check of a run of one stack and of several."""
    if detached_at and info["detached_at"] != detached_at:
        return (f"{detached_at} moved on from the detached HEAD {info['head'][:12]} while this run waited",
                "Sync the checkout again, then run again")
    if info["behind"]:
        return (f"branch {info['branch']} is now {info['behind']} commit(s) behind {info['upstream']} "
                "(pushed while this run waited)", "Pull, then run again")
    if info.get("upstream_gone"):
        return (f"the upstream {info['upstream']} of branch {info['branch']} no longer exists on the remote "
                "(deleted while this run waited)", "Set the branch's upstream to the branch that replaced it, then "
                "run again")
    return None


def moved_checkout(started, now):
    """Why a run over several stacks refuses a checkout that is no longer
    the commit it started from (its stacks were chosen from that commit)."""
    return f"the checkout moved from {started} (read when the run started) to {now} during the run"


def lost_push(exc, commit, detached_at=None):
    """(why `commit`, applied, was not pushed, or None; what to do) after
    git push failed with `exc`. `detached_at`: the remote branch git_check
    found a detached checkout to be. The one advice of a run of one stack
    and of several: to pull only where there is an upstream to pull from."""
    cause = getattr(exc, "cause", None)
    again = "then run again as the same owner"
    if cause == "moved":
        return ("the checkout moved on from it during the run",
                f"check out {commit} again (or review what was committed on top of it), {again}")
    if cause == "behind":
        return (f"someone pushed to {exc.upstream} meanwhile", f"pull (rebase or merge onto {exc.upstream}), {again}")
    if cause in ("gone", "rewound"):
        return (f"someone {'deleted' if cause == 'gone' else 'moved back'} {exc.upstream} meanwhile, without the "
                "run lock", f"find out who and why, and agree what {exc.upstream} should hold, {again}")
    if cause == "no_upstream":
        return (f"branch {exc.branch} has no upstream, so there is nothing to pull from or push to",
                f"push the branch once with 'git push -u {exc.remote or 'origin'} {exc.branch}', {again}")
    if cause == "detached" and detached_at:
        return (f"{detached_at} moved on from it meanwhile, and a detached checkout has no branch to pull into",
                f"sync the checkout again to what {detached_at} now holds (as a project sync does: 'git fetch', "
                f"then 'git checkout --detach {detached_at}'), {again}")
    if cause == "detached":
        return (f"HEAD is detached at a commit no branch of {exc.remote} holds, so there is nothing to pull "
                "from or push to",
                f"push it to a branch with 'git push {exc.remote} {commit}:refs/heads/<branch>', {again}")
    return None, f"fix what git reported, {again}"


def run(params, template, check_mode=False, diff=False, variables=None, fast=False, echo=None,
        expect_commit=None):
    """Validates and runs the steps in `params`. Returns the result a task
    reports (without no_log masking: the caller applies its own). Raises
    WorkflowError for bad input, before any step runs. `fast`, `echo` and
    `expect_commit`: see Workflow."""
    steps = validate_steps(params["steps"])
    workflow = Workflow(params, template, check_mode=check_mode, diff=diff, variables=variables,
                        fast=fast, echo=echo, expect_commit=expect_commit)
    workflow.preflight(steps)
    started = time.monotonic()
    records, failure = workflow.run(steps)
    result = dict(
        changed=net_changed(records),
        stack=workflow.stack, profile=workflow.profile, owner=workflow.owner,
        run_id=workflow.run_id, dest=workflow.dest, steps=records,
        duration=round(time.monotonic() - started, 3),
    )
    for key in ("counts", "outputs", "resources", "plan_id", "summary"):
        if key in workflow.exec_result:
            result[key] = workflow.exec_result[key]
    if workflow.rendered:
        result["hash"] = workflow.rendered.get("hash")
    if diff and workflow.diffs:
        result["diff"] = workflow.diffs
    if failure:
        interrupted = next((r["result"].get("interrupted") for r in records
                            if r["status"] == "failed" and isinstance(r.get("result"), dict)), None)
        if interrupted or "interrupted by" in failure[1]:
            result["interrupted"] = interrupted or tofu_utils.INTERRUPTS.received or "signal"
        result["failed"] = True
        result["failed_step"] = failure[0]
        result["refused"] = refused(records)
        result["msg"] = workflow.failure_message(failure[0], failure[1], steps)
    else:
        result["msg"] = "; ".join(f"{r['step']} {'changed' if r['changed'] else 'ok'}" for r in records)
    if workflow.applied:
        result["applied_commit"] = workflow.applied["commit"]
    if workflow.taken_over:
        result["taken_over"] = workflow.taken_over
    if workflow.state_lock_released:
        result["state_lock_released"] = workflow.state_lock_released
    if workflow.streamed:
        result["streamed"] = True
    # Masked: credentials given as options and every value tofu marks
    # sensitive (variables, attributes, outputs), wherever they appear.
    return redact(result, secrets_of(params) | workflow.tofu_secrets)
