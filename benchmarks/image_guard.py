"""API calls and wall time of guardrail.ecs.ecs_image_guard on a moto server.

200 services and 2,000 stopped tasks (10 per service) over 5 ECR repositories;
every tenth service pulls a deleted digest and has drained, the others run
their desired count. Counts each API request with a botocore event hook and
compares, in the same run:

  target     ceil(services/10) + ceil(tasks/100) + repositories + 5 (the issue's ceiling)
  guard      one report pass, audit off and audit on
  naive      the unbatched reference: describe each service and each task alone

Two moto 5.2 gaps would distort the count, so this process closes them inside
moto the way AWS behaves: ListServices and ListTasks return everything in one
page (AWS pages at maxResults, at most 100), and ListTasks ignores serviceName
(a TODO in moto's code).

Usage: .venv/bin/python benchmarks/image_guard.py [--quick] [--services N] [--tasks-per-service N]
"""
import argparse
import math
import os
import runpy
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
runpy.run_path(str(ROOT / "tests" / "conftest.py"))  # makes this checkout importable as guardrail.ecs
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import conftest  # noqa: E402  (tests/integration/conftest.py: moto helpers)
import ecs_image_guard_helpers as helpers  # noqa: E402
from ansible_collections.guardrail.ecs.plugins.module_utils.common import aws  # noqa: E402
from ansible_collections.guardrail.ecs.plugins.module_utils.ecs import image_guard as guard  # noqa: E402

REPOSITORIES = 5
CONSTANT = 5


def behave_like_aws():
    """Pages ListServices/ListTasks at maxResults and filters ListTasks by serviceName."""
    from moto.core.responses import ActionResult
    from moto.ecs.models import EC2ContainerServiceBackend
    from moto.ecs.responses import EC2ContainerServiceResponse

    def paged(method, key):
        def respond(self):
            items = method(self).result[key]
            size = min(int(self._get_param("maxResults") or 100), 100)
            start = int(self._get_param("nextToken") or 0)
            page = {key: items[start:start + size]}
            if start + size < len(items):
                page["nextToken"] = str(start + size)
            return ActionResult(page)
        return respond

    unfiltered = EC2ContainerServiceBackend.list_tasks

    def list_tasks(self, cluster_str=None, container_instance=None, family=None, started_by=None,
                   service_name=None, desiredStatus=None):
        tasks = unfiltered(self, cluster_str, container_instance, family, started_by, None, desiredStatus)
        return [t for t in tasks if not service_name or t.group == f"service:{service_name}"]

    EC2ContainerServiceBackend.list_tasks = list_tasks
    EC2ContainerServiceResponse.list_tasks = paged(EC2ContainerServiceResponse.list_tasks, "taskArns")
    EC2ContainerServiceResponse.list_services = paged(EC2ContainerServiceResponse.list_services, "serviceArns")


def build(endpoint, services, tasks_per_service):
    c = helpers.clients(endpoint)
    uris, gone = {}, {}
    for r in range(REPOSITORIES):
        name = f"app{r}"
        uris[name] = c["ecr"].create_repository(repositoryName=name)["repository"]["repositoryUri"]
        gone[name] = helpers.push(c["ecr"], name, "latest", f"{name}-old")
        helpers.push(c["ecr"], name, "latest", f"{name}-new")
        c["ecr"].batch_delete_image(repositoryName=name, imageIds=[{"imageDigest": gone[name]}])
    helpers.cluster_with_instance(c, "bench")
    affected = set()
    for n in range(services):
        repository = f"app{(n // 10) % REPOSITORIES}"
        name = f"svc{n:03d}"
        deployment = helpers.service(c, "bench", name, f"{uris[repository]}:latest")
        if n % 10 == 0:
            affected.add(name)
            reason = helpers.pull_failure(uris[repository], "latest", gone[repository])
        else:
            reason = "Essential container in task exited"
        arns = helpers.stopped_tasks(c, "bench", name, deployment, reason, count=tasks_per_service)
        helpers.stamp_stopped_at("bench", arns, helpers.minutes_ago(10))
        if name not in affected:
            # moto counts a service as running its desired count once that count is set.
            c["ecs"].update_service(cluster="bench", service=name, desiredCount=2)
    return affected


