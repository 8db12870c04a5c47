# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many stacks in one run, on top of the single-stack workflow engine.

A stack names the stacks it depends on in `<stacks_dir>/<stack>/stack.yml`:

    depends_on: [network, cluster]   # stacks whose outputs this one reads
    inputs: [modules/vpc]            # more repository paths the stack reads (for `affected`)
    mock_outputs:                    # outputs a plan uses while a dependency has no state
      network: {vpc_id: vpc-mock}

The stack position then takes one name, a comma list, `all` or `affected`.
The run checks git once, takes every selected stack's run lock, re-checks
the upstream once, runs the stacks in dependency order (independent ones at
once, up to `parallelism`; destroy in reverse order), pushes once and releases
the locks. A stack that fails stops the stacks that depend on it; the others
finish. A dependency's outputs (read from its state) reach the dependent's
templates as `dependencies.<name>.outputs`.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import namedtuple

from ansible_collections.guardrail.ecs.plugins.module_utils.common import git as git_utils
from ansible_collections.guardrail.ecs.plugins.module_utils.common import names
from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import write_atomic
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils
from ansible_collections.guardrail.ecs.plugins.plugin_utils import render as render_utils
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow as engine

RESERVED = engine.RESERVED_STACKS
STACK_FILE = "stack.yml"
STACK_KEYS = ("depends_on", "inputs", "mock_outputs", "description")
COUNTS = ("create", "update", "replace", "delete")
DRIFT_REPORT = os.path.join(".dist", "drift")


class StackError(engine.WorkflowError):
    """The stacks or their dependencies are wrong; nothing was run."""


class Stack(namedtuple("Stack", ("name", "depends_on", "inputs", "mock_outputs"))):
    """A stack as its stack.yml describes it, a named tuple: `depends_on` and
    `inputs` are tuples of names (default ()), `mock_outputs` maps a
    dependency to the outputs a plan uses while it has no state (default {})."""

    __slots__ = ()

    def __new__(cls, name, depends_on=(), inputs=(), mock_outputs=None):
        return super().__new__(cls, name, depends_on, inputs, {} if mock_outputs is None else mock_outputs)


# -- the graph -----------------------------------------------------------------
def _yaml():
    import yaml  # pylint: disable=import-outside-toplevel
    return yaml


def read_stack(stack_root, name):
    """The Stack of `<stack_root>/stack.yml` (a plain Stack when there is none)."""
    path = os.path.join(stack_root, STACK_FILE)
    if not os.path.isfile(path):
        return Stack(name)
    yaml = _yaml()
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise StackError(f"cannot read {path}: {exc}; nothing was run") from exc
    data = {} if data is None else data
    where = f"stack {name!r} ({STACK_FILE})"
    if not isinstance(data, dict):
        raise StackError(f"{where} must be a mapping with keys {', '.join(STACK_KEYS)}; nothing was run")
    unknown = sorted(set(map(str, data)) - set(STACK_KEYS))
    if unknown:
        raise StackError(f"{where}: unknown key(s) {', '.join(unknown)}: use {', '.join(STACK_KEYS)}; "
                         "nothing was run")
    lists = {}
    for key in ("depends_on", "inputs"):
        value = data.get(key) or []
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise StackError(f"{where}: {key} must be a list of names; nothing was run")
        if len(set(value)) != len(value):
            raise StackError(f"{where}: {key} names something twice; nothing was run")
        lists[key] = tuple(value)
    for path_ in lists["inputs"]:
        if os.path.isabs(path_) or ".." in path_.replace("\\", "/").split("/"):
            raise StackError(f"{where}: input {path_!r} must be a path inside the repository; nothing was run")
    mocks = data.get("mock_outputs") or {}
    if not isinstance(mocks, dict) or not all(isinstance(v, dict) for v in mocks.values()):
        raise StackError(f"{where}: mock_outputs must map a dependency to its outputs; nothing was run")
    stray = sorted(set(mocks) - set(lists["depends_on"]))
    if stray:
        raise StackError(f"{where}: mock_outputs for {', '.join(stray)}, which it does not depend on; "
                         "nothing was run")
    return Stack(name, lists["depends_on"], lists["inputs"], dict(mocks))


