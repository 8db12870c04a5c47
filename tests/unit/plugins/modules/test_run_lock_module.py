"""The run_lock module's result shaping over an in-memory backend."""
import datetime

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock as lock_utils
from ansible_collections.guardrail.ecs.plugins.modules import run_lock


class MemoryBackend(lock_utils.LockBackend):
    def __init__(self):
        super().__init__()
        self.store = {}

    def _create(self, stack, profile, record):
        return self.store.setdefault((stack, profile), record) is record

    def _read(self, stack, profile):
        record = self.store.get((stack, profile))
        return (record, record["id"]) if record else (None, None)

    def _delete(self, stack, profile, token):
        record = self.store.get((stack, profile))
        if record and record["id"] == token:
            del self.store[(stack, profile)]
            return True
        return False


@pytest.fixture
def backend(monkeypatch):
    memory = MemoryBackend()
    monkeypatch.setattr(run_lock, "get_backend", lambda *args, **kwargs: memory)
    return memory


def params(**overrides):
    values = {name: None for name in run_lock.argument_spec()}
    values.update(stack="alpha", profile="prod", state="acquired", backend="git", owner="me@test", run_id="run-1",
                  operation="apply", lock_message="why", remote="origin", repo_path="/srv/alpha")
    values.update(overrides)
    return values


def test_acquire_then_query_then_release(backend):
    result, refusal = run_lock.run(params(), check_mode=False)
    assert refusal is None and result["changed"] and result["lock"]["message"] == "why"
    assert result["diff"] == {"before": {}, "after": result["lock"]}
    held = result["lock"]
    result = run_lock.run(params(state="query", ttl=3600), check_mode=False)[0]
    assert result == {"changed": False, "lock": held, "stale": False, "diff": {"before": held, "after": held}}
    result = run_lock.run(params(state="released"), check_mode=False)[0]
    assert result["changed"] and result["lock"] == held and result["diff"] == {"before": held, "after": {}}
    assert backend.store == {}


def test_refusal_reports_a_stale_holder_without_breaking_it(backend):
    old = lock_utils.new_record("alpha", "prod", "you@test", "run-9", message="forgotten")
    old["created"] = lock_utils.format_time(lock_utils.utc_now() - datetime.timedelta(hours=2))
    backend.store[("alpha", "prod")] = old
    result, refusal = run_lock.run(params(ttl=3600), check_mode=False)
    assert result == {"changed": False, "lock": old, "stale": True}
    assert "held by you@test (run run-9" in refusal and "older than ttl 3600s (stale)" in refusal
    assert backend.store[("alpha", "prod")] == old


def test_check_mode_and_absent(backend):
    result = run_lock.run(params(), check_mode=True)[0]
    assert result["changed"] and backend.store == {}
    run_lock.run(params(owner="you@test"), check_mode=False)
    result = run_lock.run(params(state="absent"), check_mode=True)[0]
    assert result["changed"] and result["lock"]["owner"] == "you@test" and backend.store
    result = run_lock.run(params(state="absent"), check_mode=False)[0]
    assert result["changed"] and backend.store == {}


def test_aws_profile_is_the_aws_named_profile(monkeypatch):
    seen = {}
    monkeypatch.setattr(run_lock, "get_backend", lambda backend, **kwargs: seen.update(kwargs) or MemoryBackend())
    run_lock.run(params(backend="s3", bucket="b", aws_profile="ops"), check_mode=True)
    assert seen["profile"] == "ops" and seen["bucket"] == "b"
