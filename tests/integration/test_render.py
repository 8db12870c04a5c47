"""guardrail.ecs.render and the profile lookup through ansible-playbook, with
Ansible's own templating, on the example stack in a git clone."""
import json
import os

import pytest

from conftest import run_playbook, task_results
from workflow_helpers import git, make_stack_repo

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
%s
"""


def play(clone, tasks, check=False, diff=False):
    rc, out, err = run_playbook(PLAY % tasks.replace("REPO", str(clone)), check=check, diff=diff,
                                cwd=clone.parent)
    return rc, dict(task_results(out)), err


@pytest.fixture
def stack_repo(git_repo):
    clone, _remote = git_repo
    return make_stack_repo(clone)


RENDER = """
    - name: render
      guardrail.ecs.render: {repo_path: REPO, stack: alpha, profile: prod}
"""


def test_render_prod_merges_base_and_is_deterministic(stack_repo):
    clone = stack_repo
    rc, results, err = play(clone, RENDER)
    assert rc == 0, (results, err)
    result = results["render"]
    dest = clone / ".dist" / "prod" / "alpha"
    assert result["changed"] and result["dest"] == str(dest)
    assert sorted(result["written"]) == ["main.tf", "outputs.tf", "zones.tf.json"]
    assert result["ignore_added"] == "/.dist/prod/alpha/"
    main = (dest / "main.tf").read_text()
    assert 'name     = "web-prod"' in main and "replicas = 3" in main
    assert (dest / "outputs.tf").read_bytes() == (clone / "stacks/alpha/outputs.tf").read_bytes()
    zones = (dest / "zones.tf.json").read_text()
    data = json.loads(zones)
    assert sorted(data["resource"]["terraform_data"]) == ["zone_a", "zone_b", "zone_c"]
    assert data["resource"]["terraform_data"]["zone_b"]["input"]["tags"] == {"cost_center": "5678", "team": "platform"}
    assert zones == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""

    rc, results, err = play(clone, RENDER)
    assert rc == 0, (results, err)
    again = results["render"]
    assert not again["changed"] and again["written"] == [] and again["hash"] == result["hash"]
    assert again["ignore_added"] is None


def test_check_mode_writes_nothing_and_diff_shows_changes(stack_repo):
    clone = stack_repo
    rc, results, err = play(clone, RENDER, check=True, diff=True)
    assert rc == 0, (results, err)
    assert results["render"]["changed"]
    assert any("web-prod" in d["after"] for d in results["render"]["diff"])
    assert not (clone / ".dist").exists()
    assert "/.dist/" not in (clone / ".git" / "info" / "exclude").read_text()


def test_stale_files_removed_and_modes_kept(stack_repo):
    clone = stack_repo
    script = clone / "stacks" / "alpha" / "hook.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o750)
    git("add", "stacks", cwd=clone)
    git("commit", "-q", "-m", "hook", cwd=clone)
    rc, results, err = play(clone, RENDER)
    assert rc == 0, (results, err)
    dest = clone / ".dist" / "prod" / "alpha"
    assert os.stat(dest / "hook.sh").st_mode & 0o777 == 0o750
    git("rm", "-q", "stacks/alpha/hook.sh", cwd=clone)
    git("commit", "-q", "-m", "no hook", cwd=clone)
    (dest / "terraform.tfstate").write_text("{}")
    rc, results, err = play(clone, RENDER, diff=True)
    assert rc == 0, (results, err)
    assert results["render"]["removed"] == ["hook.sh"]
    assert not (dest / "hook.sh").exists() and (dest / "terraform.tfstate").exists()


def test_vars_override_profile_and_lookup_returns_merged_profile(stack_repo):
    clone = stack_repo
    tasks = """
    - name: render
      guardrail.ecs.render:
        repo_path: REPO
        stack: alpha
        profile: prod
        dest: build/alpha
        vars: {service: {replicas: 7}}
    - name: lookup
      ansible.builtin.set_fact:
        merged: "{{ lookup('guardrail.ecs.profile', 'prod', repo_path='REPO') }}"
"""
    rc, results, err = play(clone, tasks)
    assert rc == 0, (results, err)
    assert "replicas = 7" in (clone / "build" / "alpha" / "main.tf").read_text()
    merged = results["lookup"]["ansible_facts"]["merged"]
    assert merged["service"] == {"name": "web", "replicas": 3, "image": "public.ecr.aws/nginx/nginx:1.27",
                                 "tags": {"team": "platform", "cost_center": "5678"}}
    assert merged["zones"] == ["a", "b", "c"] and "extends" not in merged


BAD = """
    - name: escaping stack
      guardrail.ecs.render: {repo_path: REPO, stack: ../x, profile: prod}
      ignore_errors: true
    - name: missing profile
      guardrail.ecs.render: {repo_path: REPO, stack: alpha, profile: nope}
      ignore_errors: true
    - name: escaping template
      guardrail.ecs.render: {repo_path: REPO, stack: leaky, profile: prod}
      ignore_errors: true
    - name: undefined variable
      guardrail.ecs.render: {repo_path: REPO, stack: broken, profile: prod}
      ignore_errors: true
    - name: tracked dest
      guardrail.ecs.render: {repo_path: REPO, stack: alpha, profile: prod, dest: tracked}
      ignore_errors: true
"""


def test_bad_input_refused_and_nothing_written(stack_repo, tmp_path):
    clone = stack_repo
    (tmp_path / "outside.tf").write_text("secret\n")
    (clone / "stacks" / "leaky").mkdir()
    os.symlink(tmp_path / "outside.tf", clone / "stacks" / "leaky" / "outside.tf")
    (clone / "stacks" / "broken").mkdir()
    (clone / "stacks" / "broken" / "main.tf.j2").write_text("{{ no_such_variable }}\n")
    (clone / "tracked").mkdir()
    (clone / "tracked" / "main.tf").write_text("# kept in git\n")
    git("add", "stacks", "tracked", cwd=clone)
    git("commit", "-q", "-m", "hostile stacks", cwd=clone)
    rc, results, err = play(clone, BAD)
    assert rc == 0, (results, err)
    for name, text in {"escaping stack": "invalid stack name '../x'",
                       "missing profile": "profile 'nope' not found",
                       "escaping template": "escapes the stack root",
                       "undefined variable": "no_such_variable",
                       "tracked dest": "holds files tracked by git"}.items():
        assert results[name].get("failed"), (name, results[name])
        assert text in results[name]["msg"], (name, results[name]["msg"])
    assert not (clone / ".dist").exists()
    assert sorted(os.listdir(clone / "tracked")) == ["main.tf"]
    assert (clone / "tracked" / "main.tf").read_text() == "# kept in git\n"