def load_graph(repo_path, stacks_dir="stacks"):
    """{name: Stack} for every stack directory, dependencies checked: a
    reserved or invalid name, an unknown dependency or a cycle is refused."""
    root = os.path.join(os.path.realpath(repo_path), stacks_dir)
    if not render_utils.inside(repo_path, root) or not os.path.isdir(root):
        raise StackError(f"stacks directory {root} does not exist in the repository; nothing was run")
    graph = {}
    for name in sorted(os.listdir(root)):
        if name.startswith(".") or not os.path.isdir(os.path.join(root, name)):
            continue
        if name in RESERVED:
            raise StackError(f"stack directory {name!r} uses a reserved name ({', '.join(RESERVED)} select "
                             "several stacks): rename it; nothing was run")
        try:
            render_utils.validate_name("stack", name)
        except render_utils.RenderError as exc:
            raise StackError(f"{exc}; nothing was run") from exc
        graph[name] = read_stack(os.path.join(root, name), name)
    for stack in graph.values():
        unknown = [d for d in stack.depends_on if d not in graph]
        if unknown:
            raise StackError(f"stack {stack.name!r} depends on unknown stack(s) {', '.join(unknown)} "
                             f"(stacks: {', '.join(graph) or 'none'}); nothing was run")
    cycle = find_cycle(graph)
    if cycle:
        raise StackError("dependency cycle: " + " -> ".join(cycle) + "; nothing was run")
    return graph


def find_cycle(graph):
    """One dependency cycle as [a, b, ..., a], or None."""
    state = {}

    def visit(name, path):
        state[name] = "open"
        for dep in graph[name].depends_on:
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[name] = "done"
        return None
    for name in sorted(graph):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def order(graph, names):
    """`names` in dependency order (dependencies first), ties by name."""
    chosen, done, ordered = set(names), set(), []
    while len(ordered) < len(chosen):
        ready = sorted(n for n in chosen - done
                       if all(d in done or d not in chosen for d in graph[n].depends_on))
        ordered.extend(ready)
        done.update(ready)
    return ordered


