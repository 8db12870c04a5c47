"""Configuration lines on real files in a temporary directory."""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import lines as cis_lines
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError


def status(results):
    return {r["id"]: r["status"] for r in results}


def test_keys_lines_absent_and_idempotence(tmp_path):
    conf = tmp_path / "sshd.conf"
    conf.write_text("# comment\nMaxAuthTries 6\nPermitRootLogin yes\npermitrootlogin prohibit-password\nMatch User x\n  X11Forwarding yes\n")
    pam = tmp_path / "su"
    pam.write_text("auth sufficient pam_rootok.so\n# auth required pam_wheel.so\n")
    controls = [
        {"id": "4.2.7", "lines": [{"path": str(conf), "key": "PermitRootLogin", "value": "no", "ignore_case": True}]},
        {"id": "4.2.16", "lines": [{"path": str(conf), "key": "MaxAuthTries", "value": 4, "compare": "le"}]},
        {"id": "4.2.12", "lines": [{"path": str(conf), "key": "Banner", "value": "/etc/issue.net"}]},
        {"id": "4.3.6", "lines": [{"path": str(pam), "line": "auth required pam_wheel.so use_uid group=sugroup",
                                   "match": r"^\s*auth\s+required\s+pam_wheel\.so"}]},
        {"id": "x.1", "lines": [{"path": str(pam), "absent": "pam_rootok"}]},
    ]
    results, changed, diffs = cis_lines.apply(controls)
    assert changed and set(status(results).values()) == {"fixed"}
    text = conf.read_text()
    assert "PermitRootLogin no\n" in text and "prohibit-password" not in text
    assert "MaxAuthTries 4" in text
    assert text.index("Banner /etc/issue.net") < text.index("Match User x")
    assert pam.read_text() == "# auth required pam_wheel.so\nauth required pam_wheel.so use_uid group=sugroup\n"
    assert {d["before_header"] for d in diffs} == {str(conf), str(pam)}
    results, changed, _diffs = cis_lines.apply(controls)
    assert not changed and set(status(results).values()) == {"pass"}


def test_stricter_number_passes(tmp_path):
    conf = tmp_path / "login.defs"
    conf.write_text("PASS_MAX_DAYS 90\n")
    item = {"path": str(conf), "key": "PASS_MAX_DAYS", "value": 365, "compare": "le"}
    results, changed, _diffs = cis_lines.apply([{"id": "a", "lines": [item]}])
    assert not changed and results[0]["status"] == "pass"


def test_failed_validation_restores_the_file(tmp_path):
    conf = tmp_path / "sudoers"
    conf.write_text("Defaults env_reset\n")
    files = [{"path": str(conf), "validate": ["false", "%s"], "on_change": [["touch", str(tmp_path / "reloaded")]]}]
    controls = [{"id": "4.3.2", "lines": [{"path": str(conf), "line": "Defaults use_pty"}]}]
    results, changed, _diffs = cis_lines.apply(controls, files=files)
    assert results[0]["status"] == "failed" and "validation failed" in results[0]["evidence"]
    assert conf.read_text() == "Defaults env_reset\n"
    assert not (tmp_path / "reloaded").exists() and not changed


def test_new_file_gets_header_mode_and_reload(tmp_path):
    conf = tmp_path / "journald.conf.d" / "60-cis.conf"
    files = [{"path": str(conf), "mode": "0640", "header": ["[Journal]"],
              "on_change": [["touch", str(tmp_path / "reloaded")]]}]
    item = {"path": str(conf), "key": "Compress", "value": "yes", "separator": "="}
    results, _changed, _diffs = cis_lines.apply([{"id": "5.1.2.3", "lines": [item]}], files=files)
    assert results[0]["status"] == "fixed"
    assert conf.read_text() == "[Journal]\nCompress=yes\n"
    assert conf.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "reloaded").exists()


