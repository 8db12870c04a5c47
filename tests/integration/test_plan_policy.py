"""The plan policy (policy.yml at the repository root) as a user meets it:
bin/guardrail, a bare remote, the git lock, real terraform/tofu. A denied
plan applies nothing, saves nothing and lists the offending resources."""
import json
import shutil

import pytest

from conftest import git
from stacks_helpers import guardrail, remote_refs
from workflow_helpers import commit

pytestmark = pytest.mark.skipif(not (shutil.which("tofu") or shutil.which("terraform")),
                                reason="SKIPPED LOUDLY: neither tofu nor terraform is on PATH")

STACK = """\
terraform {
  backend "local" {}
}

resource "terraform_data" "marker" {
  count            = {{ markers }}
  input            = { name = "m${count.index}", tags = {{ tags | to_json }} }
  triggers_replace = ["{{ release }}"]
}
"""
POLICY = """\
max_changes: 3
protect:
  - profiles: [prod]
    resources: ["terraform_data.*"]
    deny: [delete, replace]
require_tags:
  - profiles: [prod]
    resources: ["terraform_data.marker"]
    attribute: input.tags
    tags: [team]
"""


def profile(markers=2, release="r1", tags='{"team": "platform"}'):
    return f"markers: {markers}\nrelease: {release}\ntags: {tags}\n"


@pytest.fixture
def repo(git_repo):
    """One stack with two markers applied, then the policy committed."""
    clone, remote = git_repo
    (clone / "stacks" / "keep").mkdir(parents=True)
    (clone / "stacks" / "keep" / "main.tf.j2").write_text(STACK)
    (clone / "profiles").mkdir()
    (clone / "profiles" / "prod.yml").write_text(profile())
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "keep", cwd=clone)
    git("push", "-q", cwd=clone)
    assert guardrail(clone, "keep", "tofu", "apply").returncode == 0
    commit(clone, "policy.yml", POLICY, push=True)
    return clone, remote


def markers(clone):
    """{index: release} of the markers in the state."""
    data = json.loads((clone / ".dist" / "prod" / "keep" / "terraform.tfstate").read_text())
    return {i["index_key"]: i["attributes"]["triggers_replace"]["value"][0]
            for r in data["resources"] for i in r["instances"]}


def before(clone):
    return markers(clone) == {0: "r1", 1: "r1"}


@pytest.mark.parametrize("change, offending, rule", [
    (profile(markers=1), ["terraform_data.marker[1]"], "denies delete"),
    (profile(release="r2"), ["terraform_data.marker[0]", "terraform_data.marker[1]"], "denies replace"),
    (profile(markers=6), [f"terraform_data.marker[{i}]" for i in range(2, 6)], "max_changes: 4 changes, at most 3"),
    (profile(markers=3, tags='{"owner": "x"}'), ["terraform_data.marker[2]"], "input.tags lacks team"),
], ids=["delete", "replace", "count", "tags"])
def test_a_denied_plan_applies_nothing_and_names_the_resources(repo, change, offending, rule):
    clone, remote = repo
    assert before(clone), markers(clone)
    commit(clone, "profiles/prod.yml", change, push=True)
    proc, result = guardrail(clone, "keep", "tofu", "apply", options=("--json",))
    assert proc.returncode == 2, proc.stdout
    assert result["refused"] and result["failed_step"] == "exec"
    assert rule in result["msg"] and "nothing was applied" in result["msg"]
    exec_step = next(s for s in result["steps"] if s["step"] == "exec")
    assert sorted({v["address"] for v in exec_step["result"]["policy_violations"]} & set(offending)) == offending
    assert before(clone), markers(clone)
    # Nothing applied: the run lock is given back and nothing is recorded as applied.
    assert remote_refs(remote, "refs/guardrail/locks") == []
    assert git("rev-parse", "refs/guardrail/applied/keep/prod", cwd=remote) != git("rev-parse", "HEAD", cwd=clone)


