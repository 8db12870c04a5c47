# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one way to run a command on a target host and read its output."""
from __future__ import annotations

import os
import subprocess


def run(argv, *, data=None, timeout=120, env=None):
    """(rc, stdout, stderr) of `argv` run without a shell, in the C locale so
    the text parsed is the documented one. A command that cannot be started
    gives rc 127, one that outlives `timeout` seconds rc 124 (as coreutils'
    timeout does)."""
    env = dict(os.environ, LC_ALL="C", LANG="C", **(env or {}))
    try:
        proc = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=timeout,
                              check=False, env=env)
    except FileNotFoundError:
        return 127, "", "%s: command not found" % argv[0]
    except OSError as exc:
        return 127, "", "%s: %s" % (argv[0], exc)
    except subprocess.TimeoutExpired:
        return 124, "", "%s: timed out after %ss" % (argv[0], timeout)
    return proc.returncode, proc.stdout, proc.stderr
