"""The run lock on its three backends, against real git remotes and a moto
server over HTTP: contention across processes, a killed holder, bad names."""
import json
import signal
from pathlib import Path

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import ROOT, git
from lock_helpers import (
    BUCKET,
    TABLE,
    SerialMotoServer,
    aws_contents,
    backend_options,
    clone,
    create_aws_resources,
    race,
    start_holder,
)

BACKENDS = run_lock.BACKENDS
BAD_NAMES = ["a/b", "..", "a..b", "has space", "semi;colon", "$(touch x)", "back`tick`", "pipe|x", "",
             "x" * 300, "-leading-dash", "new\nline", "trailing\n", "star*", "tilde~1", "x.lock", "dot."]


@pytest.fixture(scope="module")
def serial_moto(moto_server):
    """A second HTTP front end on the same moto backends that serves one request
    at a time (see SerialMotoServer), for the race tests only."""
    with SerialMotoServer() as server:
        yield server.endpoint


@pytest.fixture
def lock_env(request, tmp_path, moto_server, monkeypatch):
    """(backend name, options factory by process index, state reader) for each
    backend. An indirect parameter "<backend>:serial" points the AWS backends
    at the serial moto front end."""
    name, _sep, mode = request.param.partition(":")
    if mode == "serial":
        moto_server = request.getfixturevalue("serial_moto")
    if name == "git":
        remote = tmp_path / "remote.git"
        git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
        seed = clone(remote, tmp_path / "seed")
        git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "--allow-empty",
            "-m", "initial", cwd=seed)
        git("push", "-q", "origin", "HEAD:main", cwd=seed)
        clones = {}

        def options_for(index):
            if index not in clones:
                clones[index] = clone(remote, tmp_path / f"clone-{index}")
            return {"backend": "git", **backend_options("git", repo_path=clones[index])}

        def stored():
            return git("for-each-ref", "--format=%(refname)", "refs/tags", "refs/guardrail", cwd=remote).split()

        return name, options_for, stored

    from conftest import AWS_TEST_ENV, reset_moto

    reset_moto(moto_server)
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    create_aws_resources(moto_server)

    def aws_options_for(_index):
        return {"backend": name, **backend_options(name, endpoint=moto_server)}

    def aws_stored():
        items, keys = aws_contents(moto_server)
        return items if name == "dynamodb" else keys

    return name, aws_options_for, aws_stored


def prepare_clones(options_for, count):
    # Clones are made before the race so every process only races.
    return [options_for(index) for index in range(count)]


@pytest.mark.parametrize("lock_env", ["git", "dynamodb:serial", "s3:serial"], indirect=True)
def test_thirty_processes_race_one_winner_per_round(lock_env):
    name, options_for, stored = lock_env
    prepare_clones(options_for, 30)
    rounds, elapsed = race(options_for, "alpha", "prod", workers=30, rounds=20)
    print(f"{name}: 30 processes x 20 rounds in {elapsed:.1f}s")
    for number, results in enumerate(rounds):
        errors = [r for r in results if r[1] == "error"]
        assert not errors, f"round {number}: {errors}"
        winners = [r for r in results if r[1] == "won"]
        assert len(winners) == 1, f"round {number}: {len(winners)} winners: {winners}"
        winner_owner, winner_run = winners[0][2:4]
        for _index, outcome, owner, run_id, text in results:
            if outcome == "lost":
                assert (owner, run_id) == (winner_owner, winner_run), f"round {number}: {text}"
                assert winner_owner in text and winner_run in text, text
    assert stored() == []


