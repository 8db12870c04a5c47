"""What the roles promise on a stock Debian 12 host they were not tuned to."""
import json
import os
import socket
import subprocess
from pathlib import Path


def test_agent_firewall_chains_are_live_and_persisted(host):
    rules = host.iptables.rules("filter", "INPUT")
    jumps = [r for r in rules if r == "-A INPUT -j AGENT-FW-INPUT"]
    assert len(jumps) == 1
    chain = host.iptables.rules("filter", "AGENT-FW-INPUT")
    # Every task network: docker0 and its kind, user-defined bridges, ecs-bridge.
    for bridge in ("docker+", "br-+", "ecs-bridge"):
        assert f"-A AGENT-FW-INPUT -d 127.0.0.0/8 -i {bridge} -p tcp -m tcp --dport 51679 -j ACCEPT" in chain, chain
    assert "-A PREROUTING -j AGENT-FW-PREROUTING" in host.iptables.rules("nat", "PREROUTING")
    boot = host.file("/etc/iptables/rules.v4")
    assert boot.mode == 0o600 and ":AGENT-FW-INPUT - [0:0]" in boot.content_string
    assert host.file("/usr/local/libexec/agent-firewall-apply").mode == 0o644
    assert host.service("agent-firewall.service").is_enabled


def test_the_boot_file_loads_and_holds_only_the_role_and_host_rules(host):
    boot = host.file("/etc/iptables/rules.v4").content_string
    assert "MASQUERADE" not in boot and "DOCKER-ISOLATION" not in boot
    proof = host.run("unshare --net iptables-restore /etc/iptables/rules.v4")
    assert proof.rc == 0, proof.stderr


def test_autosave_was_answered_no(host):
    answers = host.run("debconf-show iptables-persistent").stdout
    assert "autosave_v4: false" in answers and "autosave_v6: false" in answers


def test_cis_hardening_applied_its_level_1_settings(host):
    assert host.run("sysctl -n net.ipv4.conf.all.send_redirects").stdout.strip() == "0"
    # Installed on the first run, from a host that had no package lists.
    for package in ("cron", "sudo", "rsyslog", "aide"):
        assert host.package(package).is_installed, package


def test_efs_volume_wrote_the_mount(host):
    fstab = host.file("/etc/fstab").content_string
    assert "fs-0123456789abcdef0" in fstab and "/mnt/efs/data" in fstab
    # mount_state present writes fstab only (this kernel has no NFS client to mount with).
    entry = next(line for line in fstab.splitlines() if "/mnt/efs/data" in line)
    assert "nfsvers=4.1" in entry and "noresvport" in entry, entry


def test_aide_database_was_initialised(host):
    # Debian 12 6.3.1: AIDE installed and its database initialised (aideinit / aide --init).
    database = host.file("/var/lib/aide/aide.db")
    assert database.exists and database.user == "root" and database.size > 0
    assert not host.file("/var/lib/aide/aide.db.new").exists, "an unfinished init was left behind"
    assert host.run("test -x /usr/bin/aide").rc == 0


def _lab_address():
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(Path(__file__).resolve().parents[3] / "tests" / "lab" / "containers.conf"))
    out = subprocess.run(["podman", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "lab-stock"],
                         capture_output=True, text=True, env=env, check=True, timeout=30).stdout.strip()
    assert out, "no IP address for lab-stock"
    return out


def _connect(address, port):
    """'accepted' when the host answered (a banner, or a reset: nothing listens), 'dropped' on a timeout."""
    try:
        with socket.create_connection((address, port), timeout=3):
            return "accepted"
    except ConnectionRefusedError:
        return "accepted"
    except OSError:
        return "dropped"


def test_agent_firewall_made_the_stock_host_default_deny(host):
    # No fixture and no image set these: agent_firewall did, in iptables and ip6tables.
    for command in ("iptables", "ip6tables"):
        policies = [r for r in host.check_output(f"{command} -S").splitlines() if r.startswith("-P ")]
        assert policies == ["-P INPUT DROP", "-P FORWARD DROP", "-P OUTPUT ACCEPT"], (command, policies)
    boot = host.file("/etc/iptables/rules.v4").content_string
    assert ":INPUT DROP [0:0]" in boot and ":FORWARD DROP [0:0]" in boot


def test_ssh_gets_through_from_the_listed_source_and_other_ports_do_not():
    # The stock host runs no sshd: a reset from port 22 shows the firewall let the connection through.
    address = _lab_address()
    assert _connect(address, 22) == "accepted"
    assert _connect(address, 2049) == "dropped"


def test_cis_firewall_rows_report_the_policies_the_host_has():
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "reports", "lab-stock.json")
    with open(path, encoding="utf-8") as handle:
        rows = {c["id"]: c for c in json.load(handle)["controls"]}
    # 4.4.2.1 default deny, 4.4.2.2 loopback, 4.4.2.3 established: in agent_firewall's chain, jumped to from INPUT.
    for control in ("4.4.2.1", "4.4.2.2", "4.4.2.3"):
        assert rows[control]["status"] == "pass", rows[control]
