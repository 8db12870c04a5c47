"""The conformance suite of the hydration protocol (roles/efs_volume/PROTOCOL.md):
every case runs against both implementations, the module
guardrail.ecs.efs_hydrate and the static helper guardrail-hydrate, on a real
filesystem (a tmpfs and an ext4 image on a loop device), and both must give
the outcome the spec gives.

The hydrator runs as root. The attacker is uid nobody with write access to the
volume, planting before a run or racing it from its own process; only what
nobody cannot do (mknod) is planted by root, standing for a device node on an
image or a volume mounted with `dev`. What must hold every time: nothing
outside dest changes (content, mode, owner, existence of a sentinel tree), no
output carries the secret or a name from outside dest, and the attacker's
records are not trusted."""
import collections
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT
from efs_hydrate_helpers import (
    LOCK_FILE,
    MARKER,
    build_helper,
    leftovers,
    make_tree,
    module_result,
    remove_tree,
    start_module,
    tree_listing,
    walk,
)

STAGING = ".guardrail-staging-"
READY = ".guardrail-ready"
IMPLEMENTATIONS = ("module", "helper")
FILESYSTEMS = ("tmpfs", "ext4")
# Exit code of every refusal and failure of the helper; the module fails
# (failed: true) where the helper exits with it.
REFUSED = 70
# Set to a fresh value for each test that uses the lab: every process the
# test starts inherits it (through runuser, whatever its process group or
# parent), which is how the lab finds what a test left running.
LAB_RUN = "GUARDRAIL_TEST_LAB_RUN"

Outcome = collections.namedtuple("Outcome", "rc out result")


# ------------------------------------------------------------- filesystems


def mount(kind, where, size_mb, inodes=None):
    """Mounts a fresh filesystem of `kind` on `where`; returns how to unmount
    it. Skips, saying why, where this machine cannot mount one."""
    where.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        options = f"size={size_mb}m,mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
        argv = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)]
        image = None
    else:
        image = where.parent / (where.name + ".img")
        with open(image, "wb") as f:
            f.truncate(size_mb << 20)
        mkfs = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", *(["-N", str(inodes)] if inodes else []),
                               str(image)], capture_output=True, text=True, timeout=120, check=False)
        if mkfs.returncode != 0:
            image.unlink()
            pytest.skip(f"SKIPPED LOUDLY: mkfs.ext4 cannot make an image here: {mkfs.stderr.strip()}")
        argv = ["mount", "-o", "loop", str(image), str(where)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        if image is not None:
            image.unlink()
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a {kind} here (needs root and, for ext4, a loop "
                    f"device): {proc.stderr.strip()}")
    where.chmod(0o755)

    def unmount():
        subprocess.run(["umount", "-l", str(where)], check=True, timeout=60)
        if image is not None:
            image.unlink()
    return unmount


@pytest.fixture(scope="session")
def volumes():
    """One tmpfs and one ext4 image for the session, room for 200,000 entries."""
    base = Path(tempfile.mkdtemp(prefix="hydrate-conformance-"))
    base.chmod(0o755)
    mounted, unmounts = {}, []
    for kind in FILESYSTEMS:
        try:
            unmounts.append(mount(kind, base / kind, 3072, inodes=1_200_000))
            mounted[kind] = base / kind
        except pytest.skip.Exception as exc:
            mounted[kind] = exc
    yield mounted
    for unmount in unmounts:
        unmount()
    remove_tree(base)


@pytest.fixture(params=FILESYSTEMS)
def fs(request, volumes):
    where = volumes[request.param]
    if isinstance(where, BaseException):
        pytest.skip(str(where))
    return request.param, where


# ------------------------------------------------------------ implementations


def implementation(name):
    """run(src, dest, **options) -> Outcome(rc, all output, module result)
    of the hydrator `name` as root; start()/finish() for runs that race;
    start(..., stop_at=step) for a run that kills itself at a step of the
    protocol (the test build of the helper, the module with a wrapped step)."""
    if name == "module":
        def start(src, dest, diff=False, stop_at=None, **options):
            args = {"src": str(src), "dest": str(dest), **options}
            if diff:
                args["_ansible_diff"] = True
            return start_module(args, stop_at=stop_at)

        def finish(proc, timeout=600):
            result = module_result(proc, timeout=timeout)
            return Outcome(REFUSED if result.get("failed") else 0, json.dumps(result), result)
    else:
        def start(src, dest, diff=False, stop_at=None, **options):
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GUARDRAIL_HYDRATE_SRC": str(src),
                   "GUARDRAIL_HYDRATE_DEST": str(dest), LAB_RUN: os.environ.get(LAB_RUN, "")}
            if stop_at:
                env["GUARDRAIL_HYDRATE_TEST_STOP"] = stop_at
            for key, value in options.items():
                value = ("true" if value else "false") if isinstance(value, bool) else str(value)
                env[f"GUARDRAIL_HYDRATE_{key.upper()}"] = value
            return subprocess.Popen([build_helper(test_steps=bool(stop_at)), "echo", "command-ran"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")

        def finish(proc, timeout=600):
            out, err = proc.communicate(timeout=timeout)
            return Outcome(proc.returncode, out + err, None)

    def run(src, dest, timeout=600, **options):
        return finish(start(src, dest, **options), timeout=timeout)
    run.name, run.start, run.finish = name, start, finish
    return run


@pytest.fixture(params=IMPLEMENTATIONS)
def tool(request):
    return implementation(request.param)


def ok(outcome):
    """The run succeeded, and with the helper the command ran after it."""
    if outcome.rc != 0:
        return False
    return outcome.result is not None or "command-ran" in outcome.out


def refused(outcome, *words):
    """Refused, as the spec says each implementation refuses, naming `words`."""
    assert outcome.rc == REFUSED, outcome.out
    assert "command-ran" not in outcome.out, outcome.out
    for word in words:
        assert word in outcome.out, (word, outcome.out)


# -------------------------------------------------------------------- the lab


NOBODY = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True,
                            timeout=10).stdout)


