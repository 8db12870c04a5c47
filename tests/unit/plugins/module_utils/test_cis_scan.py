"""Read-mostly checks: mounts from a mountinfo file, regex checks, commands, the walk."""
import os

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import scan as cis_scan

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


def test_mount_options_fixed_live_are_persisted_or_failed(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO + "27 22 0:26 / /var/tmp rw,relatime - ext4 /dev/xvdb rw\n")
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=abc / ext4 defaults 0 1\n")

    def fake_run(argv, **_kwargs):
        assert argv[:2] == ["mount", "-o"]
        point, options = argv[3], argv[2].split(",")[1:]
        info.write_text(info.read_text().replace(" %s rw" % point, " %s rw,%s" % (point, ",".join(options)), 1))
        return 0, "", ""

    monkeypatch.setattr(cis_scan, "run", fake_run)
    controls = [
        {"id": "1.1.2.3", "check": "mount", "path": "/tmp", "options": ["nodev", "nosuid", "noexec"]},
        {"id": "1.1.5.2", "check": "mount", "path": "/var/tmp", "options": ["nodev"]},
    ]
    results, changed, _scan = cis_scan.apply(controls, mountinfo=str(info), fstab=str(fstab))
    assert changed
    # /tmp is a tmpfs (tmp.mount): an fstab entry keeps the options at the next boot.
    assert "tmpfs\t/tmp\ttmpfs\tdefaults,nodev,nosuid,noexec\t0\t0" in fstab.read_text().splitlines()
    assert status(results) == {"1.1.2.3": "fixed", "1.1.5.2": "failed"}
    evidence = {r["id"]: r["evidence"] for r in results}
    assert "lost at reboot" in evidence["1.1.5.2"] and "no /etc/fstab entry" in evidence["1.1.5.2"]
    results, changed, _scan = cis_scan.apply(controls[:1], mountinfo=str(info), fstab=str(fstab))
    assert not changed and status(results) == {"1.1.2.3": "pass"}


