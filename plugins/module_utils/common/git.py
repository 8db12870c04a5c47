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
import time

DEFAULT_TIMEOUT = 60
STATUS = ["status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all"]
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
    "behind" (someone pushed to `upstream`), "gone" or "rewound" (someone
    deleted `upstream`, or moved it back, while the run held its lock),
    "no_upstream" (`branch` has none) or "detached" (HEAD is the head of no
    branch of `remote`)."""

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


def start_git(args, cwd, timeout=DEFAULT_TIMEOUT, env=None, input=None):
    """Starts git and returns a Started whose result() is the CompletedProcess:
    the caller may run other commands meanwhile (run_git_proc() is both halves
    at once). Raises GitError only when git cannot be started."""
    return Started(["git", *args], cwd, timeout, env, input)


class Started:
    """A git process started and not yet read: result() waits for it (within
    the timeout, counted from its start) and returns its CompletedProcess."""

    def __init__(self, argv, cwd, timeout, env, input):
        self.argv, self.cwd, self.timeout, self.input = argv, cwd, timeout, input
        self.deadline = time.monotonic() + timeout
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=git_env(env), text=True, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL if input is None else subprocess.PIPE)
        except FileNotFoundError as exc:
            if not os.path.isdir(cwd):
                raise GitError(f"repository path {cwd} does not exist") from exc
            raise GitError("git is not installed (no 'git' on PATH)") from exc

    def result(self):
        left = self.deadline - time.monotonic()
        if left <= 0 and self.proc.poll() is not None:
            # It ended in time; its output is still to be read.
            left = 1.0
        try:
            stdout, stderr = self.proc.communicate(self.input, timeout=max(0.0, left))
        except subprocess.TimeoutExpired as exc:
            self.abandon()
            raise GitError(f"'{' '.join(self.argv)}' timed out after {self.timeout}s in {self.cwd}") from exc
        return subprocess.CompletedProcess(self.argv, self.proc.returncode, stdout, stderr)

    def abandon(self):
        """Stops it (when it still runs) and lets its output go; as
        subprocess.run does, without waiting on what git started, which may
        hold the pipes open."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def run_git_proc(args, cwd, timeout=DEFAULT_TIMEOUT, env=None, input=None):
    """Runs git and returns the CompletedProcess whatever its exit status.

    Raises GitError only when git cannot be started or times out."""
    return start_git(args, cwd, timeout=timeout, env=env, input=input).result()


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
            "modified": [], "staged": [], "untracked": [], "unmerged": [], "ignored": [], "renamed_from": []}
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
                # The rename's (or copy's) original path follows as its own field.
                if index < len(fields) and fields[index]:
                    info["renamed_from"].append(fields[index])
                index += 1
            if xy[0] != ".":
                info["staged"].append(path)
            if xy[1] != ".":
                info["modified"].append(path)
        elif entry[0] == "u":
            info["unmerged"].append(entry.split(" ", 10)[-1])
        elif entry[0] == "?":
            info["untracked"].append(entry[2:])
        elif entry[0] == "!":
            info["ignored"].append(entry[2:])
    return info


def status(repo_path, timeout=DEFAULT_TIMEOUT, ignored=False):
    """The work tree's status (parse_status); with `ignored`, the files and
    directories ignore rules cover too (`ignored`), as the render step reads
    its sources."""
    return parse_status(run_git(STATUS + (["--ignored=matching"] if ignored else []), repo_path, timeout=timeout))


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
    found = _branch_at_head(repo_path, timeout)[0]
    if found is not None:
        return found
    proc = run_git_proc(["symbolic-ref", "-q", "--short", "HEAD"], repo_path, timeout=timeout)
    if proc.returncode not in (0, 1):
        raise failure(proc)
    branch = proc.stdout.strip()
    if not branch:
        raise DetachedHead(f"HEAD is detached in {repo_path}: check out the branch to push")
    head = run_git(["rev-parse", "--verify", "HEAD"], repo_path, timeout=timeout).strip()
    return (branch, head, *upstream_of(repo_path, branch, timeout=timeout))


