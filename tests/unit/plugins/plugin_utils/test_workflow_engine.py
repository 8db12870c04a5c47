"""plugin_utils/workflow.py and tofu.run_process: the parts that need no git
or tofu - backend detection, masking, interrupts of a real child process."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import tofu as t
from ansible_collections.guardrail.ecs.plugins.plugin_utils import workflow as w


def test_backend_settings_from_hcl_and_json(tmp_path):
    (tmp_path / "main.tf").write_text('terraform {\n  backend "s3" {\n    bucket = "b"\n'
                                      '    key    = "k.tfstate"\n    use_lockfile = true\n  }\n}\n')
    assert w.backend_settings(str(tmp_path)) == {"type": "s3", "bucket": "b", "key": "k.tfstate",
                                                 "use_lockfile": "true"}
    assert w.backend_settings(str(tmp_path), {"key": "other"})["key"] == "other"
    (tmp_path / "main.tf").unlink()
    (tmp_path / "b.tf.json").write_text(json.dumps({"terraform": {"backend": {"s3": {
        "bucket": "b", "key": "k", "dynamodb_table": "t"}}}}))
    assert w.backend_settings(str(tmp_path))["dynamodb_table"] == "t"
    assert w.backend_settings(str(tmp_path / "missing")) == {}


def test_redact_masks_only_secrets():
    result = {"profile": "prod", "counts": {"create": 10}, "stdout": "key=abc-secret-1 prod",
              "list": ["abc-secret-1", 10]}
    assert w.redact(result, {"abc-secret-1"}) == {
        "profile": "prod", "counts": {"create": 10}, "stdout": f"key={t.MASK} prod", "list": [t.MASK, 10]}
    assert w.redact(result, set()) == result


def test_secrets_of_takes_credentials_not_plain_options():
    params = {"secret_key": "sk", "session_token": None, "access_key": "ak",
              "variables": {"release": "prod"},
              "tofu_options": {"parallelism": 10, "backend_config": {"password": "pw", "bucket": "b"}}}
    assert w.secrets_of(params) == {"sk", "ak", "pw"}


IGNORES_SIGINT = ("import signal, sys, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                  "print('ready', flush=True)\ntime.sleep(60)\n")
STOPS_ON_SIGINT = ("import signal, sys, time\n"
                   "def stop(*a):\n    print('state written', flush=True)\n    sys.exit(130)\n"
                   "signal.signal(signal.SIGINT, stop)\nopen('ready', 'w').close()\nprint('ready', flush=True)\n"
                   "time.sleep(60)\n")


def test_timeout_sends_sigint_and_lets_the_child_finish(tmp_path):
    rc, out, _err, why = t.run_process([sys.executable, "-c", STOPS_ON_SIGINT], str(tmp_path),
                                       dict(os.environ), timeout=3, grace=10)
    assert (rc, why) == (130, "timeout") and "state written" in out


def test_child_ignoring_sigint_is_escalated_after_the_grace(tmp_path):
    started = time.monotonic()
    rc, _out, _err, why = t.run_process([sys.executable, "-c", IGNORES_SIGINT], str(tmp_path),
                                        dict(os.environ), timeout=1, grace=1)
    assert why == "timeout" and rc == -signal.SIGTERM
    assert time.monotonic() - started < 10


def _when_ready(path, action):
    """Runs `action` once the child has installed its handler (it creates `path`)."""
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    action()


def test_signal_forwarded_once_as_sigint(tmp_path):
    interrupts = t.Interrupts()
    threading.Thread(target=_when_ready, args=(tmp_path / "ready", lambda: (
        interrupts._handler(signal.SIGTERM, None), interrupts._handler(signal.SIGINT, None)))).start()
    rc, out, _err, why = t.run_process([sys.executable, "-c", STOPS_ON_SIGINT], str(tmp_path),
                                       dict(os.environ), timeout=30, grace=10, interrupts=interrupts)
    assert (rc, why) == (130, "SIGTERM") and out.count("state written") == 1


@pytest.mark.parametrize("command,pushing", [("apply", True), ("destroy", True), ("plan", False),
                                             (["terraform", "apply"], True), (["make", "apply"], False)])
def test_only_apply_and_destroy_push(command, pushing):
    flow = w.Workflow.__new__(w.Workflow)
    flow.command = command
    assert flow.pushing() is pushing


LOCK_ERROR = """
Error: Error acquiring the state lock