def test_kmod_in_a_container_is_pending_reboot_when_loaded(tmp_path):
    modules = tmp_path / "modules"
    modules.write_text("sctp 1 0 - Live 0x0\n")
    modprobe = tmp_path / "cis.conf"
    controls = [{"id": "3.1.3", "lines": [{"kmod": "sctp"}]}, {"id": "3.1.2", "lines": [{"kmod": "dccp"}]}]
    results, _changed, _diffs = cis_lines.apply(controls, modprobe_file=str(modprobe), modprobe_unload=False,
                                                proc_modules=str(modules))
    assert status(results) == {"3.1.3": "pending_reboot", "3.1.2": "fixed"}
    assert modprobe.read_text() == "install sctp /bin/false\nblacklist sctp\ninstall dccp /bin/false\nblacklist dccp\n"


def test_per_path_rules_and_commands(tmp_path):
    rules = tmp_path / "50.rules"
    controls = [{"id": "5.2.3.6", "lines": [], "per_path": {"path": str(rules), "line": "-a always,exit -F path={path} -k privileged"}},
                {"id": "5.2.3.21", "lines": [{"command": ["cat", str(rules)], "expect": "/usr/bin/su"}]}]
    results, _changed, _diffs = cis_lines.apply(controls, per_path_values=["/usr/bin/su", "/usr/bin/passwd"])
    assert status(results) == {"5.2.3.6": "fixed", "5.2.3.21": "pass"}
    assert rules.read_text().splitlines() == ["-a always,exit -F path=/usr/bin/passwd -k privileged",
                                              "-a always,exit -F path=/usr/bin/su -k privileged"]


def test_check_mode_and_bad_items(tmp_path):
    conf = tmp_path / "c"
    conf.write_text("a 1\n")
    results, changed, diffs = cis_lines.apply([{"id": "x", "lines": [{"path": str(conf), "key": "a", "value": "2"}]}],
                                              check_mode=True)
    assert changed and results[0]["status"] == "failed" and diffs and conf.read_text() == "a 1\n"
    with pytest.raises(CisError):
        cis_lines.apply([{"id": "x", "lines": [{"path": str(conf)}]}])
    with pytest.raises(CisError):
        cis_lines.apply([{"id": "x", "lines": []}])


GRUB = ('GRUB_DEFAULT=0\n'
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet apparmor=0"\n'
        'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 selinux=0 nvme_core.io_timeout=4294967295 net.ifnames=0"\n')


def test_absent_kernel_argument_removes_the_token_not_the_command_line(tmp_path):
    grub = tmp_path / "grub"
    grub.write_text(GRUB)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz console=ttyS0,115200n8 selinux=0 net.ifnames=0\n")
    controls = [
        {"id": "1.6.1.2", "lines": [{"path": str(grub), "absent": "(selinux|enforcing|apparmor)=0"}]},
        {"id": "5.2.1.2", "lines": [{"path": str(grub), "grub_arg": "audit=1"}]},
        {"id": "5.2.1.3", "lines": [{"path": str(grub), "grub_arg": "audit_backlog_limit=8192"}]},
    ]
    results, changed, _diffs = cis_lines.apply(controls, proc_cmdline=str(cmdline))
    assert changed
    assert grub.read_text() == (
        'GRUB_DEFAULT=0\n'
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
        'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 nvme_core.io_timeout=4294967295 net.ifnames=0 audit=1 '
        'audit_backlog_limit=8192"\n')
    # The running kernel still has selinux=0 and lacks the audit arguments until the next boot.
    assert status(results) == {"1.6.1.2": "pending_reboot", "5.2.1.2": "pending_reboot", "5.2.1.3": "pending_reboot"}
    results, changed, _diffs = cis_lines.apply(controls, proc_cmdline=str(cmdline))
    assert not changed
    assert status(results) == {"1.6.1.2": "pending_reboot", "5.2.1.2": "pending_reboot", "5.2.1.3": "pending_reboot"}
    assert "selinux=0" in {r["id"]: r for r in results}["1.6.1.2"]["evidence"]
    cmdline.write_text("BOOT_IMAGE=/vmlinuz console=ttyS0,115200n8 net.ifnames=0 audit=1 audit_backlog_limit=8192\n")
    results, changed, _diffs = cis_lines.apply(controls, proc_cmdline=str(cmdline))
    assert not changed and set(status(results).values()) == {"pass"}


