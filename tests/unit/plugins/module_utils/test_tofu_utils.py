"""module_utils/workflow/tofu.py: change counting from plan JSON, masking, the
environment and command lines a run uses (with a recording stand-in binary)."""
import json
import os
import stat
import threading

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as t


def change(address, actions, before=None, after=None, **extra):
    detail = {"actions": actions, "before": before, "after": after}
    detail.update(extra)
    return {"address": address, "change": detail}


def test_counts_are_exact_for_many_and_replacements():
    plan = {"resource_changes": (
        [change(f"terraform_data.c[{i}]", ["create"], after={"i": i}) for i in range(10)]
        + [change("terraform_data.u", ["update"], {"v": 1}, {"v": 2}),
           change("terraform_data.r1", ["delete", "create"], {"v": 1}, {"v": 2}),
           change("terraform_data.r2", ["create", "delete"], {"v": 1}, {"v": 2}),
           change("terraform_data.d", ["delete"], {"v": 1}, None),
           change("terraform_data.n", ["no-op"], {"v": 1}, {"v": 1}),
           change("data.x", ["read"], None, {})])}
    summary = t.summarize(plan)
    assert summary["counts"] == {"create": 10, "update": 1, "delete": 1, "replace": 2}
    assert summary["changed"] is True
    assert [r["address"] for r in summary["resources"] if r["action"] == "replace"] == [
        "terraform_data.r1", "terraform_data.r2"]
    assert "terraform_data.n" not in [r["address"] for r in summary["resources"]]


def test_no_op_and_read_are_not_changes():
    plan = {"resource_changes": [change("a", ["no-op"]), change("data.b", ["read"])],
            "output_changes": {"o": {"actions": ["no-op"]}}}
    summary = t.summarize(plan)
    assert summary["changed"] is False and not any(summary["counts"].values())


def test_output_change_alone_is_a_change():
    summary = t.summarize({"output_changes": {"o": {"actions": ["update"]}}})
    assert summary["changed"] and summary["outputs_changed"] == ["o"]


def test_sensitive_values_masked_in_diff():
    plan = {"resource_changes": [change(
        "terraform_data.s", ["update"], {"input": {"password": "old", "user": "u"}, "list": ["a", "b"]},
        {"input": {"password": "new", "user": "u"}, "list": ["a", "c"]},
        before_sensitive={"input": {"password": True}, "list": [False, True]},
        after_sensitive={"input": {"password": True}, "list": [False, True]})]}
    resource = t.summarize(plan)["resources"][0]
    text = json.dumps(resource)
    assert "old" not in text and "new" not in text and '"c"' not in text
    assert resource["after"]["input"]["user"] == "u" and resource["after"]["list"][0] == "a"


def test_unknown_action_refused():
    with pytest.raises(t.TofuError, match="unknown plan action"):
        t.summarize({"resource_changes": [change("a", ["forget"])]})


def test_mask_outputs():
    outputs = {"a": {"value": 1, "sensitive": False}, "b": {"value": "s3cret", "sensitive": True}}
    assert t.mask_outputs(outputs) == {"a": 1, "b": t.MASK}
    assert t.mask_outputs(outputs, show_sensitive=True) == {"a": 1, "b": "s3cret"}


def test_planned_outputs_only_when_all_known():
    plan = {"planned_values": {"outputs": {"a": {"value": 1, "sensitive": False}}},
            "output_changes": {"a": {"actions": ["create"], "after_unknown": False}}}
    assert t.planned_outputs(plan) == {"a": {"value": 1, "sensitive": False}}
    plan["planned_values"]["outputs"]["b"] = {"sensitive": False}
    assert t.planned_outputs(plan) is None


def test_env_value():
    assert t.env_value("plain") == "plain"
    assert t.env_value({"b": 1, "a": [True]}) == '{"a": [true], "b": 1}'
    assert t.env_value(3) == "3"


FAKE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items()
                          if k.startswith("TF_")}}}}) + "\\n")
if sys.argv[1] == "show":
    print(json.dumps({{"resource_changes": [], "planned_values": {{"outputs": {{}}}}}}))
