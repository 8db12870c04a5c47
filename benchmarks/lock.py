"""Run lock: acquire+release cycles per backend against the floor they cannot beat.

git:       the floor is two plain `git push` commands, one creating and one
           deleting a tag on the same bare remote. Target ratio <= 1.3.
dynamodb:  the floor is a raw boto3 put_item and delete_item. Target <= 1.5.
s3:        the floor is a raw boto3 put_object and delete_object. Target <= 1.5.

The AWS backends run against a moto server over HTTP on loopback. Floor and
lock cycles alternate, so load on the machine hits both alike. The "cold"
release is made as a separate module run makes it, knowing nothing of the
acquire: git finds the tag it pushed through a hint in the clone (git's
release is always measured this way), DynamoDB deletes on a condition on the
owner in one call, S3 reads the lock for its ID and ETag first. The "warm"
release is made by the object that acquired, as within one controller process.

Usage: python benchmarks/lock.py [--cycles N] [--quick]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / ".cache" / "collections"
TARGETS = {"git": 1.3, "dynamodb": 1.5, "s3": 1.5}


def load_collection():
    link = COLLECTIONS / "ansible_collections" / "guardrail" / "ecs"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../../../.."))
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    _AnsibleCollectionFinder(paths=[str(COLLECTIONS)])._install()
    from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock

    return run_lock


def git(*args, cwd):
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def timed(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def measure(cycles, floor_cycle, lock_cycle):
    """Alternating medians (seconds) of the floor and the lock cycle."""
    floor_cycle()
    lock_cycle()
    floors, locks = [], []
    for _cycle in range(cycles):
        floors.append(timed(floor_cycle))
        locks.append(timed(lock_cycle))
    return statistics.median(floors), statistics.median(locks)


def bench_git(run_lock, cycles, tmp):
    remote, work = tmp / "remote.git", tmp / "work"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp)
    git("clone", "-q", str(remote), str(work), cwd=tmp)
    git("commit", "-q", "--allow-empty", "-m", "initial", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    git("tag", "-a", "-m", "floor", "floor", cwd=work)

    def floor_cycle():
        git("push", "-q", "origin", "refs/tags/floor:refs/tags/floor", cwd=work)
        git("push", "-q", "origin", ":refs/tags/floor", cwd=work)

    counts = []

    def lock_cycle():
        taker = run_lock.get_backend("git", repo_path=str(work))
        record = run_lock.new_record("alpha", "prod", "bench@example", "run-1")
        acquired = taker.acquire("alpha", "prod", record)[0]
        releaser = run_lock.get_backend("git", repo_path=str(work))
        released = releaser.release("alpha", "prod", record)[0]
        assert acquired and released
        counts.append(taker.calls + releaser.calls)

    floor, lock = measure(cycles, floor_cycle, lock_cycle)
    return [("git", floor, lock, 2, statistics.median(counts), "subprocesses")]


def aws_cycle(run_lock, backend, warm, calls):
    """An acquire+release cycle; a cold release is made by an object that did
    not acquire, as in a new process."""
    def cycle():
        before = backend.calls
        record = run_lock.new_record("alpha", "prod", "bench@example", "run-1")
        acquired = backend.acquire("alpha", "prod", record)[0]
        if not warm:
            backend._written.clear()
        released = backend.release("alpha", "prod", record)[0]
        assert acquired and released
        calls.append(backend.calls - before)
    return cycle


def bench_aws(run_lock, cycles):
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    rows = []
    try:
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
        dynamodb.create_table(TableName="locks", KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench-locks")
        body = run_lock.lock_info(run_lock.new_record("alpha", "prod", "bench@example", "run-1"), "floor")

        floors = {
            "dynamodb": lambda: (
                dynamodb.put_item(TableName="locks", Item={"LockID": {"S": "floor"}, "Info": {"S": body}}),
                dynamodb.delete_item(TableName="locks", Key={"LockID": {"S": "floor"}})),
            "s3": lambda: (s3.put_object(Bucket="bench-locks", Key="floor.tflock", Body=body.encode()),
                           s3.delete_object(Bucket="bench-locks", Key="floor.tflock")),
        }
        options = {"dynamodb": {"table": "locks"}, "s3": {"bucket": "bench-locks"}}
        for name in ("dynamodb", "s3"):
            backend = run_lock.get_backend(name, endpoint_url=endpoint, **options[name])
            for warm in (False, True):
                calls = []
                floor, lock = measure(cycles, floors[name], aws_cycle(run_lock, backend, warm, calls))
                label = f"{name} ({'warm' if warm else 'cold'} release)"
                rows.append((label, floor, lock, 2, statistics.median(calls), "API calls"))
    finally:
        server.stop()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=60, help="cycles per backend (default 60)")
    parser.add_argument("--quick", action="store_true", help="20 cycles, for a smoke test")
    args = parser.parse_args()
    cycles = 20 if args.quick else args.cycles
    run_lock = load_collection()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_git(run_lock, cycles, Path(tmp))
    rows += bench_aws(run_lock, cycles)

    print(f"run lock: median of {cycles} acquire+release cycles, floor and lock alternating")
    print(f"{'backend':<26} {'floor ms':>9} {'lock ms':>9} {'ratio':>6} {'target':>7}  per cycle (floor -> lock)")
    for label, floor, lock, floor_calls, lock_calls, unit in rows:
        target = TARGETS[label.split()[0]]
        ratio = lock / floor
        verdict = "met" if ratio <= target else "MISSED"
        print(f"{label:<26} {floor * 1000:9.2f} {lock * 1000:9.2f} {ratio:6.2f} {'<=' + str(target):>7}  "
              f"{floor_calls} -> {lock_calls:g} {unit}  {verdict}")


if __name__ == "__main__":
    main()
