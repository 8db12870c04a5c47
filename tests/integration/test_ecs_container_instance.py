"""guardrail.ecs.ecs_container_instance against a moto server over real HTTP,
with the stand-in scheduler moving service tasks off DRAINING instances.

The cluster `prod` has three container instances (a, b, c); each runs one task
of the replica service `web` (256 MiB) and one of the daemon service
`log-router`; a also runs a standalone task, which draining never stops.
"""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.ecs.container_instance import (
    ContainerInstanceError,
    run,
)
from conftest import run_playbook, task_results
from ecs_image_guard_helpers import clients
from ecs_rollout_helpers import (
    Scheduler,
    cluster,
    hold_task_states,
    running_tasks,
    service,
    set_agent_connected,
    set_status,
    standalone_task,
    statuses,
)


def options(endpoint):
    return dict(region="us-east-1", access_key="testing", secret_key="testing", session_token="testing",
                endpoint_url=endpoint)


@pytest.fixture
def world(moto):
    hold_task_states(moto)
    c = clients(moto)
    ids = cluster(c, "prod", ["a", "b", "c"])
    service(c, "prod", "web", [ids["a"], ids["b"], ids["c"]])
    service(c, "prod", "log-router", list(ids.values()), memory=64, daemon=True)
    standalone_task(c, "prod", ids["a"])
    return {"c": c, "ids": ids}


@pytest.fixture
def scheduler(moto):
    thread = Scheduler(moto, "prod", delay=0.1)
    thread.start()
    yield thread
    thread.stop()


def test_drain_waits_until_only_daemon_and_standalone_tasks_are_left(moto, world, scheduler):
    ids = world["ids"]
    result = run(options(moto), "prod", ids["a"], "draining", wait=True, wait_timeout=60, poll_interval=1)

    assert result["changed"] is True and result["previous_status"] == "ACTIVE"
    assert result["container_instance"]["status"] == "DRAINING"
    assert result["tasks"]["service"] == []
    assert [t["service"] for t in result["tasks"]["daemon"]] == ["log-router"]
    assert [t["service"] for t in result["tasks"]["standalone"]] == [None]
    assert result["container_instance"]["running_tasks_count"] == 2
    tasks = running_tasks(world["c"], "prod")
    assert ids["a"] not in tasks["web"] and sum(tasks["web"].values()) == 3, tasks
    assert statuses(world["c"], "prod") == {ids["a"]: "DRAINING", ids["b"]: "ACTIVE", ids["c"]: "ACTIVE"}
    assert result["api_calls"]["update_container_instances_state"] == 1

    again = run(options(moto), "prod", ids["a"], "draining", wait=True, wait_timeout=60, poll_interval=1)
    assert again["changed"] is False and "update_container_instances_state" not in again["api_calls"]


def test_active_returns_the_instance_and_waits_for_the_agent(moto, world):
    ids = world["ids"]
    set_status(world["c"], "prod", ids["b"], "DRAINING")
    set_agent_connected(ids["b"], False)
    with pytest.raises(ContainerInstanceError, match=r"gave up after 2s: the ECS agent is not connected"):
        run(options(moto), "prod", ids["b"], "active", wait=True, wait_timeout=2, poll_interval=1)
    assert statuses(world["c"], "prod")[ids["b"]] == "ACTIVE", "the state is set before waiting for the agent"

    set_agent_connected(ids["b"], True)
    result = run(options(moto), "prod", ids["b"], "active", wait=True, wait_timeout=5, poll_interval=1)
    assert result["changed"] is False and result["container_instance"]["agent_connected"] is True


def test_drain_timeout_names_the_service_tasks_still_there(moto, world):
    """No scheduler: nothing moves the tasks, as when ECS has nowhere to put them."""
    ids = world["ids"]
    with pytest.raises(ContainerInstanceError, match=r"gave up after 2s: service tasks still on it: web \(1\)") as info:
        run(options(moto), "prod", ids["c"], "draining", wait=True, wait_timeout=2, poll_interval=1)
    assert [t["service"] for t in info.value.result["tasks"]["service"]] == ["web"]
    assert statuses(world["c"], "prod")[ids["c"]] == "DRAINING"


def test_check_mode_changes_nothing(moto, world):
    ids = world["ids"]
    result = run(options(moto), "prod", ids["a"], "draining", wait=True, check_mode=True)
    assert result["changed"] is True and result["container_instance"]["status"] == "DRAINING"
    assert result["diff"] == {"before": {"status": "ACTIVE"}, "after": {"status": "DRAINING"}}
    assert "update_container_instances_state" not in result["api_calls"]
    assert set(statuses(world["c"], "prod").values()) == {"ACTIVE"}


