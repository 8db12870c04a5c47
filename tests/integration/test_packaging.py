"""The collection builds into a tarball that installs into a fresh path, and the
installed copy documents every role and plugin."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Builds the tarball and installs it into an empty collections path."""
    tmp = tmp_path_factory.mktemp("packaging")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    run([BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp / "dist", str(ROOT)], tmp, env)
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    tarball = tmp / "dist" / f"guardrail-ecs-{version}.tar.gz"
    assert tarball.is_file()
    # --force: a copy installed elsewhere (~/.ansible/collections) must not
    # make galaxy skip the fresh path.
    run([BIN / "ansible-galaxy", "collection", "install", "--offline", "--force", "-p", tmp / "collections",
         str(tarball)], tmp, env)
    assert (tmp / "collections" / "ansible_collections" / "guardrail" / "ecs" / "MANIFEST.json").is_file()
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp / "collections")
    return tarball, tmp / "collections" / "ansible_collections" / "guardrail" / "ecs", env, tmp


def test_tarball_leaves_out_local_state(installed):
    tarball = installed[0]
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "galaxy.yml" not in names and "MANIFEST.json" in names
    leaked = [n for n in names if n.split("/")[0] in {".venv", ".cache", ".git", ".dist", "reports"}
              or "__pycache__" in n]
    assert not leaked, f"build output carries local state: {leaked[:5]}"


def test_installed_roles_are_listed(installed):
    path, env, cwd = installed[1:]
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
    assert roles, "no role with meta/argument_specs.yml"
    listing = run([BIN / "ansible-doc", "-t", "role", "-l", "guardrail.ecs"], cwd, env)
    missing = [r for r in roles if f"guardrail.ecs.{r}" not in listing]
    assert not missing, f"ansible-doc does not list roles {missing}:\n{listing}"
    assert (path / "roles").is_dir()


def plugin_names():
    found = []
    for kind, folder in (("module", "modules"), ("lookup", "lookup")):
        for py in sorted((ROOT / "plugins" / folder).glob("*.py")):
            if py.name != "__init__.py":
                found.append((kind, py.stem))
    return found


@pytest.mark.parametrize("kind,name", plugin_names())
def test_installed_plugin_renders_docs(installed, kind, name):
    env, cwd = installed[2:]
    out = run([BIN / "ansible-doc", "-t", kind, f"guardrail.ecs.{name}"], cwd, env)
    assert f"guardrail.ecs.{name}" in out
    assert "EXAMPLES" in out or "EXAMPLE" in out.upper()
