"""module_utils.efs_hydrate: validation, planning and crash recovery, on real
directories in a temporary path."""
import io
import json
import os
import tarfile

import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.efs import hydrate as h


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    (root / "a" / "one.txt").write_text("one\n")
    (root / "a" / "b" / "two.txt").write_text("two\n")
    (root / "a" / "link").symlink_to("b/two.txt")
    return root


def listing(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel in (h.MARKER, h.LOCK_FILE):
                continue
            if os.path.islink(path):
                out[rel] = "->" + os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


@pytest.mark.parametrize("dest", ["/", "/etc", "/etc/app", "/usr", "/usr/share/x", "/var", "/home",
                                  "/root", "/boot/efi", "/proc/1", "/sys/fs", "/dev/shm", "/lib64"])
def test_system_directories_are_refused(dest):
    with pytest.raises(h.HydrateError, match="system directory"):
        h.check_dest(dest)


@pytest.mark.parametrize("dest,match", [("relative", "absolute"), ("", "absolute"),
                                        ("/mnt/efs/../etc", r"'\.\.'")])
def test_relative_and_dotdot_dest_are_refused(dest, match):
    with pytest.raises(h.HydrateError, match=match):
        h.check_dest(dest)


def test_dest_through_a_symlink_to_a_system_directory_is_refused(tmp_path):
    (tmp_path / "sneaky").symlink_to("/etc")
    with pytest.raises(h.HydrateError, match="system directory '/etc'"):
        h.check_dest(str(tmp_path / "sneaky"))


def test_volume_paths_are_accepted():
    assert h.check_dest("/mnt/efs/uploads/") == "/mnt/efs/uploads"
    assert h.check_dest("/var/lib/app-data") == "/var/lib/app-data"


@pytest.mark.parametrize("src,match", [("relative/dir", "absolute"), ("/srv/../etc", r"'\.\.'"),
                                       ("s3://bucket", "s3://bucket/key"), ("s3://bucket/dir/", "s3://bucket/key"),
                                       ("/does/not/exist", "does not exist")])
def test_bad_sources_are_refused(src, match, tmp_path):
    with pytest.raises(h.HydrateError, match=match):
        h.check_src(src, str(tmp_path / "dest"))


def test_src_and_dest_must_not_contain_each_other(src):
    with pytest.raises(h.HydrateError, match="contain each other"):
        h.check_src(str(src), str(src / "a"))


@pytest.mark.parametrize("value,expected", [("0755", 0o755), ("640", 0o640), (0o750, 0o750), (None, None)])
def test_modes(value, expected):
    assert h.parse_mode(value, "dir_mode") == expected


@pytest.mark.parametrize("value", ["rwx", "0999", "77777"])
def test_bad_modes(value):
    with pytest.raises(h.HydrateError, match="dir_mode"):
        h.parse_mode(value, "dir_mode")


def test_unknown_owner_is_refused():
    with pytest.raises(h.HydrateError, match="owner 'no-such-user-here' does not exist"):
        h.resolve_owner("no-such-user-here", None)


def test_scan_dir_refuses_escaping_and_absolute_symlinks_and_fifos(src):
    (src / "a" / "up").symlink_to("../../outside")
    (src / "abs").symlink_to("/etc/passwd")
    os.mkfifo(src / "pipe")
    with pytest.raises(h.HydrateError) as err:
        h.scan_dir(str(src))
    message = str(err.value)
    assert "a/up -> ../../outside resolves outside the tree" in message
    assert "abs -> /etc/passwd resolves outside the tree" in message
    assert "pipe is a device file, FIFO or socket" in message


def test_scan_dir_lists_parents_before_children(src):
    paths = [e.path for e in h.scan_dir(str(src))]
    assert paths.index("a") < paths.index("a/b") < paths.index("a/b/two.txt")


def _archive(path, members):
    with tarfile.open(path, "w") as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            data = extra.pop("data", b"")
            for key, value in extra.items():
                setattr(info, key, value)
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return str(path)


def test_archive_without_directory_members_gets_its_parents(tmp_path):
    path = _archive(tmp_path / "a.tar", [("x/y/z.txt", tarfile.REGTYPE, {"data": b"z"}),
                                         ("x/hard", tarfile.LNKTYPE, {"linkname": "x/y/z.txt"})])
    entries = h.scan_archive(path)
    assert [(e.path, e.kind) for e in entries] == [
        ("x", "dir"), ("x/hard", "hardlink"), ("x/y", "dir"), ("x/y/z.txt", "file")]


@pytest.mark.parametrize("members,match", [
    ([("../x", tarfile.REGTYPE, {})], r"contains '\.\.'"),
    ([("/x", tarfile.REGTYPE, {})], "absolute path"),
    ([("l", tarfile.SYMTYPE, {"linkname": "../.."})], "resolves outside the tree"),
    ([("d/up", tarfile.SYMTYPE, {"linkname": ".."}), ("d/l", tarfile.SYMTYPE, {"linkname": "up/../x"})],
     "d/l -> up/../x resolves outside the tree"),
    ([("h", tarfile.LNKTYPE, {"linkname": "missing"})], "does not name an earlier file"),
    ([("dev", tarfile.BLKTYPE, {})], "device file"),
    ([("d", tarfile.SYMTYPE, {"linkname": "e"}), ("d/f", tarfile.REGTYPE, {})], "below the non-directory"),
])
def test_hostile_archives(tmp_path, members, match):
    with pytest.raises(h.HydrateError, match=match):
        h.scan_archive(_archive(tmp_path / "bad.tar", members))


def test_corrupt_archive_is_refused(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08 this is not gzip")
    with pytest.raises(h.HydrateError, match="cannot read archive"):
        h.scan_archive(str(bad))


def test_hydrate_then_marker_decides(tmp_path, src):
    dest = tmp_path / "dest"
    first = h.hydrate(str(src), str(dest))
    assert first["seeded"] and first["files"] == 3 and first["changed"]
    assert listing(dest) == listing(src)
    marker = json.loads((dest / h.MARKER).read_text())
    assert marker["digest"] == first["digest"] and marker["files"] == 3
    assert set(marker) >= {"source", "digest", "time", "who", "files", "bytes"}
    # Emptying dest does not make it "unhydrated": the marker alone decides.
    (dest / "top.txt").unlink()
    again = h.hydrate(str(src), str(dest))
    assert not again["changed"] and not again["seeded"]


def test_check_mode_writes_nothing(tmp_path, src):
    dest = tmp_path / "dest"
    result = h.hydrate(str(src), str(dest), check_mode=True)
    assert result["changed"] and result["seeded"] and result["files"] == 3
    assert sorted(result["would_copy"]) == ["a/b/two.txt", "a/link", "a/one.txt", "top.txt"]
    assert not dest.exists()


def test_clash_between_file_and_directory_changes_nothing(tmp_path, src):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").write_text("a file where the source has a directory\n")
    with pytest.raises(h.HydrateError, match="a is a directory in the source but not in dest"):
        h.hydrate(str(src), str(dest), on_existing="merge")
    assert sorted(os.listdir(dest)) == [h.LOCK_FILE, "a"]


def test_unfinished_staging_is_removed(tmp_path, src):
    dest = tmp_path / "dest"
    dest.mkdir()
    stale = dest / (h.STAGING_PREFIX + "dead")
    (stale / "a").mkdir(parents=True)
    (stale / "a" / "half.txt").write_text("half")
    (dest / (h.MARKER_TMP_PREFIX + "x")).write_text("{}")
    result = h.hydrate(str(src), str(dest))
    assert result["seeded"] and not result["recovered"]
    assert listing(dest) == listing(src)


def test_synced_staging_is_finished_by_the_next_run(tmp_path, src):
    """A run that died after the ready file, with part of the tree already
    renamed into dest: the next run completes it and writes the marker."""
    dest = tmp_path / "dest"
    dest.mkdir()
    source = h.load_source(str(src), str(dest))
    staging = dest / (h.STAGING_PREFIX + "crashed")
    staging.mkdir(mode=0o700)
    policy = h.Policy()
    staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        h.copy_into(source, staging_fd, source.entries, policy)
    finally:
        os.close(staging_fd)
    plan = h.make_plan(source, None, policy, False, False)
    marker = h._marker_record(source, plan, None)
    (staging / h.READY_FILE).write_bytes(h.format_ready(False, [], marker))
    os.rename(staging / "top.txt", dest / "top.txt")
    assert not (dest / h.MARKER).exists()

    result = h.hydrate(str(src), str(dest))
    assert result["recovered"] and result["seeded"] and result["changed"]
    assert listing(dest) == listing(src)
    assert json.loads((dest / h.MARKER).read_text())["digest"] == source.digest
    assert not [n for n in os.listdir(dest) if n.startswith(h.STAGING_PREFIX)]


def test_lock_timeout_names_the_holder(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with h.DestLock(fd, str(dest), timeout=5):
            with pytest.raises(h.HydrateError, match=r"timed out after 0\.2s .* held by .*pid"):
                with h.DestLock(fd, str(dest), timeout=0.2):
                    pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("line", [
    "prune=/etc/passwd", "prune=../x", "prune=a/../../x", "prune=a//b", "prune=.guardrail-hydrated",
    "prune=%2E%2E/x", "overwrite=yes", "marker=[1]", "marker={\"a\": {\"b\": 1}}", "unknown=1",
    "overwrite=true",
])
def test_ready_records_outside_the_schema_are_refused(line):
    good = b'format=guardrail-hydrate-ready 1\noverwrite=false\nmarker={"who": "x"}\n'
    assert h.parse_ready(good) == {"overwrite": False, "prune": [], "marker": {"who": "x"}}
    with pytest.raises(ValueError):
        h.parse_ready(good + line.encode() + b"\n")


def test_ready_record_round_trips_odd_names():
    names = ["a b/c=d", "new\nline", "per%cent", "\udcff-bytes"]
    record = h.parse_ready(h.format_ready(True, names, {"who": "x"}))
    assert record["prune"] == names and record["overwrite"] is True


def test_resolution_of_chained_links():
    links = {"x/y/z/up": "../../..", "x/y/z/L": "up/../../etc/secret", "a": "b", "b": "a"}
    assert h.resolve_in_tree("x/y/z/up", links) == ""
    assert h.resolve_in_tree("x/y/z/L", links) is None
    assert h.resolve_in_tree("a", links) is None


def test_read_only_directory_modes_without_root_are_refused(tmp_path, src, monkeypatch):
    monkeypatch.setattr(h.os, "geteuid", lambda: 1000)
    dest = tmp_path / "dest"
    with pytest.raises(h.HydrateError, match="dir_mode 0555 must let the owner write"):
        h.hydrate(str(src), str(dest), dir_mode="0555")
    with pytest.raises(h.HydrateError, match="owner 0 needs root: this run is uid 1000"):
        h.hydrate(str(src), str(dest), owner="0")
    (src / "a").chmod(0o555)
    try:
        with pytest.raises(h.HydrateError, match="need root or a dir_mode with owner write: a"):
            h.hydrate(str(src), str(dest))
    finally:
        (src / "a").chmod(0o755)
    assert not dest.exists()
