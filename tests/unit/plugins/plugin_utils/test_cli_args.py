"""plugin_utils/cli.py: the command line of bin/guardrail mapped onto the
workflow engine's parameters, flags and GUARDRAIL_* variables."""
import io
import json
import os
import shutil

import pytest

from ansible_collections.guardrail.ecs.plugins.plugin_utils import cli, workflow_spec

BINARY = shutil.which("tofu") or shutil.which("terraform")


def parse(argv):
    params, _always, _memo = cli.parse(argv)
    return cli.validated(params)


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


def spec_leaves():
    for name, spec in workflow_spec.WORKFLOW_ARGUMENT_SPEC.items():
        members = spec.get("options")
        yield from ((f"{name}.{n}", s) for n, s in members.items()) if members else [(name, spec)]


def test_every_option_of_the_spec_is_a_flag_or_deliberately_not():
    actions = {a.dest: a for a in cli.parser()._actions if a.option_strings}
    leaves = dict(spec_leaves())
    assert set(cli.NOT_FLAGS) <= set(leaves) and set(cli.SPELLINGS) <= set(leaves), "a name the spec lacks"
    for path, spec in leaves.items():
        if path in cli.NOT_FLAGS:
            assert path not in actions
            continue
        action = actions[path]
        assert action.choices == spec.get("choices"), path
        kind = spec.get("type", "str")
        assert action.type is {"int": int, "str": str, "path": str}.get(kind), path
        assert action.default is None, f"{path}: the spec gives the default, not the parser"


def test_choices_come_from_the_spec(monkeypatch):
    backend = dict(workflow_spec.LOCK_SPEC["backend"], choices=["git", "etcd"])
    monkeypatch.setitem(workflow_spec.LOCK_SPEC, "backend", backend)
    action = next(a for a in cli.parser()._actions if a.dest == "lock.backend")
    assert action.choices == ["git", "etcd"]


@pytest.mark.parametrize("argv, path, value", [
    (["--repo", "/srv/infra"], "repo_path", "/srv/infra"),
    (["--owner", "alice"], "owner", "alice"),
    (["--run-id", "job-7"], "run_id", "job-7"),
    (["--lock-backend", "s3", "--lock-bucket", "b"], "lock_bucket", "b"),
    (["--lock-remote", "locks"], "lock_remote", "locks"),
    (["--lock-table", "t", "--lock-backend", "dynamodb"], "lock_table", "t"),
    (["--lock-key", "k"], "lock_key", "k"),
    (["--lock-message", "release 7"], "lock_message", "release 7"),
    (["--region", "eu-west-1"], "region", "eu-west-1"),
    (["--aws-profile", "ops"], "aws_profile", "ops"),
    (["--endpoint-url", "http://127.0.0.1:5000"], "endpoint_url", "http://127.0.0.1:5000"),
    (["--push-remote", "mirror"], "push_remote", "mirror"),
    (["--stacks-dir", "tf/stacks"], "stacks_dir", "tf/stacks"),
    (["--profiles-dir", "tf/profiles"], "profiles_dir", "tf/profiles"),
    (["--dest", "out"], "dest", "out"),
    (["--binary", "/usr/bin/terraform"], "binary", "/usr/bin/terraform"),
    (["--workspace", "blue"], "workspace", "blue"),
    (["--var", "a=1", "--var", "b=2"], "variables", {"a": "1", "b": "2"}),
    (["--var-file", "/tmp/x.tfvars"], "var_files", ["/tmp/x.tfvars"]),
    (["--timeout", "30"], "exec_timeout", 30),
    (["--no-fetch"], "fetch", False),
    (["--parallelism", "2"], "parallelism", 2),
    (["--since", "HEAD~1"], "since", "HEAD~1"),
    (["--allow", "a.b", "--allow", "c.d"], "policy_allow", ["a.b", "c.d"]),
    (["--report", "/tmp/drift"], "report_dir", "/tmp/drift"),
    (["--no-lock-takeover", "--lock-ttl", "60"], "lock_takeover", False),
    (["--git-max-ahead", "3", "--git-allow-detached"], "max_ahead", 3),
    (["--tofu-show-sensitive"], "show_sensitive", True),
])
def test_flags_of_0_2_and_new_ones_reach_the_engine(argv, path, value):
    params = parse([*argv, "render", "--", "alpha", "prod", "tofu", "plan"])
    assert params[path] == value


