# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PAM modules in the PAM stack for a table of CIS controls.

A control holds ``modules``, a list of ``unix``, ``faillock``, ``pwquality``
and ``pwhistory``. The check reads the stack the services use (Debian:
/etc/pam.d/common-auth, common-account, common-password; Amazon Linux:
system-auth and password-auth), never the modules' own configuration files.
How a module is added depends on the platform (``method``):

- ``pam_auth_update`` (Debian): a profile in /usr/share/pam-configs per module
  (pwquality's comes with libpam-pwquality), enabled with ``pam-auth-update``;
- ``authselect`` (Amazon Linux 2023): the profile features ``with-faillock``
  and ``with-pwhistory`` (pam_pwquality is part of every profile);
- ``files`` (Amazon Linux 2): lines around pam_unix in system-auth and
  password-auth.
"""
from __future__ import annotations

import os
import re

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import (
    CisError,
    enforce,
    finish,
    read_text,
    run,
    write_text,
)

MODULES = ("unix", "faillock", "pwquality", "pwhistory")
METHODS = ("pam_auth_update", "authselect", "files")

# What the stack must hold for each module: (PAM type, module file, an argument it must have or None).
REQUIRED = {
    "unix": (("auth", "pam_unix.so", None), ("account", "pam_unix.so", None), ("password", "pam_unix.so", None)),
    "faillock": (("auth", "pam_faillock.so", "preauth"), ("auth", "pam_faillock.so", "authfail"),
                 ("account", "pam_faillock.so", None)),
    "pwquality": (("password", "pam_pwquality.so", None),),
    "pwhistory": (("password", "pam_pwhistory.so", None),),
}

# The stack files each PAM type is read from, per method.
STACKS = {
    "pam_auth_update": {"auth": ("common-auth",), "account": ("common-account",), "password": ("common-password",)},
    "authselect": {t: ("system-auth", "password-auth") for t in ("auth", "account", "password")},
    "files": {t: ("system-auth", "password-auth") for t in ("auth", "account", "password")},
}

DEFAULT_PWHISTORY_ARGS = "remember=24 enforce_for_root try_first_pass use_authtok"


# pam-auth-update profiles: {profile name: text}. Higher priorities come first: faillock's preauth before
# pam_unix (256) and authfail right after it; pwhistory (use_authtok) after pwquality (1024), which prompts.
def debian_profiles(pwhistory_args=DEFAULT_PWHISTORY_ARGS):
    return {
        "faillock": ("cis-faillock", "cis-faillock-notify"),
        "pwhistory": ("cis-pwhistory",),
    }, {
        "cis-faillock": "Name: Lock an account after repeated authentication failures (pam_faillock)\n"
                        "Default: yes\nPriority: 0\nAuth-Type: Primary\nAuth:\n\t[default=die]\tpam_faillock.so authfail\n",
        "cis-faillock-notify": "Name: Count authentication failures and refuse locked accounts (pam_faillock)\n"
                               "Default: yes\nPriority: 1024\nAuth-Type: Primary\nAuth:\n\trequisite\tpam_faillock.so preauth\n"
                               "Account-Type: Primary\nAccount:\n\trequired\tpam_faillock.so\n",
        "cis-pwhistory": "Name: Refuse reused passwords (pam_pwhistory)\nDefault: yes\nPriority: 1023\n"
                         "Password-Type: Primary\nPassword:\n\trequisite\tpam_pwhistory.so %s\n" % pwhistory_args,
    }


# Lines the ``files`` method places around pam_unix: (type, line, before or after pam_unix).
AL2_LINES = {
    "faillock": (("auth", "auth        required      pam_faillock.so preauth silent", "before"),
                 ("auth", "auth        [default=die] pam_faillock.so authfail", "after"),
                 ("account", "account     required      pam_faillock.so", "before")),
    "pwquality": (("password", "password    requisite     pam_pwquality.so try_first_pass local_users_only", "before"),),
    "pwhistory": (("password", "password    required      pam_pwhistory.so {pwhistory_args}", "before"),),
}
AUTHSELECT_FEATURES = {"faillock": "with-faillock", "pwhistory": "with-pwhistory"}


def stack_entries(text):
    """[(type, control, module file, args)] of the active lines of a PAM stack file."""
    entries = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^-?(\w+)\s+(\[[^\]]*\]|\S+)\s+(\S+)\s*(.*)$", line)
        if match:
            kind, control, module, args = match.groups()
            entries.append((kind.lower(), control, os.path.basename(module), args.split()))
    return entries


def pam_dir(root):
    return os.path.join(root, "etc", "pam.d")


def missing(method, module, root="/"):
    """What the stack lacks for one module: ["common-auth: auth pam_faillock.so preauth", ...]."""
    lacks = []
    for kind, module_file, argument in REQUIRED[module]:
        for name in STACKS[method][kind]:
            entries = stack_entries(read_text(os.path.join(pam_dir(root), name)))
            if not any(e[0] == kind and e[2] == module_file and (argument is None or argument in e[3]) for e in entries):
                lacks.append("%s: %s %s%s" % (name, kind, module_file, " " + argument if argument else ""))
    return lacks


def fix_pam_auth_update(modules, root, pwhistory_args):
    """Writes the profiles the modules need and enables them. Returns problems (empty on success)."""
    # PAM 1.5 reads remember from pwhistory.conf, which the rows set: a value on the line would override it.
    names, texts = debian_profiles(" ".join(a for a in pwhistory_args.split() if not a.startswith("remember=")))
    configs = os.path.join(root, "usr", "share", "pam-configs")
    enable, problems = [], []
    for module in modules:
        if module in ("unix", "pwquality"):
            # Both profiles come with their packages (libpam-runtime, libpam-pwquality).
            if not os.path.exists(os.path.join(configs, module)):
                package = "libpam-pwquality" if module == "pwquality" else "libpam-runtime"
                problems.append("%s: %s is not installed (no pam-configs profile)" % (module, package))
                continue
            enable.append(module)
            continue
        for name in names[module]:
            path = os.path.join(configs, name)
            if read_text(path) != texts[name]:
                write_text(path, texts[name], 0o644)
            enable.append(name)
    if enable:
        argv = ["pam-auth-update"] + (["--root", root.rstrip("/")] if root.rstrip("/") else []) + ["--enable"] + enable
        rc, out, err = run(argv, env={"DEBIAN_FRONTEND": "noninteractive"})
        if rc != 0:
            problems.append("%s failed: %s" % (" ".join(argv), (err or out).strip()[:200]))
    return problems


def fix_authselect(modules, root, _pwhistory_args):
    if root.rstrip("/"):
        raise CisError("the authselect method works on / only")
    rc, out, err = run(["authselect", "current", "--raw"])
    if rc != 0:
        return ["no authselect profile is selected (%s): select one, e.g. authselect select sssd" % (err or out).strip()[:120]]
    problems = []
    for module in modules:
        feature = AUTHSELECT_FEATURES.get(module)
        if feature is None:
            continue
        if feature not in out.split():
            rc, fout, ferr = run(["authselect", "enable-feature", feature])
            if rc != 0:
                problems.append("authselect enable-feature %s failed: %s" % (feature, (ferr or fout).strip()[:200]))
    rc, aout, aerr = run(["authselect", "apply-changes"])
    if rc != 0:
        problems.append("authselect apply-changes failed: %s" % (aerr or aout).strip()[:200])
    return problems


def insert_around_unix(text, kind, line, where):
    """The stack text with ``line`` next to the first pam_unix line of ``kind`` (appended when there is none)."""
    lines = (text or "").splitlines()
    at = None
    for index, raw in enumerate(lines):
        entries = stack_entries(raw)
        if entries and entries[0][0] == kind and entries[0][2] == "pam_unix.so":
            at = index if where == "before" else index + 1
            break
    if at is None:
        at = len(lines)
    lines.insert(at, line)
    return "\n".join(lines) + "\n"


def fix_files(modules, root, pwhistory_args):
    problems = []
    for name in ("system-auth", "password-auth"):
        # system-auth is often a link to system-auth-ac: edit what the link points to.
        path = os.path.realpath(os.path.join(pam_dir(root), name))
        text = read_text(path)
        if text is None:
            problems.append("%s does not exist" % path)
            continue
        for module in modules:
            # pam_unix is the stack's own module: never added here, only checked.
            for kind, line, where in AL2_LINES.get(module, ()):
                line = line.format(pwhistory_args=pwhistory_args)
                entries = stack_entries(line)[0]
                # A mode word (preauth, authfail) tells faillock's lines apart; a key=value is a setting,
                # which the lines rows keep at the wanted value.
                mode = [a for a in entries[3][:1] if "=" not in a]
                present = [e for e in stack_entries(text) if e[0] == kind and e[2] == entries[2] and set(mode) <= set(e[3])]
                if not present:
                    text = insert_around_unix(text, kind, line, where)
        if text != read_text(path):
            write_text(path, text)
    return problems


FIXERS = {"pam_auth_update": fix_pam_auth_update, "authselect": fix_authselect, "files": fix_files}


def apply(controls, method, root="/", audit_only=False, check_mode=False, pwhistory_args=DEFAULT_PWHISTORY_ARGS):
    """Evaluates and enforces a table of PAM controls. Returns (results, changed)."""
    if method not in METHODS:
        raise CisError("method must be one of %s, not %r" % (", ".join(METHODS), method))
    for control in controls:
        modules = control.get("modules")
        if not isinstance(modules, list) or not modules or any(m not in MODULES for m in modules):
            raise CisError("control %s: 'modules' must be a non-empty list of %s" % (control.get("id"), ", ".join(MODULES)))
    before = {m: missing(method, m, root) for m in MODULES if any(m in c["modules"] for c in controls)}
    to_fix = sorted({m for c in controls if enforce(c, audit_only, check_mode) for m in c["modules"] if before[m]},
                    key=MODULES.index)
    problems = []
    after = before
    if to_fix:
        problems = FIXERS[method](to_fix, root, pwhistory_args)
        after = {m: missing(method, m, root) for m in before}
    changed = after != before
    results = []
    for control in controls:
        statuses, evidence = [], []
        for module in control["modules"]:
            if not before[module]:
                statuses.append("pass")
                evidence.append("pam_%s is in the stack" % module)
            elif not after[module]:
                statuses.append("fixed")
                evidence.append("pam_%s added to the stack (%s)" % (module, method.replace("_", "-")))
            else:
                statuses.append("failed")
                evidence.append("pam_%s missing from %s" % (module, "; ".join(after[module])))
        related = [p for p in problems if any(m in p for m in control["modules"]) or not any(m in p for m in MODULES)]
        evidence.extend(related if any(s == "failed" for s in statuses) else [])
        results.append(finish(control, statuses, evidence))
    return results, changed
