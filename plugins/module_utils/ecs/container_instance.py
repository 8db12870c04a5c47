# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moves an ECS container instance, found by its EC2 instance id, between
ACTIVE and DRAINING, with the capacity guard and the waits a rolling change of
the hosts needs.

DRAINING stops the instance's service tasks and lets the scheduler start them
elsewhere; daemon tasks stay until the instance leaves, and standalone tasks
(RunTask) are never stopped by draining. So an instance is drained when the
tasks on it are daemon and standalone tasks only. Plain Python, no AnsibleModule.
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter

from ansible_collections.guardrail.ecs.plugins.module_utils.common.aws import AWSError, call, client

INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
CLUSTER = re.compile(r"^(?:[A-Za-z0-9_-]{1,255}|arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster/[A-Za-z0-9_-]{1,255})$")
STATUS = {"draining": "DRAINING", "active": "ACTIVE"}
DESCRIBE_BATCH = 100
SERVICES_BATCH = 10


class ContainerInstanceError(Exception):
    """Bad input, or a state the module refuses or gave up waiting on. `result`
    carries what was known when it stopped (the instance, the tasks left)."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result or {}


class Api:
    """One ECS client; every request through aws.call (retries), counted per action."""

    def __init__(self, ecs, ec2=None):
        self.ecs = ecs
        self.ec2 = ec2
        self.calls = Counter()

    def __call__(self, action, api_client=None, **kwargs):
        self.calls[action] += 1
        return call(api_client or self.ecs, action, **kwargs)

    def pages(self, action, key, **kwargs):
        token = None
        while True:
            page = self(action, **kwargs, **({"nextToken": token} if token else {}))
            yield from page.get(key, [])
            token = page.get("nextToken")
            if not token:
                return

    def describe(self, action, key, ids, size, **kwargs):
        for start in range(0, len(ids), size):
            yield from self(action, **{key: ids[start:start + size]}, **kwargs).get(key, [])


def validate(cluster, instance_id, state, wait_timeout, poll_interval, batch=()):
    if not CLUSTER.match(str(cluster or "")):
        raise ContainerInstanceError(f"invalid cluster {cluster!r}: a cluster name (letters, digits, '-', '_') "
                                     "or a cluster ARN")
    for value in [instance_id, *batch]:
        if not INSTANCE_ID.match(str(value or "")):
            raise ContainerInstanceError(f"invalid EC2 instance id {value!r}: expected i- and 8 or 17 hex digits")
    if state not in STATUS:
        raise ContainerInstanceError(f"state must be one of {', '.join(STATUS)}, got {state!r}")
    if wait_timeout <= 0 or poll_interval <= 0:
        raise ContainerInstanceError("wait_timeout and poll_interval must be positive numbers of seconds")


def resource(instance, field, name):
    for item in instance.get(field, []):
        if item.get("name") == name:
            return item.get("integerValue", 0)
    return 0


def instance_view(instance):
    return {
        "container_instance_arn": instance["containerInstanceArn"],
        "ec2_instance_id": instance.get("ec2InstanceId"),
        "status": instance.get("status"),
        "agent_connected": bool(instance.get("agentConnected")),
        "running_tasks_count": instance.get("runningTasksCount", 0),
        "pending_tasks_count": instance.get("pendingTasksCount", 0),
    }


def service_of(task):
    group = task.get("group") or ""
    return group[len("service:"):] if group.startswith("service:") else None


def task_needs(definition):
    """(CPU units, MiB) one task of `definition` reserves: the task-level
    values when set, else the sum over its containers (memoryReservation when
    memory is not set)."""
    containers = definition.get("containerDefinitions", [])
    cpu = definition.get("cpu")
    memory = definition.get("memory")
    cpu = int(cpu) if cpu else sum(int(c.get("cpu") or 0) for c in containers)
    memory = int(memory) if memory else sum(int(c.get("memory") or c.get("memoryReservation") or 0)
                                            for c in containers)
    return cpu, memory


def capacity_shortfalls(services, instances, tasks, needs, leaving):
    """The services that draining the `leaving` EC2 instances would take below
    their minimumHealthyPercent, with the arithmetic.

    services:  [{"name", "desired", "minimum_healthy_percent", "daemon"}]
    instances: [{"arn", "ec2_instance_id", "status", "free_cpu", "free_memory"}]
    tasks:     [{"service", "instance_arn", "task_definition"}] (running tasks)
    needs:     {task_definition: (cpu, memory)}
    leaving:   EC2 instance ids drained together

    A service keeps the tasks it runs on the instances that stay ACTIVE, plus
    the moving tasks that fit in the free CPU and memory those instances have
    (placed first-fit, services in name order, each placement using up what it
    takes). Placement constraints and host ports are not modelled: the guard
    can only be too optimistic where they apply. Instances already DRAINING
    are no capacity; their tasks are moving too.
    """
    staying = [dict(i) for i in instances if i["status"] == "ACTIVE" and i["ec2_instance_id"] not in leaving]
    staying_arns = {i["arn"] for i in staying}
    free = {"cpu": sum(i["free_cpu"] for i in staying), "memory": sum(i["free_memory"] for i in staying)}
    shortfalls = []
    for service in sorted(services, key=lambda s: s["name"]):
        if service["daemon"] or service["desired"] <= 0:
            continue
        own = [t for t in tasks if t["service"] == service["name"]]
        kept = sum(1 for t in own if t["instance_arn"] in staying_arns)
        moving = [t for t in own if t["instance_arn"] not in staying_arns]
        placed = 0
        for task in moving:
            cpu, memory = needs[task["task_definition"]]
            target = next((i for i in staying if i["free_cpu"] >= cpu and i["free_memory"] >= memory), None)
            if target is None:
                continue
            target["free_cpu"] -= cpu
            target["free_memory"] -= memory
            placed += 1
        percent = service["minimum_healthy_percent"]
        needed = math.ceil(service["desired"] * percent / 100)
        if kept + placed >= needed:
            continue
        size = needs[moving[0]["task_definition"]] if moving else None
        fits = (f"{placed} of {len(moving)} moving tasks fit in their free capacity "
                f"({free['memory']} MiB, {free['cpu']} CPU units"
                + (f"; a task needs {size[1]} MiB, {size[0]} CPU units)" if size else ")"))
        shortfalls.append({
            "service": service["name"], "desired": service["desired"], "minimum_healthy_percent": percent,
            "needed": needed, "kept": kept, "moving": len(moving), "placed": placed,
            "active_instances_left": len(staying),
            "message": (f"service {service['name']}: desired {service['desired']} x minimumHealthyPercent "
                        f"{percent}% = {needed} healthy tasks needed; {kept} run on the {len(staying)} "
                        f"instances that stay ACTIVE + {fits} = {kept + placed} < {needed}"),
        })
    return shortfalls


class ContainerInstance:
    """The container instance of one EC2 instance in one cluster."""

    def __init__(self, api, cluster, instance_id, sleep=time.sleep, clock=time.monotonic):
        self.api = api
        self.cluster = cluster
        self.instance_id = instance_id
        self.sleep = sleep
        self.clock = clock
        self._daemons = None

    def check_cluster(self):
        reply = self.api("describe_clusters", clusters=[self.cluster])
        if not any(c.get("status") == "ACTIVE" for c in reply.get("clusters", [])):
            raise ContainerInstanceError(f"cluster {self.cluster} not found or not active")

    def instances(self, ids=None):
        """Described container instances of the cluster: those of the EC2 ids
        in `ids` (the cluster query filters on AWS; matched here again), or all."""
        kwargs = {"cluster": self.cluster}
        if ids:
            kwargs["filter"] = "ec2InstanceId in [" + ", ".join(f"'{i}'" for i in ids) + "]"
        arns = list(self.api.pages("list_container_instances", "containerInstanceArns", **kwargs))
        found = list(self.api.describe("describe_container_instances", "containerInstances", arns,
                                       DESCRIBE_BATCH, cluster=self.cluster))
        return [i for i in found if not ids or i.get("ec2InstanceId") in ids]

    def find(self):
        found = self.instances([self.instance_id])
        if found:
            return found[0]
        raise ContainerInstanceError(self._not_found())

    def _not_found(self):
        if self.api.ec2 is not None:
            try:
                self.api("describe_instances", api_client=self.api.ec2, InstanceIds=[self.instance_id])
            except AWSError as exc:
                if exc.code and exc.code.startswith("InvalidInstanceID"):
                    return f"unknown EC2 instance {self.instance_id}: EC2 has no such instance in this region"
                if not exc.code or exc.code not in ("UnauthorizedOperation", "AccessDenied"):
                    raise
        return (f"EC2 instance {self.instance_id} is not a container instance of cluster {self.cluster} "
                "(not registered there, or its ECS agent never started)")

    def refresh(self, arn):
        found = list(self.api.describe("describe_container_instances", "containerInstances", [arn],
                                       DESCRIBE_BATCH, cluster=self.cluster))
        if not found:
            raise ContainerInstanceError(f"container instance {arn} of {self.instance_id} left cluster "
                                         f"{self.cluster}")
        return found[0]

    def services(self):
        names = list(self.api.pages("list_services", "serviceArns", cluster=self.cluster))
        described = self.api.describe("describe_services", "services", names, SERVICES_BATCH, cluster=self.cluster)
        return [s for s in described if s.get("status") != "INACTIVE"]

    def daemons(self):
        if self._daemons is None:
            self._daemons = {s["serviceName"] for s in self.services() if s.get("schedulingStrategy") == "DAEMON"}
        return self._daemons

    def tasks(self, **kwargs):
        arns = list(self.api.pages("list_tasks", "taskArns", cluster=self.cluster, desiredStatus="RUNNING",
                                   **kwargs))
        return [t for t in self.api.describe("describe_tasks", "tasks", arns, DESCRIBE_BATCH, cluster=self.cluster)
                if t.get("lastStatus") != "STOPPED"]

    def left_on(self, arn):
        """The tasks still on the instance: service (non-daemon), daemon and standalone."""
        daemons = self.daemons()
        split = {"service": [], "daemon": [], "standalone": []}
        for task in self.tasks(containerInstance=arn):
            name = service_of(task)
            kind = "standalone" if name is None else "daemon" if name in daemons else "service"
            split[kind].append({"task_arn": task["taskArn"], "service": name,
                                "last_status": task.get("lastStatus")})
        return split

    def guard(self, batch):
        """Refuses (raises) when draining `batch` would take a service below its minimumHealthyPercent."""
        leaving = set(batch) | {self.instance_id}
        services = [{"name": s["serviceName"], "desired": s.get("desiredCount", 0),
                     "minimum_healthy_percent": s.get("deploymentConfiguration", {}).get(
                         "minimumHealthyPercent", 100),
                     "daemon": s.get("schedulingStrategy") == "DAEMON"} for s in self.services()]
        self._daemons = {s["name"] for s in services if s["daemon"]}
        instances = [{"arn": i["containerInstanceArn"], "ec2_instance_id": i.get("ec2InstanceId"),
                      "status": i.get("status"), "free_cpu": resource(i, "remainingResources", "CPU"),
                      "free_memory": resource(i, "remainingResources", "MEMORY")} for i in self.instances()]
        tasks = [{"service": service_of(t), "instance_arn": t.get("containerInstanceArn"),
                  "task_definition": t["taskDefinitionArn"]} for t in self.tasks()]
        needs = {}
        for arn in {t["task_definition"] for t in tasks if t["service"]}:
            definition = self.api("describe_task_definition", taskDefinition=arn)["taskDefinition"]
            needs[arn] = task_needs(definition)
        shortfalls = capacity_shortfalls(services, instances, tasks, needs, leaving)
        if shortfalls:
            raise ContainerInstanceError(
                f"capacity guard: draining {', '.join(sorted(leaving))} would take "
                f"{len(shortfalls)} service(s) below minimumHealthyPercent; nothing was drained. "
                + "; ".join(s["message"] for s in shortfalls),
                {"capacity_shortfalls": shortfalls})

    def wait(self, arn, tasks_moved, agent, timeout, interval):
        """Polls until the service tasks have left (tasks_moved) and the agent
        is connected (agent). Returns (instance, tasks left, seconds waited)."""
        start = self.clock()
        deadline = start + timeout
        while True:
            instance = self.refresh(arn)
            left = self.left_on(arn) if tasks_moved else None
            moved = not tasks_moved or (
                not left["service"]
                and instance.get("runningTasksCount", 0) + instance.get("pendingTasksCount", 0)
                <= len(left["daemon"]) + len(left["standalone"]))
            connected = not agent or bool(instance.get("agentConnected"))
            if moved and connected:
                return instance, left, round(self.clock() - start, 1)
            remaining = deadline - self.clock()
            if remaining <= 0:
                problems = []
                if not moved:
                    running = Counter(t["service"] for t in left["service"])
                    problems.append("service tasks still on it: " + (", ".join(
                        f"{name} ({count})" for name, count in sorted(running.items()))
                        or f"{instance.get('runningTasksCount', 0)} running, "
                           f"{instance.get('pendingTasksCount', 0)} pending"))
                if not connected:
                    problems.append("the ECS agent is not connected")
                raise ContainerInstanceError(
                    f"{self.instance_id} ({instance.get('status')}) in cluster {self.cluster}: gave up after "
                    f"{timeout}s: " + "; ".join(problems),
                    {"container_instance": instance_view(instance), "tasks": left})
            self.sleep(min(interval, remaining))


def run(options, cluster, instance_id, state, wait=False, wait_agent=None, wait_timeout=600, poll_interval=5,
        capacity_guard=True, batch=(), check_mode=False, sleep=time.sleep, clock=time.monotonic, api=None):
    """Sets the container instance of `instance_id` in `cluster` to `state`
    (draining or active). Returns the module result."""
    batch = [b for b in (batch or []) if b]
    validate(cluster, instance_id, state, wait_timeout, poll_interval, batch)
    if api is None:
        api = Api(client("ecs", options), client("ec2", options))
    wanted = STATUS[state]
    if wait_agent is None:
        wait_agent = wait and wanted == "ACTIVE"
    target = ContainerInstance(api, cluster, instance_id, sleep=sleep, clock=clock)
    target.check_cluster()
    instance = target.find()
    before = instance.get("status")
    arn = instance["containerInstanceArn"]
    if before not in ("ACTIVE", "DRAINING"):
        raise ContainerInstanceError(f"{instance_id} is {before} in cluster {cluster}: only an ACTIVE or DRAINING "
                                     "container instance can be set ACTIVE or DRAINING",
                                     {"container_instance": instance_view(instance)})
    changed = before != wanted
    if changed and wanted == "DRAINING" and capacity_guard:
        target.guard(batch)
    if changed and not check_mode:
        reply = api("update_container_instances_state", cluster=cluster, containerInstances=[arn], status=wanted)
        if reply.get("failures"):
            failure = reply["failures"][0]
            raise ContainerInstanceError(f"ECS refused to set {instance_id} {wanted}: "
                                         f"{failure.get('reason')} {failure.get('detail') or ''}".strip())
        instance = reply["containerInstances"][0]
    waited = 0
    left = None
    if not check_mode and (wait and wanted == "DRAINING" or wait_agent):
        instance, left, waited = target.wait(arn, wait and wanted == "DRAINING", wait_agent, wait_timeout,
                                             poll_interval)
    view = instance_view(instance)
    if check_mode:
        view["status"] = wanted
    result = {"changed": changed, "previous_status": before, "container_instance": view,
              "waited_seconds": waited, "diff": {"before": {"status": before}, "after": {"status": wanted}}}
    if left is not None:
        result["tasks"] = left
    result["api_calls"] = dict(sorted(api.calls.items()))
    return result
