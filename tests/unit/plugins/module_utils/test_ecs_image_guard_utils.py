"""Unit tests for module_utils/ecs_image_guard: parsing, batching limits,
pagination, permissions and waiting, against in-memory stand-ins that enforce
the AWS API limits (moto does not)."""
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from ansible_collections.guardrail.ecs.plugins.module_utils.common.aws import AWSError
from ansible_collections.guardrail.ecs.plugins.module_utils.ecs import image_guard as g

URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
GONE = "sha256:" + "1" * 64
HERE = "sha256:" + "2" * 64
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, seconds", [
    (90, 90), ("90", 90), ("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), (" 2H ", 7200),
])
def test_since_accepts_seconds_and_durations(value, seconds):
    assert g.parse_since(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "6x", "-5", 0, "1h junk", True])
def test_since_refuses_anything_else(value):
    with pytest.raises(g.GuardError, match="since"):
        g.parse_since(value)


def test_cluster_and_service_references():
    assert g.cluster_name("prod") == "prod"
    assert g.cluster_name("arn:aws:ecs:eu-west-1:123456789012:cluster/prod-1") == "prod-1"
    assert g.service_ref("arn:aws:ecs:eu-west-1:123456789012:service/prod/web") == ("prod", "web")
    assert g.service_ref("arn:aws:ecs:eu-west-1:123456789012:service/web") == (None, "web")
    for bad in ("arn:aws:ecs:eu-west-1:cluster/prod", "arn:aws:ecs:eu-west-1:123456789012:service/prod/web"):
        with pytest.raises(g.GuardError, match="malformed cluster ARN"):
            g.cluster_name(bad)
    with pytest.raises(g.GuardError, match="malformed service ARN"):
        g.service_ref("arn:aws:ecs:eu-west-1:123456789012:task/prod/abc")
    with pytest.raises(g.GuardError, match="invalid service name"):
        g.service_ref("web service")


def test_missing_refs_reads_the_pull_failure():
    reason = (f"CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve "
              f"ref {URI}/team/web:latest@{GONE}: {URI}/team/web:latest@{GONE}: not found")
    assert g.missing_refs(reason) == [{"registry": URI, "account": "123456789012", "region": "us-east-1",
                                       "repository": "team/web", "tag": "latest", "digest": GONE}]
    assert g.missing_refs(f"CannotPullContainerError: ref {URI}/web:latest@{GONE}: i/o timeout") == []
    assert g.missing_refs("CannotPullContainerError: docker.io/library/nginx@sha256:" + "3" * 64 + ": not found") == []
    assert g.missing_refs("Essential container in task exited") == []


@pytest.mark.parametrize("selection, reference, expected", [
    ({"tagStatus": "any"}, {"tag": "latest"}, True),
    ({"tagStatus": "untagged"}, {"tag": "latest"}, True),
    ({"tagStatus": "tagged", "tagPrefixList": ["prod"]}, {"tag": "prod-7"}, True),
    ({"tagStatus": "tagged", "tagPrefixList": ["dev-"]}, {"tag": "prod-7"}, False),
    ({"tagStatus": "tagged", "tagPatternList": ["rel-*-final"]}, {"tag": "rel-3-final"}, True),
    ({"tagStatus": "tagged", "tagPatternList": ["rel-*"]}, {"tag": "prod"}, False),
    ({"tagStatus": "tagged", "tagPrefixList": ["v"]}, {"tag": None, "digest": HERE}, True),
])
def test_lifecycle_rule_selection(selection, reference, expected):
    assert g._rule_matches({"selection": selection}, reference, {HERE: ["v1"]}) is expected


