"""Read-mostly checks: mounts from a mountinfo file, regex checks, commands, the walk."""
import os

from ansible_collections.guardrail.ecs.plugins.module_utils import cis_scan

MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw
23 22 0:22 / /proc rw,nosuid,nodev,noexec - proc proc rw
24 22 0:23 / /dev/shm rw,nosuid,nodev,noexec - tmpfs shm rw,size=64000k
25 22 0:24 / /tmp rw,relatime - tmpfs tmpfs rw
26 22 0:25 / /mnt/efs rw - nfs4 fs-1:/ rw
"""


def status(results):
    return {r["id"]: r["status"] for r in results}


def test_mount_checks(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    controls = [
        {"id": "1.1.8.1", "check": "mount", "path": "/dev/shm", "separate": True},
        {"id": "1.1.8.3", "check": "mount", "path": "/dev/shm", "options": ["noexec"]},
        {"id": "1.1.2.3", "check": "mount", "path": "/tmp", "options": ["noexec"]},
        {"id": "1.1.7.2", "check": "mount", "path": "/home", "options": ["nodev"]},
        {"id": "1.1.7.1", "check": "mount", "path": "/home", "separate": True},
    ]
    results, changed, scan = cis_scan.apply(controls, audit_only=True, mountinfo=str(info))
    assert status(results) == {"1.1.8.1": "pass", "1.1.8.3": "pass", "1.1.2.3": "failed",
                               "1.1.7.2": "not_applicable", "1.1.7.1": "failed"}
    assert not changed and scan is None


def test_regex_and_command_checks(tmp_path):
    sudoers = tmp_path / "sudoers"
    sudoers.write_text("# Defaults !authenticate\nDefaults use_pty\n")
    controls = [
        {"id": "4.3.4", "check": "regex_absent", "paths": [str(tmp_path / "sudo*")], "pattern": "!authenticate"},
        {"id": "x.1", "check": "regex_present", "paths": [str(sudoers)], "pattern": "use_pty"},
        {"id": "x.2", "check": "command", "argv": ["echo", "-P INPUT DROP"], "expect": "^-P INPUT DROP$"},
        {"id": "x.3", "check": "command", "argv": ["no-such-command-here"], "expect_absent": "LEGACY"},
    ]
    results, _changed, _scan = cis_scan.apply(controls)
    assert status(results) == {"4.3.4": "pass", "x.1": "pass", "x.2": "pass", "x.3": "failed"}


def test_walk_prunes_and_finds(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "var/lib/docker/overlay").mkdir(parents=True)
    (root / "data").mkdir()
    ww = root / "data/open"
    ww.write_text("")
    os.chmod(ww, 0o666)
    hidden = root / "var/lib/docker/overlay/open"
    hidden.write_text("")
    os.chmod(hidden, 0o666)
    real_walk = os.walk
    monkeypatch.setattr(cis_scan.os, "walk", lambda top, topdown=True: real_walk(str(root), topdown=topdown))
    findings, stats = cis_scan.walk([str(root / "var/lib/docker")], [])
    assert str(ww) in findings["world_writable_files"]
    assert str(hidden) not in findings["world_writable_files"]
    assert stats["entries"] >= 4


def test_pseudo_and_remote_mounts_are_pruned(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    table = cis_scan.mounts(str(info))
    assert ("/mnt/efs", "nfs4") in [(m[0], m[1]) for m in table]
    assert {"nosuid", "nodev", "noexec"} <= [m for m in table if m[0] == "/dev/shm"][0][2]
