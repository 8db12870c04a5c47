#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ecs_image_guard
short_description: Find and recover ECS services whose pinned image digest was deleted from ECR
version_added: 0.1.0
description:
  - ECS resolves an image tag to a digest when a deployment starts, and every later task of that
    deployment pulls that digest. When an ECR lifecycle policy deletes the image, replacement tasks
    stop with C(CannotPullContainerError ... not found) and the service drains while the tag itself
    still pulls.
  - This module reads the recently stopped tasks of the selected services, keeps the pull failures
    whose digest ECR no longer has (checked by digest with C(ecr:BatchGetImage)), and reports one
    entry per affected service and container.
  - With O(mode=recover) it forces one new deployment per affected service, which makes ECS resolve
    the tag again. A service is never redeployed twice for the same incident; when a newer deployment
    than the failing one exists, it is left alone.
  - In the same pass it audits, for each ECR repository the services use, the lifecycle rules that
    could expire an image still referenced by an active deployment, and each container's
    C(versionConsistency) setting.
  - Only services that may be starving have their stopped tasks read - those below their desired
    count, between deployments, or with failed tasks in a deployment. A service running its desired
    count on a single deployment is not starving.
  - Requests are batched (C(ecs:DescribeServices) 10 per call, C(ecs:DescribeTasks) 100 per call,
    ECR image ids 100 per call), every listing is paginated, and throttling is retried with jittered
    backoff. A missing permission fails naming the refused API action.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  clusters:
    description:
      - Names or ARNs of the clusters to inspect. All clusters of the account and region when empty.
      - An unknown or inactive cluster and a malformed ARN are errors; nothing is changed.
    type: list
    elements: str
    default: []
  services:
    description:
      - Names or ARNs of the services to inspect in the selected clusters. All services when empty.
      - A service that exists in none of the selected clusters is an error; nothing is changed.
    type: list
    elements: str
    default: []
  mode:
    description:
      - V(report) only reports. V(recover) also forces a new deployment for each affected service whose
        failing deployment is still the primary one and whose task definition names the image by a tag
        that still resolves.
      - A task definition that pins the digest itself cannot be recovered by a new deployment; such
        entries are reported with the reason in RV(affected[].recovery).
    type: str
    choices: [report, recover]
    default: report
  since:
    description:
      - How far back to read stopped tasks, by their stop time.
      - Seconds as an integer, or a duration made of numbers with the units V(s), V(m), V(h) and V(d),
        for example V(30m), V(6h), V(1d) or V(1h30m).
      - ECS keeps stopped tasks visible for about an hour, so longer windows rarely find more.
    type: str
    default: 1h
  audit:
    description:
      - Audit lifecycle rules and C(versionConsistency) in the same pass. This reads each distinct task
        definition of the active deployments (one C(ecs:DescribeTaskDefinition) call each, there is no
        batch API) and each used repository's lifecycle policy.
    type: bool
    default: true
  wait:
    description:
      - After redeploying, wait until each redeployed service has a single deployment running its
        desired count.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait with O(wait=true). The module fails naming the services that are not stable by then.
    type: int
    default: 600
extends_documentation_fragment:
  - guardrail.ecs.aws
attributes:
  check_mode:
    support: full
    description: Check mode reports only; RV(redeployed) lists the services that would be redeployed.
  diff_mode:
    support: none
    description: Nothing is diffed; RV(redeployed) lists what changed.
  platform:
    platforms: posix
    support: full
    description: Talks to the AWS API from wherever the module runs (usually the controller).
notes:
  - Required permissions - C(ecs:ListClusters), C(ecs:DescribeClusters), C(ecs:ListServices),
    C(ecs:DescribeServices), C(ecs:ListTasks), C(ecs:DescribeTasks), C(ecs:DescribeTaskDefinition),
    C(ecr:BatchGetImage), C(ecr:DescribeImages), C(ecr:GetLifecyclePolicy), and for O(mode=recover)
    C(ecs:UpdateService).
  - The failing deployment of a task is its C(startedBy), which ECS sets to the deployment id.
"""

EXAMPLES = r"""
- name: Recover two services of one cluster and wait until they are stable
  guardrail.ecs.ecs_image_guard:
    clusters: [prod]
    services: [web, api]
    mode: recover
    since: 6h
    wait: true
    wait_timeout: 900

- name: Report services starved by a deleted image digest, in every cluster
  guardrail.ecs.ecs_image_guard:
    region: us-east-1
  register: guard

- name: Fail a scheduled job while any service still pulls a deleted digest
  ansible.builtin.assert:
    that: guard.affected | length == 0
    fail_msg: "{{ guard.affected | map(attribute='service') | unique | join(', ') }} pull a deleted digest"
"""

RETURN = r"""
clusters:
  description: The cluster names inspected.
  returned: always
  type: list
  elements: str
  sample: [prod]
