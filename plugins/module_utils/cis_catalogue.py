# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The control catalogue: which controls a run evaluates, and how they are tagged.

A catalogue entry::

    id: {al2023: "3.2.1", al2: "3.3.1"}   # or one string for every benchmark
    title: Ensure IP forwarding is disabled
    level: 1                               # 1 or 2 (or per benchmark)
    kind: sysctl                           # sysctl | lines | files | services | scan | pam
    settings: {...}                        # the data the kind's module takes
    not_applicable: ""                     # a reason makes the control not_applicable
    waived: ""                             # a reason makes the control waived
    waived_by: cis_hardening_keep_ip_forward

A control missing from a benchmark's ids is not part of that benchmark.
"""
from __future__ import annotations

KINDS = ("sysctl", "lines", "files", "services", "scan", "pam")
META = ("id", "title", "level", "section", "kind", "waived", "waived_by", "reason", "tags")


class CatalogueError(Exception):
    """The catalogue or the selection options are wrong."""


def _for(value, benchmark):
    if isinstance(value, dict):
        return value.get(benchmark)
    return value


def rule_variable(control_id):
    return "cis_hardening_rule_" + control_id.replace(".", "_")


def tags_for(control_id, level, kind):
    section = control_id.split(".", maxsplit=1)[0]
    levels = ["level1-server", "level2-server"] if int(level) == 1 else ["level2-server"]
    return ["rule_" + control_id, "rule_" + control_id.replace(".", "_"), "section" + section,
            "cis_hardening", "cis_" + kind] + levels


def _sort_key(control_id):
    return [int(part) if part.isdigit() else part for part in control_id.split(".")]


def select(catalogue, benchmark, level, toggles=None, run_tags=None, skip_tags=None):
    """Splits the catalogue into what each module evaluates and what is decided here.

    Returns {"tables": {kind: [rows]}, "decided": [results], "controls": [meta]}.
    ``toggles`` maps control ids to False to turn them off (reported waived).
    ``run_tags``/``skip_tags`` follow ansible's --tags/--skip-tags: a control
    runs when one of its tags is asked for (or "all"), and none is skipped.
    """
    if int(level) not in (1, 2):
        raise CatalogueError("cis_hardening_level must be 1 or 2, not %r" % level)
    toggles = toggles or {}
    run_tags = set(run_tags or ["all"])
    skip_tags = set(skip_tags or [])
    tables = {kind: [] for kind in KINDS}
    decided, controls, seen = [], [], set()
    for entry in catalogue:
        control_id = _for(entry.get("id"), benchmark)
        if not control_id:
            continue
        control_id = str(control_id)
        if control_id in seen:
            raise CatalogueError("control %s appears twice in the %s catalogue" % (control_id, benchmark))
        seen.add(control_id)
        kind = entry.get("kind")
        if kind not in KINDS:
            raise CatalogueError("control %s: kind must be one of %s, not %r" % (control_id, ", ".join(KINDS), kind))
        control_level = int(_for(entry.get("level", 1), benchmark))
        if control_level > int(level):
            continue
        tags = tags_for(control_id, control_level, kind)
        if not ("all" in run_tags or "always" in run_tags or run_tags & set(tags)) or skip_tags & set(tags):
            continue
        meta = {
            "id": control_id,
            "title": _for(entry.get("title"), benchmark) or "",
            "level": control_level,
            "section": control_id.split(".", maxsplit=1)[0],
            "kind": kind,
            "tags": tags,
        }
        controls.append(meta)
        if toggles.get(control_id) is False:
            decided.append({"id": control_id, "status": "waived", "evidence": "not evaluated",
                            "reason": "turned off by %s: false" % rule_variable(control_id),
                            "waived_by": rule_variable(control_id)})
            continue
        reason = entry.get("not_applicable")
        if reason:
            decided.append({"id": control_id, "status": "not_applicable", "evidence": "not evaluated",
                            "reason": str(reason)})
            continue
        row = dict(entry.get("settings") or {})
        row["id"] = control_id
        if entry.get("waived"):
            row["waived"] = "%s (variable: %s)" % (entry["waived"], entry["waived_by"]) \
                if entry.get("waived_by") else str(entry["waived"])
        tables[kind].append(row)
    for kind in KINDS:
        tables[kind].sort(key=lambda r: _sort_key(r["id"]))
    controls.sort(key=lambda c: _sort_key(c["id"]))
    return {"tables": tables, "decided": decided, "controls": controls}


def merge(controls, results):
    """Every selected control with its result; a control without a result is failed."""
    by_id = {}
    for result in results:
        by_id[str(result["id"])] = result
    merged = []
    for meta in controls:
        result = by_id.get(meta["id"], {"status": "failed", "evidence": "no result: the task evaluating it did not run"})
        row = {k: meta[k] for k in ("id", "title", "section", "level", "kind")}
        row["status"] = result["status"]
        row["evidence"] = result.get("evidence", "")
        row["reason"] = result.get("reason", "")
        merged.append(row)
    return merged


def summary(rows):
    """Counts per status and per section."""
    statuses = {}
    sections = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        per = sections.setdefault(row["section"], {})
        per[row["status"]] = per.get(row["status"], 0) + 1
    return {"total": len(rows), "statuses": statuses,
            "sections": {k: sections[k] for k in sorted(sections, key=lambda s: int(s) if s.isdigit() else 0)}}
