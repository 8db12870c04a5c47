"""The catalogue as data files resolves, per benchmark, to exactly the catalogue the role templated
from defaults/main.yml before the move (tests/unit/fixtures/cis_catalogue/<benchmark>.json, dumped
with the role's defaults and each platform's vars), row for row and in order; site settings reach
the rows through their parameters."""
import json
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import CatalogueError
from ansible_collections.guardrail.ecs.plugins.plugin_utils import cis_catalogue

ROOT = Path(__file__).resolve().parents[4]
ROLE = ROOT / "roles" / "cis_hardening"
FIXTURES = ROOT / "tests" / "unit" / "fixtures" / "cis_catalogue"
PLATFORMS = {"debian12": "Debian-12", "al2": "Amazon-2", "al2023": "Amazon-2023"}


def role_variables(benchmark, **settings):
    """The variables the role's tasks see: defaults, vars, the platform's vars, then the site's."""
    loader = DataLoader()
    variables = {}
    for name in ("defaults/main.yml", "vars/main.yml", "vars/%s.yml" % PLATFORMS[benchmark]):
        try:
            variables.update(loader.load_from_file(str(ROLE / name), trusted_as_template=True))
        except TypeError:  # before ansible-core 2.19 every string loaded is a template: no trust to grant
            variables.update(loader.load_from_file(str(ROLE / name)))
    variables["ansible_facts"] = {"virtualization_role": "", "virtualization_type": ""}
    variables.update(settings)
    return loader, variables


def resolved(benchmark, **settings):
    loader, variables = role_variables(benchmark, **settings)
    templar = Templar(loader=loader, variables=variables)
    return cis_catalogue.resolve(cis_catalogue.load(str(ROLE / "catalogue"), benchmark),
                                 lambda name: templar.template(variables[name]))


# Controls whose check never changes the host and which said nothing about it before the catalogue
# schema asked for a reason (test_cis_catalogue_rows): their check_only reason is the only new field.
CHECK_ONLY_ADDED = {"al2023": {"4.6.6", "6.1.12", "6.1.13", "6.2.1", "6.2.3", "6.2.4", "6.2.5", "6.2.6", "6.2.7"},
                    "al2": {"4.5.2.4", "6.1.12", "6.1.13", "6.2.1", "6.2.3", "6.2.4", "6.2.5", "6.2.6", "6.2.7", "2.1.3",
                            "3.4.4.3.1", "3.4.4.3.2", "4.5.3.1"},
                    "debian12": {"7.1.12", "7.1.13", "7.2.1", "7.2.3", "7.2.5", "7.2.6", "7.2.7", "7.2.8", "2.3.3.2",
                                 "4.4.3.2", "4.4.3.3", "5.4.3.1"}}


# CIS Amazon Linux 2023 v1.0.0 assesses these otherwise than the old table, which followed Debian 12's
# recommendation of the same title (test_cis_export_assessment has the benchmark's list).
ASSESSMENT_CORRECTED = {"al2023": {"1.2.4", "2.4", "3.4.2.5", "3.4.2.6", "4.4.1", "5.1.1.2", "5.1.1.5", "5.1.1.6",
                                   "5.1.2.1.1", "5.1.2.1.2", "5.1.2.1.3", "5.1.2.5", "5.1.2.6", "5.1.2.7", "6.1.10"}}


def _for(value, benchmark):
    return value.get(benchmark) if isinstance(value, dict) else value


@pytest.mark.parametrize("benchmark", sorted(PLATFORMS))
def test_the_data_files_resolve_to_the_catalogue_the_role_templated_before(benchmark):
    before = json.loads((FIXTURES / ("%s.json" % benchmark)).read_text())
    after = json.loads(json.dumps(resolved(benchmark)))
    assert len(after) == len(before)
    # assessment is new in the rows: it was the table manual.json keeps (catalogue.MANUAL before).
    manual = set(json.loads((FIXTURES / "manual.json").read_text())[benchmark])
    for index, (old, new) in enumerate(zip(before, after)):
        control_id = _for(new["id"], benchmark)
        if control_id:
            was_manual = control_id in manual
            if control_id in ASSESSMENT_CORRECTED.get(benchmark, ()):
                was_manual = not was_manual
            assert _for(new.pop("assessment"), benchmark) == ("Manual" if was_manual else "Automated"), control_id
        else:
            new.pop("assessment")
        if any(_for(new["id"], other) in added for other, added in CHECK_ONLY_ADDED.items()):
            assert "check_only" not in old and new.pop("check_only"), new["id"]
        assert new == old, "row %d (id %s) differs" % (index, old.get("id"))


def test_a_site_setting_reaches_the_rows_that_name_it():
    rows = resolved("debian12", cis_hardening_time_server="10.0.0.5", cis_hardening_password_min_length=18,
                    cis_hardening_reason_iptables="site reason")
    by_id = {row["id"].get("debian12") if isinstance(row["id"], dict) else row["id"]: row for row in rows}
    chrony = by_id["2.3.3.1"]["settings"]["lines"][0]
    assert chrony["line"] == "server 10.0.0.5 prefer iburst"
    assert chrony["match"] == "^\\s*server\\s+10\\.0\\.0\\.5\\b"
    minlen = [line for line in by_id["5.3.3.2.2"]["settings"]["lines"] if line.get("effective") == "minlen"]
    assert minlen and minlen[0]["value"] == 18
    assert by_id["4.3.1"]["not_applicable"] == "site reason"


def test_a_reference_to_an_undefined_variable_names_the_row():
    rows = [{"id": "9.9", "not_applicable": {"param": "cis_hardening_no_such"}}]
    with pytest.raises(CatalogueError, match=r"row 0 \(id 9.9\): parameter cis_hardening_no_such is not defined"):
        cis_catalogue.resolve(rows, lambda name: {}[name])
    rows = [{"id": "9.9", "settings": {"path": {"param": "cis_hardening_os.no_such_key"}}}]
    with pytest.raises(CatalogueError, match="parameter cis_hardening_os.no_such_key is not defined"):
        cis_catalogue.resolve(rows, lambda name: {"cis_hardening_os": {"family": "debian"}}[name])


def test_with_adds_fields_to_a_mapping_variable_and_nothing_else_is_evaluated():
    values = {"base": {"path": "/etc/x", "separator": "="}, "n": 4}
    rows = [{"id": "1", "lines": [{"param": "base", "with": {"effective": "k", "value": {"param": "n"}}}],
             "text": "{{ not templated }}"}]
    assert cis_catalogue.resolve(rows, values.__getitem__) == [
        {"id": "1", "lines": [{"path": "/etc/x", "separator": "=", "effective": "k", "value": 4}],
         "text": "{{ not templated }}"}]
    with pytest.raises(CatalogueError, match="unknown key default"):
        cis_catalogue.resolve([{"id": "1", "x": {"param": "n", "default": 1}}], values.__getitem__)


def test_a_manifest_section_outside_the_catalogue_directory_is_refused(tmp_path):
    (tmp_path / "manifest-al2.yml").write_text("benchmark: al2\nsections: [../defaults/main.yml]\n")
    with pytest.raises(CatalogueError, match="must be a .yml file name"):
        cis_catalogue.load(str(tmp_path), "al2")
    (tmp_path / "manifest-al2.yml").write_text("benchmark: debian12\nsections: [a.yml]\n")
    with pytest.raises(CatalogueError, match="benchmark: al2"):
        cis_catalogue.load(str(tmp_path), "al2")
