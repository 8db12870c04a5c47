"""bin/guardrail and saved plans, as a user runs them: the command in a clone
whose path has a space, a bare remote, the git lock, real terraform/tofu.
Human output is compared with golden files (tests/integration/golden/cli),
variable parts normalised; set GUARDRAIL_UPDATE_GOLDEN=1 to rewrite them."""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, git
from workflow_helpers import EXAMPLES, commit, make_stack_repo, remote_lock

GUARDRAIL = ROOT / "bin" / "guardrail"
GOLDEN = ROOT / "tests" / "integration" / "golden" / "cli"
STEPS = ("render", "git_check", "lock", "exec", "git_push", "unlock")
BINARY = shutil.which("tofu") or shutil.which("terraform")


@pytest.fixture
def tmp_path(tmp_path):
    """Every path of these tests has a space in it."""
    spaced = tmp_path / "infra repos"
    spaced.mkdir()
    return spaced


@pytest.fixture
def repo(git_repo):
    """A clone (at a path with a space) with the example stacks and a staging profile pushed."""
    clone, remote = git_repo
    make_stack_repo(clone)
    commit(clone, "profiles/staging.yml", "extends: base\nenvironment: staging\nzones: [a]\n",
           push=True)
    return clone, remote


def guardrail(clone, *cmd, steps=STEPS, options=(), profile="prod", cwd=None, env=None, timeout=300,
              yes=True, python=()):
    """Runs bin/guardrail with no terminal; `yes` approves an apply as --yes
    does; `python`: options for the interpreter."""
    assert BINARY, "neither tofu nor terraform is on PATH"
    full_env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="run-1")
    full_env.update(env or {})
    options = [*options, "--yes"] if yes else list(options)
    args = [sys.executable, *python, str(GUARDRAIL), *options, *steps, "--", "alpha", profile, *cmd]
    return subprocess.run(args, cwd=cwd or clone, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def state(clone, profile="prod"):
    """{address: attributes} from the local state file, {} when there is none."""
    path = clone / ".dist" / profile / "alpha" / "terraform.tfstate"
    if not path.exists():
        return {}
    found = {}
    try:
        data = json.loads(path.read_text())
    except ValueError:  # being written
        return {}
    for resource in data.get("resources", []):
        for instance in resource["instances"]:
            found[f"{resource['type']}.{resource['name']}"] = instance["attributes"]
    return found


def plan_id_from(proc):
    match = re.search(r"Saved plan ([0-9a-f]{16})", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return match.group(1)


def normalise(text, clone):
    # The tool's progress lines come in any order, its version and its CLI
    # configuration warnings depend on the machine.
    text = re.sub(r"There are some problems with the CLI configuration:\n(.*\n)*?╵\n\n?", "", text)
    text = "".join(line for line in text.splitlines(True)
                   if not re.match(r"^(terraform_data\.\S+: |(terraform|tofu|OpenTofu) v?\d+\.)", line, re.I))
    text = text.replace(str(clone), "<REPO>").replace(os.uname().nodename, "<HOST>")
    text = re.sub(r"\b[0-9a-f]{40}\b", "<COMMIT>", text)
    text = re.sub(r"\b[0-9a-f]{16}\b", "<PLAN_ID>", text)
    text = re.sub(r"\d+\.\d\ds$", "N.NNs", text, flags=re.M)
    text = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<ID>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<TIME>", text)
    text = re.sub(r"\b(pid|process) \d+\b", r"\1 <PID>", text)
    text = re.sub(r"\(\d+[smhd] ago\)", "(<AGE> ago)", text)
    text = re.sub(r"(terraform|tofu)\b", "<TOOL>", text, flags=re.I)
    return text


def assert_golden(name, proc, clone):
    text = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    text = normalise(text, clone)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("GUARDRAIL_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with GUARDRAIL_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def test_plan_then_apply_plan_id_applies_the_planned_value(repo):
    clone, remote = repo
    planned = guardrail(clone, "tofu", "plan", options=["--var", "release=planned"])
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert_golden("plan", planned, clone)
    plan_id = plan_id_from(planned)
    plan_dir = clone / ".dist" / "prod" / "alpha" / ".guardrail-plans"
    for path in plan_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert state(clone) == {}, "plan applied something"
    assert remote_lock(remote) is None
    # The plan is git-ignored and never pushed.
    assert git("status", "--porcelain", "--ignored=no", cwd=clone) == ""

    # Another value on the command line does not change what the saved plan applies.
    applied = guardrail(clone, "tofu", "apply", plan_id, options=["--var", "release=other"])
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert_golden("apply", applied, clone)
    assert state(clone)["terraform_data.deployment"]["triggers_replace"]["value"] == ["planned"]
    assert not list(plan_dir.glob(f"{plan_id}.*")), "the applied plan was not consumed"
    assert remote_lock(remote) is None
    refs = git("ls-remote", str(remote), cwd=clone)
    assert "guardrail-plans" not in refs and plan_id not in refs

    again = guardrail(clone, "tofu", "apply", plan_id)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "no saved plan" in again.stderr


def test_plan_from_an_older_commit_is_refused_and_nothing_applied(repo):
    clone, remote = repo
    plan_id = plan_id_from(guardrail(clone, "tofu", "plan"))
    commit(clone, "stacks/alpha/extra.tf", 'resource "terraform_data" "extra" {\n  input = 1\n}\n',
           push=True)
    refused = guardrail(clone, "tofu", "apply", plan_id)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert_golden("refused_commit", refused, clone)
    assert "was made from commit" in refused.stderr and "nothing was applied" in refused.stderr
    assert state(clone) == {}
    assert remote_lock(remote) is None


def test_plan_id_of_another_profile_is_refused(repo):
    clone, _remote = repo
    plan_id = plan_id_from(guardrail(clone, "tofu", "plan", profile="staging"))
    refused = guardrail(clone, "tofu", "apply", plan_id, profile="prod")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "made for alpha/staging, not alpha/prod" in refused.stderr
    assert state(clone) == {} and state(clone, "staging") == {}
    # And the same id does apply for its own profile.
    applied = guardrail(clone, "tofu", "apply", plan_id, profile="staging")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "terraform_data.zone_a" in state(clone, "staging")


def test_stale_plan_is_refused_by_tofu(repo):
    clone, _remote = repo
    first = plan_id_from(guardrail(clone, "tofu", "plan"))
    second = plan_id_from(guardrail(clone, "tofu", "plan"))
    assert guardrail(clone, "tofu", "apply", first).returncode == 0
    stale = guardrail(clone, "tofu", "apply", second)
    assert stale.returncode == 2, stale.stdout + stale.stderr
    assert f"plan {second} is stale" in stale.stderr


def test_lock_held_by_another_run_is_refused_with_the_holder(repo):
    clone, remote = repo
    alice = {"GUARDRAIL_OWNER": "alice@ops", "GUARDRAIL_RUN_ID": "run-alice"}
    held = guardrail(clone, "true", steps=["lock"], env=alice)
    assert held.returncode == 0, held.stdout + held.stderr
    refused = guardrail(clone, "tofu", "apply")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "alice@ops" in refused.stderr
    assert_golden("refused_lock", refused, clone)
    assert state(clone) == {}
    assert remote_lock(remote) is not None


def test_dirty_tree_refused_exit_2(repo):
    clone, remote = repo
    (clone / "stacks" / "alpha" / "outputs.tf").write_text("# edited\n")
    refused = guardrail(clone, "tofu", "apply")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert state(clone) == {} and remote_lock(remote) is None


def test_failed_apply_exit_1_keeps_the_lock(repo):
    clone, remote = repo
    commit(clone, "stacks/alpha/broken.tf",
           'resource "terraform_data" "broken" {\n  input = file("missing.txt")\n}\n', push=True)
    failed = guardrail(clone, "tofu", "apply")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "missing.txt" in failed.stderr
    assert_golden("failed", failed, clone)
    assert remote_lock(remote) is not None


def test_bad_input_exit_3_runs_nothing(repo):
    clone, remote = repo
    for args in (["render", "lock", "tofu", "apply"],  # no --
                 ["nosuchstep", "--", "alpha", "prod", "tofu", "apply"],
                 ["lock", "render", "--", "alpha", "prod", "tofu", "apply"],
                 ["render", "--", "alpha"],
                 ["--lock-backend", "nfs", "lock", "--", "alpha", "prod", "tofu", "apply"],
                 ["--lock-ttl", "a day", "lock", "--", "alpha", "prod", "tofu", "apply"],
                 ["render", "--", "../x", "prod", "tofu", "apply"]):
        proc = subprocess.run([sys.executable, str(GUARDRAIL), *args], cwd=clone, capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert "bad input" in proc.stderr, proc.stderr
    # What the argument spec refuses, whether a flag or the environment gave it.
    proc = subprocess.run([sys.executable, str(GUARDRAIL), "render", "lock", "--", "alpha", "prod", "tofu", "apply"],
                          cwd=clone, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, GUARDRAIL_LOCK_BACKEND="nfs"))
    assert proc.returncode == 3 and "value of backend must be one of: git, dynamodb, s3" in proc.stderr, proc.stderr
    assert not (clone / ".dist").exists() and remote_lock(remote) is None


def test_subcommands_pass_through_and_exec_runs_in_the_rendered_dir(repo):
    clone, _remote = repo
    assert guardrail(clone, "tofu", "apply").returncode == 0
    listed = guardrail(clone, "tofu", "state", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "terraform_data.service\n" in listed.stdout
    output = guardrail(clone, "tofu", "output", "-raw", "service_name")
    assert output.returncode == 0 and output.stdout.startswith("web-prod"), output.stdout
    fmt = guardrail(clone, "tofu", "fmt", "-check", "-list=true", steps=["render", "exec"])
    assert fmt.returncode in (0, 1), fmt.stdout + fmt.stderr
    pwd = guardrail(clone, "pwd", steps=["render", "exec"])
    assert pwd.stdout.splitlines()[0] == str(clone / ".dist" / "prod" / "alpha")
    # From another directory, the repository given by flag or environment.
    elsewhere = guardrail(clone, "tofu", "state", "list", options=["--repo", str(clone)], cwd=clone.parent)
    assert "terraform_data.service" in elsewhere.stdout, elsewhere.stderr
    by_env = guardrail(clone, "tofu", "state", "list", cwd="/", env={"GUARDRAIL_REPO": str(clone)})
    assert "terraform_data.service" in by_env.stdout, by_env.stderr


def test_no_change_apply_json_and_render_skipped(repo):
    clone, _remote = repo
    assert guardrail(clone, "tofu", "apply").returncode == 0
    proc = guardrail(clone, "tofu", "apply", options=["--json"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["changed"] is False
    assert result["counts"] == {"create": 0, "update": 0, "delete": 0, "replace": 0}
    assert [s["step"] for s in result["steps"]] == list(STEPS)
    assert result["steps"][0]["result"].get("skipped") is True
    # A rendered file edited by hand is rendered again.
    main_tf = clone / ".dist" / "prod" / "alpha" / "main.tf"
    main_tf.write_text(main_tf.read_text() + "\n# edited\n")
    again = json.loads(guardrail(clone, "tofu", "apply", options=["--json"]).stdout)
    assert not again["steps"][0]["result"].get("skipped")
    assert "# edited" not in main_tf.read_text()


@pytest.mark.parametrize("kind", ["modified", "untracked", "ignored"])
def test_a_source_not_committed_refuses_even_a_kept_render_before_the_lock(repo, kind):
    """The rendered files would be kept (the committed inputs are those of
    the last render), and a source file not committed is refused by the
    render step all the same, before any lock, whether git_check follows or
    not: modified, untracked, or ignored by git. Nothing is applied."""
    clone, remote = repo
    assert guardrail(clone, "tofu", "apply").returncode == 0
    applied = state(clone)
    name = "outputs.tf" if kind == "modified" else "local.auto.tfvars"
    if kind == "ignored":
        (clone / ".git" / "info" / "exclude").write_text("*.auto.tfvars\n")
    source = clone / "stacks" / "alpha" / name
    source.write_text((source.read_text() if source.exists() else "") + "# not committed\n")
    for steps in (STEPS, ("render", "lock", "exec", "unlock")):
        refused = guardrail(clone, "tofu", "apply", options=["--json"], steps=steps)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        result = json.loads(refused.stdout)
        assert result["steps"][0]["status"] == "failed", result["steps"][0]
        assert f"sources not committed: stacks/alpha/{name} ({kind})" in result["msg"], result["msg"]
    assert remote_lock(remote) is None
    assert state(clone) == applied


def render_refusal(clone, options=(), steps=STEPS):
    """The render step's refusal message (it must refuse), for `steps`."""
    proc = guardrail(clone, "tofu", "apply", options=["--json", *options], steps=steps)
    result = json.loads(proc.stdout)
    assert proc.returncode != 0 and result["steps"][0]["status"] == "failed", result
    return result["steps"][0]["msg"]


def make_dirty(clone, case):
    """Leaves the clone with sources not committed, as `case` names; the
    options that make the run read them."""
    exclude = clone / ".git" / "info" / "exclude"
    if case == "var file in an ignored directory":
        exclude.write_text("secrets/\n")
        (clone / "secrets").mkdir()
        (clone / "secrets" / "prod.tfvars").write_text('release = "uncommitted"\n')
        return ["--var-file", str(clone / "secrets" / "prod.tfvars")]
    if case == "var file no longer tracked":
        (clone / "vars.tfvars").write_text('release = "committed"\n')
        git("add", "vars.tfvars", cwd=clone)
        git("commit", "-q", "-m", "vars", cwd=clone)
        git("push", "-q", cwd=clone)
        assert guardrail(clone, "tofu", "apply", options=["--var-file", str(clone / "vars.tfvars")]).returncode == 0
        git("rm", "-q", "--cached", "vars.tfvars", cwd=clone)
        exclude.write_text("vars.tfvars\n")
        (clone / "vars.tfvars").write_text('release = "uncommitted"\n')
        return ["--var-file", str(clone / "vars.tfvars")]
    if case == "stacks in an ignored directory":
        exclude.write_text("local/\n")
        shutil.copytree(clone / "stacks", clone / "local" / "stacks")
        return ["--stacks-dir", "local/stacks"]
    if case == "renamed out of the stack":
        git("mv", "stacks/alpha/outputs.tf", "outputs.tf", cwd=clone)
    elif case == "renamed to a stack named alike":
        (clone / "stacks" / "alpha2").mkdir()
        git("mv", "stacks/alpha/outputs.tf", "stacks/alpha2/outputs.tf", cwd=clone)
    elif case == "moved out, intent to add":
        (clone / "stacks" / "alpha" / "outputs.tf").rename(clone / "outputs.tf")
        git("add", "-N", "outputs.tf", cwd=clone)
    elif case == "staged and modified":
        (clone / "stacks" / "alpha" / "main.tf.j2").write_text("# staged\n")
        git("add", "stacks/alpha/main.tf.j2", cwd=clone)
        (clone / "stacks" / "alpha" / "outputs.tf").write_text("# modified\n")
    return []


@pytest.mark.parametrize("case", ["var file in an ignored directory", "var file no longer tracked",
                                  "stacks in an ignored directory",
                                  "renamed out of the stack", "renamed to a stack named alike",
                                  "moved out, intent to add", "staged and modified"])
def test_render_refuses_the_same_sources_whether_or_not_git_check_shares_its_status(repo, case):
    """With git_check before the lock, render judges the one status of the
    work tree that git_check reads too; without it, render asks git for its
    sources alone. Both refuse the same files, in the same words, whether
    the render would be kept or made anew, and nothing is applied."""
    clone, remote = repo
    assert guardrail(clone, "tofu", "apply").returncode == 0
    options = make_dirty(clone, case)
    applied = state(clone)
    alone = render_refusal(clone, options, steps=("render", "lock", "exec", "unlock"))
    shared = render_refusal(clone, options)
    assert shared == alone and "sources not committed: " in shared, (shared, alone)
    assert remote_lock(remote) is None and state(clone) == applied


def test_outside_git_the_render_says_so_with_every_step(tmp_path):
    plain = tmp_path / "plain"
    for part in ("stacks", "profiles"):
        shutil.copytree(EXAMPLES / part, plain / part)
    for steps in (STEPS, ("render", "git_check", "exec")):
        assert "is not a git work tree: only committed sources are rendered" in render_refusal(plain, steps=steps)


def imported(stderr):
    """The modules a run imported, from `python -X importtime`."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_options_validated_once_are_not_validated_again_and_ansible_is_not_imported(repo, tmp_path):
    """A no-change apply with the options of an earlier run imports no part
    of ansible-core: the render is kept and the validation remembered. Other
    options, and bad ones, are validated (and refused) as ever."""
    clone, remote = repo
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = guardrail(clone, "tofu", "apply", env=env, python=["-X", "importtime"])
    assert first.returncode == 0, first.stderr
    assert "ansible.module_utils.common.arg_spec" in imported(first.stderr)
    again = guardrail(clone, "tofu", "apply", options=["--json"], env=env, python=["-X", "importtime"])
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["changed"] is False and result["steps"][0]["result"].get("skipped") is True
    assert not {m for m in imported(again.stderr) if m == "ansible" or m.startswith("ansible.")}
    other = guardrail(clone, "tofu", "apply", options=["--lock-ttl", "600"], env=env, python=["-X", "importtime"])
    assert other.returncode == 0, other.stderr
    assert "ansible.module_utils.common.arg_spec" in imported(other.stderr)
    for _attempt in range(2):
        bad = guardrail(clone, "tofu", "apply", env=dict(env, GUARDRAIL_LOCK_BACKEND="nfs"))
        assert bad.returncode == 3 and "value of backend must be one of: git, dynamodb, s3" in bad.stderr, bad.stderr
    assert remote_lock(remote) is None


def test_a_command_line_typed_again_is_not_parsed_again(repo, tmp_path):
    """The words before `--` of a command line whose options validated are
    remembered: typed again in the same directory, with the same GUARDRAIL_
    variables, they are not parsed again (argparse is not even imported) and
    mean what they meant. The same words elsewhere (a relative path), under
    another variable, or carrying a secret, are parsed afresh; a secret is
    never written."""
    clone, remote = repo
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    words = ["--json", "--repo", "."]

    def run(cwd=clone, more=(), extra=None):
        proc = guardrail(clone, "tofu", "apply", options=[*words, *more], cwd=cwd, env=dict(env, **(extra or {})),
                         python=["-X", "importtime"])
        return proc, "argparse" in imported(proc.stderr)

    first, parsed = run()
    assert first.returncode == 0 and parsed, first.stderr
    again, parsed = run()
    assert again.returncode == 0 and not parsed, again.stderr
    assert json.loads(again.stdout)["dest"] == str(clone / ".dist" / "prod" / "alpha")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved, parsed = run(cwd=elsewhere)
    assert parsed and moved.returncode != 0 and str(elsewhere) in moved.stdout, moved.stdout + moved.stderr
    for extra in ({"GUARDRAIL_LOCK_TTL": "600"}, {"GUARDRAIL_OWNER": "someone-else"}):
        other, parsed = run(extra=extra)
        assert parsed, (extra, other.stderr)
    for _attempt in range(2):
        secret, parsed = run(more=["--var", "token=s3cr3t-value"])
        assert secret.returncode == 0 and parsed, secret.stderr
    cache = tmp_path / "cache" / "guardrail"
    assert {"parsed-command-lines.json", "validated-options.json"} <= {p.name for p in cache.iterdir()}
    assert not [p for p in cache.iterdir() if "s3cr3t" in p.read_text()]
    assert remote_lock(remote) is None


def test_ctrl_c_sends_sigint_to_tofu_and_state_is_written(repo):
    clone, remote = repo
    commit(clone, "stacks/alpha/slow.tf", 'resource "terraform_data" "slow" {\n  input = "x"\n'
           '  provisioner "local-exec" {\n    command = "sleep 30"\n  }\n}\n', push=True)
    env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="run-1")
    # As a terminal does: the whole foreground process group gets SIGINT.
    proc = subprocess.Popen([sys.executable, str(GUARDRAIL), *STEPS, "--", "alpha", "prod", "tofu",
                             "apply", "-auto-approve"], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    # tofu's progress is shown while it runs, not when it ends.
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while not any("terraform_data.slow: Creating" in line for line in seen):
        assert time.monotonic() < deadline and proc.poll() is None, (seen, proc.stderr.read())
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    out, err = "".join(seen), proc.stderr.read()
    assert proc.returncode == 1, out + err
    assert "interrupted by SIGINT" in err, err
    # tofu wrote its state: every resource created before the interrupt is in it.
    assert {"terraform_data.service", "terraform_data.zone_a"} <= set(state(clone))
    assert remote_lock(remote) is not None, "the interrupted run's lock was released"


def test_installed_collection_runs_its_own_copy(repo, tmp_path):
    """Built and installed, bin/guardrail runs as an executable (its shebang,
    python3 on PATH) and imports the installed collection, not a checkout."""
    clone, _remote = repo
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")
    build = subprocess.run([galaxy, "collection", "build", str(ROOT), "--output-path", str(tmp_path)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(tmp_path.glob("guardrail-ecs-*.tar.gz"))
    install = subprocess.run([galaxy, "collection", "install", "--offline", "--no-deps", "--force",
                              "-p", str(tmp_path / "installed"), str(tarball)],
                             capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    home = tmp_path / "installed" / "ansible_collections" / "guardrail" / "ecs"
    command = home / "bin" / "guardrail"
    assert os.access(command, os.X_OK)
    with open(home / "plugins" / "plugin_utils" / "cli.py", "a", encoding="utf-8") as handle:
        handle.write('\nEPILOG += "(the installed copy)\\n"\n')
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               GUARDRAIL_OWNER="tester")
    env.pop("PYTHONPATH", None)
    shown = subprocess.run([str(command), "--help"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert "(the installed copy)" in shown.stdout, shown.stdout + shown.stderr
    applied = subprocess.run([str(command), *STEPS, "--", "alpha", "prod", "tofu", "apply", "-auto-approve"], cwd=clone,
                             env=env, capture_output=True, text=True, timeout=300, check=False)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "terraform_data.service" in state(clone)


def test_output_only_change_is_applied_and_reported_changed(repo):
    """A change to an output block alone changes no resource: the one-invocation
    apply must still apply it and report it."""
    clone, remote = repo
    assert guardrail(clone, "tofu", "apply").returncode == 0
    commit(clone, "stacks/alpha/extra_output.tf", 'output "extra" {\n  value = "one"\n}\n', push=False)
    added = guardrail(clone, "tofu", "apply", options=["--json"])
    assert added.returncode == 0, added.stdout + added.stderr
    result = json.loads(added.stdout)
    assert exec_changed(result) is True, result
    assert result["outputs"]["extra"] == "one"
    assert git("rev-parse", "main", cwd=remote) == git("rev-parse", "HEAD", cwd=clone)
    applied = json.loads((clone / ".dist" / "prod" / "alpha" / "terraform.tfstate").read_text())
    assert applied["outputs"]["extra"]["value"] == "one"

    commit(clone, "stacks/alpha/extra_output.tf", 'output "extra" {\n  value = "two"\n}\n', push=False)
    updated = json.loads(guardrail(clone, "tofu", "apply", options=["--json"]).stdout)
    assert exec_changed(updated) is True and updated["outputs"]["extra"] == "two", updated

    git("rm", "-q", "stacks/alpha/extra_output.tf", cwd=clone)
    git("commit", "-q", "-m", "no extra output", cwd=clone)
    removed = json.loads(guardrail(clone, "tofu", "apply", options=["--json"]).stdout)
    assert exec_changed(removed) is True and "extra" not in removed["outputs"], removed

    same = json.loads(guardrail(clone, "tofu", "apply", options=["--json"]).stdout)
    assert same["changed"] is False and exec_changed(same) is False, same


def exec_changed(result):
    """The exec step's own `changed` (a render that wrote files changes the run too)."""
    return next(s for s in result["steps"] if s["step"] == "exec")["changed"]


def test_output_closed_early_does_not_cut_the_run_short(repo):
    """`guardrail ... | head -1`: the reader goes away while tofu still
    prints; the apply runs to its end, the lock is released, no traceback."""
    clone, remote = repo
    env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="run-1")
    proc = subprocess.Popen([sys.executable, str(GUARDRAIL), "--yes", *STEPS, "--", "alpha", "prod", "tofu", "apply"],
                            cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert "terraform_data.deployment" in state(clone)
    assert remote_lock(remote) is None


DESIGN_ALIAS = ("build", "git-check", "lock", "exec", "git-push", "unlock-any")


def test_the_design_alias_verbatim_plans_and_applies(repo):
    """`guardrail build git-check lock exec git-push unlock-any -- alpha prod tofu plan`,
    as the design writes it, then the same steps applying."""
    clone, remote = repo
    before = git("rev-parse", "refs/heads/main", cwd=remote)
    commit(clone, "stacks/alpha/note.tf", "# a change to push\n")
    planned = guardrail(clone, "tofu", "plan", steps=DESIGN_ALIAS)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert re.search(r"^render +ok", planned.stdout, re.M) and re.search(r"^unlock_any +ok", planned.stdout, re.M)
    plan_id_from(planned)
    assert state(clone) == {} and remote_lock(remote) is None
    assert git("rev-parse", "refs/heads/main", cwd=remote) == before, "a plan pushed"

    applied = guardrail(clone, "tofu", "apply", steps=DESIGN_ALIAS)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "terraform_data.service" in state(clone)
    assert git("rev-parse", "refs/heads/main", cwd=remote) == git("rev-parse", "HEAD", cwd=clone)
    assert remote_lock(remote) is None


def test_unlock_any_releases_this_owners_lock_of_any_run_and_no_one_elses(repo):
    clone, remote = repo
    held = guardrail(clone, "true", steps=["lock"], env={"GUARDRAIL_RUN_ID": "forgotten-run"})
    assert held.returncode == 0, held.stdout + held.stderr
    other = guardrail(clone, "true", steps=["unlock-any"], env={"GUARDRAIL_OWNER": "mallory"})
    assert other.returncode == 2, other.stdout + other.stderr
    assert "held by tester" in other.stderr and "owner=tester" in other.stderr
    assert remote_lock(remote) is not None
    # Same owner, another run id (the default run-1): released.
    released = guardrail(clone, "true", steps=["unlock_any"])
    assert released.returncode == 0, released.stdout + released.stderr
    assert remote_lock(remote) is None


def on_terminal(clone, answer, *cmd, timeout=300):
    """Runs bin/guardrail with its input and output on a pseudo-terminal, as a
    person does, answering `answer` to the question. Returns (rc, output)."""
    import pty  # pylint: disable=import-outside-toplevel
    import select  # pylint: disable=import-outside-toplevel

    master, slave = pty.openpty()
    env = dict(os.environ, GUARDRAIL_OWNER="tester", GUARDRAIL_RUN_ID="run-1")
    proc = subprocess.Popen([sys.executable, str(GUARDRAIL), *STEPS, "--", "alpha", "prod", *cmd], cwd=clone,
                            env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not answered and b"Enter a value:" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        os.close(master)
    return rc, seen.decode(errors="replace").replace("\r\n", "\n")


def test_apply_without_a_saved_plan_and_no_terminal_is_refused_unless_approved(repo):
    clone, remote = repo
    refused = guardrail(clone, "tofu", "apply", yes=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "no terminal to ask on" in refused.stderr and "-auto-approve" in refused.stderr
    assert state(clone) == {} and remote_lock(remote) is None
    assert not (clone / ".dist").exists(), "something ran before the refusal"
    approved = guardrail(clone, "tofu", "apply", "-auto-approve", yes=False)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "terraform_data.service" in state(clone)


@pytest.mark.parametrize("approval", ["-auto-approve", "--yes"])
def test_an_apply_passed_through_with_extra_flags_runs_approved_as_typed(repo, approval):
    """`tofu apply -auto-approve -parallelism=2` is no engine command: it runs
    as typed, its -auto-approve kept (tofu's question has nobody to answer it);
    --yes gives it one. Without either it is refused before anything runs."""
    clone, remote = repo
    refused = guardrail(clone, "tofu", "apply", "-parallelism=2", yes=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "approval question has nobody to answer it" in refused.stderr and "nothing was run" in refused.stderr
    assert state(clone) == {} and remote_lock(remote) is None
    assert not (clone / ".dist").exists(), "something ran before the refusal"

    typed = ("-auto-approve",) if approval == "-auto-approve" else ()
    applied = guardrail(clone, "tofu", "apply", *typed, "-parallelism=2", options=["--json", "--var", "release=typed"],
                        yes=approval == "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    exec_step = next(s for s in json.loads(applied.stdout)["steps"] if s["step"] == "exec")
    assert exec_step["result"]["cmd"][1:] == ["apply", "-auto-approve", "-parallelism=2"]
    assert "terraform_data.service" in state(clone)
    # The run's variables reach it as they reach the workflow's own apply.
    assert state(clone)["terraform_data.deployment"]["triggers_replace"]["value"] == ["typed"], state(clone)
    assert remote_lock(remote) is None

    destroyed = guardrail(clone, "tofu", "destroy", *typed, "-parallelism=2", yes=approval == "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert state(clone) == {}


@pytest.mark.parametrize("cmd", [("-target", "terraform_data.service"), ("-var", "release=two"),
                                 ("-auto-approve", "-auto-approve=false")],
                         ids=["target-value", "var-value", "auto-approve-false"])
def test_an_apply_passed_through_that_tofu_would_ask_about_is_refused_before_anything_runs(repo, cmd):
    """`tofu apply -target ADDR` (an option's value in the next argument, no
    plan file) or a last -auto-approve=false leaves tofu's question unanswered:
    refused before anything runs, not failed at the question with the run
    lock kept."""
    clone, remote = repo
    refused = guardrail(clone, "tofu", "apply", *cmd, yes=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "approval question has nobody to answer it" in refused.stderr and "nothing was run" in refused.stderr
    assert remote_lock(remote) is None, "the run lock was taken and kept"
    assert not (clone / ".dist").exists(), "something ran before the refusal"
    if cmd[0] != "-auto-approve":
        applied = guardrail(clone, "tofu", "apply", *cmd)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "terraform_data.service" in state(clone) and remote_lock(remote) is None


def test_an_apply_passed_through_after_a_global_option_is_an_apply(repo):
    """`tofu -chdir=. apply` applies as `tofu apply` does: approved by --yes,
    its commit pushed with its applied marker; `tofu --version` (no command)
    runs without an init of the rendered directory."""
    clone, remote = repo
    refused = guardrail(clone, "tofu", "-chdir=.", "apply", "-parallelism=2", yes=False)
    assert refused.returncode == 3 and "nothing was run" in refused.stderr, refused.stdout + refused.stderr
    applied = guardrail(clone, "tofu", "-chdir=.", "apply", "-parallelism=2", options=["--json"])
    assert applied.returncode == 0, applied.stdout + applied.stderr
    steps = {s["step"]: s for s in json.loads(applied.stdout)["steps"]}
    assert steps["exec"]["result"]["cmd"][1:] == ["-chdir=.", "apply", "-auto-approve", "-parallelism=2"]
    assert "terraform_data.service" in state(clone)
    refs = git("ls-remote", str(remote), "refs/guardrail/applied/*", cwd=clone)
    assert "refs/guardrail/applied/alpha/prod" in refs, steps["git_push"]

    shutil.rmtree(clone / ".dist")
    version = guardrail(clone, "tofu", "--version", steps=("render", "exec"))
    assert version.returncode == 0, version.stdout + version.stderr
    assert not (clone / ".dist" / "prod" / "alpha" / ".terraform").exists(), "initialised for --version"


def test_apply_on_a_terminal_shows_the_plan_and_applies_only_on_yes(repo):
    clone, remote = repo
    rc, seen = on_terminal(clone, "no", "tofu", "apply")
    assert rc == 1, seen
    assert "# terraform_data.service will be created" in seen, seen
    assert "Plan: 5 to create" in seen and "Cancelled: nothing was applied" in seen, seen
    assert state(clone) == {} and remote_lock(remote) is None

    rc, seen = on_terminal(clone, "yes", "tofu", "apply")
    assert rc == 0, seen
    assert "terraform_data.service" in state(clone)
    assert remote_lock(remote) is None


def test_plan_shows_tofus_own_plan_then_the_summary(repo):
    clone, _remote = repo
    planned = guardrail(clone, "tofu", "plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    out = planned.stdout
    assert "# terraform_data.service will be created" in out, out
    assert out.index("will be created") < out.index("  create   terraform_data.service") < out.index("Saved plan")


@pytest.mark.parametrize("backend", [["--lock-backend", "dynamodb", "--lock-table", "locks"],
                                     ["--lock-backend", "s3", "--lock-bucket", "locks"]])
def test_aws_lock_without_botocore_is_a_clear_refusal_not_a_traceback(repo, tmp_path, backend):
    """GUARDRAIL_PYTHON names a Python with ansible-core (which validates the
    options) but without boto3/botocore: a fresh venv that sees only the
    `ansible` package. Without ansible-core at all the refusal names that."""
    import ansible

    clone, _remote = repo
    bare = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    env = dict(os.environ, GUARDRAIL_PYTHON=str(bare / "bin" / "python"), GUARDRAIL_OWNER="tester")
    argv = [str(GUARDRAIL), *backend, "--region", "eu-west-1", "lock", "exec", "unlock", "--", "alpha", "prod", "true"]
    proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "ansible-core is not installed" in proc.stderr and "GUARDRAIL_PYTHON" in proc.stderr, proc.stderr

    only_ansible = tmp_path / "only-ansible"
    only_ansible.mkdir()
    (only_ansible / "ansible").symlink_to(Path(ansible.__file__).parent)
    site = next(bare.glob("lib/python3*/site-packages"))
    (site / "only-ansible.pth").write_text(f"{only_ansible}\n")
    proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "boto3 and botocore are not installed" in proc.stderr and "GUARDRAIL_PYTHON" in proc.stderr
    assert "nothing was locked" in proc.stderr


def test_a_link_on_path_runs_the_collection_it_points_to(repo, tmp_path):
    """The documented way onto PATH: a symbolic link to bin/guardrail."""
    clone, remote = repo
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "guardrail").symlink_to(GUARDRAIL)
    env = dict(os.environ, PATH=f"{bindir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
               GUARDRAIL_OWNER="tester")
    proc = subprocess.run(["guardrail", "build", "git-check", "lock", "unlock-any", "--", "alpha", "prod", "true"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^unlock_any +ok +changed=1", proc.stdout, re.M), proc.stdout
    assert remote_lock(remote) is None