def test_capacity_guard_refuses_with_the_arithmetic(moto):
    """Each instance has 7482 MiB; a 4000 MiB task leaves no room for a second one."""
    hold_task_states(moto)
    c = clients(moto)
    ids = cluster(c, "full", ["a", "b", "c"])
    service(c, "full", "big", [ids["a"], ids["b"], ids["c"]], memory=4000, minimum_healthy_percent=100)
    with pytest.raises(ContainerInstanceError) as info:
        run(options(moto), "full", ids["a"], "draining", wait=True)
    message = str(info.value)
    assert "capacity guard" in message and "nothing was drained" in message
    assert ("service big: desired 3 x minimumHealthyPercent 100% = 3 healthy tasks needed; 2 run on the 2 "
            "instances that stay ACTIVE + 0 of 1 moving tasks fit in their free capacity (6964 MiB, 8192 CPU "
            "units; a task needs 4000 MiB, 0 CPU units) = 2 < 3") in message
    assert info.value.result["capacity_shortfalls"][0]["needed"] == 3
    assert set(statuses(c, "full").values()) == {"ACTIVE"}

    # 50%: two healthy tasks are enough, one host at a time may go...
    c["ecs"].update_service(cluster="full", service="big",
                            deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
    assert run(options(moto), "full", ids["a"], "draining", check_mode=True)["changed"] is True
    # ...but not two together, nor a second while the first is still DRAINING.
    with pytest.raises(ContainerInstanceError, match=r"1 run on the 1 instances that stay ACTIVE .* = 1 < 2"):
        run(options(moto), "full", ids["a"], "draining", batch=[ids["a"], ids["b"]])
    set_status(c, "full", ids["a"], "DRAINING")
    with pytest.raises(ContainerInstanceError, match=r"= 1 < 2"):
        run(options(moto), "full", ids["b"], "draining")
    assert statuses(c, "full") == {ids["a"]: "DRAINING", ids["b"]: "ACTIVE", ids["c"]: "ACTIVE"}


@pytest.mark.parametrize("cluster_name, instance, message", [
    ("nope", None, "cluster nope not found or not active"),
    ("prod", "i-0123456789abcdef0", "unknown EC2 instance i-0123456789abcdef0: EC2 has no such instance"),
    ("prod", "stray", "is not a container instance of cluster prod"),
    ("prod", "i-123; reboot", "invalid EC2 instance id 'i-123; reboot'"),
    ("prod/../x", None, "invalid cluster 'prod/../x'"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(moto, world, cluster_name, instance, message):
    c = world["c"]
    if instance == "stray":
        instance = c["ec2"].run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    with pytest.raises(ContainerInstanceError, match=message.replace("(", r"\(")):
        run(options(moto), cluster_name, instance or world["ids"]["a"], "draining")
    assert set(statuses(c, "prod").values()) == {"ACTIVE"}


PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  module_defaults:
    group/guardrail.ecs.aws:
      endpoint_url: "{{ endpoint }}"
      region: us-east-1
  tasks:
    - name: Drain
      guardrail.ecs.ecs_container_instance:
        cluster: prod
        instance_id: "{{ instance }}"
        state: draining
        wait: true
        poll_interval: 1
        wait_timeout: 60
      register: drained

    - name: Back to service
      guardrail.ecs.ecs_container_instance:
        cluster: prod
        instance_id: "{{ instance }}"
        state: active
        wait: true
        poll_interval: 1
"""


def test_playbook_with_module_defaults_check_and_diff(moto, world, scheduler):
    ids = world["ids"]
    rc, out, stderr = run_playbook(PLAYBOOK, extra_vars={"endpoint": moto, "instance": ids["b"]}, check=True,
                                   diff=True, env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    assert rc == 0, ([r.get("msg") for _n, r in task_results(out)], stderr)
    results = dict(task_results(out))
    assert results["Drain"]["changed"] is True
    assert results["Drain"]["diff"] == {"before": {"status": "ACTIVE"}, "after": {"status": "DRAINING"}}
    assert set(statuses(world["c"], "prod").values()) == {"ACTIVE"}

    rc, out, stderr = run_playbook(PLAYBOOK, extra_vars={"endpoint": moto, "instance": ids["b"]},
                                   env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    assert rc == 0, ([r.get("msg") for _n, r in task_results(out)], stderr)
    results = dict(task_results(out))
    assert results["Drain"]["changed"] and results["Drain"]["tasks"]["service"] == []
    assert results["Back to service"]["changed"] and results["Back to service"]["msg"] == \
        f"{ids['b']} set ACTIVE in cluster prod"
    assert set(statuses(world["c"], "prod").values()) == {"ACTIVE"}
    assert sum(running_tasks(world["c"], "prod")["web"].values()) == 3
