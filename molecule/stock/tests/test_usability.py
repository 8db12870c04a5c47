"""A hardened ECS host is still a host people can run: after the ECS host play on a
stock Debian 12 host (Level 2), and again after a reboot, a user is created, sets and
changes a password that meets the policy (and is refused one that does not, with
pwquality's message), logs in over SSH with a key and runs sudo; `docker run` works;
a task on every kind of task network reaches the ECS agent's credentials endpoint;
chrony keeps time from its configured server; logrotate runs clean."""
import shlex
import subprocess
import time

import pytest

USER = "opsuser"
# 16 characters of four classes, no dictionary word, no run or sequence longer than 3.
GOOD = "Tq7#vLm2$Wz9!pKd"
NEXT = "Rb4%nXc8&Hy3?sJf"
TIME_SERVER = "169.254.169.123"
# What the lab's ECS agent stand-in (tests/lab/ecs_agent_standins.yml) answers at /v2/credentials.
CREDENTIALS_KEY = '"AccessKeyId": "ASIALABSTANDIN000000"'
# A task network of each kind: docker0 (bridge mode), a `docker network create` bridge
# (br-<id>), and one named ecs-bridge on awsvpc's subnet, as the ECS CNI plugin makes it.
TASK_NETWORKS = {
    "bridge": None,
    "lab-tasks": [],
    "lab-ecs-bridge": ["--subnet", "169.254.172.0/22", "-o", "com.docker.network.bridge.name=ecs-bridge"],
}


def sh(host, script, stdin=None):
    """Runs a shell script as root, with stdin from a here-string (never a tty)."""
    if stdin is not None:
        script = "%s <<< %s" % (script, shlex.quote(stdin))
    return host.run("bash -c %s" % shlex.quote(script))


def wait_booted(host, name):
    state = ""
    for _attempt in range(90):
        proc = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
                              capture_output=True, text=True, check=False, timeout=300)
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(2)
    pytest.fail("the host did not come back after the reboot: %r" % state)


@pytest.fixture(scope="module", params=["first boot", "after a reboot"])
def boot(request, host):
    if request.param == "after a reboot":
        name = host.backend.name
        subprocess.run(["podman", "restart", "--time", "30", name], check=True, timeout=300)
        wait_booted(host, name)
    return request.param


@pytest.fixture(scope="module")
def user(host, boot):
    """A user created the way an operator does it, with a password that meets the policy."""
    # pam_pwhistory keeps a user's old passwords after the user is deleted: forget this test user's.
    sh(host, "userdel -r {0} 2>/dev/null; sed -i '/^{0}:/d' /etc/security/opasswd 2>/dev/null".format(USER))
    created = sh(host, "useradd --create-home --shell /bin/bash --groups sudo %s" % USER)
    assert created.rc == 0, created.stderr
    chpasswd = sh(host, "chpasswd", stdin="%s:%s" % (USER, GOOD))
    assert chpasswd.rc == 0, "no password can be set: " + chpasswd.stdout + chpasswd.stderr
    return USER


def test_the_host_came_back_with_its_services(host, boot):
    for unit in ("ssh.service", "docker.service", "chrony.service", "cron.service", "rsyslog.service"):
        assert host.service(unit).is_running, "%s is not running (%s)" % (unit, boot)
    failed = sh(host, "systemctl list-units --failed --plain --no-legend | awk '{print $1}'").stdout.split()
    # auditd cannot run inside a container: the audit subsystem belongs to the machine's kernel; the
    # EFS volume's fstab entry cannot mount either: the lab kernel has no NFS client.
    assert set(failed) <= {"auditd.service", "mnt-efs-data.mount"}, failed


def test_a_weak_password_is_refused_with_pwquality_s_message(host, user):
    weak = sh(host, "chpasswd", stdin="%s:password1" % user)
    assert weak.rc != 0
    message = weak.stdout + weak.stderr
    assert "BAD PASSWORD" in message, message
    assert "error loading dictionary" not in message, message


def test_a_user_changes_their_own_password(host, user):
    # 5.4.1.2: a password may change once a day; the first one was set today.
    aged = sh(host, "chage --lastday $(date -d '-2 days' +%%F) %s" % user)
    assert aged.rc == 0, aged.stderr
    before = sh(host, "getent shadow %s | cut -d: -f2" % user).stdout.strip()
    weak = sh(host, "runuser -u %s -- passwd" % user, stdin="%s\nqwerty\nqwerty\n" % GOOD)
    assert weak.rc != 0 and "BAD PASSWORD" in weak.stdout + weak.stderr, weak.stdout + weak.stderr
    changed = sh(host, "runuser -u %s -- passwd" % user, stdin="%s\n%s\n%s\n" % (GOOD, NEXT, NEXT))
    assert changed.rc == 0, changed.stdout + changed.stderr
    after = sh(host, "getent shadow %s | cut -d: -f2" % user).stdout.strip()
    assert after != before and after.startswith("$")


