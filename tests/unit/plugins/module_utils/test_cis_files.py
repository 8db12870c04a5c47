"""File modes, contents and absence on real files in a temporary directory."""
import os

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import files as cis_files
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError

ME = __import__("pwd").getpwuid(os.getuid()).pw_name
MY_GROUP = __import__("grp").getgrgid(os.getgid()).gr_name


def status(results):
    return {r["id"]: r["status"] for r in results}


def test_mode_is_a_ceiling(tmp_path):
    loose, strict = tmp_path / "loose", tmp_path / "strict"
    loose.write_text("")
    strict.write_text("")
    os.chmod(loose, 0o666)
    os.chmod(strict, 0o600)
    controls = [{"id": "a", "files": [{"path": str(loose), "mode": "0644", "owner": ME, "group": MY_GROUP}]},
                {"id": "b", "files": [{"path": str(strict), "mode": "0644"}]}]
    results, changed = cis_files.apply(controls)
    assert changed and status(results) == {"a": "fixed", "b": "pass"}
    assert loose.stat().st_mode & 0o777 == 0o644 and strict.stat().st_mode & 0o777 == 0o600
    results, changed = cis_files.apply(controls)
    assert not changed and status(results) == {"a": "pass", "b": "pass"}


def test_content_absent_and_missing(tmp_path):
    deny, allow = tmp_path / "cron.deny", tmp_path / "cron.allow"
    deny.write_text("bob\n")
    controls = [{"id": "4.1.8", "files": [{"path": str(deny), "state": "absent"},
                                          {"path": str(allow), "content": "", "mode": "0640"}]},
                {"id": "1.4.1", "files": [{"path": str(tmp_path / "grub.cfg"), "mode": "0400", "missing": "not_applicable"}]}]
    results, _changed = cis_files.apply(controls, check_mode=True)
    assert status(results) == {"4.1.8": "failed", "1.4.1": "not_applicable"} and deny.exists()
    results, changed = cis_files.apply(controls)
    assert changed and status(results)["4.1.8"] == "fixed"
    assert not deny.exists() and allow.read_text() == "" and allow.stat().st_mode & 0o777 == 0o640


def test_globs_and_recursion(tmp_path):
    logs = tmp_path / "log"
    (logs / "sub").mkdir(parents=True)
    for name in ("a.log", "sub/b.log", "wtmp"):
        (logs / name).write_text("")
        os.chmod(logs / name, 0o664)
    controls = [{"id": "5.1.3", "files": [{"path": str(logs), "recurse": True, "mode": "0640",
                                          "exclude": [str(logs / "wtmp*")]}]}]
    results, _changed = cis_files.apply(controls)
    assert results[0]["status"] == "fixed"
    assert (logs / "sub/b.log").stat().st_mode & 0o777 == 0o640
    assert (logs / "wtmp").stat().st_mode & 0o777 == 0o664


def test_unknown_owner_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(CisError, match="does not exist"):
        cis_files.apply([{"id": "x", "files": [{"path": str(tmp_path / "f"), "owner": "no-such-user-here"}]}])
