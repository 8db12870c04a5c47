# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The control catalogue: which controls a run evaluates, and how they are tagged.

A catalogue entry::

    id: {al2023: "3.2.1", al2: "3.3.1", debian12: "3.3.1"}   # or one string for every benchmark
    title: Ensure IP forwarding is disabled                  # or one per benchmark
    level: 1                                                 # 1 or 2 (or per benchmark)
    assessment: Automated                                    # or Manual, as the benchmark marks it (or per benchmark)
    kind: sysctl                                             # one of KINDS
    settings: {...}                                          # the data the kind's module takes
    not_applicable: ""                                       # a reason makes the control not_applicable
    waived: ""                                               # a reason makes the control waived
    waived_by: cis_hardening_keep_ip_forward
    check_only: ""                                           # a reason: evaluated, never changed

A control missing from a benchmark's ids is not part of that benchmark. Site
controls (``extra``) are appended and per-id ``overrides`` are merged in before
the catalogue is validated (``validate``), so a bad row is named with its id and
field before anything runs.
"""
from __future__ import annotations

import copy
import re

KINDS = ("sysctl", "lines", "files", "services", "scan", "pam")
META = ("id", "title", "level", "section", "kind", "waived", "waived_by", "reason", "tags")

# The benchmarks the catalogue carries ids for: the name and version the report states.
BENCHMARKS = {
    "al2023": {"name": "CIS Amazon Linux 2023 Benchmark", "version": "v1.0.0"},
    "al2": {"name": "CIS Amazon Linux 2 Benchmark", "version": "v3.0.0"},
    "debian12": {"name": "CIS Debian Linux 12 Benchmark", "version": "v1.1.0"},
}
# How a benchmark assesses a recommendation; a row without one (a site control) is Automated.
ASSESSMENTS = ("Automated", "Manual")


# Fields of a row: the type each must have. Per-benchmark fields may also be a mapping
# from benchmark to value.
_FIELDS = {
    "id": "text",
    "title": "text",
    "level": "level",
    "assessment": "assessment",
    "kind": "kind",
    "settings": "mapping",
    "not_applicable": "reason",
    "waived": "reason",
    "waived_by": "reason",
    "check_only": "reason",
}
_PER_BENCHMARK = ("id", "title", "level", "assessment")
# What an override may change (never the id: that is how it finds its row).
OVERRIDE_FIELDS = ("title", "level", "assessment", "kind", "settings", "not_applicable", "waived", "waived_by", "check_only")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The one key each kind's settings cannot do without (any of them).
_REQUIRED_SETTINGS = {
    "sysctl": ("settings",),
    "lines": ("lines", "per_path"),
    "files": ("files",),
    "services": ("packages_present", "packages_absent", "services_enabled", "services_masked"),
    "scan": ("check",),
    "pam": ("modules",),
}


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
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in control_id.split(".")]


def _label(source, index, row, benchmark=None):
    ids = row.get("id") if isinstance(row, dict) else None
    control_id = _for(ids, benchmark) if benchmark and isinstance(ids, dict) else ids
    if isinstance(control_id, dict):
        control_id = ", ".join("%s %s" % (k, v) for k, v in sorted(control_id.items(), key=str) if v)
    where = source if index is None else "%s row %d" % (source, index)
    return "%s (id %s)" % (where, control_id if control_id not in (None, "") else "missing")


def _check_value(check, value):
    """None when value fits check, else what is wrong with it."""
    if check == "text":
        if not isinstance(value, str) or not value.strip():
            return "must be a non-empty string, not %r%s" % (
                value, " (quote ids in YAML: 1.10 is the number 1.1)" if isinstance(value, (int, float)) else "")
        return None
    if check == "level":
        if str(value) not in ("1", "2") or isinstance(value, bool):
            return "must be 1 or 2, not %r" % (value,)
        return None
    if check == "assessment":
        if value not in ASSESSMENTS:
            return "must be one of %s, not %r" % (", ".join(ASSESSMENTS), value)
        return None
    if check == "kind":
        if value not in KINDS:
            return "must be one of %s, not %r" % (", ".join(KINDS), value)
        return None
    if check == "mapping":
        if not isinstance(value, dict):
            return "must be a mapping, not %s" % type(value).__name__
        return None
    if value is not None and not isinstance(value, str):
        return "must be a string (a reason, or empty), not %r" % (value,)
    return None


def validate_row(row, source, index, benchmark=None):
    """Raises CatalogueError naming the row (source, index, id) and the field that is wrong."""
    if not isinstance(row, dict):
        raise CatalogueError("%s row %s: a control must be a mapping, not %s" % (source, index, type(row).__name__))
    label = _label(source, index, row, benchmark)
    unknown = sorted(set(row) - set(_FIELDS), key=str)
    if unknown:
        raise CatalogueError("%s: field %s is not a catalogue field (fields: %s)" % (label, unknown[0], ", ".join(_FIELDS)))
    for field in ("id", "title", "kind"):
        if row.get(field) in (None, "", {}):
            raise CatalogueError("%s: field %s is required" % (label, field))
    for field, check in _FIELDS.items():
        if field not in row:
            continue
        value = row[field]
        per_benchmark = field in _PER_BENCHMARK and isinstance(value, dict)
        for name, one in (value.items() if per_benchmark else [(None, value)]):
            if per_benchmark and field == "id" and one in (None, ""):
                continue
            where = "%s.%s" % (field, name) if per_benchmark else field
            problem = _check_value(check, one)
            if not problem and field == "id" and not _ID.match(one):
                problem = "%r is not a control id (letters, digits, '.', '_', '-')" % one
            if problem:
                raise CatalogueError("%s: field %s %s" % (label, where, problem))
    settings = row.get("settings")
    if settings is None and not row.get("not_applicable"):
        raise CatalogueError("%s: field settings is required" % label)
    if settings is not None:
        wanted = _REQUIRED_SETTINGS[row["kind"]]
        if not any(key in settings for key in wanted):
            raise CatalogueError("%s: field settings needs %s for kind %s" % (label, " or ".join(wanted), row["kind"]))
        if row["kind"] == "lines" and isinstance(settings.get("lines"), list):
            for number, item in enumerate(settings["lines"]):
                problem = line_item_problem(item) if isinstance(item, dict) else None
                if problem:
                    raise CatalogueError("%s: field settings.lines[%d] %s" % (label, number, problem))


def _is_number(value):
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def line_item_problem(item):
    """None when a ``lines`` item's comparison keys fit together, else what is wrong."""
    also = item.get("also")
    if also is not None and (not isinstance(also, (list, tuple)) or not all(_is_number(v) for v in also)):
        return "also must be a list of numbers, not %r" % (also,)
    if "sudo_default" in item and ("value" in item) == bool(item.get("flag")):
        return "sudo_default %s needs either value or flag: true" % item["sudo_default"]
    return None


