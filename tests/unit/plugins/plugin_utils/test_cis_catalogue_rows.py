"""The schema of the role's catalogue files, per benchmark: every control has an id (unique in its
benchmark), a title, a level, an assessment (Automated or Manual), a kind with the settings its
module checks, and either a fix (a kind or check that changes the host) or a reason it does not
change the host (check_only, not_applicable, waived); every parameter names a declared variable."""
import pytest
from ansible.template import Templar
from test_cis_catalogue_data import PLATFORMS, ROLE, role_variables

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import KINDS, validate_row
from ansible_collections.guardrail.ecs.plugins.module_utils.cis.scan import CHECKS, FIXING_CHECKS
from ansible_collections.guardrail.ecs.plugins.plugin_utils import cis_catalogue


def _for(value, benchmark):
    return value.get(benchmark) if isinstance(value, dict) else value


def controls(benchmark):
    """(raw row, resolved row, id) of every control the benchmark's manifest brings in."""
    loader, variables = role_variables(benchmark)
    templar = Templar(loader=loader, variables=variables)
    raw = cis_catalogue.load(str(ROLE / "catalogue"), benchmark)
    resolved = cis_catalogue.resolve(raw, lambda name: templar.template(variables[name]))
    return [(row, done, _for(row["id"], benchmark)) for row, done in zip(raw, resolved) if _for(row["id"], benchmark)]


def problems(row, benchmark, settings=None):
    """What a control row lacks, in words (empty when it is complete); settings: the resolved ones."""
    found = []
    for field in ("title", "level", "assessment", "kind"):
        if _for(row.get(field), benchmark) in (None, ""):
            found.append("no %s" % field)
    if _for(row.get("assessment"), benchmark) not in ("Automated", "Manual"):
        found.append("assessment must be Automated or Manual")
    settings = row.get("settings") if settings is None else settings
    if not isinstance(settings, dict) or not settings:
        # A control that never applies here (ufw and nftables where the firewall is iptables) needs no check.
        if not row.get("not_applicable"):
            found.append("no check (settings)")
    elif row.get("kind") == "scan" and settings.get("check") not in CHECKS:
        found.append("scan check %r is not one of the scan checks" % settings.get("check"))
    fixes = row.get("kind") != "scan" or (isinstance(settings, dict) and settings.get("check") in FIXING_CHECKS)
    reason = any(isinstance(row.get(key), (str, dict)) and row.get(key) for key in ("check_only", "not_applicable", "waived"))
    if not fixes and not reason:
        found.append("neither a fix (its check never changes the host) nor a check_only/not_applicable/waived reason")
    return found


@pytest.mark.parametrize("benchmark", sorted(PLATFORMS))
def test_every_control_has_what_a_report_and_an_auditor_need(benchmark):
    rows = controls(benchmark)
    assert len(rows) > 150
    incomplete = {}
    for raw, resolved, control_id in rows:
        validate_row(resolved, "catalogue", None, benchmark)
        assert resolved["kind"] in KINDS
        found = problems(raw, benchmark, resolved.get("settings"))
        if found:
            incomplete[control_id] = found
    assert not incomplete, incomplete


@pytest.mark.parametrize("benchmark", sorted(PLATFORMS))
def test_ids_are_unique_in_each_benchmark(benchmark):
    ids = [row[2] for row in controls(benchmark)]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("benchmark", sorted(PLATFORMS))
def test_every_parameter_names_a_declared_variable(benchmark):
    variables = role_variables(benchmark)[1]
    declared = set(variables) | {"cis_hardening_sshd_installed", "ansible_user", "ansible_connection"}
    for raw in cis_catalogue.load(str(ROLE / "catalogue"), benchmark):
        for name in cis_catalogue.references(raw):
            assert name.split(".")[0] in declared, (raw["id"], name)
            assert name.split(".")[0].startswith("cis_hardening_"), (raw["id"], name)


def test_a_row_without_an_assessment_or_a_reason_is_named():
    row = {"id": "9.1", "title": "Ensure a review happens", "level": 1, "kind": "scan",
           "settings": {"check": "accounts", "test": "uid0"}}
    assert problems(row, "al2023") == [
        "no assessment", "assessment must be Automated or Manual",
        "neither a fix (its check never changes the host) nor a check_only/not_applicable/waived reason"]
    assert problems(dict(row, assessment="Manual", check_only="a person reviews the accounts"), "al2023") == []
