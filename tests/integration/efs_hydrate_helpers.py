"""Helpers for the hydration tests: source trees, tree comparison, the
module run the way Ansible runs it on a host (a separate Python process
reading its arguments file), and the static helper built with gcc."""
import atexit
import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import ROOT

MARKER = ".guardrail-hydrated"
LOCK_FILE = ".guardrail-hydrate.lock"
STAGING_PREFIX = ".guardrail-staging-"
OURS = (MARKER, LOCK_FILE)
HELPER_SOURCE = ROOT / "roles" / "efs_volume" / "files" / "guardrail-hydrate.c"


@functools.lru_cache(maxsize=None)
def build_helper(test_steps=False):
    """guardrail-hydrate built once per session as `make hydrate-helper` builds
    it (static, warnings as errors), in a directory every uid can enter. A
    machine without gcc or a static libc fails the tests that need it.
    test_steps: a separate test build that kills itself at the protocol step
    GUARDRAIL_HYDRATE_TEST_STOP names (production builds have no such hook)."""
    out_dir = Path(tempfile.mkdtemp(prefix="guardrail-hydrate-bin-"))
    atexit.register(shutil.rmtree, out_dir, True)
    out_dir.chmod(0o755)
    out = out_dir / "guardrail-hydrate"
    steps = ["-DGUARDRAIL_HYDRATE_TEST_STEPS"] if test_steps else []
    proc = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", *steps, "-o", str(out),
                           str(HELPER_SOURCE)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"gcc could not build {HELPER_SOURCE} (scripts/bootstrap installs gcc " \
        f"and libc6-dev): {proc.stderr}"
    return str(out)


def make_tree(root, files=200, size=4096, seed=1):
    """A source tree of `files` files in nested directories, a relative symlink
    and an empty directory. Content is deterministic per seed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = root / f"d{i % 7}" / f"s{i % 3}" / f"f{i:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        block = hashlib.sha256(f"{seed}-{i}".encode()).digest()
        path.write_bytes(block * (size // len(block)) + block[: size % len(block)])
    (root / "README.txt").write_text("seed content\n")
    (root / "bin").mkdir(exist_ok=True)
    script = root / "bin" / "start.sh"
    script.write_text("#!/bin/sh\necho start\n")
    script.chmod(0o755)
    (root / "empty").mkdir(exist_ok=True)
    link = root / "bin" / "readme"
    if not link.is_symlink():
        link.symlink_to("../README.txt")
    return root


def walk(root):
    """(relative path, lstat) of everything below root, parents first, on a
    list rather than the Python stack (os.walk recurses: a 1,500-deep tree
    would stop it)."""
    root = os.fsencode(root)
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for d in sorted(it, key=lambda d: d.name):
                path = os.path.join(rel, d.name) if rel else d.name
                st = d.stat(follow_symlinks=False)
                yield os.fsdecode(path), st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)


def tree_listing(root, ignore=OURS):
    """{relative path: (kind, content digest or link target, mode)} of a tree,
    without the marker and lock file at its top."""
    listing = {}
    for rel, st in walk(root):
        if rel in ignore or any(rel.startswith(name + "/") for name in ignore):
            continue
        path = os.path.join(root, rel)
        if stat.S_ISLNK(st.st_mode):
            listing[rel] = ("link", os.readlink(path), None)
        elif stat.S_ISDIR(st.st_mode):
            listing[rel] = ("dir", None, st.st_mode & 0o7777)
        else:
            with open(path, "rb") as f:
                listing[rel] = ("file", hashlib.sha256(f.read()).hexdigest(), st.st_mode & 0o7777)
    return listing


def remove_tree(path):
    """rm -rf: shutil.rmtree recurses on the Python stack (3.11)."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True, timeout=600)


def leftovers(dest):
    """Staging directories and temp files a run left in dest."""
    return sorted(n for n in os.listdir(dest) if n.startswith((STAGING_PREFIX, MARKER + ".tmp")))


def module_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / ".cache" / "collections")
    return env


def _args_file(args):
    fd, path = tempfile.mkstemp(prefix="efs-hydrate-args-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, f)
    return path


# The module killed at a step boundary of the protocol, the way the test build
# of the helper is: the step's function of module_utils is wrapped in this
# process only, so the module itself carries no hook.
STEP_RUNNER = """
import os, runpy, signal, sys
from ansible_collections.guardrail.ecs.plugins.module_utils.efs import hydrate as h
stop = sys.argv.pop(1)

def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def before(fn):
    def wrapped(*args, **kwargs):
        kill()
    return wrapped

def after(fn, when=lambda *args: True):
    def wrapped(*args, **kwargs):
        result = fn(*args, **kwargs)
        if when(*args):
            kill()
        return result
    return wrapped

wrap = {
    "before-lock": lambda: setattr(h.DestLock, "__enter__", before(h.DestLock.__enter__)),
    "after-copy": lambda: setattr(h, "copy_into", after(h.copy_into)),
    "after-ready": lambda: setattr(h, "_write_atomic_at",
                                   after(h._write_atomic_at, lambda fd, name, *rest: name == h.READY_FILE)),
    "after-swap": lambda: setattr(h, "move_into", after(h.move_into)),
    "after-marker": lambda: setattr(h, "write_marker", after(h.write_marker)),
    "before-tidy": lambda: setattr(h, "recover", before(h.recover)),
}
wrap[stop]()
runpy.run_module("ansible_collections.guardrail.ecs.plugins.modules.efs_hydrate", run_name="__main__",
                 alter_sys=True)
"""


def start_module(args, env=None, stop_at=None):
    """Starts guardrail.ecs.efs_hydrate as its own process. Returns the Popen;
    read its result with module_result(). stop_at: the protocol step at which
    it kills itself (STEP_RUNNER)."""
    path = _args_file(args)
    full_env = module_env()
    full_env.update(env or {})
    if stop_at:
        argv = [sys.executable, "-c", STEP_RUNNER, stop_at, path]
    else:
        argv = [sys.executable, "-m", "ansible_collections.guardrail.ecs.plugins.modules.efs_hydrate", path]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    proc.args_file = path
    return proc


def module_result(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    os.unlink(proc.args_file)
    try:
        result = json.loads(out)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"module printed no JSON (rc={proc.returncode}): {out!r} {err!r}") from exc
    result["rc"] = proc.returncode
    return result


def run_module(args, env=None, timeout=300):
    return module_result(start_module(args, env=env), timeout=timeout)