def _branch_at_head(repo_path, timeout, also=()):
    """((branch, head, upstream remote, upstream ref) or None, [refs of `also`
    pointing at HEAD]), read in one git process; None when no branch is seen
    checked out (detached, unborn, or git failed: checked_out() then asks)."""
    proc = run_git_proc(["for-each-ref", "--points-at=HEAD", "--format=%(HEAD)%00%(refname)%00%(objectname)"
                         "%00%(upstream:remotename)%00%(upstream:remoteref)", "refs/heads", *also],
                        repo_path, timeout=timeout)
    found, at_head = None, []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        fields = line.split("\0")
        if len(fields) != 5:
            continue
        if fields[0] == "*" and fields[1].startswith("refs/heads/"):
            found = (fields[1][len("refs/heads/"):], fields[2], fields[3] or None, fields[4] or None)
        elif fields[1] in also:
            at_head.append(fields[1])
    return found, at_head


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


def check(repo_path, max_ahead=1, allow_detached=False, fetch=True, timeout=DEFAULT_TIMEOUT, seen=None):
    """Whether the clone is fit to run a change from. Never raises for a refusing
    condition (that is ok=False and a sentence in problems); raises GitError when
    git itself fails (not a repository, remote unreachable).

    With `fetch`, the branch is compared with its upstream as the remote holds
    it now (read with ls-remote while the work tree's status is read); the
    upstream's commits are fetched only when the clone lacks them. A detached
    HEAD fetches, to find which remote branch it is the head of. `seen`: the
    work tree's status() read a moment before in the same run, used instead
    of reading it again."""
    remote_view = None
    if fetch:
        info, remote_view = _status_and_remote(repo_path, timeout, seen)
    else:
        info = dict(seen) if seen else status(repo_path, timeout=timeout)
    if fetch and info["branch"] is None:
        # Without a remote named, git fetches the remote of the branch's
        # upstream, or origin; a detached checkout has no upstream to fail on.
        run_git_proc(["fetch", "--quiet", "--no-tags", "--no-auto-gc"], repo_path, timeout=timeout)

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
        # The branch has an upstream that the remote (or the last fetch) no longer has.
        "upstream_gone": bool(info["branch"] and info["upstream"] and info["ahead"] is None),
        "modified": sorted(set(info["modified"] + info["unmerged"])),
        "staged": info["staged"],
        "untracked": info["untracked"],
        # Where the upstream was read from, and the commit it then held
        # (None when compared with the remote-tracking ref): recheck() asks again.
        "upstream_remote": remote_view and remote_view[0],
        "upstream_ref": remote_view and remote_view[1],
        "upstream_commit": remote_view and remote_view[2],
    }


def _status_and_remote(repo_path, timeout, seen=None):
    """(status(), (remote, ref, commit) of the branch's upstream as the remote
    holds it now, read while the status is, or None without an upstream).
    `ahead` and `behind` are counted against that commit, not the
    remote-tracking ref."""
    pending = None if seen else start_git(STATUS, repo_path, timeout=timeout)
    found, listing = None, None
    try:
        found = _branch_at_head(repo_path, timeout)[0]
        if found and found[2] and found[3]:
            listing = run_git_proc(["ls-remote", found[2], found[3]], repo_path, timeout=timeout)
    except BaseException:
        if pending:
            pending.abandon()
        raise
    if seen:
        info = dict(seen)
    else:
        done = pending.result()
        if done.returncode != 0:
            raise failure(done)
        info = parse_status(done.stdout)
    if listing is None or info["branch"] != found[0] or info["head"] != found[1]:
        return info, None
    remote, ref = found[2], found[3]
    if listing.returncode != 0:
        raise failure(listing, f"cannot reach {remote} to compare with {info['upstream'] or ref}")
    commit = _listed(listing.stdout).get(ref)
    if commit is None:
        info["ahead"] = info["behind"] = None  # the branch is gone from the remote
    else:
        info["behind"], info["ahead"] = _counts(repo_path, remote, ref, commit, info["head"], timeout)
    return info, (remote, ref, commit)


