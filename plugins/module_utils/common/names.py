# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one rule for stack and profile names, shared by render, the run lock and the workflow.

A name is a single path component, a git ref component and part of a DynamoDB
or S3 key at once, so it must be safe as all three.
"""
from __future__ import annotations

import re

MAX_LENGTH = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,%d}$" % (MAX_LENGTH - 1))
RULE = (f"use 1 to {MAX_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "without '..', not ending in '.' or '.lock' (no '/', spaces or other characters)")


def shown(value):
    text = repr(value)
    return text if len(text) <= 50 else f"{text[:40]}...' ({len(value)} characters)"


def name_problem(kind, value):
    """Why `value` is not a valid stack or profile name (`kind` says which), or None."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value \
            or value.endswith((".", ".lock")):
        return f"invalid {kind} name {shown(value)}: {RULE}"
    return None
