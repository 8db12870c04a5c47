"""Checks behind the Debian 12 rows 1.1.1.10, 4.4.2.4/4.4.3.4 and 5.4.2.2-5.4.2.8."""
import os

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import scan as cis_scan

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


def test_unused_filesystems_are_listed_unless_mounted_disabled_or_kept(tmp_path):
    release = os.uname().release
    fs = tmp_path / "modules" / release / "kernel" / "fs"
    for rel in ("cramfs/cramfs.ko.xz", "ext4/ext4.ko", "nfs/nfsv4.ko.zst", "nfs/nfs.ko", "hfs/hfs.ko", "btrfs/btrfs.ko.xz",
                "fat/fat.ko", "fat/vfat.ko", "isofs/isofs.ko", "nls/nls_utf8.ko", "quota/quota_v2.ko", "mbcache.ko",
                "binfmt_misc.ko"):
        (fs / rel).parent.mkdir(parents=True, exist_ok=True)
        (fs / rel).write_text("")
    modprobe = tmp_path / "modprobe.d"
    modprobe.mkdir()
    # hfs is only refused on request, not blacklisted: the benchmark asks for both lines.
    (modprobe / "cis.conf").write_text("install cramfs /bin/false\nblacklist cramfs\ninstall hfs /bin/true\n")
    # vfat (/boot/efi) is the fat directory, iso9660 the isofs one; modules directly in kernel/fs are libraries.
    ctx = cis_scan.Context(mount_table=[("/", "ext4", set()), ("/boot/efi", "vfat", set()), ("/cdrom", "iso9660", set())])
    row = {"modules_root": str(tmp_path / "modules"), "modprobe_dirs": [str(modprobe)], "keep": ["nfs"]}
    status, evidence, _changed = cis_scan.check_unused_fs_modules(row, False, ctx)
    assert status == "failed" and evidence.endswith(": btrfs, hfs"), evidence
    (modprobe / "cis.conf").write_text("install cramfs /bin/false\nblacklist cramfs\ninstall hfs /bin/true\nblacklist hfs\n"
                                       "install btrfs /bin/false\nblacklist btrfs\n")
    assert cis_scan.check_unused_fs_modules(row, False, ctx)[0] == "pass"
    row["keep"] = []
    assert cis_scan.check_unused_fs_modules(row, False, ctx)[1].endswith(": nfs")
    row["modules_root"] = str(tmp_path / "none")
    assert cis_scan.check_unused_fs_modules(row, False, ctx)[0] == "not_applicable"


def test_no_login_shells_listed_or_no_shadow_entry_locks_nothing(accounts, monkeypatch):
    calls = []
    monkeypatch.setattr(cis_scan, "run", lambda argv: calls.append(argv) or (0, "", ""))
    accounts["/etc/shells"] = "# no shells\n"
    status, evidence, changed = cis_scan.check_shell_less_locked({}, True, None)
    assert (status, changed, calls) == ("failed", False, []) and "nothing locked" in evidence
    accounts["/etc/shells"] = SHELLS
    accounts["/etc/shadow"] = SHADOW.replace("svc:$y$j9T$ghi:19000:0:99999:7:::\n", "")
    status, evidence, changed = cis_scan.check_shell_less_locked({}, True, None)
    assert (status, changed, calls) == ("failed", False, []) and "missing from /etc/shadow (7.2.1): svc" in evidence


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


TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000
   1: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000
   2: 0000000000000000FFFF00000100007F:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000
"""

RULES = """\
-P INPUT DROP
-N AGENT-FW-INPUT
-A INPUT -i lo -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -j AGENT-FW-INPUT
-A INPUT -p udp -m multiport --dports 100:200 -j ACCEPT
-A INPUT -p tcp -m tcp ! --dport 8080 -j ACCEPT
-A AGENT-FW-INPUT -p tcp -m tcp --dport ssh -j ACCEPT
-A AGENT-FW-INPUT -p tcp -m tcp --dport 51678 -j DROP
-A AGENT-FW-INPUT -p tcp -m tcp --dport no-such-service -j ACCEPT
"""


def test_open_ports_need_a_rule_in_input_or_a_chain_it_jumps_to(tmp_path, monkeypatch):
    (tmp_path / "tcp").write_text(TCP)
    (tmp_path / "udp").write_text(UDP)
    (tmp_path / "tcp6").write_text(TCP6)
    (tmp_path / "udp6").write_text("  sl  local_address\n")
    # [::]:8081 takes IPv4 connections too; ::1 and ::ffff:127.0.0.1 are loopback.
    assert cis_scan.open_ports(4, str(tmp_path)) == {("tcp", 22), ("tcp", 8080), ("udp", 123), ("tcp", 8081)}
    assert cis_scan.open_ports(6, str(tmp_path)) == {("tcp", 8081)}
    rules = {"text": RULES}
    monkeypatch.setattr(cis_scan, "run", lambda argv: (0, rules["text"], ""))
    row = {"family": 4, "proc_net": str(tmp_path)}
    status, evidence, _changed = cis_scan.check_listeners_have_rules(row, True, None)
    # ssh is named in the jumped-to chain; ! --dport 8080 says nothing for 8080.
    assert status == "failed" and evidence.endswith(": tcp/8080, tcp/8081 (of 4 open)"), evidence
    rules["text"] += "-A AGENT-FW-INPUT -p tcp -m multiport --dports 8080:8081 -j REJECT\n"
    assert cis_scan.check_listeners_have_rules(row, True, None)[0] == "pass"
    rules["text"] = "-P INPUT DROP\n-A INPUT -s 10.0.0.0/8 -j ACCEPT\n"
    assert cis_scan.check_listeners_have_rules(row, True, None)[0] == "pass"
    monkeypatch.setattr(cis_scan, "run", lambda argv: (1, "", "iptables: not found"))
    assert cis_scan.check_listeners_have_rules(row, True, None)[0] == "failed"


def test_ip6tables_rows_are_not_applicable_on_a_host_without_ipv6(tmp_path, monkeypatch):
    monkeypatch.setattr(cis_scan, "run", lambda argv: (0, "-P INPUT ACCEPT\n", ""))
    if_inet6 = tmp_path / "if_inet6"
    row = {"id": "4.4.3.1", "check": "command", "argv": ["ip6tables", "-S"], "expect": "^-P INPUT DROP$", "ipv6": True,
           "if_inet6": str(if_inet6)}
    if_inet6.write_text("")
    results, _changed, _scan = cis_scan.apply([row], mountinfo=str(tmp_path / "none"))
    assert results[0]["status"] == "not_applicable" and "IPv6 is off" in results[0]["evidence"]
    if_inet6.write_text("00000000000000000000000000000001 01 80 10 80       lo\n")
    results, _changed, _scan = cis_scan.apply([row], mountinfo=str(tmp_path / "none"))
    assert results[0]["status"] == "failed"