def _listed(text):
    """{ref: object id} of ls-remote's output (the first of a ref listed twice)."""
    found = {}
    for line in text.splitlines():
        oid, _tab, ref = line.partition("\t")
        found.setdefault(ref, oid)
    return found


def _counts(repo_path, remote, ref, commit, head, timeout):
    """(behind, ahead): commits of `commit` (`ref` on `remote`) that `head`
    lacks, and the reverse. `commit` is fetched first when the clone lacks it."""
    if commit == head:
        return 0, 0
    if run_git_proc(["cat-file", "-e", f"{commit}^{{commit}}"], repo_path, timeout=timeout).returncode != 0:
        fetched = run_git_proc(["fetch", "--quiet", "--no-tags", "--no-auto-gc", remote, ref],
                               repo_path, timeout=timeout)
        if fetched.returncode != 0:
            raise failure(fetched, f"cannot fetch {ref} from {remote}")
    behind, ahead = run_git(["rev-list", "--left-right", "--count", f"{commit}...{head}"],
                            repo_path, timeout=timeout).split()
    return int(behind), int(ahead)


def recheck(repo_path, checked, timeout=DEFAULT_TIMEOUT):
    """check() once more, for a clone `checked` (check()'s passing result)
    found fit: once the run's locks are held, whether its upstream moved
    since. When the remote's branch still holds the commit check() compared
    with, and the branch checked out, its commit and its upstream are those
    check() saw, only they are read (`checked` is the answer); otherwise the
    whole check runs again, fetching."""
    if checked and checked.get("upstream_commit") and not checked.get("behind"):
        pending = start_git(["ls-remote", checked["upstream_remote"], checked["upstream_ref"]], repo_path,
                            timeout=timeout)
        try:
            found = _branch_at_head(repo_path, timeout)[0]
        except BaseException:
            pending.abandon()
            raise
        listing = pending.result()
        seen = (checked["branch"], checked["head"], checked["upstream_remote"], checked["upstream_ref"])
        if (found == seen and listing.returncode == 0
                and _listed(listing.stdout).get(checked["upstream_ref"]) == checked["upstream_commit"]):
            return checked
    return check(repo_path, max_ahead=10 ** 6, allow_detached=True, fetch=True, timeout=timeout)


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


def push_applied(repo_path, commit, applied, remote=None, timeout=DEFAULT_TIMEOUT, release=None, expected=None):
    """push() of `commit` (the one applied), then mark_applied() of it for
    each (stack, profile) in `applied`: (push result, [marker result...]).
    The markers are read from the remote in the same request as the branch
    and pushed only where they point elsewhere: a run that changed nothing
    sends nothing.

    `release`: (remote, ref, object id) of the run lock this run holds on the
    branch's remote, and `expected`: the commit the run last saw the remote
    branch hold, with the lock held. Then the branch, the markers and the
    lock's delete go in one atomic push, and the lock is given back exactly
    when the branch lands; when anything in it is refused, nothing of it
    lands and everything is pushed as without `release` (the lock is then
    still held). The push result's `released` says which."""
    refs = [f"{APPLIED_PREFIX}/{stack}/{profile}" for stack, profile in applied]
    if release and expected:
        done = _push_releasing(repo_path, commit, applied, refs, release, expected, remote, timeout)
        if done is not None:
            return done
    result, remote, on_remote, at_head = _push(repo_path, remote, False, timeout, commit, refs, expected)
    if release:
        result["released"] = False
    return result, [mark_applied(repo_path, stack, profile, commit, remote=remote, timeout=timeout,
                                 on_remote=on_remote.get(ref), here=ref in at_head)
                    for (stack, profile), ref in zip(applied, refs)]


