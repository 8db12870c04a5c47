# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Git access for the change workflow: the clean-tree check and the push.

Plain Python, no AnsibleModule. Every git call is an argument list (never a
shell) with a timeout, and a failure carries git's own error text.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess

DEFAULT_TIMEOUT = 60
OBJECT_ID_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Set by git for its hooks (and by users): each points git at another
# repository, index or object store than the work tree it runs in.
REPOSITORY_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                  "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_PREFIX",
                  "GIT_IMPLICIT_WORK_TREE", "GIT_SHALLOW_FILE", "GIT_GRAFT_FILE")


class GitError(Exception):
    """git failed, or the repository is in a state the operation refuses."""


class DetachedHead(GitError):
    """HEAD is not on a branch."""


class PushRefused(GitError):
    """A push refused before anything was sent, for a `cause` the workflow
    advises on: "moved" (the checkout moved on from the commit applied),
    "behind" (someone pushed to `upstream`), "no_upstream" (`branch` has
    none) or "detached" (HEAD is the head of no branch of `remote`)."""

    def __init__(self, message, cause, branch=None, upstream=None, remote=None):
        super().__init__(message)
        self.cause = cause
        self.branch = branch
        self.upstream = upstream
        self.remote = remote


def git_env(env=None):
    """The environment for git: never prompt (a prompt would hang a play), and
    messages in C locale so the text we surface is the documented one."""
    full = dict(os.environ)
    full.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C", GIT_OPTIONAL_LOCKS="0")
    for name in REPOSITORY_ENV:
        full.pop(name, None)
    if env:
        full.update(env)
    return full


def run_git_proc(args, cwd, timeout=DEFAULT_TIMEOUT, env=None, input=None):
    """Runs git and returns the CompletedProcess whatever its exit status.

    Raises GitError only when git cannot be started or times out."""
    argv = ["git"] + list(args)
    try:
        return subprocess.run(argv, cwd=cwd, env=git_env(env), input=input, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        if not os.path.isdir(cwd):
            raise GitError(f"repository path {cwd} does not exist") from exc
        raise GitError("git is not installed (no 'git' on PATH)") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"'{' '.join(argv)}' timed out after {timeout}s in {cwd}") from exc


def failure(proc, what=None):
    text = (proc.stderr or proc.stdout or "").strip()
    cmd = " ".join(proc.args)
    prefix = f"{what}: " if what else ""
    return GitError(f"{prefix}'{cmd}' failed (exit {proc.returncode}): {text}")


def run_git(args, cwd, timeout=DEFAULT_TIMEOUT, env=None, input=None):
    """Runs git and returns its stdout; raises GitError with git's stderr on failure."""
    proc = run_git_proc(args, cwd, timeout=timeout, env=env, input=input)
    if proc.returncode != 0:
        raise failure(proc)
    return proc.stdout


def git_dirs(path, timeout=DEFAULT_TIMEOUT):
    """(git directory, common git directory) of the work tree holding `path`,
    found as git finds them: the nearest `.git` above it, a directory or a
    worktree's file naming its own, whose `commondir` names the shared one.
    Read from those files; git is asked only where they tell nothing."""
    top = os.path.realpath(path)
    while True:
        dot_git = os.path.join(top, ".git")
        git_dir = dot_git if os.path.isdir(dot_git) else None
        if git_dir is None and os.path.isfile(dot_git):
            try:
                with open(dot_git, encoding="utf-8") as handle:
                    pointer = handle.read().strip()
            except (OSError, UnicodeDecodeError):
                pointer = ""
            if pointer.startswith("gitdir:"):
                git_dir = os.path.join(top, pointer[len("gitdir:"):].strip())
        if git_dir is not None:
            try:
                with open(os.path.join(git_dir, "commondir"), encoding="utf-8") as handle:
                    return git_dir, os.path.normpath(os.path.join(git_dir, handle.read().strip()))
            except (OSError, UnicodeDecodeError):
                return git_dir, git_dir
        parent = os.path.dirname(top)
        if parent == top:
            break
        top = parent
    found = run_git(["rev-parse", "--absolute-git-dir", "--git-common-dir"], path, timeout=timeout).splitlines()
    return found[0], os.path.normpath(os.path.join(path, found[1]))


