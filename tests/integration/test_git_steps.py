"""git_check and git_push against real clones of a bare remote."""
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.common import git as gitops
from conftest import git
from lock_helpers import clone


def commit(repo, name, text="x\n", message=None):
    (repo / name).write_text(text)
    git("add", name, cwd=repo)
    git("commit", "-q", "-m", message or f"change {name}", cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


@pytest.fixture
def other(git_repo, tmp_path):
    """A second clone of the same remote: a colleague who pushes."""
    _work, remote = git_repo
    path = clone(remote, tmp_path / "other")
    git("config", "user.name", "Other", cwd=path)
    git("config", "user.email", "other@example.invalid", cwd=path)
    return path


def test_single_commit_clone_is_ready(git_repo):
    work, _remote = git_repo
    result = gitops.check(str(work))
    assert result["ok"], result["problems"]
    assert (result["branch"], result["upstream"], result["ahead"], result["behind"]) == ("main", "origin/main", 0, 0)
    assert result["head"] == git("rev-parse", "HEAD", cwd=work)
    assert git("rev-list", "--count", "HEAD", cwd=work) == "1"


def test_one_unpushed_commit_is_allowed_two_are_not(git_repo):
    work, _remote = git_repo
    commit(work, "a.tf")
    assert gitops.check(str(work))["ok"]
    commit(work, "b.tf")
    result = gitops.check(str(work))
    assert not result["ok"] and result["ahead"] == 2
    assert result["problems"] == ["branch main is 2 commits ahead of origin/main (at most 1 allowed): push or squash first"]
    assert gitops.check(str(work), max_ahead=2)["ok"]


@pytest.mark.parametrize("kind", ["modified", "staged", "untracked"])
def test_dirty_tree_is_refused_with_paths(git_repo, kind):
    work, _remote = git_repo
    (work / ".gitignore").write_text("*.tfstate\n")
    git("add", ".gitignore", cwd=work)
    git("commit", "-q", "-m", "ignore state", cwd=work)
    git("push", "-q", cwd=work)
    (work / "terraform.tfstate").write_text("{}")
    (work / "sub").mkdir()
    if kind == "modified":
        (work / "README").write_text("changed\n")
    elif kind == "staged":
        (work / "sub" / "new.tf").write_text("x")
        git("add", "sub/new.tf", cwd=work)
    else:
        (work / "sub" / "new.tf").write_text("x")
    result = gitops.check(str(work))
    assert not result["ok"]
    expected = {"modified": ["README"], "staged": ["sub/new.tf"], "untracked": ["sub/new.tf"]}[kind]
    assert result[kind] == expected
    assert result["problems"] == [f"1 {kind} file(s): {expected[0]}"]
    others = {"modified", "staged", "untracked"} - {kind}
    assert all(result[name] == [] for name in others)


def test_behind_is_refused_after_fetch(git_repo, other):
    work, _remote = git_repo
    commit(other, "theirs.tf")
    git("push", "-q", cwd=other)
    assert gitops.check(str(work), fetch=False)["ok"], "without a fetch the clone cannot know"
    result = gitops.check(str(work))
    assert not result["ok"] and (result["ahead"], result["behind"]) == (0, 1)
    assert result["problems"] == ["branch main is 1 commit(s) behind origin/main: pull first"]


def test_diverged_is_refused(git_repo, other):
    work, _remote = git_repo
    commit(other, "theirs.tf")
    git("push", "-q", cwd=other)
    commit(work, "mine.tf")
    result = gitops.check(str(work))
    assert not result["ok"] and (result["ahead"], result["behind"]) == (1, 1)
    assert result["problems"] == ["branch main has diverged from origin/main (1 ahead, 1 behind): rebase or merge first"]


def test_no_upstream_and_detached_head(git_repo):
    work, _remote = git_repo
    git("checkout", "-q", "-b", "feature", cwd=work)
    result = gitops.check(str(work))
    assert result["problems"] == ["branch feature has no upstream (push it once with 'git push -u')"]
    commit(work, "local.tf")
    git("checkout", "-q", "--detach", cwd=work)
    result = gitops.check(str(work))
    assert result["branch"] is None and result["detached_at"] is None
    assert result["problems"] == [f"HEAD is detached at {result['head'][:12]}, which is the head of no remote "
                                  "branch after a fetch (check out a branch, sync the checkout again, or set "
                                  "allow_detached)"]
    assert gitops.check(str(work), allow_detached=True)["ok"]


def test_detached_checkout_of_a_remote_branch_head_is_that_branch(git_repo, other):
    """As AWX syncs a project: a clone with HEAD detached at the commit the
    remote branch holds passes and names the branch it was compared with;
    once the remote moves on, it is refused."""
    work, _remote = git_repo
    git("checkout", "-q", "--detach", "origin/main", cwd=work)
    result = gitops.check(str(work))
    assert result["ok"], result["problems"]
    assert (result["branch"], result["detached_at"], result["upstream"]) == (None, "origin/main", "origin/main")
    assert gitops.push(str(work))["upstream"] == "origin/main"
    assert gitops.push(str(work))["changed"] is False
    commit(other, "theirs.tf")
    git("push", "-q", cwd=other)
    result = gitops.check(str(work))
    assert not result["ok"] and result["detached_at"] is None
    with pytest.raises(gitops.GitError, match="head of no branch of origin"):
        gitops.push(str(work))


def test_unreachable_remote_carries_git_error(git_repo):
    work, _remote = git_repo
    git("remote", "set-url", "origin", str(work.parent / "gone.git"), cwd=work)
    with pytest.raises(gitops.GitError, match="cannot reach origin to compare with origin/main: .*does not appear "
                                              "to be a git repository"):
        gitops.check(str(work))
    with pytest.raises(gitops.GitError, match="not a git repository"):
        gitops.check(str(work.parent))


def test_check_compares_with_the_remote_not_a_stale_tracking_ref(git_repo, other):
    """The remote itself is read: a remote-tracking ref left behind or ahead
    of it by an earlier fetch decides nothing."""
    work, _remote = git_repo
    first = git("rev-parse", "HEAD", cwd=work)
    theirs = commit(other, "theirs.tf")
    git("push", "-q", cwd=other)
    git("pull", "-q", "--ff-only", cwd=work)
    # As if this clone had last fetched before the push it has since pulled.
    git("update-ref", "refs/remotes/origin/main", first, cwd=work)
    result = gitops.check(str(work))
    assert result["ok"], result["problems"]
    assert (result["ahead"], result["behind"], result["upstream_commit"]) == (0, 0, theirs)
    assert (result["upstream_remote"], result["upstream_ref"]) == ("origin", "refs/heads/main")
    # Behind a commit the clone has never seen: it is fetched to be counted.
    newer = commit(other, "newer.tf")
    git("push", "-q", cwd=other)
    result = gitops.check(str(work))
    assert (result["ok"], result["behind"], result["upstream_commit"]) == (False, 1, newer)
    assert git("rev-parse", "refs/remotes/origin/main", cwd=work) == newer


def test_an_upstream_deleted_on_the_remote_no_longer_exists(git_repo, other):
    """The clone's remote-tracking ref still names it; the remote does not."""
    work, _remote = git_repo
    git("push", "-q", "origin", "HEAD:refs/heads/feature", cwd=other)
    git("fetch", "-q", cwd=work)
    git("checkout", "-q", "-b", "feature", "--track", "origin/feature", cwd=work)
    assert gitops.check(str(work))["ok"]
    git("push", "-q", "origin", "--delete", "feature", cwd=other)
    result = gitops.check(str(work))
    assert result["problems"] == ["the upstream origin/feature of branch feature no longer exists"]
    assert gitops.check(str(work), fetch=False)["ok"], "without a fetch the clone cannot know"


def test_recheck_reads_the_remote_again_and_sees_every_move(git_repo, other):
    """What the re-check under the lock finds: the remote where check() saw
    it (HEAD read again), a push since, and a push that was then undone."""
    work, _remote = git_repo
    mine = commit(work, "mine.tf")
    checked = gitops.check(str(work))
    assert checked["ok"] and checked["ahead"] == 1
    assert gitops.recheck(str(work), checked) == checked
    moved = commit(work, "later.tf")
    assert gitops.recheck(str(work), checked)["head"] == moved, "HEAD is read again: the caller compares"
    git("reset", "-q", "--hard", mine, cwd=work)
    commit(other, "theirs.tf")
    git("push", "-q", cwd=other)
    again = gitops.recheck(str(work), checked)
    assert (again["behind"], again["ahead"]) == (1, 1)
    git("push", "-q", "--force", "origin", "HEAD~1:refs/heads/main", cwd=other)
    assert gitops.recheck(str(work), checked)["behind"] == 0
    # Without check()'s view of the remote (fetch=False), the whole check runs.
    assert gitops.recheck(str(work), gitops.check(str(work), fetch=False))["upstream_commit"] is not None


def test_push_ahead_pushes_the_range(git_repo):
    work, remote = git_repo
    old = git("rev-parse", "HEAD", cwd=work)
    new = commit(work, "a.tf")
    planned = gitops.push(str(work), check_mode=True)
    assert planned == {"changed": True, "branch": "main", "upstream": "origin/main", "range": f"{old}..{new}",
                       "commits": 1}
    assert git("rev-parse", "main", cwd=remote) == old
    assert gitops.push(str(work)) == planned
    assert git("rev-parse", "main", cwd=remote) == new


def test_push_equal_is_unchanged(git_repo):
    work, remote = git_repo
    result = gitops.push(str(work))
    assert result == {"changed": False, "branch": "main", "upstream": "origin/main", "range": "", "commits": 0}


def test_push_behind_is_refused_without_a_fetch(git_repo, other):
    work, remote = git_repo
    theirs = commit(other, "theirs.tf")
    git("push", "-q", cwd=other)
    with pytest.raises(gitops.GitError, match="1 commit\\(s\\) behind origin/main: pull first; nothing was pushed"):
        gitops.push(str(work))
    assert git("rev-parse", "main", cwd=remote) == theirs


def test_push_diverged_is_refused_and_never_forced(git_repo, other):
    work, remote = git_repo
    theirs = commit(other, "theirs.tf")
    git("push", "-q", cwd=other)
    commit(work, "mine.tf")
    for check_mode in (True, False):
        with pytest.raises(gitops.GitError, match="diverged from origin/main \\(1 ahead, 1 behind\\)"):
            gitops.push(str(work), check_mode=check_mode)
    assert git("rev-parse", "main", cwd=remote) == theirs


def test_push_refuses_detached_and_no_upstream(git_repo):
    work, _remote = git_repo
    git("checkout", "-q", "-b", "feature", cwd=work)
    with pytest.raises(gitops.GitError, match="branch feature has no upstream"):
        gitops.push(str(work))
    commit(work, "local.tf")
    git("checkout", "-q", "--detach", cwd=work)
    with pytest.raises(gitops.GitError, match="HEAD is detached"):
        gitops.push(str(work))


def test_push_to_another_remote_creates_the_branch(git_repo, tmp_path):
    work, _remote = git_repo
    mirror = tmp_path / "mirror.git"
    git("init", "-q", "--bare", "-b", "main", str(mirror), cwd=tmp_path)
    git("remote", "add", "mirror", str(mirror), cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)
    result = gitops.push(str(work), remote="mirror")
    assert result == {"changed": True, "branch": "main", "upstream": "mirror/main", "range": head, "commits": 1}
    assert git("rev-parse", "main", cwd=mirror) == head
    assert gitops.push(str(work), remote="mirror")["changed"] is False


def receive_log(work, tmp_path):
    """Logs every connection `work` makes to push (each starts the remote's
    receive-pack, even one that then finds nothing to send)."""
    log = tmp_path / "received.log"
    wrapper = tmp_path / "logging-receive-pack"
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> '{log}'\nexec git-receive-pack \"$@\"\n")
    wrapper.chmod(0o755)
    git("config", "remote.origin.receivepack", str(wrapper), cwd=work)
    log.write_text("")
    return log


