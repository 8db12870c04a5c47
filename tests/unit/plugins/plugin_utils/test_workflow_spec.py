"""plugin_utils/workflow_spec.py: the nested argument spec of the workflow,
the flat names of 0.2 moved into their groups with a deprecation, and the
one validation the task, the library and the command line share."""
import ast
import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from ansible_collections.guardrail.ecs.plugins.plugin_utils import api
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow_spec as spec
from ansible_collections.guardrail.ecs.plugins.plugin_utils.workflow import WorkflowError

ROOT = Path(__file__).resolve().parents[4]
RUN = {"stack": "alpha", "profile": "prod"}


def leaves():
    return {(group, name) for group, members in spec.GROUPS.items() for name in members}


def test_every_grouped_option_had_one_flat_name():
    assert sorted(spec.FLAT_NAMES.values()) == sorted(leaves())
    assert not set(spec.FLAT_NAMES) & set(spec.WORKFLOW_ARGUMENT_SPEC), "a flat name is still top level"


def test_flat_names_land_where_the_nested_ones_do():
    flat = dict(RUN, lock_backend="s3", lock_bucket="locks", owner="alice", exec_timeout="60",
                tofu_options={"parallelism": 3}, stacks_dir="tf/stacks", max_ahead=2)
    nested = dict(RUN, lock={"backend": "s3", "bucket": "locks", "owner": "alice"},
                  tofu={"timeout": 60, "options": {"parallelism": 3}}, render={"stacks_dir": "tf/stacks"},
                  git={"max_ahead": 2})
    from_flat, deprecations = spec.validate(flat)
    from_nested, none = spec.validate(nested)
    assert from_flat == from_nested and none == []
    assert (from_flat["lock_backend"], from_flat["exec_timeout"], from_flat["owner"]) == ("s3", 60, "alice")
    assert from_flat["profiles_dir"] == "profiles" and from_flat["fetch"] is True, "group defaults applied"
    assert len(deprecations) == 7
    assert ("the workflow option exec_timeout is deprecated, and removed in 0.4.0: write it as "
            "tofu: {timeout: ...}") in deprecations


def test_groups_absent_still_give_every_default():
    params, _deprecations = spec.validate(RUN)
    assert (params["lock_backend"], params["exec_timeout"], params["stacks_dir"], params["max_ahead"]) == (
        "git", 3600, "stacks", 1)
    assert params["tofu_options"] == {} and params["lock_takeover"] is True


def test_flat_and_nested_forms_of_one_option_that_differ_are_refused():
    with pytest.raises(WorkflowError, match=r"lock_backend \('s3'\) and lock.backend \('git'\) .* differ"):
        spec.validate(dict(RUN, lock={"backend": "git"}, lock_backend="s3"))
    with pytest.raises(WorkflowError, match="not a dict"):
        spec.validate(dict(RUN, lock=["git"], lock_backend="s3"))
    params, deprecations = spec.validate(dict(RUN, lock={"backend": "s3", "bucket": "b"}, lock_backend="s3"))
    assert params["lock_backend"] == "s3" and len(deprecations) == 1


@pytest.mark.parametrize("options, message", [
    (dict(RUN, lock={"backend": "nfs"}), "value of backend must be one of: git, dynamodb, s3, got: nfs found in lock"),
    (dict(RUN, lock={"bakend": "s3"}), "lock.bakend"),
    (dict(RUN, tofu={"timeout": "soon"}), "timeout"),
    (dict(RUN, lock_backned="s3"), "lock_backned"),
    ({"stack": "alpha"}, "profile"),
])
def test_bad_options_name_the_problem(options, message):
    with pytest.raises(WorkflowError, match=message.replace(".", r"\.")):
        spec.validate(options)


def test_the_library_warns_of_each_flat_name_at_its_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = api.validate(dict(RUN, owner="webhook", lock={"backend": "git"}))
    assert params["owner"] == "webhook"
    assert [(w.category, Path(w.filename).name) for w in caught] == [(DeprecationWarning, Path(__file__).name)]
    assert "owner is deprecated" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api.validate(dict(RUN, lock={"owner": "webhook"}))


