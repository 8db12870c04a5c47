"""guardrail.ecs.ecs_image_guard against a moto server over real HTTP.

The incident (see ecs_image_guard_helpers.incident): prod/web and batch/worker
pull a digest deleted from ECR while their tag still resolves; prod/pinned pins
a deleted digest in its task definition; prod/api and prod/old are not affected.
"""
import json
from pathlib import Path

import pytest
import yaml

from ansible_collections.guardrail.ecs.plugins.module_utils.ecs.image_guard import GuardError, run
from conftest import ROOT, run_playbook, task_results
from ecs_image_guard_helpers import (
    deployment_ids,
    incident,
    minutes_ago,
    pull_failure,
    stopped_tasks,
)

PLAYBOOK = ROOT / "playbooks" / "ecs_image_guard.yml"
ALL = {"prod": ["web", "pinned", "api", "old"], "batch": ["worker"]}


def options(endpoint):
    return dict(region="us-east-1", access_key="testing", secret_key="testing", session_token="testing",
                endpoint_url=endpoint)


def snapshot(world):
    c = world["clients"]
    return {cluster: deployment_ids(c, cluster, names) for cluster, names in ALL.items()}


@pytest.fixture
def world(moto):
    return incident(moto)


def test_report_finds_exactly_the_affected_services(moto, world):
    before = snapshot(world)
    result = run(options(moto))

    found = {(a["cluster"], a["service"], a["container"]) for a in result["affected"]}
    assert found == {("prod", "web", "web"), ("prod", "pinned", "pinned"), ("batch", "worker", "worker")}
    web = next(a for a in result["affected"] if a["service"] == "web")
    assert web["missing_digest"] == world["digests"]["web"]
    assert web["image"] == f"{world['uris']['web']}:latest"
    assert (web["tag"], web["tag_resolves"]) == ("latest", True)
    assert web["deployment_id"] == world["deployments"]["web"]
    assert web["failed_tasks"] == 4
    assert web["first_failure"] < web["last_failure"]
    assert (web["running_count"], web["desired_count"]) == (0, 2)
    assert web["recovery"] == "report only"
    pinned = next(a for a in result["affected"] if a["service"] == "pinned")
    assert (pinned["tag"], pinned["tag_resolves"]) == (None, None)
    assert result["redeployed"] == [] and result["changed"] is False
    assert snapshot(world) == before

    rules = {(r["repository"], r["rule_priority"]): r for r in result["audit"]["lifecycle"]}
    assert set(rules) == {("web", 1)}, "the api rule selects dev- tags only and cannot expire api:latest"
    assert [r["service"] for r in rules[("web", 1)]["referenced_by"]] == ["web"]
    consistency = {(v["cluster"], v["service"]): v["version_consistency"]
                   for v in result["audit"]["version_consistency"]}
    assert consistency == {("prod", "web"): "enabled", ("prod", "pinned"): "disabled", ("prod", "api"): "enabled",
                           ("prod", "old"): "enabled", ("batch", "worker"): "enabled"}


def test_recover_redeploys_once_and_a_second_run_does_nothing(moto, world):
    before = snapshot(world)
    first = run(options(moto), mode="recover")

    assert {(r["cluster"], r["service"]) for r in first["redeployed"]} == {("prod", "web"), ("batch", "worker")}
    assert first["changed"] is True
    after = snapshot(world)
    for cluster, service in (("prod", "web"), ("batch", "worker")):
        assert after[cluster][service] != before[cluster][service], f"{service} got no new deployment"
        entry = next(r for r in first["redeployed"] if r["service"] == service)
        assert entry["previous_deployment"] == before[cluster][service][0]
        assert after[cluster][service] == [entry["deployment_id"]]
    for cluster, service in (("prod", "pinned"), ("prod", "api"), ("prod", "old")):
        assert after[cluster][service] == before[cluster][service], f"{service} must not be redeployed"
    pinned = next(a for a in first["affected"] if a["service"] == "pinned")
    assert "pins the digest" in pinned["recovery"]

    second = run(options(moto), mode="recover")
    assert second["redeployed"] == [] and second["changed"] is False
    assert [a["service"] for a in second["affected"]] == ["pinned"]
    assert snapshot(world) == after


def test_failures_of_a_newer_deployment_are_found_again(moto, world):
    """After recovery a fresh failure of the new deployment is a new incident."""
    first = run(options(moto), mode="recover", services=["web"], clusters=["prod"])
    new_id = first["redeployed"][0]["deployment_id"]
    c = world["clients"]
    c["ecr"].batch_delete_image(repositoryName="web", imageIds=[{"imageTag": "latest"}])
    reason = pull_failure(world["uris"]["web"], "latest", "sha256:" + "ab" * 32)
    stopped_tasks(c, "prod", "web", new_id, reason, stopped_at=minutes_ago(1))

    second = run(options(moto), mode="recover", services=["web"], clusters=["prod"])
    assert [(a["deployment_id"], a["tag_resolves"]) for a in second["affected"]] == [(new_id, False)]
    assert second["redeployed"] == [], "a tag that no longer resolves is not fixed by a new deployment"
    assert "does not resolve" in second["affected"][0]["recovery"]


def test_check_mode_reports_without_redeploying(moto, world):
    before = snapshot(world)
    result = run(options(moto), mode="recover", check_mode=True)
    assert {r["service"] for r in result["redeployed"]} == {"web", "worker"}
    assert all(r["deployment_id"] is None for r in result["redeployed"])
    assert result["changed"] is True
    assert snapshot(world) == before


