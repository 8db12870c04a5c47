"""plugin_utils/render.py: profiles, the tree walk, canonical JSON, sync."""
import os
import stat

import jinja2
import pytest

from ansible_collections.guardrail.ecs.plugins.plugin_utils import render as r


def jinja(text, variables):
    return jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                              autoescape=False).from_string(text).render(variables)


def write(path, text, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def test_deep_merge_merges_dicts_and_replaces_lists():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": [1], "c": "keep"}
    over = {"a": {"y": [3], "z": {"k": 1}}, "b": [], "d": None}
    merged = r.deep_merge(base, over)
    assert merged == {"a": {"x": 1, "y": [3], "z": {"k": 1}}, "b": [], "c": "keep", "d": None}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": [1], "c": "keep"}


def test_profile_extends_chain_and_list(tmp_path):
    write(tmp_path / "base.yml", "a: {x: 1, y: 2}\nzones: [a]\n")
    write(tmp_path / "extra.yaml", "a: {w: 0}\n")
    write(tmp_path / "prod.yml", "extends: [base, extra]\na: {y: 3}\nzones: [b, c]\n")
    write(tmp_path / "edge.yml", "extends: prod\nname: edge\n")
    assert r.load_profile(str(tmp_path), "edge") == {
        "a": {"x": 1, "y": 3, "w": 0}, "zones": ["b", "c"], "name": "edge"}


def test_profile_cycle_refused(tmp_path):
    write(tmp_path / "one.yml", "extends: two\n")
    write(tmp_path / "two.yml", "extends: [three]\n")
    write(tmp_path / "three.yml", "extends: one\n")
    with pytest.raises(r.RenderError, match="profile cycle: one -> two -> three -> one"):
        r.load_profile(str(tmp_path), "one")


@pytest.mark.parametrize("text,match", [("- a\n", "must be a mapping"), ("extends: {a: 1}\n", "extends must be"),
                                        ("a: [\n", "cannot read profile")])
def test_bad_profiles(tmp_path, text, match):
    write(tmp_path / "bad.yml", text)
    with pytest.raises(r.RenderError, match=match):
        r.load_profile(str(tmp_path), "bad")


def test_missing_profile(tmp_path):
    with pytest.raises(r.RenderError, match="profile 'nope' not found"):
        r.load_profile(str(tmp_path), "nope")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "a..b", "x" * 200, None])
def test_bad_names(name):
    with pytest.raises(r.RenderError, match="invalid stack name"):
        r.validate_name("stack", name)


def test_canonical_json_is_stable():
    one = r.canonical_json({"b": [2, 1], "a": {"y": 1, "x": "é"}})
    two = r.canonical_json({"a": {"x": "é", "y": 1}, "b": [2, 1]})
    assert one == two == '{\n  "a": {\n    "x": "é",\n    "y": 1\n  },\n  "b": [\n    2,\n    1\n  ]\n}\n'.encode()
    with pytest.raises(r.RenderError):
        r.canonical_json({"a": float("nan")})


def make_repo(tmp_path):
    repo = tmp_path / "repo"
    write(repo / "profiles" / "base.yml", "name: web\nzones: [a, b]\n")
    stack = repo / "stacks" / "alpha"
    write(stack / "main.tf.j2", "# {{ name }} {{ profile_name }}/{{ stack_name }}\n")
    write(stack / "run.sh", "#!/bin/sh\n", mode=0o750)
    write(stack / "sub" / "data.tf.json.j2", "z: {{ zones }}\na: 1\n")
    write(stack / "blob.bin", "")
    (stack / "blob.bin").write_bytes(bytes(range(256)))
    return repo


def test_render_tree(tmp_path):
    repo = make_repo(tmp_path)
    result = r.render(str(repo), "alpha", "base", jinja)
    dest = repo / ".dist" / "base" / "alpha"
    assert result["dest"] == str(dest)
    assert result["written"] == ["blob.bin", "main.tf", "run.sh", os.path.join("sub", "data.tf.json")]
    assert (dest / "main.tf").read_text() == "# web base/alpha\n"
    assert (dest / "sub" / "data.tf.json").read_text() == '{\n  "a": 1,\n  "z": [\n    "a",\n    "b"\n  ]\n}\n'
    assert (dest / "blob.bin").read_bytes() == bytes(range(256))
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o750
    again = r.render(str(repo), "alpha", "base", jinja)
    assert not again["changed"] and again["written"] == [] and again["hash"] == result["hash"]


