"""The collection builds into a tarball that installs into a fresh path, and the
installed copy documents every role and plugin."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Builds the tarball and installs it into an empty collections path."""
    tmp = tmp_path_factory.mktemp("packaging")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    run([BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp / "dist", str(ROOT)], tmp, env)
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    tarball = tmp / "dist" / f"guardrail-ecs-{version}.tar.gz"
    assert tarball.is_file()
    # --force: a copy installed elsewhere (~/.ansible/collections) must not
    # make galaxy skip the fresh path.
    run([BIN / "ansible-galaxy", "collection", "install", "--offline", "--force", "-p", tmp / "collections",
         str(tarball)], tmp, env)
    assert (tmp / "collections" / "ansible_collections" / "guardrail" / "ecs" / "MANIFEST.json").is_file()
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp / "collections")
    return tarball, tmp / "collections" / "ansible_collections" / "guardrail" / "ecs", env, tmp


def test_tarball_leaves_out_local_state(installed):
    tarball = installed[0]
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "galaxy.yml" not in names and "MANIFEST.json" in names
    leaked = [n for n in names if n.split("/")[0] in {".venv", ".cache", ".git", ".dist", "reports"}
              or "__pycache__" in n]
    assert not leaked, f"build output carries local state: {leaked[:5]}"


def test_installed_roles_are_listed(installed):
    path, env, cwd = installed[1:]
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
    assert roles, "no role with meta/argument_specs.yml"
    listing = run([BIN / "ansible-doc", "-t", "role", "-l", "guardrail.ecs"], cwd, env)
    missing = [r for r in roles if f"guardrail.ecs.{r}" not in listing]
    assert not missing, f"ansible-doc does not list roles {missing}:\n{listing}"
    assert (path / "roles").is_dir()


def plugin_names(internal=False):
    """The public modules and lookups; with `internal`, also the cis_hardening
    role's internal modules (guardrail.ecs.internal.*), which the docs site leaves out."""
    found = []
    folders = [("module", "modules", ""), ("lookup", "lookup", "")]
    if internal:
        folders.append(("module", "modules/internal", "internal."))
    for kind, folder, prefix in folders:
        for py in sorted((ROOT / "plugins" / folder).glob("*.py")):
            if py.name != "__init__.py":
                found.append((kind, prefix + py.stem))
    return found


@pytest.mark.parametrize("kind,name", plugin_names(internal=True))
def test_installed_plugin_renders_docs(installed, kind, name):
    env, cwd = installed[2:]
    out = run([BIN / "ansible-doc", "-t", kind, f"guardrail.ecs.{name}"], cwd, env)
    assert f"guardrail.ecs.{name}" in out
    assert "EXAMPLES" in out or "EXAMPLE" in out.upper()


def test_docs_site_has_a_page_per_plugin_and_role():
    """`make docs` (scripts/docs): antsibull-docs and Sphinx build one HTML
    page per module, lookup and role into the git-ignored docs/build/html."""
    proc = subprocess.run([str(ROOT / "scripts" / "docs")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}"), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = ROOT / "docs" / "build" / "html"
    expected = [f"{name}_{kind}.html" for kind, name in plugin_names()]
    expected += [f"{p.name}_role.html" for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()]
    missing = [page for page in expected if not (html / page).is_file()]
    assert not missing, f"no page for {missing}"
    internal = sorted(p.name for p in html.glob("internal.*"))
    assert not internal, f"pages for the cis_hardening role's internal modules: {internal}"
    assert "guardrail.ecs" in (html / "index.html").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(html / "index.html")], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "docs/build must be git-ignored"