@pytest.mark.parametrize("lock_env", BACKENDS, indirect=True)
def test_killed_holder_leaves_an_attributable_lock(lock_env):
    name, options_for, stored = lock_env
    options = options_for(0)
    holder = start_holder(options, "alpha", "prod")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert holder.returncode == -signal.SIGKILL

    backend = run_lock.get_backend(**options_for(1))
    record = backend.read("alpha", "prod")
    assert (record["owner"], record["run_id"], record["message"]) == ("holder@killed", "run-killed", "about to die")
    with pytest.raises(run_lock.LockHeld) as refused:
        backend.acquire("alpha", "prod", run_lock.new_record("alpha", "prod", "other@test", "run-2"))
    assert "holder@killed" in str(refused.value) and "run-killed" in str(refused.value)
    with pytest.raises(run_lock.LockHeld):
        backend.release("alpha", "prod", {"owner": "other@test", "run_id": "run-2"})
    assert run_lock.run_ended(record).startswith("process")

    changed, removed = backend.remove("alpha", "prod")
    assert changed and removed["owner"] == "holder@killed"
    assert backend.read("alpha", "prod") is None
    assert stored() == []
    assert backend.acquire("alpha", "prod", run_lock.new_record("alpha", "prod", "other@test", "run-2"))[0]


@pytest.mark.parametrize("lock_env", BACKENDS, indirect=True)
@pytest.mark.parametrize("field", ["stack", "profile"])
def test_bad_names_are_refused_and_nothing_is_written(lock_env, field):
    name, options_for, stored = lock_env
    backend = run_lock.get_backend(**options_for(0))
    for bad in BAD_NAMES:
        names = {"stack": "alpha", "profile": "prod", field: bad}
        with pytest.raises(run_lock.LockError, match=f"invalid {field} name"):
            run_lock.new_record(names["stack"], names["profile"], "me@test", "run-1")
        record = dict(run_lock.new_record("alpha", "prod", "me@test", "run-1"), **names)
        for call in (lambda: backend.acquire(names["stack"], names["profile"], record),
                     lambda: backend.release(names["stack"], names["profile"], record),
                     lambda: backend.set_state(names["stack"], names["profile"], record, "failed"),
                     lambda: backend.remove(names["stack"], names["profile"]),
                     lambda: backend.read(names["stack"], names["profile"])):
            with pytest.raises(run_lock.LockError, match=f"invalid {field} name") as refused:
                call()
            assert not isinstance(refused.value, run_lock.LockHeld)
        assert stored() == [], f"{bad!r} wrote {stored()}"


@pytest.mark.parametrize("lock_env", BACKENDS, indirect=True)
def test_owner_rules_and_check_mode(lock_env):
    name, options_for, stored = lock_env
    mine = run_lock.get_backend(**options_for(0))
    theirs = run_lock.get_backend(**options_for(1))
    record = run_lock.new_record("alpha", "prod", "me@test", "run-1", message="rotate keys")

    assert mine.acquire("alpha", "prod", record, check_mode=True) == (True, record)
    assert stored() == []
    assert mine.release("alpha", "prod", record) == (False, None)
    assert mine.acquire("alpha", "prod", record) == (True, record)
    assert theirs.acquire("alpha", "prod", dict(record)) == (False, record)
    again = run_lock.new_record("alpha", "prod", "me@test", "run-2")
    with pytest.raises(run_lock.LockHeld, match="one run at a time"):
        theirs.acquire("alpha", "prod", again, takeover=True)
    with pytest.raises(run_lock.LockHeld, match="cannot release"):
        theirs.release("alpha", "prod", again)

    other = run_lock.new_record("alpha", "prod", "you@test", "run-9")
    with pytest.raises(run_lock.LockHeld) as refused:
        theirs.acquire("alpha", "prod", other, check_mode=True)
    for part in ("me@test", "run-1", record["host"], record["created"], "apply", "rotate keys"):
        assert part in str(refused.value)
    with pytest.raises(run_lock.LockHeld, match="cannot release"):
        theirs.release("alpha", "prod", other)

    assert theirs.release("alpha", "prod", record, check_mode=True) == (True, record)
    assert theirs.remove("alpha", "prod", check_mode=True) == (True, record)
    assert mine.read("alpha", "prod") == record
    # released from another clone / another backend object: no shared memory
    assert theirs.release("alpha", "prod", record) == (True, record)
    assert mine.read("alpha", "prod") is None
    assert stored() == []