def object_ids(repo_path, names, timeout=DEFAULT_TIMEOUT):
    """{name: object id, or None when it names nothing} of revision names
    (`HEAD`, `HEAD:./stacks/alpha`), read in one git process."""
    if any("\n" in name for name in names):
        raise GitError("a revision name cannot hold a line break")
    lines = run_git(["cat-file", "--batch-check=%(objectname)"], repo_path, timeout=timeout,
                    input="".join(f"{name}\n" for name in names)).splitlines()
    if len(lines) != len(names):
        raise GitError(f"git cat-file answered {len(lines)} line(s) for {len(names)} name(s)")
    # A name that resolves to nothing comes back as "<name> missing" (or ambiguous).
    return {name: line if OBJECT_ID_RE.fullmatch(line) else None for name, line in zip(names, lines)}


def blob_id(content, like):
    """The object id git gives `content` (bytes) as a blob, in the hash of
    the object id `like` (SHA-1, or SHA-256 for a 64-digit id)."""
    digest = hashlib.sha256 if len(like or "") == 64 else hashlib.sha1
    return digest(b"blob %d\0" % len(content) + content).hexdigest()


def parse_status(text):
    """Parses `git status --porcelain=v2 --branch -z` output."""
    info = {"branch": None, "head": None, "upstream": None, "ahead": None, "behind": None,
            "modified": [], "staged": [], "untracked": [], "unmerged": []}
    fields = text.split("\0")
    index = 0
    while index < len(fields):
        entry = fields[index]
        index += 1
        if not entry:
            continue
        if entry.startswith("# branch.oid "):
            oid = entry[len("# branch.oid "):]
            info["head"] = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry[len("# branch.head "):]
            info["branch"] = None if head == "(detached)" else head
        elif entry.startswith("# branch.upstream "):
            info["upstream"] = entry[len("# branch.upstream "):]
        elif entry.startswith("# branch.ab "):
            ahead, behind = entry[len("# branch.ab "):].split()
            info["ahead"], info["behind"] = int(ahead), -int(behind)
        elif entry[0] in "12":
            parts = entry.split(" ", 8 if entry[0] == "1" else 9)
            xy, path = parts[1], parts[-1]
            if entry[0] == "2":
                index += 1  # the rename's original path follows as its own field
            if xy[0] != ".":
                info["staged"].append(path)
            if xy[1] != ".":
                info["modified"].append(path)
        elif entry[0] == "u":
            info["unmerged"].append(entry.split(" ", 10)[-1])
        elif entry[0] == "?":
            info["untracked"].append(entry[2:])
    return info


def status(repo_path, timeout=DEFAULT_TIMEOUT):
    return parse_status(run_git(["status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all"],
                                repo_path, timeout=timeout))


def upstream_of(repo_path, branch, timeout=DEFAULT_TIMEOUT):
    """(remote name, remote ref) of a branch's upstream, or (None, None)."""
    out = run_git(["for-each-ref", "--format=%(upstream:remotename)%00%(upstream:remoteref)",
                   f"refs/heads/{branch}"], repo_path, timeout=timeout).strip()
    if not out or "\0" not in out:
        return None, None
    remote, ref = out.split("\0", 1)
    return (remote or None), (ref or None)


def checked_out(repo_path, timeout=DEFAULT_TIMEOUT):
    """(branch, HEAD commit, upstream remote, upstream ref) of the branch
    checked out, the last two None without an upstream; GitError when HEAD
    is detached. One git process in the usual case."""
    proc = run_git_proc(["for-each-ref", "--points-at=HEAD", "--format=%(HEAD)%00%(refname)%00%(objectname)"
                         "%00%(upstream:remotename)%00%(upstream:remoteref)", "refs/heads"],
                        repo_path, timeout=timeout)
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        fields = line.split("\0")
        if len(fields) == 5 and fields[0] == "*":
            return (fields[1][len("refs/heads/"):], fields[2], fields[3] or None, fields[4] or None)
    proc = run_git_proc(["symbolic-ref", "-q", "--short", "HEAD"], repo_path, timeout=timeout)
    if proc.returncode not in (0, 1):
        raise failure(proc)
    branch = proc.stdout.strip()
    if not branch:
        raise DetachedHead(f"HEAD is detached in {repo_path}: check out the branch to push")
    head = run_git(["rev-parse", "--verify", "HEAD"], repo_path, timeout=timeout).strip()
    return (branch, head, *upstream_of(repo_path, branch, timeout=timeout))


