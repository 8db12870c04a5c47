"""Promises of a lab host itself (tests/lab/lab-init): `sysctl -a` finishes
with the same keys as an unshielded host, and the machine's kernel.*, vm.* and
fs.* settings stay as they were through writes, a hardening-style
`sysctl --system`, and a reboot of the lab host."""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("GUARDRAIL_LAB_IMAGE", "localhost/guardrail-lab:debian12")
# One lab host per test process: the suite runs tests of this module on
# several pytest-xdist workers at once.
NAME = f"lab-host-sysctl-{os.getpid()}"
# Settings a CIS level 1 run writes, each set inside the lab host to a value
# other than the machine's, so a leak through the shield would show.
PROBES = {
    "kernel.randomize_va_space": ("2", "1"),
    "kernel.dmesg_restrict": ("1", "0"),
    "kernel.kptr_restrict": ("1", "2"),
    "fs.suid_dumpable": ("0", "1"),
    "fs.protected_fifos": ("1", "2"),
    "vm.swappiness": ("10", "11"),
}


def podman(*args, check=True, timeout=120):
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf"))
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
    return proc


def machine(key):
    return Path("/proc/sys", *key.split(".")).read_text().strip()


# Keys of network interfaces other than lo: a lab host has docker0 and more.
INTERFACE_KEY = re.compile(r"^net\.ipv[46]\.(conf|neigh)\.(?!(all|default|lo)\.)")


def keys(listing):
    return sorted(key for key in (line.split(" = ", 1)[0] for line in listing.splitlines() if " = " in line)
                  if not INTERFACE_KEY.match(key))


def wait_booted():
    out = ""
    for _attempt in range(60):
        out = podman("exec", NAME, "systemctl", "is-system-running", "--wait", timeout=120,
                     check=False).stdout.strip()
        if out in ("running", "degraded"):
            return
        time.sleep(1)
    pytest.fail(f"lab host did not boot: {out!r}")


@pytest.fixture(scope="module")
def lab_host():
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.fail("lab host tests need podman and root (run `make bootstrap` as root)")
    assert podman("image", "exists", IMAGE, check=False).returncode == 0, (
        f"lab image {IMAGE} is missing: run `make lab-image`")
    podman("rm", "-f", NAME, check=False)
    podman("run", "-d", "--privileged", "--name", NAME, "--systemd", "always", IMAGE)
    try:
        wait_booted()
        yield NAME
    finally:
        podman("rm", "-f", NAME, check=False)


def sysctl_all():
    proc = podman("exec", NAME, "timeout", "30", "sysctl", "-a", check=False, timeout=60)
    assert proc.returncode == 0, f"sysctl -a did not finish (rc={proc.returncode}): {proc.stderr[-500:]}"
    return proc.stdout


def test_sysctl_all_finishes_with_the_keys_of_an_unshielded_host(lab_host):
    listing = sysctl_all()
    values = dict(line.split(" = ", 1) for line in listing.splitlines() if " = " in line)
    assert "net.ipv4.ip_forward" in values
    assert "kernel.randomize_va_space" in values
    assert not any("/." in key or ".." in key for key in values), "sysctl walked a dot entry"
    # The same image without the shield: same network namespace kind, no copies.
    plain = podman("run", "--rm", "--privileged", "--entrypoint", "sysctl", IMAGE, "-a",
                   check=False).stdout
    assert keys(listing) == keys(plain)
    host_trees = subprocess.run(["sysctl", "-a"], capture_output=True, text=True,
                                check=False).stdout
    tree = ("kernel.", "vm.", "fs.")
    assert [k for k in keys(listing) if k.startswith(tree)] == \
        [k for k in keys(host_trees) if k.startswith(tree)]


def test_machine_settings_survive_writes_system_and_reboot(lab_host):
    before = {key: machine(key) for key in PROBES}
    inside = {key: (a if before[key] != a else b) for key, (a, b) in PROBES.items()}
    conf = "".join(f"{key} = {value}\n" for key, value in inside.items())
    podman("exec", NAME, "sh", "-c", f"printf '%s' '{conf}' > /etc/sysctl.d/60-lab-probe.conf")
    podman("exec", NAME, "sysctl", "--system")
    seen = podman("exec", NAME, "sysctl", "-n", *inside).stdout.split()
    assert seen == list(inside.values()), "the lab host does not see its own settings"
    assert {key: machine(key) for key in PROBES} == before, "a write reached the machine"
    podman("restart", "--time", "20", NAME, timeout=180)
    wait_booted()
    seen = podman("exec", NAME, "sysctl", "-n", *inside).stdout.split()
    assert seen == list(inside.values()), "systemd-sysctl did not apply the settings at boot"
    assert {key: machine(key) for key in PROBES} == before, "a boot wrote to the machine"
    sysctl_all()
