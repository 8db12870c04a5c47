"""The container-start hydrator, the static helper guardrail-hydrate built
from roles/efs_volume/files/guardrail-hydrate.c, as a container starts it:
races, kills, refusals, then exec of the command. What both implementations
must do alike is in test_efs_hydrate_conformance.py."""
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from efs_hydrate_helpers import (
    LOCK_FILE,
    MARKER,
    build_helper,
    leftovers,
    make_tree,
    run_module,
    tree_listing,
)

# Prints the pid it runs as: equal to the hydrator's pid only if the hydrator exec'd it.
COMMAND = ["sh", "-c", 'echo "command pid=$$ args=$*"', "cmd", "one", "two"]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

Tool = collections.namedtuple("Tool", "argv path name")


@pytest.fixture
def shell():
    """The hydrator under test: the argv that runs it, its PATH and its name."""
    return Tool([build_helper()], SYSTEM_PATH, "helper")


Run = collections.namedtuple("Run", "rc out err pid")


def start(shell, src, dest, command=None, **settings):
    env = {"PATH": shell.path, "HOME": "/root", "GUARDRAIL_HYDRATE_SRC": str(src),
           "GUARDRAIL_HYDRATE_DEST": str(dest)}
    env.update({f"GUARDRAIL_HYDRATE_{k.upper()}": str(v) for k, v in settings.items()})
    # Its own session: a kill takes the whole container-like process group.
    return subprocess.Popen([*shell.argv, *(command or COMMAND)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run3(shell, src, dest, **settings):
    """(rc, stdout, stderr) of one run."""
    return run(shell, src, dest, **settings)[:3]


def run(shell, src, dest, **settings):
    proc = start(shell, src, dest, **settings)
    return Run(*finish(proc), proc.pid)


def test_ten_concurrent_starts_seed_once_then_exec(shell, tmp_path):
    src = make_tree(tmp_path / "src", files=400, size=8192)
    dest = tmp_path / "volume"
    dest.mkdir()
    (dest / "lost+found").mkdir()
    procs = [start(shell, src, dest) for attempt in range(10)]
    results = [Run(*finish(p), p.pid) for p in procs]

    for r in results:
        assert r.rc == 0, r.err
        assert r.out == f"command pid={r.pid} args=one two\n", "the command must replace the helper (exec)"
    seeded = [r.err for r in results if "seeded from" in r.err]
    waited = [r.err for r in results if "already hydrated" in r.err]
    assert len(seeded) == 1 and len(waited) == 9, [r.err for r in results]
    assert tree_listing(dest, ignore=(MARKER, LOCK_FILE, "lost+found")) == tree_listing(src)
    assert [n for n in os.listdir(dest) if n.startswith(MARKER)] == [MARKER]
    assert leftovers(dest) == []
    marker = json.loads((dest / MARKER).read_text())
    assert marker["digest"].startswith("sha256-listing:") and marker["files"] == 402
    # The module reads the helper's marker: the volume counts as hydrated.
    assert not run_module({"src": str(src), "dest": str(dest)})["changed"]


def test_kill_at_random_points_then_the_next_start_completes(shell, tmp_path):
    src = make_tree(tmp_path / "src", files=1500, size=16384)
    expected = tree_listing(src)
    started = time.monotonic()
    probe = run(shell, src, tmp_path / "probe")
    assert probe.rc == 0, probe.err
    full = time.monotonic() - started
    rng = random.Random(7)
    interrupted = 0
    for trial in range(6):
        dest = tmp_path / f"volume{trial}"
        proc = start(shell, src, dest)
        time.sleep(rng.uniform(0.02, full))
        os.killpg(proc.pid, signal.SIGKILL)
        finish(proc, timeout=60)
        if (dest / MARKER).exists():
            assert tree_listing(dest) == expected, "a marker must mean complete content"
        else:
            interrupted += 1
        again = run(shell, src, dest)
        assert again.rc == 0, again.err
        assert again.out.startswith(f"command pid={again.pid} ")
        assert tree_listing(dest) == expected
        assert [n for n in os.listdir(dest) if n.startswith(MARKER)] == [MARKER]
        assert leftovers(dest) == []
    assert interrupted, "no kill landed before the marker: the test did not interrupt a copy"


def test_owner_and_modes(shell, tmp_path):
    src = make_tree(tmp_path / "src", files=20)
    dest = tmp_path / "volume"
    result = run(shell, src, dest, owner="nobody", group="nogroup", dir_mode="0750", file_mode="0640")
    assert result.rc == 0, result.err
    nobody = os.stat(dest).st_uid
    assert nobody != 0 and os.stat(dest).st_mode & 0o7777 == 0o750
    for path in dest.rglob("*"):
        if path.name in (MARKER, LOCK_FILE) or path.is_symlink():
            continue
        st = os.stat(path)
        assert st.st_uid == nobody
        assert st.st_mode & 0o7777 == (0o750 if path.is_dir() else 0o640), path
    assert os.readlink(dest / "bin" / "readme") == "../README.txt"


def test_on_existing_fail_does_not_start_the_command(shell, tmp_path):
    src = make_tree(tmp_path / "src", files=5)
    dest = tmp_path / "volume"
    dest.mkdir()
    (dest / "stray.txt").write_text("x\n")
    rc, out, err = run3(shell, src, dest)
    assert rc == 70 and out == ""
    assert "stray.txt" in err and "GUARDRAIL_HYDRATE_ON_EXISTING" in err
    assert sorted(n for n in os.listdir(dest) if n != LOCK_FILE) == ["stray.txt"]


def test_on_existing_skip_and_merge(shell, tmp_path):
    src = make_tree(tmp_path / "src", files=5)
    dest = tmp_path / "volume"
    dest.mkdir()
    (dest / "README.txt").write_text("the user's\n")
    rc, out, err = run3(shell, src, dest, on_existing="skip")
    assert rc == 0 and out.startswith("command pid=") and "left as it is" in err
    assert not (dest / MARKER).exists()
    rc, out, err = run3(shell, src, dest, on_existing="merge")
    assert rc == 0 and "seeded from" in err
    assert (dest / "README.txt").read_text() == "the user's\n"
    assert tree_listing(dest, ignore=(MARKER, LOCK_FILE, "README.txt")) == {
        k: v for k, v in tree_listing(src).items() if k != "README.txt"}
    assert (dest / MARKER).is_file()


@pytest.mark.parametrize("problem", ["escaping-symlink", "absolute-symlink", "fifo"])
def test_hostile_source_is_refused_with_nothing_written(shell, tmp_path, problem):
    src = make_tree(tmp_path / "src", files=5)
    if problem == "escaping-symlink":
        (src / "d0" / "s0" / "out").symlink_to("../../../elsewhere")
    elif problem == "absolute-symlink":
        (src / "passwd").symlink_to("/etc/passwd")
    else:
        os.mkfifo(src / "pipe")
    dest = tmp_path / "volume"
    rc, out, err = run3(shell, src, dest)
    assert rc == 70 and out == "" and "refusing the source" in err
    assert not dest.exists()


@pytest.mark.parametrize("dest", ["/", "/etc", "/usr/share/app", "relative", "/mnt/../etc"])
def test_dangerous_dest_is_refused(shell, tmp_path, dest):
    src = make_tree(tmp_path / "src", files=1)
    rc, out, err = run3(shell, src, dest)
    assert rc == 70 and out == ""
    assert "system directory" in err or "absolute" in err or ".." in err


def test_without_root():
    """As an unprivileged user: read-only directory modes are refused up front,
    writable ones apply."""
    work = Path(tempfile.mkdtemp(prefix="hydrate-helper-nonroot-"))
    try:
        work.chmod(0o777)
        src = make_tree(work / "src", files=10)
        # The checkout may sit in a directory only root can enter: run a copy.
        tool = work / "guardrail-hydrate"
        shutil.copy(build_helper(), tool)
        subprocess.run(["chmod", "-R", "a+rX", str(src), str(tool)], check=True, timeout=30)
        argv = [str(tool)]
        base = ["runuser", "-u", "nobody", "--", "env", "PATH=/usr/bin:/bin",
                f"GUARDRAIL_HYDRATE_SRC={src}", f"GUARDRAIL_HYDRATE_DEST={work / 'dest'}"]
        refused = subprocess.run([*base, "GUARDRAIL_HYDRATE_DIR_MODE=0555", *argv, "true"],
                                 capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 70 and "must let the owner write" in refused.stderr
        assert not (work / "dest").exists()
        done = subprocess.run([*base, "GUARDRAIL_HYDRATE_DIR_MODE=0750", "GUARDRAIL_HYDRATE_FILE_MODE=0440",
                               *argv, "echo", "ran"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0 and done.stdout == "ran\n", done.stderr
        assert (work / "dest" / "d0").stat().st_mode & 0o7777 == 0o750
        assert (work / "dest" / "README.txt").stat().st_mode & 0o7777 == 0o440
        assert (work / "dest" / MARKER).is_file()
    finally:
        shutil.rmtree(work)


def plant_ready_staging(src, staging, marker):
    """A staging tree as a run leaves it once synced: this uid's, mode 0700,
    with the ready record of roles/efs_volume/PROTOCOL.md."""
    shutil.copytree(src, staging, symlinks=True)
    staging.chmod(0o700)
    (staging / ".guardrail-ready").write_text(
        "format=guardrail-hydrate-ready 1\noverwrite=false\nmarker=" + json.dumps(marker) + "\n")


def test_a_staging_tree_of_another_user_or_mode_is_removed_not_finished(shell, tmp_path):
    src = make_tree(tmp_path / "src", files=5)
    dest = tmp_path / "volume"
    staging = dest / ".guardrail-staging-planted"
    plant_ready_staging(src, staging, {"who": "planted"})
    (staging / "extra").write_text("not from the source")
    staging.chmod(0o755)
    rc, out, err = run3(shell, src, dest)
    assert rc == 0 and "seeded from" in err, err
    assert tree_listing(dest) == tree_listing(src)
    assert "planted" not in (dest / MARKER).read_text()


def test_a_ready_record_with_prune_entries_is_left_to_the_module(shell, tmp_path):
    src = make_tree(tmp_path / "src", files=5)
    dest = tmp_path / "volume"
    staging = dest / ".guardrail-staging-module"
    plant_ready_staging(src, staging, {"who": "module"})
    with open(staging / ".guardrail-ready", "a") as f:
        f.write("prune=old.txt\n")
    (dest / "old.txt").write_text("old")
    rc, out, err = run3(shell, src, dest)
    assert rc == 70 and "only guardrail.ecs.efs_hydrate finishes it" in err, err
    assert (dest / "old.txt").exists() and staging.is_dir() and not (dest / MARKER).exists()
    result = run_module({"src": str(src), "dest": str(dest)})
    assert result["rc"] == 0 and result["recovered"], result
    assert not (dest / "old.txt").exists() and tree_listing(dest) == tree_listing(src)


def test_a_ready_staging_tree_is_finished_by_the_next_start(shell, tmp_path):
    """Killed after the staging tree was synced and marked ready, with part of it
    already renamed into place: the next start moves the rest and writes the
    marker the interrupted run prepared."""
    src = make_tree(tmp_path / "src", files=20)
    dest = tmp_path / "volume"
    staging = dest / ".guardrail-staging-interrupted"
    prepared = {"source": str(src), "digest": "sha256-content:prepared", "files": 22}
    plant_ready_staging(src, staging, prepared)
    os.rename(staging / "d0", dest / "d0")
    rc, out, err = run3(shell, src, dest)
    assert rc == 0 and out.startswith("command pid="), err
    assert "finished a hydration that was interrupted" in err
    assert tree_listing(dest) == tree_listing(src)
    assert json.loads((dest / MARKER).read_text()) == prepared
    assert leftovers(dest) == []


def test_the_module_finishes_a_ready_staging_tree_of_the_helper(tmp_path):
    src = make_tree(tmp_path / "src", files=20)
    dest = tmp_path / "volume"
    staging = dest / ".guardrail-staging-interrupted"
    prepared = {"source": str(src), "digest": "sha256-content:prepared", "files": 22}
    plant_ready_staging(src, staging, prepared)
    result = run_module({"src": str(src), "dest": str(dest)})
    assert result["rc"] == 0 and result["recovered"] and result["seeded"], result
    assert tree_listing(dest) == tree_listing(src)
    assert json.loads((dest / MARKER).read_text())["digest"] == "sha256-content:prepared"


def test_the_helper_needs_nothing_from_the_image(tmp_path):
    """A root holding only the helper, the source and the volume (no shell, no
    libc, no /etc): it seeds, then reports the missing command with exit 127."""
    root = tmp_path / "image"
    (root / "volume").mkdir(parents=True)
    make_tree(root / "seed", files=20)
    shutil.copy(build_helper(), root / "guardrail-hydrate")
    proc = subprocess.run(
        [shutil.which("chroot"), str(root), "/guardrail-hydrate", "/no-such-command"], capture_output=True, text=True,
        timeout=120, check=False,
        env={"GUARDRAIL_HYDRATE_SRC": "/seed", "GUARDRAIL_HYDRATE_DEST": "/volume", "GUARDRAIL_HYDRATE_OWNER": "33",
             "GUARDRAIL_HYDRATE_FILE_MODE": "0640"})
    assert proc.returncode == 127 and "seeded from /seed" in proc.stderr and "/no-such-command" in proc.stderr, \
        proc.stderr
    assert tree_listing(root / "volume", ignore=(MARKER, LOCK_FILE)) == {
        k: (kind, digest, 0o640 if kind == "file" else mode)
        for k, (kind, digest, mode) in tree_listing(root / "seed").items()}
    assert os.stat(root / "volume" / "README.txt").st_uid == 33
