"""sudoers Defaults flags as sudo reads them, and numbers as the programs read them."""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.cis import effective as eff
from ansible_collections.guardrail.ecs.plugins.module_utils.cis import lines as cis_lines
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import CatalogueError, extend
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError

UNLOCK = {"effective": "unlock_time", "value": 900, "compare": "ge", "also": [0]}


@pytest.mark.parametrize("also", [5, "10", [None], ["never"]])
def test_also_that_is_not_a_list_of_numbers_is_an_error(also):
    with pytest.raises(CisError, match="also must be a list of numbers"):
        eff.item_satisfies("1", dict(UNLOCK, also=also))


@pytest.mark.parametrize("value,ok", [("0", True), ("00", True), ("-0", True), ("0 ", True), ("1", False),
                                      ("899", False), ("900", True), ("9e2", False), ("1200s", True), (None, False)])
def test_numbers_are_read_from_their_leading_digits(value, ok):
    """pam_faillock reads an unsigned integer: 9e2 is 9 seconds."""
    assert eff.item_satisfies(value, UNLOCK) is ok
    assert eff.item_satisfies(value, dict(UNLOCK, also=["0"])) is ok


def _sudo(tmp_path, files, audit_only=True, **extra):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    item = dict({"sudo_default": "use_pty", "flag": True, "sudoers": str(tmp_path / "sudoers"),
                 "path": str(tmp_path / "sudoers.d/cis-hardening"), "validate": ["true"]}, **extra)
    results, _changed, _diffs = cis_lines.apply([{"id": "5.2.2", "lines": [item]}], audit_only=audit_only,
                                                modprobe_file=str(tmp_path / "m"), proc_modules=str(tmp_path / "p"))
    return results[0]


@pytest.mark.parametrize("local", [
    "Defaults:deploy !use_pty # CI runner\n",
    "Defaults: deploy !use_pty\n",
    "Defaults:alice, deploy !use_pty\n",
    "Defaults:\"domain user\" !use_pty\n",
    "# old setting, see ticket \\\nDefaults !use_pty\n",
    "Defaults>root !use_pty\n", "Defaults@web1 !use_pty\n", "Defaults!/usr/bin/su !use_pty\n",
    "Defaults:#1000 !use_pty\n", "Defaults:%wheel,deploy !use_pty\n",
    "Defaults env_reset, \\\n    !use_pty\n", "Defaults ! use_pty\n", "Defaults use_pty=true\n",
    "Defaults env_keep += \"A, B\", !use_pty\n",
])
def test_a_negation_sudo_reads_fails_and_is_taken_out(tmp_path, local):
    files = {"sudoers": "Defaults\tuse_pty\n@includedir %s/sudoers.d\n" % tmp_path, "sudoers.d/zz-local": local}
    result = _sudo(tmp_path, files)
    assert result["status"] == "failed", result
    assert _sudo(tmp_path, {}, audit_only=False)["status"] == "fixed"
    left = (tmp_path / "sudoers.d/zz-local").read_text()
    assert not any("use_pty" in line and not line.lstrip().startswith("#") for line in left.splitlines()), left
    assert _sudo(tmp_path, {})["status"] == "pass"


def test_a_trailing_comment_keeps_use_pty_on(tmp_path):
    files = {"sudoers": "Defaults use_pty  # CIS 5.2.2\n@includedir %s/sudoers.d\n" % tmp_path}
    assert _sudo(tmp_path, files, audit_only=False)["status"] == "pass"
    assert not (tmp_path / "sudoers.d/cis-hardening").exists()


def test_a_line_negating_twice_is_edited_once(tmp_path):
    files = {"sudoers": "Defaults use_pty\n@includedir %s/sudoers.d\n" % tmp_path,
             "sudoers.d/zz-local": "Defaults !use_pty, !use_pty # old\ndeploy ALL=(ALL) NOPASSWD: ALL\n"}
    assert _sudo(tmp_path, files, audit_only=False)["status"] == "fixed"
    assert (tmp_path / "sudoers.d/zz-local").read_text() == "deploy ALL=(ALL) NOPASSWD: ALL\n"


@pytest.mark.parametrize("sudoers,status", [
    ("#Defaults !use_pty\nDefaults use_pty\n", "pass"),
    ("@include sub\n", "pass"),
    ("Defaults:root use_pty\n", "failed"),
    ("Defaults use_pty\nDefaults !use_pty\n", "failed"),
])
def test_the_global_value_is_the_last_one_read(tmp_path, sudoers, status):
    assert _sudo(tmp_path, {"sudoers": sudoers, "sub": "Defaults use_pty\n"})["status"] == status


def test_a_sudo_item_needs_value_or_flag(tmp_path):
    with pytest.raises(CisError, match="needs either value or flag"):
        _sudo(tmp_path, {"sudoers": "Defaults !use_pty\n"}, flag=False)


def test_the_schema_names_a_bad_also_and_a_sudo_item_without_value_or_flag():
    base = [{"id": "5.2.2", "title": "t", "level": 1, "kind": "lines",
             "settings": {"lines": [{"sudo_default": "use_pty", "flag": True, "path": "/x"}]}}]
    for line, message in (({"effective": "unlock_time", "value": 900, "compare": "ge", "also": 5, "path": "/x"},
                           r"5\.2\.2.*settings\.lines\[0\] also must be a list of numbers"),
                          ({"sudo_default": "use_pty", "path": "/x"}, r"settings\.lines\[0\] sudo_default use_pty needs")):
        with pytest.raises(CatalogueError, match=message):
            extend(base, [], {"5.2.2": {"settings": {"lines": [line]}}}, "debian12")