class FakeECS:
    """ECS with AWS's limits: pages of 100 ARNs, describe_services 10 per call,
    describe_tasks 100 per call. Records every call."""

    def __init__(self, services=25, tasks_per_service=10):
        self.meta = SimpleNamespace(service_model=SimpleNamespace(service_name="ecs"))
        self._real = boto3.client("ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        self.calls = []
        self.services_ = {}
        self.tasks = []
        for n in range(services):
            name = f"svc{n:03d}"
            self.services_[name] = {
                "serviceName": name, "status": "ACTIVE", "runningCount": 0, "desiredCount": 1,
                "deployments": [{"id": f"ecs-svc/{n}", "status": "PRIMARY", "taskDefinition": f"td/{name}:1",
                                 "createdAt": NOW - timedelta(days=1)}],
            }
            for t in range(tasks_per_service):
                gone = n % 5 == 0
                self.tasks.append({
                    "taskArn": f"arn:aws:ecs:us-east-1:123456789012:task/c1/{name}-{t}",
                    "group": f"service:{name}", "startedBy": f"ecs-svc/{n}",
                    "stoppedAt": NOW - timedelta(minutes=5 + t),
                    "stoppedReason": f"CannotPullContainerError: failed to resolve ref "
                                     f"{URI}/repo{n % 3}:latest@{GONE if gone else HERE}: not found",
                    "containers": [{"name": "app", "image": f"{URI}/repo{n % 3}:latest"}],
                })

    def get_paginator(self, action):
        return self._real.get_paginator(action)

    def _page(self, items, key, kwargs):
        size = min(kwargs.get("maxResults", 10), 100)
        start = int(kwargs.get("nextToken", 0))
        page = {key: items[start:start + size]}
        if start + size < len(items):
            page["nextToken"] = str(start + size)
        return page

    def list_clusters(self, **kwargs):
        self.calls.append("list_clusters")
        return self._page(["arn:aws:ecs:us-east-1:123456789012:cluster/c1"], "clusterArns", kwargs)

    def list_services(self, **kwargs):
        self.calls.append("list_services")
        return self._page(sorted(self.services_), "serviceArns", kwargs)

    def describe_services(self, cluster, services):
        self.calls.append("describe_services")
        assert len(services) <= 10, "describe_services takes at most 10 services"
        return {"services": [self.services_[s] for s in services]}

    def list_tasks(self, **kwargs):
        self.calls.append("list_tasks")
        assert kwargs["desiredStatus"] == "STOPPED"
        group = f"service:{kwargs['serviceName']}" if "serviceName" in kwargs else None
        return self._page([t["taskArn"] for t in self.tasks if group in (None, t["group"])], "taskArns", kwargs)

    def describe_tasks(self, cluster, tasks):
        self.calls.append("describe_tasks")
        assert len(tasks) <= 100, "describe_tasks takes at most 100 tasks"
        wanted = set(tasks)
        return {"tasks": [t for t in self.tasks if t["taskArn"] in wanted]}

    def describe_task_definition(self, taskDefinition):
        self.calls.append("describe_task_definition")
        name = taskDefinition.split("/")[1].split(":")[0]
        n = int(name[3:])
        return {"taskDefinition": {"taskDefinitionArn": taskDefinition, "containerDefinitions": [
            {"name": "app", "image": f"{URI}/repo{n % 3}:latest"}]}}

    def update_service(self, cluster, service, forceNewDeployment):
        self.calls.append("update_service")
        assert forceNewDeployment is True
        svc = self.services_[service]
        svc["deployments"] = [{"id": f"ecs-svc/new-{service}", "status": "PRIMARY", "createdAt": NOW}] + [
            dict(d, status="ACTIVE") for d in svc["deployments"]]
        return {"service": svc}


class FakeECR:
    def __init__(self):
        self.meta = SimpleNamespace(service_model=SimpleNamespace(service_name="ecr"))
        self.calls = []

    def batch_get_image(self, registryId, repositoryName, imageIds):
        self.calls.append("batch_get_image")
        assert len(imageIds) <= 100
        images = [{"imageId": i} for i in imageIds if i.get("imageDigest") != GONE]
        failures = [{"imageId": i, "failureCode": "ImageNotFound"} for i in imageIds if i.get("imageDigest") == GONE]
        return {"images": images, "failures": failures}

    def get_lifecycle_policy(self, registryId, repositoryName):
        self.calls.append("get_lifecycle_policy")
        return {"lifecyclePolicyText": '{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any"}, '
                                       '"action": {"type": "expire"}}]}'}


def test_batches_and_pagination_stay_within_api_limits():
    ecs, ecr = FakeECS(services=25, tasks_per_service=10), FakeECR()
    guard = g.Guard(ecs, lambda region: ecr, now=NOW)
    result = g.run({}, guard=guard, audit=False)

    assert sorted({a["service"] for a in result["affected"]}) == ["svc000", "svc005", "svc010", "svc015", "svc020"]
    assert all(a["failed_tasks"] == 10 for a in result["affected"])
    assert ecs.calls.count("list_services") == 1
    assert ecs.calls.count("describe_services") == 3  # 25 services, 10 per call
    assert ecs.calls.count("list_tasks") == 3  # 250 task ARNs, 100 per page
    assert ecs.calls.count("describe_tasks") == 3
    assert ecr.calls == ["batch_get_image"] * 3  # one per repository


def test_a_reason_repeated_by_container_and_task_counts_once():
    reason = f"CannotPullContainerError: failed to resolve ref {URI}/web:latest@{GONE}: not found"
    task = {"group": "service:web", "startedBy": "ecs-svc/1", "stoppedAt": NOW, "stoppedReason": reason,
            "containers": [{"name": "web", "image": f"{URI}/web:latest", "reason": reason},
                           {"name": "sidecar", "image": f"{URI}/proxy:1"}]}
    found = g.Guard.failures("c1", {"web"}, [task, dict(task, stoppedAt=NOW - timedelta(minutes=3))])
    assert [(f["container"], f["failed_tasks"], f["first"], f["last"]) for f in found] == [
        ("web", 2, NOW - timedelta(minutes=3), NOW)]


def test_services_at_full_strength_are_not_read():
    ecs, ecr = FakeECS(services=30, tasks_per_service=10), FakeECR()
    for name, service in ecs.services_.items():
        service["runningCount"] = 0 if name in ("svc000", "svc007") else 1
    result = g.run({}, guard=g.Guard(ecs, lambda region: ecr, now=NOW), audit=False)
    assert [a["service"] for a in result["affected"]] == ["svc000"]
    assert ecs.calls.count("list_tasks") == 2  # per suspect service, not the cluster's 300 tasks
    assert ecs.calls.count("describe_tasks") == 1

    ecs.calls.clear()
    ecs.services_["svc000"]["runningCount"] = ecs.services_["svc007"]["runningCount"] = 1
    assert g.run({}, guard=g.Guard(ecs, lambda region: ecr, now=NOW), audit=False)["affected"] == []
    assert "list_tasks" not in ecs.calls and "describe_tasks" not in ecs.calls


@pytest.mark.parametrize("service, expected", [
    ({"runningCount": 2, "desiredCount": 2, "deployments": [{"status": "PRIMARY"}]}, False),
    ({"runningCount": 1, "desiredCount": 2, "deployments": [{"status": "PRIMARY"}]}, True),
    ({"runningCount": 2, "desiredCount": 2, "deployments": [{"status": "PRIMARY"}, {"status": "ACTIVE"}]}, True),
    ({"runningCount": 2, "desiredCount": 2, "deployments": [{"status": "PRIMARY", "failedTasks": 3}]}, True),
    ({"runningCount": 2, "desiredCount": 2, "deployments": [{"status": "PRIMARY", "rolloutState": "FAILED"}]}, True),
])
def test_suspect_services(service, expected):
    assert g.suspect(service) is expected


def test_recover_once_per_service_and_skip_when_newer_deployment_exists():
    ecs, ecr = FakeECS(services=10, tasks_per_service=2), FakeECR()
    result = g.run({}, guard=g.Guard(ecs, lambda region: ecr, now=NOW), mode="recover", audit=False)
    assert [r["service"] for r in result["redeployed"]] == ["svc000", "svc005"]
    assert ecs.calls.count("update_service") == 2

    ecs.calls.clear()
    again = g.run({}, guard=g.Guard(ecs, lambda region: ecr, now=NOW), mode="recover", audit=False)
    assert again["redeployed"] == [] and "update_service" not in ecs.calls
    assert {a["recovery"] for a in again["affected"]} == {"a newer deployment exists"}


def test_audit_reads_each_task_definition_and_repository_once():
    ecs, ecr = FakeECS(services=6, tasks_per_service=1), FakeECR()
    result = g.run({}, guard=g.Guard(ecs, lambda region: ecr, now=NOW))
    assert ecs.calls.count("describe_task_definition") == 6
    assert ecr.calls.count("get_lifecycle_policy") == 3
    assert sorted(r["repository"] for r in result["audit"]["lifecycle"]) == ["repo0", "repo1", "repo2"]
    assert {v["version_consistency"] for v in result["audit"]["version_consistency"]} == {"enabled"}


def test_stopped_tasks_outside_the_window_are_ignored():
    ecs, ecr = FakeECS(services=5, tasks_per_service=10), FakeECR()
    result = g.run({}, guard=g.Guard(ecs, lambda region: ecr, now=NOW), since="7m", audit=False)
    assert [a["failed_tasks"] for a in result["affected"]] == [3]  # stopped 5, 6 and 7 minutes ago
    assert result["affected"][0]["first_failure"] == "2026-11-21T08:53:00Z"
    assert result["affected"][0]["last_failure"] == "2026-11-21T08:55:00Z"


def test_missing_permission_names_the_api_action():
    ecs = boto3.client("ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(ecs) as stub:
        stub.add_client_error("list_clusters", service_error_code="AccessDeniedException",
                              service_message="not authorized to perform: ecs:ListClusters", http_status_code=400)
        with pytest.raises(AWSError) as info:
            g.run({}, guard=g.Guard(ecs, lambda region: None, now=NOW))
    assert info.value.action == "ecs:ListClusters"
    assert "permission denied for ecs:ListClusters" in str(info.value)


def test_throttling_is_retried():
    ecs, ecr = FakeECS(services=1, tasks_per_service=1), FakeECR()
    real = ecs.describe_services
    attempts = []

    def throttled(**kwargs):
        attempts.append(1)
        if len(attempts) < 3:
            raise botocore.exceptions.ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate"}},
                                                  "DescribeServices")
        return real(**kwargs)

    ecs.describe_services = throttled
    result = g.run({}, guard=g.Guard(ecs, lambda region: ecr, now=NOW), audit=False)
    assert len(attempts) == 3 and len(result["affected"]) == 1


def test_wait_stable_polls_until_stable_and_times_out_clearly():
    ecs = FakeECS(services=1, tasks_per_service=0)
    clock = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds
        if clock[0] >= 10:
            ecs.services_["svc000"]["runningCount"] = 1

    guard = g.Guard(ecs, None, now=NOW, sleep=sleep, clock=lambda: clock[0])
    guard.wait_stable([{"cluster": "c1", "service": "svc000"}], timeout=60)
    assert sum(sleeps) >= 10

    ecs.services_["svc000"]["runningCount"] = 0
    clock[0] = 0
    never = g.Guard(ecs, None, now=NOW, sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])
    with pytest.raises(g.GuardError, match=r"within 12s: c1/svc000 \(running 0 of 1, 1 deployments\)"):
        never.wait_stable([{"cluster": "c1", "service": "svc000"}], timeout=12)
