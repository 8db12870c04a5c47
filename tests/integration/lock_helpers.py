"""Helpers for the run lock tests: a race of many processes for one lock, a
holder that can be killed, and the AWS resources the backends need."""
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import boto3

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
from conftest import ROOT, git

TABLE = "tofu-locks"
BUCKET = "tofu-state"


class SerialMotoServer:
    """A moto server that handles one request at a time.

    moto 5.2.5 tests a conditional write (S3 If-None-Match, DynamoDB
    ConditionExpression) and then stores the object in two steps without a lock,
    so its threaded server can let two racing writers both succeed -- seen in
    about one round in twenty with 30 processes on S3. AWS makes these writes
    atomic; serving requests one at a time gives moto that same guarantee, so a
    race test measures the lock and not moto's thread safety."""

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._thread.join(timeout=10)


def create_aws_resources(endpoint):
    boto3.client("dynamodb", endpoint_url=endpoint).create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)


def backend_options(name, endpoint=None, repo_path=None):
    """get_backend() keyword arguments for one backend in the test setup."""
    if name == "git":
        return {"repo_path": str(repo_path)}
    if name == "dynamodb":
        return {"table": TABLE, "endpoint_url": endpoint}
    return {"bucket": BUCKET, "endpoint_url": endpoint}


def aws_contents(endpoint):
    """Everything stored in the lock table and the bucket."""
    items = boto3.client("dynamodb", endpoint_url=endpoint).scan(TableName=TABLE)["Items"]
    objects = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return items, [obj["Key"] for obj in objects]


def clone(remote, path):
    git("clone", "-q", str(remote), str(path), cwd=Path(path).parent)
    return Path(path)


def _racer(index, options_for, stack, profile, rounds, barrier, results):
    backend = run_lock.get_backend(**options_for(index))
    owner = f"racer-{index}@test"
    for round_no in range(rounds):
        record = run_lock.new_record(stack, profile, owner, f"run-{round_no}-{index}",
                                     message=f"round {round_no}")
        barrier.wait()
        try:
            backend.acquire(stack, profile, record)
            results.put((round_no, index, "won", record["owner"], record["run_id"], ""))
        except run_lock.LockHeld as exc:
            results.put((round_no, index, "lost", exc.record.get("owner"), exc.record.get("run_id"), str(exc)))
        except Exception as exc:  # reported to the parent, which fails the test
            results.put((round_no, index, "error", None, None, repr(exc)))
        barrier.wait()


def race(options_for, stack, profile, workers=30, rounds=20, timeout=120):
    """`workers` processes try to acquire the same lock at once, `rounds` times;
    the lock is removed between rounds. options_for(index) gives each process's
    get_backend() keyword arguments. Returns per round the list of
    (index, outcome, owner, run_id, error text) and the elapsed seconds."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers + 1, timeout=timeout)
    results = context.Queue()
    processes = [context.Process(target=_racer, args=(index, options_for, stack, profile, rounds, barrier, results))
                 for index in range(workers)]
    for process in processes:
        process.start()
    cleaner = run_lock.get_backend(**options_for(0))
    outcome = []
    started = time.monotonic()
    try:
        for _round in range(rounds):
            barrier.wait()
            round_results = [results.get(timeout=timeout) for _worker in range(workers)]
            outcome.append([result[1:] for result in sorted(round_results)])
            cleaner.remove(stack, profile)
            barrier.wait()
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return outcome, time.monotonic() - started


HOLDER = """
import os, sys
sys.path.insert(0, {collections!r})
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[{collections!r}])._install()
from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock
options = {options!r}
backend = run_lock.get_backend(**options)
record = run_lock.new_record({stack!r}, {profile!r}, "holder@killed", "run-killed", message="about to die")
backend.acquire({stack!r}, {profile!r}, record)
print("held", flush=True)
sys.stdin.read()
"""


def start_holder(options, stack, profile, env=None):
    """A child process that acquires the lock, says "held" and waits forever."""
    import subprocess

    code = HOLDER.format(collections=str(ROOT / ".cache" / "collections"), options=options,
                         stack=stack, profile=profile)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {})))
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        raise AssertionError(f"the holder did not acquire the lock: {line}{proc.stderr.read()}")
    return proc
