"""execution-environment.yml: `ansible-builder create` produces a complete build
context. Building the image needs a container registry for the base image,
which this machine cannot reach, so the image itself is not built here."""
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from conftest import ROOT, VENV_BIN, ansible_env

EE_FILES = ("execution-environment.yml", "requirements.txt", "bindep.txt", "requirements.yml")


def run(cmd, cwd, env=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or ansible_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """The EE definition next to a freshly built collection tarball, and the
    build context ansible-builder creates from it."""
    work = tmp_path_factory.mktemp("ee")
    for name in EE_FILES:
        shutil.copy(ROOT / name, work / name)
    run([VENV_BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", work / ".cache" / "build"],
        cwd=ROOT)
    run([VENV_BIN / "ansible-builder", "create", "--file", work / "execution-environment.yml",
         "--context", work / "context"], cwd=work)
    return work / "context"


def test_definition_uses_the_v3_schema_and_the_repository_files():
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    deps = ee["dependencies"]
    assert (deps["galaxy"], deps["python"], deps["system"]) == ("requirements.yml", "requirements.txt", "bindep.txt")
    assert "ansible-core" in deps["ansible_core"]["package_pip"]
    assert "ansible-runner" in deps["ansible_runner"]["package_pip"]


def test_context_holds_every_requirement(ctx):
    build = ctx / "_build"
    for name in ("requirements.txt", "bindep.txt", "requirements.yml"):
        assert (build / name).read_text() == (ROOT / name).read_text(), f"{name} not copied as is"
    python = (build / "requirements.txt").read_text()
    assert "boto3>=" in python and "botocore>=" in python
    bindep = (build / "bindep.txt").read_text()
    assert "git [platform:rpm platform:dpkg]" in bindep
    galaxy = {c["name"] for c in yaml.safe_load((build / "requirements.yml").read_text())["collections"]}
    assert galaxy == {"ansible.posix", "community.general", "amazon.aws"}
    for script in ("assemble", "install-from-bindep", "introspect.py", "entrypoint"):
        assert (build / "scripts" / script).is_file(), f"builder script {script} missing"


def test_containerfile_installs_runner_core_collection_and_tofu(ctx):
    containerfile = (ctx / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    deps = yaml.safe_load((ROOT / "execution-environment.yml").read_text())["dependencies"]
    core, runner = deps["ansible_core"]["package_pip"], deps["ansible_runner"]["package_pip"]
    assert f"{core} {runner}" in containerfile
    assert f'ARG PYCMD="{deps["python_interpreter"]["python_path"]}"' in containerfile
    assert "-r requirements.yml --collections-path \"/usr/share/ansible/collections\"" in containerfile
    assert "collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS --collections-path /usr/share/ansible/collections " \
           "collections/guardrail-ecs-*.tar.gz" in containerfile
    assert "sha256sum -c -" in containerfile and "/usr/local/bin/tofu version" in containerfile
    final = containerfile.split("FROM base AS final", 1)[1]
    assert final.index("tofu version") < final.rindex("USER 1000"), "tofu must install before the user drops root"


def test_collection_tarball_is_in_the_context_with_playbooks_and_requirements(ctx):
    tarballs = list((ctx / "_build" / "collections").glob("guardrail-ecs-*.tar.gz"))
    assert len(tarballs) == 1, "the built collection must be copied into the context"
    with tarfile.open(tarballs[0]) as tar:
        names = set(tar.getnames())
    for member in ("requirements.txt", "bindep.txt", "playbooks/ecs_image_guard.yml",
                   "plugins/modules/ecs_image_guard.py", "meta/runtime.yml", "inventories/aws_ec2.yml"):
        assert member in names, f"{member} missing from the collection tarball"


def test_introspection_merges_the_collection_requirements(ctx, tmp_path):
    """What ansible-builder's assemble step will install: the collection's own
    requirements.txt and bindep.txt, found by introspecting the installed tarball."""
    tarball = next((ctx / "_build" / "collections").glob("guardrail-ecs-*.tar.gz"))
    env = ansible_env()
    env.pop("ANSIBLE_COLLECTIONS_PATH")
    env.pop("ANSIBLE_CONFIG")
    run([VENV_BIN / "ansible-galaxy", "collection", "install", "--force", "--no-deps", "-p", tmp_path, tarball],
        cwd=tmp_path, env=env)
    out = yaml.safe_load(run([VENV_BIN / "python", ctx / "_build" / "scripts" / "introspect.py", "introspect",
                              tmp_path], cwd=tmp_path))
    assert "boto3>=1.34.0  # from collection guardrail.ecs" in out["python"]
    assert "git [platform:rpm platform:dpkg]  # from collection guardrail.ecs" in out["system"]


def test_collection_ranges_admit_the_tested_versions():
    """requirements.yml and galaxy.yml agree, and admit the collections the
    test suite runs with (from the pinned `ansible` package)."""
    import ansible_collections

    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
    wanted = {c["name"]: c["version"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    for name, spec in galaxy.items():
        assert wanted.get(name) == spec, f"{name}: requirements.yml {wanted.get(name)} != galaxy.yml {spec}"
    installed_root = next(Path(p) for p in ansible_collections.__path__ if (Path(p) / "amazon" / "aws").is_dir())
    for name, spec in wanted.items():
        namespace, collection = name.split(".")
        manifest = yaml.safe_load((installed_root / namespace / collection / "MANIFEST.json").read_text())
        version = manifest["collection_info"]["version"]
        assert Version(version) in SpecifierSet(spec), f"{name} {version} is outside {spec}"


def ee_workdir(tmp_path):
    """A copy of what `make ee-context` reads, without any built tarball."""
    work = tmp_path / "checkout"
    (work / "scripts").mkdir(parents=True)
    for name in EE_FILES + ("galaxy.yml",):
        shutil.copy(ROOT / name, work / name)
    shutil.copy(ROOT / "scripts" / "ee-context", work / "scripts" / "ee-context")
    return work


def test_ee_context_without_the_tarball_is_an_error(tmp_path):
    work = ee_workdir(tmp_path)
    proc = subprocess.run([str(work / "scripts" / "ee-context")], cwd=work, env=ansible_env(), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "missing; run make build first" in proc.stderr
    assert not (work / "context").exists()


def test_ee_context_writes_the_context_with_the_tarball(tmp_path):
    work = ee_workdir(tmp_path)
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    run([VENV_BIN / "ansible-galaxy", "collection", "build", "--output-path", work / ".cache" / "build", ROOT],
        cwd=ROOT)
    run([work / "scripts" / "ee-context"], cwd=work)
    copied = [p.name for p in (work / "context" / "_build" / "collections").iterdir()]
    assert copied == [f"guardrail-ecs-{version}.tar.gz"]


def test_ee_takes_this_version_and_the_tested_ansible_core():
    """The tarball named in the EE is galaxy.yml's version, and the EE's
    ansible-core range admits every version the suite runs on (the dev
    virtualenv and scripts/compat) and nothing newer than the newest tested."""
    import re

    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    assert [f["src"] for f in ee["additional_build_files"]] == [f".cache/build/guardrail-ecs-{version}.tar.gz"]
    spec = SpecifierSet(ee["dependencies"]["ansible_core"]["package_pip"].split("ansible-core", 1)[1])
    compat = re.search(r"GUARDRAIL_COMPAT_CORE:-([0-9. ]+)\}", (ROOT / "scripts" / "compat").read_text()).group(1)
    tested = [Version(v) for v in compat.split()]
    dev = re.search(r"^ansible-core==(\S+)$", (ROOT / "requirements-dev.txt").read_text(), re.M).group(1)
    tested.append(Version(dev))
    for v in tested:
        assert v in spec, f"ansible-core {v} is tested but outside the EE's {spec}"
    newest = max(tested)
    assert Version(f"{newest.major}.{newest.minor + 1}.0") not in spec, f"{spec} admits an untested ansible-core"
    assert Version("2.17.0") in spec and Version("2.16.99") not in spec