def documented_options():
    tree = ast.parse((ROOT / "plugins/modules/workflow.py").read_text())
    doc = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", None) == "DOCUMENTATION")
    return yaml.safe_load(doc)["options"]


def test_documentation_is_the_spec():
    """validate-modules cannot read an action plugin's spec: this compares them."""
    documented = documented_options()

    def compare(specs, docs, where):
        assert set(specs) == set(docs), where
        for name, s in specs.items():
            d = docs[name]
            for key in ("type", "elements", "choices", "required", "aliases"):
                assert s.get(key) == d.get(key), (where, name, key)
            default = s.get("default")
            if s.get("options"):
                assert d.get("default") == {}, (where, name, "a group defaults to {}")
                compare(s["options"], d["suboptions"], f"{where}{name}.")
            else:
                assert default == d.get("default"), (where, name, "default")
    compare(spec.WORKFLOW_ARGUMENT_SPEC, documented, "")


def test_every_flat_name_is_documented_as_deprecated():
    documented = documented_options()
    tree = ast.parse((ROOT / "plugins/modules/workflow.py").read_text())
    doc = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", None) == "DOCUMENTATION")
    notes = " ".join(yaml.safe_load(doc)["notes"])
    assert "0.4.0" in notes
    assert not [flat for flat in spec.FLAT_NAMES if f"C({flat})" not in notes]
    for flat, (group, name) in spec.FLAT_NAMES.items():
        description = documented[group]["suboptions"][name]["description"]
        text = description if isinstance(description, str) else " ".join(description)
        assert f"Was C({flat})" in text, flat


# -- remembered validations (the command line's memo=True) ----------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The user's cache in a directory of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "guardrail" / spec.MEMO_FILE


def no_validator(monkeypatch):
    """From here on, validating with ansible-core fails the test."""
    def refuse(_nested):
        raise AssertionError("validated again with ArgumentSpecValidator")
    monkeypatch.setattr(spec, "_validated", refuse)


@pytest.mark.parametrize("options", [
    RUN,
    dict(RUN, lock={"backend": "s3", "bucket": "locks"}, tofu={"timeout": "60"}, git={"max_ahead": 2}),
    dict(RUN, lock_backend="s3", lock_bucket="locks", exec_timeout="60", stacks_dir="tf/stacks"),
    dict(RUN, command=["/usr/bin/tofu", "apply", "-auto-approve", "-target=terraform_data.a"],
         steps=["render", "git_check", "lock", "exec", "git_push", "unlock"], repo_path="/srv/infra"),
])
def test_a_remembered_validation_is_the_validation(options, cache, monkeypatch):
    fresh = spec.validate(options)
    first = spec.validate(options, memo=True)
    assert cache.exists() and oct(cache.stat().st_mode & 0o777) == "0o600"
    assert oct(cache.parent.stat().st_mode & 0o777) == "0o700"
    no_validator(monkeypatch)
    again = spec.validate(options, memo=True)
    assert fresh == first == again


def test_other_options_are_validated_afresh(cache, monkeypatch):
    spec.validate(RUN, memo=True)
    calls = []
    real = spec._validated
    monkeypatch.setattr(spec, "_validated", lambda nested: calls.append(nested) or real(nested))
    spec.validate(RUN, memo=True)
    assert calls == []
    params = spec.validate(dict(RUN, profile="staging"), memo=True)[0]
    assert len(calls) == 1 and params["profile"] == "staging"
    with pytest.raises(WorkflowError, match="value of backend must be one of"):
        spec.validate(dict(RUN, lock={"backend": "nfs"}), memo=True)
    with pytest.raises(WorkflowError, match="value of backend must be one of"):
        spec.validate(dict(RUN, lock={"backend": "nfs"}), memo=True)
    assert len(calls) == 3, "a refusal is never remembered: it is validated (and refused) every time"


