#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: git_push
short_description: Push the current branch to its upstream, never with force
version_added: 0.1.0
description:
  - Compares the current branch with its upstream branch as the remote has it now, then
    pushes the new commits. Nothing to push is C(changed=false).
  - Refuses, pushing nothing, when the branch is behind or has diverged from the
    remote, when HEAD is detached, or when the branch has no upstream. It never forces.
options:
  repo_path:
    description: The clone whose current branch is pushed.
    type: path
    required: true
  remote:
    description:
      - The remote to push to, to the branch that the upstream names.
      - Defaults to the remote of the branch's upstream.
    type: str
  timeout:
    description: Seconds each git command may take, the push included.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
    description: Reports whether there is something to push, and refuses as it would; pushes nothing.
  diff_mode:
    support: none
    description: The pushed range is returned instead of a diff.
seealso:
  - module: guardrail.ecs.git_check
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
"""

EXAMPLES = r"""
- name: Push the applied change
  guardrail.ecs.git_push:
    repo_path: "{{ playbook_dir }}"
  register: pushed

- name: Report it
  ansible.builtin.debug:
    msg: "pushed {{ pushed.commits }} commit(s): {{ pushed.range }}"
  when: pushed is changed
"""

RETURN = r"""
branch:
  description: The branch pushed.
  returned: success
  type: str
  sample: main
upstream:
  description: Where it was pushed, as remote/branch.
  returned: success
  type: str
  sample: origin/main
range:
  description:
    - The pushed range C(<old>..<new>); empty when there was nothing to push;
      the new commit alone when the remote branch did not exist.
  returned: success
  type: str
  sample: 1b2c3d4e5f60718293a4b5c6d7e8f90123456789..5d41402abc4b2a76b9719d911017c592ae2b3c11
commits:
  description: How many commits were pushed (would be, in check mode).
  returned: success
  type: int
  sample: 1
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.common.git import GitError, push


def main():
    module = AnsibleModule(
        argument_spec=dict(
            repo_path=dict(type="path", required=True),
            remote=dict(type="str"),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = push(params["repo_path"], remote=params["remote"], check_mode=module.check_mode,
                      timeout=params["timeout"])
    except GitError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