def head_commit(path, timeout=DEFAULT_TIMEOUT):
    """The commit checked out in the git work tree holding `path`, or None
    (no repository, no commit yet)."""
    try:
        proc = run_git_proc(["rev-parse", "--verify", "-q", "HEAD"], path, timeout=timeout)
    except GitError:
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def remote_branch_at(repo_path, commit, timeout=DEFAULT_TIMEOUT):
    """The remote-tracking branch (`origin/main`) whose head is `commit`, or
    None: the branch a detached checkout (an AWX project sync, a CI job) was
    made from. The remote's default branch wins when several match."""
    out = run_git(["for-each-ref", f"--points-at={commit}", "--format=%(refname:short)%00%(symref)",
                   "refs/remotes"], repo_path, timeout=timeout)
    names = sorted(name for name, _sep, symref in (line.partition("\0") for line in out.splitlines())
                   if not symref)
    if not names:
        return None
    default = run_git_proc(["symbolic-ref", "-q", "--short", f"refs/remotes/{names[0].split('/')[0]}/HEAD"],
                           repo_path, timeout=timeout).stdout.strip()
    return default if default in names else names[0]


def check(repo_path, max_ahead=1, allow_detached=False, fetch=True, timeout=DEFAULT_TIMEOUT):
    """Whether the clone is fit to run a change from. Never raises for a refusing
    condition (that is ok=False and a sentence in problems); raises GitError when
    git itself fails (not a repository, remote unreachable on fetch)."""
    fetched = None
    if fetch:
        # Without a remote named, git fetches the remote of the branch's
        # upstream: no process to look it up first. A failure matters only
        # when there is an upstream to compare with.
        fetched = run_git_proc(["fetch", "--quiet", "--no-tags", "--no-auto-gc"], repo_path, timeout=timeout)
    info = status(repo_path, timeout=timeout)
    if fetched is not None and fetched.returncode != 0 and info["upstream"]:
        remote, _ref = upstream_of(repo_path, info["branch"], timeout=timeout)
        raise failure(fetched, f"cannot fetch {remote or 'origin'} to compare with {info['upstream']}")

    problems = []
    compared = None
    if info["head"] is None:
        problems.append("the repository has no commit yet")
    if info["branch"] is None:
        # A detached checkout of exactly what a remote branch holds (AWX
        # syncs projects so) is as good as that branch, up to date.
        compared = remote_branch_at(repo_path, info["head"], timeout=timeout) if info["head"] else None
        if compared is None and not allow_detached:
            problems.append(f"HEAD is detached at {(info['head'] or '')[:12]}, which is the head of no remote "
                            f"branch{' after a fetch' if fetch else ''} (check out a branch, sync the "
                            "checkout again, or set allow_detached)")
    elif not info["upstream"]:
        problems.append(f"branch {info['branch']} has no upstream (push it once with 'git push -u')")
    elif info["ahead"] is None:
        problems.append(f"the upstream {info['upstream']} of branch {info['branch']} no longer exists")
    else:
        if info["behind"] and info["ahead"]:
            problems.append(f"branch {info['branch']} has diverged from {info['upstream']} "
                            f"({info['ahead']} ahead, {info['behind']} behind): rebase or merge first")
        elif info["behind"]:
            problems.append(f"branch {info['branch']} is {info['behind']} commit(s) behind {info['upstream']}: pull first")
        if info["ahead"] > max_ahead:
            problems.append(f"branch {info['branch']} is {info['ahead']} commits ahead of {info['upstream']} "
                            f"(at most {max_ahead} allowed): push or squash first")
    for label, paths in (("modified", info["modified"] + info["unmerged"]), ("staged", info["staged"]),
                         ("untracked", info["untracked"])):
        if paths:
            shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
            problems.append(f"{len(paths)} {label} file(s): {shown}")
    return {
        "ok": not problems,
        "problems": problems,
        "branch": info["branch"],
        "head": info["head"],
        "upstream": info["upstream"] or compared,
        "detached_at": compared,
        "ahead": info["ahead"] or 0,
        "behind": info["behind"] or 0,
        "modified": sorted(set(info["modified"] + info["unmerged"])),
        "staged": info["staged"],
        "untracked": info["untracked"],
    }


def _unmoved(commit, name, head):
    """Refuses to push when `commit` (the one applied) is no longer `head`."""
    if commit and head != commit:
        raise PushRefused(f"the checkout moved during the run: {commit} was applied, but {name} now "
                          f"points at {head}; nothing was pushed, since what would be pushed is not what "
                          "was applied", "moved")