@pytest.mark.parametrize("lock_env", BACKENDS, indirect=True)
def test_state_change_swaps_on_what_the_run_wrote_and_never_on_a_lock_taken_since(lock_env):
    """set_state tries its swap on the record this run wrote, without reading
    first; the swap's condition, not that memory, decides: a lock broken and
    taken by someone else meanwhile is reported lost and left as it is."""
    _name, options_for, _stored = lock_env
    mine = run_lock.get_backend(**options_for(0))
    theirs = run_lock.get_backend(**options_for(1))
    record = run_lock.new_record("alpha", "prod", "me@test", "run-1")
    assert mine.acquire("alpha", "prod", record) == (True, record)

    before = mine.calls
    running = mine.set_state("alpha", "prod", record, "running", extra={"children": [{"pid": 1}]})
    assert mine.calls - before == 1, "the state change is one conditional write, no read"
    assert theirs.read("alpha", "prod") == running

    assert theirs.remove("alpha", "prod") == (True, running)
    other = run_lock.new_record("alpha", "prod", "you@test", "run-9")
    assert theirs.acquire("alpha", "prod", other) == (True, other)
    with pytest.raises(run_lock.LockLost, match="you@test"):
        mine.set_state("alpha", "prod", running, "failed", detail="late")
    assert theirs.read("alpha", "prod") == other

    assert theirs.release("alpha", "prod", other) == (True, other)
    with pytest.raises(run_lock.LockLost, match="released or broken"):
        mine.set_state("alpha", "prod", running, "failed")


@pytest.mark.parametrize("lock_env", ["dynamodb", "s3"], indirect=True)
def test_aws_lock_is_tofu_lock_info(lock_env, moto_server):
    import boto3

    name, options_for, _stored = lock_env
    backend = run_lock.get_backend(**options_for(0))
    record = run_lock.new_record("alpha", "prod", "me@test", "run-1", operation="plan", message="why")
    backend.acquire("alpha", "prod", record)
    if name == "dynamodb":
        item = boto3.client("dynamodb", endpoint_url=moto_server).get_item(
            TableName=TABLE, Key={"LockID": {"S": "guardrail/alpha/prod"}})["Item"]
        info = json.loads(item["Info"]["S"])
        assert info["Path"] == "guardrail/alpha/prod"
    else:
        body = boto3.client("s3", endpoint_url=moto_server).get_object(
            Bucket=BUCKET, Key="guardrail/alpha/prod.tflock")["Body"].read()
        info = json.loads(body)
        assert info["Path"] == f"{BUCKET}/guardrail/alpha/prod"
    assert {k: info[k] for k in ("ID", "Operation", "Info", "Who", "Created")} == {
        "ID": record["id"], "Operation": "plan", "Info": "why", "Who": "me@test", "Created": record["created"]}
    assert info["Version"] == f"guardrail.ecs {run_lock.COLLECTION_VERSION}"


@pytest.mark.parametrize("lock_env", ["dynamodb"], indirect=True)
def test_a_lock_tofu_wrote_is_read_and_refused(lock_env, moto_server):
    import boto3

    _name, options_for, _stored = lock_env
    tofu_info = {"ID": "5b6d0f3e-8f0e-4c4b-9d1a-2f4f0c7b1e11", "Operation": "OperationTypeApply", "Info": "",
                 "Who": "bob@laptop", "Version": "1.8.0", "Created": "2026-01-02T03:04:05.123456789Z",
                 "Path": "guardrail/alpha/prod"}
    boto3.client("dynamodb", endpoint_url=moto_server).put_item(
        TableName=TABLE, Item={"LockID": {"S": "guardrail/alpha/prod"}, "Info": {"S": json.dumps(tofu_info)}})
    backend = run_lock.get_backend(**options_for(0))
    record = backend.read("alpha", "prod")
    assert (record["owner"], record["host"], record["operation"]) == ("bob@laptop", "laptop", "OperationTypeApply")
    assert run_lock.is_stale(record, 3600)
    with pytest.raises(run_lock.LockHeld, match="bob@laptop"):
        backend.acquire("alpha", "prod", run_lock.new_record("alpha", "prod", "me@test", "run-1"))
    with pytest.raises(run_lock.LockHeld, match="cannot release run lock alpha/prod: it is held by bob@laptop"):
        backend.release("alpha", "prod", {"owner": "me@test", "run_id": "run-1"})
    assert backend.remove("alpha", "prod") == (True, record)
    assert backend.read("alpha", "prod") is None


