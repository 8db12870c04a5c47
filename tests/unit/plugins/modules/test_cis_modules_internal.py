"""The cis_* modules are the cis_hardening role's internals, and their documentation says so."""
import importlib

import pytest
import yaml

MODULES = ("cis_files", "cis_lines", "cis_plan", "cis_report", "cis_scan", "cis_services", "cis_sysctl", "cis_pam")


@pytest.mark.parametrize("name", MODULES)
def test_documentation_says_internal_to_the_role(name):
    module = importlib.import_module("ansible_collections.guardrail.ecs.plugins.modules.internal." + name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    first = doc["description"][0]
    assert first.startswith("Internal to the C(guardrail.ecs.cis_hardening) role"), first
    assert "not a public interface" in first
