"""Builds ECS/ECR states on a moto server for the image guard tests and benchmark.

moto never launches service tasks, so a service's tasks are started with
run_task(group="service:<name>", startedBy=<deployment id>) and stopped with
stop_task(reason=...), which moto stores as the task's stoppedReason. moto
records no stop time for tasks; `stamp_stopped_at` writes one onto moto's task
model in this process (the server runs in-process), the only part simulated
outside the API.
"""
import hashlib
import json
from datetime import datetime, timedelta, timezone

import boto3

REGION = "us-east-1"
ACCOUNT = "123456789012"


def clients(endpoint):
    kwargs = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                  aws_secret_access_key="testing", aws_session_token="testing")
    return {name: boto3.client(name, **kwargs) for name in ("ecs", "ecr", "ec2")}


def manifest(seed):
    """An image manifest whose digest is unique to `seed` (moto derives the
    image digest from the layers)."""
    def digest(kind):
        return "sha256:" + hashlib.sha256(f"{kind}-{seed}".encode()).hexdigest()

    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469,
                   "digest": digest("config")},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2811478,
                    "digest": digest("layer")}],
    })


def push(ecr, repository, tag, seed):
    """Pushes an image; returns its digest."""
    image = ecr.put_image(repositoryName=repository, imageManifest=manifest(seed), imageTag=tag)["image"]
    return image["imageId"]["imageDigest"]


def pull_failure(uri, tag, digest):
    ref = f"{uri}:{tag}@{digest}" if tag else f"{uri}@{digest}"
    return (f"CannotPullContainerError: pull image manifest has been retried 5 time(s): "
            f"failed to resolve ref {ref}: {ref}: not found")