def test_git_lock_leaves_no_local_ref_and_survives_a_stale_old_tag(tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    work = clone(remote, tmp_path / "work")
    backend = run_lock.get_backend("git", repo_path=str(work))
    record = run_lock.new_record("alpha", "prod", "me@test", "run-1")
    backend.acquire("alpha", "prod", record)
    assert git("tag", "-l", cwd=work) == "" and git("for-each-ref", "refs/guardrail", cwd=work) == ""
    assert git("tag", "-l", cwd=remote) == ""
    oid = git("rev-parse", "refs/guardrail/locks/alpha/prod", cwd=remote)
    assert git("cat-file", "-t", oid, cwd=work) == "tag"
    for repo in (work, remote):  # fsck rehashes every object: the tag written without git is sound
        git("fsck", "--strict", "--no-dangling", cwd=repo)
    assert git("cat-file", "-p", "refs/guardrail/locks/alpha/prod", cwd=remote).endswith(
        json.dumps(record, sort_keys=True))
    # A tag where 0.1.0 kept the lock, on the remote and in the clone, must not
    # make a free lock look held.
    git("tag", "guardrail-lock/alpha/prod", oid, cwd=work)
    git("push", "-q", "--tags", "origin", cwd=work)
    backend.remove("alpha", "prod")
    assert backend.read("alpha", "prod") is None
    assert backend.acquire("alpha", "prod", run_lock.new_record("alpha", "prod", "you@test", "run-2"))[0]


def test_git_remote_failure_names_git_error(tmp_path):
    work = tmp_path / "work"
    git("init", "-q", str(work), cwd=tmp_path)
    backend = run_lock.get_backend("git", repo_path=str(work), remote=str(tmp_path / "missing.git"))
    with pytest.raises(run_lock.LockError, match="does not appear to be a git repository"):
        backend.acquire("alpha", "prod", run_lock.new_record("alpha", "prod", "me@test", "run-1"))


PLAYBOOK = """
- name: Run lock through ansible-playbook
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Acquire
      guardrail.ecs.run_lock:
        stack: alpha
        profile: prod
        lock_message: rotate keys
      register: acquired
    - name: Acquire again
      guardrail.ecs.run_lock:
        stack: alpha
        profile: prod
    - name: Query
      guardrail.ecs.run_lock:
        stack: alpha
        profile: prod
        state: query
        ttl: 3600
    - name: Lookup
      ansible.builtin.debug:
        msg: "{{ lookup('guardrail.ecs.run_lock', stack='alpha', profile='prod') }}"
    - name: Another owner
      guardrail.ecs.run_lock:
        stack: alpha
        profile: prod
        owner: intruder@elsewhere
      ignore_errors: true
    - name: Release
      guardrail.ecs.run_lock:
        stack: alpha
        profile: prod
        state: released
    - name: Release a free lock
      guardrail.ecs.run_lock:
        stack: alpha
        profile: prod
        state: released
    - name: Lookup when free
      ansible.builtin.debug:
        msg: "{{ lookup('guardrail.ecs.run_lock', stack='alpha', profile='prod') }}"
"""


def test_module_through_ansible_playbook_with_awx_identity(git_repo):
    from conftest import run_playbook, task_results

    work, remote = git_repo
    rc, out, err = run_playbook(PLAYBOOK, extra_vars={"awx_user_name": "alice", "awx_job_id": 4711}, cwd=work)
    results = dict(task_results(out))
    assert rc == 0, (err, [(name, r.get('msg')) for name, r in task_results(out)])
    acquired = results["Acquire"]
    assert acquired["changed"] and (acquired["lock"]["owner"], acquired["lock"]["run_id"]) == ("alice", "4711")
    assert acquired["lock"]["message"] == "rotate keys" and acquired["lock"]["version"] == run_lock.COLLECTION_VERSION
    assert not results["Acquire again"]["changed"]
    assert results["Acquire again"]["lock"] == acquired["lock"]
    assert results["Query"]["lock"] == acquired["lock"] and results["Query"]["stale"] is False
    assert results["Lookup"]["msg"] == acquired["lock"]
    refused = results["Another owner"]
    assert refused["failed"] and refused["lock"] == acquired["lock"]
    for part in ("alice", "run 4711", acquired["lock"]["host"], acquired["lock"]["created"], "operation apply",
                 "rotate keys"):
        assert part in refused["msg"]
    assert results["Release"]["changed"] and results["Release"]["lock"] == acquired["lock"]
    assert not results["Release a free lock"]["changed"] and results["Release a free lock"]["lock"] == {}
    assert results["Lookup when free"]["msg"] == {}
    assert git("for-each-ref", "refs/tags", cwd=remote) == ""


def test_check_mode_and_diff_write_nothing(git_repo):
    from conftest import run_playbook, task_results

    work, remote = git_repo
    playbook = """
    - name: Check mode
      hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
      tasks:
        - name: Would acquire
          guardrail.ecs.run_lock:
            stack: alpha
            profile: prod
    """
    rc, out, err = run_playbook(playbook, check=True, diff=True, cwd=work)
    result = dict(task_results(out))["Would acquire"]
    assert rc == 0, (err, [(name, r.get('msg')) for name, r in task_results(out)])
    assert result["changed"] and result["lock"]["owner"].endswith("@" + result["lock"]["host"])
    assert result["diff"] == {"before": {}, "after": result["lock"]}
    assert git("for-each-ref", "refs/tags", cwd=remote) == ""

    holder = run_lock.get_backend("git", repo_path=str(work))
    held = run_lock.new_record("alpha", "prod", "bob@ops", "run-7", message="long apply")
    holder.acquire("alpha", "prod", held)
    rc, out, err = run_playbook(playbook, check=True, cwd=work)
    result = dict(task_results(out))["Would acquire"]
    assert rc != 0 and result["failed"] and "held by bob@ops (run run-7" in result["msg"]
    assert result["lock"] == held
    assert holder.read("alpha", "prod") == held


@pytest.mark.parametrize("backend", ["dynamodb", "s3"])
def test_module_on_aws_backends_refuses_bad_names(moto, backend):
    from conftest import run_playbook, task_results

    create_aws_resources(moto)
    where = {"table": TABLE} if backend == "dynamodb" else {"bucket": BUCKET}
    playbook = f"""
    - name: AWS backend
      hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
      module_defaults:
        group/guardrail.ecs.aws:
          endpoint_url: {moto}
          region: us-east-1
      tasks:
        - name: Acquire
          guardrail.ecs.run_lock:
            stack: alpha
            profile: prod
            backend: {backend}
            {list(where)[0]}: {list(where.values())[0]}
            ttl: 1
        - name: Bad name
          guardrail.ecs.run_lock:
            stack: "alpha; rm -rf /"
            profile: prod
            backend: {backend}
            {list(where)[0]}: {list(where.values())[0]}
          ignore_errors: true
        - name: Wait for the lock to go stale
          ansible.builtin.wait_for:
            timeout: 2
        - name: Stale
          guardrail.ecs.run_lock:
            stack: alpha
            profile: prod
            backend: {backend}
            {list(where)[0]}: {list(where.values())[0]}
            owner: other@host
            ttl: 1
          ignore_errors: true
        - name: Break it
          guardrail.ecs.run_lock:
            stack: alpha
            profile: prod
            state: absent
            backend: {backend}
            {list(where)[0]}: {list(where.values())[0]}
    """
    rc, out, err = run_playbook(playbook, env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    results = dict(task_results(out))
    assert rc == 0, (err, [(name, r.get('msg')) for name, r in task_results(out)])
    assert results["Acquire"]["changed"]
    assert results["Bad name"]["failed"] and "invalid stack name 'alpha; rm -rf /'" in results["Bad name"]["msg"]
    assert results["Stale"]["failed"] and results["Stale"]["stale"] is True
    assert "(stale): if its run is gone, break it (run_lock state=absent" in results["Stale"]["msg"]
    assert results["Break it"]["changed"] and results["Break it"]["lock"] == results["Acquire"]["lock"]
    items, keys = aws_contents(moto)
    assert (items, keys) == ([], [])


def test_git_backend_errors_are_lock_errors(tmp_path):
    backend = run_lock.get_backend("git", repo_path=str(tmp_path / "missing"))
    with pytest.raises(run_lock.LockError, match="does not exist"):
        backend.read("alpha", "prod")
    with pytest.raises(run_lock.LockError, match="not a git repository"):
        run_lock.get_backend("git", repo_path=str(tmp_path)).acquire(
            "alpha", "prod", run_lock.new_record("alpha", "prod", "me@test", "run-1"))


def examples(path):
    """The EXAMPLES tasks of a plugin file."""
    import ast

    import yaml

    tree = ast.parse(Path(path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXAMPLES":
            return yaml.safe_load(node.value.value)
    raise AssertionError(f"{path} has no EXAMPLES")


def test_examples_run(git_repo, moto):
    """Every EXAMPLES task of run_lock (module and lookup), git_check and
    git_push runs as written, from a playbook in a clean stack repository, with
    AWS pointed at moto through AWS_ENDPOINT_URL."""
    import boto3
    import yaml

    from conftest import run_playbook, task_results

    for region in ("us-east-1", "eu-west-1"):
        boto3.client("dynamodb", endpoint_url=moto, region_name=region).create_table(
            TableName="tofu-locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    boto3.client("s3", endpoint_url=moto).create_bucket(Bucket="acme-tofu-state")
    work, remote = git_repo
    plugins = ROOT / "plugins"
    tasks = (examples(plugins / "lookup" / "run_lock.py") + examples(plugins / "modules" / "run_lock.py")
             + examples(plugins / "modules" / "git_check.py") + examples(plugins / "modules" / "git_push.py"))
    play = [{"name": "Examples", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}, "tasks": tasks}]
    (work / "examples.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    # The examples that name stack=all read the repository's stacks.
    (work / "stacks" / "alpha").mkdir(parents=True)
    (work / "stacks" / "alpha" / "main.tf").write_text("")
    git("add", "examples.yml", "stacks", cwd=work)
    git("commit", "-q", "-m", "examples", cwd=work)
    git("push", "-q", cwd=work)

    rc, out, err = run_playbook(work / "examples.yml", cwd=work, env={"AWS_ENDPOINT_URL": moto})
    results = task_results(out)
    assert rc == 0, (err, [(name, r.get("msg")) for name, r in results])
    assert len(results) == len(tasks)
    assert dict(results)["Tell who holds the lock of alpha/prod"]["msg"] == "alpha/prod is free"
    assert git("for-each-ref", "refs/tags", cwd=remote) == ""
    items = boto3.client("dynamodb", endpoint_url=moto, region_name="eu-west-1").scan(TableName="tofu-locks")["Items"]
    assert [item["LockID"]["S"] for item in items] == ["guardrail/alpha/prod"], "the DynamoDB example keeps its lock"


def test_git_push_refused_by_a_hook_is_an_error_not_contention(tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'tags are frozen today' >&2\nexit 1\n")
    hook.chmod(0o755)
    work = clone(remote, tmp_path / "work")
    backend = run_lock.get_backend("git", repo_path=str(work))
    with pytest.raises(run_lock.LockError, match="tags are frozen today") as refused:
        backend.acquire("alpha", "prod", run_lock.new_record("alpha", "prod", "me@test", "run-1"))
    assert not isinstance(refused.value, run_lock.LockHeld)
    assert backend.calls < 6, "a refusal is reported at once, not retried"


def test_git_delete_refused_by_a_hook_is_an_error(tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    work = clone(remote, tmp_path / "work")
    backend = run_lock.get_backend("git", repo_path=str(work))
    record = run_lock.new_record("alpha", "prod", "me@test", "run-1")
    backend.acquire("alpha", "prod", record)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no deletes' >&2\nexit 1\n")
    hook.chmod(0o755)
    for call in (lambda: backend.release("alpha", "prod", record), lambda: backend.remove("alpha", "prod")):
        with pytest.raises(run_lock.LockError, match="no deletes"):
            call()
    assert backend.read("alpha", "prod")["owner"] == "me@test"