class Lab:
    """A work tree on the filesystem under test: src (trusted), vol (the
    shared volume, writable by nobody), outside (the host: a sentinel tree
    with a root-only secret and a file of nobody's), scratch (nobody's)."""

    def __init__(self, root):
        self.root = root
        self.attackers = []
        root.mkdir()
        root.chmod(0o755)
        self.src = readable_by_all(make_tree(root / "src", files=12))
        self.vol = writable_by_all(root / "vol")
        self.dest = self.vol / "app"
        self.scratch = writable_by_all(root / "scratch")
        self.outside = root / "outside"
        self.outside.mkdir()
        self.secret_text = "GUARDRAIL-SECRET-" + uuid.uuid4().hex
        self.secret = self.outside / "secret"
        self.secret.write_text(self.secret_text + "\n")
        self.secret.chmod(0o600)
        (self.outside / "victim").write_text("keep me\n")
        (self.outside / "victim").chmod(0o640)
        self.outside_name = "outside-name-" + uuid.uuid4().hex[:8]
        victim_dir = self.outside / "victim-dir"
        victim_dir.mkdir(mode=0o750)
        (victim_dir / self.outside_name).write_text("keep this too\n")
        # A file of nobody's outside dest (in its home, say): nobody may hard
        # link it into the volume (fs.protected_hardlinks lets an owner).
        self.nobodys = self.outside / "nobodys-file"
        self.nobodys.write_text("nobody's own\n")
        os.chown(self.nobodys, NOBODY, -1)
        self.nobodys.chmod(0o600)
        self.before = self.snapshot()

    def snapshot(self):
        """Everything about the sentinel tree, and the lab root's listing."""
        state = {}
        for rel, st in [(".", os.lstat(self.outside)), *walk(self.outside)]:
            path = self.outside / rel
            digest = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            # Not the link count: a name in dest linking an outside inode is dest's to replace.
            state[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, digest)
        state["<root>"] = sorted(os.listdir(self.root))
        return state

    def as_nobody(self, code, *args):
        """Runs Python code as nobody: the attacker plants through the
        kernel's own permission checks, not as root."""
        subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", code, *map(str, args)],
                       check=True, timeout=120, cwd="/")

    def attacker(self, code, *args):
        """The attacker racing the hydrator, in a process group of its own
        (runuser and nobody's python), all of it ended with the lab."""
        proc = subprocess.Popen(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", code,
                                 *map(str, args)], cwd="/", start_new_session=True)
        self.attackers.append(proc)
        return proc

    def end_attackers(self):
        """Kills what is left of every attacker: killing runuser alone would
        leave nobody's python running (a probe blocked on a FIFO forever)."""
        for proc in self.attackers:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)

    def assert_host_intact(self, output):
        assert self.snapshot() == self.before, "something outside dest changed"
        assert self.secret_text not in output, "the secret leaked into the output"
        assert self.outside_name not in output, "a name from outside dest is in the output"


def running_with(tag):
    """(pid, state, command line) of every process left whose environment
    has LAB_RUN=`tag`, but for zombies: PID 1 here never reaps, so a process
    that ended can stay a zombie (state Z), with nothing left of it to end."""
    needle = f"{LAB_RUN}={tag}".encode()
    found = []
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0].decode()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # ended meanwhile
        if state != "Z" and needle in environ:
            found.append((pid, state, cmdline))
    return found


def end_leftovers(tag, grace=10.0):
    """What the test started and left running, ended: [(pid, state, command
    line)] of what was still there once the lab had ended its attackers
    (those take a moment to go after SIGKILL: waited for up to `grace`)."""
    deadline = time.monotonic() + grace
    left = running_with(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = running_with(tag)
    for pid, _state, _cmdline in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture
def lab(fs, monkeypatch):
    """The lab of one test; after it, no process the test started is left."""
    root = fs[1] / uuid.uuid4().hex[:12]
    tag = uuid.uuid4().hex
    monkeypatch.setenv(LAB_RUN, tag)
    made = None
    try:
        made = Lab(root)
        yield made
    finally:
        if made is not None:
            made.end_attackers()
        left = end_leftovers(tag)
        remove_tree(root)
    assert not left, f"the test left processes running: {left}"


def seeded(lab, src=None, dest=None):
    dest = dest or lab.dest
    ours = (MARKER, LOCK_FILE)
    listing = {k: v for k, v in tree_listing(dest, ignore=ours).items() if not k.startswith(STAGING)}
    return listing == tree_listing(src or lab.src) and (dest / MARKER).is_file()


def writable_by_all(path):
    """A directory of the volume that any task can write."""
    path.mkdir()
    path.chmod(0o777)
    return path


def readable_by_all(path):
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True, timeout=30)
    return path


def dest_for_nobody(lab):
    writable_by_all(lab.dest)


def hydrated_for_nobody(lab, tool, **options):
    """dest seeded by the implementation under test, its directories then
    opened to nobody (a volume where another task writes)."""
    dest_for_nobody(lab)
    outcome = tool(lab.src, lab.dest, **options)
    assert ok(outcome), outcome.out
    for rel, st in [(".", None), *walk(lab.dest)]:
        if st is None or stat.S_ISDIR(st.st_mode):
            (lab.dest / rel).chmod(0o777)
    return outcome


# ------------------------------------------------------ last time's attacks


def test_a_normal_hydration_seeds_once(lab, tool):
    dest_for_nobody(lab)
    first = tool(lab.src, lab.dest)
    assert ok(first) and seeded(lab), first.out
    marker = (lab.dest / MARKER).read_bytes()
    again = tool(lab.src, lab.dest)
    assert ok(again) and "already hydrated" in again.out, again.out
    assert (lab.dest / MARKER).read_bytes() == marker
    lab.assert_host_intact(first.out + again.out)


def test_root_overwrite_through_a_symlink_at_the_lock_name(lab, tool):
    dest_for_nobody(lab)
    lab.as_nobody("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", lab.outside / "victim",
                  lab.dest / LOCK_FILE)
    outcome = tool(lab.src, lab.dest)
    lab.assert_host_intact(outcome.out)
    refused(outcome, "lock")


