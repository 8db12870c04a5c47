# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Saved plans: `plan` keeps the plan file in the project directory and
returns a plan_id; `apply` with that plan_id applies exactly that plan.

A plan may hold secrets: it is written mode 0600 under PLANS_DIR inside the
(git-ignored) rendered directory and never leaves it. Its plan_id is derived
from the plan file, the commit it was made from, the stack and the profile,
so a plan made from another commit or (stack, profile) is refused before
tofu runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import time

from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import write_atomic
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as tofu_utils

PLANS_DIR = ".guardrail-plans"
PLAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
# Plans kept per project directory; older ones are removed when a new one is saved.
KEEP = 10


class PlanRefused(Exception):
    """The saved plan cannot be applied; nothing was run."""


def plan_id_of(planfile, commit, stack, profile, render_digest=None):
    digest = hashlib.sha256()
    with open(planfile, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    for part in (commit or "", stack or "", profile or "") + ((render_digest,) if render_digest else ()):
        digest.update(b"\0" + part.encode("utf-8"))
    return digest.hexdigest()[:16]


def plans_dir(project_path, create=False):
    """The plan store of `project_path`: a real directory inside it, mode
    0700 (made so when `create`). PlanRefused when it is a symlink or
    anything else that would put plans (which hold secrets) elsewhere."""
    path = os.path.join(project_path, PLANS_DIR)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return path
        os.mkdir(path, 0o700)
        info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or os.path.realpath(path) != os.path.join(
            os.path.realpath(project_path), PLANS_DIR):
        raise PlanRefused(f"{path} is a symlink or not a directory: saved plans hold secrets and are kept "
                          "only in a directory of their own inside the rendered directory; remove it. "
                          "Nothing was planned or applied")
    if create and stat.S_IMODE(info.st_mode) != 0o700:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(descriptor, 0o700)
        finally:
            os.close(descriptor)
    return path


def paths(project_path, plan_id):
    base = os.path.join(plans_dir(project_path), plan_id)  # refuses a foreign store
    return base + ".tfplan", base + ".json"


def summary_lines(resources, counts):
    """Human summary: one line per resource change, then the counts."""
    lines = [f"  {r['action']:<8} {r['address']}" for r in resources]
    lines.append("Plan: " + ", ".join(f"{counts.get(k, 0)} to {k}"
                                      for k in ("create", "update", "replace", "delete")))
    return lines


def _prune(directory, keep=KEEP):
    plans = sorted((os.path.getmtime(os.path.join(directory, n)), n)
                   for n in os.listdir(directory) if n.endswith(".tfplan"))
    for _mtime, name in plans[:-keep] if len(plans) > keep else []:
        for suffix in (".tfplan", ".json"):
            try:
                os.unlink(os.path.join(directory, name[:-len(".tfplan")] + suffix))
            except FileNotFoundError:
                pass


def save(tofu, commit=None, stack=None, profile=None, destroy=False, render_digest=None):
    """Plans with `tofu` (a tofu_utils.Tofu), keeps the plan file and returns
    {"plan_id", "summary", "changed", "counts", "resources", "outputs_changed"}.
    `render_digest`: the digest of the rendered files when the run that plans
    rendered them from committed content (the workflow's render step)."""
    directory = plans_dir(tofu.project_path, create=True)
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".new-", suffix=".tfplan")
    os.close(handle)
    try:
        os.chmod(tmp, 0o600)
        tofu.ensure_init()
        before = len(tofu.log)
        tofu.plan(tmp, destroy=destroy)
        planned = "".join(entry["stdout"] for entry in tofu.log[before:])
        os.chmod(tmp, 0o600)
        plan = tofu.show_plan(tmp)
        if tofu.plan_check is not None:
            tofu.plan_check(plan)
        shown = tofu_utils.summarize(plan, tofu.secrets)
        # tofu's own human plan, for a reviewer; masked once summarize has
        # told which values are sensitive.
        shown["plan_text"] = tofu._masked(planned).strip("\n") + "\n"
        plan_id = plan_id_of(tmp, commit, stack, profile, render_digest)
        planfile, metafile = paths(tofu.project_path, plan_id)
        meta = {"plan_id": plan_id, "commit": commit, "stack": stack, "profile": profile,
                "render_digest": render_digest,
                "destroy": destroy, "changed": shown["changed"], "created": int(time.time()), "counts": shown["counts"],
                "resources": [{"address": r["address"], "action": r["action"]}
                              for r in shown["resources"]]}
        write_atomic(metafile, json.dumps(meta, sort_keys=True), 0o600)
        os.replace(tmp, planfile)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _prune(directory)
    shown.update(plan_id=plan_id, summary=summary_lines(meta["resources"], meta["counts"]))
    return shown


