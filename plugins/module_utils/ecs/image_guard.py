# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finds ECS services starved by an ECR image that a deployment still pins, and
recovers them with one new deployment each.

ECS resolves a tag to a digest when a deployment starts; every later task of
that deployment pulls the digest. When a lifecycle policy deletes the image,
replacement tasks stop with `CannotPullContainerError ... <ref>@sha256:...: not
found` while the tag itself still pulls. Plain Python, no AnsibleModule.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

from ansible_collections.guardrail.ecs.plugins.module_utils.common.aws import AWSError, call, client, paginate

DESCRIBE_SERVICES_BATCH = 10
DESCRIBE_TASKS_BATCH = 100
DESCRIBE_CLUSTERS_BATCH = 100
ECR_IMAGE_BATCH = 100
ACTIVE_DEPLOYMENT_STATUSES = ("PRIMARY", "ACTIVE")

_NAME = r"[A-Za-z0-9_-]{1,255}"
_ARN_HEAD = r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:"
CLUSTER_ARN = re.compile(rf"^{_ARN_HEAD}cluster/(?P<name>{_NAME})$")
SERVICE_ARN = re.compile(rf"^{_ARN_HEAD}service/(?:(?P<cluster>{_NAME})/)?(?P<name>{_NAME})$")
NAME = re.compile(rf"^{_NAME}$")