def cluster_with_instance(c, name):
    """A cluster with one registered container instance, so EC2 run_task places tasks."""
    c["ecs"].create_cluster(clusterName=name)
    instance = c["ec2"].run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]
    c["ecs"].register_container_instance(
        cluster=name, instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"], "region": REGION}))


def service(c, cluster, name, image, desired=2, version_consistency=None):
    """A bridge-mode task definition and a service on it; returns the
    service's deployment id."""
    container = {"name": name, "image": image, "memory": 64, "essential": True}
    if version_consistency:
        container["versionConsistency"] = version_consistency
    arn = c["ecs"].register_task_definition(family=name, networkMode="bridge",
                                            containerDefinitions=[container])["taskDefinition"]["taskDefinitionArn"]
    created = c["ecs"].create_service(cluster=cluster, serviceName=name, taskDefinition=arn, desiredCount=desired,
                                      launchType="EC2")["service"]
    return created["deployments"][0]["id"]


def stopped_tasks(c, cluster, name, deployment_id, reason, count=1, stopped_at=None):
    """Runs `count` tasks of the service's deployment and stops them with
    `reason`. Returns their ARNs."""
    definition = c["ecs"].describe_services(cluster=cluster, services=[name])["services"][0]["taskDefinition"]
    arns = []
    remaining = count
    while remaining:
        batch = min(10, remaining)
        tasks = c["ecs"].run_task(cluster=cluster, taskDefinition=definition, count=batch, launchType="EC2",
                                  group=f"service:{name}", startedBy=deployment_id)["tasks"]
        assert len(tasks) == batch, f"moto placed {len(tasks)} of {batch} tasks"
        for task in tasks:
            c["ecs"].stop_task(cluster=cluster, task=task["taskArn"], reason=reason)
            arns.append(task["taskArn"])
        remaining -= batch
    if stopped_at is not None:
        stamp_stopped_at(cluster, arns, stopped_at)
    return arns


def stamp_stopped_at(cluster, arns, when):
    from moto.ecs.models import ecs_backends

    tasks = ecs_backends[ACCOUNT][REGION].tasks[cluster]
    for arn in arns:
        tasks[arn].stopped_at = when


def minutes_ago(minutes):
    return datetime.now(timezone.utc) - timedelta(minutes=minutes)


def deployment_ids(c, cluster, names):
    reply = c["ecs"].describe_services(cluster=cluster, services=list(names))
    return {s["serviceName"]: [d["id"] for d in s["deployments"]] for s in reply["services"]}


def incident(endpoint):
    """The standard incident, on two clusters.

    prod/web     tag `latest` moved to a new image, the deployment's digest was
                 deleted, tasks fail to pull it          -> affected, recoverable
    prod/pinned  task definition pins a digest that was deleted -> affected,
                 not recoverable by a new deployment
    prod/api     healthy: tasks exited normally, and one pull failure for a
                 digest ECR still has (a registry hiccup) -> not affected
    prod/old     pull failures of a deployment that no longer exists -> not affected
    batch/worker like web, in a second cluster           -> affected, recoverable
    """
    c = clients(endpoint)
    ecr = c["ecr"]
    uris = {}
    for repository in ("web", "api", "worker", "pinned", "old"):
        uris[repository] = ecr.create_repository(repositoryName=repository)["repository"]["repositoryUri"]
    web_old = push(ecr, "web", "latest", "web-1")
    push(ecr, "web", "latest", "web-2")
    api_digest = push(ecr, "api", "latest", "api-1")
    worker_old = push(ecr, "worker", "stable", "worker-1")
    push(ecr, "worker", "stable", "worker-2")
    pinned = push(ecr, "pinned", "v1", "pinned-1")
    old_gone = push(ecr, "old", "latest", "old-1")
    push(ecr, "old", "latest", "old-2")
    for repository, digest in (("web", web_old), ("worker", worker_old), ("pinned", pinned), ("old", old_gone)):
        ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageDigest": digest}])
    ecr.put_lifecycle_policy(repositoryName="web", lifecyclePolicyText=json.dumps({"rules": [{
        "rulePriority": 1, "description": "expire untagged after a day",
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                      "countNumber": 1},
        "action": {"type": "expire"}}]}))
    ecr.put_lifecycle_policy(repositoryName="api", lifecyclePolicyText=json.dumps({"rules": [{
        "rulePriority": 1, "description": "keep 5 dev images",
        "selection": {"tagStatus": "tagged", "tagPrefixList": ["dev-"], "countType": "imageCountMoreThan",
                      "countNumber": 5},
        "action": {"type": "expire"}}]}))

    cluster_with_instance(c, "prod")
    cluster_with_instance(c, "batch")
    deployments = {
        "web": service(c, "prod", "web", f"{uris['web']}:latest"),
        "pinned": service(c, "prod", "pinned", f"{uris['pinned']}@{pinned}", version_consistency="disabled"),
        "api": service(c, "prod", "api", f"{uris['api']}:latest"),
        "old": service(c, "prod", "old", f"{uris['old']}:latest"),
        "worker": service(c, "batch", "worker", f"{uris['worker']}:stable"),
    }
    stopped_tasks(c, "prod", "web", deployments["web"], pull_failure(uris["web"], "latest", web_old), count=3,
                  stopped_at=minutes_ago(20))
    stopped_tasks(c, "prod", "web", deployments["web"], pull_failure(uris["web"], "latest", web_old), count=1,
                  stopped_at=minutes_ago(5))
    stopped_tasks(c, "prod", "pinned", deployments["pinned"], pull_failure(uris["pinned"], None, pinned), count=2,
                  stopped_at=minutes_ago(10))
    stopped_tasks(c, "prod", "api", deployments["api"], "Essential container in task exited", count=2,
                  stopped_at=minutes_ago(10))
    stopped_tasks(c, "prod", "api", deployments["api"],
                  f"CannotPullContainerError: failed to resolve ref {uris['api']}:latest@{api_digest}: "
                  "dial tcp: i/o timeout", stopped_at=minutes_ago(10))
    stopped_tasks(c, "prod", "old", "ecs-svc/1111111111111111111", pull_failure(uris["old"], "latest", old_gone),
                  count=2, stopped_at=minutes_ago(10))
    stopped_tasks(c, "batch", "worker", deployments["worker"], pull_failure(uris["worker"], "stable", worker_old),
                  count=2, stopped_at=minutes_ago(15))
    return {"clients": c, "uris": uris, "deployments": deployments,
            "digests": {"web": web_old, "worker": worker_old, "pinned": pinned, "old": old_gone, "api": api_digest}}
