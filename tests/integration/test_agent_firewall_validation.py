"""guardrail.ecs.agent_firewall refuses bad settings with a message naming the
variable and the value, before any task that could change the host runs.

Runs the role with ansible-playbook against localhost in check mode: the
refusal must come from the role's argument spec or its validation tasks, so no
later task (packages, sysctl, rules, files) appears in the results at all. The
molecule scenario shows the same refusal on a lab host leaves its rules and
rules file as they were."""
import pytest

from conftest import run_playbook, task_results

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - guardrail.ecs.agent_firewall
"""
# Tasks after validation; none of them may run on bad input.
LATER_TASKS = ("Install iptables", "Route traffic", "Load the default-deny", "Restore the rules files",
               "Install the re-apply program", "Write the chains", "Install the unit", "Enable the re-apply unit",
               "ECS_AWSVPC_BLOCK_IMDS", "Remove the re-apply unit", "Remove the role's sysctl file")
SSH = {"agent_firewall_ssh_sources": ["10.0.0.0/8"]}


@pytest.mark.parametrize("extra_vars,expected", [
    ({}, ["agent_firewall_ssh_sources is not set", "default-deny", "agent_firewall_ssh_sources: [10.0.0.0/8]"]),
    ({"agent_firewall_ssh_sources": ["10.0.0.0/33"]}, ["agent_firewall_ssh_sources", "10.0.0.0/33"]),
    ({"agent_firewall_ssh_sources": ["10.0.0"]}, ["agent_firewall_ssh_sources", "10.0.0"]),
    ({"agent_firewall_ssh_sources": ["2001:db8::/129"]}, ["agent_firewall_ssh_sources", "2001:db8::/129"]),
    ({"agent_firewall_ssh_sources": ["1::2::3"]}, ["agent_firewall_ssh_sources", "1::2::3"]),
    ({"agent_firewall_ssh_sources": []}, ["agent_firewall_ssh_sources", "at least one", "(empty list)"]),
    ({**SSH, "agent_firewall_persist": False}, ["agent_firewall_persist was removed", "what is live is what boots"]),
    ({**SSH, "agent_firewall_imds_block_interfaces": ["docker+"]},
     ["agent_firewall_imds_block_interfaces was removed", "agent_firewall_imds_networks"]),
    ({**SSH, "agent_firewall_task_bridges": ["docker0", "eth0 -j ACCEPT"]},
     ["agent_firewall_task_bridges", "eth0 -j ACCEPT"]),
    ({**SSH, "agent_firewall_task_bridges": ["a-name-longer-than-15"]},
     ["agent_firewall_task_bridges", "a-name-longer-than-15"]),
    ({**SSH, "agent_firewall_imds_networks": ["br-+;"]}, ["agent_firewall_imds_networks", "br-+;"]),
    ({**SSH, "agent_firewall_policies": {"INPUT": "REJECT"}}, ["agent_firewall_policies", "REJECT"]),
    ({**SSH, "agent_firewall_policies": {"PREROUTING": "DROP"}}, ["agent_firewall_policies", "PREROUTING"]),
    ({**SSH, "agent_firewall_output_ports": ["443"]}, ["agent_firewall_output_ports", "tcp/443", "443"]),
    ({**SSH, "agent_firewall_output_ports": ["tcp/65536"]}, ["agent_firewall_output_ports", "tcp/65536"]),
    ({**SSH, "agent_firewall_state": "gone"}, ["agent_firewall_state", "gone"]),
    ({**SSH, "agent_firewall_ssh_port": 70000}, ["agent_firewall_ssh_port", "1 to 65535", "70000"]),
    ({**SSH, "agent_firewall_agent_port": 0}, ["agent_firewall_agent_port", "1 to 65535"]),
    ({**SSH, "agent_firewall_ssh_port": "ssh"}, ["agent_firewall_ssh_port", "int"]),
    ({**SSH, "agent_firewall_block_imds": "perhaps"}, ["agent_firewall_block_imds", "bool"]),
    ({**SSH, "agent_firewall_task_bridges": "docker0"}, ["agent_firewall_task_bridges", "must be a list"]),
])
def test_bad_settings_are_refused_before_anything_runs(extra_vars, expected):
    rc, out, stderr = run_playbook(PLAYBOOK, extra_vars=extra_vars, check=True)
    assert rc != 0, f"accepted {extra_vars}"
    results = task_results(out)
    failed = [(name, result) for name, result in results if result.get("failed")]
    assert failed, f"no failed task: {out} {stderr}"
    result = failed[0][1]
    message = " ".join([result["msg"]] + [item.get("msg", "") for item in result.get("results", [])
                                          if item.get("failed")])
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    ran = [name for name, _result in results]
    assert not [name for name in ran if any(later in name for later in LATER_TASKS)], ran