def push(repo_path, remote=None, check_mode=False, timeout=DEFAULT_TIMEOUT, commit=None):
    """Pushes the current branch to its upstream, never with force; given
    `commit` (the one applied), exactly that commit, refused when the branch
    no longer points at it.

    Compares with the remote itself (not a possibly stale tracking ref), so a
    branch behind or diverged is refused before anything is sent."""
    return _push(repo_path, remote, check_mode, timeout, commit)[0]


def push_applied(repo_path, commit, applied, remote=None, timeout=DEFAULT_TIMEOUT):
    """push() of `commit` (the one applied), then mark_applied() of it for
    each (stack, profile) in `applied`: (push result, [marker result...]).
    The markers are read from the remote in the same request as the branch
    and pushed only where they point elsewhere: a run that changed nothing
    sends nothing."""
    refs = [f"{APPLIED_PREFIX}/{stack}/{profile}" for stack, profile in applied]
    result, remote, on_remote = _push(repo_path, remote, False, timeout, commit, refs)
    return result, [mark_applied(repo_path, stack, profile, commit, remote=remote, timeout=timeout,
                                 on_remote=on_remote.get(ref))
                    for (stack, profile), ref in zip(applied, refs)]


def _push(repo_path, remote, check_mode, timeout, commit, also=()):
    """push(); (its result, the remote pushed to, {ref: object id} of the
    refs `also` on that remote, read in the same request)."""
    try:
        branch, head, up_remote, up_ref = checked_out(repo_path, timeout=timeout)
    except DetachedHead as exc:
        _unmoved(commit, "HEAD", run_git(["rev-parse", "--verify", "HEAD"], repo_path, timeout=timeout).strip())
        remote = remote or "origin"
        result, on_remote = _push_detached(repo_path, remote, exc, timeout, also)
        return result, remote, on_remote
    _unmoved(commit, branch, head)
    if not up_ref:
        raise PushRefused(f"branch {branch} has no upstream: set one with 'git push -u <remote> {branch}'",
                          "no_upstream", branch=branch, remote=remote)
    remote = remote or up_remote
    upstream = f"{remote}/{up_ref[len('refs/heads/'):] if up_ref.startswith('refs/heads/') else up_ref}"

    listing = run_git_proc(["ls-remote", remote, up_ref, *also], repo_path, timeout=timeout)
    if listing.returncode != 0:
        raise failure(listing, f"cannot read {up_ref} from {remote}")
    on_remote = {}
    for line in listing.stdout.splitlines():
        oid, _tab, ref = line.partition("\t")
        on_remote.setdefault(ref, oid)
    remote_oid = on_remote.get(up_ref)

    if remote_oid == head:
        return ({"changed": False, "branch": branch, "upstream": upstream, "range": "", "commits": 0},
                remote, on_remote)
    if remote_oid:
        if run_git_proc(["cat-file", "-e", f"{remote_oid}^{{commit}}"], repo_path, timeout=timeout).returncode != 0:
            fetched = run_git_proc(["fetch", "--quiet", "--no-tags", "--no-auto-gc", remote, up_ref],
                                   repo_path, timeout=timeout)
            if fetched.returncode != 0:
                raise failure(fetched, f"cannot fetch {up_ref} from {remote}")
        counts = run_git(["rev-list", "--left-right", "--count", f"{remote_oid}...{head}"],
                         repo_path, timeout=timeout).split()
        behind, ahead = int(counts[0]), int(counts[1])
        if behind and ahead:
            raise PushRefused(f"branch {branch} has diverged from {upstream} ({ahead} ahead, {behind} behind): "
                              "rebase or merge, then push; nothing was pushed", "behind", branch, upstream)
        if behind:
            raise PushRefused(f"branch {branch} is {behind} commit(s) behind {upstream}: pull first; nothing was "
                              "pushed", "behind", branch, upstream)
        commit_range = f"{remote_oid}..{head}" if ahead else ""
    else:
        ahead = int(run_git(["rev-list", "--count", head, "--not", f"--remotes={remote}"],
                            repo_path, timeout=timeout).strip() or 0)
        commit_range = head

    result = {"changed": bool(ahead), "branch": branch, "upstream": upstream, "range": commit_range,
              "commits": ahead}
    if not ahead or check_mode:
        return result, remote, on_remote
    # The commit itself, not the branch: a commit made meanwhile is not pushed.
    proc = run_git_proc(["push", "--porcelain", remote, f"{head}:{up_ref}"], repo_path, timeout=timeout)
    if proc.returncode != 0:
        raise failure(proc, f"push of {branch} to {upstream} was refused")
    return result, remote, on_remote


