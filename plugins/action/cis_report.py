# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side: writes a host's compliance report (JSON and HTML) and the fleet page."""
from __future__ import annotations

import datetime
import glob
import json
import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ansible_collections.guardrail.ecs.plugins.module_utils.cis_catalogue import merge, summary
from ansible_collections.guardrail.ecs.plugins.module_utils.cis_common import STATUSES


def _write(path, text):
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("controls", "results", "report_dir", "host", "benchmark", "level",
                             "audit_only", "templates", "run"))

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
        doc = {
            "host": host,
            "benchmark": args.get("benchmark"),
            "level": args.get("level"),
            "audit_only": bool(args.get("audit_only")),
            "check_mode": bool(self._task.check_mode),
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run": args.get("run") or {},
            "summary": summary(rows),
            "controls": rows,
        }
        env = Environment(loader=FileSystemLoader(str(args["templates"])), autoescape=select_autoescape(default=True),
                          trim_blocks=True, lstrip_blocks=True)
        json_path = os.path.join(report_dir, host + ".json")
        html_path = os.path.join(report_dir, host + ".html")
        _write(json_path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        _write(html_path, env.get_template("report.html.j2").render(report=doc, statuses=STATUSES))
        fleet = []
        for path in sorted(glob.glob(os.path.join(report_dir, "*.json"))):
            try:
                with open(path, encoding="utf-8") as handle:
                    other = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(other, dict) and "summary" in other and "host" in other:
                fleet.append({k: other.get(k) for k in ("host", "benchmark", "level", "generated", "summary",
                                                        "audit_only", "check_mode")})
        index_path = os.path.join(report_dir, "index.html")
        _write(index_path, env.get_template("fleet.html.j2").render(hosts=fleet, statuses=STATUSES))
        result.update(changed=False, json=json_path, html=html_path, index=index_path, summary=doc["summary"])
        return result
