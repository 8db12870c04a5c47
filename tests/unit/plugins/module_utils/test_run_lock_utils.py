"""Unit tests for module_utils/workflow/run_lock.py: names, identity, records, and the
acquire/release/remove logic over an in-memory backend."""
import datetime
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock

ROOT = Path(__file__).resolve().parents[4]


class MemoryBackend(run_lock.LockBackend):
    """The four primitives over a dict; the token is the record's id and version."""

    def __init__(self):
        super().__init__()
        self.store = {}
        self.versions = {}
        self.deletes = []

    def _token(self, stack, profile):
        return f"{self.store[(stack, profile)]['id']}#{self.versions[(stack, profile)]}"

    def _create(self, stack, profile, record):
        if (stack, profile) in self.store:
            return False
        self.store[(stack, profile)] = dict(record)
        self.versions[(stack, profile)] = 0
        self._written[(stack, profile)] = (self._token(stack, profile), record)
        return True

    def _read(self, stack, profile):
        record = self.store.get((stack, profile))
        return (dict(record), self._token(stack, profile)) if record else (None, None)

    def _replace(self, stack, profile, token, record):
        if (stack, profile) not in self.store or self._token(stack, profile) != token:
            return False
        self.store[(stack, profile)] = dict(record)
        self.versions[(stack, profile)] += 1
        return True

    def _delete(self, stack, profile, token):
        self.deletes.append(token.partition("#")[0])
        record = self.store.get((stack, profile))
        if not record or self._token(stack, profile) != token:
            return False
        del self.store[(stack, profile)]
        return True


def record(owner="me@test", run_id="run-1", **extra):
    return dict(run_lock.new_record("alpha", "prod", owner, run_id), **extra)


def test_collection_version_matches_galaxy():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert run_lock.COLLECTION_VERSION == galaxy["version"]


@pytest.mark.parametrize("name", ["alpha", "prod", "a", "A1", "eu-west-1", "v1.2_x", "x" * 64])
def test_good_names(name):
    run_lock.validate_identity(name, name)


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", ".hidden", "-x", "_x", "a b", "a;b", "$(id)", "a`b`",
                                  "a|b", "a&b", "a>b", "x" * 65, "x" * 300, "a\n", "a\nb", "a\tb", "é", "a.lock",
                                  "a.", "a~1", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "a@{b", None, 5])
def test_bad_names(name):
    for stack, profile, field in ((name, "prod", "stack"), ("alpha", name, "profile")):
        with pytest.raises(run_lock.LockError, match=f"invalid {field} name"):
            run_lock.validate_identity(stack, profile)


def test_long_names_are_shortened_in_the_error():
    with pytest.raises(run_lock.LockError) as refused:
        run_lock.validate_identity("x" * 300, "prod")
    assert "(300 characters)" in str(refused.value) and len(str(refused.value)) < 250


def test_default_identity_from_awx_and_tower_vars():
    assert run_lock.default_identity({"awx_user_name": "alice", "awx_job_id": 4711}) == ("alice", "4711")
    assert run_lock.default_identity({"tower_user_name": "bob", "tower_job_id": 12}) == ("bob", "12")


def test_default_identity_outside_awx(monkeypatch):
    monkeypatch.setattr(run_lock.socket, "gethostname", lambda: "ctl1")
    owner, run_id = run_lock.default_identity({}, env={"USER": "carol"})
    assert owner == "carol@ctl1"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", run_id)
    assert run_lock.default_identity({}, env={"USER": "carol"})[1] != run_id


def test_new_record_fields():
    made = run_lock.new_record("alpha", "prod", "me@test", 7, operation="destroy", message="why")
    assert set(made) == {"owner", "run_id", "host", "created", "updated", "state", "detail", "operation",
                         "message", "stack", "profile", "version", "id", "pid", "pid_start", "boot_id", "pid_ns"}
    assert (made["state"], made["pid"]) == ("running", os.getpid())
    assert (made["run_id"], made["operation"], made["message"], made["version"]) == ("7", "destroy", "why", run_lock.COLLECTION_VERSION)
    assert made["created"].endswith("Z")
    age = run_lock.utc_now() - run_lock.parse_time(made["created"])
    assert datetime.timedelta(0) <= age < datetime.timedelta(seconds=5)


@pytest.mark.parametrize("owner", ["", "   ", "a\nb", "x" * 257, None])
def test_bad_owner(owner):
    with pytest.raises(run_lock.LockError, match="invalid owner"):
        run_lock.new_record("alpha", "prod", owner, "run-1")


