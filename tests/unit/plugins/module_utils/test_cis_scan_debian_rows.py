"""Checks behind the Debian 12 rows 1.1.1.10, 4.4.2.4/4.4.3.4 and 5.4.2.2-5.4.2.8."""
import os

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils import cis_scan

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
sync:x:4:0:sync:/bin:/bin/sync
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
builder:x:1001:0::/home/builder:/bin/bash
svc:x:998:998::/srv/svc:/usr/sbin/nologin
"""
SHADOW = """\
root:$y$j9T$abc:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
sync:*:19000:0:99999:7:::
backup:*:19000:0:99999:7:::
builder:!$y$j9T$def:19000:0:99999:7:::
svc:$y$j9T$ghi:19000:0:99999:7:::
"""
GROUP = "root:x:0:\nwheel2:x:0:builder\nbackup:x:34:\n"
SHELLS = "# /etc/shells\n/bin/sh\n/bin/bash\n/usr/bin/bash\n"


@pytest.fixture
def accounts(monkeypatch):
    files = {"/etc/passwd": PASSWD, "/etc/shadow": SHADOW, "/etc/group": GROUP, "/etc/shells": SHELLS,
             "/etc/login.defs": "UID_MIN 1000\n"}
    monkeypatch.setattr(cis_scan, "read_text", files.get)
    return files


def test_gid0_accounts_and_groups_besides_root_fail(accounts):
    assert cis_scan.account_test("gid0_only") == (False, "accounts with primary GID 0 besides root: builder")
    assert cis_scan.account_test("gid0_group_only") == (False, "groups with GID 0 besides root: wheel2")
    accounts["/etc/passwd"] = PASSWD.replace("1001:0:", "1001:1001:")
    accounts["/etc/group"] = "root:x:0:\n"
    assert cis_scan.account_test("gid0_only")[0] and cis_scan.account_test("gid0_group_only")[0]


@pytest.mark.parametrize("field,ok,state", [("$y$j9T$abc", True, "P"), ("!$y$j9T$abc", True, "L"), ("*", True, "L"),
                                            ("", False, "NP")])
def test_root_access_is_a_password_or_a_lock_never_empty(accounts, field, ok, state):
    accounts["/etc/shadow"] = SHADOW.replace("root:$y$j9T$abc:", "root:%s:" % field)
    assert cis_scan.account_test("root_access_controlled") == (ok, "root password status %s" % state)


def test_accounts_without_a_login_shell_are_locked(accounts, monkeypatch):
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, "", ""

    monkeypatch.setattr(cis_scan, "run", run)
    status, evidence, changed = cis_scan.check_shell_less_locked({}, False, None)
    # svc has nologin and a usable password; sync's /bin/sync is not a login shell but it is locked.
    assert (status, changed) == ("failed", False) and evidence.endswith(": svc") and calls == []
    status, evidence, changed = cis_scan.check_shell_less_locked({}, True, None)
    assert (status, changed, calls) == ("fixed", True, [["usermod", "-L", "svc"]])
    accounts["/etc/shadow"] = SHADOW.replace("svc:$y", "svc:!$y")
    assert cis_scan.check_shell_less_locked({}, True, None)[0] == "pass"


def test_unused_filesystem_modules_are_listed_unless_mounted_disabled_or_kept(tmp_path):
    release = os.uname().release
    fs = tmp_path / "modules" / release / "kernel" / "fs"
    for rel in ("cramfs/cramfs.ko.xz", "ext4/ext4.ko", "nfs/nfsv4.ko.zst", "hfs/hfs.ko", "btrfs/btrfs.ko.xz",
                "nls/nls_utf8.ko", "quota/quota_v2.ko"):
        (fs / rel).parent.mkdir(parents=True, exist_ok=True)
        (fs / rel).write_text("")
    modprobe = tmp_path / "modprobe.d"
    modprobe.mkdir()
    (modprobe / "cis.conf").write_text("install cramfs /bin/false\nblacklist cramfs\ninstall hfs /bin/true\n")
    ctx = cis_scan.Context(mount_table=[("/", "ext4", set())])
    row = {"modules_root": str(tmp_path / "modules"), "modprobe_dirs": [str(modprobe)], "keep": ["nfsv4"]}
    status, evidence, _changed = cis_scan.check_unused_fs_modules(row, False, ctx)
    assert status == "failed" and evidence.endswith(": btrfs"), evidence
    (modprobe / "cis.conf").write_text("install cramfs /bin/false\ninstall hfs /bin/true\ninstall btrfs /bin/false\n")
    assert cis_scan.check_unused_fs_modules(row, False, ctx)[0] == "pass"
    row["modules_root"] = str(tmp_path / "none")
    assert cis_scan.check_unused_fs_modules(row, False, ctx)[0] == "not_applicable"


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 0100007F:C3A3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3
   3: 0A00000A:0016 0B00000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 4
"""
UDP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  0: 00000000:007B 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5 2 0 0
"""


def test_open_ports_need_an_input_accept_rule(tmp_path, monkeypatch):
    (tmp_path / "tcp").write_text(TCP)
    (tmp_path / "udp").write_text(UDP)
    assert cis_scan.open_ports(4, str(tmp_path)) == {("tcp", 22), ("tcp", 8080), ("udp", 123)}
    rules = ("-P INPUT DROP\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n"
             "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p udp -m multiport --dports 100:200 -j ACCEPT\n")
    monkeypatch.setattr(cis_scan, "run", lambda argv: (0, rules, ""))
    status, evidence, _changed = cis_scan.check_listeners_have_rules({"family": 4, "proc_net": str(tmp_path)}, True, None)
    assert status == "failed" and "tcp/8080 (of 3 open)" in evidence, evidence
    rules += "-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT\n"
    assert cis_scan.check_listeners_have_rules({"family": 4, "proc_net": str(tmp_path)}, True, None)[0] == "pass"
    monkeypatch.setattr(cis_scan, "run", lambda argv: (0, "-P INPUT ACCEPT\n-A INPUT -j ACCEPT\n", ""))
    assert cis_scan.check_listeners_have_rules({"family": 4, "proc_net": str(tmp_path)}, True, None)[0] == "pass"


def test_a_number_in_a_command_is_passed_as_an_argument():
    status, evidence, _changed = cis_scan.check_command({"argv": ["printf", "%s-%s", 2, 3], "expect": "^2-3$"}, True, None)
    assert status == "pass", evidence