def test_push_applied_moves_the_marker_wherever_it_points_and_pushes_nothing_when_unchanged(git_repo, tmp_path):
    work, remote = git_repo
    marker = "refs/guardrail/applied/alpha/prod"
    new = commit(work, "a.tf")
    log = receive_log(work, tmp_path)

    result, markers = gitops.push_applied(str(work), new, [("alpha", "prod")])
    assert result["changed"] and result["commits"] == 1
    assert markers == [{"ref": marker, "commit": new, "pushed": True, "error": None}]
    assert git("rev-parse", "main", marker, cwd=remote).split() == [new, new]
    assert git("rev-parse", marker, cwd=work) == new

    log.write_text("")
    again = gitops.push_applied(str(work), new, [("alpha", "prod")])
    assert again == ({"changed": False, "branch": "main", "upstream": "origin/main", "range": "", "commits": 0},
                     markers)
    assert log.read_text() == "", "no push when the branch and the marker are where they belong"
    # The clone's own marker lost, or left elsewhere: written again, nothing pushed.
    for stray in ("-d", "HEAD~1"):
        git("update-ref", *(["-d", marker] if stray == "-d" else [marker, stray]), cwd=work)
        assert gitops.push_applied(str(work), new, [("alpha", "prod")])[1] == markers
        assert git("rev-parse", marker, cwd=work) == new
    assert log.read_text() == ""

    # Another clone recorded an older commit meanwhile (a revert applied
    # elsewhere), and this clone's own marker is gone: both are put back.
    git("push", "-q", "--no-verify", "origin", f"+HEAD~1:{marker}", cwd=work)
    git("update-ref", "-d", marker, cwd=work)
    assert gitops.push_applied(str(work), new, [("alpha", "prod")])[1] == markers
    assert git("rev-parse", marker, cwd=remote) == new
    assert git("rev-parse", marker, cwd=work) == new
    assert log.read_text(), "the marker was pushed"


def test_push_applied_refuses_a_moved_checkout_and_marks_nothing(git_repo):
    work, remote = git_repo
    applied = commit(work, "a.tf")
    commit(work, "b.tf")
    with pytest.raises(gitops.GitError, match="the checkout moved during the run"):
        gitops.push_applied(str(work), applied, [("alpha", "prod")])
    assert git("for-each-ref", "refs/guardrail", cwd=remote) == ""
    assert git("for-each-ref", "refs/guardrail", cwd=work) == ""