def _push_detached(repo_path, remote, detached, timeout=DEFAULT_TIMEOUT, also=()):
    """A detached HEAD that is the head of a branch of `remote` has nothing to
    push (an AWX job's checkout); any other detached HEAD is refused.
    (result, {ref: object id} of the refs `also` on `remote`, read in the
    same request as its branches)."""
    head = run_git(["rev-parse", "--verify", "HEAD"], repo_path, timeout=timeout).strip()
    listing = run_git(["ls-remote", remote, "refs/heads/*", *also], repo_path, timeout=timeout)
    refs = [(ref, oid) for oid, _tab, ref in (line.partition("\t") for line in listing.splitlines())]
    names = sorted(ref[len("refs/heads/"):] for ref, oid in refs if ref.startswith("refs/heads/") and oid == head)
    if not names:
        raise PushRefused(f"{detached}; HEAD {head[:12]} is the head of no branch of {remote}, so it cannot be "
                          "pushed; nothing was pushed", "detached", remote=remote)
    return ({"changed": False, "branch": None, "upstream": f"{remote}/{names[0]}", "range": "", "commits": 0,
             "msg": f"detached HEAD {head[:12]} is already {remote}/{names[0]}: nothing to push"},
            {ref: oid for ref, oid in refs if ref in also})


# Where the last commit applied to each (stack, profile) is recorded, on the
# remote, so every clone and CI job sees it (the `affected` selection).
APPLIED_PREFIX = "refs/guardrail/applied"


def _push_remote(repo_path, remote, timeout):
    if remote:
        return remote
    try:
        _branch, _head, up_remote, _ref = checked_out(repo_path, timeout=timeout)
    except GitError:
        up_remote = None
    return up_remote or "origin"


def mark_applied(repo_path, stack, profile, commit, remote=None, timeout=DEFAULT_TIMEOUT, on_remote=None):
    """Records `commit` as the last applied to (stack, profile): the ref
    APPLIED_PREFIX/<stack>/<profile> on the remote (moved whichever way the
    commit lies, a revert included) and in the clone. `on_remote`: where the
    remote's marker was just seen pointing (it is not pushed again when that
    is `commit`). Never raises: a marker not written leaves the stack
    `affected` next time, which only costs a plan.
    Returns {"ref", "commit", "pushed", "error"}."""
    ref = f"{APPLIED_PREFIX}/{stack}/{profile}"
    result = {"ref": ref, "commit": commit, "pushed": False, "error": None}
    try:
        if on_remote != commit:
            remote = _push_remote(repo_path, remote, timeout)
            proc = run_git_proc(["push", "--quiet", "--no-verify", remote, f"+{commit}:{ref}"], repo_path,
                                timeout=timeout)
            if proc.returncode != 0:
                result["error"] = failure(proc).args[0]
                return result
        result["pushed"] = True
        run_git(["update-ref", ref, commit], repo_path, timeout=timeout)
    except GitError as exc:
        result["error"] = str(exc)
    return result


def applied_commits(repo_path, remote=None, fetch=True, timeout=DEFAULT_TIMEOUT):
    """{(stack, profile): commit} of the markers mark_applied wrote, fetched
    from the remote first (with their commits) unless `fetch` is false."""
    if fetch:
        remote = _push_remote(repo_path, remote, timeout)
        proc = run_git_proc(["fetch", "--quiet", "--no-tags", "--no-auto-gc", "--prune", remote,
                             f"+{APPLIED_PREFIX}/*:{APPLIED_PREFIX}/*"], repo_path, timeout=timeout)
        if proc.returncode != 0:
            raise failure(proc, f"cannot fetch the applied markers from {remote}")
    found = {}
    listing = run_git(["for-each-ref", "--format=%(objectname) %(refname)", APPLIED_PREFIX + "/"],
                      repo_path, timeout=timeout)
    for line in listing.splitlines():
        oid, _sep, ref = line.partition(" ")
        parts = ref[len(APPLIED_PREFIX) + 1:].split("/")
        if len(parts) == 2:
            found[tuple(parts)] = oid
    return found