@pytest.mark.parametrize("options", [
    dict(RUN, tofu={"variables": {"db_password": "hunter2-secret"}}),
    dict(RUN, variables={"db_password": "hunter2-secret"}),
    dict(RUN, tofu={"options": {"var": "db_password=hunter2-secret"}}),
    dict(RUN, access_key="AKIAEXAMPLE", aws_secret_access_key="hunter2-secret"),
    dict(RUN, session_token="hunter2-secret"),
])
def test_options_carrying_a_secret_are_never_written(options, cache, monkeypatch):
    spec.validate(RUN, memo=True)
    before = cache.read_text()
    params = spec.validate(options, memo=True)[0]
    assert "hunter2-secret" in json.dumps(params)
    assert cache.read_text() == before
    calls = []
    real = spec._validated
    monkeypatch.setattr(spec, "_validated", lambda nested: calls.append(nested) or real(nested))
    spec.validate(options, memo=True)
    assert len(calls) == 1


@pytest.mark.parametrize("options", [
    dict(RUN, repo_path="~/infra"),
    dict(RUN, report_dir="$HOME/reports"),
    dict(RUN, tofu={"var_files": ["${VARS}/prod.tfvars"]}),
])
def test_options_read_from_the_environment_are_never_remembered(options, cache, monkeypatch):
    monkeypatch.setenv("VARS", "/srv/vars")
    params = spec.validate(options, memo=True)[0]
    assert "~" not in json.dumps(params) and "$" not in json.dumps(params), "expanded as a path"
    assert not cache.exists()
    monkeypatch.setenv("HOME", "/home/other")
    monkeypatch.setenv("VARS", "/srv/other")
    again = spec.validate(options, memo=True)[0]
    assert again != params, "a different environment gives a different path"


def test_the_command_is_given_back_as_typed_and_never_written(cache, monkeypatch):
    command = ["/usr/bin/tofu", "apply", "-auto-approve", "-var=token=abc123"]
    spec.validate(dict(RUN, command=command), memo=True)
    assert "abc123" not in cache.read_text()
    no_validator(monkeypatch)
    params = spec.validate(dict(RUN, command=command), memo=True)[0]
    assert params["command"] == command


def test_a_changed_spec_or_ansible_core_is_validated_afresh(cache, monkeypatch, tmp_path):
    spec.validate(RUN, memo=True)
    key = spec._memo_key(spec.nest(RUN)[0])
    backend = dict(spec.LOCK_SPEC["backend"], choices=["git", "etcd"])
    monkeypatch.setitem(spec.LOCK_SPEC, "backend", backend)
    assert spec._memo_key(spec.nest(RUN)[0]) != key, "the spec is part of the key"
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert spec._memo_key(spec.nest(RUN)[0]) == key
    # ansible-core upgraded in place: one of the validator's files changes.
    found = importlib.util.find_spec("ansible")
    package = Path(list(found.submodule_search_locations)[0]).resolve()
    copy = tmp_path / "ansible"
    for name in spec.VALIDATOR_FILES:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package / name, copy / name)
    moved = importlib.util.spec_from_file_location("ansible", copy / "__init__.py",
                                                   submodule_search_locations=[str(copy)])
    monkeypatch.setattr(spec.importlib.util, "find_spec", lambda name: moved)
    elsewhere = spec._memo_key(spec.nest(RUN)[0])
    assert elsewhere != key, "another ansible-core is another key"
    with open(copy / "module_utils/common/validation.py", "a", encoding="utf-8") as handle:
        handle.write("\n# upgraded\n")
    assert spec._memo_key(spec.nest(RUN)[0]) != elsewhere, "an upgraded validator is another key"
    # This collection upgraded: how validated options become the engine's parameters may differ.
    upgraded = tmp_path / "workflow_spec.py"
    shutil.copy2(spec.__file__, upgraded)
    upgraded.touch()
    before = spec._memo_key(spec.nest(RUN)[0])
    monkeypatch.setattr(spec, "__file__", str(upgraded))
    assert spec._memo_key(spec.nest(RUN)[0]) != before, "another copy of the collection is another key"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"%s": {"stack": "x"}}'])