def check(project_path, plan_id, commit=None, stack=None, profile=None, render_digest=None,
          require_render=False):
    """The saved plan's metadata when it may be applied from `commit` to
    (stack, profile); PlanRefused saying why otherwise. `require_render`
    (the workflow): only a plan made by a run that rendered committed content
    is accepted, and, given `render_digest`, only while the rendered files
    are those it was made from."""
    if not isinstance(plan_id, str) or not PLAN_ID_RE.match(plan_id):
        raise PlanRefused(f"plan_id {plan_id!r} is not a plan id (16 hexadecimal digits, as "
                          "plan returns it); nothing was applied")
    planfile, metafile = paths(project_path, plan_id)
    try:
        with open(metafile, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        meta = None
    if meta is None or not os.path.isfile(planfile):
        elsewhere = _made_elsewhere(project_path, plan_id)
        if elsewhere:
            raise PlanRefused(f"plan {plan_id} was made for {elsewhere}, not {stack}/{profile}: run "
                              f"plan for {stack}/{profile}; nothing was applied")
        raise PlanRefused(f"no saved plan {plan_id} in {project_path} (never made here, or already "
                          "applied): run plan again; nothing was applied")
    if (meta.get("stack"), meta.get("profile")) != (stack, profile):
        raise PlanRefused(f"plan {plan_id} was made for {meta.get('stack')}/{meta.get('profile')}, "
                          f"not {stack}/{profile}: run plan for {stack}/{profile}; nothing was applied")
    if meta.get("commit") != commit:
        raise PlanRefused(f"plan {plan_id} was made from commit {meta.get('commit')}, but "
                          f"{commit} is checked out now: run plan again on this commit; "
                          "nothing was applied")
    if plan_id_of(planfile, commit, stack, profile, meta.get("render_digest")) != plan_id:
        raise PlanRefused(f"plan file of {plan_id} no longer matches its id (changed since it was "
                          "saved): run plan again; nothing was applied")
    if require_render and not meta.get("render_digest"):
        raise PlanRefused(f"plan {plan_id} was not made by the workflow from committed content (it was "
                          "planned without the render step, from whatever the rendered directory held): "
                          "run plan with the render step; nothing was applied")
    if require_render and render_digest and render_digest != meta["render_digest"]:
        raise PlanRefused(f"plan {plan_id} was made from other rendered files than the committed render "
                          "now in place: run plan again; nothing was applied")
    return meta


def _made_elsewhere(project_path, plan_id):
    """"stack/profile" of the plan `plan_id` saved in a sibling rendered
    directory (.dist/PROFILE/STACK), or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(project_path)))
    try:
        profiles = os.listdir(root)
    except OSError:
        return None
    for profile in profiles:
        try:
            stacks = os.listdir(os.path.join(root, profile))
        except OSError:
            continue
        for stack in stacks:
            try:
                with open(paths(os.path.join(root, profile, stack), plan_id)[1], encoding="utf-8") as handle:
                    meta = json.load(handle)
            except (OSError, ValueError, PlanRefused):
                continue
            return f"{meta.get('stack')}/{meta.get('profile')}"
    return None


def apply(tofu, plan_id, commit=None, stack=None, profile=None, render_digest=None, require_render=False):
    """Applies exactly the saved plan `plan_id` and removes it. PlanRefused
    when it does not exist, was made from another commit, (stack, profile)
    or render (see check), or tofu finds it stale."""
    meta = check(tofu.project_path, plan_id, commit, stack, profile, render_digest, require_render)
    planfile, metafile = paths(tofu.project_path, plan_id)
    tofu.ensure_init()
    if tofu.plan_check is not None:
        # The allow list is the applying run's, so the saved plan is checked again.
        tofu.plan_check(tofu.show_plan(planfile))
    try:
        outputs = tofu.apply_plan(planfile)
    except tofu_utils.TofuError as exc:
        if not exc.interrupted and "stale" in f"{exc} {exc.stderr} {exc.stdout}".lower():
            for path in (planfile, metafile):
                os.unlink(path)
            raise PlanRefused(f"plan {plan_id} is stale: the state changed since it was made "
                              f"(tofu refused it and applied nothing); run plan again") from exc
        raise
    for path in (planfile, metafile):
        os.unlink(path)
    if outputs is None:
        outputs = tofu.outputs()
    tofu.remember_sensitive(outputs)
    counts = meta.get("counts") or {}
    return {"changed": bool(meta.get("changed", any(counts.values()))), "applied": True, "plan_id": plan_id,
            "counts": counts, "resources": meta.get("resources") or [],
            "summary": summary_lines(meta.get("resources") or [], counts), "outputs_raw": outputs}


def apply_once(tofu):
    """Plans and applies in one tofu invocation (`apply -json -auto-approve`),
    reading the change from its event stream: the fast path for an apply
    nobody reviews first. Returns the result apply() returns (no plan_id)."""
    tofu.ensure_init()
    args = ["apply", "-json", "-auto-approve", *tofu._common(), *tofu.change_options()]
    proc = tofu.run(*args, check=False)
    counts = {"create": 0, "update": 0, "delete": 0, "replace": 0}
    resources = []
    outputs_changed = []

    def planned(event):
        if event.get("type") == "planned_change":
            change = event.get("change") or {}
            action = change.get("action")
            if action in counts:
                counts[action] += 1
                resources.append({"address": (change.get("resource") or {}).get("addr"), "action": action})
        elif event.get("type") == "outputs":
            # The planned output changes, before apply: an output added,
            # changed or removed changes no resource but is applied all the same.
            actions = tofu_utils.planned_output_actions(event)
            outputs_changed.extend(sorted(name for name, action in actions.items() if action != "noop"))

    proc.log_entry["stdout"], errors, outputs = tofu_utils._json_messages(proc.stdout, on_event=planned)
    if outputs is not None:
        tofu.remember_sensitive(outputs)
    if proc.returncode != 0:
        raise tofu.apply_error(proc, errors, proc.args)
    if outputs is None:
        outputs = tofu.outputs()
    changed = any(counts.values()) or bool(outputs_changed)
    return {"changed": changed, "applied": changed, "counts": counts, "resources": resources,
            "outputs_changed": outputs_changed,
            "summary": summary_lines(resources, counts) if resources else [], "outputs_raw": outputs}
