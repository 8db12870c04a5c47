# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side: loads the role's catalogue files and resolves their parameters, merges site
controls and overrides into the catalogue, validates it and picks the controls of a run (no remote
execution)."""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import (
    BENCHMARKS,
    CatalogueError,
    extend,
    rule_variable,
    select,
)
from ansible_collections.guardrail.ecs.plugins.plugin_utils import cis_catalogue


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("catalogue", "catalogue_dir", "benchmark", "level", "extra", "overrides"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = self._task.args
        missing = [k for k in ("benchmark", "level") if k not in args]
        if ("catalogue" in args) == ("catalogue_dir" in args):
            missing.append("one of catalogue or catalogue_dir")
        if missing:
            raise AnsibleActionFail("cis_plan needs %s" % ", ".join(missing))
        benchmark = str(args["benchmark"])
        if benchmark not in BENCHMARKS:
            raise AnsibleActionFail("benchmark must be one of %s, not %r" % (", ".join(BENCHMARKS), benchmark))
        try:
            if "catalogue_dir" in args:
                rows = cis_catalogue.resolve(cis_catalogue.load(str(args["catalogue_dir"]), benchmark),
                                             lambda name: self._variable(task_vars, name))
            else:
                rows = args["catalogue"]
            catalogue = extend(rows, args.get("extra"), args.get("overrides"), benchmark)
        except CatalogueError as exc:
            raise AnsibleActionFail(str(exc))
        toggles = {}
        for entry in catalogue:
            ids = entry.get("id")
            control_id = ids.get(benchmark) if isinstance(ids, dict) else ids
            if not control_id:
                continue
            name = rule_variable(str(control_id))
            if name in task_vars:
                value = self._templar.template(task_vars[name])
                try:
                    toggles[str(control_id)] = boolean(value, strict=True)
                except TypeError:
                    raise AnsibleActionFail("%s must be true or false, not %r" % (name, value))
        try:
            plan = select(catalogue, benchmark, args["level"], toggles,
                          task_vars.get("ansible_run_tags"), task_vars.get("ansible_skip_tags"))
        except CatalogueError as exc:
            raise AnsibleActionFail(str(exc))
        result.update(plan)
        result["benchmark"] = dict(BENCHMARKS[benchmark], id=benchmark)
        result["changed"] = False
        result["selected"] = len(plan["controls"])
        return result

    def _variable(self, task_vars, name):
        if name not in task_vars:
            raise KeyError(name)
        return self._templar.template(task_vars[name])
