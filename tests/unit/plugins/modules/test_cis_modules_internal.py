"""The cis_* modules are the cis_hardening role's internals, and their documentation says so;
the main() they share (run_table_module)."""
import importlib
import json

import pytest
import yaml
from ansible.module_utils.basic import AnsibleModule
from module_args import patch_module_args

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.common import CisError, run_table_module

MODULES = ("cis_files", "cis_lines", "cis_plan", "cis_report", "cis_scan", "cis_services", "cis_sysctl", "cis_pam")


@pytest.mark.parametrize("name", MODULES)
def test_documentation_says_internal_to_the_role(name):
    module = importlib.import_module("ansible_collections.guardrail.ecs.plugins.modules.internal." + name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    first = doc["description"][0]
    assert first.startswith("Internal to the C(guardrail.ecs.cis_hardening) role"), first
    assert "not a public interface" in first


def run_table(capsys, engine, args, **options):
    """One run of a table module made by run_table_module; its result."""
    with patch_module_args(args), pytest.raises(SystemExit):
        run_table_module(AnsibleModule, dict(extra=dict(type="int", default=3)), engine, **options)
    return json.loads(capsys.readouterr().out)


FAILED = [{"id": "1.1", "status": "failed", "evidence": "x"}]


def test_table_modules_share_options_check_mode_diff_and_errors(capsys):
    seen = []

    def engine(params, check_mode):
        seen.append((params["controls"], params["audit_only"], params["extra"], check_mode))
        return FAILED, False, {"before": "a", "after": "b"}, ["cmd"]

    result = run_table(capsys, engine, {"controls": [{"id": "1.1"}]}, returns=("diff", "commands"))
    assert seen == [([{"id": "1.1"}], False, 3, False)]
    assert result["changed"] is False and result["results"] == FAILED
    assert result["commands"] == ["cmd"] and "diff" not in result, "the diff only in diff mode"

    checked = {"controls": [], "_ansible_check_mode": True, "_ansible_diff": True}
    result = run_table(capsys, engine, checked, returns=("diff",))
    assert result["changed"] is True, "check mode: enforcing would fix the failed control"
    assert result["diff"] == {"before": "a", "after": "b"}
    assert run_table(capsys, engine, checked, check_mode_changes=False)["changed"] is False
    assert run_table(capsys, engine, dict(checked, audit_only=True))["changed"] is False

    def refusing(params, check_mode):
        raise CisError("control 1.1: path must be absolute")

    result = run_table(capsys, refusing, {"controls": [{"id": "1.1"}]})
    assert result["failed"] and result["msg"] == "control 1.1: path must be absolute"
    result = run_table(capsys, engine, {"extra": 1})
    assert result["failed"] and "controls" in result["msg"]
