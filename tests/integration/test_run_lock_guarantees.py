"""The run lock's guarantees, each from the situation that broke it: two live
runs of one owner from two clones, a stale clone pushing its tags after a
release, listing held locks, and the AWS profile reaching the backends."""
import multiprocessing
import time

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import git, run_playbook, task_results
from lock_helpers import BUCKET, TABLE, SerialMotoServer, backend_options, clone, create_aws_resources

ROUNDS = 20
HOLD = 0.15


def _same_owner_runner(options, rounds, barrier, results):
    """One run per round with the default owner (user@host, as both clones
    of one person have) and a fresh run id; holds the lock HOLD seconds."""
    backend = run_lock.get_backend(**options)
    owner, _run = run_lock.default_identity({})
    for round_no in range(rounds):
        _owner, run_id = run_lock.default_identity({})
        record = run_lock.new_record("alpha", "prod", owner, run_id)
        barrier.wait()
        try:
            changed, held = backend.acquire("alpha", "prod", record, wait=60)
            start = time.monotonic()
            holder = held["run_id"]
            time.sleep(HOLD)
            end = time.monotonic()
            backend.release("alpha", "prod", record)
            results.put((round_no, run_id, holder, changed, start, end, ""))
        except Exception as exc:  # reported to the parent, which fails the test
            results.put((round_no, run_id, None, None, None, None, repr(exc)))
        barrier.wait()


def _options(name, tmp_path, endpoint, index):
    if name == "git":
        return {"backend": "git", **backend_options("git", repo_path=tmp_path / f"clone-{index}")}
    return {"backend": name, **backend_options(name, endpoint=endpoint)}


@pytest.fixture
def two_clones(tmp_path):
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    seed = clone(remote, tmp_path / "seed")
    git("commit", "-q", "--allow-empty", "-m", "initial", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    for index in range(2):
        clone(remote, tmp_path / f"clone-{index}")
    return remote


@pytest.fixture(scope="module")
def serial_moto(moto_server):
    """The moto backends behind a front end serving one request at a time: the
    threaded server does not make S3's conditional writes atomic, AWS does."""
    with SerialMotoServer() as server:
        yield server.endpoint


@pytest.mark.parametrize("name", run_lock.BACKENDS)
def test_two_live_runs_of_one_owner_never_overlap(name, tmp_path, two_clones, moto, serial_moto):
    """Two clones, the default owner, ROUNDS rounds started together: each run
    must hold the lock alone (the other waits), and each releases only its own."""
    if name != "git":
        create_aws_resources(moto)
    moto = serial_moto
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3, timeout=120)
    results = context.Queue()
    runners = [context.Process(target=_same_owner_runner,
                               args=(_options(name, tmp_path, moto, index), ROUNDS, barrier, results))
               for index in range(2)]
    for runner in runners:
        runner.start()
    for _round_no in range(ROUNDS):
        barrier.wait()
        barrier.wait()
    for runner in runners:
        runner.join(timeout=60)
    rows = [results.get(timeout=10) for _round in range(2 * ROUNDS)]
    assert [row[6] for row in rows if row[6]] == []
    overlaps = 0
    for round_no in range(ROUNDS):
        first, second = sorted((row for row in rows if row[0] == round_no), key=lambda row: row[4])
        if second[4] < first[5]:
            overlaps += 1
    print(f"{name}: {ROUNDS} rounds of two same-owner runs, {overlaps} overlapped")
    assert overlaps == 0
    # every run held the lock itself, never "re-entered" the other run's lock
    assert all(row[2] == row[1] and row[3] for row in rows)
    assert run_lock.get_backend(**_options(name, tmp_path, moto, 0)).read("alpha", "prod") is None