def test_only_files_render_wrote_are_removed(tmp_path):
    repo = make_repo(tmp_path)
    write(repo / "stacks" / "alpha" / "old.tf", "rendered once")
    write(repo / "stacks" / "alpha" / "gone" / "deep.tf", "rendered once")
    r.render(str(repo), "alpha", "base", jinja)
    dest = repo / ".dist" / "base" / "alpha"
    (repo / "stacks" / "alpha" / "old.tf").unlink()
    (repo / "stacks" / "alpha" / "gone" / "deep.tf").unlink()
    write(dest / "planted.txt", "not render's")
    write(dest / "terraform.tfstate", "{}")
    write(dest / "state" / "custom.tfstate", "{}")
    write(dest / "errored.tfstate", "{}")
    write(dest / "saved.tfplan", "plan")
    write(dest / ".terraform" / "environment", "default")
    result = r.render(str(repo), "alpha", "base", jinja)
    assert result["removed"] == [os.path.join("gone", "deep.tf"), "old.tf"]
    assert not (dest / "gone").exists() and not (dest / "old.tf").exists()
    for kept in ("planted.txt", "terraform.tfstate", "state/custom.tfstate", "errored.tfstate",
                 "saved.tfplan", ".terraform/environment"):
        assert (dest / kept).exists(), kept


def test_configuration_render_did_not_write_refused(tmp_path):
    repo = make_repo(tmp_path)
    r.render(str(repo), "alpha", "base", jinja)
    dest = repo / ".dist" / "base" / "alpha"
    write(dest / "override.tf", "# planted")
    with pytest.raises(r.RenderError, match="override.tf"):
        r.render(str(repo), "alpha", "base", jinja)
    assert (dest / "override.tf").read_text() == "# planted"
    (dest / "override.tf").unlink()
    assert not r.render(str(repo), "alpha", "base", jinja)["changed"]


@pytest.mark.parametrize("name", ["x.tfstate", "state/y.tfstate.backup", "saved.tfplan", r.MANIFEST])
def test_protected_names_cannot_be_templates(tmp_path, name):
    repo = make_repo(tmp_path)
    write(repo / "stacks" / "alpha" / name, "{}")
    with pytest.raises(r.RenderError, match="reserved"):
        r.render(str(repo), "alpha", "base", jinja)


def test_check_mode_writes_nothing(tmp_path):
    repo = make_repo(tmp_path)
    result = r.render(str(repo), "alpha", "base", jinja, check_mode=True)
    assert result["changed"] and "main.tf" in result["written"]
    assert not (repo / ".dist").exists()
    assert result["diff"][0]["after"]


def test_mode_change_alone_is_a_change(tmp_path):
    repo = make_repo(tmp_path)
    first = r.render(str(repo), "alpha", "base", jinja)
    (repo / "stacks" / "alpha" / "run.sh").chmod(0o755)
    second = r.render(str(repo), "alpha", "base", jinja)
    assert second["written"] == ["run.sh"] and second["hash"] != first["hash"]


def test_symlink_escaping_stack_refused(tmp_path):
    repo = make_repo(tmp_path)
    write(tmp_path / "secret.txt", "secret")
    os.symlink(tmp_path / "secret.txt", repo / "stacks" / "alpha" / "leak.tf")
    with pytest.raises(r.RenderError, match="escapes the stack root"):
        r.render(str(repo), "alpha", "base", jinja)
    assert not (repo / ".dist").exists()


def test_template_error_names_file_and_writes_nothing(tmp_path):
    repo = make_repo(tmp_path)
    write(repo / "stacks" / "alpha" / "bad.tf.j2", "{{ undefined_thing }}")
    with pytest.raises(r.RenderError, match="template bad.tf.j2"):
        r.render(str(repo), "alpha", "base", jinja)
    assert not (repo / ".dist").exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"dest": "../elsewhere"}, "escapes the repository"),
    ({"dest": "."}, "replace the repository"),
    ({"dest": "stacks/alpha/out"}, "overlaps the templates"),
    ({"stacks_dir": "../other"}, "escapes the repository"),
])
def test_paths_escaping_refused(tmp_path, kwargs, match):
    repo = make_repo(tmp_path)
    with pytest.raises(r.RenderError, match=match):
        r.render(str(repo), "alpha", "base", jinja, **kwargs)


def test_reserved_template_name_refused(tmp_path):
    repo = make_repo(tmp_path)
    write(repo / "stacks" / "alpha" / "terraform.tfstate", "{}")
    with pytest.raises(r.RenderError, match="reserved"):
        r.render(str(repo), "alpha", "base", jinja)


def test_stack_dependency_lock_file_is_copied_and_stable(tmp_path):
    repo = make_repo(tmp_path)
    write(repo / "stacks" / "alpha" / ".terraform.lock.hcl", "# locks\n")
    first = r.render(str(repo), "alpha", "base", jinja)
    assert ".terraform.lock.hcl" in first["written"]
    again = r.render(str(repo), "alpha", "base", jinja)
    assert not again["changed"]
    (repo / "stacks" / "alpha" / ".terraform.lock.hcl").unlink()
    # Without a template, the file is tofu's own (written by init) and stays.
    assert not r.render(str(repo), "alpha", "base", jinja)["removed"]
