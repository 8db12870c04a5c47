#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ecs_container_instance
short_description: Drain an ECS container instance or return it to service, found by its EC2 instance id
version_added: 0.2.0
description:
  - Finds the container instance of one EC2 instance in one ECS cluster and sets it C(DRAINING) or C(ACTIVE)
    with C(ecs:UpdateContainerInstancesState).
  - A C(DRAINING) instance gets no new tasks; ECS stops its service tasks and starts them elsewhere within each
    service's C(minimumHealthyPercent) and C(maximumPercent). Daemon tasks stay until the instance leaves the
    cluster, and standalone tasks (C(RunTask)) are never stopped by draining. The instance is drained when only
    daemon and standalone tasks run on it.
  - Before draining, the capacity guard refuses when the instances that stay C(ACTIVE) could not keep every
    service at its C(minimumHealthyPercent) of the desired count, and says why with the arithmetic.
  - Only an C(ACTIVE) or C(DRAINING) instance is changed; one that is registering, deregistering or inactive is
    an error. Setting the state it already has changes nothing.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  cluster:
    description:
      - Name or ARN of the ECS cluster.
    type: str
    required: true
  instance_id:
    description:
      - The EC2 instance id of the host, as the C(amazon.aws.aws_ec2) inventory sets the C(instance_id) host
        variable.
      - An instance unknown to EC2 and an instance that is not a container instance of O(cluster) are errors,
        told apart in the message (the first needs C(ec2:DescribeInstances)).
    type: str
    required: true
  state:
    description:
      - V(draining) stops new placements and moves the service tasks away; V(active) returns the instance to
        service.
    type: str
    choices: [draining, active]
    required: true
  wait:
    description:
      - With O(state=draining), wait until only daemon and standalone tasks run on the instance (its running and
        pending task count reaches that level and no service task is left).
      - With O(state=active), wait until the ECS agent reports connected.
      - On timeout the module fails naming the services whose tasks are still on the instance, or the agent.
    type: bool
    default: false
  wait_agent:
    description:
      - Also wait until the ECS agent reports connected (C(agentConnected)), whatever O(state) is; use it to wait
        for the agent of a rebooted host that must stay V(draining) until it is verified.
      - Defaults to O(wait) for O(state=active) and to V(false) for O(state=draining).
    type: bool
  wait_timeout:
    description:
      - Seconds to wait.
    type: int
    default: 600
  poll_interval:
    description:
      - Seconds between two looks at the instance while waiting.
    type: int
    default: 5
  capacity_guard:
    description:
      - Before setting an V(ACTIVE) instance V(draining), refuse when a replica service would fall below its
        C(minimumHealthyPercent) of the desired count. A service keeps the tasks it runs on the instances that
        stay C(ACTIVE), plus the moving tasks that fit in their remaining CPU and memory (first fit, each task
        sized by its task definition). Instances already C(DRAINING) and those in O(batch) count as leaving.
      - Placement constraints and host ports are not modelled, so the guard can only be too optimistic where they
        apply.
    type: bool
    default: true
  batch:
    description:
      - EC2 instance ids drained together with this one (a play's batch), counted as leaving by the capacity guard.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - guardrail.ecs.aws
attributes:
  check_mode:
    support: full
    description: Nothing is changed and nothing is waited for; the capacity guard still runs and refuses.
  diff_mode:
    support: full
    description: The status before and after.
  platform:
    platforms: posix
    support: full
    description: Talks to the AWS API from wherever the module runs (usually the controller, with C(delegate_to)).
notes:
  - Required permissions - C(ecs:DescribeClusters), C(ecs:ListContainerInstances), C(ecs:DescribeContainerInstances),
    C(ecs:UpdateContainerInstancesState), and for the capacity guard and O(wait) C(ecs:ListServices),
    C(ecs:DescribeServices), C(ecs:ListTasks), C(ecs:DescribeTasks), C(ecs:DescribeTaskDefinition).
    C(ec2:DescribeInstances) is used only to tell an unknown instance from one outside the cluster.
  - The playbook C(guardrail.ecs.ecs_host) uses this module to roll a cluster batch by batch.
"""

EXAMPLES = r"""
- name: Drain this host and wait until its service tasks run elsewhere
  guardrail.ecs.ecs_container_instance:
    cluster: prod
    instance_id: "{{ instance_id }}"
    state: draining
    batch: "{{ ansible_play_batch | map('extract', hostvars, 'instance_id') | list }}"
    wait: true
    wait_timeout: 900
  delegate_to: localhost

- name: Wait for the agent of the rebooted host, still draining
  guardrail.ecs.ecs_container_instance:
    cluster: prod
    instance_id: i-0123456789abcdef0
    state: draining
    wait_agent: true
  delegate_to: localhost

- name: Return the host to service once its agent is connected
  guardrail.ecs.ecs_container_instance:
    cluster: prod
    instance_id: i-0123456789abcdef0
    state: active
    wait: true
  delegate_to: localhost
"""

RETURN = r"""
previous_status:
  description: The instance's status before the module ran.
  returned: success
  type: str
  sample: ACTIVE
container_instance:
  description: The container instance after the change (in check mode, with the status it would have).
  returned: success and when the instance was found
  type: dict
  contains:
    container_instance_arn:
      description: The container instance ARN.
      returned: always
      type: str
      sample: arn:aws:ecs:us-east-1:123456789012:container-instance/prod/0b1c2d3e4f5a46b7a8c9d0e1f2a3b4c5
    ec2_instance_id:
      description: The EC2 instance id.
      returned: always
      type: str
      sample: i-0123456789abcdef0
    status:
      description: The status, V(ACTIVE) or V(DRAINING).
      returned: always
      type: str
      sample: DRAINING
    agent_connected:
      description: Whether the ECS agent is connected.
      returned: always
      type: bool
      sample: true
    running_tasks_count:
      description: Tasks running on the instance.
      returned: always
      type: int
      sample: 1
    pending_tasks_count:
      description: Tasks pending on the instance.
      returned: always
      type: int
      sample: 0
tasks:
  description: The tasks left on the instance after waiting for a drain (or when the wait timed out), by kind.
  returned: when O(wait=true) with O(state=draining), and on a wait timeout
  type: dict
  contains:
    service:
      description: Tasks of replica services (empty once drained).
      returned: always
      type: list
      elements: dict
      sample: []
    daemon:
      description: Tasks of daemon services, which stay.
      returned: always
      type: list
      elements: dict
      sample: [{task_arn: "arn:aws:ecs:us-east-1:123456789012:task/prod/5f1e", service: log-router, last_status: RUNNING}]
    standalone:
      description: Tasks started by C(RunTask), which draining does not stop.
      returned: always
      type: list
      elements: dict
      sample: []
waited_seconds:
  description: Seconds spent waiting.
  returned: success
  type: float
  sample: 42.5
capacity_shortfalls:
  description: When the capacity guard refused, one entry per service it would take too low, with the arithmetic.
  returned: when the capacity guard refused
  type: list
  elements: dict
  sample:
    - service: web
      desired: 3
      minimum_healthy_percent: 100
      needed: 3
      kept: 1
      moving: 2
      placed: 1
      active_instances_left: 1
      message: "service web: desired 3 x minimumHealthyPercent 100% = 3 healthy tasks needed; ..."
api_calls:
  description: AWS API requests made, per API action (retries not counted).
  returned: always
  type: dict
  sample: {describe_clusters: 1, list_container_instances: 1, describe_container_instances: 4,
           update_container_instances_state: 1}
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
    client,
)
from ansible_collections.guardrail.ecs.plugins.module_utils.ecs.container_instance import (
    Api,
    ContainerInstanceError,
    run,
    validate,
)