def test_a_released_git_lock_stays_released_after_a_stale_clone_pushes(tmp_path, two_clones):
    remote = two_clones
    holder = run_lock.get_backend("git", repo_path=str(tmp_path / "clone-0"))
    stale = tmp_path / "clone-1"
    held = run_lock.new_record("alpha", "prod", "alice@ctl", "run-1")
    holder.acquire("alpha", "prod", held)
    # The stale clone fetches everything an ordinary user fetches while the lock is held.
    git("fetch", "-q", "--tags", "origin", cwd=stale)
    git("fetch", "-q", "origin", cwd=stale)
    git("pull", "-q", "--tags", "origin", "main", cwd=stale)
    assert holder.release("alpha", "prod", held)[0]
    # ... and pushes its tags and branches after the release.
    git("push", "-q", "--tags", "origin", cwd=stale)
    git("push", "-q", "--follow-tags", "origin", "HEAD:main", cwd=stale)
    git("push", "-q", "--all", "origin", cwd=stale)
    assert holder.read("alpha", "prod") is None
    nxt = run_lock.new_record("alpha", "prod", "bob@ctl", "run-2")
    assert run_lock.get_backend("git", repo_path=str(stale)).acquire("alpha", "prod", nxt) == (True, nxt)
    assert git("for-each-ref", "--format=%(refname)", cwd=remote).split() == [
        "refs/guardrail/locks/alpha/prod", "refs/heads/main"]


@pytest.mark.parametrize("name", run_lock.BACKENDS)
def test_held_locks_are_listed_with_owner_run_state_and_age(name, tmp_path, two_clones, moto):
    if name != "git":
        create_aws_resources(moto)
    options = _options(name, tmp_path, moto, 0)
    backend = run_lock.get_backend(**options)
    assert backend.list_locks() == []
    first = run_lock.new_record("alpha", "prod", "alice@ctl", "run-1")
    second = run_lock.new_record("beta", "dev", "bob@ctl", "run-2")
    backend.acquire("alpha", "prod", first)
    backend.acquire("beta", "dev", second)
    backend.set_state("beta", "dev", second, "failed", detail="exit status 1")
    time.sleep(1.1)
    listed = {(lock["stack"], lock["profile"]): lock for lock in backend.list_locks(ttl=1)}
    assert set(listed) == {("alpha", "prod"), ("beta", "dev")}
    alpha, beta = listed[("alpha", "prod")], listed[("beta", "dev")]
    assert (alpha["owner"], alpha["run_id"], alpha["state"], alpha["ended"]) == ("alice@ctl", "run-1", "running", False)
    assert (beta["owner"], beta["run_id"], beta["state"], beta["detail"], beta["ended"]) == (
        "bob@ctl", "run-2", "failed", "exit status 1", True)
    assert alpha["age_seconds"] >= 1 and alpha["stale"] and beta["stale"]

    # the same through the module (state=query without stack/profile) and the lookup
    module_args = {key: str(value) for key, value in options.items() if key != "backend" and value is not None}
    playbook = f"""
- name: List locks
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
    opts: {module_args!r}
  tasks:
    - name: Query all
      guardrail.ecs.run_lock:
        state: query
        backend: {name}
        table: "{{{{ opts.table | default(omit) }}}}"
        bucket: "{{{{ opts.bucket | default(omit) }}}}"
        endpoint_url: "{{{{ opts.endpoint_url | default(omit) }}}}"
        repo_path: "{{{{ opts.repo_path | default(omit) }}}}"
        ttl: 3600
    - name: Lookup all
      ansible.builtin.debug:
        msg: "{{{{ lookup('guardrail.ecs.run_lock', backend='{name}', wantlist=true, **opts) }}}}"
    - name: Break one
      guardrail.ecs.run_lock:
        stack: beta
        profile: dev
        state: absent
        backend: {name}
        table: "{{{{ opts.table | default(omit) }}}}"
        bucket: "{{{{ opts.bucket | default(omit) }}}}"
        endpoint_url: "{{{{ opts.endpoint_url | default(omit) }}}}"
        repo_path: "{{{{ opts.repo_path | default(omit) }}}}"
"""
    rc, out, err = run_playbook(playbook, cwd=tmp_path)
    results = dict(task_results(out))
    assert rc == 0, (err, [(name, result.get("msg")) for name, result in task_results(out)])
    queried = {(lock["stack"], lock["profile"]): lock for lock in results["Query all"]["locks"]}
    assert queried[("beta", "dev")]["state"] == "failed" and queried[("alpha", "prod")]["run_id"] == "run-1"
    assert not results["Query all"]["stale"]
    looked = {(lock["stack"], lock["profile"]) for lock in results["Lookup all"]["msg"]}
    assert looked == {("alpha", "prod"), ("beta", "dev")}
    broken = results["Break one"]
    assert broken["changed"] and (broken["lock"]["owner"], broken["lock"]["run_id"]) == ("bob@ctl", "run-2")
    assert [lock["stack"] for lock in backend.list_locks()] == ["alpha"]