affected:
  description: One entry per affected service, container and missing digest.
  returned: always
  type: list
  elements: dict
  contains:
    cluster:
      description: Cluster name.
      returned: always
      type: str
      sample: prod
    service:
      description: Service name.
      returned: always
      type: str
      sample: web
    container:
      description: Container name.
      returned: always
      type: str
      sample: web
    image:
      description: The container's image as the task definition names it.
      returned: always
      type: str
      sample: 123456789012.dkr.ecr.us-east-1.amazonaws.com/web:latest
    missing_digest:
      description: The digest the deployment pins and ECR no longer has.
      returned: always
      type: str
      sample: sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
    tag:
      description: The image tag, or null when the task definition pins a digest.
      returned: always
      type: str
      sample: latest
    tag_resolves:
      description: Whether ECR still has the tag (null when there is no tag).
      returned: always
      type: bool
      sample: true
    deployment_id:
      description: The failing deployment (the stopped tasks' C(startedBy)).
      returned: always
      type: str
      sample: ecs-svc/1234567890123456789
    failed_tasks:
      description: Stopped tasks with this failure in the window.
      returned: always
      type: int
      sample: 12
    first_failure:
      description: Stop time of the first such task (ISO 8601, UTC), null when ECS gave none.
      returned: always
      type: str
      sample: "2026-11-21T08:02:11Z"
    last_failure:
      description: Stop time of the latest such task (ISO 8601, UTC), null when ECS gave none.
      returned: always
      type: str
      sample: "2026-11-21T08:41:57Z"
    running_count:
      description: The service's running task count.
      returned: always
      type: int
      sample: 0
    desired_count:
      description: The service's desired task count.
      returned: always
      type: int
      sample: 3
    newer_deployment:
      description: Whether a newer deployment than the failing one exists.
      returned: always
      type: bool
      sample: false
    recovery:
      description: What was done for the entry - V(report only), V(redeployed), V(a newer deployment exists),
        or why it cannot be recovered by a new deployment.
      returned: always
      type: str
      sample: redeployed
redeployed:
  description: Services forced to a new deployment (in check mode, those that would be).
  returned: always
  type: list
  elements: dict
  sample:
    - cluster: prod
      service: web
      previous_deployment: ecs-svc/1234567890123456789
      deployment_id: ecs-svc/9876543210987654321
audit:
  description: Findings of the audit; empty lists with O(audit=false).
  returned: always
  type: dict
  contains:
    lifecycle:
      description: Lifecycle rules that could expire an image still referenced by an active deployment.
        A rule selecting V(untagged) images counts for images referenced by tag, since an image
        becomes untagged when its tag moves.
      returned: always
      type: list
      elements: dict
      sample:
        - repository: web
          registry_id: "123456789012"
          region: us-east-1
          rule_priority: 1
          description: keep 10 images
          tag_status: any
          count_type: imageCountMoreThan
          count_number: 10
          referenced_by:
            - {cluster: prod, service: web, container: web, image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:latest"}
    version_consistency:
      description: Each container of each active deployment with its C(versionConsistency)
        (V(enabled) when the task definition does not set it).
      returned: always
      type: list
      elements: dict
      sample:
        - cluster: prod
          service: web
          deployment_id: ecs-svc/1234567890123456789
          task_definition: arn:aws:ecs:us-east-1:123456789012:task-definition/web:7
          container: web
          image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/web:latest
          version_consistency: enabled
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.common.aws import (
    AWS_ARGUMENT_SPEC,
    AWS_MUTUALLY_EXCLUSIVE,
    AWS_REQUIRED_TOGETHER,
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    AWSError,
    aws_options,
)
from ansible_collections.guardrail.ecs.plugins.module_utils.ecs.image_guard import GuardError, run


def main():
    argument_spec = dict(
        clusters=dict(type="list", elements="str", default=[]),
        services=dict(type="list", elements="str", default=[]),
        mode=dict(type="str", choices=["report", "recover"], default="report"),
        since=dict(type="str", default="1h"),
        audit=dict(type="bool", default=True),
        wait=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=600),
    )
    argument_spec.update(AWS_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=AWS_MUTUALLY_EXCLUSIVE, required_together=AWS_REQUIRED_TOGETHER)
    if not HAS_BOTO3:
        module.fail_json(msg=f"boto3 and botocore are required: {BOTO3_IMPORT_ERROR}")
    params = module.params
    if params["wait_timeout"] <= 0:
        module.fail_json(msg=f"wait_timeout must be a positive number of seconds, got {params['wait_timeout']}")
    try:
        result = run(aws_options(params), clusters=params["clusters"], services=params["services"],
                     mode=params["mode"], since=params["since"], wait=params["wait"],
                     wait_timeout=params["wait_timeout"], check_mode=module.check_mode, audit=params["audit"])
    except GuardError as exc:
        module.fail_json(msg=str(exc), **getattr(exc, "result", {}))
    except AWSError as exc:
        module.fail_json(msg=str(exc), action=exc.action, code=exc.code)
    affected = result["affected"]
    if result["redeployed"]:
        verb = "would redeploy" if module.check_mode else "redeployed"
        msg = f"{len(affected)} affected; {verb} " + ", ".join(
            f"{r['cluster']}/{r['service']}" for r in result["redeployed"])
    elif affected:
        msg = f"{len(affected)} affected: " + ", ".join(f"{a['cluster']}/{a['service']}" for a in affected)
    else:
        msg = "no service pulls a deleted image digest"
    module.exit_json(msg=msg, **result)


if __name__ == "__main__":
    main()
