"""Promises the efs_volume role keeps on a lab host (no NFS in this kernel:
fstab entries instead of live mounts; hydration for real)."""
import json

NFS_OPTIONS = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport,_netdev"


def fstab_entries(host):
    entries = {}
    for line in host.file("/etc/fstab").content_string.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            entries[fields[1]] = fields
    return entries


def test_nfs_client_is_installed(host):
    assert host.package("nfs-common").is_installed


def test_fstab_has_each_volume_with_the_recommended_options(host):
    entries = fstab_entries(host)
    assert entries["/mnt/efs/uploads"] == [
        "fs-0123456789abcdef0.efs.eu-west-1.amazonaws.com:/", "/mnt/efs/uploads", "nfs4",
        NFS_OPTIONS, "0", "0"]
    assert entries["/mnt/efs/reports"] == [
        "fs-89abcdef.efs.eu-west-1.amazonaws.com:/", "/mnt/efs/reports", "nfs4",
        NFS_OPTIONS + ",noatime", "0", "0"]
    assert entries["/mnt/efs/cache"][2] == "nfs4"
    assert "/mnt/efs/new" not in entries and "/mnt/efs/ap" not in entries


def test_uploads_hydrated_with_owner_and_modes(host):
    root = host.file("/mnt/efs/uploads")
    assert root.is_directory and root.user == "app" and root.group == "app" and root.mode == 0o750
    for path in ("index.html", "img/logo.svg", "bin/start.sh"):
        f = host.file(f"/mnt/efs/uploads/{path}")
        assert f.is_file and f.user == "app" and f.group == "app" and f.mode == 0o640, path
    assert host.file("/mnt/efs/uploads/img").mode == 0o750
    for path in ("index.html", "bin/start.sh"):
        assert (host.file(f"/mnt/efs/uploads/{path}").content
                == host.file(f"/opt/app-seed/uploads/{path}").content)
    link = host.file("/mnt/efs/uploads/home.html")
    assert link.is_symlink and link.linked_to == "/mnt/efs/uploads/index.html"


def test_marker_records_the_hydration(host):
    marker = json.loads(host.file("/mnt/efs/uploads/.guardrail-hydrated").content_string)
    assert marker["source"] == "/opt/app-seed/uploads"
    assert marker["digest"].startswith("sha256-listing:")
    assert marker["files"] == 3 and marker["who"] and marker["time"]
    assert not [n for n in host.file("/mnt/efs/uploads").listdir() if n.startswith(".guardrail-staging-")]


def test_reports_hydrated_from_the_archive_next_to_lost_and_found(host):
    marker = json.loads(host.file("/mnt/efs/reports/.guardrail-hydrated").content_string)
    assert marker["source"] == "/opt/app-seed/reports.tar.gz" and marker["digest"].startswith("sha256:")
    csv = host.file("/mnt/efs/reports/2024/q1.csv")
    assert csv.content_string.startswith("month,total") and csv.user == "app"
    assert host.file("/mnt/efs/reports/lost+found").is_directory


def test_volume_without_source_is_not_hydrated(host):
    assert not host.file("/mnt/efs/cache/.guardrail-hydrated").exists
