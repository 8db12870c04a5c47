# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running OpenTofu (or Terraform) with exact change detection.

Plain Python, no AnsibleModule. Variables travel only as TF_VAR_* environment
(never on the command line, where process listings and logs would show them);
the workspace travels as TF_WORKSPACE so the selection on disk is left alone.
`changed` and the diff come from the plan's JSON (`show -json`), never from
matching plan text.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import read_cache, write_cache

COMMANDS = ("init", "validate", "plan", "apply", "destroy", "output")
# Commands that write the state: their process is recorded in the run lock.
WRITING = ("apply", "destroy", "import", "taint", "untaint", "refresh", "state")
MASK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
DEFAULT_TIMEOUT = 3600
# Seconds tofu gets after SIGINT to finish in-flight operations and write its
# state, then SIGTERM, then (after KILL_AFTER more) SIGKILL.
DEFAULT_GRACE = 60
KILL_AFTER = 10


class TofuError(Exception):
    """A tofu/terraform command failed or its input was invalid.

    `stderr` holds the tool's own error text, `rc` its exit code.
    """

    def __init__(self, message, rc=None, stdout="", stderr="", cmd=None, interrupted=None):
        super().__init__(message)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.cmd = cmd
        # Why the command was stopped ("timeout", "SIGINT", "SIGTERM"), or None.
        self.interrupted = interrupted