def _deep_merge(base, change):
    merged = dict(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def extend(catalogue, extra=None, overrides=None, benchmark=None):
    """The catalogue with site controls appended and per-id overrides merged in, validated.

    ``extra`` is a list of rows of the same shape as the catalogue's. ``overrides`` maps a
    control id of ``benchmark`` to the fields to change (OVERRIDE_FIELDS); ``settings`` is
    merged key by key (mappings recursively, lists replaced), other fields are replaced.
    """
    if not isinstance(catalogue, list):
        raise CatalogueError("cis_hardening_catalogue must be a list of controls, not %s" % type(catalogue).__name__)
    extra = [] if extra is None else extra
    overrides = {} if overrides is None else overrides
    if not isinstance(extra, list):
        raise CatalogueError("cis_hardening_catalogue_extra must be a list of controls, not %s" % type(extra).__name__)
    if not isinstance(overrides, dict):
        raise CatalogueError("cis_hardening_overrides must be a mapping of control id to fields, not %s"
                             % type(overrides).__name__)
    for index, row in enumerate(catalogue):
        validate_row(row, "cis_hardening_catalogue", index, benchmark)
    known = {}
    for index, row in enumerate(catalogue):
        control_id = _for(row["id"], benchmark)
        if control_id:
            known[str(control_id)] = index
    rows = [dict(row) for row in catalogue]
    for index, row in enumerate(extra):
        validate_row(row, "cis_hardening_catalogue_extra", index, benchmark)
        control_id = _for(row["id"], benchmark)
        if control_id and str(control_id) in known:
            raise CatalogueError("%s: %s is already a control of the %s catalogue; change it with cis_hardening_overrides"
                                 % (_label("cis_hardening_catalogue_extra", index, row, benchmark), control_id, benchmark))
        if control_id:
            known[str(control_id)] = len(rows)
        rows.append(dict(row))
    for control_id, change in overrides.items():
        control_id = str(control_id)
        if control_id not in known:
            raise CatalogueError("cis_hardening_overrides: %s is not a control of the %s catalogue" % (control_id, benchmark))
        if not isinstance(change, dict):
            raise CatalogueError("cis_hardening_overrides %s: must be a mapping of fields, not %s"
                                 % (control_id, type(change).__name__))
        unknown = sorted(set(change) - set(OVERRIDE_FIELDS), key=str)
        if unknown:
            raise CatalogueError("cis_hardening_overrides %s: field %s cannot be overridden (fields: %s)"
                                 % (control_id, unknown[0], ", ".join(OVERRIDE_FIELDS)))
        row = rows[known[control_id]]
        for field, value in change.items():
            if field == "settings" and isinstance(value, dict) and isinstance(row.get("settings"), dict) \
                    and "kind" not in change:
                row["settings"] = _deep_merge(row["settings"], value)
            elif field in _PER_BENCHMARK and isinstance(row.get(field), dict):
                row[field] = dict(row[field], **{benchmark: value})
            else:
                row[field] = copy.deepcopy(value)
        validate_row(row, "cis_hardening_overrides", None, benchmark)
    return rows


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
            "assessment": _for(entry.get("assessment"), benchmark) or "Automated",
            "section": control_id.split(".", maxsplit=1)[0],
            "kind": kind,
            "tags": tags,
        }
        if entry.get("check_only"):
            meta["check_only"] = str(entry["check_only"])
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
        if entry.get("check_only"):
            row["audit_only"] = True
        tables[kind].append(row)
    for kind in KINDS:
        tables[kind].sort(key=lambda r: _sort_key(r["id"]))
    controls.sort(key=lambda c: _sort_key(c["id"]))
    return {"tables": tables, "decided": decided, "controls": controls}


