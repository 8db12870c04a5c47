"""The direction of imports that the folders promise: modules -> module_utils;
action, lookup, the `guardrail` command -> plugin_utils -> module_utils; never back.
module_utils is what Ansible ships to a target host, where nothing else exists."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = "ansible_collections.guardrail.ecs.plugins."


def imported(path):
    """Every module name `path` imports, at any depth (lazy imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def own_imports(folder):
    for path in sorted((ROOT / "plugins" / folder).rglob("*.py")):
        for name in imported(path):
            if name.startswith(PLUGINS):
                yield path.relative_to(ROOT), name[len(PLUGINS):]


@pytest.mark.parametrize("folder", ["module_utils", "modules"])
def test_target_side_imports_only_module_utils(folder):
    wrong = [f"{path}: {name}" for path, name in own_imports(folder) if not name.startswith("module_utils")]
    assert not wrong, "target-side code imports controller code:\n" + "\n".join(wrong)


def test_plugin_utils_imports_no_plugin():
    wrong = [f"{path}: {name}" for path, name in own_imports("plugin_utils")
             if not name.startswith(("module_utils", "plugin_utils"))]
    assert not wrong, "plugin_utils imports action, lookup or module plugins:\n" + "\n".join(wrong)


def test_the_check_sees_a_bad_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ansible_collections.guardrail.ecs.plugins.plugin_utils import cli\n")
    assert PLUGINS + "plugin_utils.cli" in imported(bad)