class Interrupts:
    """Signals received while tofu runs, forwarded as SIGINT to tofu.

    Tofu runs in its own process group (a terminal's Ctrl-C does not reach it
    behind our back): `guard()` installs SIGINT/SIGTERM/SIGHUP handlers (main thread
    only) that record the signal and send SIGINT to every running tofu group,
    so tofu stops gracefully and writes its state.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.groups = set()
        self.received = None
        self.depth = 0

    def register(self, pgid):
        with self.lock:
            self.groups.add(pgid)
            pending = self.received
        if pending:
            _signal_group(pgid, signal.SIGINT)

    def unregister(self, pgid):
        with self.lock:
            self.groups.discard(pgid)

    def _handler(self, signum, _frame):
        # Only the first signal is forwarded: a second SIGINT makes tofu exit
        # at once without writing its state. Escalation is run_process's.
        with self.lock:
            first = self.received is None
            self.received = self.received or signal.Signals(signum).name
            groups = list(self.groups) if first else []
        for pgid in groups:
            _signal_group(pgid, signal.SIGINT)

    def guard(self):
        return _Guard(self)


class _Guard:
    # SIGHUP: a closed SSH session or a cancelled job; by default it would
    # kill the wrapper, not stop tofu gracefully.
    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, interrupts):
        self.interrupts = interrupts
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            if self.interrupts.depth == 0:
                self.interrupts.received = None
                for signum in self.SIGNALS:
                    self.previous[signum] = signal.signal(signum, self.interrupts._handler)
            self.interrupts.depth += 1
        return self.interrupts

    def __exit__(self, *exc):
        if threading.current_thread() is threading.main_thread():
            self.interrupts.depth -= 1
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


INTERRUPTS = Interrupts()
# A callable given each line of standard output as it is printed (the
# guardrail command shows a long apply's progress), or None.
ECHO = None


def _signal_group(pgid, signum):
    try:
        os.killpg(pgid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _capture():
    """(write descriptor, read descriptor) of a new, already unlinked file
    (mode 0600) that takes a child's output: a file, unlike a pipe, keeps
    taking it after we die, so tofu never dies of SIGPIPE mid-write, and
    the output (which may hold secrets) vanishes with the last descriptor."""
    write, path = tempfile.mkstemp(prefix="guardrail-", suffix=".out")
    try:
        return write, os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.unlink(path)


class _Tail:
    """What a child wrote to a _capture() file so far, and, when `echo` is
    given, each complete line shown as it comes."""

    def __init__(self, descriptor, echo=None):
        self.descriptor = descriptor
        self.echo = echo
        self.data = bytearray()
        self.shown = 0

    def drain(self, final=False):
        while True:
            block = os.read(self.descriptor, 1 << 16)
            if not block:
                break
            self.data += block
        if self.echo is not None:
            end = len(self.data) if final else self.data.rfind(b"\n") + 1
            if end > self.shown:
                for line in bytes(self.data[self.shown:end]).decode("utf-8", "replace").splitlines(True):
                    self.echo(line)
                self.shown = end

    def text(self):
        return bytes(self.data).decode("utf-8", "replace")


def run_process(cmd, cwd, env, timeout, grace=DEFAULT_GRACE, interrupts=INTERRUPTS, pass_fds=(),
                on_start=None):
    """Runs `cmd` in a session of its own and returns (rc, stdout, stderr,
    interrupted). Its output goes to unlinked files, not pipes, so our death
    leaves it running to its end (tofu then saves its state). On timeout or
    a signal recorded by `interrupts`, the group gets SIGINT, then `grace`
    seconds to exit, then SIGTERM, then SIGKILL; what is left of the group
    afterwards (orphaned provisioners) is terminated too. `interrupted` is
    None, "timeout" or the signal's name. `pass_fds` are inherited (the run's
    liveness lock); `on_start(pid)` is called once the process runs. Files it
    creates are private (umask 077): state and plans may hold secrets."""
    out_write, out_read = _capture()
    err_write, err_read = _capture()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out_write,
                                stderr=err_write, start_new_session=True, pass_fds=tuple(pass_fds),
                                umask=0o077)
    except BaseException:
        for descriptor in (out_read, err_read):
            os.close(descriptor)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    interrupts.register(proc.pid)
    out, err = _Tail(out_read, ECHO), _Tail(err_read)
    deadline = time.monotonic() + timeout if timeout else None
    reason, stop_at, step = None, None, 0
    exited = _exit_waiter(proc)
    try:
        if on_start is not None:
            try:
                on_start(proc.pid)
            except Exception:  # pylint: disable=broad-exception-caught
                pass  # a record of the child is a help; the child runs regardless
        while True:
            if exited(0.2 if reason is None else 0.1):
                break
            out.drain()
            now = time.monotonic()
            if reason is None:
                if interrupts.received:
                    reason = interrupts.received
                elif deadline is not None and now >= deadline:
                    reason = "timeout"
                if reason:
                    _signal_group(proc.pid, signal.SIGINT)
                    stop_at, step = now + grace, 1
            elif now >= stop_at and step < 3:
                _signal_group(proc.pid, signal.SIGTERM if step == 1 else signal.SIGKILL)
                stop_at, step = now + KILL_AFTER, step + 1
        if reason is None and interrupts.received and proc.returncode != 0:
            # The forwarded SIGINT stopped it before this loop looked.
            reason = interrupts.received
    finally:
        exited.close()
        if reason is not None:
            _signal_group(proc.pid, signal.SIGTERM)
        interrupts.unregister(proc.pid)
        try:
            out.drain(final=True)
            err.drain(final=True)
        finally:
            os.close(out_read)
            os.close(err_read)
    return proc.returncode, out.text(), err.text(), reason


class _exit_waiter:  # pylint: disable=invalid-name
    """waiter(seconds) -> whether `proc` exited, waiting at most that long.
    It wakes the moment the process exits (a pidfd where Linux has them;
    Popen.wait's own polling sleeps up to 50 ms past the exit otherwise)."""

    def __init__(self, proc):
        self.proc = proc
        try:
            self.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def __call__(self, seconds):
        if self.pidfd is not None:
            if not select.select([self.pidfd], [], [], seconds)[0]:
                return False
            seconds = None
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def close(self):
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def private_state(project_path):
    """Makes the local state files in `project_path` mode 0600: state holds
    secrets, and one written by an older run (or another tool) may be 0644."""
    for name in ("terraform.tfstate", "terraform.tfstate.backup"):
        try:
            descriptor = os.open(os.path.join(project_path, name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            mode = os.fstat(descriptor).st_mode
            if mode & 0o077 and (mode & 0o170000) == 0o100000:
                os.fchmod(descriptor, 0o600)
        finally:
            os.close(descriptor)


def find_binary(binary=None):
    """The executable to run: `binary` when given (a name on PATH or a path),
    else `tofu` when on PATH, else `terraform`."""
    candidates = [binary] if binary else ["tofu", "terraform"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    if binary and os.sep in binary:
        raise TofuError(f"binary {binary} is not an executable file")
    raise TofuError(f"no {' or '.join(candidates)} executable found on PATH "
                    f"({os.environ.get('PATH', '')})")


# The oldest releases with every feature used here (`apply -json` outputs and
# change summaries, `terraform_data`, `plan -out` refused when stale).
MIN_VERSIONS = {"OpenTofu": (1, 6, 0), "Terraform": (1, 5, 0)}
# The user's cache file (common.files) that remembers which product and version each binary is.
VERSIONS_CACHE = "tool-versions.json"
VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+")
# The options that shape how tofu runs, shared by the tofu module and the
# workflow's tofu_options.
OPTIONS_SPEC = dict(
    backend_config=dict(type="dict", default={}, no_log=True),
    backend_config_files=dict(type="list", elements="path", default=[]),
    lock=dict(type="bool"),
    lock_timeout=dict(type="str"),
    parallelism=dict(type="int"),
    targets=dict(type="list", elements="str", default=[]),
    replace=dict(type="list", elements="str", default=[]),
    timeout=dict(type="int", default=DEFAULT_TIMEOUT),
)


def check_version(binary):
    """(product, version) of the executable `binary` names, or TofuError when
    it is missing, is neither OpenTofu nor Terraform, or is older than
    MIN_VERSIONS. A `version` run (no update check) the first time; then the
    answer is kept in the user's cache for that same file (path, size, mtime)."""
    path = os.path.realpath(find_binary(binary))
    try:
        info = os.stat(path)
    except OSError as exc:
        raise TofuError(f"cannot read {path}: {exc}") from exc
    key = f"{path}\0{info.st_size}\0{info.st_mtime_ns}"
    known = read_cache(VERSIONS_CACHE)
    cached = known.get(key)
    if (isinstance(cached, list) and len(cached) == 2 and cached[0] in MIN_VERSIONS
            and isinstance(cached[1], str) and VERSION_RE.match(cached[1])):
        product, version = cached
    else:
        product, version = _ask_version(path)
        known[key] = [product, version]
        write_cache(VERSIONS_CACHE, known)
    least = MIN_VERSIONS.get(product, (0, 0, 0))
    numbers = tuple(int(part) for part in VERSION_RE.match(version).group(0).split("."))
    if numbers < least:
        raise TofuError(f"{path} is {product} {version}, older than the {'.'.join(map(str, least))} "
                        "this collection needs: upgrade it, or name another with binary")
    return product, version


def _ask_version(path):
    env = dict(os.environ, CHECKPOINT_DISABLE="1")
    try:
        proc = subprocess.run([path, "version"], capture_output=True, text=True, timeout=60,
                              env=env, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TofuError(f"cannot run {path} version: {exc}") from exc
    first = (proc.stdout.strip().splitlines() or [""])[0]
    product, _sep, version = first.partition(" v")
    if proc.returncode != 0 or product not in MIN_VERSIONS or not VERSION_RE.match(version):
        raise TofuError(f"{path} is not OpenTofu or Terraform: `{path} version` printed "
                        f"{(first or proc.stderr.strip())[:200]!r}")
    return product, version


def env_value(value):
    """A variable's value as tofu reads it from TF_VAR_*: strings raw, every
    other type as JSON, which tofu parses as an HCL literal."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def action_kind(actions):
    """One word for a resource change's action list."""
    actions = list(actions or [])
    if actions in (["delete", "create"], ["create", "delete"]):
        return "replace"
    if len(actions) == 1 and actions[0] in ("create", "update", "delete", "read", "no-op"):
        return actions[0]
    return "+".join(actions) or "no-op"


def _mask(value, sensitive):
    """`value` with every part flagged in tofu's *_sensitive structure masked."""
    if sensitive is True:
        return MASK
    if isinstance(value, dict) and isinstance(sensitive, dict):
        return {k: _mask(v, sensitive.get(k, False)) for k, v in value.items()}
    if isinstance(value, list) and isinstance(sensitive, list):
        return [_mask(v, sensitive[i] if i < len(sensitive) else False) for i, v in enumerate(value)]
    return value


def _sensitive_leaves(value, sensitive, found):
    """Collects the scalar values tofu flags as sensitive."""
    if sensitive is True:
        if isinstance(value, dict):
            for item in value.values():
                _sensitive_leaves(item, True, found)
        elif isinstance(value, list):
            for item in value:
                _sensitive_leaves(item, True, found)
        elif isinstance(value, str) and value:
            found.add(value)
    elif isinstance(value, dict) and isinstance(sensitive, dict):
        for key, item in value.items():
            _sensitive_leaves(item, sensitive.get(key, False), found)
    elif isinstance(value, list) and isinstance(sensitive, list):
        for index, item in enumerate(value):
            _sensitive_leaves(item, sensitive[index] if index < len(sensitive) else False, found)


def _sensitive_in(data, found):
    """Collects the values a tofu JSON document (output -json, show -json of
    a state or a plan) flags as sensitive, wherever they sit in it."""
    if isinstance(data, dict):
        if data.get("sensitive") is True and "value" in data:
            _sensitive_leaves(data["value"], True, found)
        for values, flags in (("values", "sensitive_values"), ("before", "before_sensitive"),
                              ("after", "after_sensitive")):
            if values in data and flags in data:
                _sensitive_leaves(data[values], data[flags], found)
        for item in data.values():
            _sensitive_in(item, found)
    elif isinstance(data, list):
        for item in data:
            _sensitive_in(item, found)


def sensitive_values(stdout, project_path):
    """The values tofu marks sensitive that a command run as given (`output
    -json`, `show -json`, `output -raw NAME`) may have printed: those its JSON
    output flags, and the sensitive outputs of the local state."""
    found = set()
    try:
        _sensitive_in(json.loads(stdout), found)
    except ValueError:
        pass
    try:
        with open(os.path.join(project_path, "terraform.tfstate"), encoding="utf-8") as handle:
            outputs = json.load(handle).get("outputs") or {}
    except (OSError, ValueError, AttributeError):
        outputs = {}
    for output in outputs.values() if isinstance(outputs, dict) else ():
        if isinstance(output, dict) and output.get("sensitive"):
            _sensitive_leaves(output.get("value"), True, found)
    return found


def _mask_known(value, secrets):
    """`value` with every string equal to a known secret masked."""
    if isinstance(value, dict):
        return {k: _mask_known(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_known(v, secrets) for v in value]
    return MASK if isinstance(value, str) and value in secrets else value


def summarize(plan, secrets=None):
    """Counts, per-resource changes and `changed` from `show -json` of a plan.

    Returns {"changed", "counts": {"create", "update", "delete", "replace"},
    "resources": [{"address", "action", "before", "after"}], "outputs_changed"}.
    Sensitive attribute values are masked in before/after; they are added to
    `secrets` when a set is given.
    """
    counts = {"create": 0, "update": 0, "delete": 0, "replace": 0}
    resources = []
    # Tofu does not flag every copy of a sensitive value (terraform_data's
    # `output` repeats a sensitive `input` unflagged), so any value it flags
    # anywhere is masked everywhere.
    secrets = set() if secrets is None else secrets
    declared = ((plan.get("configuration") or {}).get("root_module") or {}).get("variables") or {}
    for name, variable in (plan.get("variables") or {}).items():
        if (declared.get(name) or {}).get("sensitive"):
            _sensitive_leaves((variable or {}).get("value"), True, secrets)
    for change in plan.get("resource_changes") or []:
        detail = change.get("change") or {}
        _sensitive_leaves(detail.get("before"), detail.get("before_sensitive"), secrets)
        _sensitive_leaves(detail.get("after"), detail.get("after_sensitive"), secrets)
    for change in plan.get("resource_changes") or []:
        detail = change.get("change") or {}
        kind = action_kind(detail.get("actions"))
        if kind in counts:
            counts[kind] += 1
        elif kind not in ("no-op", "read"):
            raise TofuError(f"unknown plan action {detail.get('actions')} for {change.get('address')}")
        if kind in ("no-op", "read"):
            continue
        resources.append({
            "address": change.get("address"),
            "action": kind,
            "before": _mask_known(_mask(detail.get("before"), detail.get("before_sensitive")), secrets),
            "after": _mask_known(_mask(detail.get("after"), detail.get("after_sensitive")), secrets),
        })
    outputs_changed = sorted(
        name for name, change in (plan.get("output_changes") or {}).items()
        if action_kind(change.get("actions")) not in ("no-op", "read"))
    return {"changed": any(counts.values()) or bool(outputs_changed), "counts": counts,
            "resources": resources, "outputs_changed": outputs_changed}


def planned_outputs(plan):
    """Output values the plan already knows as {name: {"value", "sensitive"}},
    or None when any output is only known after apply."""
    outputs = {}
    changes = plan.get("output_changes") or {}
    for name, output in ((plan.get("planned_values") or {}).get("outputs") or {}).items():
        if "value" not in output or (changes.get(name) or {}).get("after_unknown"):
            return None
        outputs[name] = {"value": output["value"], "sensitive": bool(output.get("sensitive"))}
    return outputs


def mask_outputs(outputs, show_sensitive=False):
    """{name: value} from tofu's output JSON, sensitive values masked."""
    return {name: (output.get("value") if show_sensitive or not output.get("sensitive") else MASK)
            for name, output in sorted((outputs or {}).items())}


def diff_text(resources):
    """Before/after per resource, as Ansible's diff display takes them."""
    return [{"before_header": f"{r['address']} ({r['action']})", "after_header": r["address"],
             "before": json.dumps(r["before"], indent=2, sort_keys=True) + "\n" if r["before"] is not None else "",
             "after": json.dumps(r["after"], indent=2, sort_keys=True) + "\n" if r["after"] is not None else ""}
            for r in resources]


class Tofu:
    """One project directory and the options every command shares."""

    def __init__(self, project_path, binary=None, workspace=None, variables=None, var_files=None,
                 backend_config=None, backend_config_files=None, lock=None, lock_timeout=None,
                 parallelism=None, targets=None, replace=None, timeout=DEFAULT_TIMEOUT):
        if not os.path.isdir(project_path):
            raise TofuError(f"project_path {project_path} is not a directory")
        self.project_path = os.path.abspath(project_path)
        self.binary = find_binary(binary)
        self.workspace = workspace
        self.variables = dict(variables or {})
        self.var_files = [os.path.abspath(os.path.join(self.project_path, f)) for f in var_files or []]
        for path in self.var_files:
            if not os.path.isfile(path):
                raise TofuError(f"var file {path} does not exist")
        self.backend_config = dict(backend_config or {})
        self.backend_config_files = list(backend_config_files or [])
        self.lock = lock
        self.lock_timeout = lock_timeout
        self.parallelism = parallelism
        self.targets = list(targets or [])
        self.replace = list(replace or [])
        self.timeout = timeout
        self.grace = DEFAULT_GRACE
        # Descriptors every tofu process inherits (the run's liveness lock),
        # and a callable told the pid of each state-writing command.
        self.pass_fds = ()
        self.on_start = None
        self.log = []
        # Sensitive values seen in plans and outputs; masked in stdout/stderr,
        # where the tool itself may print them.
        self.secrets = set()
        # Called with every plan's JSON before it is applied or saved; raises
        # to stop it (the plan policy).
        self.plan_check = None

    # -- process -----------------------------------------------------------
    def env(self, workspace=True):
        env = dict(os.environ)
        # Only our own TF_VAR_* may reach the tool: a stray one in the
        # controller's environment must not silently change a plan.
        for key in [k for k in env if k.startswith("TF_VAR_")]:
            del env[key]
        env.update(TF_IN_AUTOMATION="1", TF_INPUT="0")
        if self.workspace and workspace:
            env["TF_WORKSPACE"] = self.workspace
        else:
            env.pop("TF_WORKSPACE", None)
        for name, value in self.variables.items():
            env[f"TF_VAR_{name}"] = env_value(value)
        return env

    def run(self, *args, check=True, workspace=True, ok_codes=(), log_stdout=True):
        """Runs the tool. `log_stdout=False` keeps stdout (raw JSON that may
        hold sensitive values) out of the log that results show."""
        cmd = [self.binary, *args]
        if INTERRUPTS.received:
            raise TofuError(f"{os.path.basename(cmd[0])} {args[0]} not started: interrupted by "
                            f"{INTERRUPTS.received}", cmd=cmd, interrupted=INTERRUPTS.received)
        try:
            rc, stdout, stderr, interrupted = run_process(
                cmd, self.project_path, self.env(workspace), self.timeout, grace=self.grace,
                pass_fds=self.pass_fds, on_start=self.on_start if args[0] in WRITING else None)
        except OSError as exc:
            raise TofuError(f"cannot run {cmd[0]}: {exc}", cmd=cmd) from exc
        if args[0] in WRITING:
            private_state(self.project_path)
        proc = subprocess.CompletedProcess(cmd, rc, stdout, stderr)
        proc.log_entry = {"cmd": cmd, "rc": rc, "stdout": stdout if log_stdout else "", "stderr": stderr}
        self.log.append(proc.log_entry)
        if interrupted:
            if "-json" in args:
                stdout, errors, _outputs = _json_messages(stdout)
                proc.log_entry["stdout"] = stdout
                stderr = "\n".join(errors) + "\n" + stderr
            why = f"timed out after {self.timeout}s" if interrupted == "timeout" else f"interrupted by {interrupted}"
            # What tofu said after the interrupt: its last lines and errors.
            tail = [line for line in stdout.splitlines() if line.strip()][-12:]
            errors = [line for line in _error_text(stderr).splitlines() if line.startswith("Error")]
            reported = self._masked("\n".join(tail + errors) or "(nothing)")
            raise TofuError(f"{os.path.basename(cmd[0])} {args[0]} {why}: it was sent SIGINT to stop "
                            f"and write its state, and exited with rc={rc}; it reported: {reported}",
                            rc=rc, stdout=stdout, stderr=stderr, cmd=cmd, interrupted=interrupted)
        if check and proc.returncode not in (0, *ok_codes):
            raise TofuError(f"{os.path.basename(cmd[0])} {args[0]} failed (rc={proc.returncode}): "
                            f"{self._masked(_error_text(proc.stderr or proc.stdout))}",
                            rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, cmd=cmd)
        return proc

    def _masked(self, text):
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    @property
    def stdout(self):
        return self._masked("".join(entry["stdout"] for entry in self.log))

    @property
    def stderr(self):
        return self._masked("".join(entry["stderr"] for entry in self.log))

    # -- commands ----------------------------------------------------------
    def _common(self):
        args = ["-input=false", "-no-color"]
        if self.lock is not None:
            args.append(f"-lock={'true' if self.lock else 'false'}")
        if self.lock_timeout:
            args.append(f"-lock-timeout={self.lock_timeout}")
        return args

    def initialised(self):
        return os.path.isdir(os.path.join(self.project_path, ".terraform"))

    def init(self):
        args = ["init", *self._common()]
        args += [f"-backend-config={k}={v}" for k, v in sorted(self.backend_config.items())]
        args += [f"-backend-config={path}" for path in self.backend_config_files]
        # Without TF_WORKSPACE: init would record that workspace as the one
        # selected on disk, and the selection is the user's, not ours.
        self.run(*args, workspace=False)
        # A configuration using only built-in resources leaves no trace of
        # init; the directory marks it done so the next run does not repeat it.
        os.makedirs(os.path.join(self.project_path, ".terraform"), exist_ok=True)

    def ensure_init(self):
        if self.initialised():
            return False
        self.init()
        return True

    def validate(self):
        self.run("validate", "-no-color")

    def plan(self, out, destroy=False):
        """Saves a plan to `out`; True when it holds changes."""
        args = ["plan", *self._common(), "-detailed-exitcode", f"-out={out}"]
        if destroy:
            args.append("-destroy")
        args += self.change_options()
        return self.run(*args, ok_codes=(2,)).returncode == 2

    def change_options(self):
        """The options that shape a planned change: parallelism, var files, targets, replacements."""
        args = [f"-parallelism={self.parallelism}"] if self.parallelism else []
        args += [f"-var-file={path}" for path in self.var_files]
        args += [f"-target={target}" for target in self.targets]
        args += [f"-replace={address}" for address in self.replace]
        return args

    def apply_error(self, proc, errors, cmd):
        """The TofuError of a failed `apply -json`: its error diagnostics, or stderr."""
        detail = self._masked("\n".join(errors) or _error_text(proc.stderr))
        return TofuError(f"{os.path.basename(self.binary)} apply failed (rc={proc.returncode}): {detail}",
                         rc=proc.returncode, stdout=proc.log_entry["stdout"], stderr=proc.stderr, cmd=cmd)

    def show_plan(self, planfile):
        proc = self.run("show", "-json", "-no-color", planfile, log_stdout=False)
        try:
            return json.loads(proc.stdout)
        except ValueError as exc:
            raise TofuError(f"cannot parse show -json output: {exc}") from exc

    def apply_plan(self, planfile):
        """Applies a saved plan. Returns the outputs apply reported, shaped as
        `output -json` shapes them (sensitive ones without a value), or None.
        `-json` makes apply report them, saving a run of `output`; its
        messages are logged as the usual text."""
        args = ["apply", "-json", *self._common()]
        if self.parallelism:
            args.append(f"-parallelism={self.parallelism}")
        proc = self.run(*args, planfile, check=False)
        proc.log_entry["stdout"], errors, outputs = _json_messages(proc.stdout)
        if proc.returncode != 0:
            raise self.apply_error(proc, errors, [self.binary, *args, planfile])
        return outputs

    def outputs(self):
        proc = self.run("output", "-json", "-no-color", log_stdout=False)
        try:
            outputs = json.loads(proc.stdout or "{}")
        except ValueError as exc:
            raise TofuError(f"cannot parse output -json output: {exc}") from exc
        self.remember_sensitive(outputs)
        return outputs

    def remember_sensitive(self, outputs):
        for output in outputs.values():
            found = set()
            _sensitive_leaves(output.get("value"), bool(output.get("sensitive")), found)
            self.secrets.update(found)

    def execute(self, command, check_mode=False, show_sensitive=False):
        """Runs `command` the way the tofu module does. Returns a result dict:
        changed, command, counts, resources, outputs, initialised, applied.
        SIGINT/SIGTERM/SIGHUP meanwhile stop tofu gracefully (see Interrupts)."""
        with INTERRUPTS.guard():
            return self._execute(command, check_mode, show_sensitive)

    def _execute(self, command, check_mode, show_sensitive):
        if command not in COMMANDS:
            raise TofuError(f"unknown command {command!r}: use one of {', '.join(COMMANDS)}")
        result = {"changed": False, "command": command, "applied": False, "initialised": False,
                  "counts": {"create": 0, "update": 0, "delete": 0, "replace": 0},
                  "resources": [], "outputs_changed": [], "outputs": {}}
        if command == "init":
            result["changed"] = not self.initialised()
            if not check_mode:
                self.init()
                result["initialised"] = True
            return result
        if command == "output":
            result["outputs"] = mask_outputs(self.outputs(), show_sensitive)
            return result
        result["initialised"] = self.ensure_init()
        if command == "validate":
            self.validate()
            return result
        handle, planfile = tempfile.mkstemp(prefix="guardrail-", suffix=".tfplan")
        os.close(handle)
        try:
            pending = self.plan(planfile, destroy=command == "destroy")
            reported = None
            if self.plan_check is not None:
                plan = self.show_plan(planfile)
                self.plan_check(plan)
                if command in ("apply", "destroy") and not check_mode and pending:
                    reported = self.apply_plan(planfile)
                    result["applied"] = True
            elif command in ("apply", "destroy") and not check_mode and pending:
                # Both only read the saved plan, and apply applies exactly it
                # whatever show reports, so they run side by side.
                reported, plan = side_by_side(lambda: self.apply_plan(planfile),
                                              lambda: self.show_plan(planfile))
                result["applied"] = True
            else:
                plan = self.show_plan(planfile)
            result.update(summarize(plan, self.secrets))
            known = planned_outputs(plan)
            if reported is not None and all("value" in o for o in reported.values()
                                            if show_sensitive or not o.get("sensitive")):
                known = reported
        finally:
            os.unlink(planfile)
        if command == "destroy" and result["applied"]:
            result["outputs"] = {}
        else:
            # Outputs the plan already knew are what apply stored; only values
            # known after apply need another process.
            outputs = known if known is not None else self.outputs()
            self.remember_sensitive(outputs)
            result["outputs"] = mask_outputs(outputs, show_sensitive)
        return result


def side_by_side(main, other):
    """(main(), other()), `other` run in a thread of its own meanwhile and
    waited for whatever happens; an exception of `main` wins, then one of
    `other`. `main` runs in the calling thread, where signals are handled."""
    outcome = {}

    def run_other():
        try:
            outcome["value"] = other()
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            outcome["error"] = exc

    thread = threading.Thread(target=run_other, name="guardrail-side", daemon=True)
    thread.start()
    try:
        value = main()
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return value, outcome["value"]


def _json_messages(stdout, on_event=None):
    """(the human messages, the error diagnostics, the outputs or None) of a
    `-json` event stream; `on_event`, when given, sees every event as well."""
    messages, errors, outputs = [], [], None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        if not isinstance(event, dict):
            continue
        messages.append(event.get("@message", ""))
        if on_event is not None:
            on_event(event)
        if event.get("type") == "diagnostic" and event.get("@level") == "error":
            diagnostic = event.get("diagnostic") or {}
            errors.append(" ".join(filter(None, (diagnostic.get("summary"), diagnostic.get("detail")))))
        elif event.get("type") == "outputs" and not planned_output_actions(event):
            outputs = event.get("outputs") or {}
    return "\n".join(messages) + ("\n" if messages else ""), errors, outputs


def planned_output_actions(event):
    """{name: action} of an `outputs` event that reports planned output
    changes (each output carries an "action"); {} for the event that reports
    the applied values."""
    outputs = event.get("outputs") or {}
    if not isinstance(outputs, dict) or not outputs:
        return {}
    actions = {name: output.get("action") for name, output in outputs.items() if isinstance(output, dict)}
    return actions if all(actions.values()) and len(actions) == len(outputs) else {}


def _error_text(text):
    """The tool's error lines without the box drawing it decorates them with."""
    lines = [line.lstrip("│╷╵ ").rstrip() for line in (text or "").splitlines()]
    return "\n".join(line for line in lines if line).strip() or "(no error output)"