def test_a_damaged_cache_is_validated_afresh_and_rewritten(content, cache, monkeypatch):
    cache.parent.mkdir(parents=True)
    key = spec._memo_key(spec.nest(RUN)[0])
    cache.write_text(content.replace("%s", key) if "%s" in content else content)
    params = spec.validate(RUN, memo=True)[0]
    assert params == spec.validate(RUN)[0]
    assert key in json.loads(cache.read_text())


def test_the_cache_keeps_the_newest_entries(cache, monkeypatch):
    monkeypatch.setattr(spec, "MEMO_ENTRIES", 3)
    for n in range(5):
        spec.validate(dict(RUN, stack=f"s{n}"), memo=True)
    assert len(json.loads(cache.read_text())) == 3
    no_validator(monkeypatch)
    assert spec.validate(dict(RUN, stack="s4"), memo=True)[0]["stack"] == "s4"


def test_an_unwritable_cache_only_costs_a_validation(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert spec.validate(RUN, memo=True) == spec.validate(RUN)


@pytest.mark.parametrize("options", [
    dict(RUN, git={"push_remote": "https://x-access-token:ghs_TOKEN123@git.example/org/infra.git"}),
    dict(RUN, lock={"remote": "https://ci:ghp_TOKEN123@git.example/org/locks.git"}),
    dict(RUN, endpoint_url="http://key:TOKEN123@127.0.0.1:5000"),
])
def test_a_url_with_credentials_is_never_written(options, cache):
    spec.validate(RUN, memo=True)
    params = spec.validate(options, memo=True)[0]
    assert "TOKEN123" in json.dumps(params)
    assert "TOKEN123" not in cache.read_text()


@pytest.mark.parametrize("options", [
    dict(RUN, render={"vars": {1: "x"}}),
    dict(RUN, render={"vars": {"a": (1, 2)}}),
    dict(RUN, tofu='{"variables": {"db_password": "hunter2-secret"}}'),
    dict(RUN, lock="backend=git"),
])
def test_options_json_would_not_give_back_as_they_were_are_never_remembered(options, cache):
    """The library takes any Python values: int keys (1 and "1" would share an
    entry), tuples (they come back lists), a group given as a string (the
    validator parses it; a secret in it would not be seen)."""
    spec.validate(RUN, memo=True)
    before = cache.read_text()
    assert spec.validate(options, memo=True) == spec.validate(options)
    assert cache.read_text() == before


def test_a_cache_somebody_else_could_have_written_is_validated_afresh(cache, monkeypatch):
    """Whoever could write the cache would choose the engine's parameters
    (a binary, the steps): it is read only when the user alone can write it."""
    spec.validate(RUN, memo=True)
    entries = json.loads(cache.read_text())
    for params in entries.values():
        params.update(binary="/tmp/evil", steps=["render", "exec"])
    cache.write_text(json.dumps(entries))
    cache.chmod(0o666)
    params = spec.validate(RUN, memo=True)[0]
    assert params["binary"] is None and "lock" in params["steps"]
    assert oct(cache.stat().st_mode & 0o777) == "0o600", "rewritten, private again"


def test_the_librarys_results_keep_their_defaults_and_fields():
    outcome = api.StepOutcome("render", "ok", False, 0.1)
    assert (outcome.msg, outcome.result) == ("", {})
    assert api.StepOutcome("lock", "ok", True, 0.2).result is not outcome.result
    data = {"changed": True, "failed": False, "steps": [
        {"step": "render", "status": "ok", "changed": False, "duration": 0.1, "result": {"skipped": True}}]}
    result = api.WorkflowResult.from_engine(data)
    assert result.steps[0].status == "ok" and result.steps[0].result == {"skipped": True}
    assert result.data is data and result.changed is True and result.failed_step is None
    with pytest.raises(AttributeError):
        result.changed = False