def closure(graph, name):
    """Every stack `name` depends on, directly or not."""
    found, todo = set(), list(graph[name].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in found:
            found.add(dep)
            todo.extend(graph[dep].depends_on)
    return found


def selects_many(stack):
    return isinstance(stack, str) and ("," in stack or stack in RESERVED)


def parse_selection(spec, graph):
    """The stack names a comma list names (known, once each), or `all`."""
    if spec == "all":
        return list(graph)
    names = [n.strip() for n in spec.split(",")]
    if not all(names):
        raise StackError(f"stack list {spec!r} has an empty name; nothing was run")
    reserved = [n for n in names if n in RESERVED]
    if reserved and len(names) > 1:
        raise StackError(f"{', '.join(reserved)} selects stacks on its own and cannot be part of a list; "
                         "nothing was run")
    unknown = [n for n in names if n not in graph]
    if unknown:
        raise StackError(f"unknown stack(s) {', '.join(unknown)} (stacks: {', '.join(graph) or 'none'}); "
                         "nothing was run")
    if len(set(names)) != len(names):
        raise StackError(f"stack list {spec!r} names a stack twice; nothing was run")
    return names


# -- affected ------------------------------------------------------------------
def profile_files(profiles_dir, profile, _chain=()):
    """The profile files `profile` reads: its own and its `extends` chain."""
    if profile in _chain:
        return []
    try:
        path = render_utils.profile_path(profiles_dir, profile)
        with open(path, encoding="utf-8") as handle:
            data = _yaml().safe_load(handle) or {}
    except (render_utils.RenderError, OSError) as exc:
        raise StackError(f"{exc}; nothing was run") from exc
    parents = data.get("extends") if isinstance(data, dict) else None
    parents = [parents] if isinstance(parents, str) else parents or []
    files = [path]
    for parent in parents if isinstance(parents, list) else []:
        files.extend(profile_files(profiles_dir, str(parent), _chain + (profile,)))
    return files


def affected(graph, repo_path, profile, stacks_dir="stacks", profiles_dir="profiles", since=None,
             remote=None, var_files=(), fetch=True, head=None):
    """{stack: why} for the stacks whose committed inputs differ between the
    last commit applied to (stack, profile) (or `since`) and `head` (HEAD
    when not given), and the stacks depending on them, in dependency order."""
    repo = os.path.realpath(repo_path)
    try:
        head = head or git_utils.run_git(["rev-parse", "--verify", "HEAD^{commit}"], repo).strip()
        if since:
            base_of = {name: git_utils.run_git(["rev-parse", "--verify", "--end-of-options",
                                                f"{since}^{{commit}}"], repo).strip() for name in graph}
            applied = {}
        else:
            applied = git_utils.applied_commits(repo, remote=remote, fetch=fetch)
            base_of = {name: applied.get((name, profile)) for name in graph}
    except git_utils.GitError as exc:
        what = f"ref {since!r} is not a commit here" if since else "cannot read the applied markers"
        raise StackError(f"affected: {what}: {exc}; nothing was run") from exc
    shared = profile_files(os.path.join(repo, profiles_dir), profile)
    shared += [f for f in var_files if render_utils.inside(repo, f)]
    reasons = {}
    for name in order(graph, list(graph)):
        base = base_of[name]
        if base is None:
            reasons[name] = f"never applied to profile {profile} (no applied marker)"
            continue
        if git_utils.run_git_proc(["cat-file", "-e", f"{base}^{{commit}}"], repo).returncode != 0:
            reasons[name] = f"its last applied commit {base[:12]} is not in this clone"
            continue
        paths = [os.path.join(stacks_dir, name), *graph[name].inputs]
        paths += [os.path.relpath(f, repo) for f in shared]
        changed = git_utils.run_git(["diff", "--name-only", base, head, "--", *paths], repo).split()
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            reasons[name] = f"changed since {base[:12]}: {shown}"
            continue
        deps = [d for d in graph[name].depends_on if d in reasons]
        if deps:
            reasons[name] = f"depends on affected {', '.join(deps)}"
    return reasons


# -- dependency outputs ----------------------------------------------------------
def dependency_outputs(graph, name, params, planning):
    """{"dependencies": {dep: {"outputs": {...}, "mocked": bool}}} for the
    render of `name`, read from each dependency's state. A dependency without
    state uses its mock_outputs for a plan, and is an error otherwise."""
    found = {}
    for dep in graph[name].depends_on:
        try:
            _root, _profiles, dest = render_utils.resolve(params["repo_path"], dep, params["profile"],
                                                          params["stacks_dir"], params["profiles_dir"])
        except render_utils.RenderError as exc:
            raise StackError(str(exc)) from exc
        outputs = {}
        if os.path.isdir(dest):
            try:
                tofu = tofu_utils.Tofu(dest, binary=params["binary"], workspace=params["workspace"],
                                       **{k: v for k, v in (params["tofu_options"] or {}).items()
                                          if k in ("backend_config", "backend_config_files")})
                tofu.ensure_init()
                outputs = {k: o.get("value") for k, o in tofu.outputs().items()}
            except tofu_utils.TofuError as exc:
                raise StackError(f"cannot read the outputs of dependency {dep}: {exc}") from exc
        if outputs:
            found[dep] = {"outputs": outputs, "mocked": False}
        elif planning and dep in graph[name].mock_outputs:
            found[dep] = {"outputs": graph[name].mock_outputs[dep], "mocked": True}
        else:
            raise StackError(f"dependency {dep} of {name} has no outputs for profile {params['profile']} "
                             f"(not applied yet): apply {dep} first, or run both (e.g. `{dep},{name}` or "
                             f"`all`){'; a plan may use mock_outputs' if planning else ''}")
    return {"dependencies": found} if found else {}


def with_dependencies(params, check_mode=False):
    """`params` of a one-stack run whose stack.yml names dependencies, with
    their outputs added to `vars`; unchanged otherwise (no graph is read)."""
    if names.name_problem("stack", params["stack"]) or params["stack"] in RESERVED or "render" not in params["steps"]:
        return params  # the engine refuses a bad name; nothing to add without a render
    stack_file = os.path.join(os.path.realpath(params["repo_path"] or os.getcwd()), params["stacks_dir"],
                              params["stack"], STACK_FILE)
    if not os.path.isfile(stack_file):
        return params
    params = dict(params, repo_path=params["repo_path"] or os.getcwd())
    graph = load_graph(params["repo_path"], params["stacks_dir"])
    extra = dependency_outputs(graph, params["stack"], params, planning(params, check_mode))
    params["vars"] = render_utils.deep_merge(params["vars"] or {}, extra)
    return params


def planning(params, check_mode):
    return check_mode or params["command"] == "plan" or "exec" not in params["steps"]


# -- the run -------------------------------------------------------------------
def schedule(names, needs, work, parallelism, ended=None):
    """Runs work(name) -> (outcome, why) for each of `names` once every name in
    needs[name] ended "ok", up to `parallelism` at once; a name whose need did
    not is not run: ("skipped", why). `ended` holds outcomes known before.
    Returns {name: (outcome, why)}."""
    # Here, not at the top: a one-stack run never schedules, and the import costs.
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # pylint: disable=import-outside-toplevel

    outcomes, pending, running = dict(ended or {}), list(names), {}
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        while pending or running:
            for name in list(pending):
                failed = [n for n in needs[name] if n in outcomes and outcomes[n][0] != "ok"]
                if failed:
                    pending.remove(name)
                    outcomes[name] = ("skipped", f"not run: {', '.join(failed)} did not succeed")
                elif all(n in outcomes for n in needs[name]) and len(running) < parallelism:
                    pending.remove(name)
                    running[pool.submit(work, name)] = name
            if not running:
                continue
            done = wait(list(running), return_when=FIRST_COMPLETED).done
            for future in done:
                outcomes[running.pop(future)] = future.result()
    return outcomes


def serialised(template):
    """`template` callable from one thread at a time: Ansible's templar loads
    its filter plugins on first use, which is not safe from several threads."""
    guard = threading.Lock()

    def call(text, variables):
        with guard:
            return template(text, variables)
    return call


class ManyRun:
    """One run over several stacks of one profile."""

    def __init__(self, params, template, check_mode=False, diff=False, variables=None, fast=False):
        self.params = dict(params, repo_path=os.path.realpath(params["repo_path"] or os.getcwd()))
        self.template = serialised(template)
        self.check_mode = check_mode
        self.diff = diff
        self.variables = variables
        self.fast = fast
        self.steps = engine.validate_steps(params["steps"])
        self.command = engine.validate_command(params["command"])
        p = self.params
        if p["parallelism"] is None or p["parallelism"] < 1:
            raise StackError(f"parallelism must be at least 1, not {p['parallelism']}; nothing was run")
        for option, spelled in (("plan_id", "tofu.plan_id"), ("dest", "render.dest"), ("lock_key", "lock.key")):
            if p[option]:
                raise StackError(f"{spelled} names one stack's {option.replace('_', ' ')}: leave it unset to run "
                                 "several stacks; nothing was run")
        self.graph = load_graph(p["repo_path"], p["stacks_dir"])
        # The commit the run is made from, read once: `affected` chooses the
        # stacks from it, git_check, render and exec refuse a checkout moved
        # from it, and only it is pushed.
        self.commit = git_utils.head_commit(p["repo_path"])
        self.reasons = {}
        if p["stack"] == "affected":
            self.reasons = affected(self.graph, p["repo_path"], p["profile"], p["stacks_dir"],
                                    p["profiles_dir"], since=p["since"], remote=p["push_remote"],
                                    var_files=p["var_files"], fetch=p["fetch"], head=self.commit)
            names = list(self.reasons)
        else:
            names = parse_selection(p["stack"], self.graph)
        self.destroying = self.command == "destroy"
        self.names = order(self.graph, names)
        if self.destroying:
            self.names.reverse()
        identity = run_lock.default_identity(variables)
        p["owner"] = p["owner"] or identity[0]
        p["run_id"] = p["run_id"] or identity[1]
        # Every name and path checked before anything runs.
        checked = [engine.Workflow(self.stack_params(n), template, variables=variables) for n in self.names]
        if checked and "exec" in self.steps:
            checked[0].steps = self.steps
            checked[0].load_policy()
        self.results = {n: {"stack": n, "profile": p["profile"], "steps": [], "changed": False}
                        for n in self.names}
        self.lock = threading.Lock()
        self.detached_at = None  # the remote branch a detached checkout was found to be
        self.checked = None  # what the git check found, for the re-check once the locks are held

    def stack_params(self, name, **extra):
        return dict(self.params, stack=name, **extra)

    def needs(self, name):
        """The selected stacks `name` waits for: its dependencies, or, when
        destroying, the stacks that depend on it."""
        if self.destroying:
            return [n for n in self.names if name in self.graph[n].depends_on]
        return [d for d in self.graph[name].depends_on if d in self.results]

    def engine_run(self, name, steps, expect_commit=None, **extra):
        params = self.stack_params(name, steps=steps, **extra)
        return engine.run(params, self.template, check_mode=self.check_mode, diff=self.diff,
                          variables=self.variables, fast=self.fast, expect_commit=expect_commit)

    def merge(self, name, result):
        """Adds the result of the stack's main phase (render, exec)."""
        with self.lock:
            target = self.results[name]
            steps = target["steps"] + result.pop("steps", [])
            target.update(result)
            target["steps"] = steps

    def merge_phase(self, name, result):
        """Adds the steps of a lock or unlock phase, and its failure if any."""
        with self.lock:
            target = self.results[name]
            target["steps"] = target["steps"] + result.get("steps", [])
            if result.get("failed"):
                target.update({k: result[k] for k in ("failed", "failed_step", "refused", "msg") if k in result})

    def fail_all(self, names, msg, refused, step):
        for name in names:
            self.merge(name, {"failed": True, "refused": refused, "failed_step": step, "msg": msg})

    # phases
    def git_check(self):
        p = self.params
        try:
            info = git_utils.check(p["repo_path"], max_ahead=p["max_ahead"], allow_detached=p["allow_detached"],
                                   fetch=p["fetch"])
        except git_utils.GitError as exc:
            return f"git check failed: {exc}", False
        problems = list(info["problems"])
        if self.commit and info["head"] != self.commit:
            problems.append(engine.moved_checkout(self.commit, info["head"]))
        if problems:
            return ("git check refused the work tree: " + "; ".join(problems) +
                    ". No lock was taken and nothing ran."), True
        self.commit = info["head"]
        self.checked = info
        self.detached_at = info["detached_at"]
        return None, False

    def lock_all(self):
        """Takes each stack's run lock; a stack refused its lock is out of the run."""
        for name in self.names:
            self.merge_phase(name, self.engine_run(name, ["lock"]))

    def recheck(self, locked):
        """With every lock held: the branch must not be behind its upstream,
        nor a detached checkout's branch have moved on from it."""
        p = self.params
        try:
            info = git_utils.recheck(p["repo_path"], self.checked)
        except git_utils.GitError as exc:
            return f"cannot re-check the upstream before running: {exc}"
        moved = engine.upstream_moved(info, self.detached_at)
        return f"{moved[0]}: nothing was applied. {moved[1]}" if moved else None

    def run_stack(self, name):
        started = time.monotonic()
        if tofu_utils.INTERRUPTS.received:
            # Nothing of it ran: its lock is released with the skipped ones.
            why = f"not run: interrupted by {tofu_utils.INTERRUPTS.received} before it started"
            with self.lock:
                self.results[name].update(skipped=True, msg=why)
            return ("skipped", why)
        steps = [s for s in self.steps if s in ("render", "exec")]
        if "lock" in self.steps and "exec" in steps:
            steps.insert(steps.index("exec"), "lock")
        p = self.stack_params(name)
        try:
            extra = (dependency_outputs(self.graph, name, p, planning(p, self.check_mode))
                     if "render" in steps else {})
        except StackError as exc:
            self.merge(name, {"failed": True, "failed_step": "render", "refused": False,
                              "msg": f"render failed: {exc}"})
            return ("failed", str(exc))
        vars_ = render_utils.deep_merge(p["vars"] or {}, extra)
        try:
            result = self.engine_run(name, steps, expect_commit=self.commit, vars=vars_, fetch=False)
        except engine.WorkflowError as exc:
            result = {"failed": True, "failed_step": "exec", "refused": True, "msg": str(exc)}
        with self.lock:
            self.results[name]["started"] = round(started - self.t0, 3)
        self.merge(name, result)
        if extra:
            with self.lock:
                self.results[name]["mocked"] = sorted(d for d, v in extra["dependencies"].items() if v["mocked"])
        return ("ok", "") if not result.get("failed") else ("failed", result.get("msg", ""))

    def push(self, applied):
        """Pushes the commit the stacks applied (refused when the checkout
        moved on from it) and marks it applied to each, as the run of one
        stack does: (push result, None) or (None, the GitError it failed with)."""
        p = self.params
        commits = {self.results[name]["applied_commit"] for name in applied}
        try:
            if applied and not self.check_mode:
                if len(commits) > 1:
                    raise git_utils.PushRefused(f"the stacks applied different commits ({', '.join(sorted(commits))}"
                                                "): the checkout moved during the run; nothing was pushed", "moved")
                pushed, markers = git_utils.push_applied(p["repo_path"], commits.pop(),
                                                         [(name, p["profile"]) for name in applied],
                                                         remote=p["push_remote"])
                for name, marker in zip(applied, markers):
                    self.results[name]["applied_marker"] = marker
            else:
                pushed = git_utils.push(p["repo_path"], remote=p["push_remote"], check_mode=self.check_mode,
                                        commit=self.commit)
        except git_utils.GitError as exc:
            return None, exc
        return pushed, None

    def run(self):
        self.t0 = time.monotonic()
        with tofu_utils.INTERRUPTS.guard():
            return self._run()

    def _run(self):
        p = self.params
        names = list(self.names)
        if "git_check" in self.steps:
            msg, refused = self.git_check()
            if msg:
                self.fail_all(names, msg, refused, "git_check")
                return self.finish()
        if "lock" in self.steps:
            self.lock_all()
            if "exec" in self.steps and p["fetch"] and not self.check_mode and self.pushing():
                locked = [n for n in names if not self.results[n].get("failed")]
                msg = self.recheck(locked) if locked else None
                if msg:
                    for name in locked:
                        self.merge_phase(name, self.engine_run(name, ["unlock"]))
                    self.fail_all(locked, "exec: " + msg, True, "exec")
                    return self.finish()
        out = {n: ("failed", self.results[n].get("msg", "")) for n in names if self.results[n].get("failed")}
        ready = [n for n in names if n not in out]
        if any(s in self.steps for s in ("render", "exec")):
            outcomes = schedule(ready, {n: self.needs(n) for n in ready}, self.run_stack, p["parallelism"], out)
        else:
            outcomes = dict(out, **{n: ("ok", "") for n in ready})
        for name, (outcome, why) in outcomes.items():
            if outcome == "skipped":
                self.results[name].update(skipped=True, msg=why)
        applied = [n for n in names if self.results[n].get("applied_commit")]
        push_failed = None
        if "git_push" in self.steps and (applied or "exec" not in self.steps):
            pushed, push_failed = self.push(applied)
            if push_failed:
                why, todo = engine.lost_push(push_failed, self.commit, self.detached_at)
                done = (f"Commit {self.commit} was applied to {', '.join(applied)} but was not pushed"
                        f"{f': {why}' if why else ''}. " if applied else "")
                self.fail_all(applied or names, f"git push failed: {push_failed}. {done}The run locks of the "
                              "stacks applied stay held so nobody applies the upstream over them. What to do: "
                              f"{todo}: it applies what is then checked out, pushes it and releases the locks.",
                              False, "git_push")
            else:
                for name in applied:
                    self.results[name]["push"] = pushed
        for name in names:
            result = self.results[name]
            # Released: stacks that succeeded, were skipped, or were refused at
            # render (the checkout moved) or exec (a policy or a stale plan):
            # nothing applied. Kept: a failed
            # exec, an applied commit not pushed, a lock someone else holds.
            refused_early = result.get("refused") and result.get("failed_step") in ("render", "exec")
            nothing_applied = result.get("skipped") or refused_early
            if "unlock_any" in self.steps:
                self.merge_phase(name, self.engine_run(name, ["unlock_any"]))
            elif "unlock" in self.steps and (nothing_applied or not result.get("failed")):
                self.merge_phase(name, self.engine_run(name, ["unlock"]))
        return self.finish()

    def pushing(self):
        return engine.changes_infrastructure(self.command)

    def finish(self):
        p = self.params
        stale = {}
        if self.command == "plan":
            for name in self.names:
                pending = [d for d in self.graph[name].depends_on
                           if d in self.results and any((self.results[d].get("counts") or {}).values())]
                if pending:
                    stale[name] = pending
                    self.results[name]["stale_inputs"] = pending
                    self.results[name].setdefault("notes", []).append(
                        f"planned with the current outputs of {', '.join(pending)}, whose pending change "
                        "may alter them: plan again once applied")
        rows = []
        for name in self.names:
            result = self.results[name]
            result["outcome"] = outcome_of(result)
            if name in self.reasons:
                result["affected_because"] = self.reasons[name]
            rows.append(result)
        failed = [r for r in rows if r["outcome"] in ("failed", "refused", "skipped")]
        summary = {"stacks": rows, "order": list(self.names), "profile": p["profile"],
                   "selection": p["stack"], "parallelism": p["parallelism"],
                   "changed": any(r.get("changed") for r in rows),
                   "duration": round(time.monotonic() - self.t0, 3) if hasattr(self, "t0") else 0.0,
                   "table": table(rows)}
        if self.reasons or p["stack"] == "affected":
            summary["affected"] = dict(self.reasons)
        if failed:
            summary["failed"] = True
            summary["refused"] = all(r["outcome"] == "refused" for r in failed)
            summary["msg"] = "; ".join(f"{r['stack']}: {r['outcome']}: {r.get('msg', '')}" for r in failed)
        else:
            summary["msg"] = (f"{len(rows)} stack(s) of profile {p['profile']} done" if rows
                              else f"no stack selected ({p['stack']}): nothing to do")
        return engine.redact(summary, engine.secrets_of(p))


def outcome_of(result):
    if result.get("skipped"):
        return "skipped"
    if result.get("failed"):
        return "refused" if result.get("refused") else "failed"
    return "changed" if result.get("changed") else "ok"


def table(rows):
    """The summary table, one line per stack."""
    lines = [f"{'STACK':<20} {'CREATE':>6} {'UPDATE':>6} {'REPLACE':>7} {'DELETE':>6} {'DURATION':>9}  OUTCOME"]
    for row in rows:
        counts = row.get("counts") or {}
        lines.append(f"{row['stack']:<20} " + " ".join(f"{counts.get(k, 0):>{max(6, len(k))}}" for k in COUNTS)
                     + f" {row.get('duration', 0.0):>8.2f}s  {row['outcome']}")
    return lines


def run(params, template, check_mode=False, diff=False, variables=None, fast=False):
    """Runs the steps of `params` over the stacks its `stack` selects (a comma
    list, `all` or `affected`). Raises StackError (a WorkflowError) for bad
    input, before anything runs."""
    return ManyRun(params, template, check_mode=check_mode, diff=diff, variables=variables, fast=fast).run()


# -- drift -----------------------------------------------------------------------
def drift(params, template, profiles, variables=None, report_dir=None):
    """Plans every selected stack x profile with refresh and reports the ones
    whose infrastructure differs from the repository. Needs no lock, and skips
    a stack whose run lock is held (before or after its plan)."""
    repo = os.path.realpath(params["repo_path"] or os.getcwd())
    params = dict(params, repo_path=repo)
    if params["parallelism"] is None or params["parallelism"] < 1:
        raise StackError(f"parallelism must be at least 1, not {params['parallelism']}; nothing was run")
    graph = load_graph(repo, params["stacks_dir"])
    jobs = []
    for profile in profiles:
        try:
            render_utils.validate_name("profile", profile)
        except render_utils.RenderError as exc:
            raise StackError(f"{exc}; nothing was run") from exc
        if params["stack"] == "affected":
            names = list(affected(graph, repo, profile, params["stacks_dir"], params["profiles_dir"],
                                  since=params["since"], remote=params["push_remote"], fetch=params["fetch"]))
        else:
            names = parse_selection(params["stack"], graph)
        jobs.extend((name, profile) for name in order(graph, names))
    template = serialised(template)
    backend = engine.Workflow(dict(params, stack=jobs[0][0], profile=jobs[0][1]), template).backend() if jobs else None
    started = time.monotonic()
    rows = {}

    def check(job):
        name, profile = job
        row = {"stack": name, "profile": profile, "resources": [], "outside": []}
        rows[job] = row
        t0 = time.monotonic()
        try:
            row.update(_drift_one(graph, name, dict(params, stack=name, profile=profile), template,
                                  variables, backend))
        except (StackError, engine.WorkflowError, tofu_utils.TofuError, run_lock.LockError,
                git_utils.GitError) as exc:
            row.update(status="error", msg=str(exc))
        row["duration"] = round(time.monotonic() - t0, 3)
        return ("ok", "")
    schedule(jobs, {job: [] for job in jobs}, check, params["parallelism"])
    report = {"stacks": [rows[job] for job in jobs], "duration": round(time.monotonic() - started, 3),
              "generated": run_lock.format_time(run_lock.utc_now())}
    report["drift"] = [f"{r['stack']}/{r['profile']}" for r in report["stacks"] if r["status"] == "drift"]
    report["table"] = drift_table(report["stacks"])
    report["files"] = write_report(report, report_dir or os.path.join(repo, DRIFT_REPORT))
    return engine.redact(report, engine.secrets_of(params))


def _drift_one(graph, name, params, template, variables, backend):
    held = backend.read(name, params["profile"])
    if held:
        return {"status": "locked", "msg": f"not planned: {run_lock.describe_holder(held)}"}
    extra = dependency_outputs(graph, name, params, planning=True)
    result = engine.run(dict(params, steps=["render"], vars=render_utils.deep_merge(params["vars"] or {}, extra)),
                        template, variables=variables, fast=True)
    if result.get("failed"):
        return {"status": "error", "msg": result["msg"]}
    options = {k: v for k, v in (params["tofu_options"] or {}).items() if k != "lock"}
    tofu = tofu_utils.Tofu(result["dest"], binary=params["binary"], workspace=params["workspace"],
                           variables=params["variables"], var_files=params["var_files"], lock=False, **options)
    tofu.ensure_init()
    handle, planfile = tempfile.mkstemp(prefix="guardrail-drift-", suffix=".tfplan")
    os.close(handle)
    try:
        tofu.plan(planfile)
        plan = tofu.show_plan(planfile)
    finally:
        os.unlink(planfile)
    if backend.read(name, params["profile"]):
        return {"status": "locked", "msg": "not reported: a run took the lock while the plan ran"}
    summary = tofu_utils.summarize(plan, tofu.secrets)
    outside = sorted({d.get("address") for d in plan.get("resource_drift") or []
                      if tofu_utils.action_kind((d.get("change") or {}).get("actions")) not in ("no-op", "read")})
    resources = [{"address": r["address"], "action": r["action"]} for r in summary["resources"]]
    drifted = bool(resources or outside or summary["outputs_changed"])
    return {"status": "drift" if drifted else "clean", "resources": resources, "outside": outside,
            "counts": summary["counts"], "outputs_changed": summary["outputs_changed"],
            "msg": f"{len(resources)} resource change(s) planned, {len(outside)} changed outside tofu"
                   if drifted else "matches the repository"}


def drift_table(rows):
    lines = [f"{'STACK':<20} {'PROFILE':<12} {'STATUS':<7} RESOURCES"]
    for row in rows:
        concerned = ", ".join(sorted({r["address"] for r in row["resources"]} | set(row["outside"])))
        lines.append(f"{row['stack']:<20} {row['profile']:<12} {row['status']:<7} "
                     f"{concerned or row.get('msg', '')}")
    return lines


def write_report(report, directory):
    """drift.json and drift.html in `directory`; returns their paths."""
    import html  # pylint: disable=import-outside-toplevel

    os.makedirs(directory, exist_ok=True)
    paths = {"json": os.path.join(directory, "drift.json"), "html": os.path.join(directory, "drift.html")}
    body = []
    for row in report["stacks"]:
        items = "".join(f"<li><code>{html.escape(r['address'])}</code> {html.escape(r['action'])}</li>"
                        for r in row["resources"])
        items += "".join(f"<li><code>{html.escape(a)}</code> changed outside tofu</li>" for a in row["outside"])
        body.append(f"<tr class=\"{html.escape(row['status'])}\"><td>{html.escape(row['stack'])}</td>"
                    f"<td>{html.escape(row['profile'])}</td><td>{html.escape(row['status'])}</td>"
                    f"<td><ul>{items}</ul>{html.escape(row.get('msg', ''))}</td></tr>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Drift report</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;vertical-align:top}.drift{background:#fde2e2}.clean{background:#e3f6e3}"
            ".locked,.error{background:#fff4d6}</style></head><body>"
            f"<h1>Drift report</h1><p>Generated {html.escape(report['generated'])}: "
            f"{len(report['drift'])} of {len(report['stacks'])} stack(s) drifted.</p>"
            "<table><tr><th>Stack</th><th>Profile</th><th>Status</th><th>Resources</th></tr>"
            + "".join(body) + "</table></body></html>\n")
    for kind, text in (("json", json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"), ("html", page)):
        write_atomic(paths[kind], text)
    return paths