def test_live_mount_options_missing_from_fstab_are_not_a_pass(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    fstab = tmp_path / "fstab"
    fstab.write_text("tmpfs /dev/shm tmpfs defaults,nodev 0 0\n")
    controls = [{"id": "1.1.8.3", "check": "mount", "path": "/dev/shm", "options": ["noexec"]}]
    results, _changed, _scan = cis_scan.apply(controls, audit_only=True, mountinfo=str(info), fstab=str(fstab))
    assert status(results) == {"1.1.8.3": "failed"}
    assert "not in /etc/fstab" in results[0]["evidence"]


def test_aide_scheduled_needs_a_real_schedule(tmp_path, monkeypatch):
    crond = tmp_path / "cron.d"
    crond.mkdir()
    # Mentions of aide that schedule nothing.
    (crond / "notes").write_text("# 0 5 * * * root /usr/bin/aide --check\nMAILTO=aide-admin\n")
    (tmp_path / "aide").write_text("#!/bin/sh\n/usr/bin/aide --check\n")
    (tmp_path / "aide").chmod(0o755)
    timers = {"dailyaidecheck.timer": ("disabled", True)}
    calls = []

    def fake_run(argv, **_kwargs):
        calls.append(argv)
        if argv[:2] == ["systemctl", "is-enabled"]:
            state = timers.get(argv[2])
            return (0 if state and state[0] == "enabled" else 1), (state[0] if state else "not-found") + "\n", ""
        if argv[:3] == ["systemctl", "enable", "--now"]:
            timers[argv[3]] = ("enabled", True)
            return 0, "", ""
        raise AssertionError(argv)

    monkeypatch.setattr(cis_scan, "run", fake_run)
    control = {"id": "1.3.2", "check": "aide_scheduled", "cron_paths": [str(crond / "*")],
               "timers": ["dailyaidecheck.timer", "aidecheck.timer"], "aide": str(tmp_path / "aide")}
    results, changed, _scan = cis_scan.apply([control], audit_only=True)
    assert status(results) == {"1.3.2": "failed"} and not changed
    results, changed, _scan = cis_scan.apply([control])
    assert changed and status(results) == {"1.3.2": "fixed"}
    assert ["systemctl", "enable", "--now", "dailyaidecheck.timer"] in calls
    results, changed, _scan = cis_scan.apply([control])
    assert not changed and status(results) == {"1.3.2": "pass"}
    assert "dailyaidecheck.timer enabled" in results[0]["evidence"]


def test_aide_scheduled_by_cron_or_written_to_cron(tmp_path, monkeypatch):
    crond = tmp_path / "cron.d"
    crond.mkdir()
    aide = tmp_path / "aide"
    aide.write_text("#!/bin/sh\n")
    aide.chmod(0o755)
    monkeypatch.setattr(cis_scan, "run", lambda argv, **_kw: (4, "not-found\n", ""))
    control = {"id": "1.3.2", "check": "aide_scheduled", "cron_paths": [str(crond / "*")], "timers": ["aidecheck.timer"],
               "aide": str(aide), "cron_file": str(crond / "cis-aide")}
    results, changed, _scan = cis_scan.apply([control])
    assert changed and status(results) == {"1.3.2": "fixed"}
    assert (crond / "cis-aide").read_text() == "0 5 * * * root %s --check\n" % aide
    results, changed, _scan = cis_scan.apply([control])
    assert not changed and status(results) == {"1.3.2": "pass"}
    assert "cis-aide" in results[0]["evidence"]
    aide.unlink()
    (crond / "cis-aide").unlink()
    results, _changed, _scan = cis_scan.apply([control])
    assert status(results) == {"1.3.2": "failed"} and "not installed" in results[0]["evidence"]


# One test per registered check function, called directly.
def test_every_check_kind_is_a_registered_function():
    assert set(cis_scan.CHECKS) == {"world_writable", "unowned", "suid_sgid", "mount", "aide_scheduled", "accounts",
                                    "regex_absent", "regex_present", "command", "local_only", "shell_less_locked",
                                    "unused_fs_modules", "listeners_have_rules"}
    assert all(callable(f) for f in cis_scan.CHECKS.values())


def test_check_world_writable_fixes_files_and_directories(tmp_path):
    loose, shared = tmp_path / "loose", tmp_path / "shared"
    loose.write_text("x")
    loose.chmod(0o666)
    shared.mkdir()
    shared.chmod(0o777)
    ctx = cis_scan.Context({"world_writable_files": [str(loose)], "world_writable_dirs": [str(shared)]})
    assert cis_scan.check_world_writable({}, False, ctx)[0] == "failed" and loose.stat().st_mode & 0o777 == 0o666
    status_, _text, changed = cis_scan.check_world_writable({}, True, ctx)
    assert (status_, changed) == ("fixed", True)
    assert loose.stat().st_mode & 0o777 == 0o664 and shared.stat().st_mode & 0o1000


def test_check_unowned_and_suid_sgid():
    ctx = cis_scan.Context({"unowned": ["/srv/x"], "suid_sgid": ["/usr/bin/su"]}, {"entries": 3})
    assert cis_scan.check_unowned({}, True, ctx)[:2] == ("failed", "unowned or ungrouped: /srv/x")
    assert cis_scan.check_suid_sgid({}, True, ctx)[:2] == ("pass", "1 SUID/SGID files for review: /usr/bin/su")


def test_check_regex_ignores_comments(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text("# PermitRootLogin yes\nPermitRootLogin no\n")
    row = {"check": "regex_absent", "paths": [str(tmp_path / "*.conf")], "pattern": "PermitRootLogin yes"}
    assert cis_scan.check_regex(row, True, None)[0] == "pass"
    assert cis_scan.check_regex(dict(row, check="regex_present"), True, None)[0] == "failed"


def test_check_command_and_local_only():
    assert cis_scan.check_command({"argv": ["echo", "ok"], "expect": "^ok$"}, True, None)[0] == "pass"
    assert cis_scan.check_command({"argv": ["echo", "LEGACY"], "expect_absent": "LEGACY"}, True, None)[0] == "failed"
    status_, text, _changed = cis_scan.check_local_only({"port": 1}, True, None)
    assert status_ == "pass" and text == "tcp/1 listeners: none"


def test_unknown_check_names_the_known_ones():
    import pytest

    from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError
    with pytest.raises(CisError, match="unknown check 'nope'.*aide_scheduled"):
        cis_scan.apply([{"id": "9.9", "check": "nope"}])


def test_one_control_per_option_of_a_tmpfs_is_idempotent(tmp_path, monkeypatch):
    # /tmp of tmp.mount, nodev and nosuid live, noexec missing; the benchmark has one control per option.
    info = tmp_path / "mountinfo"
    info.write_text("25 22 0:24 / /tmp rw,nosuid,nodev,relatime - tmpfs tmpfs rw\n")
    fstab = tmp_path / "fstab"
    fstab.write_text("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n")

    def fake_run(argv, **_kwargs):
        info.write_text("25 22 0:24 / /tmp rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw\n")
        return 0, "", ""

    monkeypatch.setattr(cis_scan, "run", fake_run)
    controls = [{"id": "1.1.2.%d" % i, "check": "mount", "path": "/tmp", "options": [o]}
                for i, o in enumerate(("nodev", "noexec", "nosuid"), start=2)]
    results, changed, _scan = cis_scan.apply(controls, mountinfo=str(info), fstab=str(fstab))
    assert changed and status(results) == {"1.1.2.2": "pass", "1.1.2.3": "fixed", "1.1.2.4": "pass"}
    results, changed, _scan = cis_scan.apply(controls, mountinfo=str(info), fstab=str(fstab))
    assert not changed and set(status(results).values()) == {"pass"}
