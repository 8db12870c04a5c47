#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: run_lock
short_description: Take, release, break or read the run lock of a stack and profile
version_added: 0.1.0
description:
  - Keeps one lock per O(stack) and O(profile), so only one change runs against
    a stack's profile at a time. The lock is held by one run (O(owner), O(run_id), host and
    process or AWX job). The same run may acquire it again (C(changed=false)); any other
    run is refused, even one of the same owner, and the error names the holding run's
    owner, run id, host, process, time, state, operation and message.
  - The same owner may take over a lock whose run has ended (state C(failed) or
    C(interrupted), or its process is gone on this host), only with O(takeover=true);
    RV(lock.taken_over) then holds the record it replaced.
  - The lock lives on a git remote (a tag object under the ref C(refs/guardrail/locks/<stack>/<profile>),
    which ordinary fetches and C(git push --tags) do not carry),
    in a DynamoDB table in OpenTofu's lock item layout, or as an S3 object C(<key>.tflock)
    written with C(If-None-Match) like OpenTofu's S3-native lock.
  - A lock older than O(ttl) is reported as stale, never broken silently; use O(state=absent) to break it.
  - O(state=query) without O(stack) and O(profile) lists every lock of the backend (RV(locks)).
  - An action plugin runs in front of this module. It fills O(owner) and O(run_id)
    from the AWX or Tower job (C(awx_user_name)/C(tower_user_name) and
    C(awx_job_id)/C(tower_job_id)) and O(repo_path) with the controller's working directory.
    Outside a job, O(run_id) defaults to one id for the whole C(ansible-playbook) run, so a
    lock taken in one task is released by a later task of the same run.
extends_documentation_fragment:
  - guardrail.ecs.aws
options:
  stack:
    description:
      - The stack module the lock belongs to, for example C(alpha).
      - 1 to 64 letters, digits, C(.), C(_) or C(-), starting with a letter or digit, without C(..),
        not ending in C(.) or C(.lock). The same rule holds for M(guardrail.ecs.render) and M(guardrail.ecs.workflow).
      - Required unless O(state=query), which without O(stack) and O(profile) lists every lock.
    type: str
  profile:
    description:
      - The profile of the stack the lock belongs to, for example C(prod). Same rules as O(stack).
      - This is the lock's profile, not an AWS profile; the AWS named profile is O(aws_profile).
    type: str
  state:
    description:
      - V(acquired) takes the lock, V(released) gives it back (only the run that holds it may),
        V(absent) removes it whoever holds it (RV(lock) is the record broken), V(query) reads it
        or, without O(stack) and O(profile), lists every lock of the backend.
    type: str
    choices: [acquired, released, absent, query]
    default: acquired
  backend:
    description:
      - Where the lock is kept.
    type: str
    choices: [git, dynamodb, s3]
    default: git
  owner:
    description:
      - Who takes or releases the lock.
      - Defaults to the AWX/Tower user who launched the job, otherwise C(user@host) of the controller.
    type: str
  run_id:
    description:
      - Identifies this run in the lock record.
      - Defaults to the AWX/Tower job id, otherwise an id of the C(ansible-playbook) run.
      - O(state=released) releases the lock only if this run (O(owner) and O(run_id)) holds it.
    type: str
  takeover:
    description:
      - With O(state=acquired), take over a lock held by a run of the same O(owner) that has ended
        (state C(failed) or C(interrupted), or its process is gone on this host).
      - A live run's lock is never taken over; another owner's lock is broken with O(state=absent).
    type: bool
    default: false
  lock_timeout:
    description:
      - With O(state=acquired), seconds to wait for another run to release the lock before refusing.
    type: int
    default: 0
  pid:
    description:
      - The process whose end ends the run, recorded in the lock.
      - Set by the action plugin to the C(ansible-playbook) process; inside an AWX/Tower job the job id is recorded instead.
    type: int
  job_id:
    description:
      - The AWX/Tower job of the run, recorded in the lock instead of a process. Set by the action plugin.
    type: str
  operation:
    description:
      - The operation recorded in the lock, shown to whoever is refused.
    type: str
    default: apply
  lock_message:
    description:
      - A free text recorded in the lock as its C(message), shown to whoever is refused.
    type: str
    default: ''
  ttl:
    description:
      - Age in seconds after which the lock is reported as stale (RV(stale)).
      - A stale lock is still held; nothing is broken automatically.
    type: int
  repo_path:
    description:
      - O(backend=git) only. A clone of the repository whose remote keeps the lock.
      - Defaults to the controller's working directory.
    type: path
  remote:
    description:
      - O(backend=git) only. The git remote (name, URL or path) that keeps the lock tag.
    type: str
    default: origin
  table:
    description:
      - O(backend=dynamodb) only. The DynamoDB table, with the string hash key C(LockID), as OpenTofu uses for state locks.
    type: str
  bucket:
    description:
      - O(backend=s3) only. The S3 bucket that keeps the lock object.
    type: str
  key:
    description:
      - O(backend=dynamodb) the C(LockID) of the item; O(backend=s3) the object key, to which C(.tflock) is appended.
      - Defaults to C(guardrail/<stack>/<profile>), which cannot clash with OpenTofu's own state lock ids.
    type: str
