# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side: writes a host's compliance report (JSON and HTML) and the fleet page."""
from __future__ import annotations

import datetime
import glob
import json
import os
import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import BENCHMARKS, merge, summary
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import STATUSES
from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import write_atomic
from ansible_collections.guardrail.ecs.plugins.plugin_utils.cis_export import to_csv, to_xccdf


def _write(path, text):
    write_atomic(path, text, 0o644)


# Failures first, then what needs a reboot, what the run changed, and what holds.
_ORDER = {"failed": 0, "pending_reboot": 1, "fixed": 2, "waived": 3, "pass": 4, "not_applicable": 5}


def collection_version():
    """The version of the collection this plugin belongs to (installed: MANIFEST.json; a checkout: galaxy.yml)."""
    # <collection>/plugins/action/internal/cis_report.py
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    try:
        with open(os.path.join(root, "MANIFEST.json"), encoding="utf-8") as handle:
            return str(json.load(handle)["collection_info"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(os.path.join(root, "galaxy.yml"), encoding="utf-8") as handle:
            found = re.search(r"^version:\s*['\"]?([^'\"\s#]+)", handle.read(), re.M)
    except OSError:
        found = None
    return found.group(1) if found else "unknown"


def _run_dir(host_dir, stamp):
    """A new directory for this run's record, named by its time (a second run within the same second gets a suffix)."""
    for attempt in range(1, 100):
        name = stamp if attempt == 1 else "%s-%d" % (stamp, attempt)
        try:
            os.mkdir(os.path.join(host_dir, name), 0o755)
            return name
        except FileExistsError:
            continue
    raise AnsibleActionFail("cannot make a new run directory in %s" % host_dir)


def _link_latest(host_dir, name):
    """Points <host_dir>/latest at the run directory, replacing the old link in one rename."""
    tmp = os.path.join(host_dir, ".latest-%d" % os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(name, tmp)
    os.replace(tmp, os.path.join(host_dir, "latest"))


def _order(row):
    return (_ORDER.get(row["status"], 9), [int(p) if p.isdigit() else 0 for p in row["id"].split(".")], row["id"])


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("controls", "results", "report_dir", "host", "benchmark", "level",
                             "audit_only", "templates", "run", "os", "started"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = self._task.args
        for key in ("controls", "results", "report_dir", "host", "templates"):
            if key not in args:
                raise AnsibleActionFail("cis_report needs %s" % key)
        results = []
        for part in args["results"]:
            results.extend(part or [])
        rows = merge(args["controls"], results)
        unknown = sorted({r["status"] for r in rows} - set(STATUSES))
        if unknown:
            raise AnsibleActionFail("unknown statuses in results: %s" % ", ".join(unknown))
        report_dir = os.path.abspath(os.path.expanduser(str(args["report_dir"])))
        os.makedirs(report_dir, exist_ok=True)
        host = str(args["host"])
        if "/" in host or host.startswith("."):
            raise AnsibleActionFail("host name %r cannot name a report file" % host)
        benchmark = args.get("benchmark")
        named = BENCHMARKS.get(str(benchmark), {})
        doc = {
            "host": host,
            "benchmark": benchmark,
            "benchmark_name": named.get("name", str(benchmark or "")),
            "benchmark_version": named.get("version", ""),
            "os": str(args.get("os") or ""),
            "collection": "guardrail.ecs",
            "collection_version": collection_version(),
            "level": args.get("level"),
            "audit_only": bool(args.get("audit_only")),
            "check_mode": bool(self._task.check_mode),
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run": args.get("run") or {},
            "summary": summary(rows),
            "controls": rows,
        }
        manual = {str(benchmark): frozenset(row["id"] for row in rows if row["assessment"] == "Manual")}
        env = Environment(loader=FileSystemLoader(str(args["templates"])), autoescape=select_autoescape(default=True),
                          trim_blocks=True, lstrip_blocks=True)
        json_path = os.path.join(report_dir, host + ".json")
        html_path = os.path.join(report_dir, host + ".html")
        _write(json_path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        page = env.get_template("report.html.j2").render(report=doc, statuses=STATUSES, rows=sorted(rows, key=_order))
        _write(html_path, page)
        # Every run keeps its own record (what the first run fixed stays on file), with the exports.
        host_dir = os.path.join(report_dir, "runs", host)
        os.makedirs(host_dir, exist_ok=True)
        run_name = _run_dir(host_dir, doc["generated"].replace("-", "").replace(":", ""))
        run_dir = os.path.join(host_dir, run_name)
        record = {"json": os.path.join(run_dir, "report.json"), "html": os.path.join(run_dir, "report.html"),
                  "csv": os.path.join(run_dir, "report.csv"), "xccdf": os.path.join(run_dir, "xccdf-results.xml")}
        _write(record["json"], json.dumps(doc, indent=2, sort_keys=True) + "\n")
        _write(record["html"], page)
        _write(record["csv"], to_csv(doc, manual))
        _write(record["xccdf"], to_xccdf(doc, str(args.get("started") or doc["generated"]), manual))
        _link_latest(host_dir, run_name)
        fleet = []
        for path in sorted(glob.glob(os.path.join(report_dir, "*.json"))):
            try:
                with open(path, encoding="utf-8") as handle:
                    other = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(other, dict) and "summary" in other and "host" in other:
                fleet.append({k: other.get(k) for k in ("host", "benchmark", "benchmark_name", "benchmark_version", "os",
                                                        "level", "generated", "summary", "audit_only", "check_mode")})
        index_path = os.path.join(report_dir, "index.html")
        _write(index_path, env.get_template("fleet.html.j2").render(hosts=fleet, statuses=STATUSES))
        result.update(changed=False, json=json_path, html=html_path, index=index_path, summary=doc["summary"],
                      record=dict(record, dir=run_dir, latest=os.path.join(host_dir, "latest")))
        return result
