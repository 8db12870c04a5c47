# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rendering a stack's template tree for a profile.

Plain Python, no AnsibleModule and no Ansible templating: the caller passes a
`template(text, variables) -> str` function, so the render action plugin uses
Ansible's templar while tests and lookups can use anything else.

Layout: `<repo>/stacks/<stack>/` holds the templates, `<repo>/profiles/<name>.yml`
the profiles, and the output goes to `<repo>/.dist/<profile>/<stack>/`.

In a git work tree only committed sources are rendered: a modified, staged,
untracked or ignored file under the stack, the profiles or a named var file
refuses the render before any template is evaluated. Render removes only files
it wrote itself (listed in the manifest MANIFEST in the rendered directory) and
never tofu's working files (state, plans, .terraform/).
"""
from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
import shutil
import stat

from ansible_collections.guardrail.ecs.plugins.module_utils.common import git as git_utils
from ansible_collections.guardrail.ecs.plugins.module_utils.common import names
from ansible_collections.guardrail.ecs.plugins.module_utils.common.files import write_atomic

TEMPLATE_SUFFIX = ".j2"
# A template whose output name ends like this is parsed as YAML (JSON is YAML)
# and written as canonical JSON, so data-driven configuration is byte-stable.
TF_JSON_SUFFIX = ".tf.json"
# Files tofu/terraform keep beside the configuration: the rendered directory is
# also the working directory, so these survive a re-render.
KEEP = (
    ".terraform",
    ".terraform.lock.hcl",
    ".terraform.tfstate.lock.info",
    "terraform.tfstate",
    "terraform.tfstate.backup",
    "terraform.tfstate.d",
)
# The files render wrote, so a re-render removes only those.
MANIFEST = ".guardrail-rendered.json"
# The committed inputs of the last render and digests of what it wrote (see rendered_from).
RENDER_KEY = ".guardrail-render.json"
# Patterns (matched on every path component) render never removes or
# overwrites: state in any backend path, plans, tofu's data directory.
PROTECTED = ("*.tfstate", "*.tfstate.*", "*.tfplan", ".terraform", "terraform.tfstate.d", MANIFEST, RENDER_KEY)
# A stack may carry its own dependency lock file; tofu's other files are never templates.
RESERVED = tuple(name for name in KEEP if name != ".terraform.lock.hcl") + (MANIFEST, RENDER_KEY)


class RenderError(Exception):
    """Bad input or a failure while rendering; nothing was written."""


def validate_name(kind, name):
    """Stack and profile names follow the collection's one rule (module_utils.names)."""
    problem = names.name_problem(kind, name)
    if problem:
        raise RenderError(problem)
    return name


def inside(root, path):
    """True when `path` (resolved, symlinks followed) lies under `root`."""
    root = os.path.realpath(root)
    path = os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


def deep_merge(base, override):
    """`override` on top of `base`: dicts merge key by key, anything else
    (lists included) is replaced. Neither input is modified."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def profile_path(profiles_dir, name):
    validate_name("profile", name)
    for suffix in (".yml", ".yaml"):
        path = os.path.join(profiles_dir, name + suffix)
        if os.path.isfile(path):
            if not inside(profiles_dir, path):
                raise RenderError(f"profile {name!r} resolves outside {profiles_dir}")
            return path
    raise RenderError(f"profile {name!r} not found: no {name}.yml in {profiles_dir}")


def _require_yaml():
    """PyYAML, imported when a render first needs it (a skipped render never does)."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError as exc:  # pragma: no cover - rendering runs on the controller, which has PyYAML
        raise RenderError("PyYAML is required to read profiles and *.tf.json templates") from exc
    return yaml


def _read_profile(path):
    yaml = _require_yaml()
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"cannot read profile {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RenderError(f"profile {path} must be a mapping, not {type(data).__name__}")
    return data


def load_profile(profiles_dir, name, _chain=()):
    """The merged configuration of profile `name`.

    A profile may name its parents in `extends:` (a name or a list, merged left
    to right, the profile itself last). Cycles are refused. The returned data
    has no `extends` key.
    """
    if name in _chain:
        raise RenderError("profile cycle: " + " -> ".join(_chain + (name,)))
    data = _read_profile(profile_path(profiles_dir, name))
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RenderError(f"profile {name!r}: extends must be a profile name or a list of names")
    merged = {}
    for parent in parents:
        merged = deep_merge(merged, load_profile(profiles_dir, parent, _chain + (name,)))
    return deep_merge(merged, data)


