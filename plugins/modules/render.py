#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin of the same name; this file documents it.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: render
short_description: Render a stack's configuration for a profile
version_added: 0.1.0
description:
  - Renders the template tree of a stack, C(<repo_path>/<stacks_dir>/<stack>/), for a profile
    into C(<repo_path>/.dist/<profile>/<stack>/) (or O(dest)) on the controller, with Ansible's templating.
  - "Template data: the profile's configuration, read from C(<profiles_dir>/<profile>.yml). A profile
    may name parents in C(extends:) (a name or a list, merged left to right, the profile last);
    dictionaries are merged key by key, lists and other values replaced, cycles are refused.
    O(vars) go on top of it. V(stack_name) and V(profile_name) hold the names."
  - Files ending in C(.j2) are rendered and lose that suffix. A template whose output name ends in
    C(.tf.json) (that is C(*.tf.json.j2)) must render to JSON or YAML and is written as canonical JSON
    (sorted keys, two-space indent, final newline), so configuration built from data is byte-stable.
    Every other file is copied byte for byte with its mode.
  - Render removes only files it wrote itself and no longer renders (listed in the manifest
    C(.guardrail-rendered.json) it keeps in the output directory); a file it did not write stays,
    except that configuration it did not write (C(*.tf), C(*.tf.json), C(*.tofu), C(*.tofu.json))
    refuses the render, since tofu would load it with the rendered files.
    It never removes or overwrites state in any path (C(*.tfstate), C(*.tfstate.*), such as a local
    backend's relative C(path) or C(errored.tfstate)), plan files (C(*.tfplan)), C(.terraform/) or
    C(terraform.tfstate.d/), since the rendered directory is also where the stack runs. A stack may
    carry its own C(.terraform.lock.hcl), which is copied like any file; those other names are
    refused as templates.
  - In a git work tree only committed sources are rendered - a modified, staged, untracked or
    ignored file under the stack or the profiles directory refuses the render before any template
    is evaluated (in check mode too), so a lookup in an uncommitted template never runs.
  - Deterministic, the same inputs give the same bytes; a sha256 over the rendered tree is returned.
  - When the destination lies in a git work tree and is not ignored yet, it is added to the
    repository's C(.git/info/exclude), so rendering never dirties the tree; tracked files are not touched.
  - Template names, stack or profile names and paths that escape their roots are refused.
author:
  - guardrail.ecs maintainers (@guardrail-ecs)
options:
  stack:
    description: The stack, a directory under O(stacks_dir). A single path component.
    type: str
    required: true
  profile:
    description: The profile, C(<profiles_dir>/<profile>.yml). A single path component.
    type: str
    required: true
  repo_path:
    description: The stack repository.
    type: path
    required: true
  dest:
    description:
      - Output directory relative to O(repo_path) (default C(.dist/<profile>/<stack>)).
      - Must lie inside O(repo_path), outside C(.git), may not be or contain the stacks or profiles
        directories, and may not hold files tracked by git (an ignored build directory such as the
        default). Anything else is refused before anything is written.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports what would be written or removed and writes nothing.
  diff_mode:
    support: full
    description: Before and after of every written or removed file.
  platform:
    support: full
    platforms: all
    description: Runs on the controller.
  action:
    support: full
    description: Implemented as an action plugin.
extends_documentation_fragment:
  - guardrail.ecs.stack_layout
seealso:
  - module: guardrail.ecs.workflow
  - plugin: guardrail.ecs.profile
    plugin_type: lookup
notes:
  - Template variables are the profile data and O(vars) only, not host facts, so the output
    depends on nothing but the repository and the task.
"""

EXAMPLES = r"""
- name: Render stack alpha for prod into .dist/prod/alpha
  guardrail.ecs.render:
    repo_path: "{{ playbook_dir }}/.."
    stack: alpha
    profile: prod

- name: Render with an extra variable into a custom directory
  guardrail.ecs.render:
    repo_path: /srv/infra
    stack: alpha
    profile: base
    dest: build/alpha
    vars:
      release: "2024-06"
"""

RETURN = r"""
changed:
  description: Whether any file was written or removed.
  returned: always
  type: bool
  sample: true
dest:
  description: The absolute output directory.
  returned: always
  type: str
  sample: /srv/infra/.dist/prod/alpha
written:
  description: Output files written (new or different), relative to RV(dest).
  returned: always
  type: list
  elements: str
  sample: ["main.tf", "data.tf.json"]
removed:
  description: Stale files removed from RV(dest), relative to it.
  returned: always
  type: list
  elements: str
  sample: ["old.tf"]
hash:
  description: sha256 over every output path, mode and content; equal for equal output.
  returned: always
  type: str
  sample: 3f5b0c8e1d4a6b7c9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f
ignore_added:
  description: The pattern added to C(.git/info/exclude), or null when the output was already ignored.
  returned: always
  type: str
  sample: /.dist/prod/alpha/
"""