def test_kernel_argument_with_an_unquoted_or_missing_command_line(tmp_path):
    grub = tmp_path / "grub"
    grub.write_text("GRUB_CMDLINE_LINUX=quiet\n")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("quiet audit=1\n")
    controls = [{"id": "5.2.1.2", "lines": [{"path": str(grub), "grub_arg": "audit=1"}]}]
    results, _changed, _diffs = cis_lines.apply(controls, proc_cmdline=str(cmdline))
    assert grub.read_text() == 'GRUB_CMDLINE_LINUX="quiet audit=1"\n'
    assert status(results) == {"5.2.1.2": "fixed"}


# Excerpts of `ausyscall <arch> --dump`: aarch64 uses the generic table (no open, creat, chmod, chown,
# rename, unlink: only their *at forms) and has no 32-bit table; x86_64 has both.
AARCH64 = {"b64": {"openat", "truncate", "ftruncate", "fchmod", "fchmodat", "fchown", "fchownat", "unlinkat",
                   "renameat", "renameat2", "mount", "execve", "settimeofday", "adjtimex", "clock_settime",
                   "sethostname", "setdomainname", "setxattr", "lsetxattr", "fsetxattr", "removexattr",
                   "lremovexattr", "fremovexattr", "init_module", "finit_module", "delete_module"}}
X86_64 = {"b64": AARCH64["b64"] | {"open", "creat", "chmod", "chown", "lchown", "rename", "unlink"},
          "b32": AARCH64["b64"] | {"open", "creat", "chmod", "chown", "lchown", "rename", "unlink", "stime",
                                   "chown32", "fchown32"}}
RULES = [
    "-a always,exit -F arch={a} -S creat,open,openat,truncate,ftruncate -F exit=-EACCES -F auid>=1000 -F auid!=unset -k access",
    "-a always,exit -F arch={a} -S chmod,fchmod,fchmodat -F auid>=1000 -F auid!=unset -k perm_mod",
    "-a always,exit -F arch={a} -S rename,unlink,unlinkat,renameat -F auid>=1000 -F auid!=unset -k delete",
    "-a always,exit -F arch={a} -S creat -k only_legacy",
    "-w /etc/sudoers -p wa -k scope",
]


def audit_controls(path):
    return [{"id": "5.2.3.%d" % i, "lines": [{"path": str(path), "line": rule.format(a=a)} for a in ("b64", "b32")]}
            for i, rule in enumerate(RULES)]


def syscalls_in(text, arch):
    found = set()
    for line in text.splitlines():
        if "arch=%s " % arch in line:
            found |= set(line.split(" -S ")[1].split()[0].split(","))
    return found


def test_audit_rules_follow_the_aarch64_syscall_table(tmp_path):
    rules = tmp_path / "50-cis.rules"
    # A rule an older run wrote that augenrules refuses on aarch64: it goes.
    rules.write_text("-a always,exit -F arch=b32 -S creat -k only_legacy\n")
    results, changed, _diffs = cis_lines.apply(audit_controls(rules), audit_tables=AARCH64)
    text = rules.read_text()
    assert changed and "arch=b32" not in text
    assert syscalls_in(text, "b64") <= AARCH64["b64"]
    assert "-a always,exit -F arch=b64 -S openat,truncate,ftruncate -F exit=-EACCES -F auid>=1000 -F auid!=unset -k access" in text
    assert "-a always,exit -F arch=b64 -S unlinkat,renameat -F auid>=1000" in text
    assert "only_legacy" not in text and "-w /etc/sudoers -p wa -k scope" in text
    assert status(results)["5.2.3.0"] == "fixed"
    evidence = {r["id"]: r["evidence"] for r in results}
    assert "b32" in evidence["5.2.3.0"] and "no 32-bit" in evidence["5.2.3.0"]
    results, changed, _diffs = cis_lines.apply(audit_controls(rules), audit_tables=AARCH64)
    assert not changed and set(status(results).values()) == {"pass"}