def write_profile(tmp_path, endpoint):
    """A shared credentials and config file with one named profile holding the
    moto keys; the environment has no keys and no region of its own."""
    credentials = tmp_path / "aws" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text("[lockprof]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    config = tmp_path / "aws" / "config"
    config.write_text("[profile lockprof]\nregion = us-east-1\n")
    return {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(config)}


@pytest.fixture
def profile_env(tmp_path, moto, monkeypatch):
    create_aws_resources(moto)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                "AWS_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    env = write_profile(tmp_path, moto)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


PROFILE_PLAYBOOK = """
- name: Run lock with module_defaults for the AWS group
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  module_defaults:
    group/guardrail.ecs.aws:
      endpoint_url: {endpoint}
{profile_line}
  tasks:
    - name: Take the lock
      guardrail.ecs.run_lock:
        stack: alpha
        profile: prod
        backend: {backend}
        table: {table}
        bucket: {bucket}
      register: taken
      ignore_errors: true
    - name: Workflow unlock step on the same backend
      guardrail.ecs.workflow:
        stack: alpha
        profile: prod
        steps: [unlock_any]
        lock:
          backend: {backend}
          table: {table}
          bucket: {bucket}
        repo_path: {repo}
      ignore_errors: true
"""


@pytest.mark.parametrize("backend", ["dynamodb", "s3"])
def test_aws_profile_and_module_defaults_reach_the_lock_and_the_workflow(backend, git_repo, profile_env, moto):
    from workflow_helpers import make_stack_repo

    repo = make_stack_repo(git_repo[0])
    text = PROFILE_PLAYBOOK.format(endpoint=moto, backend=backend, table=TABLE, bucket=BUCKET, repo=repo,
                                   profile_line="      aws_profile: lockprof")
    rc, out, err = run_playbook(text, cwd=repo, env=profile_env)
    results = dict(task_results(out))
    assert not results["Take the lock"].get("failed"), results["Take the lock"]
    assert results["Take the lock"]["changed"]
    unlocked = results["Workflow unlock step on the same backend"]
    assert not unlocked.get("failed"), unlocked
    assert unlocked["changed"], unlocked
    assert rc == 0, err

    # without the profile: a configuration error, worded as one, in both
    text = PROFILE_PLAYBOOK.format(endpoint=moto, backend=backend, table=TABLE, bucket=BUCKET, repo=repo,
                                   profile_line="")
    rc, out, err = run_playbook(text, cwd=repo, env=profile_env)
    results = dict(task_results(out))
    for name in ("Take the lock", "Workflow unlock step on the same backend"):
        msg = results[name]["msg"]
        assert results[name]["failed"] and "not configured" in msg, msg
        assert "refused" not in msg and "held by" not in msg, msg

    # an unknown profile is a configuration error too
    text = PROFILE_PLAYBOOK.format(endpoint=moto, backend=backend, table=TABLE, bucket=BUCKET, repo=repo,
                                   profile_line="      aws_profile: nosuchprofile")
    rc, out, err = run_playbook(text, cwd=repo, env=profile_env)
    results = dict(task_results(out))
    msg = results["Take the lock"]["msg"]
    assert "not configured" in msg and "nosuchprofile" in msg, msg


def test_backend_object_with_aws_profile(profile_env, moto):
    for name in ("dynamodb", "s3"):
        for key in ("aws_profile", "profile"):
            backend = run_lock.get_backend(name, **backend_options(name, endpoint=moto), **{key: "lockprof"})
            record = run_lock.new_record("alpha", "prod", "me@test", f"run-{key}")
            assert backend.acquire("alpha", "prod", record)[0]
            assert backend.release("alpha", "prod", record)[0]
        with pytest.raises(run_lock.LockConfigError, match="not configured"):
            run_lock.get_backend(name, **backend_options(name, endpoint=moto)).read("alpha", "prod")