def canonical_json(data):
    """Stable bytes for the same data: sorted keys, two-space indent, final newline."""
    try:
        text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False,
                          separators=(",", ": "), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RenderError(f"data cannot be written as JSON: {exc}") from exc
    return (text + "\n").encode("utf-8")


def walk(stack_root):
    """The files of a template tree as sorted (relative path, absolute path, mode).

    Symlinks are followed only when they stay inside the tree; anything
    resolving outside it is refused.
    """
    if not os.path.isdir(stack_root):
        raise RenderError(f"stack directory {stack_root} does not exist")
    entries = []
    for directory, dirnames, filenames in os.walk(stack_root, followlinks=True):
        if not inside(stack_root, directory):
            raise RenderError(f"{directory} escapes the stack root {stack_root}")
        dirnames.sort()
        for filename in filenames:
            path = os.path.join(directory, filename)
            rel = os.path.relpath(path, stack_root)
            if not inside(stack_root, path):
                raise RenderError(f"template {rel} escapes the stack root {stack_root}")
            entries.append((rel, path, stat.S_IMODE(os.stat(path).st_mode)))
    return sorted(entries)


def output_name(rel):
    return rel[: -len(TEMPLATE_SUFFIX)] if rel.endswith(TEMPLATE_SUFFIX) else rel


def build(stack_root, variables, template):
    """The rendered tree in memory: {relative output path: (bytes, mode)}.

    `*.j2` files go through `template(text, variables)` with the suffix
    dropped; `*.tf.json.j2` output is re-emitted as canonical JSON; every other
    file is copied byte for byte.
    """
    files = {}
    for rel, path, mode in walk(stack_root):
        name = output_name(rel)
        if name in files:
            raise RenderError(f"both {name} and {name}{TEMPLATE_SUFFIX} exist in {stack_root}")
        if os.path.normpath(name).split(os.sep)[0] in RESERVED or protected(name):
            raise RenderError(f"{rel}: names reserved for tofu's working files (state, plans, "
                              ".terraform) cannot be templates")
        with open(path, "rb") as handle:
            raw = handle.read()
        if rel.endswith(TEMPLATE_SUFFIX):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RenderError(f"template {rel} is not UTF-8: {exc}") from exc
            try:
                rendered = template(text, variables)
            except Exception as exc:
                raise RenderError(f"template {rel}: {exc}") from exc
            if name.endswith(TF_JSON_SUFFIX):
                yaml = _require_yaml()
                try:
                    content = canonical_json(yaml.safe_load(rendered))
                except yaml.YAMLError as exc:
                    raise RenderError(f"template {rel} did not render to JSON or YAML: {exc}") from exc
            else:
                content = rendered.encode("utf-8")
        else:
            content = raw
        files[name] = (content, mode)
    return files