def _push_releasing(repo_path, commit, applied, refs, release, expected, remote, timeout):
    """push_applied() in one atomic push with the lock's delete; None when
    nothing of it landed (refused, or the branch is detached, or its remote
    is not the lock's). The branch moves only from `expected` (a lease: the
    commit the run saw under its lock, which `commit` descends from): a
    branch moved or deleted meanwhile is left to the separate path, which
    refuses it."""
    lock_remote, lock_ref, lock_oid = release
    found, at_head = _branch_at_head(repo_path, timeout, refs)
    if found is None or not found[3] or (remote or found[2]) != lock_remote:
        return None
    branch, head, _up_remote, up_ref = found
    _unmoved(commit, branch, head)
    try:
        proc = run_git_proc(["push", "--atomic", "--porcelain", f"--force-with-lease={lock_ref}:{lock_oid}",
                             f"--force-with-lease={up_ref}:{expected}", lock_remote, f"{head}:{up_ref}",
                             *(f"+{commit}:{ref}" for ref in refs), f":{lock_ref}"], repo_path, timeout=timeout)
        flags = _atomic_outcome(proc, [up_ref, *refs, lock_ref])
    except GitError as exc:
        # Timed out: it may have landed all the same. The remote says which.
        flags = {} if _landed(repo_path, lock_remote, up_ref, lock_ref, refs, head, lock_oid, timeout, exc) else None
    if flags is None:
        return None
    moved = expected != head and flags.get(up_ref) != "="
    upstream = f"{lock_remote}/{up_ref[len('refs/heads/'):] if up_ref.startswith('refs/heads/') else up_ref}"
    result = {"changed": moved, "branch": branch, "upstream": upstream, "range": "", "commits": 0,
              "released": True}
    if moved:
        result["range"] = f"{expected}..{head}"
        result["commits"] = int(run_git(["rev-list", "--count", f"{expected}..{head}"], repo_path,
                                        timeout=timeout).strip() or 0)
    markers = [mark_applied(repo_path, stack, profile, commit, timeout=timeout, on_remote=commit,
                            here=ref in at_head) for (stack, profile), ref in zip(applied, refs)]
    return result, markers


def _atomic_outcome(proc, refs):
    """{ref: git's flag} of the atomic push of `refs` when it landed, from
    git's porcelain report; None when it did not."""
    flags = {}
    for line in proc.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[0] and fields[0] in "*=+ -!" and ":" in fields[1]:
            flags[fields[1].rpartition(":")[2]] = fields[0]
    landed = proc.returncode == 0 and set(flags) == set(refs) and "!" not in flags.values()
    return flags if landed else None


def _landed(repo_path, remote, up_ref, lock_ref, markers, head, lock_oid, timeout, error):
    """After an atomic push that did not answer: True when the remote shows
    it landed (the branch and the `markers` at `head`, the lock gone), False when nothing of it
    did (the lock still the one it would have deleted); GitError saying what
    the remote holds otherwise."""
    listing = run_git_proc(["ls-remote", remote, up_ref, lock_ref, *markers], repo_path, timeout=timeout)
    if listing.returncode != 0:
        raise GitError(f"{error}; and what it left on {remote} cannot be read: "
                       f"{(listing.stderr or listing.stdout).strip()}") from error
    on_remote = _listed(listing.stdout)
    if (on_remote.get(up_ref) == head and lock_ref not in on_remote
            and all(on_remote.get(ref) == head for ref in markers)):
        return True
    if on_remote.get(lock_ref) == lock_oid:
        return False
    raise GitError(f"{error}; {remote} now holds {up_ref} at {on_remote.get(up_ref) or 'nothing'} and the run lock "
                   f"at {on_remote.get(lock_ref) or 'nothing (released)'}") from error


