"""Packages and units: the command sequence, with dpkg and systemctl replaced."""
from ansible_collections.guardrail.ecs.plugins.module_utils.cis import services as cis_services


class FakeHost:
    def __init__(self, installed, units):
        self.installed = set(installed)
        self.units = units
        self.calls = []

    def run(self, argv, timeout=120, data=None):
        self.calls.append(argv)
        if argv[0] == "dpkg-query":
            names = argv[4:]
            return 0, "".join("%s\tinstalled\n" % n for n in names if n in self.installed), ""
        if argv[:2] == ["systemctl", "show"]:
            blocks = []
            for unit in argv[argv.index("--") + 1:]:
                state = self.units.get(unit, {"LoadState": "not-found", "UnitFileState": "", "ActiveState": "inactive"})
                blocks.append("\n".join("%s=%s" % kv for kv in dict(state, Id=unit).items()))
            return 0, "\n\n".join(blocks) + "\n", ""
        if argv[:3] == ["systemctl", "mask", "--now"]:
            for unit in argv[3:]:
                self.units[unit] = {"LoadState": "masked", "UnitFileState": "masked", "ActiveState": "inactive"}
            return 0, "", ""
        if argv[0] == "apt-get":
            self.installed -= set(argv[4:])
            return 0, "", ""
        if argv[:2] == ["systemctl", "start"] and argv[2] == "auditd.service":
            return 1, "", "Job for auditd.service failed"
        return 0, "", ""


def test_one_query_one_change_per_kind(monkeypatch):
    host = FakeHost({"avahi-daemon", "chrony"}, {
        "rpcbind.service": {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "active"},
        "auditd.service": {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "failed"},
    })
    monkeypatch.setattr(cis_services, "run", host.run)
    controls = [
        {"id": "2.2.2", "packages_absent": ["avahi-daemon"]},
        {"id": "2.2.17", "services_masked": ["rpcbind.service", "rpcbind.socket"]},
        {"id": "2.2.16", "services_masked": ["nfs-server"], "waived": "NFS client kept for EFS"},
        {"id": "5.2.1.4", "services_enabled": ["auditd.service"]},
    ]
    results, changed, commands = cis_services.apply(controls)
    by_id = {r["id"]: r for r in results}
    assert changed
    assert by_id["2.2.2"]["status"] == "fixed"
    assert by_id["2.2.17"]["status"] == "fixed"
    assert by_id["2.2.16"]["status"] == "waived"
    # Enabled but not running is not "enabled and active".
    assert by_id["5.2.1.4"]["status"] == "failed" and "start failed" in by_id["5.2.1.4"]["evidence"]
    assert [c["cmd"][:3] for c in commands] == [["apt-get", "-y", "-q"], ["systemctl", "mask", "--now"]]
    assert commands[1]["cmd"][3:] == ["rpcbind.service"]
    assert sum(1 for c in host.calls if c[0] == "dpkg-query") == 2
    host.calls.clear()
    results, changed, commands = cis_services.apply(controls)
    assert not commands and not changed
    assert {r["id"]: r["status"] for r in results if r["status"] not in ("pass", "waived")} == {"5.2.1.4": "failed"}


def test_install_on_a_host_without_package_lists_updates_them_first(monkeypatch, tmp_path):
    # A stock host: no apt lists, so `apt-get install` alone cannot locate any package.
    host = FakeHost(set(), {})
    monkeypatch.setattr(cis_services, "run", host.run)
    controls = [{"id": "2.4.1.1", "packages_present": ["cron"]}]
    _results, _changed, commands = cis_services.apply(controls, apt_lists=str(tmp_path))
    assert [c["cmd"][:3] for c in commands] == [["apt-get", "-q", "update"], ["apt-get", "-y", "-q"]]
    (tmp_path / "mirror_debian_dists_bookworm_main_binary-amd64_Packages").write_text("")
    _results, _changed, commands = cis_services.apply(controls, apt_lists=str(tmp_path))
    assert [c["cmd"][:3] for c in commands] == [["apt-get", "-y", "-q"]]


def test_check_mode_predicts_only_what_the_run_would_change(monkeypatch):
    """Check mode says changed when the run would run a change, not for every failed control: a package
    the run may not install, or a unit whose last start failed, is failed in both and changes nothing."""
    host = FakeHost({"avahi-daemon"}, {
        "auditd.service": {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "failed"},
        "cron.service": {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "active"},
    })
    monkeypatch.setattr(cis_services, "run", host.run)
    cannot = [{"id": "6.3.1", "packages_present": ["aide", "aide-common"]},
              {"id": "6.2.1.2", "services_enabled": ["auditd.service"]},
              {"id": "2.4.1.1", "services_enabled": ["cron.service"]}]
    for check_mode in (True, False):
        results, changed, commands = cis_services.apply(cannot, install_packages=False, check_mode=check_mode)
        assert not changed, (check_mode, commands)
        assert {r["id"]: r["status"] for r in results} == {"6.3.1": "failed", "6.2.1.2": "failed", "2.4.1.1": "pass"}
    would = cannot + [{"id": "2.2.2", "packages_absent": ["avahi-daemon"]}]
    results, changed, commands = cis_services.apply(would, install_packages=False, check_mode=True)
    assert changed and not commands and "avahi-daemon" in host.installed
    assert cis_services.apply(cannot, install_packages=True, check_mode=True)[1]
    stopped = [{"id": "2.4.1.1", "services_enabled": ["cron.service"]}]
    host.units["cron.service"]["ActiveState"] = "inactive"
    assert cis_services.apply(stopped, check_mode=True)[1]
    assert not cis_services.apply(stopped, check_mode=True, audit_only=True)[1]
    assert not cis_services.apply([dict(stopped[0], waived="kept")], check_mode=True)[1]


def test_check_mode_agrees_with_the_run_for_a_unit_that_is_not_installed_or_masked(monkeypatch):
    """chrony not installed and installs disabled: the run's systemctl enable fails and changes nothing."""
    class Host(FakeHost):
        def run(self, argv, timeout=120, data=None):
            if argv[:2] in (["systemctl", "enable"], ["systemctl", "start"]):
                self.calls.append(argv)
                return 1, "", "Failed to enable unit: Unit file chronyd.service does not exist."
            return super().run(argv, timeout, data)

    for state in ({"LoadState": "not-found", "UnitFileState": "", "ActiveState": "inactive"},
                  {"LoadState": "masked", "UnitFileState": "masked", "ActiveState": "inactive"}):
        host = Host(set(), {"chronyd.service": dict(state)})
        monkeypatch.setattr(cis_services, "run", host.run)
        control = [{"id": "2.1.1", "packages_present": ["chrony"], "services_enabled": ["chronyd.service"]}]
        real = cis_services.apply(control, install_packages=False)[1]
        check = cis_services.apply(control, install_packages=False, check_mode=True)[1]
        assert check is False and real is False, (state, check, real)
        assert cis_services.apply(control, install_packages=True, check_mode=True)[1]
