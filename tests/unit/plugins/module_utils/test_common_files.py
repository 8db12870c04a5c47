"""write_atomic, the collection's one file writer, the user's cache, and run,
its one command runner."""
import json
import os
import stat
import sys

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.common import files, process
from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import write_atomic


def test_new_file_gets_0644_or_the_mode_asked(tmp_path):
    write_atomic(str(tmp_path / "a"), "text\n")
    write_atomic(str(tmp_path / "b"), b"\x00bytes", 0o600)
    assert (tmp_path / "a").read_text() == "text\n" and (tmp_path / "b").read_bytes() == b"\x00bytes"
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


def test_replacing_keeps_the_old_mode_unless_told(tmp_path):
    path = tmp_path / "conf"
    path.write_text("old")
    path.chmod(0o640)
    write_atomic(str(path), "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640
    write_atomic(str(path), "newer", 0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "conf"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(str(path), 42)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["conf"]


def test_a_symlink_is_replaced_not_followed(tmp_path):
    target = tmp_path / "target"
    target.write_text("theirs")
    link = tmp_path / "link"
    link.symlink_to(target)
    write_atomic(str(link), "ours", 0o644)
    assert target.read_text() == "theirs" and not link.is_symlink() and link.read_text() == "ours"


def test_run_reports_missing_commands_timeouts_and_output():
    assert process.run(["guardrail-no-such-command"])[0] == 127
    rc, _out, err = process.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
    assert rc == 124 and "timed out" in err
    rc, out, _err = process.run([sys.executable, "-c", "import os, sys; sys.stdout.write(sys.stdin.read() + os.environ['LC_ALL'])"],
                                data="in:")
    assert (rc, out) == (0, "in:C")


# -- the user's cache -----------------------------------------------------------

@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "guardrail"


def test_a_cache_written_is_read_back_private_to_the_user(cache_home):
    files.write_cache("x.json", {"a": [1, "b"]})
    assert files.read_cache("x.json") == {"a": [1, "b"]}
    assert oct((cache_home / "x.json").stat().st_mode & 0o777) == "0o600"
    assert oct(cache_home.stat().st_mode & 0o777) == "0o700"


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    """A relative one would put the cache in the current directory: a checkout
    that git_check then finds untracked files in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    assert files.user_cache("x.json") == str(tmp_path / "home" / ".cache" / "guardrail" / "x.json")
    files.write_cache("x.json", {"a": 1})
    assert not (tmp_path / "cache").exists()
    assert files.read_cache("x.json") == {"a": 1}


@pytest.mark.parametrize("damage", ["not json", "[1, 2]", "[" * 100000 + "]" * 100000, "big", "\xff\xfe"])
def test_a_damaged_cache_reads_as_empty(cache_home, damage):
    cache_home.mkdir(parents=True)
    path = cache_home / "x.json"
    if damage == "big":
        path.write_text(json.dumps({"a": "x" * (files.CACHE_MAX_BYTES + 1)}))
    else:
        path.write_bytes(damage.encode("latin-1"))
    path.chmod(0o600)
    assert files.read_cache("x.json") == {}


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "symlink", "fifo", "directory", "other owner"])
def test_a_cache_somebody_else_could_have_written_is_not_read(cache_home, tmp_path, how):
    files.write_cache("x.json", {"a": 1})
    path = cache_home / "x.json"
    if how.endswith("writable"):
        path.chmod(0o620 if how.startswith("group") else 0o602)
    elif how == "symlink":
        target = tmp_path / "elsewhere.json"
        target.write_text(json.dumps({"a": 1}))
        target.chmod(0o600)
        path.unlink()
        path.symlink_to(target)
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path, 0o600)  # a blocking open would hang the command
    elif how == "directory":
        path.unlink()
        path.mkdir()
    else:
        if os.geteuid() != 0:
            pytest.skip("SKIPPED LOUDLY: giving the file to another user needs root")
        os.chown(path, 65534, 65534)
    assert files.read_cache("x.json") == {}
