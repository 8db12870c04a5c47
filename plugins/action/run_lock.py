# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs guardrail.ecs.run_lock with the identity of the AWX/Tower job.

AWX passes the launching user and the job id as extra vars, which a module
never sees; this plugin reads them on the controller and hands them to the
module as owner, run_id and job_id. Outside a job the run is the
ansible-playbook process: its pid is recorded (the run has ended once it is
gone) and the run id stays the same for all tasks of that process. It also
defaults repo_path to the controller's working directory, where
ansible-playbook was started in the stack repository.
"""
from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow.run_lock import (
    controller_run_id,
    default_identity,
    job_id,
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        job = job_id(task_vars)
        # The worker running this task is a child of the ansible-playbook process.
        playbook_pid = os.getppid()
        if not args.get("owner") or not args.get("run_id"):
            owner, run_id = default_identity(task_vars or {})
            args["owner"] = args.get("owner") or owner
            args["run_id"] = args.get("run_id") or (run_id if job else controller_run_id(playbook_pid))
        if job:
            args.setdefault("job_id", job)
        else:
            args.setdefault("pid", playbook_pid)
        if args.get("backend", "git") == "git" and not args.get("repo_path"):
            args["repo_path"] = os.getcwd()
        result.update(self._execute_module(module_name="guardrail.ecs.run_lock", module_args=args,
                                           task_vars=task_vars))
        return result
