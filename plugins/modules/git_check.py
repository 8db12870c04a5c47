#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: git_check
short_description: Refuse to run a change from a clone that is not clean and in step with its upstream
version_added: 0.1.0
description:
  - Compares the current branch with its upstream as the remote holds it now (read with C(git ls-remote),
    not the remote-tracking ref of the last fetch), then fails when the clone has modified,
    staged or untracked (not ignored) files; when the branch is behind or has diverged
    from its upstream; when it is more than O(max_ahead) commits ahead; when it has no upstream; or when
    the upstream branch no longer exists on the remote.
  - The upstream's commits are fetched only when the clone lacks them (to count them).
  - A repository with a single commit is valid.
  - A detached HEAD that is the head of a remote-tracking branch (after a fetch) passes as that branch, up
    to date (an AWX project sync or a CI checkout); the branch compared is returned as RV(detached_at).
  - Reads only; never changes the clone apart from updating remote-tracking refs by a fetch.
options:
  repo_path:
    description: The clone to check.
    type: path
    required: true
  max_ahead:
    description: How many local commits not yet on the upstream are allowed (the change about to be pushed).
    type: int
    default: 1
  allow_detached:
    description:
      - Accept any detached HEAD (for example a CI checkout of a tag); upstream checks are then skipped.
      - Without it a detached HEAD passes only when it is the head of a remote branch.
    type: bool
    default: false
  fetch:
    description:
      - Compare with the upstream as the remote holds it now (reading the remote, and fetching what the clone
        lacks). Without it the comparison uses the remote-tracking ref of the last fetch, and reads no remote.
    type: bool
    default: true
  timeout:
    description: Seconds each git command may take, those reading the remote included.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
    description: Runs the same checks; the check changes nothing anyway.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
seealso:
  - module: guardrail.ecs.git_push
  - module: guardrail.ecs.run_lock
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
"""

EXAMPLES = r"""
- name: Refuse to plan from a dirty or outdated clone of the stack repository
  guardrail.ecs.git_check:
    repo_path: "{{ playbook_dir }}"

- name: Allow two unpushed commits, and read what the check found
  guardrail.ecs.git_check:
    repo_path: "{{ playbook_dir }}"
    max_ahead: 2
  register: clone_state
"""

RETURN = r"""
branch:
  description: The current branch; null when HEAD is detached.
  returned: always
  type: str
  sample: main
head:
  description: The commit id of HEAD; null in a repository without commits.
  returned: always
  type: str
  sample: 5d41402abc4b2a76b9719d911017c592ae2b3c11
upstream:
  description: The upstream of the branch (for a detached HEAD, RV(detached_at)); null when it has none.
  returned: always
  type: str
  sample: origin/main
detached_at:
  description: The remote branch a detached HEAD is the head of, and was compared with; null otherwise.
  returned: always
  type: str
  sample: origin/main
ahead:
  description: Commits on the branch that are not on its upstream.
  returned: always
  type: int
  sample: 1
behind:
  description: Commits on the upstream that are not on the branch.
  returned: always
  type: int
  sample: 0
modified:
  description: Files changed in the work tree but not staged (and unmerged files).
  returned: always
  type: list
  elements: str
  sample: [main.tf]
staged:
  description: Files with staged changes.
  returned: always
  type: list
  elements: str
  sample: []
untracked:
  description: Untracked files that no ignore rule covers.
  returned: always
  type: list
  elements: str
  sample: [notes.txt]
upstream_remote:
  description: The remote the upstream was read from; null when it was not read (O(fetch=false), no upstream,
    a detached HEAD).
  returned: always
  type: str
  sample: origin
  version_added: 0.4.0
upstream_ref:
  description: The upstream branch's ref on that remote; null when it was not read.
  returned: always
  type: str
  sample: refs/heads/main
  version_added: 0.4.0
upstream_commit:
  description: The commit the upstream branch held on the remote when it was read, what RV(ahead) and
    RV(behind) count against; null when it was not read or the branch no longer exists there.
  returned: always
  type: str
  sample: 5d41402abc4b2a76b9719d911017c592ae2b3c11
  version_added: 0.4.0
problems:
  description: One sentence per refusing condition; empty when the clone passes.
  returned: always
  type: list
  elements: str
  sample: ["1 untracked file(s): notes.txt"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.common.git import GitError, check


def main():
    module = AnsibleModule(
        argument_spec=dict(
            repo_path=dict(type="path", required=True),
            max_ahead=dict(type="int", default=1),
            allow_detached=dict(type="bool", default=False),
            fetch=dict(type="bool", default=True),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["max_ahead"] < 0:
        module.fail_json(msg=f"max_ahead must be 0 or more, not {params['max_ahead']}")
    try:
        result = check(params["repo_path"], max_ahead=params["max_ahead"], allow_detached=params["allow_detached"],
                       fetch=params["fetch"], timeout=params["timeout"])
    except GitError as exc:
        module.fail_json(msg=str(exc))
    ok = result.pop("ok")
    if not ok:
        module.fail_json(msg=f"{params['repo_path']} is not ready for a change: " + "; ".join(result["problems"]),
                         **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
