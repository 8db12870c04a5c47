"""guardrail.ecs.efs_hydrate as Ansible runs it: separate processes racing for
one dest, runs killed mid-copy, hostile archives, S3 through a moto server
over HTTP, and ansible-playbook with check mode."""
import fcntl
import io
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_playbook, task_results
from efs_hydrate_helpers import (
    LOCK_FILE,
    MARKER,
    STAGING_PREFIX,
    leftovers,
    make_tree,
    module_result,
    run_module,
    start_module,
    tree_listing,
)


@pytest.fixture
def src(tmp_path):
    return make_tree(tmp_path / "src", files=300, size=8192)


def assert_hydrated_from(dest, src):
    assert tree_listing(dest) == tree_listing(src)
    assert (dest / MARKER).is_file()
    assert leftovers(dest) == []


def test_ten_concurrent_hydrations_seed_exactly_once(tmp_path, src):
    dest = tmp_path / "volume"
    dest.mkdir()
    (dest / "lost+found").mkdir()
    procs = [start_module({"src": str(src), "dest": str(dest)}) for attempt in range(10)]
    results = [module_result(p) for p in procs]

    assert all(r["rc"] == 0 for r in results), results
    seeders = [r for r in results if r["seeded"]]
    assert len(seeders) == 1, [r["msg"] for r in results]
    assert seeders[0]["changed"] and seeders[0]["files"] == 302
    others = [r for r in results if not r["seeded"]]
    assert all(not r["changed"] and "already hydrated" in r["msg"] for r in others)
    listing = tree_listing(dest, ignore=(MARKER, LOCK_FILE, "lost+found"))
    assert listing == tree_listing(src)
    assert [n for n in os.listdir(dest) if n.startswith(MARKER)] == [MARKER]
    assert leftovers(dest) == []
    marker = json.loads((dest / MARKER).read_text())
    assert marker["digest"] == seeders[0]["digest"] and marker["files"] == 302


def test_sigkill_at_random_points_then_the_next_run_completes(tmp_path):
    src = make_tree(tmp_path / "src", files=1500, size=16384)
    expected = tree_listing(src)
    # How long an undisturbed run takes, so the kills land all through it.
    probe = tmp_path / "probe"
    started = time.monotonic()
    assert run_module({"src": str(src), "dest": str(probe)})["seeded"]
    full = time.monotonic() - started
    rng = random.Random(6)
    outcomes = []
    for trial in range(8):
        dest = tmp_path / f"volume{trial}"
        proc = start_module({"src": str(src), "dest": str(dest)})
        time.sleep(rng.uniform(0.05, full))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        os.unlink(proc.args_file)
        marker_after_kill = (dest / MARKER).exists()
        if marker_after_kill:
            # The marker is written last: if it exists, the content is complete
            # (an emptied staging tree may remain; the next run removes it).
            assert {k: v for k, v in tree_listing(dest).items()
                    if not k.startswith(STAGING_PREFIX)} == expected
        outcomes.append(marker_after_kill)
        result = run_module({"src": str(src), "dest": str(dest)})
        assert result["rc"] == 0, result
        assert tree_listing(dest) == expected
        assert [n for n in os.listdir(dest) if n.startswith(MARKER)] == [MARKER]
        assert leftovers(dest) == []
    assert not all(outcomes), "every kill landed after the marker: the test did not interrupt a copy"


def test_a_staging_tree_left_after_the_marker_is_removed_by_the_next_run(tmp_path):
    """Killed between writing the marker and removing its emptied staging tree:
    the volume is hydrated, and the next run still tidies up under the lock."""
    src = make_tree(tmp_path / "src", files=3, size=64)
    dest = tmp_path / "volume"
    assert run_module({"src": str(src), "dest": str(dest)})["seeded"]
    os.mkdir(dest / (STAGING_PREFIX + "0" * 32), 0o700)
    result = run_module({"src": str(src), "dest": str(dest)})
    assert result["rc"] == 0 and result["changed"] and not result["seeded"], result
    assert leftovers(dest) == []
    assert tree_listing(dest) == tree_listing(src)
    assert not run_module({"src": str(src), "dest": str(dest)})["changed"]


def _tar(path, members, gz=False):
    """Writes an archive from (TarInfo kwargs, data) pairs."""
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for kwargs, data in members:
            info = tarfile.TarInfo(kwargs.pop("name"))
            for key, value in kwargs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