def content_hash(files):
    """sha256 over every output path, mode and content, in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content, mode = files[name]
        digest.update(f"{name}\0{mode:o}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return digest.hexdigest()


def protected(name):
    """True for a relative path render must never remove or overwrite."""
    return any(fnmatch.fnmatch(part, pattern) for part in os.path.normpath(name).split(os.sep)
               for pattern in PROTECTED)


def manifest(dest):
    """{relative path: absolute path} of the files render wrote into `dest`
    before and that are still there."""
    try:
        with open(os.path.join(dest, MANIFEST), encoding="utf-8") as handle:
            names = json.load(handle).get("files") or []
    except (OSError, ValueError, AttributeError):
        return {}
    found = {}
    for name in names:
        if not isinstance(name, str):
            continue
        name = os.path.normpath(name)
        path = os.path.join(dest, name)
        if (name.startswith("..") or os.path.isabs(name) or protected(name)
                or name.split(os.sep)[0] in KEEP or not inside(dest, os.path.dirname(path))):
            continue
        if os.path.isfile(path) or os.path.islink(path):
            found[name] = path
    return found


CONFIG_SUFFIXES = (".tf", ".tf.json", ".tofu", ".tofu.json")


def _config_files(dest):
    """Names of the files tofu loads as configuration in `dest` (top level)."""
    try:
        names = os.listdir(dest)
    except OSError:
        return []
    return [n for n in names if n.endswith(CONFIG_SUFFIXES) and os.path.isfile(os.path.join(dest, n))]


def _write_manifest(dest, files):
    path = os.path.join(dest, MANIFEST)
    text = json.dumps({"files": sorted(files)}, indent=1) + "\n"
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return
    except OSError:
        pass
    write_atomic(path, text, durable=False)


def _text(content):
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return "(binary content)\n"


def plan_sync(dest, files):
    """What writing `files` into `dest` would do: (written, removed, diffs).

    Refuses when `dest` holds configuration render did not write (tofu would
    load it beside the rendered files, so what ran would not be what is
    committed)."""
    current = manifest(dest)
    foreign = sorted(name for name in _config_files(dest) if name not in current and name not in files)
    if foreign:
        raise RenderError(f"{dest} holds configuration that render did not write ({', '.join(foreign)}): "
                          "tofu would load it with the rendered files; move or delete it, nothing was "
                          "written")
    written, diffs = [], []
    for name in sorted(files):
        content, mode = files[name]
        path = os.path.join(dest, name)
        before = None
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as handle:
                before = handle.read()
            if before == content and stat.S_IMODE(os.stat(path).st_mode) == mode:
                continue
        written.append(name)
        diffs.append({"before_header": path if before is not None else "(absent)",
                      "after_header": path,
                      "before": _text(before) if before is not None else "",
                      "after": _text(content)})
    removed = sorted(n for n in current if n not in files)
    for name in removed:
        with open(current[name], "rb") as handle:
            diffs.append({"before_header": current[name], "after_header": "(absent)",
                          "before": _text(handle.read()), "after": ""})
    return written, removed, diffs


def sync(dest, files, check_mode=False):
    """Makes `dest` hold `files`, removing what an earlier render wrote and no
    longer renders; files render did not write stay.

    Each file is written to a temporary name and renamed into place. Returns
    {"changed", "written", "removed", "hash", "diff"}.
    """
    written, removed, diffs = plan_sync(dest, files)
    if not check_mode:
        for name in written:
            content, mode = files[name]
            path = os.path.join(dest, name)
            parent = os.path.dirname(path)
            if os.path.isfile(parent) or os.path.islink(parent):
                os.unlink(parent)
            os.makedirs(parent, exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            write_atomic(path, content, mode, durable=False)
        for name in removed:
            os.unlink(os.path.join(dest, name))
        os.makedirs(dest, exist_ok=True)
        _write_manifest(dest, files)
        _prune_empty_dirs(dest, removed)
    return {"changed": bool(written or removed), "written": written, "removed": removed,
            "hash": content_hash(files), "diff": diffs}


def _prune_empty_dirs(dest, removed):
    """Removes the directories that removing `removed` left empty."""
    for name in removed:
        parent = os.path.dirname(name)
        while parent:
            path = os.path.join(dest, parent)
            if not os.path.isdir(path) or os.path.islink(path) or os.listdir(path):
                break
            os.rmdir(path)
            parent = os.path.dirname(parent)


def resolve(repo_path, stack, profile, stacks_dir="stacks", profiles_dir="profiles", dest=None):
    """The absolute (stack root, profiles dir, dest) for a stack and profile,
    refusing names or paths that escape the repository (no process: a dest
    git tracks files in is refused by prepare, with check_untracked, and by
    the workflow before its steps)."""
    validate_name("stack", stack)
    validate_name("profile", profile)
    repo = os.path.realpath(repo_path)
    if not os.path.isdir(repo):
        raise RenderError(f"repo_path {repo_path} is not a directory")
    stacks = os.path.join(repo, stacks_dir)
    profiles = os.path.join(repo, profiles_dir)
    stack_root = os.path.join(stacks, stack)
    dest = os.path.join(repo, dest) if dest else os.path.join(repo, ".dist", profile, stack)
    for what, path in (("stacks_dir", stacks), ("profiles_dir", profiles),
                       ("stack", stack_root), ("dest", dest)):
        if not inside(repo, path):
            raise RenderError(f"{what} {path} escapes the repository {repo}")
    if os.path.realpath(dest) == repo or inside(os.path.realpath(dest), repo):
        raise RenderError(f"dest {dest} would replace the repository itself")
    if inside(stack_root, dest) or inside(dest, stack_root):
        raise RenderError(f"dest {dest} overlaps the templates in {stack_root}")
    if ".git" in os.path.relpath(os.path.realpath(dest), repo).split(os.sep):
        raise RenderError(f"dest {dest} lies in the repository's .git: render into an ignored "
                          "directory such as .dist/")
    for what, path in (("stacks_dir", stacks), ("profiles_dir", profiles)):
        if inside(dest, path) or inside(path, dest):
            raise RenderError(f"dest {dest} overlaps {what} {path}: render into an ignored "
                              "directory such as .dist/")
    return stack_root, profiles, dest


def check_untracked(repo_path, dest):
    """Refuses (RenderError) a `dest` holding files git tracks: rendering
    replaces and removes files there (and tofu writes its state there)."""
    tracked = _tracked(os.path.realpath(repo_path), dest)
    if tracked:
        raise RenderError(f"dest {dest} holds files tracked by git ({', '.join(tracked[:5])}): render "
                          "into an ignored directory such as .dist/")


def _git(repo, *args):
    try:
        return git_utils.run_git_proc(args, repo)
    except git_utils.GitError as exc:
        raise RenderError(str(exc)) from exc


def _work_tree(repo):
    """The top of the git work tree holding `repo`, or None outside git."""
    repo = os.path.realpath(repo)
    if repo not in _WORK_TREES:
        # Where git itself looks (GIT_DIR is never passed on): the nearest
        # directory holding .git, a directory or a worktree's file. No process.
        _WORK_TREES[repo] = next((d for d in _ancestors(repo) if os.path.exists(os.path.join(d, ".git"))), None)
    return _WORK_TREES[repo]


_WORK_TREES = {}


def _ancestors(path):
    path = os.path.realpath(path)
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _tracked(repo, path):
    """The files git tracks at or under `path` (empty outside git)."""
    if _work_tree(repo) is None:
        return []
    proc = _git(repo, "ls-files", "-z", "--", os.path.realpath(path))
    return [name for name in proc.stdout.split("\0") if name] if proc.returncode == 0 else []


def check_committed(repo, paths, required=False, status=None):
    """Refuses (RenderError) when any of `paths` (files or directories) holds a
    modified, staged, untracked or ignored file, so only committed content is
    ever rendered. Outside a git work tree nothing is checked unless
    `required`. Returns the work tree top or None. `status`: the whole work
    tree's status, ignored files included (git_utils.status(ignored=True)),
    read a moment before in the same run, instead of asking git again."""
    top = _work_tree(repo)
    if top is None:
        if required:
            raise RenderError(f"{repo} is not a git work tree: only committed sources are rendered; "
                              "no template was evaluated")
        return None
    specs = [os.path.realpath(p) for p in paths if os.path.exists(p) and inside(top, p)]
    if not specs:
        return top
    if status is not None:
        # As git lists them for the paths alone (porcelain v1, no renames):
        # changes to tracked files (a rename's both sides) in path order, then
        # untracked files, then ignored ones; an ignored directory holding a
        # source counts as that source ignored.
        within = [os.path.relpath(spec, top).replace(os.sep, "/") for spec in specs]

        def under(name, parents=False):
            """`name` is a source, lies in one, or (`parents`) holds one."""
            name = name.rstrip("/")
            return any(name == spec or name.startswith(spec + "/") or (parents and spec.startswith(name + "/"))
                       for spec in within)

        changed = status["staged"] + status["modified"] + status["unmerged"] + status["renamed_from"]
        dirty = [f"{name} ({kind})" for kind, names, parents in (
            ("modified", sorted(set(changed)), False), ("untracked", status["untracked"], False),
            ("ignored", status["ignored"], True)) for name in names if under(name, parents)]
    else:
        proc = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching",
                    "--no-renames", "--", *specs)
        if proc.returncode != 0:
            raise RenderError(f"git status failed in {repo}: {proc.stderr.strip()}")
        dirty = []
        for entry in proc.stdout.split("\0"):
            if len(entry) > 3:
                kind = {"??": "untracked", "!!": "ignored"}.get(entry[:2], "modified")
                dirty.append(f"{entry[3:]} ({kind})")
    if dirty:
        shown = ", ".join(dirty[:10]) + (f" and {len(dirty) - 10} more" if len(dirty) > 10 else "")
        raise RenderError(f"sources not committed: {shown}; commit or remove them: only committed "
                          "content is rendered, and no template was evaluated")
    return top


def rendered_from(dest, key):
    """Whether `dest` holds exactly the files a render keyed `key` (see
    record_key) wrote: same key, and every file render wrote unchanged."""
    try:
        with open(os.path.join(dest, RENDER_KEY), encoding="utf-8") as handle:
            saved = json.load(handle)
        files = manifest(dest)
        # A rendered file replaced by a symlink is rendered again, whatever it points to.
        return bool(saved.get("key") == key and files and sorted(files) == sorted(saved.get("files", {}))
                    and not any(os.path.islink(f) for f in files.values())
                    and all(_digest(files[n]) == saved["files"][n] for n in files))
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False


def tree_digest(dest):
    """sha256 over what tofu loads from `dest`: every file render wrote there
    and every other configuration file, by name and content."""
    digest = hashlib.sha256()
    for name in sorted(set(manifest(dest)) | set(_config_files(dest))):
        try:
            content = _digest(os.path.join(dest, name))
        except OSError:
            content = "-"
        digest.update(f"{name}\0{content}\n".encode())
    return digest.hexdigest()


def record_key(dest, key):
    """Records in `dest` the key of the render that just wrote it, with a
    digest of every file it wrote."""
    files = manifest(dest)
    path = os.path.join(dest, RENDER_KEY)
    write_atomic(path, json.dumps({"key": key, "files": {n: _digest(f) for n, f in files.items()}}), durable=False)


def _digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def ensure_ignored(repo_path, path, check_mode=False):
    """Keeps rendered output out of `git status`: when `path` lies in a git
    work tree and is not ignored yet, `/<path>/` is added to the repository's
    own exclude file (.git/info/exclude), leaving tracked files untouched.

    Returns the pattern added, or None.
    """
    def git(*args):
        return _git(repo_path, *args)

    # The common case, a plain clone whose exclude file already has the
    # pattern, needs no git process at all.
    plain_exclude = os.path.join(repo_path, ".git", "info", "exclude")
    if os.path.isfile(plain_exclude) and inside(repo_path, path):
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(repo_path)).replace(os.sep, "/")
        with open(plain_exclude, encoding="utf-8") as handle:
            if f"/{rel}/" in handle.read().splitlines():
                return None

    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return None
    top = os.path.realpath(top.stdout.strip())
    if not inside(top, path):
        return None
    rel = os.path.relpath(os.path.realpath(path), top).replace(os.sep, "/")
    if git("check-ignore", "-q", "--no-index", rel + "/").returncode == 0:
        return None
    pattern = "/" + rel + "/"
    if check_mode:
        return pattern
    exclude = git("rev-parse", "--git-path", "info/exclude")
    if exclude.returncode != 0:
        raise RenderError(f"cannot locate the exclude file of {top}: {exclude.stderr.strip()}")
    exclude = os.path.join(repo_path, exclude.stdout.strip())
    os.makedirs(os.path.dirname(exclude), exist_ok=True)
    current = ""
    if os.path.exists(exclude):
        with open(exclude, encoding="utf-8") as handle:
            current = handle.read()
    with open(exclude, "a", encoding="utf-8") as handle:
        handle.write(("" if not current or current.endswith("\n") else "\n") + pattern + "\n")
    return pattern


def render(repo_path, stack, profile, template, extra_vars=None, stacks_dir="stacks",
           profiles_dir="profiles", dest=None, check_mode=False, sources=(), require_git=False):
    """Renders stack `stack` for `profile`. Returns the sync() result plus `dest`.

    Template variables: the merged profile, then `extra_vars` on top, plus
    `stack_name` and `profile_name`. In a git work tree (required with
    `require_git`) the stack, the profiles and the files in `sources` must be
    committed as they are, checked before any template is evaluated.
    """
    dest, files = prepare(repo_path, stack, profile, template, extra_vars=extra_vars, stacks_dir=stacks_dir,
                          profiles_dir=profiles_dir, dest=dest, sources=sources, require_git=require_git)
    return write(repo_path, dest, files, check_mode=check_mode)


def prepare(repo_path, stack, profile, template, extra_vars=None, stacks_dir="stacks",
            profiles_dir="profiles", dest=None, sources=(), require_git=False, status=None):
    """The first half of render(), which writes nothing: (dest, the files
    rendered, as build() returns them). RenderError when a source is not
    committed or a template fails. `status`: as check_committed takes it."""
    stack_root, profiles, dest = resolve(repo_path, stack, profile, stacks_dir, profiles_dir, dest)
    check_untracked(repo_path, dest)
    check_committed(repo_path, [stack_root, profiles, *sources], required=require_git, status=status)
    variables = deep_merge(load_profile(profiles, profile), extra_vars or {})
    variables.update(stack_name=stack, profile_name=profile)
    return dest, build(stack_root, variables, template)


def write(repo_path, dest, files, check_mode=False):
    """The second half of render(): `files` synced into `dest`, which git ignores."""
    ignored = ensure_ignored(repo_path, dest, check_mode=check_mode)
    result = sync(dest, files, check_mode=check_mode)
    result["dest"] = dest
    result["ignore_added"] = ignored
    return result
