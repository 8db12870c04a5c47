"""The lock backends are one registry: every registered backend implements the
interface, and every documented list of backends is the registry's."""
import ast
from pathlib import Path

import pytest
import yaml

from ansible_collections.guardrail.ecs.plugins.module_utils.workflow import run_lock

ROOT = Path(__file__).resolve().parents[4]
PRIMITIVES = ("from_options", "_create", "_read", "_replace", "_delete", "_list")
DOCUMENTED = [("plugins/modules/run_lock.py", "backend"), ("plugins/lookup/run_lock.py", "backend"),
              ("plugins/modules/workflow.py", "lock.backend")]


@pytest.mark.parametrize("name", run_lock.BACKENDS)
def test_each_backend_implements_the_interface(name):
    cls = run_lock.REGISTRY[name]
    assert issubclass(cls, run_lock.LockBackend) and cls.name == name
    missing = [m for m in PRIMITIVES if getattr(cls, m) is getattr(run_lock.LockBackend, m)]
    assert not missing, f"backend {name} does not implement {missing}"


def test_unknown_backend_is_refused_with_the_known_ones():
    with pytest.raises(run_lock.LockError, match="use one of git, dynamodb, s3"):
        run_lock.get_backend("etcd")


def test_options_reach_the_backend_that_uses_them():
    git = run_lock.get_backend("git", repo_path="/srv/infra", remote="locks", table="t", bucket="b")
    assert (git.repo_path, git.remote) == ("/srv/infra", "locks")
    s3 = run_lock.get_backend("s3", bucket="state", key="k", region="eu-west-1", repo_path="/x")
    assert (s3.bucket, s3.key, s3.options["region"]) == ("state", "k", "eu-west-1")
    with pytest.raises(run_lock.LockError, match="needs table"):
        run_lock.get_backend("dynamodb", bucket="state")


@pytest.mark.parametrize("path,option", DOCUMENTED)
def test_documented_choices_are_the_registry(path, option):
    tree = ast.parse((ROOT / path).read_text())
    doc = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", None) == "DOCUMENTATION")
    options = yaml.safe_load(doc)["options"]
    *groups, name = option.split(".")
    for group in groups:
        options = options[group]["suboptions"]
    assert options[name]["choices"] == list(run_lock.BACKENDS)
