"""Several stacks in one run, as a user runs them: bin/guardrail over a
repository of five stacks with a diamond dependency (net -> db, app -> web,
and solo), a bare remote, the git lock, real terraform/tofu. Order and
parallelism are read from timestamps the resources write (local-exec)."""
import json
import shutil
import time

import pytest

from conftest import git
from stacks_helpers import (
    STEPS,
    guardrail,
    intervals,
    make_repo,
    outcomes,
    overlap,
    remote_refs,
    stack_text,
    start_guardrail,
    state_value,
)
from workflow_helpers import commit, push_as_the_lock_is_taken, remote_lock

pytestmark = pytest.mark.skipif(not (shutil.which("tofu") or shutil.which("terraform")),
                                reason="SKIPPED LOUDLY: neither tofu nor terraform is on PATH")


@pytest.fixture
def repo(git_repo):
    clone, remote = git_repo
    make_repo(clone)
    return clone, remote


def test_all_runs_in_dependency_order_and_in_parallel(repo, tmp_path):
    clone, remote = repo
    log = tmp_path / "applies.log"
    proc, result = guardrail(clone, "all", "tofu", "apply", log=log, options=("--json", "--parallelism", "4"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcomes(result) == dict.fromkeys(("net", "db", "app", "web", "solo"), "changed")
    times = intervals(log)
    for before, after in (("net", "db"), ("net", "app"), ("db", "web"), ("app", "web")):
        assert times[before][1] < times[after][0], (before, after, times)
    # Independent stacks ran at the same time.
    assert overlap(times["db"], times["app"]), times
    assert overlap(times["net"], times["solo"]), times
    # The dependent's render read its dependencies' outputs from their state.
    assert state_value(clone, "web") == "web+app+net+db+net"
    assert state_value(clone, "db") == "db+net"
    # One JSON result per stack, every lock released, the applied commit recorded.
    assert all(row["counts"]["create"] == 1 and row["applied_commit"] for row in result["stacks"])
    assert remote_refs(remote, "refs/guardrail/locks") == []
    head = git("rev-parse", "HEAD", cwd=clone)
    assert remote_refs(remote, "refs/guardrail/applied") == [
        f"refs/guardrail/applied/{name}/prod" for name in ("app", "db", "net", "solo", "web")]
    assert git("rev-parse", "refs/guardrail/applied/web/prod", cwd=remote) == head


def test_parallelism_one_runs_one_stack_at_a_time_and_prints_a_table(repo, tmp_path):
    clone, _remote = repo
    log = tmp_path / "applies.log"
    proc = guardrail(clone, "all", "tofu", "apply", log=log, options=("--parallelism", "1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    times = sorted(intervals(log).values())
    assert all(a[1] < b[0] for a, b in zip(times, times[1:])), times
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STACK"))
    assert "CREATE" in lines[header] and "DURATION" in lines[header] and "OUTCOME" in lines[header]
    rows = [line.split() for line in lines[header + 1:header + 6]]
    assert [r[0] for r in rows] == ["net", "solo", "app", "db", "web"]
    assert all(r[1] == "1" and r[-1] == "changed" for r in rows), rows


def test_a_comma_list_runs_those_stacks_reading_the_others_from_state(repo, tmp_path):
    clone, _remote = repo
    log = tmp_path / "applies.log"
    proc = guardrail(clone, "app,net", "tofu", "apply", log=log)
    assert proc.returncode == 0, proc.stderr
    assert set(intervals(log)) == {"net", "app"}
    # db was never applied: web cannot render without its outputs, and says so.
    proc = guardrail(clone, "web", "tofu", "apply", log=log)
    assert proc.returncode != 0
    assert "dependency db of web has no outputs" in proc.stderr
    assert set(intervals(log)) == {"net", "app"}
    # One stack alone reads its dependency's outputs as well.
    proc = guardrail(clone, "db", "tofu", "apply", log=log)
    assert proc.returncode == 0, proc.stderr
    assert state_value(clone, "db") == "db+net"


def test_destroy_runs_in_reverse_order(repo, tmp_path):
    clone, _remote = repo
    log = tmp_path / "applies.log"
    assert guardrail(clone, "all", "tofu", "apply", log=log).returncode == 0
    states = {name: clone / ".dist" / "prod" / name / "terraform.tfstate" for name in ("net", "db", "web")}
    proc, result = guardrail(clone, "all", "tofu", "destroy", log=log, options=("--json",))
    assert proc.returncode == 0, proc.stdout
    assert result["order"].index("web") < result["order"].index("db") < result["order"].index("net")
    started = {row["stack"]: row["started"] for row in result["stacks"]}
    assert started["web"] < started["db"] < started["net"] and started["web"] < started["app"] < started["net"]
    for path in states.values():
        assert json.loads(path.read_text())["resources"] == []


def test_a_failing_middle_stack_stops_its_dependents_and_lets_the_others_finish(git_repo, tmp_path):
    clone, remote = git_repo
    make_repo(clone, fail=("db",))
    log = tmp_path / "applies.log"
    proc, result = guardrail(clone, "all", "tofu", "apply", log=log, options=("--json",))
    assert proc.returncode == 1
    assert outcomes(result) == {"net": "changed", "solo": "changed", "app": "changed", "db": "failed",
                                "web": "skipped"}
    assert set(intervals(log)) == {"net", "solo", "app", "db"}
    web = next(row for row in result["stacks"] if row["stack"] == "web")
    assert "db did not succeed" in web["msg"]
    # The failed stack keeps its lock (fix, then run again); the others are released.
    assert remote_refs(remote, "refs/guardrail/locks") == ["refs/guardrail/locks/db/prod"]
    assert remote_refs(remote, "refs/guardrail/applied") == [
        f"refs/guardrail/applied/{name}/prod" for name in ("app", "net", "solo")]


def test_a_cycle_is_refused_before_anything_runs(git_repo, tmp_path):
    clone, remote = git_repo
    make_repo(clone, stacks={"net": ["web"], "db": ["net"], "app": [], "web": ["db"], "solo": []})
    log = tmp_path / "applies.log"
    for selection in ("all", "db", "solo,web"):
        proc = guardrail(clone, selection, "tofu", "apply", log=log)
        assert proc.returncode == 3, proc.stderr
        assert "dependency cycle: db -> net -> web -> db" in proc.stderr
    assert not log.exists() and not (clone / ".dist").exists()
    assert remote_refs(remote, "refs/guardrail") == []


@pytest.mark.parametrize("layout, expected", [
    ({"net": ["vpc"]}, "stack 'net' depends on unknown stack(s) vpc"),
    ({"net": [], "all": []}, "stack directory 'all' uses a reserved name"),
])
def test_unknown_dependencies_and_reserved_names_are_refused(git_repo, tmp_path, layout, expected):
    clone, remote = git_repo
    make_repo(clone, stacks=layout)
    proc = guardrail(clone, "all", "tofu", "apply", log=tmp_path / "log")
    assert proc.returncode == 3 and expected in proc.stderr, proc.stderr
    assert remote_refs(remote, "refs/guardrail") == []


def test_unknown_stacks_in_a_list_are_refused(repo, tmp_path):
    clone, remote = repo
    proc = guardrail(clone, "net,nope", "tofu", "apply", log=tmp_path / "log")
    assert proc.returncode == 3 and "unknown stack(s) nope" in proc.stderr
    assert remote_refs(remote, "refs/guardrail") == []


def selected(clone, log, *options):
    proc, result = guardrail(clone, "affected", "tofu", "plan", log=log, options=("--json", *options))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [row["stack"] for row in result["stacks"]], result


def test_affected_follows_commits_to_a_leaf_a_root_and_a_profile(repo, tmp_path):
    clone, _remote = repo
    log = tmp_path / "applies.log"
    # Nothing applied yet: every stack is affected.
    names, result = selected(clone, log)
    assert names == ["net", "solo", "app", "db", "web"]
    assert "never applied" in result["affected"]["net"]
    # Planned before anything exists: the dependents read their mock outputs.
    assert {row["stack"]: row.get("mocked") for row in result["stacks"]}["web"] == ["app", "db"]
    assert guardrail(clone, "all", "tofu", "apply", log=log).returncode == 0
    assert selected(clone, log)[0] == []

    commit(clone, "stacks/web/main.tf.j2", stack_text() + "# leaf\n", push=True)
    names, result = selected(clone, log)
    assert names == ["web"] and "stacks/web/main.tf.j2" in result["affected"]["web"]
    assert guardrail(clone, "affected", "tofu", "apply", log=log).returncode == 0
    assert selected(clone, log)[0] == []

    commit(clone, "stacks/net/main.tf.j2", stack_text() + "# root\n", push=True)
    names, result = selected(clone, log)
    assert names == ["net", "app", "db", "web"]
    assert result["affected"]["web"] == "depends on affected db, app"
    assert guardrail(clone, "affected", "tofu", "apply", log=log).returncode == 0

    commit(clone, "profiles/base.yml", "team: infra\n", push=True)
    assert selected(clone, log)[0] == ["net", "solo", "app", "db", "web"]
    # Since a ref the user gives, whatever was applied.
    assert selected(clone, log, "--since", "HEAD")[0] == []
    assert selected(clone, log, "--since", "HEAD~1")[0] == ["net", "solo", "app", "db", "web"]
    proc = guardrail(clone, "affected", "tofu", "plan", log=log, options=("--since", "no-such-ref"))
    assert proc.returncode == 3 and "'no-such-ref' is not a commit" in proc.stderr


def test_an_empty_name_in_a_list_is_refused(repo, tmp_path):
    clone, _remote = repo
    proc = guardrail(clone, "net,", "tofu", "plan", log=tmp_path / "log")
    assert proc.returncode == 3 and "empty name" in proc.stderr


def test_plan_over_several_stacks_says_which_plans_used_outputs_that_may_change(repo, tmp_path):
    clone, _remote = repo
    log = tmp_path / "applies.log"
    assert guardrail(clone, "all", "tofu", "apply", log=log).returncode == 0
    commit(clone, "stacks/net/main.tf.j2", stack_text().replace('"{{ stack_name }}', '"{{ stack_name }}-v2'),
           push=True)
    proc, result = guardrail(clone, "all", "tofu", "plan", log=log, options=("--json",))
    assert proc.returncode == 0, proc.stdout
    rows = {row["stack"]: row for row in result["stacks"]}
    assert rows["net"]["counts"]["update"] == 1
    assert rows["db"]["stale_inputs"] == ["net"] and rows["app"]["stale_inputs"] == ["net"]
    assert "stale_inputs" not in rows["solo"] and "stale_inputs" not in rows["web"]
    # Each stack's plan is saved under its own id.
    assert len({row["plan_id"] for row in result["stacks"]}) == 5
    # A lock never outlives a plan run.
    assert remote_lock(clone.parent / "remote.git", "net") is None


def test_drift_reports_stacks_changed_behind_tofus_back_and_skips_locked_ones(repo, tmp_path):
    clone, remote = repo
    log = tmp_path / "applies.log"
    assert guardrail(clone, "all", "tofu", "apply", log=log).returncode == 0
    proc = guardrail(clone, "all", "tofu", steps=("drift",), log=log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 of 5 stack(s) drifted" in proc.stdout
    # Someone edits solo's state by hand; a colleague's run holds net's lock.
    path = clone / ".dist" / "prod" / "solo" / "terraform.tfstate"
    path.write_text(path.read_text().replace('"value": "solo"', '"value": "edited by hand"'))
    held = guardrail(clone, "net", "tofu", "apply", steps=("lock",), env={"GUARDRAIL_OWNER": "colleague"})
    assert held.returncode == 0, held.stderr
    report_dir = tmp_path / "drift report"
    proc = guardrail(clone, "all", "tofu", steps=("drift",), log=log, options=("--report", str(report_dir)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split()[2:] for line in proc.stdout.splitlines()[1:6]}
    assert rows["solo"] == ["drift", "terraform_data.step"], proc.stdout
    assert rows["net"][0] == "locked" and all(rows[n][0] == "clean" for n in ("db", "app", "web"))
    report = json.loads((report_dir / "drift.json").read_text())
    assert report["drift"] == ["solo/prod"]
    solo = next(r for r in report["stacks"] if r["stack"] == "solo")
    assert solo["resources"] == [{"address": "terraform_data.step", "action": "update"}]
    page = (report_dir / "drift.html").read_text()
    assert "<td>solo</td><td>prod</td><td>drift</td>" in page and "terraform_data.step" in page
    # Drift took no lock and changed nothing: only the colleague's lock exists.
    assert remote_refs(remote, "refs/guardrail/locks") == ["refs/guardrail/locks/net/prod"]
    assert "edited by hand" in path.read_text()


def test_drift_refuses_bad_input_before_planning(repo, tmp_path):
    clone, _remote = repo
    proc = guardrail(clone, "all", "tofu", steps=("drift",), profile="prod,../x", log=tmp_path / "log")
    assert proc.returncode == 3 and "profile" in proc.stderr
    assert not (clone / ".dist").exists()


def test_the_workflow_task_runs_several_stacks_with_dynamodb_locks(git_repo, moto, tmp_path):
    import boto3

    from workflow_helpers import workflow

    clone, remote = git_repo
    make_repo(clone, fail=("db",))
    dynamodb = boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1")
    dynamodb.create_table(TableName="locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    log = tmp_path / "applies.log"
    rc, result, err = workflow(clone, stack="all", parallelism=2, tofu={"variables": {"log": str(log)}},
                               lock={"backend": "dynamodb", "table": "locks", "owner": "tester", "run_id": "run-1"},
                               endpoint_url=moto, region="us-east-1")
    assert rc != 0 and result["failed"], err
    assert outcomes(result) == {"net": "changed", "solo": "changed", "app": "changed", "db": "failed",
                                "web": "skipped"}
    assert result["order"] == ["net", "solo", "app", "db", "web"]
    assert set(intervals(log)) == {"net", "solo", "app", "db"}
    # Each stack had its own lock; only the failed one is still held, marked failed.
    items = dynamodb.scan(TableName="locks")["Items"]
    assert [item["LockID"]["S"] for item in items] == ["guardrail/db/prod"]
    assert json.loads(items[0]["Info"]["S"])["Guardrail"]["state"] == "failed"
    assert remote_refs(remote, "refs/guardrail/locks") == []


def test_a_reserved_name_is_refused_as_a_single_stack(git_repo):
    from workflow_helpers import workflow

    clone, _remote = git_repo
    make_repo(clone)
    rc, result, _err = workflow(clone, stack="affected,net")
    assert rc != 0 and "affected selects stacks on its own" in result["msg"]


def test_the_tofu_change_playbook_reports_drift_as_a_scheduled_job_runs_it(repo, tmp_path):
    from conftest import ROOT, run_playbook, task_results

    clone, _remote = repo
    log = tmp_path / "applies.log"
    assert guardrail(clone, "all", "tofu", "apply", log=log).returncode == 0
    extra = {"repo_path": str(clone), "stack": "all", "profile": "prod", "steps": "drift",
             "variables": {"log": str(log)}, "report_dir": str(tmp_path / "report")}
    rc, out, err = run_playbook(ROOT / "playbooks" / "tofu_change.yml", extra_vars=extra, cwd=tmp_path)
    assert rc == 0, (out, err)
    path = clone / ".dist" / "prod" / "app" / "terraform.tfstate"
    path.write_text(path.read_text().replace('"value": "app+', '"value": "hand+'))
    rc, out, err = run_playbook(ROOT / "playbooks" / "tofu_change.yml", extra_vars=extra, cwd=tmp_path)
    result = dict(task_results(out))["Run the workflow"]
    # web renders from app's edited outputs, so it differs from its state as well.
    assert rc != 0 and result["failed"] and result["drift"] == ["app/prod", "web/prod"], result
    assert json.loads((tmp_path / "report" / "drift.json").read_text())["drift"] == ["app/prod", "web/prod"]


def test_the_run_lock_lookup_reads_every_selected_stacks_lock(repo):
    from conftest import run_playbook, task_results

    clone, _remote = repo
    held = guardrail(clone, "db", "tofu", "apply", steps=("lock",), env={"GUARDRAIL_OWNER": "colleague"})
    assert held.returncode == 0, held.stderr
    playbook = ("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
                "    - name: locks\n      ansible.builtin.debug:\n        msg: \"{{ lookup('guardrail.ecs.run_lock', "
                f"stack='all', profile='prod', repo_path='{clone}') }}}}\"\n"
                "    - name: some\n      ansible.builtin.debug:\n        msg: \"{{ lookup('guardrail.ecs.run_lock', "
                f"stack='web,db', profile='prod', repo_path='{clone}') | list }}}}\"\n")
    rc, out, err = run_playbook(playbook, cwd=clone.parent)
    assert rc == 0, (out, err)
    results = dict(task_results(out))
    locks = results["locks"]["msg"]
    assert sorted(locks) == ["app", "db", "net", "solo", "web"]
    assert locks["db"]["owner"] == "colleague" and locks["net"] == {}
    assert results["some"]["msg"] == ["db", "web"]


def test_a_commit_made_during_the_run_is_neither_applied_nor_pushed(git_repo, tmp_path):
    """The run renders every stack from the commit it checked: a stack that
    starts after a commit was made is refused, the stack applied before it
    keeps its lock, and nothing that was not applied is pushed."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": []}, sleep=3)
    checked = git("rev-parse", "HEAD", cwd=clone)
    log = tmp_path / "applies.log"
    proc = start_guardrail(clone, "all", "tofu", "apply", log=log, options=("--json", "--parallelism", "1"))
    deadline = time.monotonic() + 120
    while not (log.exists() and "start" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the first apply never started"
        time.sleep(0.1)
    commit(clone, "notes.txt", "made while the run applied\n", message="unreviewed")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, out + err
    rows = {row["stack"]: row for row in json.loads(out)["stacks"]}
    first = next(name for name in ("one", "two") if rows[name].get("applied_commit"))
    second = "two" if first == "one" else "one"
    assert rows[first]["applied_commit"] == checked
    assert rows[first]["outcome"] == "failed" and "checkout moved" in rows[first]["msg"], rows[first]
    assert rows[second]["outcome"] == "refused" and "checkout moved" in rows[second]["msg"], rows[second]
    assert intervals(log).keys() == {first}, "the stack started after the commit was applied"
    assert git("rev-parse", "refs/heads/main", cwd=remote) == checked, "a commit nobody applied was pushed"
    assert remote_refs(remote, "refs/guardrail/applied") == []
    # The applied stack's lock stays held; the refused one's is released.
    assert remote_lock(remote, first, profile="prod") is not None
    assert remote_lock(remote, second, profile="prod") is None


def test_a_commit_made_during_a_run_without_the_render_step_is_neither_applied_nor_pushed(git_repo, tmp_path):
    """Without the render step (the stacks rendered earlier), a stack that
    starts after a commit was made is refused at exec: the commit is not
    recorded as applied to it (its template may say otherwise) nor pushed."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": []}, sleep=3, fail=("one",))
    log = tmp_path / "applies.log"
    assert guardrail(clone, "all", "tofu", "apply", log=log, steps=("render",)).returncode == 0
    checked = git("rev-parse", "HEAD", cwd=clone)
    proc = start_guardrail(clone, "all", "tofu", "apply", log=log, options=("--json", "--parallelism", "1"),
                           steps=("git_check", "lock", "exec", "git_push", "unlock"))
    deadline = time.monotonic() + 120
    while not (log.exists() and "start" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the first apply never started"
        time.sleep(0.1)
    # Made while one applies: it changes two, whose rendered files do not have it.
    commit(clone, "stacks/two/main.tf.j2", stack_text(3).replace('"{{ stack_name }}', '"{{ stack_name }}-v2'),
           message="unreviewed")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, out + err
    rows = {row["stack"]: row for row in json.loads(out)["stacks"]}
    assert rows["one"]["outcome"] == "failed", rows["one"]
    assert rows["two"]["outcome"] == "refused" and "checkout moved" in rows["two"]["msg"], rows["two"]
    assert "applied_commit" not in rows["two"], rows["two"]
    assert intervals(log).keys() == {"one"}, "a stack started after the commit was applied"
    assert git("rev-parse", "refs/heads/main", cwd=remote) == checked, "a commit nobody applied was pushed"
    assert remote_refs(remote, "refs/guardrail/applied") == []
    # one's failed apply keeps its lock; two, refused before anything ran, is released.
    assert remote_lock(remote, "one", profile="prod") is not None
    assert remote_lock(remote, "two", profile="prod") is None


@pytest.mark.parametrize("detached", [False, True], ids=["branch", "detached"])
def test_a_run_that_changed_nothing_pushes_no_applied_marker(git_repo, tmp_path, detached):
    """The markers already point at the commit applied: a second run sends
    none of them again, on a branch as on a detached checkout (an AWX job)."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": ["one"]}, sleep=0)
    if detached:
        git("checkout", "-q", "--detach", "origin/main", cwd=clone)
    log = tmp_path / "applies.log"
    assert guardrail(clone, "all", "tofu", "apply", log=log).returncode == 0
    trace = tmp_path / "git.trace"
    proc, result = guardrail(clone, "all", "tofu", "apply", log=log, options=("--json",),
                             env={"GIT_TRACE": str(trace)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head = git("rev-parse", "HEAD", cwd=clone)
    assert [row["applied_marker"]["commit"] for row in result["stacks"]] == [head, head]
    pushes = [line for line in trace.read_text().splitlines()
              if "built-in: git push" in line and "refs/guardrail/applied" in line]
    assert pushes == []
    assert git("rev-parse", "refs/guardrail/applied/two/prod", cwd=remote) == head


# A resource of stack one whose creation pushes a commit from another clone:
# someone's push lands while the apply runs, after every check before it.
RACE = ('resource "terraform_data" "race" {\n  provisioner "local-exec" {\n'
        '    command = "cd OTHER && git commit -q --allow-empty -m theirs && git push -q"\n  }\n}\n')


def lost_push_messages(proc, result, selection):
    """The failure message of each stack (one stack's run has one)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if "," not in selection:
        assert result["failed_step"] == "git_push", result["msg"]
        return [result["msg"]]
    assert {row.get("failed_step") for row in result["stacks"]} == {"git_push"}, result["msg"]
    return [row["msg"] for row in result["stacks"]]


@pytest.mark.parametrize("selection", ["one", "one,two"], ids=["one stack", "several"])
@pytest.mark.parametrize("checkout", ["branch", "detached"])
def test_a_push_landing_while_the_stacks_apply_says_how_to_catch_up(git_repo, tmp_path, checkout, selection):
    """The push is refused and the locks stay held. On a branch the advice is
    to pull; a detached checkout (an AWX job) has nothing to pull into: it is
    synced again. Following the advice, the same owner's next run finishes.
    One stack and several give the same advice."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": []}, sleep=0)
    other = tmp_path / "other"
    commit(clone, "stacks/one/race.tf", RACE.replace("OTHER", str(other)), push=True)
    git("clone", "-q", str(remote), str(other), cwd=tmp_path)
    git("config", "user.name", "Other", cwd=other)
    git("config", "user.email", "other@example.invalid", cwd=other)
    if checkout == "detached":
        git("checkout", "-q", "--detach", "origin/main", cwd=clone)
    applied = git("rev-parse", "HEAD", cwd=clone)
    log = tmp_path / "applies.log"
    proc, result = guardrail(clone, selection, "tofu", "apply", log=log, options=("--json",))
    for msg in lost_push_messages(proc, result, selection):
        assert f"Commit {applied} was applied" in msg, msg
        if checkout == "branch":
            assert "someone pushed to origin/main meanwhile" in msg and "What to do: pull" in msg, msg
        else:
            assert "origin/main moved on from it" in msg and "What to do: sync the checkout again" in msg, msg
    assert remote_lock(remote, "one") is not None
    assert remote_refs(remote, "refs/guardrail/applied") == []

    if checkout == "branch":
        git("pull", "-q", "--rebase", cwd=clone)
    else:
        git("fetch", "-q", cwd=clone)
        git("checkout", "-q", "--detach", "origin/main", cwd=clone)
    proc, result = guardrail(clone, selection, "tofu", "apply", log=log, options=("--json",))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head = git("rev-parse", "HEAD", cwd=clone)
    assert head != applied and git("rev-parse", "refs/heads/main", cwd=remote) == head
    assert git("rev-parse", "refs/guardrail/applied/one/prod", cwd=remote) == head
    assert remote_refs(remote, "refs/guardrail/locks") == []


@pytest.mark.parametrize("selection", ["one", "one,two"], ids=["one stack", "several"])
@pytest.mark.parametrize("checkout", ["branch without upstream", "detached"])
def test_a_commit_with_no_branch_to_push_to_says_how_to_push_it(git_repo, tmp_path, checkout, selection):
    """A branch without upstream (git_check not among the steps) or a commit
    no remote branch holds (allow_detached) has nothing to pull from: the
    advice is to push the commit to a branch. Done so, the same owner's
    next run finishes."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": []}, sleep=0)
    steps, options = ("render", "git_check", "lock", "exec", "git_push", "unlock"), ("--json",)
    if checkout == "detached":
        commit(clone, "notes.txt", "not pushed\n")
        git("checkout", "-q", "--detach", cwd=clone)
        options += ("--git-allow-detached",)
    else:
        git("checkout", "-q", "-b", "feature", cwd=clone)
        commit(clone, "notes.txt", "not pushed\n")
        steps = tuple(s for s in steps if s != "git_check")
    applied = git("rev-parse", "HEAD", cwd=clone)
    log = tmp_path / "applies.log"
    proc, result = guardrail(clone, selection, "tofu", "apply", log=log, options=options, steps=steps)
    for msg in lost_push_messages(proc, result, selection):
        assert f"Commit {applied} was applied" in msg and "nothing to pull from" in msg, msg
        if checkout == "detached":
            assert f"What to do: push it to a branch with 'git push origin {applied}:refs/heads/<branch>'" in msg, msg
        else:
            assert "What to do: push the branch once with 'git push -u origin feature'" in msg, msg
    assert remote_lock(remote, "one") is not None

    if checkout == "detached":
        git("push", "-q", "origin", f"{applied}:refs/heads/release", cwd=clone)
    else:
        git("push", "-q", "-u", "origin", "feature", cwd=clone)
    proc, result = guardrail(clone, selection, "tofu", "apply", log=log, options=options, steps=steps)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert git("rev-parse", "refs/guardrail/applied/one/prod", cwd=remote) == applied
    assert remote_refs(remote, "refs/guardrail/locks") == []


@pytest.mark.parametrize("selection", ["one", "one,two"], ids=["one stack", "several"])
def test_a_push_the_remote_refuses_says_to_fix_what_git_reported(git_repo, tmp_path, selection):
    """A push the remote's own hook refuses is no reason to pull: the advice
    points at git's message."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": []}, sleep=0)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nif grep -q ' refs/heads/main$'; then echo 'main is frozen' >&2; exit 1; fi\n")
    hook.chmod(0o755)
    commit(clone, "notes.txt", "not pushed\n")
    applied = git("rev-parse", "HEAD", cwd=clone)
    proc, result = guardrail(clone, selection, "tofu", "apply", log=tmp_path / "applies.log", options=("--json",))
    for msg in lost_push_messages(proc, result, selection):
        assert "main is frozen" in msg and f"Commit {applied} was applied" in msg, msg
        assert "What to do: fix what git reported, then run again as the same owner" in msg, msg
    assert remote_lock(remote, "one") is not None


# Run by git in the clone when the `affected` selection fetches the applied
# markers: a commit changing stack two lands after the run chose its stacks
# from HEAD, before git_check reads HEAD.
LANDS_AFTER_THE_SELECTION = """\
#!/bin/sh
[ "$1" = committed ] || exit 0
grep -q refs/guardrail/applied/ || exit 0
rm -f "$0"
echo '# two' >> stacks/two/main.tf.j2
git add stacks/two/main.tf.j2 && git commit -q -m 'lands after the selection'
"""


@pytest.mark.parametrize("steps", [STEPS, tuple(s for s in STEPS if s != "git_check")],
                         ids=["git_check", "no git_check"])
def test_a_commit_landing_after_the_affected_selection_is_refused(git_repo, tmp_path, steps):
    """The stacks `affected` chose are those of the commit the run then
    applies: a commit landing in between (it changes a stack not chosen) is
    refused at git_check, or at render without it; nothing is applied or
    pushed and no lock is left."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": []}, sleep=0)
    log = tmp_path / "applies.log"
    assert guardrail(clone, "all", "tofu", "apply", log=log).returncode == 0
    first = git("rev-parse", "HEAD", cwd=clone)
    commit(clone, "stacks/one/main.tf.j2", stack_text(0) + "# one\n", push=True)
    selected = git("rev-parse", "HEAD", cwd=clone)
    # The selection fetches the markers again, which runs the hook.
    for name in ("one", "two"):
        git("update-ref", "-d", f"refs/guardrail/applied/{name}/prod", cwd=clone)
    hook = clone / ".git" / "hooks" / "reference-transaction"
    hook.write_text(LANDS_AFTER_THE_SELECTION)
    hook.chmod(0o755)
    proc, result = guardrail(clone, "affected", "tofu", "apply", log=log, options=("--json",), steps=steps)
    landed = git("rev-parse", "HEAD", cwd=clone)
    assert landed != selected, "the hook did not fire: the race was not staged"
    assert proc.returncode != 0, result["msg"]
    assert list(result["affected"]) == ["one"]
    one = result["stacks"][0]
    assert one["outcome"] == "refused" and one["failed_step"] == ("git_check" if "git_check" in steps else "render")
    assert f"the checkout moved from {selected}" in one["msg"] and landed in one["msg"], one["msg"]
    assert "applied_commit" not in one
    assert git("rev-parse", "refs/heads/main", cwd=remote) == selected
    assert [git("rev-parse", f"refs/guardrail/applied/{name}/prod", cwd=remote) for name in ("one", "two")] == [
        first, first]
    assert remote_refs(remote, "refs/guardrail/locks") == []
    # Run again: the selection is made from the commit that landed.
    proc, result = guardrail(clone, "affected", "tofu", "apply", log=log, options=("--json",), steps=steps)
    assert proc.returncode == 0, result["msg"]
    assert list(result["affected"]) == ["one", "two"]
    assert git("rev-parse", "refs/guardrail/applied/two/prod", cwd=remote) == landed


@pytest.mark.parametrize("selection", ["one", "one,two"], ids=["one stack", "several"])
def test_a_detached_checkout_whose_branch_moves_on_as_the_locks_are_taken_applies_nothing(
        git_repo, tmp_path, selection):
    """A detached checkout (an AWX job) is as good as the branch it was found
    to be at git_check: when that branch moves on before the apply, nothing
    is applied and the locks are given back, for several stacks as for one."""
    clone, remote = git_repo
    make_repo(clone, stacks={"one": [], "two": []}, sleep=0)
    git("checkout", "-q", "--detach", "origin/main", cwd=clone)
    push_as_the_lock_is_taken(remote)
    before = git("rev-parse", "refs/heads/main", cwd=remote)
    log = tmp_path / "applies.log"
    proc, result = guardrail(clone, selection, "tofu", "apply", log=log, options=("--json",))
    assert git("rev-parse", "refs/heads/main", cwd=remote) != before, "the hook did not fire: the race was not staged"
    assert proc.returncode != 0, proc.stdout + proc.stderr
    rows = [result] if "," not in selection else result["stacks"]
    for row in rows:
        assert row["failed_step"] == "exec", row["msg"]
        assert "origin/main moved on from the detached HEAD" in row["msg"], row["msg"]
        assert "nothing was applied" in row["msg"] and "Sync the checkout again" in row["msg"], row["msg"]
    assert not log.exists(), "a stack was applied"
    assert remote_refs(remote, "refs/guardrail") == []