def test_dangling_symlinks_at_the_marker_and_lock_names(lab, tool):
    dest_for_nobody(lab)
    lab.as_nobody("import os, sys; os.symlink(sys.argv[1], sys.argv[2]); os.symlink(sys.argv[3], sys.argv[4])",
                  lab.outside / "made-by-marker", lab.dest / MARKER, lab.outside / "made-by-lock",
                  lab.dest / LOCK_FILE)
    outcome = tool(lab.src, lab.dest)
    lab.assert_host_intact(outcome.out)
    refused(outcome)


def test_secret_leak_through_a_symlink_at_the_marker_name(lab, tool):
    dest_for_nobody(lab)
    lab.as_nobody("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", lab.secret, lab.dest / MARKER)
    outcome = tool(lab.src, lab.dest)
    lab.assert_host_intact(outcome.out)
    refused(outcome, "marker")


@pytest.mark.parametrize("record", ["json", "lines"])
def test_root_delete_through_a_planted_ready_record(lab, tool, record):
    """A staging tree the attacker made, ready record naming absolute and `..`
    prune paths and the attacker's marker: never finished, never pruned."""
    dest_for_nobody(lab)
    staging = lab.dest / (STAGING + "evil")
    targets = [str(lab.outside / "victim"), "../../outside/victim-dir", "../../outside/secret"]
    if record == "json":
        text = json.dumps({"overwrite": True, "prune": targets, "marker": {"who": "attacker"}}) + "\n"
    else:
        text = ("format=guardrail-hydrate-ready 1\noverwrite=true\nmarker={\"who\": \"attacker\"}\n"
                + "".join(f"prune={t}\n" for t in targets))
    lab.as_nobody("import os, sys\nos.mkdir(sys.argv[1], 0o700)\n"
                  "open(sys.argv[1] + '/planted.txt', 'w').write('attacker content')\n"
                  "open(sys.argv[1] + '/' + sys.argv[2], 'w').write(sys.argv[3])\n", staging, READY, text)
    outcome = tool(lab.src, lab.dest)
    lab.assert_host_intact(outcome.out)
    assert ok(outcome) and seeded(lab), outcome.out
    assert not (lab.dest / "planted.txt").exists()
    assert "attacker" not in (lab.dest / MARKER).read_text()


def test_ready_record_of_absurd_size(lab, tool):
    """A planted ready record that claims a terabyte (sparse): never read in full."""
    dest_for_nobody(lab)
    lab.as_nobody("import os, sys\nos.mkdir(sys.argv[1], 0o700)\n"
                  "fd = os.open(sys.argv[1] + '/.guardrail-ready', os.O_WRONLY | os.O_CREAT, 0o644)\n"
                  "os.write(fd, b'format=guardrail-hydrate-ready 1\\nprune=')\nos.ftruncate(fd, 1 << 40)\n",
                  lab.dest / (STAGING + "huge"))
    outcome = tool(lab.src, lab.dest, timeout=120)
    lab.assert_host_intact(outcome.out)
    assert ok(outcome) and seeded(lab), outcome.out


def test_symlinked_dest_is_refused(lab, tool):
    lab.as_nobody("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", lab.outside / "victim-dir", lab.dest)
    outcome = tool(lab.src, lab.dest, owner="nobody", dir_mode="0777")
    lab.assert_host_intact(outcome.out)
    refused(outcome, "symlink")


def test_symlinked_parent_of_dest_into_a_system_directory(lab, tool):
    name = "guardrail-conformance-" + uuid.uuid4().hex[:8]
    lab.as_nobody("import os, sys; os.symlink('/etc', sys.argv[1])", lab.vol / "sub")
    try:
        outcome = tool(lab.src, lab.vol / "sub" / name)
        assert not os.path.lexists(f"/etc/{name}"), "wrote into /etc"
    finally:
        if os.path.lexists(f"/etc/{name}"):
            remove_tree(f"/etc/{name}")
    lab.assert_host_intact(outcome.out)
    refused(outcome, "system directory")


def test_escaping_link_through_chained_source_symlinks(lab, tool):
    """`up -> ../../..` is harmless alone; `L -> up/../../etc/secret` only looks
    inside by its text. Judged by where it resolves, L leaves the tree."""
    deep = lab.src / "x" / "y" / "z"
    deep.mkdir(parents=True)
    (deep / "up").symlink_to("../../..")
    (deep / "L").symlink_to("up/../../outside/secret")
    dest_for_nobody(lab)
    outcome = tool(lab.src, lab.dest)
    lab.assert_host_intact(outcome.out)
    refused(outcome, "x/y/z/L")
    assert sorted(os.listdir(lab.dest)) == []


# ------------------------------------------- special files where it opens


PROBE = """
import os, sys
# A blocking open for writing returns as soon as anyone opens the FIFO for
# reading, however briefly: proof that the hydrator opened it.
fd = os.open(sys.argv[1], os.O_WRONLY)
open(sys.argv[2], "w").close()
"""


