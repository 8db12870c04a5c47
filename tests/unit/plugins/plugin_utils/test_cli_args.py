"""plugin_utils/cli.py: the command line of bin/guardrail mapped onto the
workflow engine's parameters, flags and GUARDRAIL_* variables."""
import shutil

import pytest

from ansible_collections.guardrail.ecs.plugins.plugin_utils import cli

BINARY = shutil.which("tofu") or shutil.which("terraform")


def parse(argv):
    params, _always = cli.parse(argv)
    return cli.defaults(params)


@pytest.mark.parametrize("cmd, command, plan_id", [
    (["tofu", "plan"], "plan", None),
    (["tofu", "apply"], "apply", None),
    (["tofu", "destroy"], "destroy", None),
    (["tofu", "apply", "0123456789abcdef"], "apply", "0123456789abcdef"),
])
def test_tofu_commands_the_engine_runs(cmd, command, plan_id):
    params = parse(["render", "exec", "--", "alpha", "prod", *cmd])
    assert (params["command"], params["plan_id"]) == (command, plan_id)
    assert params["steps"] == ["render", "exec"]
    assert (params["stack"], params["profile"]) == ("alpha", "prod")


@pytest.mark.parametrize("cmd", [["tofu", "state", "list"], ["tofu", "output", "-json"],
                                 ["tofu", "import", "terraform_data.x", "id"], ["tofu", "fmt"],
                                 ["terraform", "apply", "-target=x"]])
def test_other_tofu_command_lines_pass_through(cmd):
    assert BINARY, "neither tofu nor terraform is on PATH"
    params = parse(["exec", "--", "alpha", "prod", *cmd])
    assert params["command"] == [BINARY, *cmd[1:]]


def test_any_other_argv_runs_as_given_with_spaces_kept():
    params = parse(["exec", "--", "alpha", "prod", "sh", "-c", "echo 'a b'"])
    assert params["command"] == ["sh", "-c", "echo 'a b'"]


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("GUARDRAIL_LOCK_BACKEND", "dynamodb")
    monkeypatch.setenv("GUARDRAIL_LOCK_TABLE", "locks")
    monkeypatch.setenv("GUARDRAIL_OWNER", "from-env")
    params = parse(["--owner", "from-flag", "--repo", "/srv/my stacks", "--var", "release=a=b",
                    "--region", "eu-west-1", "lock", "--", "alpha", "prod", "tofu", "plan"])
    assert params["owner"] == "from-flag"
    assert params["lock_backend"] == "dynamodb" and params["lock_table"] == "locks"
    assert params["region"] == "eu-west-1"
    assert params["repo_path"] == "/srv/my stacks"
    assert params["variables"] == {"release": "a=b"}


@pytest.mark.parametrize("argv, message", [
    (["render", "alpha", "prod", "tofu", "plan"], "missing `--`"),
    (["render", "--", "alpha", "prod"], "STACK PROFILE CMD"),
    (["--", "alpha", "prod", "tofu", "plan"], "at least one step"),
    (["--lock-backend", "nfs", "lock", "--", "alpha", "prod", "tofu", "plan"], "--lock-backend: invalid choice: 'nfs'"),
    (["--timeout", "soon", "exec", "--", "alpha", "prod", "tofu", "plan"], "--timeout: invalid int value"),
    (["--var", "novalue", "exec", "--", "alpha", "prod", "tofu", "plan"], "NAME=VALUE"),
    (["--bogus", "exec", "--", "alpha", "prod", "tofu", "plan"], "unrecognized arguments"),
])
def test_bad_input(argv, message):
    with pytest.raises(cli.BadInput, match=message.replace("(", r"\(")):
        parse(argv)


def test_bad_input_exits_3_and_runs_nothing(capsys):
    assert cli.main(["nosuchstep", "--", "alpha", "prod", "tofu", "plan"]) == cli.EXIT_BAD_INPUT
    assert "unknown step" in capsys.readouterr().err