def test_is_stale():
    made = record()
    later = run_lock.parse_time(made["created"]) + datetime.timedelta(seconds=61)
    assert run_lock.is_stale(made, 60, now=later)
    assert not run_lock.is_stale(made, 120, now=later)
    assert not run_lock.is_stale(made, None, now=later)
    assert not run_lock.is_stale(None, 60)


@pytest.mark.parametrize("text,expected", [
    ("2026-01-02T03:04:05.123456789Z", datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, datetime.timezone.utc)),
    ("2026-01-02T03:04:05Z", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)),
    ("2026-01-02T05:04:05+02:00", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)),
])
def test_parse_time(text, expected):
    assert run_lock.parse_time(text) == expected


def test_lock_info_round_trip_and_tofu_fields():
    made = record(message="rotate")
    info = json.loads(run_lock.lock_info(made, "guardrail/alpha/prod"))
    assert info["ID"] == made["id"] and info["Who"] == "me@test" and info["Info"] == "rotate"
    assert run_lock.record_from_lock_info(json.dumps(info), "alpha", "prod") == made
    with pytest.raises(run_lock.LockError, match="unreadable JSON"):
        run_lock.record_from_lock_info("{", "alpha", "prod")


def test_refusal_names_everything():
    held = record(message="long apply")
    text = str(run_lock.LockHeld(held, "alpha", "prod"))
    for part in ("alpha/prod", "me@test", "run run-1", held["host"], held["created"], "operation apply",
                 "long apply"):
        assert part in text


def test_acquire_twice_by_the_run_is_unchanged_and_any_other_run_refused():
    backend = MemoryBackend()
    mine = record()
    assert backend.acquire("alpha", "prod", mine) == (True, mine)
    assert backend.acquire("alpha", "prod", record()) == (False, mine)
    with pytest.raises(run_lock.LockHeld, match="one run at a time") as refused:
        backend.acquire("alpha", "prod", record(run_id="run-2"))
    assert refused.value.record == mine
    with pytest.raises(run_lock.LockHeld, match="one run at a time"):
        backend.acquire("alpha", "prod", record(run_id="run-2"), takeover=True)
    with pytest.raises(run_lock.LockHeld) as refused:
        backend.acquire("alpha", "prod", record(owner="you@test"))
    assert refused.value.record == mine


def test_takeover_only_of_an_ended_run_of_the_same_owner_and_explicitly():
    backend = MemoryBackend()
    first = record()
    backend.acquire("alpha", "prod", first)
    failed = backend.set_state("alpha", "prod", first, "failed", detail="exit 1")
    assert (failed["state"], failed["detail"], failed["id"]) == ("failed", "exit 1", first["id"])
    with pytest.raises(run_lock.LockHeld, match=r"has ended \(failed\): take it over with takeover=true"):
        backend.acquire("alpha", "prod", record(run_id="run-2"))
    with pytest.raises(run_lock.LockHeld, match="its owner may take it over"):
        backend.acquire("alpha", "prod", record(owner="you@test", run_id="run-2"), takeover=True)
    second = record(run_id="run-2")
    changed, held = backend.acquire("alpha", "prod", second, takeover=True)
    assert changed and held["run_id"] == "run-2" and held["taken_over"] == failed
    assert backend.read("alpha", "prod") == held


def test_a_run_whose_process_is_gone_has_ended(tmp_path):
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = record(pid=child.pid)
    assert "is gone" in run_lock.run_ended(gone)
    assert run_lock.run_ended(record()) is None  # this process is alive
    assert run_lock.run_ended(record(pid=os.getpid(), pid_start="1")) is not None  # pid reused
    # Another host (another kernel's boot id): unknown, live; the same boot id
    # under another name (a container's hostname) is this host.
    assert run_lock.run_ended(record(pid=child.pid, host="elsewhere", boot_id="other")) is None
    assert "is gone" in run_lock.run_ended(record(pid=child.pid, host="elsewhere"))
    # This host booted again since: every process of the run is gone.
    assert "booted again" in run_lock.run_ended(record(pid=os.getpid(), boot_id="before"))
    # A pid of another PID namespace means nothing here: never judged gone.
    assert run_lock.run_ended(record(pid=child.pid, pid_ns=1)) is None
    assert run_lock.run_ended(run_lock.new_record("alpha", "prod", "me@test", "r", job="42")) is None


