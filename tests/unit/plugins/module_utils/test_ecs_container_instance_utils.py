"""The capacity guard's arithmetic and the sizing of a task."""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.ecs.container_instance import (
    ContainerInstanceError,
    capacity_shortfalls,
    task_needs,
    validate,
)

TD = "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1"


def hosts(*free_memory, status=None):
    status = status or {}
    return [{"arn": f"ci-{n}", "ec2_instance_id": f"i-{n}", "status": status.get(n, "ACTIVE"), "free_cpu": 4096,
             "free_memory": memory} for n, memory in enumerate(free_memory)]


def web(desired=3, percent=100, daemon=False):
    return [{"name": "web", "desired": desired, "minimum_healthy_percent": percent, "daemon": daemon}]


def tasks_on(*indexes, service="web"):
    return [{"service": service, "instance_arn": f"ci-{n}", "task_definition": TD} for n in indexes]


def test_room_elsewhere_means_no_shortfall():
    assert capacity_shortfalls(web(), hosts(1000, 1000, 1000), tasks_on(0, 1, 2), {TD: (0, 512)}, {"i-0"}) == []


def test_no_room_at_100_percent_is_refused_with_the_numbers():
    [short] = capacity_shortfalls(web(), hosts(100, 100, 100), tasks_on(0, 1, 2), {TD: (0, 512)}, {"i-0"})
    assert (short["needed"], short["kept"], short["moving"], short["placed"]) == (3, 2, 1, 0)
    assert short["message"] == (
        "service web: desired 3 x minimumHealthyPercent 100% = 3 healthy tasks needed; 2 run on the 2 instances "
        "that stay ACTIVE + 0 of 1 moving tasks fit in their free capacity (200 MiB, 8192 CPU units; a task "
        "needs 512 MiB, 0 CPU units) = 2 < 3")


@pytest.mark.parametrize("desired, percent, leaving, refused", [
    (3, 50, {"i-0"}, False),          # ceil(1.5) = 2 healthy, 2 stay
    (3, 50, {"i-0", "i-1"}, True),    # 1 stays < 2
    (3, 0, {"i-0", "i-1", "i-2"}, False),
    (4, 75, {"i-0"}, True),           # ceil(3) = 3, tasks 0,0,1,2: 2 stay
])
def test_minimum_healthy_percent_rounds_up(desired, percent, leaving, refused):
    placement = tasks_on(0, 1, 2) if desired == 3 else tasks_on(0, 0, 1, 2)
    result = capacity_shortfalls(web(desired, percent), hosts(0, 0, 0), placement, {TD: (0, 512)}, leaving)
    assert bool(result) is refused


def test_free_capacity_is_used_up_once_across_services():
    """One free slot on the staying host: api takes it (name order), web is short."""
    services = web(2) + [{"name": "api", "desired": 2, "minimum_healthy_percent": 100, "daemon": False}]
    tasks = tasks_on(0, 1) + tasks_on(0, 1, service="api")
    result = capacity_shortfalls(services, hosts(0, 600), tasks, {TD: (0, 512)}, {"i-0"})
    assert [s["service"] for s in result] == ["web"]


def test_draining_instances_are_no_capacity_and_daemons_are_ignored():
    instances = hosts(5000, 5000, 5000, status={1: "DRAINING"})
    services = web(3) + [{"name": "log", "desired": 0, "minimum_healthy_percent": 100, "daemon": True}]
    tasks = tasks_on(0, 1, 2) + tasks_on(0, 1, 2, service="log")
    [short] = capacity_shortfalls(services, instances, tasks, {TD: (0, 6000)}, {"i-0"})
    assert (short["kept"], short["moving"], short["active_instances_left"]) == (1, 2, 1)


def test_cpu_counts_too():
    assert capacity_shortfalls(web(2), hosts(9000, 9000), tasks_on(0, 1), {TD: (5000, 10)}, {"i-0"})


def test_task_needs_task_level_values_first_then_the_containers():
    assert task_needs({"cpu": "512", "memory": "1024", "containerDefinitions": [{"memory": 64}]}) == (512, 1024)
    assert task_needs({"containerDefinitions": [{"memory": 64, "cpu": 10}, {"memoryReservation": 32}]}) == (10, 96)


@pytest.mark.parametrize("args, message", [
    (("prod", "i-12345678", "stopped", 1, 1), "state must be one of draining, active"),
    (("prod", "i-1234567", "active", 1, 1), "invalid EC2 instance id"),
    (("prod", "i-12345678", "active", 0, 1), "must be positive"),
    (("", "i-12345678", "active", 1, 1), "invalid cluster"),
    (("prod", "i-12345678", "active", 1, 1, ["i-x"]), "invalid EC2 instance id 'i-x'"),
])
def test_validation(args, message):
    with pytest.raises(ContainerInstanceError, match=message):
        validate(*args)
