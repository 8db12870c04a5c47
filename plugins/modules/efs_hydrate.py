#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: efs_hydrate
short_description: Seed a shared volume with content exactly once
version_added: 0.1.0
description:
  - Copies a directory or a tar archive into O(dest), typically a mounted EFS volume, so that
    the volume holds the content an application ships.
  - Exactly once under concurrency. An exclusive lock on a lock file inside O(dest)
    (C(.guardrail-hydrate.lock); flock works across NFSv4 clients) lets hosts or tasks that start
    together seed once; the others wait, then find the work done.
  - Atomic. The content is written to a hidden staging directory in O(dest), given its owner and
    modes, synced to stable storage and then renamed into place. The marker file
    C(.guardrail-hydrated) (source, digest, time, who) is written last. A run that dies at any
    point leaves no marker; the next run finishes the synced staging tree or removes an
    unfinished one, then completes.
  - Already hydrated is decided by the marker only, never by emptiness, so C(lost+found) or a stray
    file neither counts as content nor as hydration. A non-empty O(dest) without a marker follows
    O(on_existing).
  - User data is never deleted. O(force) copies again what changed or is missing;
    only O(prune=true) removes files that are not in the source.
  - The whole source is validated before anything is written. Refused are a O(dest) of C(/) or a
    system directory (also through a symlinked parent), a O(dest) that is itself a symlink,
    relative paths and C(..), symlinks in the source that resolve outside the tree they land in
    (judged by following the tree's own links, absolute targets included), archive members with
    absolute paths or C(..), hard links that escape the destination, members below a symlink,
    the hydrator's own names at the top of the source, and device files, FIFOs and sockets.
  - A hostile volume cannot turn the run against the host. Everything in O(dest) is reached
    through directory descriptors opened without following symlinks, owner and mode are set on
    opened descriptors, the lock, marker and staging names are refused unless they are what the
    hydrator created (owner, type, mode), and the records read from the volume are validated
    against a schema and never name a path outside O(dest). The threat model and the on-disk
    protocol are in the role's README and C(PROTOCOL.md).
  - Sparse files stay sparse (holes are skipped, not written as zeros); hard links inside the
    source stay hard links; names may hold any byte; setuid, setgid and sticky bits are kept;
    extended attributes are not copied.
  - Without root, a O(dest) this user cannot write, a source file it cannot read, and an O(owner)
    other than itself are refused before the lock and the staging directory exist.
  - Data durability uses one C(syncfs) of the volume after the staging tree is written, instead
    of an fsync per file; the marker is only written after the data is durable.
  - The role C(guardrail.ecs.efs_volume) mounts EFS and calls this module; the static helper
    C(roles/efs_volume/files/guardrail-hydrate.c) implements the same protocol inside a container
    image (C(roles/efs_volume/PROTOCOL.md)).
  - A run that finds, after waiting for the lock, a marker of another source (two versions started
    together) leaves O(dest) as it is and says so, in C(msg) and as a warning.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  src:
    description:
      - What to copy, on the managed host.
      - A directory, whose contents (not the directory itself) land in O(dest).
      - A C(.tar), C(.tar.gz) or C(.tgz) archive.
      - C(s3://bucket/key) of such an archive, downloaded with the AWS options below.
    type: str
    required: true
  dest:
    description:
      - The directory to hydrate, the mounted volume or a directory in it. Created when missing.
      - Must be absolute, without C(..), and not a system directory such as C(/), C(/etc),
        C(/usr), C(/var) or C(/home).
    type: path
    required: true
  owner:
    description:
      - User name or uid that owns every copied file and directory, and O(dest) itself.
      - When not set and running as root, the source's owners are kept, as C(cp -a) and C(tar) do.
    type: str
  group:
    description:
      - Group name or gid for every copied file and directory, and O(dest) itself.
    type: str
  dir_mode:
    description:
      - Octal mode of every copied directory and of O(dest), for example C('0755').
      - When not set, the source's modes are kept.
    type: raw
  file_mode:
    description:
      - Octal mode of every copied file, for example C('0644').
      - When not set, the source's modes are kept.
    type: raw
  on_existing:
    description:
      - What to do when O(dest) has content but no marker.
      - V(fail) refuses and lists a few of the files found.
      - V(merge) adds the source's files, keeps every file already there, and writes the marker.
      - V(skip) leaves O(dest) as it is, without a marker.
    type: str
    choices: [fail, merge, skip]
    default: fail
  force:
    description:
      - Copy again, even when the marker is present, every file that is missing or differs in
        size, modification time, owner, mode or content (compared byte for byte, so a force run
        reads every file that looks unchanged), and set owner and modes of directories that
        drifted. Files are replaced by a rename, never changed in place. Files that are not in
        the source are kept unless O(prune=true).
    type: bool
    default: false
  prune:
    description:
      - Remove files and directories from O(dest) that are not in the source, on a run that copies
        (a first seeding, O(on_existing=merge) or O(force=true)).
      - C(lost+found), the marker and the lock file are never removed.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for another host or task that is hydrating O(dest) before failing.
    type: int
    default: 900
extends_documentation_fragment:
  - guardrail.ecs.aws
notes:
  - Supports check mode, which reports what would be copied without taking the lock or writing.
  - Supports diff mode, which lists the paths that would be copied and pruned.
  - The AWS options are used only for an O(src) of C(s3://bucket/key).
seealso:
  - name: Mount EFS with the role guardrail.ecs.efs_volume
    description: The role mounts EFS volumes and hydrates them with this module.
    link: https://github.com/guardrail-ecs/guardrail.ecs/blob/main/roles/efs_volume/README.md
"""

EXAMPLES = r"""
- name: Seed the shared uploads volume from the directory the package installed
  guardrail.ecs.efs_hydrate:
    src: /opt/app/seed/uploads
    dest: /mnt/efs/uploads
    owner: "1000"
    group: "1000"
    dir_mode: "0750"
    file_mode: "0640"

- name: Seed a volume from an archive in S3
  guardrail.ecs.efs_hydrate:
    src: s3://app-artifacts/seed/uploads-2024.06.tar.gz
    dest: /mnt/efs/uploads
    region: eu-west-1

# Give the same owner and modes as the seeding run: without them a run as root
# takes the owners of the source (root for files a package installed).
- name: Bring a hydrated volume back in line with the source, removing what is not in it
  guardrail.ecs.efs_hydrate:
    src: /opt/app/seed/uploads
    dest: /mnt/efs/uploads
    owner: "1000"
    group: "1000"
    dir_mode: "0750"
    file_mode: "0640"
    force: true
    prune: true
"""

RETURN = r"""
seeded:
  description: Whether this run filled O(dest) for the first time (or, in check mode, would).
  returned: always
  type: bool
  sample: true
recovered:
  description: Whether this run finished a hydration that an earlier run left synced but unfinished.
  returned: always
  type: bool
  sample: false
files:
  description: Number of files copied by this run (or that would be copied, in check mode).
  returned: always
  type: int
  sample: 20000
bytes:
  description: Bytes copied by this run (or that would be copied, in check mode).
  returned: always
  type: int
  sample: 209715200
digest:
  description:
    - Digest of the source. C(sha256:) of the archive for an archive; C(sha256-listing:) of the
      listing (paths, sizes, modification times, modes, link targets) for a directory.
    - For a O(dest) that was already hydrated, the digest recorded in its marker.
  returned: always
  type: str
  sample: sha256-listing:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
duration:
  description: Seconds the run took.
  returned: always
  type: float
  sample: 1.284
dest:
  description: The normalised destination.
  returned: always
  type: str
  sample: /mnt/efs/uploads
pruned:
  description: Paths removed (or that would be removed) from O(dest) because they are not in the source.
  returned: always
  type: list
  elements: str
  sample: [old-report.csv]
kept:
  description: Paths that O(dest) already had and this run left as they are (O(on_existing=merge)).
  returned: always
  type: list
  elements: str
  sample: [README.txt]
marker:
  description: The content of the marker file, C(null) when O(dest) is not hydrated.
  returned: always
  type: dict
  sample:
    source: /opt/app/seed/uploads
    digest: sha256-listing:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
    files: 20000
    bytes: 209715200
    copied_files: 20000
    copied_bytes: 209715200
    time: "2024-06-01T10:00:00Z"
    first_hydrated: "2024-06-01T10:00:00Z"
    who: root@ip-10-0-1-23 pid 4242
would_copy:
  description: In check mode, the paths of the files and links that would be copied (the first 1000).
  returned: in check mode, when O(dest) would be written
  type: list
  elements: str
  sample: [index.html, img/logo.png]
msg:
  description: What happened, in one sentence.
  returned: always
  type: str
  sample: "/mnt/efs/uploads: copied 20000 files (209715200 bytes) from /opt/app/seed/uploads"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.guardrail.ecs.plugins.module_utils.common.aws import (
    AWS_ARGUMENT_SPEC,
    AWS_MUTUALLY_EXCLUSIVE,
    AWS_REQUIRED_TOGETHER,
    AWSError,
    aws_options,
)
from ansible_collections.guardrail.ecs.plugins.module_utils.efs.hydrate import (
    ON_EXISTING_CHOICES,
    HydrateError,
    hydrate,
)

DIFF_LIMIT = 200


def _listing(paths, prefix):
    lines = [f"{prefix}{p}" for p in paths[:DIFF_LIMIT]]
    if len(paths) > DIFF_LIMIT:
        lines.append(f"... and {len(paths) - DIFF_LIMIT} more")
    return "".join(line + "\n" for line in lines)


def main():
    argument_spec = dict(
        src=dict(type="str", required=True),
        dest=dict(type="path", required=True),
        owner=dict(type="str"),
        group=dict(type="str"),
        dir_mode=dict(type="raw"),
        file_mode=dict(type="raw"),
        on_existing=dict(type="str", choices=list(ON_EXISTING_CHOICES), default="fail"),
        force=dict(type="bool", default=False),
        prune=dict(type="bool", default=False),
        lock_timeout=dict(type="int", default=900),
    )
    argument_spec.update(AWS_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=AWS_MUTUALLY_EXCLUSIVE,
                           required_together=AWS_REQUIRED_TOGETHER)
    p = module.params
    try:
        result = hydrate(
            p["src"], p["dest"], owner=p["owner"], group=p["group"], dir_mode=p["dir_mode"],
            file_mode=p["file_mode"], on_existing=p["on_existing"], force=p["force"],
            prune=p["prune"], lock_timeout=p["lock_timeout"], check_mode=module.check_mode,
            aws_options=aws_options(p))
    except (HydrateError, AWSError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"hydrating {p['dest']} failed: {exc}")
    if module._diff and result["changed"]:
        copied = result.get("would_copy")
        if copied is None:
            copied = [f"{result['files']} files, {result['bytes']} bytes"]
        result["diff"] = dict(
            before_header=result["dest"], after_header=p["src"],
            before=_listing(result["pruned"], ""),
            after=_listing(copied, ""))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
