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

import os
import subprocess
import time

from ansible_collections.guardrail.ecs.plugins.module_utils.aws import AWS_ARGUMENT_SPEC
from ansible_collections.guardrail.ecs.plugins.module_utils import git as git_utils
from ansible_collections.guardrail.ecs.plugins.module_utils import render as render_utils
from ansible_collections.guardrail.ecs.plugins.module_utils import run_lock
from ansible_collections.guardrail.ecs.plugins.module_utils import tofu as tofu_utils

STEPS = ("render", "git_check", "lock", "exec", "git_push", "unlock", "unlock_any")
DEFAULT_STEPS = ["render", "git_check", "lock", "exec", "git_push", "unlock"]
TOFU_OPTIONS = ("backend_config", "backend_config_files", "lock", "lock_timeout", "parallelism",
                "targets", "replace", "timeout")

WORKFLOW_ARGUMENT_SPEC = dict(
    stack=dict(type="str", required=True),
    profile=dict(type="str", required=True),
    steps=dict(type="list", elements="str", default=DEFAULT_STEPS),
    repo_path=dict(type="path"),
    command=dict(type="raw", default="apply"),
    stacks_dir=dict(type="str", default="stacks"),
    profiles_dir=dict(type="str", default="profiles"),
    dest=dict(type="str"),
    vars=dict(type="dict", default={}),
    binary=dict(type="str"),
    workspace=dict(type="str"),
    variables=dict(type="dict", default={}, no_log=True),
    var_files=dict(type="list", elements="path", default=[]),
    tofu_options=dict(type="dict", default={}, no_log=True),
    show_sensitive=dict(type="bool", default=False),
    exec_timeout=dict(type="int", default=3600),
    max_ahead=dict(type="int", default=1),
    allow_detached=dict(type="bool", default=False),
    fetch=dict(type="bool", default=True),
    push_remote=dict(type="str"),
    owner=dict(type="str"),
    run_id=dict(type="str"),
    lock_message=dict(type="str", default=""),
    lock_backend=dict(type="str", default="git", choices=list(run_lock.BACKENDS)),
    lock_remote=dict(type="str"),
    lock_table=dict(type="str"),
    lock_bucket=dict(type="str"),
    lock_key=dict(type="str"),
)
WORKFLOW_ARGUMENT_SPEC.update(AWS_ARGUMENT_SPEC)


class WorkflowError(Exception):
    """Bad input: nothing was run."""


