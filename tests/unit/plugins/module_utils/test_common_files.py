"""write_atomic, the collection's one file writer, and run, its one command runner."""
import os
import stat
import sys

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.common import process
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
