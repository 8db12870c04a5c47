"""Unit tests for module_utils/common/git.py: status parsing and error text."""
import os
import subprocess
import time

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.common import git

OID = "5d41402abc4b2a76b9719d911017c592ae2b3c11"


def porcelain(*entries):
    return "\0".join(entries) + "\0"


def test_parse_status_branch_and_entries():
    text = porcelain(
        f"# branch.oid {OID}", "# branch.head main", "# branch.upstream origin/main", "# branch.ab +2 -1",
        f"1 .M N... 100644 100644 100644 {OID} {OID} main.tf",
        f"1 A. N... 000000 100644 100644 {OID} {OID} dir/with space.tf",
        f"2 R. N... 100644 100644 100644 {OID} {OID} R100 new name.tf", "old name.tf",
        f"u UU N... 100644 100644 100644 100644 {OID} {OID} {OID} conflict.tf",
        "? notes.txt",
    )
    info = git.parse_status(text)
    assert (info["branch"], info["head"], info["upstream"], info["ahead"], info["behind"]) == (
        "main", OID, "origin/main", 2, 1)
    assert info["modified"] == ["main.tf"]
    assert info["staged"] == ["dir/with space.tf", "new name.tf"]
    assert info["unmerged"] == ["conflict.tf"]
    assert info["untracked"] == ["notes.txt"]


def test_parse_status_detached_initial_and_gone_upstream():
    info = git.parse_status(porcelain("# branch.oid (initial)", "# branch.head (detached)"))
    assert (info["branch"], info["head"], info["upstream"], info["ahead"]) == (None, None, None, None)
    info = git.parse_status(porcelain(f"# branch.oid {OID}", "# branch.head main", "# branch.upstream origin/gone"))
    assert (info["upstream"], info["ahead"]) == ("origin/gone", None)


def test_check_reports_a_gone_upstream(monkeypatch):
    monkeypatch.setattr(git, "status", lambda *a, **k: git.parse_status(
        porcelain(f"# branch.oid {OID}", "# branch.head main", "# branch.upstream origin/gone")))
    result = git.check("/nowhere", fetch=False)
    assert result["problems"] == ["the upstream origin/gone of branch main no longer exists"]


def test_errors_carry_git_stderr(tmp_path):
    with pytest.raises(git.GitError, match="not a git repository"):
        git.run_git(["status"], str(tmp_path))
    with pytest.raises(git.GitError, match="does not exist"):
        git.run_git(["status"], str(tmp_path / "missing"))


def test_timeout_is_reported_and_a_process_git_started_does_not_hold_it(tmp_path):
    """git stopped at its timeout; what it started (here the remote's side,
    which sleeps) still holds git's output open, and is not waited for."""
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "remote.git")], check=True)
    started = time.monotonic()
    with pytest.raises(git.GitError, match="'git ls-remote --upload-pack=sleep 5; .*' timed out after 1s"):
        git.run_git(["ls-remote", "--upload-pack=sleep 5; ", str(tmp_path / "remote.git")], str(tmp_path),
                    timeout=1)
    assert time.monotonic() - started < 4


def test_git_never_prompts():
    env = git.git_env({"EXTRA": "1"})
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["EXTRA"] == "1" and "GIT_DIR" not in env


def test_git_runs_on_the_work_tree_it_is_given_whatever_the_environment(tmp_path, monkeypatch):
    """Run from a git hook, the environment points at another repository, index and object store:
    a clean clone must still read as clean."""
    repo = tmp_path / "repo"
    other = tmp_path / "other"
    for path in (repo, other):
        subprocess.run(["git", "init", "-q", str(path)], check=True)
    (repo / "main.tf").write_text("# x\n")
    subprocess.run(["git", "-C", str(repo), "add", "main.tf"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                    "commit", "-q", "-m", "one"], check=True)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(other / ".git" / "objects"))
    assert git.run_git(["rev-parse", "--show-toplevel"], str(repo)).strip() == str(repo.resolve())
    assert git.run_git(["status", "--porcelain"], str(repo)) == ""


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def test_git_dirs_and_object_ids_say_what_git_says(tmp_path):
    """From the files git reads, for a clone, a directory inside it and a
    worktree; the object ids of several names in one process."""
    repo = tmp_path / "repo"
    _git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "stacks" / "alpha").mkdir(parents=True)
    (repo / "stacks" / "alpha" / "main.tf").write_text("# a\n")
    (repo / "policy.yml").write_bytes(b"max_changes: 1\r\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "one")
    _git(repo, "worktree", "add", "-q", str(tmp_path / "wt"))
    for where in (repo, repo / "stacks" / "alpha", tmp_path / "wt"):
        said = _git(where, "rev-parse", "--absolute-git-dir", "--git-common-dir").splitlines()
        found = git.git_dirs(str(where))
        expected = [os.path.realpath(said[0]), os.path.realpath(os.path.join(where, said[1]))]
        assert [os.path.realpath(d) for d in found] == expected
    with pytest.raises(git.GitError, match="not a git repository"):
        git.git_dirs(str(tmp_path))

    names = ["HEAD", "HEAD:./stacks/alpha", "HEAD:policy.yml", "HEAD:nothing here", "HEAD:stacks/missing"]
    ids = git.object_ids(str(repo), names)
    assert ids == {"HEAD": _git(repo, "rev-parse", "HEAD").strip(),
                   "HEAD:./stacks/alpha": _git(repo, "rev-parse", "HEAD:stacks/alpha").strip(),
                   "HEAD:policy.yml": _git(repo, "rev-parse", "HEAD:policy.yml").strip(),
                   "HEAD:nothing here": None, "HEAD:stacks/missing": None}
    assert git.blob_id(b"max_changes: 1\r\n", ids["HEAD:policy.yml"]) == ids["HEAD:policy.yml"]
    assert git.blob_id(b"max_changes: 1\n", ids["HEAD:policy.yml"]) != ids["HEAD:policy.yml"]
    with pytest.raises(git.GitError, match="line break"):
        git.object_ids(str(repo), ["HEAD\nHEAD:policy.yml"])