def test_a_denied_plan_is_not_saved(repo):
    clone, _remote = repo
    commit(clone, "profiles/prod.yml", profile(release="r2"), push=True)
    proc = guardrail(clone, "keep", "tofu", "plan")
    assert proc.returncode == 2 and "denies replace" in proc.stderr
    assert "Saved plan" not in proc.stdout
    assert not list((clone / ".dist" / "prod" / "keep" / ".guardrail-plans").glob("*.tfplan"))


def test_the_allow_list_lets_named_addresses_through(repo):
    clone, _remote = repo
    commit(clone, "profiles/prod.yml", profile(release="r2"), push=True)
    one = ("--allow", "terraform_data.marker[0]")
    proc = guardrail(clone, "keep", "tofu", "apply", options=one)
    assert proc.returncode == 2 and "terraform_data.marker[1]" in proc.stderr
    assert "terraform_data.marker[0] (replace" not in proc.stderr
    assert before(clone)
    proc = guardrail(clone, "keep", "tofu", "apply", options=(*one, "--allow", "terraform_data.marker[1]"))
    assert proc.returncode == 0, proc.stderr
    assert markers(clone) == {0: "r2", 1: "r2"}


def test_the_policy_is_checked_on_every_stack_of_a_many_stack_run(repo):
    clone, _remote = repo
    commit(clone, "profiles/prod.yml", profile(markers=1), push=True)
    proc, result = guardrail(clone, "all", "tofu", "apply", options=("--json",))
    assert proc.returncode == 2
    assert result["stacks"][0]["outcome"] == "refused" and "denies delete" in result["stacks"][0]["msg"]
    assert before(clone)


@pytest.mark.parametrize("how", ["untracked", "modified"])
def test_a_policy_not_committed_as_it_is_refuses_the_run(git_repo, how):
    clone, remote = git_repo
    (clone / "stacks" / "keep").mkdir(parents=True)
    (clone / "stacks" / "keep" / "main.tf.j2").write_text(STACK)
    (clone / "profiles").mkdir()
    (clone / "profiles" / "prod.yml").write_text(profile())
    if how == "modified":
        (clone / "policy.yml").write_text(POLICY)
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "keep", cwd=clone)
    git("push", "-q", cwd=clone)
    (clone / "policy.yml").write_text("max_changes: 0\n")
    # Without git_check: the policy itself must still be the committed one.
    proc = guardrail(clone, "keep", "tofu", "apply", steps=("render", "lock", "exec", "unlock"))
    assert proc.returncode == 3
    assert f"policy.yml is {'not committed' if how == 'untracked' else 'modified'}" in proc.stderr
    assert not (clone / ".dist" / "prod" / "keep" / "terraform.tfstate").exists()
    assert remote_refs(remote, "refs/guardrail") == []


@pytest.mark.parametrize("text, expected", [
    ("max_changes: -1\n", "max_changes must be a whole number >= 0"),
    ("protect: [{resources: ['*'], deny: [destroy]}]\n", "unknown action(s) destroy"),
    ("protect: [{deny: [delete]}]\n", "protect[0] needs resources"),
    ("limits: 3\n", "unknown key(s) limits"),
    ("require_tags: [{resources: ['*'], tags: [team], attribute: 'a..b'}]\n", "must be a dotted path"),
])
def test_an_invalid_policy_is_refused_with_a_clear_error(repo, text, expected):
    clone, remote = repo
    commit(clone, "policy.yml", text, push=True)
    proc = guardrail(clone, "keep", "tofu", "plan")
    assert proc.returncode == 3 and expected in proc.stderr, proc.stderr
    assert remote_refs(remote, "refs/guardrail/locks") == []


def test_a_committed_policy_with_crlf_line_ends_is_in_force(repo):
    """The work tree's policy.yml is compared with the committed one byte for
    byte: CRLF line ends are neither a modification nor lost."""
    clone, remote = repo
    commit(clone, "policy.yml", POLICY.replace("\n", "\r\n"), push=True)
    commit(clone, "profiles/prod.yml", profile(markers=1), push=True)
    proc, result = guardrail(clone, "keep", "tofu", "apply", options=("--json",))
    assert proc.returncode == 2 and "denies delete" in result["msg"], result["msg"]
    assert before(clone), markers(clone)
    assert remote_refs(remote, "refs/guardrail/locks") == []