def test_selection_by_cluster_service_and_since(moto, world):
    only_batch = run(options(moto), clusters=["batch"])
    assert [(a["cluster"], a["service"]) for a in only_batch["affected"]] == [("batch", "worker")]
    arn = "arn:aws:ecs:us-east-1:123456789012:service/prod/web"
    by_arn = run(options(moto), services=[arn])
    assert [(a["cluster"], a["service"]) for a in by_arn["affected"]] == [("prod", "web")]
    recent = run(options(moto), since="12m")
    web = next(a for a in recent["affected"] if a["service"] == "web")
    assert web["failed_tasks"] == 1, "three of web's failures stopped 20 minutes ago"
    assert {a["service"] for a in recent["affected"]} == {"web", "pinned"}
    assert run(options(moto), since=120)["affected"] == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(clusters=["nope"]), "cluster not found or not active: nope"),
    (dict(clusters=["arn:aws:ecs:us-east-1:123456789012:cluster/nope"]), "cluster not found or not active: nope"),
    (dict(clusters=["arn:aws:ecs:us-east-1:cluster/prod"]), "malformed cluster ARN"),
    (dict(clusters=["prod;rm"]), "invalid cluster name"),
    (dict(services=["arn:aws:ecs:us-east-1:123456789012:task/prod/web"]), "malformed service ARN"),
    (dict(services=["arn:aws:ecs:us-east-1:123456789012:service/elsewhere/web"]), "elsewhere"),
    (dict(services=["nope"], clusters=["prod"]), "service not found in clusters prod: nope"),
    (dict(since="soon"), "since: expected seconds or a duration"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(moto, world, kwargs, message):
    before = snapshot(world)
    with pytest.raises(GuardError, match=message.replace("(", r"\(")):
        run(options(moto), mode="recover", **kwargs)
    assert snapshot(world) == before


def test_wait_timeout_names_the_unstable_services(moto, world):
    with pytest.raises(GuardError, match=r"did not become stable within 1s: prod/web \(running 0 of 2") as info:
        run(options(moto), mode="recover", clusters=["prod"], wait=True, wait_timeout=1)
    assert [r["service"] for r in info.value.result["redeployed"]] == ["web"]


def aws_vars(endpoint):
    return {"aws_region": "us-east-1", "aws_endpoint_url": endpoint}


def test_playbook_recovers_then_reports_nothing_to_do(moto, world):
    before = snapshot(world)
    extra = dict(aws_vars(moto), ecs_image_guard_mode="recover", ecs_image_guard_clusters=["prod"])
    rc, out, err = run_playbook(PLAYBOOK, extra_vars=extra)
    assert rc == 0, err or out
    guard = dict(task_results(out))["Find services pulling a deleted image digest"]
    assert guard["changed"] is True
    assert [r["service"] for r in guard["redeployed"]] == ["web"]
    assert snapshot(world)["prod"]["web"] != before["prod"]["web"]

    extra["ecs_image_guard_fail_when_affected"] = True
    rc, out, err = run_playbook(PLAYBOOK, extra_vars=extra)
    assert rc == 2, "pinned is still affected and cannot be redeployed"
    results = dict(task_results(out))
    assert results["Find services pulling a deleted image digest"]["changed"] is False
    assert "pinned" in results["Fail while services remain affected and were not redeployed"]["msg"]


def test_playbook_check_mode_and_clear_error(moto, world):
    before = snapshot(world)
    rc, out, err = run_playbook(PLAYBOOK, extra_vars=dict(aws_vars(moto), ecs_image_guard_mode="recover"),
                                check=True)
    assert rc == 0, err or out
    guard = dict(task_results(out))["Find services pulling a deleted image digest"]
    assert {r["service"] for r in guard["redeployed"]} == {"web", "worker"}
    assert snapshot(world) == before

    rc, out, err = run_playbook(PLAYBOOK, extra_vars=dict(aws_vars(moto), ecs_image_guard_clusters=["ghost"]))
    assert rc == 2
    guard = dict(task_results(out))["Find services pulling a deleted image digest"]
    assert guard["failed"] and guard["msg"] == "cluster not found or not active: ghost"


def test_module_examples_run_as_documented(moto, monkeypatch):
    """The EXAMPLES, as written, on services that run their desired count but
    have failed tasks (moto takes both from its environment), so a redeployed
    service is stable at once and the wait ends."""
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")
    monkeypatch.setenv("MOTO_ECS_SERVICE_FAILED_TASKS", "1")
    world = incident(moto)
    from ansible_collections.guardrail.ecs.plugins.modules import ecs_image_guard

    play = [{"name": "examples", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
             "module_defaults": {"group/guardrail.ecs.aws": {"endpoint_url": moto}},
             "tasks": yaml.safe_load(ecs_image_guard.EXAMPLES)}]
    before = snapshot(world)
    rc, out, err = run_playbook("---\n" + json.dumps(play))
    results = dict(task_results(out))
    names = [task["name"] for task in play[0]["tasks"]]
    assert list(results) == names, err
    recovered, reported, verdict = (results[name] for name in names)
    assert [r["service"] for r in recovered["redeployed"]] == ["web"], recovered
    assert snapshot(world)["prod"]["web"] != before["prod"]["web"]
    assert {a["service"] for a in reported["affected"]} == {"pinned", "worker"}
    assert rc == 2 and verdict["failed"] and verdict["msg"] == "worker, pinned pull a deleted digest"


def test_playbook_has_no_prompts():
    assert "vars_prompt" not in Path(PLAYBOOK).read_text()