def main():
    argument_spec = dict(
        cluster=dict(type="str", required=True),
        instance_id=dict(type="str", required=True),
        state=dict(type="str", choices=["draining", "active"], required=True),
        wait=dict(type="bool", default=False),
        wait_agent=dict(type="bool"),
        wait_timeout=dict(type="int", default=600),
        poll_interval=dict(type="int", default=5),
        capacity_guard=dict(type="bool", default=True),
        batch=dict(type="list", elements="str", default=[]),
    )
    argument_spec.update(AWS_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=AWS_MUTUALLY_EXCLUSIVE, required_together=AWS_REQUIRED_TOGETHER)
    params = module.params
    try:
        validate(params["cluster"], params["instance_id"], params["state"], params["wait_timeout"],
                 params["poll_interval"], params["batch"])
    except ContainerInstanceError as exc:
        module.fail_json(msg=str(exc))
    if not HAS_BOTO3:
        module.fail_json(msg=f"boto3 and botocore are required: {BOTO3_IMPORT_ERROR}")
    api = None
    try:
        options = aws_options(params)
        api = Api(client("ecs", options), client("ec2", options))
        result = run(options, params["cluster"], params["instance_id"], params["state"], wait=params["wait"],
                     wait_agent=params["wait_agent"], wait_timeout=params["wait_timeout"],
                     poll_interval=params["poll_interval"], capacity_guard=params["capacity_guard"],
                     batch=params["batch"], check_mode=module.check_mode, api=api)
    except ContainerInstanceError as exc:
        module.fail_json(msg=str(exc), api_calls=dict(api.calls) if api else {}, **exc.result)
    except AWSError as exc:
        module.fail_json(msg=str(exc), action=exc.action, code=exc.code, api_calls=dict(api.calls) if api else {})
    if not module._diff:
        result.pop("diff")
    view = result["container_instance"]
    verb = ("would set" if module.check_mode else "set") if result["changed"] else "already"
    result["msg"] = f"{params['instance_id']} {verb} {view['status']} in cluster {params['cluster']}"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