def plant_special(lab, path, kind):
    """A FIFO or socket planted by nobody, a character device by root (nobody
    cannot mknod; it stands for one on an image or a volume mounted with dev).
    Returns the probe that notes an open of a FIFO."""
    if kind == "fifo":
        lab.as_nobody("import os, sys; os.mkfifo(sys.argv[1], 0o666)", path)
        flag = lab.scratch / ("opened-" + uuid.uuid4().hex[:6])
        return lab.attacker(PROBE, path, flag), flag
    if kind == "socket":
        lab.as_nobody("import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path)
    else:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    return None, None


def probe_result(path, probe, flag):
    """Whether the hydrator opened the FIFO; ends the probe."""
    if probe is None:
        return False
    time.sleep(0.2)
    opened = flag.exists()
    if probe.poll() is None:
        # Our own open lets the probe's return; it then notes it, so check first.
        if os.path.lexists(path) and stat.S_ISFIFO(os.lstat(path).st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            probe.wait(timeout=30)
            os.close(fd)
        else:
            os.killpg(probe.pid, signal.SIGKILL)
            probe.wait(timeout=30)
    return opened


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
@pytest.mark.parametrize("where", ["marker", "lock"])
def test_special_files_at_our_names_are_refused_unopened(lab, tool, where, kind):
    dest_for_nobody(lab)
    path = lab.dest / (MARKER if where == "marker" else LOCK_FILE)
    probe, flag = plant_special(lab, path, kind)
    outcome = tool(lab.src, lab.dest, timeout=60)
    assert not probe_result(path, probe, flag), f"the hydrator opened the FIFO at the {where}"
    lab.assert_host_intact(outcome.out)
    refused(outcome, MARKER if where == "marker" else LOCK_FILE)


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
@pytest.mark.parametrize("where", ["staging", "marker temporary"])
def test_special_files_at_our_other_names_are_removed_unopened(lab, tool, where, kind):
    """What a writer plants at a staging or temporary name is removed by the
    next run without being opened, and the run seeds."""
    dest_for_nobody(lab)
    path = lab.dest / (STAGING + "planted" if where == "staging" else MARKER + ".tmp-planted")
    probe, flag = plant_special(lab, path, kind)
    outcome = tool(lab.src, lab.dest, timeout=60)
    assert not probe_result(path, probe, flag), f"the hydrator opened the FIFO at the {where} name"
    lab.assert_host_intact(outcome.out)
    assert ok(outcome) and seeded(lab), outcome.out
    assert not os.path.lexists(path)


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
def test_special_file_as_dest_is_refused_unopened(lab, tool, kind):
    probe, flag = plant_special(lab, lab.dest, kind)
    outcome = tool(lab.src, lab.dest, timeout=60)
    assert not probe_result(lab.dest, probe, flag), "the hydrator opened the FIFO at dest"
    lab.assert_host_intact(outcome.out)
    refused(outcome, "not a directory")


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
def test_special_file_at_a_source_files_path_under_force_is_replaced_unopened(lab, tool, kind):
    """force compares dest's files with the source: a FIFO or device there is
    never opened to do so; it is replaced by the source's file."""
    hydrated_for_nobody(lab, tool)
    path = lab.dest / "d0" / "s0" / "f00000.dat"
    lab.as_nobody("import os, sys; os.unlink(sys.argv[1])", path)
    probe, flag = plant_special(lab, path, kind)
    outcome = tool(lab.src, lab.dest, force=True, timeout=60)
    opened = probe_result(path, probe, flag)
    assert not opened, "the hydrator opened the FIFO"
    lab.assert_host_intact(outcome.out)
    assert ok(outcome), outcome.out
    assert path.read_bytes() == (lab.src / "d0" / "s0" / "f00000.dat").read_bytes()


# ---------------------------------------------------------- races on the volume


STAGING_SWAPPER = """
import os, sys, time
dest, victim, stop, count = sys.argv[1:5]
swaps = 0
while not os.path.exists(stop):
    try:
        names = os.listdir(dest)
    except OSError:
        names = []
    for name in names:
        if name.startswith(".guardrail-staging-") and not name.endswith(".moved"):
            path = os.path.join(dest, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rename(path, path + ".moved")
                    os.symlink(victim, path)
                    swaps += 1
            except OSError:
                pass
open(count, "w").write(str(swaps))
"""


def test_staging_swapped_for_a_symlink_after_the_copy(lab, tool):
    """The attacker renames the staging tree away and puts a symlink to a host
    directory at its name, over and over. Whatever moment it lands, nothing is
    moved out of or into the host directory and the marker means the content."""
    src = make_tree(lab.root / "big", files=3000, size=512)
    readable_by_all(src)
    lab.before = lab.snapshot()
    outputs, swaps = [], 0
    for attempt in range(3):
        dest = writable_by_all(lab.vol / f"swap{attempt}")
        stop, count = lab.scratch / "stop", lab.scratch / f"count{attempt}"
        attacker = lab.attacker(STAGING_SWAPPER, dest, lab.outside / "victim-dir", stop, count)
        try:
            time.sleep(0.3)
            outcome = tool(src, dest)
        finally:
            stop.touch()
            attacker.wait(timeout=60)
            stop.unlink()
        outputs.append(outcome.out)
        swaps += int(count.read_text())
        if (dest / MARKER).exists():
            assert seeded(lab, src, dest), outcome.out
        else:
            refused(outcome)
    assert swaps, "the attacker never caught a staging tree: the test did not race"
    lab.assert_host_intact("".join(outputs))


DEST_FLIPPER = """
import os, sys, time
dest, victim, stop, count = sys.argv[1:5]
swaps = 0
while not os.path.exists(stop):
    try:
        os.rename(dest, dest + ".away")
        os.symlink(victim, dest)
        time.sleep(0.001)
        os.unlink(dest)
        os.rename(dest + ".away", dest)
        swaps += 1
        if swaps == 21:
            open(count + ".running", "w").close()
    except OSError:
        pass
open(count, "w").write(str(swaps))
"""


def test_dest_swapped_for_a_symlink_during_the_run(lab, tool):
    """dest itself flips between the real directory and a symlink to a host
    directory, all through the run: whatever step it lands on, nothing is
    written, listed or changed through the link."""
    src = make_tree(lab.root / "big", files=2000, size=512)
    readable_by_all(src)
    dest_for_nobody(lab)
    lab.before = lab.snapshot()
    stop, count = lab.scratch / "stop", lab.scratch / "count"
    attacker = lab.attacker(DEST_FLIPPER, lab.dest, lab.outside / "victim-dir", stop, count)
    try:
        # On a loaded machine the flipper may start late: the runs begin once it is flipping.
        deadline = time.monotonic() + 60
        while not (lab.scratch / "count.running").exists():
            assert time.monotonic() < deadline and attacker.poll() is None, "the attacker did not start flipping"
            time.sleep(0.05)
        outcomes = [tool(src, lab.dest, force=True) for _attempt in range(3)]
    finally:
        stop.touch()
        attacker.wait(timeout=60)
    assert int(count.read_text()) > 20, "the attacker did not get to run"
    lab.assert_host_intact("".join(o.out for o in outcomes))
    for outcome in outcomes:
        assert outcome.rc in (0, REFUSED), outcome.out


def test_force_never_changes_a_hard_linked_inode_outside_dest(lab, tool):
    """nobody replaces a hydrated file by a hard link to its own file outside
    dest, same size and mtime as the source's, so only owner and mode look
    wrong: force must not fchown/fchmod that inode."""
    hydrated_for_nobody(lab, tool)
    target = lab.dest / "README.txt"
    source = lab.src / "README.txt"
    lab.as_nobody("import os, sys\nopen(sys.argv[1], 'w').write(open(sys.argv[2]).read())\n"
                  "st = os.stat(sys.argv[2]); os.utime(sys.argv[1], ns=(st.st_atime_ns, st.st_mtime_ns))\n"
                  "os.unlink(sys.argv[3]); os.link(sys.argv[1], sys.argv[3])\n", lab.nobodys, source, target)
    lab.before = lab.snapshot()
    outcome = tool(lab.src, lab.dest, force=True, owner="0", group="0", file_mode="0644")
    lab.assert_host_intact(outcome.out)
    assert ok(outcome), outcome.out
    st = os.lstat(target)
    assert st.st_nlink == 1 and (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)


DEST_SWAPPER = """
import fcntl, os, sys, time
lock, dest, victim, held, go = sys.argv[1:6]
fd = os.open(lock, os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
open(held, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
os.rename(dest, dest + ".away")
os.symlink(victim, dest)
os.close(fd)
"""


def test_dest_swapped_while_waiting_for_the_lock(lab, tool):
    """nobody holds the lock (any reader of the lock file can), lets a forced,
    pruning run wait, swaps dest for a symlink to a host directory, then lets
    go. The run refuses; no name from the host reaches its output or diff."""
    hydrated_for_nobody(lab, tool)
    held, go = lab.scratch / "held", lab.scratch / "go"
    attacker = lab.attacker(DEST_SWAPPER, lab.dest / LOCK_FILE, lab.dest, lab.outside / "victim-dir", held, go)
    deadline = time.monotonic() + 60
    while not held.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    options = {"force": True}
    if tool.name == "module":
        options.update(prune=True, diff=True)
    run = tool.start(lab.src, lab.dest, **options)
    # The run has opened dest and the lock file: it waits for the lock.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not holds(run.pid, lab.dest / LOCK_FILE):
        time.sleep(0.05)
    go.touch()
    attacker.wait(timeout=60)
    outcome = tool.finish(run)
    lab.assert_host_intact(outcome.out)
    refused(outcome, "replaced while waiting for the lock")


def holds(pid, path):
    """Whether process `pid` has `path` open."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_the_loser_of_a_version_race_says_so(lab, tool):
    """Two versions of the source start together on an empty volume: one
    seeds, the other finds the marker of another source and says so."""
    v2 = make_tree(lab.root / "v2", files=12, seed=2)
    dest_for_nobody(lab)
    fd = os.open(lab.dest / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        runs = [tool.start(lab.src, lab.dest), tool.start(v2, lab.dest)]
        # Both have read their source and opened the lock file: both wait.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(holds(r.pid, lab.dest / LOCK_FILE) for r in runs):
            time.sleep(0.05)
    finally:
        os.close(fd)
    first, second = (tool.finish(r) for r in runs)
    assert ok(first) and ok(second), (first.out, second.out)
    winner, loser = (first, second) if "from another source" in second.out else (second, first)
    assert "from another source" in loser.out, (first.out, second.out)
    assert seeded(lab, lab.src if winner is first else v2)
    if loser.result is not None:
        assert not loser.result["changed"] and loser.result["warnings"], loser.result


def test_force_compares_content_of_same_size_same_mtime_files(lab, tool):
    hydrated_for_nobody(lab, tool)
    target = lab.dest / "d1" / "s1" / "f00001.dat"
    st = os.stat(target)
    with open(target, "r+b") as f:
        f.write(b"X" * 16)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    outcome = tool(lab.src, lab.dest, force=True)
    assert ok(outcome), outcome.out
    assert target.read_bytes() == (lab.src / "d1" / "s1" / "f00001.dat").read_bytes()
    again = tool(lab.src, lab.dest, force=True)
    assert ok(again) and "already matches" in again.out, again.out


SWAPPER = """
import os, sys, time
dirs, victim, stop, count = sys.argv[1].split(":"), sys.argv[2], sys.argv[3], sys.argv[4]
# Every other directory is a symlink at any instant, and each flips every turn.
linked = [False] * len(dirs)
swaps = turn = 0
while not os.path.exists(stop):
    for i, d in enumerate(dirs):
        want = (turn + i) % 2 == 0
        try:
            if want and not linked[i]:
                os.rename(d, d + ".x")
                os.symlink(victim, d)
                swaps += 1
            elif linked[i] and not want:
                os.unlink(d)
                os.rename(d + ".x", d)
                swaps += 1
            linked[i] = want
        except OSError:
            pass
    turn += 1
    if swaps and not os.path.exists(count + ".ready"):
        open(count + ".ready", "w").close()
    time.sleep(0.0005)
open(count, "w").write(str(swaps))
"""


def test_a_dest_directory_swapped_for_a_symlink_during_the_move(lab, tool):
    """The attacker made the source's top directories in DEST beforehand
    (on_existing=merge adds into them), and while the hydrator runs it keeps
    swapping each of them for a symlink to a host directory and back.
    Renaming through a descriptor of the directory that was checked cannot
    land outside."""
    src = lab.root / "wide"
    tops = [f"d{i}" for i in range(4)]
    for top in tops:
        (src / top).mkdir(parents=True)
        for i in range(60):
            (src / top / f"f{i:03d}").write_text(f"{top} {i}\n")
    readable_by_all(src)
    lab.before = lab.snapshot()
    outputs, swaps = [], 0
    for attempt in range(2):
        dest = writable_by_all(lab.vol / f"race{attempt}")
        lab.as_nobody("import os, sys\nfor d in sys.argv[2:]: os.mkdir(os.path.join(sys.argv[1], d), 0o777)\n",
                      dest, *tops)
        stop, count = lab.scratch / "stop", lab.scratch / f"count{attempt}"
        attacker = lab.attacker(SWAPPER, ":".join(str(dest / d) for d in tops), lab.outside / "victim-dir",
                                stop, count)
        try:
            deadline = time.monotonic() + 60
            while not Path(f"{count}.ready").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            outcome = tool(src, dest, on_existing="merge")
            outputs.append(outcome.out)
            # Refused (a directory of dest is a symlink when it looks) or done.
            assert outcome.rc in (0, REFUSED), outcome.out
        finally:
            stop.touch()
            attacker.wait(timeout=60)
            stop.unlink()
        swaps += int(count.read_text())
    assert swaps > 20, "the attacker did not get to run"
    lab.assert_host_intact("".join(outputs))


# ---------------------------------------------------------- size and depth


def test_a_1500_deep_tree(lab, tool):
    deep = lab.root / "deep"
    path = deep
    deep.mkdir()
    for _level in range(1500):
        path = path / "d"
        path.mkdir()
    (path / "bottom.txt").write_text("at the bottom\n")
    dest_for_nobody(lab)
    outcome = tool(deep, lab.dest)
    assert ok(outcome), outcome.out[-2000:]
    assert seeded(lab, deep)
    forced = tool(deep, lab.dest, force=True)
    assert ok(forced) and "already matches" in forced.out, forced.out[-2000:]


@pytest.fixture(scope="session")
def wide_source(volumes):
    """200,000 entries: 199,600 empty files in 400 directories, on the tmpfs."""
    base = volumes["tmpfs"]
    if isinstance(base, BaseException):
        pytest.skip(str(base))
    root = base / "wide-source"
    if not root.exists():
        for d in range(400):
            (root / f"d{d:03d}").mkdir(parents=True)
            for f in range(499):
                os.close(os.open(root / f"d{d:03d}" / f"f{f:03d}", os.O_WRONLY | os.O_CREAT, 0o644))
    return root


def test_200000_entries(lab, tool, wide_source):
    dest_for_nobody(lab)
    started = time.monotonic()
    subprocess.run(["cp", "-a", f"{wide_source}/.", str(lab.root / "by-cp")], check=True, timeout=600)
    reference = time.monotonic() - started
    started = time.monotonic()
    outcome = tool(wide_source, lab.dest)
    took = time.monotonic() - started
    assert ok(outcome), outcome.out[-2000:]
    assert sum(1 for _entry in walk(lab.dest)) == 200_000 + 2  # the marker and the lock file
    assert (lab.dest / MARKER).is_file()
    # The script this replaced was quadratic (276 s); both are linear, within a
    # small factor of cp -a on the same machine at the same moment.
    assert took < 5 * reference + 10, f"{took:.1f} s for 200,000 entries, cp -a {reference:.1f} s"


# ----------------------------------------------------- failures of the volume


def test_enospc_leaves_nothing_partial(fs, tool, tmp_path):
    """A volume too small for the source: a clear failure, exit 70, no staging
    tree, no marker, nothing of the source in dest."""
    kind = fs[0]
    vol = tmp_path / "small"
    unmount = mount(kind, vol, 4 if kind == "tmpfs" else 8)
    try:
        src = make_tree(tmp_path / "src", files=400, size=32768)
        dest = vol / "app"
        outcome = tool(src, dest)
        refused(outcome, "No space left on device")
        assert sorted(os.listdir(dest)) == [LOCK_FILE], os.listdir(dest)
    finally:
        unmount()


# Step boundaries of a run (PROTOCOL.md, "A run"), and what a run killed there
# leaves for the next: the test checks that state first, so a kill that did
# not land where it says fails the test rather than passing it.
STEPS = ("before-lock", "after-copy", "after-ready", "after-swap", "after-marker")


def killed_at(tool, src, dest, step):
    """Runs `tool` until it kills itself (SIGKILL) at `step`; checks that it
    died there and what it left."""
    proc = tool.start(src, dest, stop_at=step)
    out, err = proc.communicate(timeout=600)
    if getattr(proc, "args_file", None):
        os.unlink(proc.args_file)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {step} (rc {proc.returncode}): {out} {err}"
    staging = [n for n in os.listdir(dest) if n.startswith(STAGING)]
    ready = [n for n in staging if (dest / n / READY).is_file()]
    content = {n for n in os.listdir(dest) if n not in (MARKER, LOCK_FILE) and not n.startswith(STAGING)}
    left = {"staging": len(staging), "ready": len(ready), "content": bool(content),
            "marker": (dest / MARKER).exists()}
    expected = {
        "before-lock": {"staging": 0, "ready": 0, "content": False, "marker": False},
        "after-copy": {"staging": 1, "ready": 0, "content": False, "marker": False},
        "after-ready": {"staging": 1, "ready": 1, "content": False, "marker": False},
        "after-swap": {"staging": 1, "ready": 1, "content": True, "marker": False},
        "after-marker": {"staging": 1, "ready": 1, "content": True, "marker": True},
        "before-tidy": {"staging": 1, "ready": 1, "content": True, "marker": True},
    }[step]
    assert left == expected, (step, left)


def converged(lab, tool, reference, *words):
    """The next run exits 0 and leaves exactly the source, nothing partial,
    and the marker of this source; the one after it changes nothing."""
    outcome = tool(lab.src, lab.dest)
    assert ok(outcome), outcome.out
    for word in words:
        assert word in outcome.out, (word, outcome.out)
    assert seeded(lab), outcome.out
    assert leftovers(lab.dest) == [], leftovers(lab.dest)
    marker = json.loads((lab.dest / MARKER).read_text())
    assert marker["digest"] == reference["digest"], (marker, reference)
    assert os.lstat(lab.dest / MARKER).st_mode & 0o7777 == 0o644
    again = tool(lab.src, lab.dest)
    assert ok(again) and "already hydrated" in again.out, again.out
    if again.result is not None:
        assert not again.result["changed"], again.result
    assert json.loads((lab.dest / MARKER).read_text()) == marker
    lab.assert_host_intact(outcome.out + again.out)
    return outcome


def reference_marker(lab, tool):
    """The marker a run that nobody interrupts writes for lab.src."""
    outcome = tool(lab.src, lab.vol / "reference")
    assert ok(outcome), outcome.out
    return json.loads((lab.vol / "reference" / MARKER).read_text())


# What the run after a kill says: it seeds, finishes the killed run's tree
# (with the marker that run prepared), or tidies what it left after its marker.
AFTER_KILL = {
    "before-lock": (),
    "after-copy": (),
    "after-ready": ("finished a hydration that was interrupted",),
    "after-swap": ("finished a hydration that was interrupted",),
    "after-marker": ("already hydrated",),
}


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_step_the_next_run_converges(lab, tool, step):
    reference = reference_marker(lab, tool)
    dest_for_nobody(lab)
    killed_at(tool, lab.src, lab.dest, step)
    outcome = converged(lab, tool, reference, *AFTER_KILL[step])
    if outcome.result is not None:
        assert outcome.result["changed"], outcome.result
        assert outcome.result["recovered"] == (step in ("after-ready", "after-swap")), outcome.result


def test_killed_while_tidying_after_the_marker(lab, tool):
    """A run killed after its marker, then the run that tidies killed with the
    lock held, before removing anything: the third run tidies."""
    reference = reference_marker(lab, tool)
    dest_for_nobody(lab)
    killed_at(tool, lab.src, lab.dest, "after-marker")
    killed_at(tool, lab.src, lab.dest, "before-tidy")
    converged(lab, tool, reference, "already hydrated", "removed")


@pytest.mark.parametrize("step", ["after-ready", "after-swap"])
def test_a_forced_run_killed_after_its_ready_record_is_finished_by_a_plain_run(lab, tool, step):
    """On a hydrated dest, a forced run to another version dies with its tree
    ready (after-swap: half of dest already the new version, the old marker):
    the next run, without force, finishes it rather than only tidying."""
    v2 = readable_by_all(make_tree(lab.root / "v2", files=12, seed=2))
    lab.before = lab.snapshot()
    dest_for_nobody(lab)
    assert ok(tool(lab.src, lab.dest))
    old = (lab.dest / MARKER).read_text()
    proc = tool.start(v2, lab.dest, force=True, stop_at=step)
    proc.communicate(timeout=600)
    if getattr(proc, "args_file", None):
        os.unlink(proc.args_file)
    assert proc.returncode == -signal.SIGKILL and (lab.dest / MARKER).read_text() == old
    outcome = tool(lab.src, lab.dest)
    assert ok(outcome) and "finished a hydration that was interrupted" in outcome.out, outcome.out
    assert seeded(lab, v2) and leftovers(lab.dest) == []
    assert json.loads((lab.dest / MARKER).read_text())["digest"] != json.loads(old)["digest"]
    lab.assert_host_intact(outcome.out)


@pytest.mark.parametrize("step", ["after-ready", "after-swap", "after-marker"])
@pytest.mark.parametrize("killer", IMPLEMENTATIONS)
def test_one_implementation_finishes_what_the_other_left(lab, killer, step):
    """They share volumes: what one left when killed, the other finishes."""
    finisher = implementation("helper" if killer == "module" else "module")
    reference = reference_marker(lab, finisher)
    dest_for_nobody(lab)
    killed_at(implementation(killer), lab.src, lab.dest, step)
    converged(lab, finisher, reference, *AFTER_KILL[step])


def test_a_nested_mount_in_dest(lab, tool):
    """dest itself a mount point is the normal case (the EFS volume); a
    directory of dest that is another filesystem is refused by name, before
    anything is written, on every run."""
    vol = lab.root / "mounted"
    unmount = mount("tmpfs", vol, 64)
    try:
        outcome = tool(lab.src, vol)
        assert ok(outcome) and seeded(lab, dest=vol), outcome.out
    finally:
        unmount()
    dest_for_nobody(lab)
    (lab.dest / "d0").mkdir()
    unmount = mount("tmpfs", lab.dest / "d0", 64)
    try:
        outcome = tool(lab.src, lab.dest, on_existing="merge")
        refused(outcome, "d0", "another filesystem")
        assert sorted(os.listdir(lab.dest)) == [LOCK_FILE, "d0"] and os.listdir(lab.dest / "d0") == []
    finally:
        unmount()


# ------------------------------------------------------------ what is copied


def rich_source(root):
    """What the spec says about copying, in one tree: modes with setuid,
    setgid and sticky bits, other owners, times, names with any bytes, hard
    links, symlinks, an empty directory, a sparse file and an xattr."""
    root = Path(root)
    make_tree(root, files=6)
    odd = os.fsencode(root) + b"/name with\nnewline \xff\x01 and spaces"
    with open(odd, "wb") as f:
        f.write(b"odd name\n")
    setuid = root / "bin" / "setuid-tool"
    setuid.write_bytes(b"#!/bin/sh\n")
    os.chown(setuid, 0, 0)
    setuid.chmod(0o4755)
    shared = root / "shared"
    shared.mkdir()
    os.chown(shared, NOBODY, 0)
    shared.chmod(0o3775)
    os.link(root / "README.txt", root / "shared" / "README.hardlink")
    with open(root / "sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(64 << 20)
        f.write(b"tail")
    os.utime(root / "README.txt", ns=(1_000_000_000, 1_000_000_123))
    try:
        os.setxattr(root / "README.txt", "user.guardrail", b"kept?")
    except OSError:
        os.setxattr(root / "README.txt", "trusted.guardrail", b"kept?")
    return root


def full_listing(root):
    """Everything the spec promises about a copied tree, by raw name."""
    listing, inodes = {}, {}
    for rel, st in walk(root):
        if rel in (MARKER, LOCK_FILE):
            continue
        path = os.path.join(root, rel)
        kind = stat.S_IFMT(st.st_mode)
        item = [kind, stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None, st.st_uid, st.st_gid]
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                item.append(hashlib.sha256(f.read()).hexdigest())
            item.append(st.st_mtime_ns)
            item.append(st.st_blocks * 512 < st.st_size)  # sparse stays sparse
            item.append(inodes.setdefault(st.st_ino, rel))  # hard links stay links
            item.append(sorted(os.listxattr(path)))
        elif stat.S_ISLNK(st.st_mode):
            item.append(os.readlink(path))
        elif stat.S_ISDIR(st.st_mode) and rel != ".":
            item.append(st.st_mtime_ns)
        listing[os.fsencode(rel)] = item
    return listing


def test_what_is_copied(lab, tool):
    """Modes (setuid, setgid, sticky kept), owners (kept as root), times, any
    bytes in names, hard links, symlinks, holes; xattrs are not copied."""
    src = rich_source(lab.root / "rich")
    dest_for_nobody(lab)
    outcome = tool(src, lab.dest)
    assert ok(outcome), outcome.out
    expected = full_listing(src)
    for item in expected.values():
        if item[0] == stat.S_IFREG:
            item[-1] = []  # no xattrs in the copy
    assert full_listing(lab.dest) == expected
    assert (lab.dest / "sparse.img").stat().st_blocks * 512 < 1 << 20


def test_both_implementations_give_the_same_tree(lab):
    """The helper and the module on the same source: the same tree and the
    same marker digest, so either finishes or recognises the other's work."""
    src = rich_source(lab.root / "rich")
    module_dest, helper_dest = lab.vol / "by-module", lab.vol / "by-helper"
    module_dest.mkdir()
    helper_dest.mkdir()
    result = module_result(start_module({"src": str(src), "dest": str(module_dest)}))
    assert result["rc"] == 0, result
    proc = subprocess.run([build_helper(), "true"], capture_output=True, text=True, timeout=300, check=False,
                          env={"GUARDRAIL_HYDRATE_SRC": str(src), "GUARDRAIL_HYDRATE_DEST": str(helper_dest)})
    assert proc.returncode == 0, proc.stderr
    assert full_listing(module_dest) == full_listing(helper_dest)
    digests = [json.loads((d / MARKER).read_text())["digest"] for d in (module_dest, helper_dest)]
    assert digests[0] == digests[1]


def test_merge_makes_a_missing_hard_link_to_a_copy_never_to_a_file_dest_has(lab, tool):
    """The source links README.txt and shared/README.hardlink; dest already has
    a README.txt of its own (a writer's hard link to its file outside dest).
    merge keeps dest's README.txt and adds README.hardlink as the source's
    file, never as another name of the inode dest has."""
    (lab.src / "shared").mkdir()
    os.link(lab.src / "README.txt", lab.src / "shared" / "README.hardlink")
    readable_by_all(lab.src)
    dest_for_nobody(lab)
    lab.as_nobody("import os, sys; os.link(sys.argv[1], sys.argv[2])", lab.nobodys, lab.dest / "README.txt")
    lab.before = lab.snapshot()
    outcome = tool(lab.src, lab.dest, on_existing="merge")
    lab.assert_host_intact(outcome.out)
    assert ok(outcome), outcome.out
    assert os.stat(lab.nobodys).st_nlink == 2
    assert (lab.dest / "README.txt").read_text() == "nobody's own\n"
    assert (lab.dest / "shared" / "README.hardlink").read_text() == (lab.src / "README.txt").read_text()


# ------------------------------------------------------------ without root


@pytest.mark.parametrize("problem", ["unwritable dest", "unreadable file", "owner"])
def test_without_root_refusals_come_before_the_lock(lab, tool, problem):
    """As nobody, from copies of the plugins and the helper (the checkout may
    be closed to nobody): refused with a clear message, no lock, no staging."""
    copies = lab.root / "copies"
    plugins = copies / "ansible_collections" / "guardrail" / "ecs" / "plugins"
    shutil.copytree(ROOT / "plugins", plugins, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(build_helper(), copies / "guardrail-hydrate")
    readable_by_all(copies)
    lab.before = lab.snapshot()
    owner = ""
    if problem == "unwritable dest":
        lab.dest.mkdir(mode=0o755)
        expected = "not writable by uid"
    elif problem == "unreadable file":
        dest_for_nobody(lab)
        (lab.src / "README.txt").chmod(0o600)
        expected = "not readable by uid"
    else:
        dest_for_nobody(lab)
        owner = "0"
        expected = "needs root"
    if tool.name == "module":
        code = ("import sys\n"
                "from ansible_collections.guardrail.ecs.plugins.module_utils.efs.hydrate import "
                "hydrate, HydrateError\n"
                "try:\n    hydrate(sys.argv[1], sys.argv[2], owner=sys.argv[3] or None)\n"
                "except HydrateError as exc:\n    sys.exit(str(exc))\n")
        argv = ["env", f"PYTHONPATH={copies}", "/usr/bin/python3", "-c", code, str(lab.src), str(lab.dest), owner]
    else:
        argv = ["env", "PATH=/usr/bin:/bin", f"GUARDRAIL_HYDRATE_SRC={lab.src}",
                f"GUARDRAIL_HYDRATE_DEST={lab.dest}", f"GUARDRAIL_HYDRATE_OWNER={owner}",
                str(copies / "guardrail-hydrate"), "true"]
    proc = subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True,
                          timeout=120, check=False, cwd="/")
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr
    assert sorted(os.listdir(lab.dest)) == []
    lab.assert_host_intact(proc.stdout + proc.stderr)
