#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin of the same name; this file documents it.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: workflow
short_description: Render, check, lock, run tofu, push and unlock a stack in one task
version_added: 0.1.0
description:
  - Runs, for one stack and profile, an ordered subset of the steps
    V(render), V(git_check), V(lock), V(exec), V(git_push), V(unlock), V(unlock_any), on the controller.
  - Step names are written with underscores or hyphens alike (V(git-check), V(unlock-any)), and
    V(build) is V(render), as in the design the C(guardrail) command's alias comes from.
  - Options that only one part of the run reads are grouped - O(render), O(git), O(lock), O(tofu); the
    top level names the run (O(stack), O(profile), O(steps), O(command), O(repo_path)) and carries the
    AWS options the O(lock) backends V(dynamodb) and V(s3) use. The C(guardrail) command and the Python
    entry point (C(plugins/plugin_utils/api.py)) validate with the same argument spec.
  - Each step runs only if every previous one succeeded. Unknown steps, steps out of that order and
    names or paths escaping the repository are refused before anything runs, as is every problem that
    needs no lock to find - a missing stack or profile, invalid O(tofu.options), a missing var file, a
    missing or unsupported C(tofu)/C(terraform) (OpenTofu 1.6 or Terraform 1.5 and later), boto3
    missing for a DynamoDB or S3 lock - so a refusal leaves nothing locked.
  - V(render) renders C(<stacks_dir>/<stack>/) for the profile into C(.dist/<profile>/<stack>/) as
    M(guardrail.ecs.render) does; the rendered directory is git-ignored (through C(.git/info/exclude)
    when needed), so rendering never dirties the tree. Only committed sources are rendered - the
    stack, the profiles and absolute O(tofu.var_files) inside the repository are checked before any template
    is evaluated (with V(git_check) among the steps the repository must be a git work tree). Render
    removes only files it wrote, never state, plans or C(.terraform/).
  - With V(lock) among the steps, V(render) evaluates the templates where it is listed (a failing
    template or an uncommitted source refuses the run before any lock) and writes the files only once
    the run lock is held, as part of the V(lock) step, so a run refused at the lock has written nothing.
    Without V(lock), V(render) writes at once.
  - V(git_check) refuses modified, staged or untracked files, a branch behind or diverged from its
    upstream, and more than O(git.max_ahead) unpushed commits. When it refuses, no lock is taken and nothing runs.
  - V(lock) takes the run lock of (stack, profile) for O(lock.owner); the same owner may re-enter, anyone
    else is refused and told who holds it, since when and from which run. A run lock that would be
    tofu's own state lock (O(lock.key) on the rendered C(s3) backend's key) is refused once the lock is
    held and the files are rendered, before V(exec), since tofu would wait for it forever; the lock this
    run took is then released and nothing else is changed.
  - V(exec) runs O(command) in the rendered directory. With the lock among the steps, an V(apply) or
    V(destroy) first reads the upstream on the remote again (only it and HEAD when the remote branch still
    holds the commit V(git_check) compared with); a branch now behind it applies nothing and releases
    the lock. When exec fails the lock stays held by this run and nothing is pushed; the message says
    so and how to release the lock.
  - On a timeout, or SIGINT, SIGTERM or SIGHUP of the task (Ctrl-C, a closed SSH session, a cancelled
    job), tofu (in a session of its own) is sent SIGINT and given a grace period to write its state,
    then SIGTERM, then SIGKILL; the lock stays held and is marked interrupted, and the message reports
    what tofu said.
  - tofu writes its output to files, not to pipes of the task, so even a task killed outright (SIGKILL)
    leaves tofu running to its end, saving its state. The run holds a lock file in the git directory
    (C(guardrail-run/<stack>/<profile>.lock)) that tofu inherits, and the run lock records it with the
    host's boot id, the PID namespace, the pid and start time of the task and of tofu; no run takes
    the run lock over while any of them lives, whatever PID namespace it runs in. The next run after
    such a tofu ended takes the lock over, removes the state lock file a killed tofu left
    (C(.terraform.tfstate.lock.info), when no process holds the state), and says so in RV(taken_over).
    With any other backend (C(s3), C(gcs), C(azurerm)...), when tofu then cannot take the state lock,
    exec reads the C(Lock Info) tofu prints; when the lock was taken on this host after that ended run
    began, and its recorded tofu is gone (boot id, PID namespace, pid and start time, or its free lock
    file), exec runs C(tofu force-unlock -force <ID>) once, says so in RV(state_lock_released) and runs
    the command again. A state lock of a live tofu or of anyone else is never released - exec refuses,
    showing the lock's ID, holder and age, gives back the run lock it took, and applies nothing.
  - V(git_push) pushes the current branch to its upstream (never with force), and only after an
    V(apply) or V(destroy) that succeeded in this run (a V(plan) never pushes; without V(exec) among
    the steps the push is what was asked). After an apply it pushes exactly the commit that was
    rendered and applied, and refuses when the checkout moved during the run (exec likewise refuses
    when it moved after render). When the push fails after a successful apply the lock stays held,
    marked failed, and the message names the commit applied and what to do.
    When V(unlock) comes right after V(git_push) and the lock is the C(git) backend's on the remote pushed
    to, the branch, the applied marker and the lock's release go in one atomic C(git push --atomic) (with a
    lease on this run's lock), so the lock is free exactly when the branch has landed. When anything in that
    push is refused, none of it lands, and each is pushed on its own as it would be otherwise (the clone's
    C(pre-push) hook sees the three refs, and runs again for those pushes). The unlock step's message then
    says C(released in the same atomic push as the branch).
    V(unlock) releases the lock of this run (O(lock.owner) and O(lock.run_id)); V(unlock_any) releases the lock
    O(lock.owner) holds on the stack and profile whichever run took it, and refuses a lock of another
    owner (name that owner as O(lock.owner) to release a colleague's lock; the result records it). When
    unlock fails after a successful apply, the message says what was applied and how to release it.
  - The result records every step's outcome and duration. A lock taken and released in the same
    run is no change, so a run that finds nothing to do reports C(changed=false).
  - A stack may name the stacks it depends on in C(<stacks_dir>/<stack>/stack.yml) (C(depends_on),
    C(inputs), C(mock_outputs)). Its templates then see each dependency's outputs, read from the
    dependency's state, as C(dependencies.<name>.outputs); a dependency without state is an error,
    except in a plan when C(mock_outputs) gives stand-ins. Unknown dependencies and cycles are refused
    before anything runs.
  - O(stack) may select several stacks - a comma list, V(all) or V(affected). Git is checked once, every
    stack's own run lock is taken, the upstream is checked again, then the stacks run in dependency order
    (independent ones at once, up to O(parallelism); V(destroy) in reverse order), the branch is pushed
    once and the locks released. A stack that fails stops the stacks depending on it and keeps its lock;
    the others finish. Every stack is rendered from the commit checked at the start; a stack that finds
    the checkout moved on is refused (its lock released), and a commit made during the run is never pushed.
    The result holds one result per stack (RV(stacks)) and a summary table (RV(table)).
  - A committed C(policy.yml) at the repository root is checked against every plan before it is applied
    or saved (protected resources per profile, C(max_changes), C(require_tags)); a violation applies
    nothing, releases the lock this run took and lists the offending resources. See the README.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  stack:
    description:
      - The stack, a directory under O(render.stacks_dir); also the first half of the lock key.
      - A comma list (V(network,cluster)), V(all), or V(affected) runs several stacks in dependency order.
        V(affected) selects the stacks whose committed inputs (the stack's directory, its C(inputs), the
        profile and the profiles it extends, in-repository O(tofu.var_files)) changed between the last commit
        applied to that stack and profile (recorded on the remote under C(refs/guardrail/applied/)) and
        HEAD - or O(since) - and the stacks depending on them. V(all) and V(affected) are never stack names.
    type: str
    required: true
  profile:
    description: The profile, C(<profiles_dir>/<profile>.yml); also the second half of the lock key.
    type: str
    required: true
  steps:
    description:
      - The steps to run, a subset of V(render), V(git_check), V(lock), V(exec), V(git_push), V(unlock),
        V(unlock_any) in that order. A comma-separated string is accepted.
      - V(drift) alone plans each selected stack for each profile of O(profile) (a comma list) with
        refresh, without a lock (a stack whose run lock is held is reported V(locked), not planned), and
        writes RV(files); the task fails when any stack drifted (RV(drift)), so a scheduled job shows it.
    type: list
    elements: str
    default: [render, git_check, lock, exec, git_push, unlock]
  repo_path:
    description: The stack repository (a git clone). Default the controller's current directory.
    type: path
  command:
    description:
      - What the V(exec) step runs in the rendered directory.
      - A tofu command name (V(init), V(validate), V(plan), V(apply), V(destroy), V(output)), run
        as M(guardrail.ecs.tofu) runs it, or a list of arguments run as is (no shell).
      - A list starting with C(tofu) or C(terraform) runs after the rendered directory is initialised with
        the run's backend options, with the run's workspace and variables; its C(apply) or C(destroy) needs C(-auto-approve) (nothing answers
        tofu's question), unless it applies a plan file, and is refused before any step otherwise.
      - In check mode a tofu command plans only and an argument list does not run.
    type: raw
    default: apply
  render:
    description: Options of the V(render) step.
    type: dict
    default: {}
    version_added: 0.3.0
    suboptions:
      stacks_dir:
        description: Directory of the stacks, relative to O(repo_path). Was C(stacks_dir).
        type: str
        default: stacks
      profiles_dir:
        description: Directory of the profiles, relative to O(repo_path). Was C(profiles_dir).
        type: str
        default: profiles
      dest:
        description: The rendered directory relative to O(repo_path) (default C(.dist/<profile>/<stack>)). Was C(dest).
        type: str
      vars:
        description: Template variables on top of the profile's configuration. Was C(vars).
        type: dict
        default: {}
  git:
    description: Options of the V(git_check) and V(git_push) steps.
    type: dict
    default: {}
    version_added: 0.3.0
    suboptions:
      max_ahead:
        description: Unpushed commits V(git_check) allows. Was C(max_ahead).
        type: int
        default: 1
      allow_detached:
        description:
          - Let V(git_check) accept any detached HEAD. Was C(allow_detached).
          - Without it a detached HEAD passes only when it is the head of a remote branch (an AWX project
            sync), which V(git_check) then names as the branch compared.
        type: bool
        default: false
      fetch:
        description:
          - Let V(git_check) compare with the upstream as the remote holds it now (read with C(git ls-remote);
            its commits are fetched only when the clone lacks them). Without it V(git_check) compares with
            the remote-tracking ref of the last fetch. Was C(fetch).
        type: bool
        default: true
      push_remote:
        description: The remote V(git_push) pushes to (default the branch's upstream remote). Was C(push_remote).
        type: str
  lock:
    description: Options of the V(lock), V(unlock) and V(unlock_any) steps - the run lock.
    type: dict
    default: {}
    version_added: 0.3.0
    suboptions:
      backend:
        description: Where the run lock lives. Was C(lock_backend).
        type: str
        choices: [git, dynamodb, s3]
        default: git
      owner:
        description:
          - Who holds the lock. Default the launching user inside an AWX/Tower job (C(awx_user_name)),
            else C(user@host). Was C(owner).
        type: str
      run_id:
        description: The run recorded in the lock. Default the AWX/Tower job id, else a fresh id. Was C(run_id).
        type: str
      message:
        description: A note stored in the lock record. Was C(lock_message).
        type: str
        default: ""
      remote:
        description: For V(git), the remote holding the lock tags (default C(origin)). Was C(lock_remote).
        type: str
      table:
        description: For V(dynamodb), the table (OpenTofu's lock table format). Was C(lock_table).
        type: str
      bucket:
        description: For V(s3), the bucket. Was C(lock_bucket).
        type: str
      key:
        description:
          - For V(dynamodb) and V(s3), the run lock's own key (default C(guardrail/<stack>/<profile>)).
            Was C(lock_key).
          - It must differ from the state key tofu locks itself (the C(s3) backend's C(<bucket>/<key>) item
            in the same table, or its C(<key>.tflock) object in the same bucket); that configuration is
            refused before V(exec), and the lock the run took is released.
        type: str
      takeover:
        description:
          - Take over the run lock of an ended run of the same O(lock.owner) (marked failed or interrupted, or
            its process gone on this host); the lock step's result then holds the replaced record in
            C(taken_over). Was C(lock_takeover).
          - V(false) refuses instead. A live run's lock is never taken over, whoever owns it.
        type: bool
        default: true
      ttl:
        description:
          - Age in seconds after which a lock held by another run is reported as stale in the refusal.
            Was C(lock_ttl).
          - A stale lock is still held; nothing is broken automatically.
        type: int
  tofu:
    description: Options of the V(exec) step - what tofu is run with.
    type: dict
    default: {}
    version_added: 0.3.0
    suboptions:
      binary:
        description: The tofu executable (default C(tofu) when on E(PATH), else C(terraform)). Was C(binary).
        type: str
      workspace:
        description: The tofu workspace, passed as E(TF_WORKSPACE). Was C(workspace).
        type: str
      variables:
        description:
          - Input variables for tofu, passed as C(TF_VAR_*) environment variables, never on a command line.
            Was C(variables).
          - Values tofu marks sensitive (C(sensitive = true) variables, from here or from O(tofu.var_files))
            are masked wherever they appear in the result; other values pass through unchanged.
        type: dict
        default: {}
      var_files:
        description: Variable files for tofu, relative to the rendered directory or absolute. Was C(var_files).
        type: list
        elements: path
        default: []
      options:
        description:
          - Further options of M(guardrail.ecs.tofu) for the V(exec) step - V(backend_config),
            V(backend_config_files), V(lock), V(lock_timeout), V(parallelism), V(targets), V(replace),
            V(timeout). Was C(tofu_options).
        type: dict
        default: {}
      show_sensitive:
        description: Return sensitive tofu outputs in clear instead of masked. Was C(show_sensitive).
        type: bool
        default: false
      timeout:
        description:
          - Seconds each command the V(exec) step runs may take (an argument-list O(command), and each tofu
            command - plan, apply, destroy - unless O(tofu.options) sets C(timeout)); then it is interrupted
            (SIGINT, a grace period, then SIGTERM and SIGKILL). Was C(exec_timeout).
        type: int
        default: 3600
      plan_id:
        description:
          - With O(command=apply), apply exactly the plan saved by an earlier run with O(command=plan)
            that returned this id (RV(plan_id)), instead of planning again. Was C(plan_id).
          - Refused before any step runs when the plan is not saved in the rendered directory, or was
            made from another commit or for another O(stack) and O(profile), or by a run without the
            V(render) step (a plan of hand-edited rendered files); refused by the exec step when the
            rendered files differ from those it was made from, or when tofu reports it stale. A successful
            apply removes it. Plans are written mode 0600 in C(.guardrail-plans), a directory of the
            rendered directory (refused when it is a symlink), stay there and are never pushed.
        type: str
      policy_allow:
        description:
          - Resource addresses (such as V(terraform_data.marker[0])) whose changes the C(protect) rules of the
            plan policy let through in this run. C(max_changes) and C(require_tags) still apply.
            Was C(policy_allow).
        type: list
        elements: str
        default: []
  parallelism:
    description:
      - With several stacks selected, how many run at once (independent stacks only).
      - Not tofu's own C(-parallelism), which is C(parallelism) in O(tofu.options).
    type: int
    default: 4
  since:
    description: With O(stack=affected), compare with this ref instead of each stack's last applied commit.
    type: str
  report_dir:
    description:
      - With O(steps=[drift]), where C(drift.json) and C(drift.html) are written (default
        C(<repo_path>/.dist/drift)).
    type: path
  aws_profile:
    description:
      - A named profile from the AWS shared configuration and credentials files, for the V(dynamodb)
        and V(s3) backends (O(profile) is the stack's profile).
    type: str
  region:
    description: The AWS region for the V(dynamodb) and V(s3) backends.
    type: str
    aliases: [aws_region]
  access_key:
    description: AWS access key ID for the V(dynamodb) and V(s3) backends (default the boto3 credential chain).
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description: AWS secret access key. Never logged, masked wherever it appears in the result.
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description: AWS session token for temporary credentials. Never logged.
    type: str
    aliases: [aws_session_token]
  endpoint_url:
    description: Send AWS requests to this URL instead (a VPC endpoint, a proxy or a local stand-in such as moto).
    type: str
    aliases: [aws_endpoint_url]
attributes:
  check_mode:
    support: full
    description:
      - The rendered directory is still written (git-ignored build output that the plan needs);
        lock, push and unlock only report, a tofu O(command) plans only.
  diff_mode:
    support: full
    description: Rendered files and the before and after of every resource that changes.
  platform:
    support: full
    platforms: all
    description: Runs on the controller.
  action:
    support: full
    description: Implemented as an action plugin.
seealso:
  - module: guardrail.ecs.render
  - module: guardrail.ecs.tofu
notes:
  - >-
    Deprecated: before 0.3.0 every option was at the top level. Those flat names still work until 0.4.0,
    each with a deprecation warning, and are moved into their group - C(stacks_dir), C(profiles_dir),
    C(dest) and C(vars) into O(render); C(max_ahead), C(allow_detached), C(fetch) and C(push_remote)
    into O(git); C(owner), C(run_id), C(lock_backend), C(lock_message), C(lock_remote), C(lock_table),
    C(lock_bucket), C(lock_key), C(lock_takeover) and C(lock_ttl) into O(lock) (without the C(lock_)
    prefix); C(binary), C(workspace), C(variables), C(var_files), C(show_sensitive), C(plan_id) and
    C(policy_allow) into O(tofu), C(tofu_options) as O(tofu.options) and C(exec_timeout) as
    O(tofu.timeout). A flat name and its nested form given with different values are refused before
    anything runs.
  - >-
    A shell function makes C(tofu) itself run the whole workflow from the stack
    repository, for example C(tofu apply alpha prod) -
    tofu() { ansible localhost -m guardrail.ecs.workflow
    -a "command=$1 stack=$2 profile=$3 repo_path=$PWD"; }
"""

EXAMPLES = r"""
- name: Apply stack alpha for prod, the whole way
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: alpha
    profile: prod

- name: Plan only, without locking
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: alpha
    profile: prod
    steps: [render, git_check, exec]
    command: plan

- name: Apply with a DynamoDB run lock, tofu variables and a shorter timeout
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: alpha
    profile: prod
    lock:
      backend: dynamodb
      table: tofu-locks
      message: "release 2024.06"
    tofu:
      variables:
        release: "2024.06"
      timeout: 900
    region: eu-west-1

- name: Apply every stack in dependency order, two at a time
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: all
    profile: prod
    parallelism: 2

- name: Plan only the stacks a change touched since the last apply of each
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: affected
    profile: prod
    command: plan

- name: Apply, letting the plan policy pass a change of one protected resource
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: alpha
    profile: prod
    tofu:
      policy_allow: [terraform_data.deployment]

- name: Report drift of every stack in prod (a comma list of profiles also works; fails when any drifted)
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: all
    profile: prod
    steps: [drift]
    report_dir: /srv/infra/.dist/drift-prod

- name: Release a lock alice left behind, whichever of her runs took it
  guardrail.ecs.workflow:
    repo_path: /srv/infra
    stack: alpha
    profile: prod
    lock:
      owner: alice
    steps: [unlock-any]
"""

RETURN = r"""
plan_id:
  description: With O(command=plan), the id of the saved plan, to give as O(tofu.plan_id) to an apply; with O(tofu.plan_id), the plan applied.
  returned: when a plan was saved or applied
  type: str
  sample: 3f2a9c01d4e5b6a7
summary:
  description: One line per resource change (action and address), then the counts.
  returned: when a plan was saved or applied
  type: list
  elements: str
  sample: ["  create   terraform_data.service", "Plan: 1 to create, 0 to update, 0 to replace, 0 to delete"]
refused:
  description: Whether the run was refused (work tree dirty or behind, lock held, saved plan not applicable) rather than failed.
  returned: when failed
  type: bool
  sample: true
steps:
  description:
    - Every requested step in order with its status (V(ok), V(failed), V(skipped)), whether it
      changed something, its duration in seconds, its message and its result.
  returned: always
  type: list
  elements: dict
  sample: [{"step": "exec", "status": "ok", "changed": true, "duration": 0.19, "msg": "", "result": {}}]
taken_over:
  description:
    - When the lock step took over the lock of an ended run of the same owner, one line saying whose
      run, since when, why it has ended, what its tofu left and which state lock file was removed.
  returned: when a lock was taken over
  type: str
  sample: "took over the lock of ended run 42 of alice (since 2026-01-02T03:04:05.000000Z, interrupted)"
state_lock_released:
  description:
    - When exec released tofu's state lock left by the tofu of the ended run this run took over, one
      line saying which lock (ID, operation, holder, since when), how and why.
  returned: when exec released a state lock
  type: str
  sample: "released tofu's state lock (ID 1d9f..., OperationTypeApply by alice@ctl1 since 2026-01-02
    03:04:05 +0000 UTC) with tofu force-unlock: it was taken by the apply (pid 4242) of run 42 of alice,
    which is gone"
failed_step:
  description: The step that failed.
  returned: failure
  type: str
  sample: exec
stack:
  description: The stack.
  returned: always
  type: str
  sample: alpha
profile:
  description: The profile.
  returned: always
  type: str
  sample: prod
owner:
  description: The lock owner of this run.
  returned: always
  type: str
  sample: alice@laptop
run_id:
  description: The run id of this run.
  returned: always
  type: str
  sample: 20240601T101500Z-1a2b3c4d5e6f
dest:
  description: The rendered directory.
  returned: always
  type: str
  sample: /srv/infra/.dist/prod/alpha
duration:
  description: Seconds all steps took.
  returned: always
  type: float
  sample: 0.42
hash:
  description: sha256 of the rendered tree.
  returned: when the render step ran
  type: str
  sample: ff1c8dd65f2c6f9f7cf947c0020fd305b778023241295a85abfa2ec5082a5c9b
counts:
  description: Resource changes of the tofu command, by kind.
  returned: when exec ran a tofu command
  type: dict
  sample: {"create": 0, "update": 0, "delete": 0, "replace": 1}
resources:
  description: Resources the tofu command changed (or would change), with before and after values.
  returned: when exec ran a tofu command
  type: list
  elements: dict
  sample: [{"address": "terraform_data.deployment", "action": "replace", "before": {}, "after": {}}]
outputs:
  description: The stack's outputs after the tofu command (sensitive ones masked unless O(tofu.show_sensitive)).
  returned: when exec ran a tofu command
  type: dict
  sample: {"service_name": "web-prod"}
applied_commit:
  description: The commit an V(apply) or V(destroy) of this run applied.
  returned: when exec applied or destroyed successfully
  type: str
  sample: 3185d53c8c0e00a7ff9d5131d01f4c46db8ccb36
stacks:
  description:
    - With several stacks selected, one result per stack in the order run, as a one-stack run returns
      it, plus C(outcome) (V(ok), V(changed), V(failed), V(refused), V(skipped)), C(started) (seconds
      after the run began), and where they apply C(mocked), C(stale_inputs) (a plan that read outputs
      its dependency's pending change may alter), C(affected_because) and C(applied_marker).
  returned: when several stacks were selected
  type: list
  elements: dict
  sample: [{"stack": "network", "outcome": "changed", "counts": {"create": 1, "update": 0, "delete": 0, "replace": 0}}]
order:
  description: The selected stacks in the order they were started (reverse dependency order for V(destroy)).
  returned: when several stacks were selected
  type: list
  elements: str
  sample: [network, cluster, services]
table:
  description: The summary table - stack, action counts, duration, outcome - one line per stack.
  returned: when several stacks were selected
  type: list
  elements: str
  sample: ["STACK CREATE UPDATE REPLACE DELETE DURATION OUTCOME", "network 1 0 0 0 1.20s changed"]
affected:
  description: With O(stack=affected), why each selected stack was selected.
  returned: when O(stack=affected)
  type: dict
  sample: {"network": "changed since 3185d53c8c0e: stacks/network/main.tf.j2", "cluster": "depends on affected network"}
drift:
  description: With O(steps=[drift]), the C(stack/profile) pairs whose plan found changes.
  returned: when O(steps=[drift])
  type: list
  elements: str
  sample: [network/prod]
files:
  description: With O(steps=[drift]), the report files written, C(json) and C(html).
  returned: when O(steps=[drift])
  type: dict
  sample: {"json": /srv/infra/.dist/drift/drift.json, "html": /srv/infra/.dist/drift/drift.html}
interrupted:
  description: What stopped the exec step - V(timeout), V(SIGINT) or V(SIGTERM).
  returned: when the run was interrupted
  type: str
  sample: SIGINT
"""