notes:
  - In this module O(profile) is the lock's profile. In C(module_defaults) for
    C(group/guardrail.ecs.aws), name the AWS profile C(aws_profile).
  - The git backend creates no local ref; it pushes a tag object to C(refs/guardrail/locks/<stack>/<profile>)
    with a lease (the ref must not exist). State changes and releases carry a lease on
    the object id read, so a race never changes or deletes another run's lock. The clone
    keeps the id of the object it pushed under C(.git/guardrail-lock/), so that the
    release needs no extra round trip; the remote stays the only truth.
  - Every write is a compare-and-swap on the lock as read (git lease, DynamoDB condition on C(Info),
    S3 C(If-Match) on the ETag).
attributes:
  check_mode:
    support: full
    description: Reports whether the lock would be acquired, released or removed, or would be refused; writes nothing.
  diff_mode:
    support: full
    description: Shows the lock record before and after.
seealso:
  - module: guardrail.ecs.git_check
  - module: guardrail.ecs.git_push
  - plugin: guardrail.ecs.run_lock
    plugin_type: lookup
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
"""

EXAMPLES = r"""
- name: Take the lock of stack alpha, profile prod, on the stack repository's origin
  guardrail.ecs.run_lock:
    stack: alpha
    profile: prod
    repo_path: "{{ playbook_dir }}"
    lock_message: rotate the database password

- name: Take it in the DynamoDB table OpenTofu already uses for state locks
  guardrail.ecs.run_lock:
    stack: alpha
    profile: prod
    backend: dynamodb
    table: tofu-locks
    region: eu-west-1

- name: Report who holds the S3 lock, and whether it is older than a day
  guardrail.ecs.run_lock:
    stack: alpha
    profile: prod
    state: query
    backend: s3
    bucket: acme-tofu-state
    key: alpha/prod/terraform.tfstate
    ttl: 86400
  register: alpha_lock

- name: Take over the lock a failed run of mine left behind
  guardrail.ecs.run_lock:
    stack: alpha
    profile: prod
    takeover: true
    repo_path: "{{ playbook_dir }}"
  register: alpha_lock

- name: List every lock held in the DynamoDB table, with owner, run, state and age
  guardrail.ecs.run_lock:
    state: query
    backend: dynamodb
    table: tofu-locks
    region: eu-west-1
    ttl: 86400
  register: all_locks

- name: Give the lock back
  guardrail.ecs.run_lock:
    stack: alpha
    profile: prod
    state: released
    repo_path: "{{ playbook_dir }}"

- name: Break a lock a colleague forgot, whoever holds it
  guardrail.ecs.run_lock:
    stack: alpha
    profile: prod
    state: absent
    repo_path: "{{ playbook_dir }}"
"""

RETURN = r"""
lock:
  description:
    - The lock record. For V(acquired) the lock now held (the existing one if this run already held it),
      for V(released) and V(absent) the record removed, for V(query) the current one.
    - Empty when there is no lock. On refusal, the holder's record.
  returned: always
  type: dict
  sample:
    owner: alice@ctl1
    run_id: "4711"
    host: ctl1
    created: "2026-03-01T10:15:00.123456Z"
    operation: apply
    message: rotate the database password
    stack: alpha
    profile: prod
    version: 0.1.0
    id: 0f8f5c1e-5c63-4a4e-9d1b-8d7b8f6f2a10
    pid: 4242
    state: running
    detail: ""
    updated: "2026-03-01T10:15:00.123456Z"
  contains:
    state:
      description: The run's state, V(running), V(failed) or V(interrupted).
      type: str
    taken_over:
      description: With O(takeover=true), the record of the ended run whose lock was taken over.
      type: dict
      returned: when a lock was taken over