GOOD = ({"name": "app/index.html"}, b"<html></html>\n")
HOSTILE = {
    "absolute": [GOOD, ({"name": "/tmp/evil"}, b"x")],
    "dotdot": [GOOD, ({"name": "app/../../evil"}, b"x")],
    "symlink-escape": [GOOD, ({"name": "app/out", "type": tarfile.SYMTYPE, "linkname": "../../etc"}, None)],
    "symlink-absolute": [GOOD, ({"name": "app/etc", "type": tarfile.SYMTYPE, "linkname": "/etc"}, None)],
    "write-through-symlink": [({"name": "app", "type": tarfile.SYMTYPE, "linkname": "."}, None),
                              ({"name": "app/x", }, b"x")],
    "hardlink-escape": [GOOD, ({"name": "app/passwd", "type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}, None)],
    "device": [GOOD, ({"name": "app/null", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, None)],
    "fifo": [GOOD, ({"name": "app/pipe", "type": tarfile.FIFOTYPE}, None)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_with_nothing_written(tmp_path, case):
    archive = _tar(tmp_path / f"{case}.tar.gz", [(dict(k), d) for k, d in HOSTILE[case]], gz=True)
    volume = tmp_path / "volume"
    volume.mkdir()
    before = sorted(volume.rglob("*"))
    result = run_module({"src": str(archive), "dest": str(volume / "app")})
    assert result["rc"] != 0 and result["failed"]
    assert "refusing the archive" in result["msg"]
    assert sorted(volume.rglob("*")) == before
    assert not (tmp_path / "evil").exists()


def test_escaping_symlink_in_source_is_refused_with_nothing_written(tmp_path, src):
    (src / "d0" / "secrets").symlink_to("../../../outside")
    dest = tmp_path / "volume"
    result = run_module({"src": str(src), "dest": str(dest)})
    assert result["rc"] != 0
    assert "symlink d0/secrets -> ../../../outside resolves outside the tree" in result["msg"]
    assert not dest.exists()


@pytest.mark.parametrize("dest", ["/", "/etc", "/usr/lib/app", "/var", "relative/dir", "/tmp/x/../y"])
def test_dangerous_dest_is_refused(src, dest):
    result = run_module({"src": str(src), "dest": dest})
    assert result["rc"] != 0
    assert "system directory" in result["msg"] or "absolute" in result["msg"] or ".." in result["msg"]


def test_archive_source_lands_with_owner_and_modes(tmp_path, src):
    archive = tmp_path / "seed.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=".")
    dest = tmp_path / "volume"
    result = run_module({"src": str(archive), "dest": str(dest), "owner": "nobody", "group": "nogroup",
                         "dir_mode": "0750", "file_mode": "0640"})
    assert result["rc"] == 0 and result["seeded"] and result["digest"].startswith("sha256:")
    nobody = os.stat(dest).st_uid
    assert nobody != 0
    for path in [dest, *dest.rglob("*")]:
        if path.name in (MARKER, LOCK_FILE) or path.is_symlink():
            continue
        st = os.stat(path)
        assert st.st_uid == nobody
        assert st.st_mode & 0o7777 == (0o750 if path.is_dir() else 0o640), path
    assert (dest / "bin" / "start.sh").read_text() == "#!/bin/sh\necho start\n"
    assert os.readlink(dest / "bin" / "readme") == "../README.txt"


def test_on_existing_fail_lists_files_and_changes_nothing(tmp_path, src):
    dest = tmp_path / "volume"
    dest.mkdir()
    (dest / "lost+found").mkdir()
    (dest / "user-notes.txt").write_text("mine\n")
    result = run_module({"src": str(src), "dest": str(dest)})
    assert result["rc"] != 0
    assert "user-notes.txt" in result["msg"] and "on_existing" in result["msg"]
    assert sorted(os.listdir(dest)) == [LOCK_FILE, "lost+found", "user-notes.txt"]


def test_lost_and_found_alone_does_not_block_seeding(tmp_path, src):
    dest = tmp_path / "volume"
    dest.mkdir()
    (dest / "lost+found").mkdir()
    result = run_module({"src": str(src), "dest": str(dest)})
    assert result["rc"] == 0 and result["seeded"]
    assert tree_listing(dest, ignore=(MARKER, LOCK_FILE, "lost+found")) == tree_listing(src)


def test_on_existing_merge_keeps_user_files_and_adds_the_source(tmp_path, src):
    dest = tmp_path / "volume"
    (dest / "d0").mkdir(parents=True)
    (dest / "README.txt").write_text("the user's readme\n")
    (dest / "d0" / "mine.txt").write_text("mine\n")
    result = run_module({"src": str(src), "dest": str(dest), "on_existing": "merge"})
    assert result["rc"] == 0 and result["seeded"] and result["kept"] == ["README.txt"]
    assert (dest / "README.txt").read_text() == "the user's readme\n"
    assert (dest / "d0" / "mine.txt").read_text() == "mine\n"
    assert (dest / "d0" / "s0" / "f00000.dat").read_bytes() == (src / "d0" / "s0" / "f00000.dat").read_bytes()
    assert (dest / MARKER).is_file()
    again = run_module({"src": str(src), "dest": str(dest), "on_existing": "merge"})
    assert not again["changed"]


def test_on_existing_skip_leaves_dest_alone(tmp_path, src):
    dest = tmp_path / "volume"
    dest.mkdir()
    (dest / "data.db").write_text("db\n")
    result = run_module({"src": str(src), "dest": str(dest), "on_existing": "skip"})
    assert result["rc"] == 0 and not result["changed"] and not result["seeded"]
    assert sorted(os.listdir(dest)) == [LOCK_FILE, "data.db"]


def test_force_recopies_changed_and_missing_files_and_keeps_user_files(tmp_path, src):
    dest = tmp_path / "volume"
    assert run_module({"src": str(src), "dest": str(dest)})["seeded"]
    (dest / "README.txt").write_text("edited on the volume\n")
    (dest / "d1" / "s1" / "f00001.dat").unlink()
    (dest / "user.txt").write_text("mine\n")
    plain = run_module({"src": str(src), "dest": str(dest)})
    assert not plain["changed"], "without force a hydrated volume is left alone"
    forced = run_module({"src": str(src), "dest": str(dest), "force": True})
    assert forced["changed"] and not forced["seeded"] and forced["files"] == 2
    assert tree_listing(dest, ignore=(MARKER, LOCK_FILE, "user.txt")) == tree_listing(src)
    assert (dest / "user.txt").read_text() == "mine\n"
    again = run_module({"src": str(src), "dest": str(dest), "force": True})
    assert not again["changed"]


def test_prune_removes_only_what_the_source_lacks(tmp_path, src):
    dest = tmp_path / "volume"
    assert run_module({"src": str(src), "dest": str(dest)})["seeded"]
    (dest / "user.txt").write_text("mine\n")
    (dest / "d2" / "extra").mkdir()
    (dest / "d2" / "extra" / "x").write_text("x\n")
    (dest / "lost+found").mkdir()
    check = run_module({"src": str(src), "dest": str(dest), "force": True, "prune": True,
                        "_ansible_check_mode": True})
    assert check["changed"] and sorted(check["pruned"]) == ["d2/extra", "user.txt"]
    assert (dest / "user.txt").exists()
    result = run_module({"src": str(src), "dest": str(dest), "force": True, "prune": True})
    assert result["changed"] and sorted(result["pruned"]) == ["d2/extra", "user.txt"]
    assert not (dest / "user.txt").exists() and not (dest / "d2" / "extra").exists()
    assert (dest / "lost+found").is_dir() and (dest / MARKER).is_file()
    assert tree_listing(dest, ignore=(MARKER, LOCK_FILE, "lost+found")) == tree_listing(src)


def test_s3_archive_source_through_moto(tmp_path, src, moto):
    import boto3

    archive = tmp_path / "seed.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=".")
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    s3.create_bucket(Bucket="seeds")
    s3.upload_file(str(archive), "seeds", "app/seed.tar.gz")
    dest = tmp_path / "volume"
    args = {"src": "s3://seeds/app/seed.tar.gz", "dest": str(dest), "endpoint_url": moto,
            "region": "us-east-1"}
    result = run_module(args)
    assert result["rc"] == 0 and result["seeded"], result
    assert tree_listing(dest) == tree_listing(src)
    missing = run_module(dict(args, src="s3://seeds/app/none.tar.gz", dest=str(tmp_path / "other")))
    assert missing["rc"] != 0 and "s3:GetObject" in missing["msg"]
    assert not (tmp_path / "other").exists()


def only_result(out):
    results = task_results(out)
    assert len(results) == 1, results
    return results[0][1]


PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Hydrate the volume
      guardrail.ecs.efs_hydrate:
        src: "{{ src }}"
        dest: "{{ dest }}"
        dir_mode: "0750"
        file_mode: "0640"
"""


def test_through_ansible_playbook_with_check_mode(tmp_path, src):
    dest = tmp_path / "volume"
    extra = {"src": str(src), "dest": str(dest)}

    rc, out, err = run_playbook(PLAYBOOK, extra_vars=extra, check=True, diff=True)
    assert rc == 0, err
    check = only_result(out)
    assert check["changed"] and check["seeded"] and check["files"] == 302
    assert "README.txt" in check["would_copy"]
    diff = check["diff"][0] if isinstance(check["diff"], list) else check["diff"]
    assert "README.txt" in diff["after"]
    assert not dest.exists()

    rc, out, err = run_playbook(PLAYBOOK, extra_vars=extra)
    assert rc == 0, err
    first = only_result(out)
    assert first["changed"] and first["seeded"] and first["files"] == 302
    assert (dest / "README.txt").stat().st_mode & 0o777 == 0o640

    rc, out, err = run_playbook(PLAYBOOK, extra_vars=extra)
    assert rc == 0, err
    second = only_result(out)
    assert not second["changed"] and not second["seeded"]
    assert second["marker"]["digest"] == first["digest"]


def test_without_root_owner_and_modes_apply_and_the_copy_completes():
    """As an unprivileged user (the system python3: the venv's lives under /root)."""
    work = Path(tempfile.mkdtemp(prefix="efs-hydrate-nonroot-"))
    try:
        work.chmod(0o777)
        src = make_tree(work / "src", files=30)
        # The checkout may sit in a directory only root can enter (a clone in a
        # mktemp directory): give the unprivileged user its own copy of the plugins.
        plugins = work / "collections" / "ansible_collections" / "guardrail" / "ecs" / "plugins"
        shutil.copytree(ROOT / "plugins", plugins, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["chmod", "-R", "a+rX", str(work / "src"), str(work / "collections")],
                       check=True, timeout=30)
        code = ("import json, sys\n"
                "from ansible_collections.guardrail.ecs.plugins.module_utils.efs.hydrate import hydrate\n"
                "print(json.dumps(hydrate(sys.argv[1], sys.argv[2], dir_mode='0750', file_mode='0440')))\n")
        proc = subprocess.run(
            ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={work / 'collections'}",
             "/usr/bin/python3", "-c", code, str(src), str(work / "dest")],
            capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["seeded"]
        dest = work / "dest"
        assert dest.stat().st_mode & 0o7777 == 0o750
        assert (dest / "d0").stat().st_mode & 0o7777 == 0o750
        assert (dest / "README.txt").stat().st_mode & 0o7777 == 0o440
        assert (dest / "README.txt").stat().st_uid == int(
            subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True,
                           timeout=10).stdout)
        assert tree_listing(dest, ignore=(MARKER, LOCK_FILE)).keys() == tree_listing(src).keys()
    finally:
        shutil.rmtree(work)


ROLE_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: true
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  roles:
    - role: guardrail.ecs.efs_volume
      vars:
        efs_volume_install_packages: false
        efs_volume_mount_state: present
        efs_volume_mount_type: efs
        efs_volume_fstab: "{{ fstab }}"
        efs_volume_mounts:
          - file_system_id: fs-0123456789abcdef0
            access_point: fsap-0123456789abcdef0
            mount_point: "{{ dest }}"
            options: [noatime]
            src: "{{ src }}"
            file_mode: "0640"
"""


def test_role_writes_the_efs_fstab_entry_and_hydrates(tmp_path, src):
    """The role on this machine, with its fstab redirected to a file: the efs
    type with TLS and the access point, then hydration; idempotent."""
    fstab = tmp_path / "fstab"
    fstab.write_text("# test fstab\n")
    dest = tmp_path / "volume"
    extra = {"fstab": str(fstab), "dest": str(dest), "src": str(src)}

    rc, out, err = run_playbook(ROLE_PLAYBOOK, extra_vars=extra, check=True)
    assert rc == 0, (err, out)
    assert fstab.read_text() == "# test fstab\n" and not dest.exists()

    rc, out, err = run_playbook(ROLE_PLAYBOOK, extra_vars=extra)
    assert rc == 0, (err, out)
    assert fstab.read_text().splitlines()[1].split() == [
        "fs-0123456789abcdef0:/", str(dest), "efs",
        "_netdev,tls,accesspoint=fsap-0123456789abcdef0,noatime", "0", "0"]
    assert (dest / MARKER).is_file()
    assert (dest / "README.txt").stat().st_mode & 0o777 == 0o640

    rc, out, err = run_playbook(ROLE_PLAYBOOK, extra_vars=extra)
    assert rc == 0, (err, out)
    assert out["stats"]["localhost"]["changed"] == 0


def test_a_run_waiting_on_the_seeders_tidy_up_reports_no_change(tmp_path, src):
    """The race the ten-way test hits now and then: a run reads the marker while
    the seeder, holding the lock, still removes its staging tree. Having waited
    for the lock, it finds nothing left and must not claim it removed anything."""
    dest = tmp_path / "volume"
    assert run_module({"src": str(src), "dest": str(dest)})["seeded"]
    staging = dest / f"{STAGING_PREFIX}seeder"
    staging.mkdir(mode=0o700)
    (staging / "half-moved.dat").write_text("x")
    lock_fd = os.open(dest / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        proc = start_module({"src": str(src), "dest": str(dest)})
        time.sleep(1.0)
        assert proc.poll() is None, "the run must wait for the seeder's lock"
        shutil.rmtree(staging)
    finally:
        os.close(lock_fd)
    result = module_result(proc)
    assert result["rc"] == 0 and not result["changed"] and not result["seeded"], result
    assert "already hydrated" in result["msg"], result["msg"]
    assert_hydrated_from(dest, src)
