# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: run_lock
short_description: The run lock record of a stack and profile, or every lock of a backend
version_added: 0.1.0
description:
  - Reads the run lock that M(guardrail.ecs.run_lock) keeps for O(stack) and O(profile)
    and returns its record, or an empty dict when nobody holds it.
  - Without O(stack) and O(profile), returns every lock of the backend, each with its owner,
    run, state (C(running), C(failed), C(interrupted)), C(age_seconds), C(ended) and C(stale) (older than O(ttl)).
  - For messages and conditions in plays, for example to tell who is running a change.
extends_documentation_fragment:
  - guardrail.ecs.aws
options:
  stack:
    description:
      - The stack module the lock belongs to, for example C(alpha).
      - A comma list (V(network,cluster)), V(all) (every stack under C(stacks/) in O(repo_path)) or
        V(affected) (the stacks whose committed inputs changed since the commit last applied to them,
        as the workflow selects them) returns one dictionary of V(stack) to lock record (V({}) when free).
      - Leave O(stack) and O(profile) out to list every lock of the backend.
    type: str
  profile:
    description:
      - The profile of the stack the lock belongs to, for example C(prod).
      - This is the lock's profile; the AWS named profile is O(aws_profile).
    type: str
  ttl:
    description: When listing, age in seconds after which a lock is reported as C(stale).
    type: int
  backend:
    description: Where the lock is kept.
    type: str
    choices: [git, dynamodb, s3]
    default: git
  repo_path:
    description:
      - O(backend=git) only. A clone of the repository whose remote keeps the lock.
      - Defaults to the controller's working directory.
    type: path
  remote:
    description: O(backend=git) only. The git remote that keeps the lock tag.
    type: str
    default: origin
  table:
    description: O(backend=dynamodb) only. The DynamoDB table.
    type: str
  bucket:
    description: O(backend=s3) only. The S3 bucket.
    type: str
  key:
    description:
      - The DynamoDB C(LockID), or the S3 object key to which C(.tflock) is appended.
      - Defaults to C(guardrail/<stack>/<profile>).
    type: str
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
"""

EXAMPLES = r"""
- name: Tell who holds the lock of alpha/prod
  ansible.builtin.debug:
    msg: >-
      {{ lock.owner ~ ' has held alpha/prod since ' ~ lock.created ~ ' (run ' ~ lock.run_id ~ ')'
         if lock else 'alpha/prod is free' }}
  vars:
    lock: "{{ lookup('guardrail.ecs.run_lock', stack='alpha', profile='prod', repo_path=playbook_dir) }}"

- name: List every held lock of the stack repository's remote
  ansible.builtin.debug:
    msg: "{{ item.stack }}/{{ item.profile }}: {{ item.owner }} run {{ item.run_id }}, {{ item.state }}, {{ item.age_seconds }}s"
  loop: "{{ lookup('guardrail.ecs.run_lock', repo_path=playbook_dir, ttl=86400, wantlist=true) }}"

- name: Tell who holds the lock of each stack in prod
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.owner | default('free') }}"
  loop: "{{ lookup('guardrail.ecs.run_lock', stack='all', profile='prod', repo_path=playbook_dir) | dict2items }}"

- name: Stop unless the DynamoDB lock is free
  ansible.builtin.assert:
    that: lookup('guardrail.ecs.run_lock', stack='alpha', profile='prod', backend='dynamodb', table='tofu-locks') == {}
    fail_msg: alpha/prod is locked
"""

RETURN = r"""
_raw:
  description:
    - The lock record (owner, run_id, host, pid or job_id, created, state, operation, message, stack,
      profile, version, id), or an empty dict when the lock is free.
    - Without O(stack) and O(profile), one such record per held lock, with C(age_seconds), C(ended),
      C(ended_reason) and C(stale).
    - With several stacks selected, one dictionary of stack name to record (V({}) when free).
  type: list
  elements: dict
"""

import os

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

from ansible_collections.guardrail.ecs.plugins.module_utils.common import aws
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow.run_lock import LockError, get_backend
from ansible_collections.guardrail.ecs.plugins.plugin_utils import stacks


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleError("the run_lock lookup takes no terms: pass stack= and profile=")
        self.set_options(var_options=variables, direct=kwargs)
        options = aws.aws_options({name: self.get_option(name) for name in aws.AWS_ARGUMENT_SPEC})
        try:
            backend = get_backend(self.get_option("backend"), repo_path=self.get_option("repo_path") or os.getcwd(),
                                  remote=self.get_option("remote"), table=self.get_option("table"),
                                  key=self.get_option("key"), bucket=self.get_option("bucket"), **options)
            stack, profile = self.get_option("stack"), self.get_option("profile")
            if stack is None and profile is None:
                return backend.list_locks(ttl=self.get_option("ttl"))
            if stack is None or profile is None:
                raise LockError("pass both stack= and profile=, or neither to list every lock")
            if stacks.selects_many(stack):
                repo = self.get_option("repo_path") or os.getcwd()
                graph = stacks.load_graph(repo)
                names = (list(stacks.affected(graph, repo, profile)) if stack == "affected"
                         else stacks.parse_selection(stack, graph))
                return [{name: backend.read(name, profile) or {} for name in stacks.order(graph, names)}]
            record = backend.read(stack, profile)
        except (LockError, stacks.StackError) as exc:
            raise AnsibleError(f"run_lock lookup: {exc}") from exc
        return [record or {}]
