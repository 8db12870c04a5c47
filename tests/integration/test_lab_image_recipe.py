"""tests/lab/build-image.sh's own control flow: several images built in one
run, the build directory removed, debootstrap's default mirror unless one is
asked for. debootstrap, podman and id are small scripts on PATH that record
their arguments: building the real images takes minutes and is what `make
lab-image` (the first step of `make test`) does on every fresh machine."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "lab" / "build-image.sh"

FAKES = {
    # debootstrap --variant=minbase --include=... bookworm TARGET [MIRROR]
    "debootstrap": """#!/bin/sh
echo "$@" >> "$FAKE_LOG/debootstrap"
[ -z "$FAKE_DEBOOTSTRAP_FAIL" ] || { echo "E: no mirror answered" >&2; exit 1; }
for arg; do case $arg in /*) target=$arg ;; esac; done
mkdir -p "$target/etc/systemd/system" "$target/usr/local/sbin" \\
    "$target/var/cache/apt/archives" "$target/var/lib/apt/lists"
echo "$target" >> "$FAKE_LOG/targets"
""",
    # podman image exists -> never cached; import reads the tarball.
    "podman": """#!/bin/sh
echo "$@" >> "$FAKE_LOG/podman"
case "$1 $2" in
    "image exists") exit 1 ;;
    import*) cat > /dev/null ;;
esac
exit 0
""",
    "id": "#!/bin/sh\necho 0\n",
}


@pytest.fixture
def fake_path(tmp_path):
    bin_dir = tmp_path / "bin"
    log = tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in FAKES.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(log))
    env.pop("GUARDRAIL_LAB_MIRROR", None)
    return env, log


def run(env, *flavours):
    return subprocess.run(["bash", str(SCRIPT), *flavours], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_two_images_in_one_run_are_both_built_and_leave_no_build_directory(fake_path):
    env, log = fake_path
    result = run(env, "stock", "stock")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("built localhost/guardrail-lab:stock-") == 2, result.stdout
    targets = (log / "targets").read_text().split()
    assert len(targets) == 2
    for target in targets:
        assert not Path(target).parent.exists(), f"build directory {Path(target).parent} left behind"


def test_debootstrap_picks_its_own_mirror_unless_one_is_asked_for(fake_path):
    env, log = fake_path
    assert run(env, "stock").returncode == 0
    args = (log / "debootstrap").read_text().split()
    assert args[-2] == "bookworm" and args[-1].endswith("/root"), args
    assert not any("://" in arg for arg in args), args

    env["GUARDRAIL_LAB_MIRROR"] = "http://mirror.internal/debian"
    (log / "debootstrap").unlink()
    result = run(env, "stock")
    assert result.returncode == 0, result.stderr
    assert (log / "debootstrap").read_text().split()[-1] == "http://mirror.internal/debian"
    assert "from http://mirror.internal/debian" in result.stdout


def test_a_failed_debootstrap_fails_the_build_and_removes_its_directory(fake_path):
    env, log = fake_path
    env["FAKE_DEBOOTSTRAP_FAIL"] = "1"
    result = run(env, "stock", "full")
    assert result.returncode != 0
    assert "no mirror answered" in result.stderr
    assert "built " not in result.stdout
    # Only the first image was attempted, and its directory is gone.
    calls = (log / "debootstrap").read_text().splitlines()
    assert len(calls) == 1
    target = Path(calls[0].split()[-1])
    assert target.name == "root" and target.parent.name.startswith("guardrail-lab.")
    assert not target.parent.exists(), f"build directory {target.parent} left behind"
    assert "import" not in (log / "podman").read_text()
