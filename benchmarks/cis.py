"""CIS hardening side by side on fresh lab hosts: this role and its peers.

Each role gets its own fresh lab host from the same image. On each host, in one
run: the Lynis hardening index before (``lynis audit system --quick``, Debian's
``lynis`` package installed with apt at run time), the wall time of the first
converge, the wall time and changed count of the re-run, the Lynis index after.
For this collection's cis_hardening (Level 2, otherwise its defaults) also the
controls by status from its JSON report and the remote executions per run.

Peers (never part of this repository; pass a checkout of each):

  os_hardening  devsec.hardening's os_hardening role with its defaults
                (--peer os_hardening=PATH or GUARDRAIL_BENCH_OS_HARDENING;
                PATH is the collection checkout or the role directory)
  deb12_cis     ansible-lockdown's DEBIAN12-CIS role with its container
                defaults (--peer deb12_cis=PATH or GUARDRAIL_BENCH_DEB12_CIS)

A peer without a path is reported as NOT MEASURED, never left out silently.
Converges run one after another (their times are compared); the Lynis audits
of the different hosts run concurrently. Ratios are peer / this role.

Targets for this role on a 2-core machine through the podman connection:
re-run <= 45 s and changes nothing, >= 150 controls; first converge <= 90 s
with --no-install-packages (installing packages depends on the mirror).

Usage: .venv/bin/python benchmarks/cis.py [--peer NAME=PATH ...] [--no-lynis]
           [--no-install-packages] [--previous]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
IMAGE = os.environ.get("GUARDRAIL_LAB_IMAGE", "localhost/guardrail-lab:debian12")
CONTAINERS_CONF = str(ROOT / "tests" / "lab" / "containers.conf")
TARGETS = {"first": 90.0, "rerun": 45.0, "controls": 150}
LYNIS_TIMEOUT = 1500
PEERS = {
    "os_hardening": {"env": "GUARDRAIL_BENCH_OS_HARDENING", "role": "os_hardening",
                     "what": "devsec.hardening os_hardening (its defaults)", "vars": {}},
    # The lab image's root account has no password; the role refuses to run
    # its 5.4.2.4 precheck otherwise. Its container rules (vars/is_container.yml)
    # turn off 4.2.1-4.2.6, so ufw is never installed, but not 4.2.7, which then
    # fails on every run for want of ufw: it is turned off here as well.
    # Everything else is the role's defaults plus those container rules.
    "deb12_cis": {"env": "GUARDRAIL_BENCH_DEB12_CIS", "role": None,
                  "what": "ansible-lockdown DEBIAN12-CIS (container defaults)",
                  "vars": {"deb12cis_rule_5_4_2_4": False, "deb12cis_rule_4_2_7": False}},
}


def podman(*args, check=True, timeout=300):
    env = dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF)
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, env=env,
                          timeout=timeout)


def start_host(name):
    podman("rm", "-f", name, check=False)
    podman("run", "-d", "--name", name, "--hostname", name, "--privileged", "--systemd=always",
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", IMAGE, "/usr/local/sbin/lab-init")
    state = "unknown"
    for _attempt in range(120):
        state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(1)
    raise RuntimeError("lab host %s did not boot (state %s)" % (name, state))


def install_lynis(name):
    script = ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
              "apt-get install -y -qq --no-install-recommends lynis >/dev/null")
    proc = podman("exec", name, "sh", "-c", script, check=False, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("installing lynis on %s failed (rc %d): %s"
                           % (name, proc.returncode, proc.stderr.strip()[-1500:]))


def lynis_index(name):
    """Run Lynis on the host; return (hardening index, seconds, tests performed)."""
    podman("exec", name, "rm", "-f", "/var/log/lynis-report.dat", check=False)
    start = time.monotonic()
    proc = podman("exec", name, "lynis", "audit", "system", "--quick", "--no-colors",
                  check=False, timeout=LYNIS_TIMEOUT)
    took = time.monotonic() - start
    report = podman("exec", name, "cat", "/var/log/lynis-report.dat", check=False).stdout
    values = dict(line.split("=", 1) for line in report.splitlines() if "=" in line and not line.startswith("#"))
    if "hardening_index" not in values:
        raise RuntimeError("lynis on %s left no hardening_index (rc %d): %s"
                           % (name, proc.returncode, (proc.stdout + proc.stderr)[-1500:]))
    return int(values["hardening_index"]), took, values.get("lynis_tests_done", "?")


def run_playbook(collections, inventory, playbook, roles_path=None):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               CONTAINERS_CONF=CONTAINERS_CONF, PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")))
    if roles_path:
        env["ANSIBLE_ROLES_PATH"] = str(roles_path)
    load = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
                          capture_output=True, text=True, env=env, timeout=3600, check=False)
    took = time.monotonic() - start
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError("ansible-playbook printed no JSON (rc %d):\n%s\n%s"
                           % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])) from None
    remote = 0
    failed = []
    for play in out["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                # A module that ran on the host returns its invocation (fact gathering returns
                # facts); controller-side actions (plan, report, include_vars, assert, debug)
                # and skipped tasks do not.
                ran = "invocation" in result or task["task"]["name"] == "Gathering Facts"
                if ran and not result.get("skipped"):
                    remote += 1
                if result.get("failed") and not result.get("ignore_errors"):
                    failed.append("%s: %s" % (task["task"]["name"], str(result.get("msg", ""))[:200]))
    stats = dict(next(iter(out["stats"].values()), {}))
    return {"seconds": took, "remote": remote, "changed": stats.get("changed", 0),
            "failures": stats.get("failures", 0) + stats.get("unreachable", 0), "failed_tasks": failed,
            "rc": proc.returncode, "load": (load, os.getloadavg()[0])}


def progress(message):
    print("%s %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def summary(report_dir):
    reports = list(report_dir.glob("*.json"))
    if not reports:
        return {"total": 0, "statuses": {}}
    return json.loads(reports[0].read_text())["summary"]


class Subject:
    """One role on its own fresh lab host."""

    def __init__(self, label, work):
        self.label = label
        self.work = work
        self.host = "bench-cis-%s-%d" % (label.replace("_", "-"), os.getpid())
        self.collections = work / ("collections-" + label)
        (self.collections / "ansible_collections").mkdir(parents=True)
        self.roles_path = None
        self.report_dir = None
        self.result = {"label": label, "error": None}
        self.inventory = work / ("inventory-%s.yml" % label)
        self.inventory.write_text(yaml.safe_dump({"all": {"hosts": {self.host: None}, "vars": {
            "ansible_connection": "containers.podman.podman",
            "ansible_python_interpreter": "/usr/bin/python3"}}}))
        self.playbook = work / ("site-%s.yml" % label)

    def link_collection(self, namespace, name, tree):
        link = self.collections / "ansible_collections" / namespace / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(tree)

    def write_play(self, role, role_vars):
        self.playbook.write_text(yaml.safe_dump([{
            "name": "Hardening: " + self.label, "hosts": "all", "gather_facts": True,
            "roles": [dict({"role": role}, vars=role_vars) if role_vars else {"role": role}]}], sort_keys=False))

    def converge(self):
        for key, name in (("first", "converge"), ("rerun", "re-run")):
            run = run_playbook(self.collections, self.inventory, self.playbook, self.roles_path)
            self.result[key] = run
            progress("%s %s: %.1f s, rc %d, changed %d, failures %d"
                     % (self.label, name, run["seconds"], run["rc"], run["changed"], run["failures"]))
            if self.report_dir:
                statuses = summary(self.report_dir)
                if key == "first":
                    self.result["first_statuses"] = statuses["statuses"]
                    self.result["controls"] = statuses["total"]
                else:
                    self.result["statuses"] = statuses["statuses"]


def guardrail_subject(label, tree, work, install_packages):
    subject = Subject(label, work)
    subject.link_collection("guardrail", "ecs", tree)
    subject.report_dir = work / ("reports-" + label)
    subject.write_play("guardrail.ecs.cis_hardening", {
        "cis_hardening_level": 2, "cis_hardening_install_packages": install_packages,
        "cis_hardening_report_dir": str(subject.report_dir)})
    return subject


def peer_subject(label, path, work):
    spec = PEERS[label]
    path = Path(path).resolve()
    subject = Subject(label, work)
    galaxy = path / "galaxy.yml"
    if galaxy.is_file() and spec["role"]:
        meta = yaml.safe_load(galaxy.read_text())
        subject.link_collection(meta["namespace"], meta["name"], path)
        role = "%s.%s.%s" % (meta["namespace"], meta["name"], spec["role"])
    elif (path / "tasks" / "main.yml").is_file():
        subject.roles_path = path.parent
        role = path.name
    else:
        raise SystemExit("--peer %s=%s: neither a collection with galaxy.yml nor a role directory with "
                         "tasks/main.yml" % (label, path))
    subject.write_play(role, spec["vars"])
    return subject


def parse_peers(values):
    peers = {}
    for label, spec in PEERS.items():
        if os.environ.get(spec["env"]):
            peers[label] = os.environ[spec["env"]]
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or label not in PEERS or not path:
            raise SystemExit("--peer expects NAME=PATH with NAME one of %s, got %r" % (", ".join(PEERS), value))
        peers[label] = path
    return peers


def concurrently(subjects, step):
    """Run step(subject) for every subject at once; a failure marks that subject only."""
    def guarded(subject):
        try:
            step(subject)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            subject.result["error"] = subject.result["error"] or str(exc)
    threads = [threading.Thread(target=guarded, args=(s,)) for s in subjects if not s.result["error"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def lynis_step(key):
    def step(subject):
        index, took, tests = lynis_index(subject.host)
        subject.result[key] = index
        subject.result[key + "_seconds"] = took
        subject.result[key + "_tests"] = tests
        progress("%s %s: index %d, %s tests, %.0f s" % (subject.label, key, index, tests, took))
    return step


def before(subject):
    start_host(subject.host)
    if subject.lynis:
        install_lynis(subject.host)
        lynis_step("lynis_before")(subject)


def fmt(value, pattern="%.1f"):
    return "-" if value is None else pattern % value


def show(results, missing, lynis):
    print()
    print("%-14s %10s %10s %8s %9s %7s %7s %7s  %s" % (
        "role", "converge s", "re-run s", "changed", "failures", "lynis<", "lynis>", "delta", "controls by status"))
    for r in results:
        first, rerun = r.get("first") or {}, r.get("rerun") or {}
        failures = "%d/%d" % (first["failures"], rerun["failures"]) if first and rerun else "-"
        before_, after = r.get("lynis_before"), r.get("lynis_after")
        delta = after - before_ if before_ is not None and after is not None else None
        statuses = r.get("statuses")
        print("%-14s %10s %10s %8s %9s %7s %7s %7s  %s" % (
            r["label"], fmt(first.get("seconds")), fmt(rerun.get("seconds")), fmt(rerun.get("changed"), "%d"),
            failures, fmt(before_, "%d"), fmt(after, "%d"), fmt(delta, "%+d"),
            json.dumps(statuses, sort_keys=True) if statuses is not None else "n/a (no per-control report)"))
    for label in missing:
        print("%-14s NOT MEASURED: no path for %s (--peer %s=PATH or %s)" % (
            label, PEERS[label]["what"], label, PEERS[label]["env"]))
    if not lynis:
        print("Lynis NOT MEASURED (--no-lynis)")
    print()
    for r in results:
        if r["error"]:
            print("%s: ERROR %s" % (r["label"], r["error"]))
        for run in ("first", "rerun"):
            data = r.get(run)
            if data:
                print("%s %s: %.1f s, rc %d, %d remote executions, changed %d, load average %.2f -> %.2f%s" % (
                    r["label"], run, data["seconds"], data["rc"], data["remote"], data["changed"],
                    data["load"][0], data["load"][1],
                    "".join("\n    failed: " + t for t in data["failed_tasks"][:5])))
        if r.get("lynis_before") is not None:
            print("%s lynis: before %s tests in %.0f s, after %s tests in %.0f s" % (
                r["label"], r["lynis_before_tests"], r["lynis_before_seconds"],
                r.get("lynis_after_tests", "?"), r.get("lynis_after_seconds", 0.0)))
    print("load average at the end: %.2f %.2f %.2f (%d cores)" % (os.getloadavg() + (os.cpu_count(),)))


def ratios(results):
    base = results[0]
    if not base.get("first"):
        return
    for r in results[1:]:
        if not r.get("first") or not r.get("rerun"):
            continue
        parts = ["converge %.2fx" % (r["first"]["seconds"] / base["first"]["seconds"]),
                 "re-run %.2fx" % (r["rerun"]["seconds"] / base["rerun"]["seconds"])]
        if r.get("lynis_after") is not None and base.get("lynis_after") is not None:
            parts.append("lynis index after %d vs %d" % (r["lynis_after"], base["lynis_after"]))
        print("ratio %s / %s: %s" % (r["label"], base["label"], ", ".join(parts)))


def targets_met(current, install_packages):
    first, rerun = current.get("first"), current.get("rerun")
    if current["error"] or not first or not rerun:
        return False
    ok = (rerun["seconds"] <= TARGETS["rerun"] and current.get("controls", 0) >= TARGETS["controls"]
          and rerun["changed"] == 0 and first["failures"] == 0 and rerun["failures"] == 0)
    if not install_packages:
        ok = ok and first["seconds"] <= TARGETS["first"]
    return ok


def interrupted(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    signal.signal(signal.SIGTERM, interrupted)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PATH",
                        help="checkout of a peer role to measure: %s" % ", ".join(PEERS))
    parser.add_argument("--no-lynis", dest="lynis", action="store_false", help="skip the Lynis audits")
    parser.add_argument("--no-install-packages", dest="install_packages", action="store_false",
                        help="run this role with cis_hardening_install_packages: false")
    parser.add_argument("--previous", action="store_true", help="also measure this role at HEAD~1")
    args = parser.parse_args()
    peers = parse_peers(args.peer)
    missing = [label for label in PEERS if label not in peers]
    for label in missing:
        print("WARNING: %s NOT MEASURED: give its checkout with --peer %s=PATH or %s"
              % (PEERS[label]["what"], label, PEERS[label]["env"]), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-cis-") as tmp:
        work = Path(tmp)
        subjects = [guardrail_subject("cis_hardening", ROOT, work, args.install_packages)]
        previous = work / "previous"
        if args.previous:
            proc = subprocess.run(["git", "worktree", "add", "--detach", str(previous), "HEAD~1"], cwd=ROOT,
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit("previous commit not available: %s" % proc.stderr.strip())
            subjects.append(guardrail_subject("previous", previous, work, args.install_packages))
        subjects += [peer_subject(label, path, work) for label, path in peers.items()]
        for subject in subjects:
            subject.lynis = args.lynis
        try:
            concurrently(subjects, before)
            for subject in subjects:
                if not subject.result["error"]:
                    try:
                        subject.converge()
                    except (RuntimeError, subprocess.SubprocessError) as exc:
                        subject.result["error"] = str(exc)
            if args.lynis:
                concurrently(subjects, lynis_step("lynis_after"))
        except KeyboardInterrupt:
            # What was measured so far is still printed below, marked as such.
            for subject in subjects:
                subject.result["error"] = subject.result["error"] or "interrupted before the end"
        finally:
            for subject in subjects:
                podman("rm", "-f", subject.host, check=False)
            if previous.exists():
                subprocess.run(["git", "worktree", "remove", "--force", str(previous)], cwd=ROOT,
                               capture_output=True, check=False)
    results = [s.result for s in subjects]
    show(results, missing, args.lynis)
    ratios(results)
    ok = targets_met(results[0], args.install_packages)
    print("targets for cis_hardening (re-run <= 45 s and changes nothing, no failures, >= 150 controls%s): %s"
          % ("" if args.install_packages else ", first <= 90 s", "met" if ok else "NOT met"))
    return 0 if ok and all(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
