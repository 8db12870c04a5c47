"""Kernel parameters against a fake /proc/sys and sysctl.d tree."""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import sysctl as cis_sysctl
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError


@pytest.fixture
def kernel(tmp_path):
    proc = tmp_path / "proc"
    values = {"net/ipv4/tcp_syncookies": "0", "net/ipv4/ip_forward": "1", "kernel/randomize_va_space": "0",
              "net/ipv4/conf/all/rp_filter": "0"}
    for key, value in values.items():
        (proc / key).parent.mkdir(parents=True, exist_ok=True)
        (proc / key).write_text(value + "\n")
    etc = tmp_path / "sysctl.d"
    etc.mkdir()
    return {"proc_root": str(proc), "dirs": (str(etc),), "legacy": str(tmp_path / "sysctl.conf"),
            "persist": str(etc / "90-cis-hardening.conf"), "etc": etc, "proc": proc}


def run(kernel, controls, **kw):
    return cis_sysctl.apply(controls, kernel["persist"], proc_root=kernel["proc_root"], dirs=kernel["dirs"],
                            legacy=kernel["legacy"], **kw)


def status(results):
    return {r["id"]: r["status"] for r in results}


def test_fix_then_pass(kernel):
    controls = [{"id": "3.3.8", "settings": {"net.ipv4.tcp_syncookies": 1}}]
    results, changed, diff = run(kernel, controls)
    assert changed and status(results) == {"3.3.8": "fixed"}
    assert (kernel["proc"] / "net/ipv4/tcp_syncookies").read_text().strip() == "1"
    assert "net.ipv4.tcp_syncookies = 1" in (kernel["etc"] / "90-cis-hardening.conf").read_text()
    assert diff["after"].endswith("net.ipv4.tcp_syncookies = 1\n")
    results, changed, _diff = run(kernel, controls)
    assert not changed and status(results) == {"3.3.8": "pass"}


def test_in_container_kernel_keys_are_persisted_not_applied(kernel):
    controls = [{"id": "1.5.1", "settings": {"kernel.randomize_va_space": 2}},
                {"id": "3.3.7", "settings": {"net.ipv4.conf.all.rp_filter": 1}}]
    results, _changed, _diff = run(kernel, controls, live_all=False)
    assert status(results) == {"1.5.1": "pending_reboot", "3.3.7": "fixed"}
    assert (kernel["proc"] / "kernel/randomize_va_space").read_text().strip() == "0"
    assert "kernel.randomize_va_space = 2" in (kernel["etc"] / "90-cis-hardening.conf").read_text()
    assert "belong to the machine" in results[0]["evidence"]


def test_waived_control_is_evaluated_not_changed(kernel):
    controls = [{"id": "3.2.1", "settings": {"net.ipv4.ip_forward": 0}, "waived": "Docker needs forwarding"}]
    results, changed, _diff = run(kernel, controls)
    assert not changed
    assert results[0]["status"] == "waived" and "live 1" in results[0]["evidence"]
    assert (kernel["proc"] / "net/ipv4/ip_forward").read_text().strip() == "1"


def test_audit_only_and_check_mode_change_nothing(kernel):
    controls = [{"id": "3.3.8", "settings": {"net.ipv4.tcp_syncookies": 1}}]
    for kw in ({"audit_only": True}, {"check_mode": True}):
        results, changed, _diff = run(kernel, controls, **kw)
        assert not changed and status(results) == {"3.3.8": "failed"}
    assert not (kernel["etc"] / "90-cis-hardening.conf").exists()


def test_later_file_overriding_is_failed_and_named(kernel):
    (kernel["etc"] / "99-site.conf").write_text("net.ipv4.tcp_syncookies=0\n")
    results, _changed, _diff = run(kernel, [{"id": "3.3.8", "settings": {"net.ipv4.tcp_syncookies": 1}}])
    assert results[0]["status"] == "failed" and "99-site.conf" in results[0]["evidence"]


def test_missing_key_not_applicable_and_bad_table_refused(kernel):
    results, _changed, _diff = run(kernel, [{"id": "1.5.2", "settings": {"kernel.yama.ptrace_scope": 1}}])
    assert results[0]["status"] == "not_applicable"
    with pytest.raises(CisError, match="settings"):
        run(kernel, [{"id": "x", "settings": {}}])


def test_upsert_keeps_other_lines():
    text = "# mine\nnet.a = 1\nnet.b=2\n"
    assert cis_sysctl.upsert(text, {"net.b": "3", "net.c": "4"}) == "# mine\nnet.a = 1\nnet.b = 3\nnet.c = 4\n"


def test_key_status_function():
    ks = cis_sysctl.key_status
    assert ks("1", "1", "1", True, True) == "pass"
    assert ks("1", "1", "1", False, True) == "fixed"
    # Persisted but not live (a container): true only after the next boot.
    assert ks("1", "0", "1", False, True) == "pending_reboot"
    assert ks("1", "1", None, False, True) == "failed"
    assert ks("1", "0", "1", False, False) == "failed"


def test_write_live_function(tmp_path):
    proc = tmp_path / "net/ipv4"
    proc.mkdir(parents=True)
    (proc / "tcp_syncookies").write_text("0\n")
    assert cis_sysctl.write_live("net.ipv4.tcp_syncookies", "1", False, str(tmp_path)) == ("1", True, "")
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel/randomize_va_space").write_text("0\n")
    live, wrote, note = cis_sysctl.write_live("kernel.randomize_va_space", "2", False, str(tmp_path))
    assert (live, wrote) == ("0", False) and "belong to the machine" in note
