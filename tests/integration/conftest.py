"""Shared fixtures for integration tests: real git, real binaries, a moto server
over real HTTP, and ansible run as a user runs it."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def ansible_env(**extra):
    """Environment for ansible commands: the checkout as the collection."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_playbook(playbook, extra_vars=None, check=False, diff=False, env=None, cwd=None,
                 inventory="localhost,", timeout=900):
    """Runs ansible-playbook with the json callback.

    `playbook` is a path or the text of a playbook. Returns (rc, parsed json
    output, stderr). Task results are under out["plays"][i]["tasks"][j]["hosts"].
    """
    cwd = Path(cwd or ROOT)
    inline = str(playbook).lstrip().startswith(("-", "#"))
    if inline:
        # Inline playbooks live in a temporary directory, never in the checkout.
        fd, name = tempfile.mkstemp(prefix="playbook-", suffix=".yml")
        with os.fdopen(fd, "w") as handle:
            handle.write(textwrap.dedent(playbook))
        path = Path(name)
    else:
        path = Path(playbook)
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", inventory, str(path)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    full_env = ansible_env(ANSIBLE_STDOUT_CALLBACK="json",  # ansible.posix.json before ansible-core 2.19
                           ANSIBLE_CALLBACK_RESULT_FORMAT="json", **(env or {}))
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    finally:
        if inline:
            path.unlink(missing_ok=True)
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        out = {"raw": proc.stdout}
    return proc.returncode, out, proc.stderr


def task_results(out, host="localhost"):
    """Flat list of (task name, result) for one host from json callback output."""
    results = []
    for play in out.get("plays", []):
        for task in play.get("tasks", []):
            if host in task.get("hosts", {}):
                results.append((task["task"]["name"], task["hosts"][host]))
    return results


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A moto server on loopback, shared by the session. Yields its endpoint URL.

    Tests call `reset_moto(endpoint)` (or the `moto` fixture) for a clean slate.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield endpoint
    server.stop()


def reset_moto(endpoint):
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"),
                           timeout=10).read()


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def moto(moto_server, monkeypatch):
    """A clean moto server and AWS test credentials in the environment."""
    reset_moto(moto_server)
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    return moto_server


def git(*args, cwd, check=True, env=None):
    full_env = dict(os.environ)
    full_env.update(GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.invalid",
                    GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.invalid",
                    GIT_CONFIG_NOSYSTEM="1")
    full_env.update(env or {})
    proc = subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


@pytest.fixture
def git_repo(tmp_path):
    """A clone with one pushed commit on `main`, and its bare remote.

    Returns (clone path, bare remote path).
    """
    remote = tmp_path / "remote.git"
    clone = tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    git("clone", "-q", str(remote), str(clone), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=clone)
    git("config", "user.name", "Test", cwd=clone)
    git("config", "user.email", "test@example.invalid", cwd=clone)
    (clone / "README").write_text("stack repo\n")
    git("add", "README", cwd=clone)
    git("commit", "-q", "-m", "initial", cwd=clone)
    git("push", "-q", "-u", "origin", "main", cwd=clone)
    return clone, remote


@pytest.fixture(scope="session")
def busybox_path(tmp_path_factory):
    """A PATH with only busybox applets, like a minimal (Alpine-style) image."""
    bindir = tmp_path_factory.mktemp("busybox-bin")
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True,
                             timeout=30).stdout.split()
    assert "sh" in applets and "flock" not in applets
    for applet in applets:
        (bindir / applet).symlink_to("/usr/bin/busybox")
    return str(bindir)