"""


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    import sys
    for name in ("tofu", "terraform"):
        path = bindir / name
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("TF_VAR_stray", "from the controller")
    return bindir


def calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]


def test_tofu_preferred_and_terraform_fallback(fake_bin):
    assert t.find_binary() == str(fake_bin / "tofu")
    (fake_bin / "tofu").unlink()
    assert t.find_binary() == str(fake_bin / "terraform")
    with pytest.raises(t.TofuError, match="no nope executable"):
        t.find_binary("nope")


def test_variables_only_in_environment(fake_bin, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "extra.tfvars").write_text("")
    tofu = t.Tofu(str(project), variables={"password": "hunter2", "sizes": [1, 2]},
                  var_files=["extra.tfvars"], workspace="staging", targets=["a.b"],
                  replace=["c.d"], lock=False, lock_timeout="5s", parallelism=3,
                  backend_config={"path": "x.tfstate"})
    result = tofu.execute("apply")
    assert result["initialised"] and not result["applied"]
    log = calls(tmp_path)
    assert [c["argv"][0] for c in log] == ["init", "plan", "show"]  # the stand-in plans no change
    for call in log:
        assert "hunter2" not in " ".join(call["argv"])
        assert not any(a.startswith("-var=") for a in call["argv"])
        assert call["env"]["TF_VAR_password"] == "hunter2"
        assert call["env"]["TF_VAR_sizes"] == "[1, 2]"
        # init would record the workspace as selected on disk
        assert call["env"].get("TF_WORKSPACE") == (None if call["argv"][0] == "init" else "staging")
        assert call["env"]["TF_IN_AUTOMATION"] == "1"
        assert "TF_VAR_stray" not in call["env"]
    init, plan = log[0]["argv"], log[1]["argv"]
    assert "-backend-config=path=x.tfstate" in init and "-input=false" in init
    assert f"-var-file={project / 'extra.tfvars'}" in plan
    for flag in ("-target=a.b", "-replace=c.d", "-lock=false", "-lock-timeout=5s", "-parallelism=3",
                 "-no-color", "-input=false"):
        assert flag in plan
    assert any(a.startswith("-out=") for a in plan)
    assert (project / ".terraform").is_dir()
    tofu.execute("plan")
    assert [c["argv"][0] for c in calls(tmp_path)][3:] == ["plan", "show"]


def test_unknown_command_and_missing_paths(fake_bin, tmp_path):
    with pytest.raises(t.TofuError, match="is not a directory"):
        t.Tofu(str(tmp_path / "missing"))
    with pytest.raises(t.TofuError, match="var file"):
        t.Tofu(str(tmp_path), var_files=["nope.tfvars"])
    with pytest.raises(t.TofuError, match="unknown command 'import'"):
        t.Tofu(str(tmp_path)).execute("import")


def test_error_text_unboxed():
    text = "╷\n│ Error: Unsupported block type\n│ \n│   on main.tf line 1\n╵\n"
    assert t._error_text(text) == "Error: Unsupported block type\non main.tf line 1"


def test_unflagged_copies_of_sensitive_values_masked():
    plan = {"resource_changes": [change(
        "terraform_data.g", ["update"], {"input": "old-secret", "output": "old-secret", "id": "x"},
        {"input": "new-secret", "id": "x"}, before_sensitive={"input": True},
        after_sensitive={"input": True})]}
    text = json.dumps(t.summarize(plan)["resources"])
    assert "old-secret" not in text and "new-secret" not in text and '"x"' in text


def test_version_check_refuses_old_or_foreign_binaries_and_remembers_each_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tool = tmp_path / "tofu"

    def release(first_line):
        tool.write_text(f"#!/bin/sh\necho '{first_line}'\n")
        tool.chmod(0o755)

    release("OpenTofu v1.8.3")
    assert t.check_version(str(tool)) == ("OpenTofu", "1.8.3")
    assert (tmp_path / "cache" / "guardrail" / "tool-versions.json").exists()
    release("OpenTofu v1.5.7-beta1")  # another file (size): asked again, not remembered
    with pytest.raises(t.TofuError, match="OpenTofu 1.5.7-beta1, older than the 1.6.0"):
        t.check_version(str(tool))
    release("Terraform v1.4.0")
    with pytest.raises(t.TofuError, match="older than the 1.5.0"):
        t.check_version(str(tool))
    release("GNU Make 4.3")
    with pytest.raises(t.TofuError, match="is not OpenTofu or Terraform"):
        t.check_version(str(tool))
    with pytest.raises(t.TofuError, match="not an executable file"):
        t.check_version(str(tmp_path / "missing"))


def test_side_by_side_overlaps_waits_for_both_and_raises_mains_error_first():
    both = threading.Barrier(2, timeout=10)  # each half waits for the other: only overlap passes

    def half(value):
        both.wait()
        return value

    assert t.side_by_side(lambda: half("applied"), lambda: half("shown")) == ("applied", "shown")

    finished = threading.Event()

    def slow_show():
        finished.wait(0.2)
        finished.set()
        raise ValueError("show failed")

    def failing_apply():
        raise RuntimeError("apply failed")

    with pytest.raises(RuntimeError, match="apply failed"):
        t.side_by_side(failing_apply, slow_show)
    assert finished.is_set(), "the other half is waited for before the error is raised"

    def failing_show():
        raise ValueError("show failed")

    with pytest.raises(ValueError, match="show failed"):
        t.side_by_side(lambda: "applied", failing_show)