class StepFailed(Exception):
    """A step refused or failed; `result` is what it returned so far."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result or {}


def validate_steps(steps):
    """The steps as given, or a clear error when unknown, repeated or out of order."""
    if not steps:
        raise WorkflowError(f"steps is empty: name at least one of {', '.join(STEPS)}")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise WorkflowError(f"unknown step(s) {', '.join(map(repr, unknown))}: "
                                f"steps are {', '.join(STEPS)}, in that order; nothing was run")
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
        return [str(a) for a in command]
    raise WorkflowError("command must be a tofu command name or a non-empty list of arguments")


class Workflow:
    """The steps of one run and everything they share."""

    def __init__(self, params, template, check_mode=False, diff=False, variables=None):
        """`params` as validated by WORKFLOW_ARGUMENT_SPEC; `template` renders
        one template text with a dict of variables; `variables` (Ansible's
        task variables, or None) give the default owner and run id."""
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
        self.command = validate_command(params["command"])
        self._backend = None
        self.diffs = []
        self.exec_result = {}
        self.rendered = {}
        try:
            render_utils.validate_name("stack", self.stack)
            render_utils.validate_name("profile", self.profile)
            run_lock.validate_identity(self.stack, self.profile)
            _root, _profiles, self.dest = render_utils.resolve(
                self.repo_path, self.stack, self.profile, params["stacks_dir"],
                params["profiles_dir"], params["dest"])
        except (render_utils.RenderError, run_lock.LockError) as exc:
            raise WorkflowError(f"{exc}; nothing was run") from exc

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
    def step_render(self):
        p = self.params
        try:
            # The rendered directory is written even in check mode: it is
            # git-ignored build output, and the plan that check mode runs
            # needs it.
            result = render_utils.render(
                self.repo_path, self.stack, self.profile, self.template,
                extra_vars=p["vars"], stacks_dir=p["stacks_dir"], profiles_dir=p["profiles_dir"],
                dest=p["dest"])
        except render_utils.RenderError as exc:
            raise StepFailed(f"render failed: {exc}") from exc
        self.diffs.extend(result.pop("diff"))
        self.rendered = result
        return result

    def step_git_check(self):
        p = self.params
        try:
            result = git_utils.check(self.repo_path, max_ahead=p["max_ahead"],
                                     allow_detached=p["allow_detached"], fetch=p["fetch"])
        except git_utils.GitError as exc:
            raise StepFailed(f"git check failed: {exc}") from exc
        result["changed"] = False
        if not result["ok"]:
            raise StepFailed("git check refused the work tree: " + "; ".join(result["problems"]), result)
        return result

    def step_lock(self):
        try:
            record = run_lock.new_record(self.stack, self.profile, self.owner, self.run_id,
                                         operation=self.operation, message=self.params["lock_message"])
            changed, held = self.backend().acquire(self.stack, self.profile, record,
                                                   check_mode=self.check_mode)
        except (run_lock.LockError, git_utils.GitError) as exc:
            raise StepFailed(f"lock refused: {exc}") from exc
        return {"changed": changed, "record": held}

    def step_exec(self):
        if not os.path.isdir(self.dest):
            raise StepFailed(f"exec: the rendered directory {self.dest} does not exist; add the render step")
        if isinstance(self.command, list):
            return self._exec_argv()
        p = self.params
        options = dict(p["tofu_options"] or {})
        unknown = sorted(set(options) - set(TOFU_OPTIONS))
        if unknown:
            raise StepFailed(f"exec: unknown tofu_options {', '.join(unknown)}: use {', '.join(TOFU_OPTIONS)}")
        tofu = None
        try:
            tofu = tofu_utils.Tofu(self.dest, binary=p["binary"], workspace=p["workspace"],
                                   variables=p["variables"], var_files=p["var_files"], **options)
            result = tofu.execute(self.command, check_mode=self.check_mode,
                                  show_sensitive=p["show_sensitive"])
        except tofu_utils.TofuError as exc:
            raise StepFailed(f"exec ({self.operation}) failed: {exc}",
                             {"rc": exc.rc, "stdout": tofu.stdout if tofu else "",
                              "stderr": tofu.stderr if tofu else exc.stderr}) from exc
        result.update(stdout=tofu.stdout, stderr=tofu.stderr, binary=tofu.binary)
        if self.diff:
            self.diffs.extend(tofu_utils.diff_text(result["resources"]))
        self.exec_result = result
        return result

    def _exec_argv(self):
        if self.check_mode:
            return {"changed": False, "skipped": True, "msg": "check mode: the command was not run",
                    "cmd": self.command}
        try:
            proc = subprocess.run(self.command, cwd=self.dest, capture_output=True, text=True,
                                  timeout=self.params["exec_timeout"], check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StepFailed(f"exec ({self.operation}) failed: {exc}") from exc
        result = {"changed": True, "cmd": self.command, "rc": proc.returncode,
                  "stdout": proc.stdout, "stderr": proc.stderr}
        if proc.returncode != 0:
            raise StepFailed(f"exec ({self.operation}) failed with rc={proc.returncode}: "
                             f"{proc.stderr.strip() or proc.stdout.strip()}", result)
        self.exec_result = result
        return result

    def step_git_push(self):
        try:
            return git_utils.push(self.repo_path, remote=self.params["push_remote"],
                                  check_mode=self.check_mode)
        except git_utils.GitError as exc:
            raise StepFailed(f"git push failed: {exc}") from exc

    def step_unlock(self):
        try:
            changed, record = self.backend().release(self.stack, self.profile, self.owner,
                                                     check_mode=self.check_mode)
        except (run_lock.LockError, git_utils.GitError) as exc:
            raise StepFailed(f"unlock refused: {exc} (a lock held by someone else is released "
                             "with steps [unlock_any])") from exc
        return {"changed": changed, "record": record}

    def step_unlock_any(self):
        try:
            changed, record = self.backend().remove(self.stack, self.profile, check_mode=self.check_mode)
        except (run_lock.LockError, git_utils.GitError) as exc:
            raise StepFailed(f"unlock_any failed: {exc}") from exc
        return {"changed": changed, "record": record}

    # -- run -----------------------------------------------------------------
    def run(self, steps):
        records = []
        failure = None
        for name in steps:
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
            records.append({"step": name, "status": status, "changed": bool(result.get("changed")),
                            "duration": round(time.monotonic() - start, 3), "msg": msg,
                            "result": result})
        return records, failure

    def failure_message(self, step, msg, steps):
        held = "lock" in steps and steps.index("lock") < steps.index(step)
        if step == "git_check":
            return f"{msg}. No lock was taken and nothing ran."
        if held and step in ("exec", "git_push"):
            return (f"{msg}. The run lock {self.stack}/{self.profile} stays held by {self.owner} "
                    f"(run {self.run_id}) and nothing was pushed"
                    f"{'' if step == 'exec' else ' (the exec step did run)'}. Fix or revert, then run "
                    "again as the same owner, or release the lock with steps [unlock] as the same "
                    "owner (steps [unlock_any] releases it whoever holds it).")
        return msg


def net_changed(records):
    """Whether the run left anything changed. A lock this run took and
    released again is no change, so a run with nothing to do reports none."""
    by_step = {r["step"]: r for r in records}
    transient = set()
    lock, unlock = by_step.get("lock"), by_step.get("unlock")
    if lock and unlock and lock["status"] == unlock["status"] == "ok" and lock["changed"]:
        transient = {"lock", "unlock"}
    return any(r["changed"] for r in records if r["step"] not in transient)




def run(params, template, check_mode=False, diff=False, variables=None):
    """Validates and runs the steps in `params`. Returns the result a task
    reports (without no_log masking: the caller applies its own). Raises
    WorkflowError for bad input, before any step runs."""
    steps = validate_steps(params["steps"])
    workflow = Workflow(params, template, check_mode=check_mode, diff=diff, variables=variables)
    started = time.monotonic()
    records, failure = workflow.run(steps)
    result = dict(
        changed=net_changed(records),
        stack=workflow.stack, profile=workflow.profile, owner=workflow.owner,
        run_id=workflow.run_id, dest=workflow.dest, steps=records,
        duration=round(time.monotonic() - started, 3),
    )
    for key in ("counts", "outputs", "resources"):
        if key in workflow.exec_result:
            result[key] = workflow.exec_result[key]
    if workflow.rendered:
        result["hash"] = workflow.rendered.get("hash")
    if diff and workflow.diffs:
        result["diff"] = workflow.diffs
    if failure:
        result["failed"] = True
        result["failed_step"] = failure[0]
        result["msg"] = workflow.failure_message(failure[0], failure[1], steps)
    else:
        result["msg"] = "; ".join(f"{r['step']} {'changed' if r['changed'] else 'ok'}" for r in records)
    return result