def test_tarball_carries_the_changelog_and_no_development_files(installed):
    tarball = installed[0]
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"CHANGELOG.rst", "changelogs/changelog.yaml"} <= names
    dev = ("benchmarks/", "scripts/", "tests/", "molecule/", ".config/", ".ci/", "inventories/lab/",
           "changelogs/fragments/", "docs/")
    leaked = sorted(n for n in names if n.startswith(dev) or n in {
        "Makefile", "requirements-dev.txt", "requirements-docs.txt", "requirements-compat.txt", "ansible.cfg",
        ".ansible-lint", "ruff.toml", ".gitignore", "CONTRIBUTING.md"})
    assert not leaked, f"development files in the tarball: {leaked}"
    for kept in ("playbooks/tofu_change.yml", "inventories/aws_ec2.yml", "requirements.txt", "bindep.txt",
                 "execution-environment.yml", "meta/runtime.yml"):
        assert kept in names, f"{kept} missing from the tarball"
    shipped = [p for p in (ROOT / "bin").glob("*") if p.is_file()] if (ROOT / "bin").is_dir() else []
    for path in shipped:
        assert f"bin/{path.name}" in names, f"bin/{path.name} (the CLI) must ship in the tarball"


def test_release_writes_the_changelog_for_the_galaxy_version(tmp_path):
    """`make release` (scripts/release) in a copy of the checkout: the version
    of galaxy.yml gets its entry in changelogs/changelog.yaml and CHANGELOG.rst,
    the fragments are consumed, and a second release of it is refused."""
    import shutil

    copy = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    galaxy = copy / "galaxy.yml"
    version = yaml.safe_load(galaxy.read_text())["version"]
    released = yaml.safe_load((copy / "changelogs" / "changelog.yaml").read_text())["releases"]
    if version in released:
        # A checkout at a release commit: release the next version in the copy.
        major, minor, _patch = version.split(".")
        bumped = f"{major}.{int(minor) + 1}.0"
        galaxy.write_text(galaxy.read_text().replace(f"version: {version}\n", f"version: {bumped}\n", 1))
        version = bumped
        assert yaml.safe_load(galaxy.read_text())["version"] == version
    fragments = copy / "changelogs" / "fragments"
    if not list(fragments.glob("*.yml")):
        fragments.mkdir(parents=True, exist_ok=True)
        (fragments / "release-test.yml").write_text("minor_changes:\n  - release test - a change.\n")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    run([copy / "scripts" / "release", "2030-01-02"], copy, env)
    releases = yaml.safe_load((copy / "changelogs" / "changelog.yaml").read_text())["releases"]
    assert releases[version]["release_date"] == "2030-01-02"
    assert "0.1.0" in releases
    assert f"v{version}" in (copy / "CHANGELOG.rst").read_text()
    assert not list((copy / "changelogs" / "fragments").glob("*.yml")), "fragments left behind"
    again = subprocess.run([str(copy / "scripts" / "release")], cwd=copy, env=env, capture_output=True, text=True,
                           check=False)
    assert again.returncode != 0 and "already in changelogs/changelog.yaml" in again.stderr


@pytest.fixture
def nobody_dir():
    """A directory the user nobody owns and can reach (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="guardrail-bootstrap-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_bootstrap_as_another_user_prints_the_apt_command(nobody_dir):
    """scripts/bootstrap run by an unprivileged user on a machine without the
    system packages: it stops before touching anything and prints the exact
    command to run as root."""
    import shutil

    tmp_path = nobody_dir
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "bootstrap", checkout / "scripts" / "bootstrap")
    shutil.copy(ROOT / "requirements-dev.txt", checkout / "requirements-dev.txt")
    bin_dir = tmp_path / "bin"  # a machine with the basics only: no podman, git, debootstrap...
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "flock", "id", "cat", "sha256sum", "cut", "python3", "rm", "touch", "ln"):
        os.symlink("/usr/bin/python3" if tool == "python3" else shutil.which(tool), bin_dir / tool)
    shutil.chown(tmp_path, "nobody")
    shutil.chown(checkout, "nobody")
    shutil.chown(checkout / "scripts", "nobody")
    proc = subprocess.run([shutil.which("runuser"), "-u", "nobody", "--", str(bin_dir / "bash"), "scripts/bootstrap"],
                          cwd=checkout, env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing system commands: podman runc debootstrap iptables nft git busybox shellcheck gcc" in proc.stderr
    assert ("sudo sh -c 'apt-get update && apt-get install -y podman runc debootstrap iptables nftables git busybox "
            "uidmap shellcheck python3-venv gcc libc6-dev'") in proc.stderr, proc.stderr
    assert not (checkout / ".venv").exists(), "nothing is installed before the system packages are there"