def counted_clients(endpoint):
    options = dict(region=helpers.REGION, access_key="testing", secret_key="testing", endpoint_url=endpoint)
    calls = Counter()

    def count(model, **_):
        calls[f"{model.service_model.service_name}:{model.name}"] += 1

    ecs = aws.client("ecs", options)
    ecr = aws.client("ecr", options)
    for api in (ecs, ecr):
        api.meta.events.register("before-call.*.*", count)
    return ecs, ecr, calls


def guarded(endpoint, audit):
    ecs, ecr, calls = counted_clients(endpoint)
    start = time.perf_counter()
    result = guard.run({}, guard=guard.Guard(ecs, lambda region: ecr), audit=audit)
    return result, calls, time.perf_counter() - start


def naive(endpoint):
    """Unbatched: one describe per service and per task, one ECR lookup per failure."""
    ecs, ecr, calls = counted_clients(endpoint)
    start = time.perf_counter()
    affected = set()
    for arn in aws.paginate(ecs, "list_services", "serviceArns", cluster="bench", maxResults=100):
        ecs.describe_services(cluster="bench", services=[arn])
    for arn in aws.paginate(ecs, "list_tasks", "taskArns", cluster="bench", desiredStatus="STOPPED",
                            maxResults=100):
        task = ecs.describe_tasks(cluster="bench", tasks=[arn])["tasks"][0]
        for ref in guard.missing_refs(task.get("stoppedReason")):
            reply = ecr.batch_get_image(repositoryName=ref["repository"], imageIds=[{"imageDigest": ref["digest"]}])
            if not reply["images"]:
                affected.add(task["group"].split(":", 1)[1])
    return affected, calls, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--tasks-per-service", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="50 services instead of 200")
    args = parser.parse_args()
    if args.quick:
        args.services = 50
    for key, value in conftest.AWS_TEST_ENV.items():
        os.environ.setdefault(key, value)

    from moto.server import ThreadedMotoServer

    port = conftest.free_port()
    behave_like_aws()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        start = time.perf_counter()
        expected = build(endpoint, args.services, args.tasks_per_service)
        print(f"setup: {args.services} services, {args.services * args.tasks_per_service} stopped tasks, "
              f"{REPOSITORIES} repositories on moto in {time.perf_counter() - start:.1f}s")
        services, tasks = args.services, args.services * args.tasks_per_service
        target = math.ceil(services / 10) + math.ceil(tasks / 100) + REPOSITORIES + CONSTANT

        result, calls, seconds = guarded(endpoint, audit=False)
        found = {a["service"] for a in result["affected"]}
        assert found == expected, f"guard found {sorted(found ^ expected)} wrongly"
        total = sum(calls.values())
        print(f"\nguard, audit off: {total} calls in {seconds:.2f}s, {len(found)} affected services found")
        for name, count in sorted(calls.items()):
            print(f"  {name:28} {count}")
        print(f"target ceil({services}/10) + ceil({tasks}/100) + {REPOSITORIES} + {CONSTANT} = {target}")
        print(f"guard: {total} calls = {total / target:.2f} x target -> {'within' if total <= target else 'OVER'} target")

        audit_result, audit_calls, audit_seconds = guarded(endpoint, audit=True)
        assert {a["service"] for a in audit_result["affected"]} == expected
        print(f"\nguard, audit on: {sum(audit_calls.values())} calls in {audit_seconds:.2f}s "
              f"(+{audit_calls['ecs:DescribeTaskDefinition']} DescribeTaskDefinition, one per task definition, "
              f"+{audit_calls['ecr:GetLifecyclePolicy']} GetLifecyclePolicy, one per repository)")

        naive_found, naive_calls, naive_seconds = naive(endpoint)
        assert naive_found == expected
        naive_total = sum(naive_calls.values())
        print(f"\nnaive reference: {naive_total} calls in {naive_seconds:.2f}s")
        print(f"guard / naive: calls {total / naive_total:.3f}, wall time {seconds / naive_seconds:.3f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
