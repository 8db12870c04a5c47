"""PAM modules in the stack: real pam-auth-update on a stack in a temporary root, real files for Amazon Linux 2."""
import os
import shutil

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import pam as cis_pam
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError

PWQUALITY_PROFILE = ("Name: Pwquality password strength checking\nDefault: yes\nPriority: 1024\n"
                     "Password-Type: Primary\nPassword:\n\trequisite\t\t\tpam_pwquality.so retry=3\n")
DEBIAN_ROWS = [{"id": "5.3.2.2", "modules": ["faillock"]}, {"id": "5.3.2.3", "modules": ["pwquality"]},
               {"id": "5.3.2.4", "modules": ["pwhistory"]}]


def status(results):
    return {r["id"]: r["status"] for r in results}


@pytest.fixture
def debian_root(tmp_path):
    assert shutil.which("pam-auth-update"), "pam-auth-update is needed for this test (package libpam-runtime)"
    assert os.geteuid() == 0, "pam-auth-update writes its state as root"
    configs = tmp_path / "usr/share/pam-configs"
    configs.mkdir(parents=True)
    (tmp_path / "etc/pam.d").mkdir(parents=True)
    (tmp_path / "var/lib/pam").mkdir(parents=True)
    shutil.copy("/usr/share/pam-configs/unix", configs / "unix")
    rc = os.spawnvpe(os.P_WAIT, "pam-auth-update", ["pam-auth-update", "--root", str(tmp_path), "--force", "--enable", "unix"],
                     dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert rc == 0
    return tmp_path


def test_config_files_alone_are_not_the_stack(debian_root):
    # faillock.conf and pwquality.conf say nothing about whether PAM calls the modules.
    (debian_root / "etc/security").mkdir()
    (debian_root / "etc/security/faillock.conf").write_text("deny = 5\n")
    results, changed = cis_pam.apply(DEBIAN_ROWS, "pam_auth_update", root=str(debian_root), audit_only=True)
    assert not changed and set(status(results).values()) == {"failed"}
    assert "common-auth: auth pam_faillock.so preauth" in results[0]["evidence"]


def test_pam_auth_update_profiles_reach_the_stack(debian_root):
    (debian_root / "usr/share/pam-configs/pwquality").write_text(PWQUALITY_PROFILE)
    results, changed = cis_pam.apply(DEBIAN_ROWS, "pam_auth_update", root=str(debian_root))
    assert changed and set(status(results).values()) == {"fixed"}, results
    auth = [line.split() for line in (debian_root / "etc/pam.d/common-auth").read_text().splitlines()
            if line and not line.startswith("#")]
    modules = [(words[-1] if words[-1].endswith(".so") else [w for w in words if w.endswith(".so")][0]) for words in auth]
    # preauth before pam_unix, authfail right after it.
    order = [" ".join(a) for a in auth]
    assert order.index(next(o for o in order if "preauth" in o)) < order.index(next(o for o in order if "pam_unix" in o))
    assert order.index(next(o for o in order if "authfail" in o)) == order.index(next(o for o in order if "pam_unix" in o)) + 1
    assert "pam_deny.so" in modules
    assert "pam_faillock.so" in (debian_root / "etc/pam.d/common-account").read_text()
    password = (debian_root / "etc/pam.d/common-password").read_text()
    # remember comes from pwhistory.conf (the lines rows); on the line it would override that file.
    assert "pam_pwquality.so" in password and "pam_pwhistory.so enforce_for_root" in password and "remember=" not in password
    results, changed = cis_pam.apply(DEBIAN_ROWS, "pam_auth_update", root=str(debian_root))
    assert not changed and set(status(results).values()) == {"pass"}


def test_missing_pwquality_package_is_failed_with_the_reason(debian_root):
    results, _changed = cis_pam.apply(DEBIAN_ROWS[1:2], "pam_auth_update", root=str(debian_root))
    assert status(results) == {"5.3.2.3": "failed"}
    assert "libpam-pwquality is not installed" in results[0]["evidence"]


AL2_SYSTEM_AUTH = """auth        required      pam_env.so
auth        sufficient    pam_unix.so try_first_pass nullok
auth        required      pam_deny.so
account     required      pam_unix.so
password    requisite     pam_pwquality.so try_first_pass local_users_only retry=3 authtok_type=
password    sufficient    pam_unix.so try_first_pass use_authtok nullok sha512 shadow
password    required      pam_deny.so
session     required      pam_unix.so
"""


def test_amazon_linux_2_files_around_pam_unix(tmp_path):
    pamd = tmp_path / "etc/pam.d"
    pamd.mkdir(parents=True)
    (pamd / "system-auth-ac").write_text(AL2_SYSTEM_AUTH)
    os.symlink("system-auth-ac", pamd / "system-auth")
    (pamd / "password-auth").write_text(AL2_SYSTEM_AUTH)
    rows = [{"id": "5.3.2", "modules": ["faillock", "pwquality", "pwhistory"]}]
    results, changed = cis_pam.apply(rows, "files", root=str(tmp_path))
    assert changed and status(results) == {"5.3.2": "fixed"}
    assert (pamd / "system-auth").is_symlink()
    lines = (pamd / "system-auth-ac").read_text().splitlines()
    unix_auth = lines.index("auth        sufficient    pam_unix.so try_first_pass nullok")
    assert lines[unix_auth - 1] == "auth        required      pam_faillock.so preauth silent"
    assert lines[unix_auth + 1] == "auth        [default=die] pam_faillock.so authfail"
    assert lines[lines.index("account     required      pam_unix.so") - 1] == "account     required      pam_faillock.so"
    assert sum("pam_pwquality" in line for line in lines) == 1
    assert (pamd / "password-auth").read_text() == (pamd / "system-auth-ac").read_text()
    results, changed = cis_pam.apply(rows, "files", root=str(tmp_path))
    assert not changed and status(results) == {"5.3.2": "pass"}


def test_bad_rows_are_refused():
    with pytest.raises(CisError, match="5.3.2.9"):
        cis_pam.apply([{"id": "5.3.2.9", "modules": ["pam_tally2"]}], "files")
    with pytest.raises(CisError, match="method"):
        cis_pam.apply([{"id": "5.3.2.2", "modules": ["faillock"]}], "yast")


def test_pam_unix_row_reads_the_stack(debian_root, tmp_path_factory):
    row = [{"id": "5.3.2.1", "modules": ["unix"]}]
    results, changed = cis_pam.apply(row, "pam_auth_update", root=str(debian_root), audit_only=True)
    assert not changed and status(results) == {"5.3.2.1": "pass"}
    bare = tmp_path_factory.mktemp("bare")
    (bare / "etc/pam.d").mkdir(parents=True)
    (bare / "etc/pam.d/common-auth").write_text("auth required pam_permit.so\n")
    results, changed = cis_pam.apply(row, "pam_auth_update", root=str(bare), audit_only=True)
    assert not changed and status(results) == {"5.3.2.1": "failed"}
    assert "common-auth: auth pam_unix.so" in results[0]["evidence"]