Error message: operation error S3: PutObject, https response error StatusCode: 412
Lock Info:
  ID:        1111-2222
  Path:      states/k/terraform.tfstate
  Operation: OperationTypeApply
  Who:       alice@ctl1
  Version:   1.11.4
  Created:   2026-12-06 23:00:00.123456789 +0000 UTC
  Info:

Terraform acquires a state lock to protect the state from being written
"""


def test_state_lock_info_parsed_from_tofus_error():
    info = w.state_lock_info(LOCK_ERROR)
    assert info == {"ID": "1111-2222", "Path": "states/k/terraform.tfstate", "Operation": "OperationTypeApply",
                    "Who": "alice@ctl1", "Version": "1.11.4", "Created": "2026-12-06 23:00:00.123456789 +0000 UTC"}
    assert w.tofu_time(info["Created"]).isoformat() == "2026-12-06T23:00:00.123456+00:00"
    boxed = "\n".join("│ " + line for line in LOCK_ERROR.splitlines())
    assert w.state_lock_info(boxed)["Who"] == "alice@ctl1"
    assert w.state_lock_info("Error: Invalid reference\n  ID: 1") is None
    # A command line passed through prints in colour.
    coloured = "\n".join(f"\x1b[31m│\x1b[0m \x1b[0m{line}\x1b[0m" for line in LOCK_ERROR.splitlines())
    assert w.state_lock_info(coloured) == info
    assert w.state_lock_info("Error acquiring the state lock\nno info") is None


@pytest.mark.parametrize("command, asks", [
    (["tofu", "apply"], True), (["tofu", "apply", "-auto-approve"], False),
    (["tofu", "apply", "--auto-approve"], False), (["tofu", "apply", "-auto-approve=true"], False),
    (["tofu", "apply", "-input=false", "plan.bin"], False), (["terraform", "apply", "-no-color", "p"], False),
    (["tofu", "destroy", "-target=x"], True), (["tofu", "apply", "-destroy", "-target=x"], True),
    (["tofu", "plan"], False), (["make", "apply"], False), (["tofu", "import", "a", "b"], False),
    # An option's value in the next argument is no plan file.
    (["tofu", "apply", "-target", "terraform_data.service"], True), (["tofu", "apply", "-var", "x=1"], True),
    (["tofu", "apply", "-var", "x=1", "plan.bin"], False), (["tofu", "apply", "--", "plan.bin"], False),
    # As Go's flag package reads a boolean: any of its false spellings, the last one winning.
    (["tofu", "apply", "-auto-approve=false"], True), (["tofu", "apply", "-auto-approve=f"], True),
    (["tofu", "apply", "-auto-approve", "-auto-approve=false"], True),
    (["tofu", "apply", "-auto-approve=0", "-auto-approve"], False),
    # Global options before the command.
    (["tofu", "-chdir=.", "apply"], True), (["tofu", "-chdir=.", "apply", "-auto-approve"], False),
])
def test_a_command_line_that_would_stop_at_tofus_question_is_known(command, asks):
    assert w.asks_for_approval(command) is asks
    if asks:
        with pytest.raises(w.WorkflowError, match="nothing was run"):
            w.validate_command(command)


class _Engine(w.Workflow):
    def __init__(self, record, taken=True):  # pylint: disable=super-init-not-called
        self.lock_record, self.lock_taken = record, taken


def taken_over_record(pid, host="ctl1", created="2026-12-06T22:59:59.000000Z"):
    from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock

    return {"taken_over": {"run_id": "r1", "owner": "alice", "host": host, "created": created,
                           "boot_id": run_lock.boot_id(), "children": [{"pid": pid, "command": "apply"}]}}


def gone_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_state_lock_released_only_when_left_by_the_gone_taken_over_run():
    info = w.state_lock_info(LOCK_ERROR)
    assert "which is gone" in _Engine(taken_over_record(gone_pid())).left_by_taken_over_run(info)
    # A live tofu, a lock of another host or from before that run, no run taken over: never.
    assert _Engine(taken_over_record(os.getpid())).left_by_taken_over_run(info) is None
    assert _Engine(taken_over_record(gone_pid(), host="ctl2")).left_by_taken_over_run(info) is None
    late = taken_over_record(gone_pid(), created="2026-12-06T23:10:00.000000Z")
    assert _Engine(late).left_by_taken_over_run(info) is None
    assert _Engine(taken_over_record(gone_pid()), taken=False).left_by_taken_over_run(info) is None
    assert _Engine({}).left_by_taken_over_run(info) is None


def test_zombie_is_not_alive():
    from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while run_lock.process_state(child.pid) != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert run_lock.process_alive(child.pid) is False
    child.wait()