def test_audit_rules_keep_both_tables_on_x86_64(tmp_path):
    rules = tmp_path / "50-cis.rules"
    _results, _changed, _diffs = cis_lines.apply(audit_controls(rules), audit_tables=X86_64)
    text = rules.read_text()
    assert syscalls_in(text, "b64") == {"creat", "open", "openat", "truncate", "ftruncate", "chmod", "fchmod",
                                        "fchmodat", "rename", "unlink", "unlinkat", "renameat"}
    assert syscalls_in(text, "b32") == syscalls_in(text, "b64")


def test_syscall_tables_from_ausyscall_dump(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **_kwargs):
        calls.append(argv)
        return 0, "Using %s syscall table:\n0\tread\n56\topenat\n" % argv[1], ""

    monkeypatch.setattr(cis_lines, "run", fake_run)
    assert cis_lines.host_syscall_tables("aarch64") == {"b64": {"read", "openat"}}
    assert cis_lines.host_syscall_tables("x86_64") == {"b64": {"read", "openat"}, "b32": {"read", "openat"}}
    assert calls == [["ausyscall", "aarch64", "--dump"], ["ausyscall", "x86_64", "--dump"], ["ausyscall", "i386", "--dump"]]


def test_syscall_tables_without_ausyscall_still_drop_what_aarch64_lacks(monkeypatch):
    monkeypatch.setattr(cis_lines, "run", lambda argv, **_kw: (127, "", "ausyscall: command not found"))
    tables = cis_lines.host_syscall_tables("aarch64")
    assert set(tables) == {"b64"}
    line = cis_lines.adapt_audit_rule(RULES[2].format(a="b64"), tables)
    assert line == "-a always,exit -F arch=b64 -S unlinkat,renameat -F auid>=1000 -F auid!=unset -k delete"


# One test per registered file item: check and fix on an in-memory edit.
def edit_of(tmp_path, text):
    path = tmp_path / "f"
    path.write_text(text)
    return cis_lines.FileEdit(str(path), {})


def test_registry_names_every_file_item():
    assert set(cis_lines.FILE_ITEMS) == {"key", "line", "absent", "absent_arg", "grub_arg"}
    assert set(cis_lines.FILE_ITEMS) | set(cis_lines.BOOK_ITEMS) | {"kmod", "command", "sshd"} == set(cis_lines.ITEM_KINDS)


def test_key_item(tmp_path):
    check, fix = cis_lines.FILE_ITEMS["key"]
    edit = edit_of(tmp_path, "MaxAuthTries 6\nMatch all\n")
    item = {"key": "MaxAuthTries", "value": 4, "compare": "le"}
    assert check(edit, item) == (False, "MaxAuthTries 6")
    fix(edit, item)
    assert edit.lines == ["MaxAuthTries 4", "Match all"] and check(edit, item)[0]


def test_line_item(tmp_path):
    check, fix = cis_lines.FILE_ITEMS["line"]
    edit = edit_of(tmp_path, "umask 022\n")
    item = {"line": "umask 027", "match": r"^\s*umask\s"}
    assert not check(edit, item)[0]
    fix(edit, item)
    assert edit.lines == ["umask 027"] and check(edit, item)[0]