def _push(repo_path, remote, check_mode, timeout, commit, also=(), expected=None):
    """push(); (its result, the remote pushed to, {ref: object id} of the
    refs `also` on that remote, read in the same request, the refs of `also`
    that point at HEAD in the clone). `expected`: the commit the run saw the
    upstream hold under its lock; an upstream deleted or moved back since
    (by someone without the lock) is refused, as one moved on is."""
    try:
        # The clone's own copies of `also` are read in the same process.
        found, at_head = _branch_at_head(repo_path, timeout, also)
        branch, head, up_remote, up_ref = found or checked_out(repo_path, timeout=timeout)
    except DetachedHead as exc:
        _unmoved(commit, "HEAD", run_git(["rev-parse", "--verify", "HEAD"], repo_path, timeout=timeout).strip())
        remote = remote or "origin"
        result, on_remote = _push_detached(repo_path, remote, exc, timeout, also)
        return result, remote, on_remote, []
    _unmoved(commit, branch, head)
    if not up_ref:
        raise PushRefused(f"branch {branch} has no upstream: set one with 'git push -u <remote> {branch}'",
                          "no_upstream", branch=branch, remote=remote)
    remote = remote or up_remote
    upstream = f"{remote}/{up_ref[len('refs/heads/'):] if up_ref.startswith('refs/heads/') else up_ref}"

    listing = run_git_proc(["ls-remote", remote, up_ref, *also], repo_path, timeout=timeout)
    if listing.returncode != 0:
        raise failure(listing, f"cannot read {up_ref} from {remote}")
    on_remote = _listed(listing.stdout)
    remote_oid = on_remote.get(up_ref)

    if remote_oid == head:
        return ({"changed": False, "branch": branch, "upstream": upstream, "range": "", "commits": 0},
                remote, on_remote, at_head)
    if expected and remote_oid is None:
        raise PushRefused(f"{upstream} was deleted on {remote} while the run held its lock (it was at {expected}): "
                          "nothing was pushed", "gone", branch, upstream, remote)
    if remote_oid:
        behind, ahead = _counts(repo_path, remote, up_ref, remote_oid, head, timeout)
        if behind and ahead:
            raise PushRefused(f"branch {branch} has diverged from {upstream} ({ahead} ahead, {behind} behind): "
                              "rebase or merge, then push; nothing was pushed", "behind", branch, upstream)
        if behind:
            raise PushRefused(f"branch {branch} is {behind} commit(s) behind {upstream}: pull first; nothing was "
                              "pushed", "behind", branch, upstream)
        if expected and remote_oid != expected and run_git_proc(
                ["merge-base", "--is-ancestor", expected, remote_oid], repo_path, timeout=timeout).returncode != 0:
            raise PushRefused(f"{upstream} was moved back from {expected} to {remote_oid} while the run held its "
                              "lock: nothing was pushed over it", "rewound", branch, upstream, remote)
        commit_range = f"{remote_oid}..{head}" if ahead else ""
    else:
        ahead = int(run_git(["rev-list", "--count", head, "--not", f"--remotes={remote}"],
                            repo_path, timeout=timeout).strip() or 0)
        commit_range = head

    result = {"changed": bool(ahead), "branch": branch, "upstream": upstream, "range": commit_range,
              "commits": ahead}
    if not ahead or check_mode:
        return result, remote, on_remote, at_head
    # The commit itself, not the branch: a commit made meanwhile is not pushed.
    proc = run_git_proc(["push", "--porcelain", remote, f"{head}:{up_ref}"], repo_path, timeout=timeout)
    if proc.returncode != 0:
        raise failure(proc, f"push of {branch} to {upstream} was refused")
    return result, remote, on_remote, at_head


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


def mark_applied(repo_path, stack, profile, commit, remote=None, timeout=DEFAULT_TIMEOUT, on_remote=None,
                 here=False):
    """Records `commit` as the last applied to (stack, profile): the ref
    APPLIED_PREFIX/<stack>/<profile> on the remote (moved whichever way the
    commit lies, a revert included) and in the clone. `on_remote`: where the
    remote's marker was just seen pointing (it is not pushed again when that
    is `commit`); `here`: whether the clone's marker was just seen pointing
    at `commit` (it is not written again). Never raises: a marker not written leaves the stack
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
        if not here:
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