_WAS_NOW = re.compile(r"^was (.*?)[;,] now (.*)$", re.S)


def _na_reason(evidence):
    """A module that finds a control not applicable says why in its evidence ("/home is not a separate mount",
    "/usr/sbin/gdm3 is not installed" once per item): that is the reason, each finding once."""
    found = []
    for part in re.split(r";\s*", str(evidence or "")):
        part = part.strip()
        if part and part not in found:
            found.append(part)
    return "; ".join(found) or "the module evaluating it found nothing this control applies to"


def merge(controls, results):
    """Every selected control with its result; a control without a result is failed.

    A result may carry ``before`` and ``after`` (what the host had and has for a fixed
    control); evidence of the form "was X; now Y" gives them too.
    """
    by_id = {}
    for result in results:
        by_id[str(result["id"])] = result
    merged = []
    for meta in controls:
        result = by_id.get(meta["id"], {"status": "failed", "evidence": "no result: the task evaluating it did not run"})
        row = {k: meta[k] for k in ("id", "title", "section", "level", "kind")}
        row["assessment"] = meta.get("assessment") or "Automated"
        row["status"] = result["status"]
        row["evidence"] = result.get("evidence", "")
        row["reason"] = result.get("reason", "")
        if not row["reason"] and meta.get("check_only") and row["status"] != "not_applicable":
            row["reason"] = "check only: " + meta["check_only"]
        if not row["reason"] and row["status"] == "not_applicable":
            row["reason"] = _na_reason(row["evidence"])
        for key in ("before", "after"):
            if result.get(key):
                row[key] = str(result[key])
        if row["status"] == "fixed" and "before" not in row:
            found = _WAS_NOW.match(row["evidence"])
            if found:
                row["before"], row["after"] = found.group(1), found.group(2)
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
            "sections": {k: sections[k] for k in sorted(sections, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))}}