def test_absent_item(tmp_path):
    check, fix = cis_lines.FILE_ITEMS["absent"]
    edit = edit_of(tmp_path, "# nullok\nauth sufficient pam_unix.so nullok\nauth required pam_deny.so\n")
    item = {"absent": r"pam_unix\.so.*nullok"}
    assert not check(edit, item)[0]
    fix(edit, item)
    assert edit.lines == ["# nullok", "auth required pam_deny.so"] and check(edit, item)[0]


def test_grub_arg_item(tmp_path):
    check, fix = cis_lines.FILE_ITEMS["grub_arg"]
    edit = edit_of(tmp_path, 'GRUB_CMDLINE_LINUX="quiet audit=0"\n')
    item = {"grub_arg": "audit=1"}
    assert check(edit, item) == (False, "GRUB_CMDLINE_LINUX has audit=0")
    fix(edit, item)
    assert edit.lines == ['GRUB_CMDLINE_LINUX="quiet audit=1"'] and check(edit, item)[0]


def test_setting_in_the_file_but_not_in_force_is_pending_reboot(tmp_path):
    config = tmp_path / "selinux"
    config.write_text("SELINUX=permissive\nSELINUXTYPE=targeted\n")
    state = tmp_path / "state"
    state.write_text("Permissive\n")
    item = {"path": str(config), "key": "SELINUX", "value": "enforcing", "separator": "=",
            "live_command": ["cat", str(state)], "live_expect": "^Enforcing"}
    results, changed, _diffs = cis_lines.apply([{"id": "1.6.1.4", "lines": [item]}])
    assert changed and config.read_text().startswith("SELINUX=enforcing\n")
    assert status(results) == {"1.6.1.4": "pending_reboot"} and "Permissive" in results[0]["evidence"]
    results, changed, _diffs = cis_lines.apply([{"id": "1.6.1.4", "lines": [item]}])
    assert not changed and status(results) == {"1.6.1.4": "pending_reboot"}
    state.write_text("Enforcing\n")
    results, _changed, _diffs = cis_lines.apply([{"id": "1.6.1.4", "lines": [item]}])
    assert status(results) == {"1.6.1.4": "pass"}


def test_absent_module_argument_keeps_the_module_line(tmp_path):
    auth = tmp_path / "common-auth"
    auth.write_text("auth\t[success=2 default=ignore]\tpam_unix.so nullok try_first_pass\n"
                    "auth\trequisite\t\t\tpam_deny.so\n")
    profile = tmp_path / "unix"
    profile.write_text("Auth:\n\t[success=end default=ignore]\tpam_unix.so nullok try_first_pass\n"
                       "Auth-Initial:\n\t[success=end default=ignore]\tpam_unix.so nullok\n")
    controls = [{"id": "5.3.3.4.1", "lines": [
        {"path": str(auth), "match": r"pam_unix\.so", "absent_arg": "nullok"},
        {"path": str(profile), "match": r"pam_unix\.so", "absent_arg": "nullok"},
        {"path": str(tmp_path / "absent-profile"), "requires": str(tmp_path / "absent-profile"),
         "match": r"pam_unix\.so", "absent_arg": "nullok"}]}]
    results, changed, _diffs = cis_lines.apply(controls, audit_only=True)
    assert not changed and status(results) == {"5.3.3.4.1": "failed"}
    results, changed, _diffs = cis_lines.apply(controls)
    assert changed and status(results) == {"5.3.3.4.1": "fixed"}
    assert auth.read_text() == ("auth\t[success=2 default=ignore]\tpam_unix.so try_first_pass\n"
                                "auth\trequisite\t\t\tpam_deny.so\n")
    assert profile.read_text() == ("Auth:\n\t[success=end default=ignore]\tpam_unix.so try_first_pass\n"
                                   "Auth-Initial:\n\t[success=end default=ignore]\tpam_unix.so\n")
    assert not (tmp_path / "absent-profile").exists()
    results, changed, _diffs = cis_lines.apply(controls)
    assert not changed and status(results) == {"5.3.3.4.1": "pass"}
