"""The order of roles does not matter: on a stock Debian 12 lab host, cis_hardening
(Level 2) then agent_firewall converges, and a second run of either order, and of the
ECS host playbook, changes nothing. (agent_firewall installs packages after
cis_hardening ran: apt's own log files must not come back wider than 6.1.4.1 allows.)"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/guardrail-lab:stock"
NAME = f"lab-role-order-{os.getpid()}"
ORDER = """
- name: {title}
  hosts: all
  gather_facts: true
  roles:
{roles}
"""
CIS = "    - role: guardrail.ecs.cis_hardening\n"
FIREWALL = "    - role: guardrail.ecs.agent_firewall\n"


def podman(*args, check=True, timeout=300):
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf"))
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, check=False, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"lab image {IMAGE} is missing: run `make lab-image`")
    podman("rm", "-f", NAME, check=False)
    podman("run", "-d", "--privileged", "--name", NAME, "--systemd", "always", "--ulimit", "nofile=1024:1024",
           "--ulimit", "nproc=4096:4096", IMAGE, "/usr/local/sbin/lab-init")
    try:
        for _attempt in range(60):
            state = podman("exec", NAME, "systemctl", "is-system-running", "--wait", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        work = tmp_path_factory.mktemp("order")
        (work / "inventory.json").write_text(json.dumps({"all": {"hosts": {NAME: {
            "ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3",
            "cis_hardening_level": 2, "cis_hardening_report_dir": str(work / "reports"),
            "agent_firewall_ssh_sources": ["10.88.0.0/16"]}}}}))
        for name, roles in (("cis_then_firewall", CIS + FIREWALL), ("firewall_then_cis", FIREWALL + CIS)):
            (work / f"{name}.yml").write_text(ORDER.format(title=name.replace("_", " "), roles=roles))
        yield work
    finally:
        podman("rm", "-f", NAME, check=False)


def run(work, playbook):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf")))
    start = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(work / "inventory.json"),
                           "-e", "target=all", str(playbook)], capture_output=True, text=True, env=env, check=False, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = re.search(r"^%s\s+: ok=\d+\s+changed=(\d+)" % re.escape(NAME), proc.stdout, re.M)
    assert recap, proc.stdout[-2000:]
    changed_tasks, task = [], ""
    for line in proc.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.rfind("]")]
        elif line.startswith("changed:") and task not in changed_tasks:
            changed_tasks.append(task)
    return int(recap.group(1)), changed_tasks, time.monotonic() - start


def test_roles_converge_in_any_order_and_stay_converged(lab):
    first, _tasks, took = run(lab, lab / "cis_then_firewall.yml")
    assert first > 0
    timings = {"cis_then_firewall (first run)": round(took)}
    for playbook in (lab / "cis_then_firewall.yml", lab / "firewall_then_cis.yml", ROOT / "playbooks" / "ecs_host.yml"):
        changed, tasks, took = run(lab, playbook)
        timings[playbook.stem] = round(took)
        assert changed == 0, f"{playbook.name} changed {changed} tasks on a converged host: {tasks}"
    print("role order timings (s):", timings)