def test_environment_is_validated_by_the_spec_too(monkeypatch):
    monkeypatch.setenv("GUARDRAIL_LOCK_BACKEND", "nfs")
    with pytest.raises(cli.BadInput, match="value of backend must be one of: git, dynamodb, s3, got: nfs"):
        parse(["lock", "--", "alpha", "prod", "tofu", "plan"])
    monkeypatch.setenv("GUARDRAIL_LOCK_BACKEND", "s3")
    monkeypatch.setenv("GUARDRAIL_LOCK_TAKEOVER", "no")
    params = parse(["lock", "--", "alpha", "prod", "tofu", "plan"])
    assert (params["lock_backend"], params["lock_takeover"]) == ("s3", False)


def test_help_describes_each_option_from_the_module_documentation():
    text = " ".join(cli.parser(described=True).format_help().split())
    assert "--lock-backend {git,dynamodb,s3} Where the run lock lives" in text
    assert "--timeout TIMEOUT Seconds each command the exec step runs may take" in text
    assert "--owner OWNER Who holds the lock [GUARDRAIL_OWNER]" in text
    assert "[GUARDRAIL_TIMEOUT]" in text and "(default: 3600)" in text


@pytest.mark.parametrize("argv", [["--help"], ["--owner", "x", "-h"], ["lock", "--help", "--", "a", "p", "tofu"]])
def test_help_anywhere_before_the_separator_is_the_described_help(argv, capsys):
    assert cli.main(argv) == cli.EXIT_OK
    assert "Where the run lock lives" in capsys.readouterr().out


def test_human_output_says_a_takeover_and_a_released_state_lock_in_one_line_each():
    out = io.StringIO()
    cli.human({"steps": [], "taken_over": "took over the lock of ended run r1",
               "state_lock_released": "released tofu's state lock (ID 1) with tofu force-unlock"}, out)
    assert out.getvalue().splitlines() == ["lock: took over the lock of ended run r1",
                                           "state lock: released tofu's state lock (ID 1) with tofu force-unlock"]


# -- remembered command lines: a remembered parse gives what a fresh one gives --

TAIL = ["--", "alpha", "prod", "sh", "-c", "true"]


@pytest.fixture
def parsed_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "guardrail" / cli.PARSED_FILE


def parse_and_remember(argv):
    options, flags, memo = cli.parse(argv)
    cli.validated(options)
    cli.remember_words(memo, options)
    return options, flags


def test_words_parsed_once_are_answered_from_the_cache_as_parsed(parsed_cache, monkeypatch):
    argv = ["--owner", "alice", "--no-fetch", "render", "git-check"] + TAIL
    first = parse_and_remember(argv)
    assert parsed_cache.is_file()
    monkeypatch.setattr(cli, "parser", lambda described=False: pytest.fail("parsed again"))
    assert cli.parse(argv)[:2] == first


@pytest.mark.parametrize("variable", ["GUARDRAIL_REPO", "GUARDRAIL_DEST"])
def test_a_variable_holding_tilde_is_never_remembered(parsed_cache, monkeypatch, variable):
    """Its value depends on HOME, which the key does not hold."""
    monkeypatch.setenv(variable, "~/infra")
    monkeypatch.setenv("HOME", "/home/alice")
    parse_and_remember(["render"] + TAIL)
    assert not parsed_cache.exists()


def test_a_cache_entry_of_another_shape_is_parsed_afresh(parsed_cache):
    argv = ["render"] + TAIL
    key = cli.words_key(argv[:argv.index("--")])
    parsed_cache.parent.mkdir(parents=True)
    for options in ({"steps": ["render"], "tofu": "x"}, {"steps": ["render"], "nonsense": 1}):
        parsed_cache.write_text(json.dumps({key: {"options": options,
                                                  "flags": {"always_render": False, "yes": False}}}))
        os.chmod(parsed_cache, 0o600)
        options, _flags, _memo = cli.parse(argv)
        assert options["steps"] == ["render"] and "nonsense" not in options and "tofu" in options
        assert options["tofu"] == {}
