"""The workflow's input checks and its overall `changed`, without running steps."""
import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.guardrail.ecs.plugins.action import workflow as w


@pytest.mark.parametrize("steps", [["render"], ["unlock_any"], list(w.STEPS), w.DEFAULT_STEPS,
                                   ["git_check", "exec", "unlock"]])
def test_ordered_subsets_accepted(steps):
    assert w.validate_steps(steps) == steps


@pytest.mark.parametrize("steps,match", [
    ([], "steps is empty"),
    (["render", "deploy"], "unknown step\\(s\\) 'deploy'"),
    (["exec", "lock"], "step 'lock' cannot come after 'exec'"),
    (["lock", "lock"], "step 'lock' cannot come after 'lock'"),
])
def test_bad_steps_refused(steps, match):
    with pytest.raises(AnsibleActionFail, match=match):
        w.validate_steps(steps)


def test_commands():
    assert w.validate_command("plan") == "plan"
    assert w.validate_command(["make", 3]) == ["make", "3"]
    for bad in ("deploy", [], {"a": 1}, None):
        with pytest.raises(AnsibleActionFail):
            w.validate_command(bad)


def record(step, changed, status="ok"):
    return {"step": step, "changed": changed, "status": status}


def test_lock_taken_and_released_is_no_change():
    records = [record("render", False), record("lock", True), record("exec", False), record("unlock", True)]
    assert w.net_changed(records) is False
    records[2]["changed"] = True
    assert w.net_changed(records) is True


def test_lock_left_held_is_a_change():
    assert w.net_changed([record("lock", True), record("exec", False, "failed"),
                          record("unlock", False, "skipped")]) is True
    assert w.net_changed([record("unlock", True)]) is True


def test_releasing_a_lock_held_before_the_run_is_a_change():
    assert w.net_changed([record("lock", False), record("exec", False), record("unlock", True)]) is True


@pytest.mark.parametrize("spelled,canonical", [
    (["build", "git-check", "lock", "exec", "git-push", "unlock-any"],
     ["render", "git_check", "lock", "exec", "git_push", "unlock_any"]),
    (["render", "git_check", "lock", "exec", "git_push", "unlock_any"],
     ["render", "git_check", "lock", "exec", "git_push", "unlock_any"]),
    (["build", "git_check", "git-push", "unlock"], ["render", "git_check", "git_push", "unlock"]),
    (["unlock-any"], ["unlock_any"]),
])
def test_hyphens_underscores_and_build_name_the_same_steps(spelled, canonical):
    assert w.validate_steps(spelled) == canonical


@pytest.mark.parametrize("steps,match", [
    (["build", "render"], "step 'render' cannot come after 'render'"),
    (["git-push", "git_check"], "step 'git_check' cannot come after 'git_push'"),
    (["unlock-all"], "unknown step\\(s\\) 'unlock-all'"),
    (["bulid"], "unknown step\\(s\\) 'bulid'"),
])
def test_spellings_keep_the_order_and_name_rules(steps, match):
    with pytest.raises(AnsibleActionFail, match=match):
        w.validate_steps(steps)


def test_lock_taken_and_released_by_unlock_any_is_no_change():
    records = [record("render", False), record("lock", True), record("exec", False), record("unlock_any", True)]
    assert w.net_changed(records) is False