def test_a_key_login_over_ssh(host, user):
    setup = sh(host, f"""set -e
        rm -f /root/lab-key /root/lab-key.pub
        ssh-keygen -q -t ed25519 -N '' -f /root/lab-key
        install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh
        install -m 0600 -o {user} -g {user} /root/lab-key.pub /home/{user}/.ssh/authorized_keys""")
    assert setup.rc == 0, setup.stderr
    login = sh(host, f"ssh -i /root/lab-key -o BatchMode=yes -o StrictHostKeyChecking=no "
                     f"-o UserKnownHostsFile=/dev/null {user}@127.0.0.1 id -un")
    assert login.rc == 0 and login.stdout.strip() == user, login.stderr
    # The login banner of 5.1.5 is shown before authentication.
    assert "Authorized access only" in login.stderr


def test_sudo_asks_the_user_s_password_and_logs_the_command(host, user):
    # How sudo works on the hardened host: members of the sudo group, with their own password
    # (no NOPASSWD, 5.2.4), a pty (5.2.2) and every command in /var/log/sudo.log (5.2.3).
    # The password is the first one, or the next one when the user has changed it already.
    for current in (GOOD, NEXT):
        proc = sh(host, "runuser -u %s -- sudo -S -k -p '' id -u" % user, stdin=current)
        if proc.rc == 0:
            break
    else:
        pytest.fail("sudo refused the user's password: " + proc.stderr)
    assert proc.stdout.strip().splitlines()[-1] == "0"
    refused = sh(host, "runuser -u %s -- sudo -S -k -p '' id -u" % user, stdin=current + "x")
    assert refused.rc != 0
    assert "COMMAND=/usr/bin/id -u" in host.file("/var/log/sudo.log").content_string


def test_docker_runs_a_container(host, boot):
    imported = sh(host, "docker image inspect lab/busybox >/dev/null 2>&1 || "
                        "docker import /usr/local/share/lab/busybox.tar lab/busybox")
    assert imported.rc == 0, imported.stderr
    ran = sh(host, "docker run --rm lab/busybox echo container-ran")
    assert ran.rc == 0 and ran.stdout.strip() == "container-ran", ran.stderr


@pytest.mark.parametrize("network", sorted(TASK_NETWORKS))
def test_a_task_gets_its_credentials_from_the_ecs_agent(host, boot, network):
    # The task's view: 169.254.170.2:80, through ecs-init's NAT rules, to the agent on
    # 127.0.0.1:51679 — the INPUT rule agent_firewall adds is all that lets it through the
    # default-deny policy. busybox's nc writes the request (its wget crashes on this image).
    assert sh(host, "docker image inspect lab/busybox >/dev/null 2>&1 || "
                    "docker import /usr/local/share/lab/busybox.tar lab/busybox").rc == 0
    options = TASK_NETWORKS[network]
    if options is not None and sh(host, "docker network inspect %s >/dev/null 2>&1" % network).rc != 0:
        made = sh(host, "docker network create %s %s" % (" ".join(map(shlex.quote, options)), network))
        assert made.rc == 0, made.stderr
    probe = sh(host, "docker run --rm -i --network %s lab/busybox nc -w 5 169.254.170.2 80" % network,
               stdin="GET /v2/credentials HTTP/1.0\r\n\r\n")
    answer = probe.stdout
    assert answer.startswith("HTTP/1.0 200 ") or answer.startswith("HTTP/1.1 200 "), (
        "no HTTP 200 from the credentials endpoint on %s (%s): %r %s" % (network, boot, answer, probe.stderr))
    assert CREDENTIALS_KEY in answer, answer


def test_chrony_keeps_time_from_its_configured_server(host, boot):
    assert "server %s" % TIME_SERVER in host.file("/etc/chrony/chrony.conf").content_string
    sources = ""
    for _attempt in range(45):
        sources = sh(host, "chronyc -n sources").stdout
        if any(line.startswith("^*") and TIME_SERVER in line for line in sources.splitlines()):
            break
        time.sleep(2)
    else:
        pytest.fail("chronyd does not use %s (%s):\n%s" % (TIME_SERVER, boot, sources))
    assert "Leap status     : Normal" in sh(host, "chronyc tracking").stdout


def test_logs_rotate(host, boot):
    assert host.package("logrotate").is_installed
    dry = sh(host, "logrotate --debug /etc/logrotate.conf")
    assert dry.rc == 0, dry.stderr[-2000:]
    assert "error:" not in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-2000:]
    assert host.service("logrotate.timer").is_enabled


def test_log_file_modes_hold_after_a_package_install(host, boot):
    # 6.1.4.1 must not depend on the order of roles: apt resets its own logs at every run.
    installed = sh(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends less")
    assert installed.rc == 0, installed.stderr[-1000:]
    wide = sh(host, "find /var/log -type f -perm /0137 ! -name 'wtmp*' ! -name 'btmp*' ! -name 'lastlog*' "
                    "! -path '/var/log/journal/*'").stdout.split()
    assert wide == [], wide