locks:
  description:
    - O(state=query) without O(stack) and O(profile) only. Every lock of the backend, each a record
      with C(age_seconds), C(ended) (its run has ended), C(ended_reason) and C(stale) (older than O(ttl)).
  returned: when listing
  type: list
  elements: dict
  sample:
    - owner: alice@ctl1
      run_id: "4711"
      stack: alpha
      profile: prod
      state: failed
      age_seconds: 3600.5
      ended: true
      ended_reason: failed
      stale: false
stale:
  description: Whether the lock is older than O(ttl). Always false without O(ttl).
  returned: always
  type: bool
  sample: false
"""

import copy

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.common import aws
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow.run_lock import (
    BACKENDS,
    LockError,
    LockHeld,
    default_identity,
    get_backend,
    is_stale,
    new_record,
)


def argument_spec():
    spec = copy.deepcopy(aws.AWS_ARGUMENT_SPEC)
    spec.update(
        stack=dict(type="str"),
        profile=dict(type="str"),
        state=dict(type="str", default="acquired", choices=["acquired", "released", "absent", "query"]),
        backend=dict(type="str", default="git", choices=list(BACKENDS)),
        owner=dict(type="str"),
        run_id=dict(type="str"),
        operation=dict(type="str", default="apply"),
        lock_message=dict(type="str", default=""),
        ttl=dict(type="int"),
        takeover=dict(type="bool", default=False),
        lock_timeout=dict(type="int", default=0),
        pid=dict(type="int"),
        job_id=dict(type="str"),
        repo_path=dict(type="path"),
        remote=dict(type="str", default="origin"),
        table=dict(type="str"),
        bucket=dict(type="str"),
        key=dict(type="str", no_log=False),
    )
    return spec


def backend_from(params):
    options = aws.aws_options(params)
    return get_backend(params["backend"], repo_path=params["repo_path"], remote=params["remote"],
                       table=params["table"], key=params["key"], bucket=params["bucket"], **options)


def run(params, check_mode):
    """(result, refusal message or None) for the module's parameters."""
    stack, profile, state = params["stack"], params["profile"], params["state"]
    if state == "query" and stack is None and profile is None:
        locks = backend_from(params).list_locks(ttl=params["ttl"])
        return {"changed": False, "lock": {}, "locks": locks, "stale": any(lock["stale"] for lock in locks),
                "diff": {"before": {}, "after": {}}}, None
    if stack is None or profile is None:
        raise LockError(f"state={state} needs both stack and profile")
    backend = backend_from(params)
    owner, run_id = params["owner"], params["run_id"]
    if not owner or not run_id:
        default_owner, default_run = default_identity()
        owner, run_id = owner or default_owner, run_id or default_run
    before = None
    try:
        if state == "query":
            changed, record = False, backend.read(stack, profile)
            before = record
        elif state == "acquired":
            wanted = new_record(stack, profile, owner, run_id, operation=params["operation"],
                                message=params["lock_message"], pid=params["pid"], job=params["job_id"])
            changed, record = backend.acquire(stack, profile, wanted, check_mode=check_mode,
                                              takeover=params["takeover"], wait=params["lock_timeout"],
                                              ttl=params["ttl"])
            before = record.get("taken_over") if changed else record
        elif state == "released":
            changed, record = backend.release(stack, profile, {"owner": owner, "run_id": run_id},
                                              check_mode=check_mode)
            before, record = record, None
        else:
            changed, record = backend.remove(stack, profile, check_mode=check_mode)
            before, record = record, None
    except LockHeld as exc:
        return {"changed": False, "lock": exc.record, "stale": exc.stale}, str(exc)
    shown = record if state in ("acquired", "query") else before
    result = {"changed": changed, "lock": shown or {}, "stale": is_stale(shown, params["ttl"])}
    result["diff"] = {"before": before or {}, "after": record or {}}
    return result, None


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[["aws_profile", "access_key"], ["aws_profile", "secret_key"]],
        required_together=aws.AWS_REQUIRED_TOGETHER,
        required_if=[["backend", "dynamodb", ["table"]], ["backend", "s3", ["bucket"]],
                     ["backend", "git", ["repo_path"]], ["state", "acquired", ["stack", "profile"]],
                     ["state", "released", ["stack", "profile"]], ["state", "absent", ["stack", "profile"]]],
    )
    try:
        result, refusal = run(module.params, module.check_mode)
    except LockError as exc:
        module.fail_json(msg=str(exc), lock={}, stale=False)
    if refusal:
        module.fail_json(msg=refusal, **result)
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
