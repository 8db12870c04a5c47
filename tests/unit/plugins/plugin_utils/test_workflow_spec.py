"""plugin_utils/workflow_spec.py: the nested argument spec of the workflow,
the flat names of 0.2 moved into their groups with a deprecation, and the
one validation the task, the library and the command line share."""
import ast
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