# <account>.dkr.ecr.<region>.amazonaws.com/<repo>[:<tag>]@sha256:<hex>
ECR_REF = re.compile(
    r"(?P<registry>(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?)"
    r"/(?P<repository>[a-z0-9][a-z0-9._/-]*?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
    r"(?=$|[\s:,;)\]\"'])"
)
PULL_ERROR = "CannotPullContainerError"
DURATION = re.compile(r"(\d+)\s*([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class GuardError(ValueError):
    """Bad input or a state the guard refuses to act on; nothing was changed."""


def parse_since(value):
    """Seconds in `value`: an integer number of seconds, or a duration such as
    `30m`, `6h`, `1d` or `1h30m`."""
    if isinstance(value, bool):
        raise GuardError(f"since: expected seconds or a duration such as 30m, 6h or 1d, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = int(value)
    else:
        text = str(value).strip().lower()
        if text.isdigit():
            seconds = int(text)
        elif text and DURATION.sub("", text).strip() == "" and DURATION.search(text):
            seconds = sum(int(n) * UNITS[u] for n, u in DURATION.findall(text))
        else:
            raise GuardError(f"since: expected seconds or a duration such as 30m, 6h or 1d, got {value!r}")
    if seconds <= 0:
        raise GuardError(f"since must be a positive duration, got {value!r}")
    return seconds


def cluster_name(value):
    """The cluster name in a name or cluster ARN; refuses anything else."""
    text = str(value)
    if text.startswith("arn:"):
        match = CLUSTER_ARN.match(text)
        if not match:
            raise GuardError(f"malformed cluster ARN {text!r}: expected "
                             "arn:aws:ecs:<region>:<account>:cluster/<name>")
        return match.group("name")
    if not NAME.match(text):
        raise GuardError(f"invalid cluster name {text!r}: up to 255 letters, digits, '-' and '_'")
    return text


def service_ref(value):
    """(cluster or None, service name) for a service name or service ARN."""
    text = str(value)
    if text.startswith("arn:"):
        match = SERVICE_ARN.match(text)
        if not match:
            raise GuardError(f"malformed service ARN {text!r}: expected "
                             "arn:aws:ecs:<region>:<account>:service/<cluster>/<name>")
        return match.group("cluster"), match.group("name")
    if not NAME.match(text):
        raise GuardError(f"invalid service name {text!r}: up to 255 letters, digits, '-' and '_'")
    return None, text


def parse_image(image):
    """The ECR parts of an image reference, or None for other registries."""
    match = ECR_REF.fullmatch(image or "")
    return match.groupdict() if match else None


def missing_refs(reason):
    """ECR references with a digest named in a pull failure for a manifest not found."""
    if not reason or PULL_ERROR not in reason or "not found" not in reason.lower():
        return []
    refs = []
    for match in ECR_REF.finditer(reason):
        ref = match.groupdict()
        if ref["digest"] and ref not in refs:
            refs.append(ref)
    return refs


def chunks(items, size):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def iso(value):
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def as_datetime(value):
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class Guard:
    """One pass over the selected clusters and services.

    `ecs` and `ecr_for(region)` are boto3 clients (or stand-ins with the same
    methods); every request goes through aws.call, which retries throttling.
    """

    def __init__(self, ecs, ecr_for, now=None, sleep=time.sleep, clock=time.monotonic):
        self.ecs = ecs
        self.ecr_for = ecr_for
        self.now = now or datetime.now(timezone.utc)
        self.sleep = sleep
        self.clock = clock
        self._task_definitions = {}

    # ---- selection

    def clusters(self, requested):
        """Cluster names to inspect. Unknown or inactive clusters are an error."""
        if not requested:
            return [arn.split("/", 1)[1] for arn in paginate(self.ecs, "list_clusters", "clusterArns")]
        names = []
        for value in requested:
            name = cluster_name(value)
            if name not in names:
                names.append(name)
        found = set()
        for batch in chunks(names, DESCRIBE_CLUSTERS_BATCH):
            reply = call(self.ecs, "describe_clusters", clusters=batch)
            found.update(c["clusterName"] for c in reply.get("clusters", []) if c.get("status") == "ACTIVE")
        unknown = [name for name in names if name not in found]
        if unknown:
            raise GuardError(f"cluster not found or not active: {', '.join(unknown)}")
        return names

    def services(self, cluster, requested):
        """Described services of `cluster`: all, or those named in `requested`
        (a list of service names). describe_services takes 10 per call."""
        if requested is None:
            arns = list(paginate(self.ecs, "list_services", "serviceArns", cluster=cluster, maxResults=100))
        else:
            arns = list(requested)
        described = []
        for batch in chunks(arns, DESCRIBE_SERVICES_BATCH):
            reply = call(self.ecs, "describe_services", cluster=cluster, services=batch)
            described.extend(s for s in reply.get("services", []) if s.get("status") != "INACTIVE")
        return described

    def stopped_tasks(self, cluster, services, since_seconds):
        """Stopped tasks, within the window, of the services that may be starving.

        A service running its desired count on a single deployment with no
        failed tasks is not starving, and its tasks are not read. When few
        services are suspect, their tasks are listed per service; when many
        are, listing the whole cluster once is cheaper. describe_tasks takes
        100 per call. A task without any timestamp is kept."""
        suspects = [s["serviceName"] for s in services if suspect(s)]
        if not suspects:
            return []
        if len(suspects) <= -(-len(services) // DESCRIBE_SERVICES_BATCH):
            arns = []
            for name in suspects:
                arns.extend(paginate(self.ecs, "list_tasks", "taskArns", cluster=cluster, serviceName=name,
                                     desiredStatus="STOPPED", maxResults=100))
        else:
            arns = list(paginate(self.ecs, "list_tasks", "taskArns", cluster=cluster,
                                 desiredStatus="STOPPED", maxResults=100))
        horizon = self.now - timedelta(seconds=since_seconds)
        tasks = []
        for batch in chunks(dict.fromkeys(arns), DESCRIBE_TASKS_BATCH):
            reply = call(self.ecs, "describe_tasks", cluster=cluster, tasks=batch)
            for task in reply.get("tasks", []):
                when = as_datetime(task.get("stoppedAt") or task.get("stoppingAt") or task.get("createdAt"))
                if when is None or when >= horizon:
                    tasks.append(task)
        return tasks

    def task_definition(self, arn):
        if arn not in self._task_definitions:
            reply = call(self.ecs, "describe_task_definition", taskDefinition=arn)
            self._task_definitions[arn] = reply["taskDefinition"]
        return self._task_definitions[arn]

    # ---- detection

    @staticmethod
    def failures(cluster, service_names, tasks):
        """Pull failures for a missing digest, one record per (service,
        container, digest, deployment), from stopped tasks of the services."""
        found = {}
        for task in tasks:
            group = task.get("group") or ""
            if not group.startswith("service:") or group[len("service:"):] not in service_names:
                continue
            service = group[len("service:"):]
            when = as_datetime(task.get("stoppedAt") or task.get("stoppingAt") or task.get("createdAt"))
            containers = task.get("containers") or []
            reasons = [(c, c.get("reason")) for c in containers if c.get("reason")]
            reasons.append((None, task.get("stoppedReason")))
            # ECS repeats a container's reason as the task's stoppedReason: count each task once.
            counted = set()
            for container, reason in reasons:
                for ref in missing_refs(reason):
                    owner = container or _container_for(containers, ref)
                    key = (service, owner.get("name") if owner else None, ref["digest"], task.get("startedBy"))
                    if key in counted:
                        continue
                    counted.add(key)
                    entry = found.setdefault(key, {
                        "cluster": cluster,
                        "service": service,
                        "container": key[1],
                        "image": (owner or {}).get("image") or _ref_text(ref, digest=False),
                        "ref": ref,
                        "missing_digest": ref["digest"],
                        "deployment_id": task.get("startedBy"),
                        "task_definition": task.get("taskDefinitionArn"),
                        "failed_tasks": 0,
                        "first": None,
                        "last": None,
                    })
                    entry["failed_tasks"] += 1
                    if when is not None:
                        entry["first"] = when if entry["first"] is None else min(entry["first"], when)
                        entry["last"] = when if entry["last"] is None else max(entry["last"], when)
        return list(found.values())

    def image_presence(self, refs):
        """{(region, account, repository): {"digests": {digest: bool}, "tags": {tag: bool}}}
        for the given ECR refs, by batch_get_image (100 image ids per call)."""
        by_repo = {}
        for ref in refs:
            key = (ref["region"], ref["account"], ref["repository"])
            wanted = by_repo.setdefault(key, {"digests": {}, "tags": {}})
            if ref.get("digest"):
                wanted["digests"][ref["digest"]] = None
            if ref.get("tag"):
                wanted["tags"][ref["tag"]] = None
        for (region, account, repository), wanted in by_repo.items():
            ids = [{"imageDigest": d} for d in wanted["digests"]] + [{"imageTag": t} for t in wanted["tags"]]
            for batch in chunks(ids, ECR_IMAGE_BATCH):
                try:
                    reply = call(self.ecr_for(region), "batch_get_image", registryId=account,
                                 repositoryName=repository, imageIds=batch)
                except AWSError as exc:
                    if exc.code != "RepositoryNotFoundException":
                        raise
                    reply = {"images": []}
                for image in reply.get("images", []):
                    image_id = image.get("imageId", {})
                    if image_id.get("imageDigest") in wanted["digests"]:
                        wanted["digests"][image_id["imageDigest"]] = True
                    if image_id.get("imageTag") in wanted["tags"]:
                        wanted["tags"][image_id["imageTag"]] = True
            for kind in ("digests", "tags"):
                for name, present in wanted[kind].items():
                    wanted[kind][name] = bool(present)
        return by_repo

    def scan(self, clusters=None, services=None, since=3600):
        """Affected services, the described services and the audit."""
        since_seconds = parse_since(since)
        wanted = None
        if services:
            wanted = []
            for value in services:
                ref = service_ref(value)
                if ref not in wanted:
                    wanted.append(ref)
        names = self.clusters(clusters)
        arn_clusters = sorted({ref[0] for ref in wanted or [] if ref[0] and ref[0] not in names})
        if arn_clusters:
            raise GuardError(f"service ARNs name clusters that are not selected or do not exist: "
                             f"{', '.join(arn_clusters)}")

        described = {}
        candidates = []
        for cluster in names:
            requested = None if wanted is None else [n for c, n in wanted if c in (None, cluster)]
            cluster_services = self.services(cluster, requested) if requested != [] else []
            if not cluster_services:
                continue
            by_name = {s["serviceName"]: s for s in cluster_services}
            described[cluster] = by_name
            tasks = self.stopped_tasks(cluster, cluster_services, since_seconds)
            candidates.extend(self.failures(cluster, set(by_name), tasks))
        if wanted is not None:
            unknown = [f"{c}/{n}" if c else n for c, n in wanted
                       if not any(n in by_name for cl, by_name in described.items() if c in (None, cl))]
            if unknown:
                raise GuardError(f"service not found in clusters {', '.join(names) or '(none)'}: "
                                 f"{', '.join(unknown)}")

        presence = self.image_presence([c["ref"] for c in candidates])
        affected = []
        for entry in candidates:
            ref = entry["ref"]
            repo = presence[(ref["region"], ref["account"], ref["repository"])]
            if repo["digests"][ref["digest"]]:
                continue
            service = described[entry["cluster"]][entry["service"]]
            deployments = service.get("deployments") or []
            failing = next((d for d in deployments if d.get("id") == entry["deployment_id"]), None)
            if entry["deployment_id"] and failing is None:
                continue  # that deployment is gone: the incident is over
            primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
            newer = primary is not None and (
                (failing is not None and primary.get("id") != failing.get("id"))
                or (failing is None and entry["last"] is not None
                    and as_datetime(primary.get("createdAt")) is not None
                    and as_datetime(primary.get("createdAt")) > entry["last"]))
            affected.append({
                "cluster": entry["cluster"],
                "service": entry["service"],
                "container": entry["container"],
                "image": entry["image"],
                "missing_digest": entry["missing_digest"],
                "tag": ref.get("tag") or _tag_of(entry["image"]),
                "tag_resolves": _tag_resolves(repo, ref, entry["image"]),
                "deployment_id": entry["deployment_id"],
                "failed_tasks": entry["failed_tasks"],
                "first_failure": iso(entry["first"]),
                "last_failure": iso(entry["last"]),
                "running_count": service.get("runningCount", 0),
                "desired_count": service.get("desiredCount", 0),
                "newer_deployment": newer,
            })
        affected.sort(key=lambda a: (a["cluster"], a["service"], a["container"] or "", a["missing_digest"]))
        return names, described, affected

    # ---- audit

    def audit(self, described):
        """Lifecycle rules that could expire an image an active deployment
        references, and every container's versionConsistency."""
        consistency = []
        references = {}
        for cluster, by_name in sorted(described.items()):
            for name, service in sorted(by_name.items()):
                for deployment in service.get("deployments") or []:
                    if deployment.get("status") not in ACTIVE_DEPLOYMENT_STATUSES or not deployment.get("taskDefinition"):
                        continue
                    definition = self.task_definition(deployment["taskDefinition"])
                    for container in definition.get("containerDefinitions", []):
                        consistency.append({
                            "cluster": cluster,
                            "service": name,
                            "deployment_id": deployment.get("id"),
                            "task_definition": definition.get("taskDefinitionArn", deployment["taskDefinition"]),
                            "container": container.get("name"),
                            "image": container.get("image"),
                            "version_consistency": container.get("versionConsistency", "enabled"),
                        })
                        ref = parse_image(container.get("image"))
                        if ref:
                            key = (ref["region"], ref["account"], ref["repository"])
                            references.setdefault(key, []).append({
                                "cluster": cluster, "service": name, "container": container.get("name"),
                                "image": container.get("image"), "tag": ref.get("tag"), "digest": ref.get("digest"),
                            })
        lifecycle = []
        for (region, account, repository), refs in sorted(references.items()):
            rules = self.lifecycle_rules(region, account, repository)
            if not rules:
                continue
            tags_by_digest = self.digest_tags(region, account, repository, refs, rules)
            for rule in rules:
                hits = [r for r in refs if _rule_matches(rule, r, tags_by_digest)]
                if not hits:
                    continue
                selection = rule.get("selection", {})
                lifecycle.append({
                    "repository": repository,
                    "registry_id": account,
                    "region": region,
                    "rule_priority": rule.get("rulePriority"),
                    "description": rule.get("description", ""),
                    "tag_status": selection.get("tagStatus"),
                    "count_type": selection.get("countType"),
                    "count_number": selection.get("countNumber"),
                    "referenced_by": _dedupe(hits),
                })
        return {"lifecycle": lifecycle, "version_consistency": consistency}

    def lifecycle_rules(self, region, account, repository):
        try:
            reply = call(self.ecr_for(region), "get_lifecycle_policy", registryId=account,
                         repositoryName=repository)
        except AWSError as exc:
            if exc.code in ("LifecyclePolicyNotFoundException", "RepositoryNotFoundException"):
                return []
            raise
        policy = json.loads(reply.get("lifecyclePolicyText") or "{}")
        rules = [r for r in policy.get("rules", []) if r.get("action", {}).get("type", "expire") == "expire"]
        return sorted(rules, key=lambda r: r.get("rulePriority", 0))

    def digest_tags(self, region, account, repository, refs, rules):
        """Tags of the digest-pinned images, needed only for `tagged` rules."""
        digests = sorted({r["digest"] for r in refs if r.get("digest") and not r.get("tag")})
        if not digests or not any(r.get("selection", {}).get("tagStatus") == "tagged" for r in rules):
            return {}
        tags = {}
        presence = self.image_presence([{"region": region, "account": account, "repository": repository,
                                         "digest": d, "tag": None} for d in digests])
        existing = [d for d, present in presence[(region, account, repository)]["digests"].items() if present]
        for batch in chunks(existing, ECR_IMAGE_BATCH):
            reply = call(self.ecr_for(region), "describe_images", registryId=account, repositoryName=repository,
                         imageIds=[{"imageDigest": d} for d in batch])
            for detail in reply.get("imageDetails", []):
                tags[detail["imageDigest"]] = detail.get("imageTags", [])
        return tags

    # ---- recovery

    def recover(self, affected, check_mode=False):
        """Forces one new deployment per affected service whose failing
        deployment is still the primary one and whose image is a tag that still
        resolves. Sets each entry's `recovery`; returns the redeployed services."""
        redeployed = []
        done = {}
        for entry in affected:
            key = (entry["cluster"], entry["service"])
            if entry["newer_deployment"]:
                entry["recovery"] = "a newer deployment exists"
                continue
            if not entry["tag"]:
                entry["recovery"] = ("not recoverable by a new deployment: the task definition pins the "
                                     "digest; register a revision with an image that exists")
                continue
            if entry["tag_resolves"] is False:
                entry["recovery"] = f"not recoverable by a new deployment: tag {entry['tag']} does not resolve"
                continue
            if key in done:
                entry["recovery"] = done[key]
                continue
            previous = entry["deployment_id"]
            if check_mode:
                deployment_id = None
            else:
                reply = call(self.ecs, "update_service", cluster=entry["cluster"], service=entry["service"],
                             forceNewDeployment=True)
                primary = next((d for d in reply["service"].get("deployments", [])
                                if d.get("status") == "PRIMARY"), {})
                deployment_id = primary.get("id")
            redeployed.append({"cluster": entry["cluster"], "service": entry["service"],
                               "previous_deployment": previous, "deployment_id": deployment_id})
            done[key] = "redeployed"
            entry["recovery"] = done[key]
        return redeployed

    def wait_stable(self, redeployed, timeout, interval=5.0):
        """Waits until every redeployed service has one deployment and runs its
        desired count. Raises GuardError naming the services that did not."""
        pending = {(r["cluster"], r["service"]) for r in redeployed}
        deadline = self.clock() + timeout
        state = {}
        while pending:
            for cluster in sorted({key[0] for key in pending}):
                names = sorted(s for c, s in pending if c == cluster)
                for service in self.services(cluster, names):
                    key = (cluster, service["serviceName"])
                    state[key] = service
                    if len(service.get("deployments") or []) == 1 and \
                            service.get("runningCount") == service.get("desiredCount"):
                        pending.discard(key)
            if not pending:
                return
            if self.clock() >= deadline:
                detail = ", ".join(
                    f"{c}/{s} (running {state.get((c, s), {}).get('runningCount', '?')} of "
                    f"{state.get((c, s), {}).get('desiredCount', '?')}, "
                    f"{len(state.get((c, s), {}).get('deployments') or [])} deployments)"
                    for c, s in sorted(pending))
                raise GuardError(f"redeployed services did not become stable within {timeout}s: {detail}")
            self.sleep(min(interval, max(0.0, deadline - self.clock())))


def suspect(service):
    """Whether a service may be starving: below its desired count, between
    deployments, or with failed tasks in a deployment."""
    deployments = [d for d in service.get("deployments") or [] if d.get("status") in ACTIVE_DEPLOYMENT_STATUSES]
    return (service.get("runningCount", 0) < service.get("desiredCount", 0)
            or len(deployments) > 1
            or any(d.get("failedTasks") or d.get("rolloutState") == "FAILED" for d in deployments))


def _container_for(containers, ref):
    for container in containers:
        image = parse_image(container.get("image"))
        if image and image["repository"] == ref["repository"] and image["account"] == ref["account"]:
            return container
    return containers[0] if len(containers) == 1 else None


def _ref_text(ref, digest=True):
    text = f"{ref['registry']}/{ref['repository']}"
    if ref.get("tag"):
        text += f":{ref['tag']}"
    if digest and ref.get("digest"):
        text += f"@{ref['digest']}"
    return text


def _tag_of(image):
    parsed = parse_image(image)
    return parsed.get("tag") if parsed else None


def _tag_resolves(repo, ref, image):
    tag = ref.get("tag") or _tag_of(image)
    if not tag:
        return None
    return repo["tags"].get(tag)


def _rule_matches(rule, reference, tags_by_digest):
    """Whether the rule's selection can match the referenced image. An image
    referenced by tag becomes untagged when the tag moves, so `untagged` rules
    count for tag references too."""
    selection = rule.get("selection", {})
    status = selection.get("tagStatus", "any")
    if status in ("any", "untagged"):
        return True
    if status != "tagged":
        return False
    tags = [reference["tag"]] if reference.get("tag") else tags_by_digest.get(reference.get("digest"), [])
    prefixes = selection.get("tagPrefixList") or []
    patterns = selection.get("tagPatternList") or []
    for tag in tags:
        if any(tag.startswith(p) for p in prefixes):
            return True
        if any(re.fullmatch(".*".join(re.escape(part) for part in p.split("*")), tag) for p in patterns):
            return True
    return False


def _dedupe(items):
    seen = []
    for item in items:
        slim = {k: item[k] for k in ("cluster", "service", "container", "image")}
        if slim not in seen:
            seen.append(slim)
    return seen


def run(options, clusters=None, services=None, mode="report", since=3600, wait=False, wait_timeout=600,
        check_mode=False, audit=True, guard=None):
    """The whole pass: clusters, affected, redeployed, audit and changed. When
    the wait for stability fails, the GuardError carries that result as
    `result`, since services were redeployed by then."""
    if mode not in ("report", "recover"):
        raise GuardError(f"mode must be report or recover, got {mode!r}")
    if guard is None:
        region_clients = {}

        def ecr_for(region):
            if region not in region_clients:
                region_clients[region] = client("ecr", dict(options, region=region or options.get("region")))
            return region_clients[region]

        guard = Guard(client("ecs", options), ecr_for)
    names, described, affected = guard.scan(clusters=clusters, services=services, since=since)
    result = {"clusters": names, "affected": affected, "redeployed": [], "changed": False,
              "audit": {"lifecycle": [], "version_consistency": []}}
    if mode == "recover":
        result["redeployed"] = guard.recover(affected, check_mode=check_mode)
        result["changed"] = bool(result["redeployed"])
    else:
        for entry in affected:
            entry["recovery"] = "report only"
    if wait and result["redeployed"] and not check_mode:
        try:
            guard.wait_stable(result["redeployed"], wait_timeout)
        except GuardError as exc:
            exc.result = result
            raise
    if audit:
        result["audit"] = guard.audit(described)
    return result
