"""An ECS cluster on a moto server for the rolling-change tests, and a stand-in
for the ECS service scheduler.

moto never starts or moves service tasks. Tasks are started with start_task on
a chosen instance, with group="service:<name>" and startedBy=<deployment id>,
as ECS's scheduler starts them. The `Scheduler` thread does what ECS does for a
DRAINING instance: for each service task on it, run_task one replacement
(moto places it on an ACTIVE instance with room) and, once placed, stop_task
the old one; a task without room stays, as in ECS. `set_agent_connected`
writes agentConnected onto moto's model in this process (the server runs
in-process): the ECS agent's connection is the one thing simulated outside the
API.
"""
import json
import threading
import time
import urllib.request
from collections import defaultdict

from ecs_image_guard_helpers import ACCOUNT, REGION, clients

DRAIN_REASON = "Service scheduler (stand-in): container instance is DRAINING"


def hold_task_states(endpoint):
    """moto walks a task's lastStatus one step towards STOPPED at every
    describe_tasks unless told otherwise; ECS tasks stay RUNNING until stopped."""
    body = json.dumps({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10 ** 9}})
    request = urllib.request.Request(f"{endpoint}/moto-api/state-manager/set-transition", data=body.encode(),
                                     method="POST")
    urllib.request.urlopen(request, timeout=10).read()


def cluster(c, name, hosts):
    """A cluster with one container instance per host name. Returns {host: EC2 instance id}."""
    c["ecs"].create_cluster(clusterName=name)
    ids = {}
    for host in hosts:
        instance = c["ec2"].run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                          TagSpecifications=[{"ResourceType": "instance",
                                                              "Tags": [{"Key": "Name", "Value": host}]}])
        ids[host] = instance["Instances"][0]["InstanceId"]
        c["ecs"].register_container_instance(
            cluster=name, instanceIdentityDocument=json.dumps({"instanceId": ids[host], "region": REGION}))
    return ids


def instances(c, name):
    arns = c["ecs"].list_container_instances(cluster=name)["containerInstanceArns"]
    described = c["ecs"].describe_container_instances(cluster=name, containerInstances=arns)
    return {i["ec2InstanceId"]: i for i in described["containerInstances"]}


def statuses(c, name):
    return {ec2_id: i["status"] for ec2_id, i in instances(c, name).items()}


def set_status(c, name, ec2_id, status):
    arn = instances(c, name)[ec2_id]["containerInstanceArn"]
    c["ecs"].update_container_instances_state(cluster=name, containerInstances=[arn], status=status)


def task_definition(c, family, memory):
    container = {"name": family, "image": "lab/busybox", "memory": memory, "essential": True}
    return c["ecs"].register_task_definition(family=family, networkMode="bridge",
                                             containerDefinitions=[container])["taskDefinition"]["taskDefinitionArn"]


def service(c, name, service_name, placement, memory=256, minimum_healthy_percent=100, daemon=False):
    """A service whose tasks run on the EC2 instances in `placement` (one task
    per entry; a daemon service gets one per instance given). Returns its ARN."""
    arn = task_definition(c, service_name, memory)
    kwargs = dict(cluster=name, serviceName=service_name, taskDefinition=arn, launchType="EC2")
    if daemon:
        kwargs["schedulingStrategy"] = "DAEMON"
    else:
        kwargs.update(desiredCount=len(placement), deploymentConfiguration={
            "minimumHealthyPercent": minimum_healthy_percent, "maximumPercent": 200})
    created = c["ecs"].create_service(**kwargs)["service"]
    deployment = created["deployments"][0]["id"] if created.get("deployments") else "ecs-svc/daemon"
    by_id = instances(c, name)
    for ec2_id in placement:
        c["ecs"].start_task(cluster=name, taskDefinition=arn, containerInstances=[by_id[ec2_id]["containerInstanceArn"]],
                            group=f"service:{service_name}", startedBy=deployment)
    return created["serviceArn"]


def standalone_task(c, name, ec2_id, family="batch-job"):
    arn = task_definition(c, family, 64)
    target = instances(c, name)[ec2_id]["containerInstanceArn"]
    return c["ecs"].start_task(cluster=name, taskDefinition=arn, containerInstances=[target])["tasks"][0]["taskArn"]


def running_tasks(c, name):
    """{service or None: {EC2 instance id: count}} of the tasks desired RUNNING."""
    by_arn = {i["containerInstanceArn"]: ec2_id for ec2_id, i in instances(c, name).items()}
    arns = c["ecs"].list_tasks(cluster=name, desiredStatus="RUNNING")["taskArns"]
    counts = defaultdict(lambda: defaultdict(int))
    for start in range(0, len(arns), 100):
        for task in c["ecs"].describe_tasks(cluster=name, tasks=arns[start:start + 100])["tasks"]:
            group = task.get("group", "")
            counts[group[len("service:"):] if group.startswith("service:") else None][
                by_arn[task["containerInstanceArn"]]] += 1
    return {service: dict(hosts) for service, hosts in counts.items()}


def set_agent_connected(ec2_id, connected):
    from moto.ecs.models import ecs_backends

    for cluster_instances in ecs_backends[ACCOUNT][REGION].container_instances.values():
        for instance in cluster_instances.values():
            if instance.ec2_instance_id == ec2_id:
                instance.agent_connected = connected


class Scheduler(threading.Thread):
    """Moves the service tasks off DRAINING instances, one replacement at a
    time, each after `delay` seconds (ECS is not instant either).
    `while_draining(ec2_id)`, when set, runs once per drain before the first
    task moves: the play waits for the moves, so it happens after the host
    left service and before the play changes it."""

    def __init__(self, endpoint, name, delay=0.3, while_draining=None):
        super().__init__(daemon=True)
        self.c = clients(endpoint)
        self.name = name
        self.delay = delay
        self.while_draining = while_draining
        self.drains_seen = set()
        self.moves = []
        self.errors = []
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()
        self.join(timeout=10)
        assert not self.errors, f"the stand-in scheduler failed: {self.errors}"

    def run(self):
        while not self._halt.wait(self.delay):
            try:
                self.step()
            except Exception as exc:  # reported by stop(); the thread must not die silently
                self.errors.append(repr(exc))
                return

    def step(self):
        ecs = self.c["ecs"]
        daemons = {s["serviceName"] for s in ecs.describe_services(
            cluster=self.name, services=ecs.list_services(cluster=self.name)["serviceArns"] or ["none"])["services"]
            if s.get("schedulingStrategy") == "DAEMON"}
        for ec2_id, instance in instances(self.c, self.name).items():
            if instance["status"] != "DRAINING":
                self.drains_seen.discard(ec2_id)
                continue
            if self.while_draining and ec2_id not in self.drains_seen:
                self.while_draining(ec2_id)
            self.drains_seen.add(ec2_id)
            arns = ecs.list_tasks(cluster=self.name, containerInstance=instance["containerInstanceArn"],
                                  desiredStatus="RUNNING")["taskArns"]
            if not arns:
                continue
            for task in ecs.describe_tasks(cluster=self.name, tasks=arns)["tasks"]:
                group = task.get("group", "")
                if not group.startswith("service:") or group[len("service:"):] in daemons:
                    continue
                placed = ecs.run_task(cluster=self.name, taskDefinition=task["taskDefinitionArn"], count=1,
                                      launchType="EC2", group=group, startedBy=task.get("startedBy", ""))["tasks"]
                if not placed:
                    continue
                ecs.stop_task(cluster=self.name, task=task["taskArn"], reason=DRAIN_REASON)
                self.moves.append((time.time(), group, ec2_id))
                return
