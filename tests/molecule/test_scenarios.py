"""Runs every molecule scenario once: create, prepare, converge, idempotence,
side effect, verify and destroy on a lab host (see .config/molecule/config.yml)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_scenarios_exist():
    assert SCENARIOS, "no molecule scenarios found under molecule/"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "tests" / "lab" / "containers.conf"))
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".cache" / "collections")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.run(["molecule", "test", "-s", scenario], cwd=ROOT, env=env,
                          check=False, timeout=1800)
    assert proc.returncode == 0, f"molecule scenario {scenario} failed (rc={proc.returncode})"
