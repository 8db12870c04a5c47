"""The checkout is an importable collection with consistent metadata."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_galaxy_identity():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("guardrail", "ecs")
    assert set(galaxy["dependencies"]) >= {"ansible.posix", "community.general"}


def test_action_group_names_existing_modules():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    modules = {p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")}
    missing = [m for m in runtime["action_groups"]["aws"] if m not in modules]
    assert not missing, f"action group aws names modules that do not exist: {missing}"