def test_set_state_is_a_compare_and_swap_held_by_the_run():
    backend = MemoryBackend()
    mine = record()
    with pytest.raises(run_lock.LockLost, match="released or broken"):
        backend.set_state("alpha", "prod", mine, "failed")
    backend.acquire("alpha", "prod", mine)
    with pytest.raises(run_lock.LockError, match="unknown run state"):
        backend.set_state("alpha", "prod", mine, "done")
    with pytest.raises(run_lock.LockLost, match="held by me@test"):
        backend.set_state("alpha", "prod", record(run_id="run-2"), "failed")
    original_replace = backend._replace
    raced = []

    def replace_after_a_change(stack, profile, token, new):
        if not raced:  # someone else writes between our read and our swap
            raced.append(1)
            backend.versions[(stack, profile)] += 1
        return original_replace(stack, profile, token, new)

    backend._replace = replace_after_a_change
    assert backend.set_state("alpha", "prod", mine, "interrupted")["state"] == "interrupted"
    assert raced == [1]


def test_acquire_waits_for_a_release_up_to_the_timeout():
    backend = MemoryBackend()
    backend.acquire("alpha", "prod", record(owner="you@test"))
    now = [0.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds
        if now[0] > 2:
            backend.store.clear()

    mine = record()
    assert backend.acquire("alpha", "prod", mine, wait=10, sleep=sleep, clock=lambda: now[0]) == (True, mine)
    assert waits and all(0 < w <= 1.0 for w in waits)
    other = MemoryBackend()
    other.acquire("alpha", "prod", record(owner="you@test"))
    now[0] = 0.0
    with pytest.raises(run_lock.LockHeld):
        other.acquire("alpha", "prod", record(), wait=3, sleep=lambda s: now.__setitem__(0, now[0] + s),
                      clock=lambda: now[0])
    assert now[0] >= 3


def test_acquire_retries_when_the_holder_released_in_between():
    backend = MemoryBackend()
    backend.store[("alpha", "prod")] = record(owner="you@test")
    original_read = backend._read

    def read_after_release(stack, profile):
        backend.store.clear()  # the holder releases between our create and our read
        return original_read(stack, profile)

    backend._read = read_after_release
    mine = record()
    assert backend.acquire("alpha", "prod", mine) == (True, mine)


def test_acquire_gives_up_when_the_lock_keeps_changing():
    backend = MemoryBackend()
    backend._create = lambda *args: False
    backend._read = lambda *args: (None, None)
    with pytest.raises(run_lock.LockError, match="kept changing hands"):
        backend.acquire("alpha", "prod", record())


def test_acquire_refuses_a_record_for_another_lock():
    with pytest.raises(run_lock.LockError, match="the record is for alpha/prod, not beta/prod"):
        MemoryBackend().acquire("beta", "prod", record())


def test_check_mode_writes_nothing():
    backend = MemoryBackend()
    assert backend.acquire("alpha", "prod", record(), check_mode=True)[0] is True
    assert backend.store == {}
    held = record()
    backend.acquire("alpha", "prod", held)
    assert backend.release("alpha", "prod", held, check_mode=True) == (True, held)
    assert backend.remove("alpha", "prod", check_mode=True) == (True, held)
    assert backend.store and backend.deletes == []


def test_release_uses_what_it_wrote_then_falls_back_to_reading():
    backend = MemoryBackend()
    held = record()
    backend.acquire("alpha", "prod", held)
    assert backend.release("alpha", "prod", held) == (True, held)
    assert backend.deletes == [held["id"]]

    backend.acquire("alpha", "prod", held)
    replaced = backend.set_state("alpha", "prod", held, "failed")  # changed since it was written
    assert backend.release("alpha", "prod", held) == (True, replaced)
    assert backend.deletes[1:] == [held["id"], replaced["id"]]


def test_release_only_by_the_run_that_holds_it():
    backend = MemoryBackend()
    held = record()
    backend.acquire("alpha", "prod", held)
    with pytest.raises(run_lock.LockHeld, match="cannot release run lock alpha/prod: it is held by me@test"):
        backend.release("alpha", "prod", record(run_id="run-2"))
    with pytest.raises(run_lock.LockError, match="needs the run's record"):
        backend.release("alpha", "prod", "me@test")
    assert backend.read("alpha", "prod") == held


def test_release_by_another_owner_and_of_a_free_lock():
    backend = MemoryBackend()
    assert backend.release("alpha", "prod", record()) == (False, None)
    held = record()
    backend.acquire("alpha", "prod", held)
    with pytest.raises(run_lock.LockHeld, match="cannot release run lock alpha/prod: it is held by me@test"):
        backend.release("alpha", "prod", record(owner="you@test"))
    assert backend.store


def test_remove_any_owner():
    backend = MemoryBackend()
    assert backend.remove("alpha", "prod") == (False, None)
    held = record(owner="you@test")
    backend.acquire("alpha", "prod", held)
    assert backend.remove("alpha", "prod") == (True, held)
    assert backend.store == {}


def test_get_backend_checks_its_options():
    with pytest.raises(run_lock.LockError, match="unknown run lock backend 'consul'"):
        run_lock.get_backend("consul")
    with pytest.raises(run_lock.LockError, match="needs table"):
        run_lock.get_backend("dynamodb")
    with pytest.raises(run_lock.LockError, match="needs bucket"):
        run_lock.get_backend("s3")
    assert run_lock.get_backend("s3", bucket="b").object_key("alpha", "prod") == "guardrail/alpha/prod.tflock"
    assert run_lock.get_backend("dynamodb", table="t", key="k").lock_id("alpha", "prod") == "k"


def test_git_tag_object_and_hint_check(tmp_path):
    (tmp_path / ".git").mkdir()
    backend = run_lock.GitLockBackend(repo_path=str(tmp_path))
    held = record()
    content = backend._tag_object("alpha", "prod", held)
    assert content.startswith(f"object {run_lock.EMPTY_TREE}\ntype tree\ntag guardrail-lock/alpha/prod\ntagger me@test")
    assert backend._parse_tag(content, "alpha", "prod") == held
    oid = hashlib.sha1(b"tag %d\0" % len(content.encode()) + content.encode()).hexdigest()
    backend._remember("alpha", "prod", oid, content)
    assert backend._hint("alpha", "prod") == (oid, held)
    hint = Path(backend._hint_path("alpha", "prod"))
    hint.write_text(json.dumps({"oid": oid, "tag": content.replace("me@test", "you@test")}))
    assert backend._hint("alpha", "prod") is None, "a hint whose content does not hash to its id is ignored"


class OwnedDeleteBackend(MemoryBackend):
    """A backend that can check the owner and delete in one step."""

    def _delete_owned(self, stack, profile, record):
        held = self.store.get((stack, profile))
        if held is None:
            return None
        if not run_lock.same_run(held, record):
            return "other", dict(held)
        del self.store[(stack, profile)]
        return "deleted", held


def test_release_in_one_step_without_a_hint():
    backend = OwnedDeleteBackend()
    held = record()
    backend.acquire("alpha", "prod", held)
    backend._written.clear()
    backend._read = None  # a read would fail the test
    assert backend.release("alpha", "prod", held) == (True, held)
    assert backend.deletes == []


def test_release_in_one_step_refuses_another_owner_and_reads_when_unsure():
    backend = OwnedDeleteBackend()
    backend.acquire("alpha", "prod", record(owner="you@test"))
    backend._written.clear()
    with pytest.raises(run_lock.LockHeld, match="held by you@test"):
        backend.release("alpha", "prod", record())
    backend.store.clear()
    assert backend.release("alpha", "prod", record()) == (False, None)


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_the_run_flock_tells_live_from_gone(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "git" / "guardrail-run" / "alpha" / "prod.lock"
    descriptor, flock = run_lock.hold_flock(str(path), "run-1")
    try:
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        with pytest.raises(BlockingIOError):
            run_lock.hold_flock(str(path), "run-2")
        # Held here: live for the run that holds it, gone for any other.
        assert run_lock.flock_held(flock, "run-1") is True
        assert run_lock.run_ended(record(run_id="run-1", flock=flock)) is None
        assert "is gone" in run_lock.run_ended(record(run_id="run-0", flock=flock))
    finally:
        run_lock.drop_flock(descriptor)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        # Another process holds it: live, even with a record whose pid is gone.
        assert run_lock.run_ended(record(run_id="run-0", flock=flock, pid=999999999)) is None
    finally:
        holder.kill()
        holder.wait()
    assert run_lock.flock_held(flock, "run-0") is False
    # Another file at that path (recreated, or another mount namespace's): unknown.
    other = path.with_name("new")
    other.write_text("")
    other.replace(path)
    assert run_lock.flock_held(flock, "run-0") is None
    path.unlink()
    path.symlink_to(tmp_path)
    with pytest.raises(OSError):
        run_lock.hold_flock(str(path), "run-3")
