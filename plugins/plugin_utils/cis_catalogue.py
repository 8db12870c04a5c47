# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side: the CIS catalogue as data files, and the one place a row's parameters get values.

The role keeps its controls in ``catalogue/<section>.yml`` (one YAML list of rows per benchmark
section) and a manifest per benchmark, ``catalogue/manifest-<benchmark>.yml``, that lists the
section files the benchmark reads, in order. Rows are plain data: where a row needs a site setting
or a platform fact it names the variable instead of templating it::

    not_applicable: {param: cis_hardening_reason_iptables}         # the variable's value
    packages_absent: {param: cis_hardening_os.packages.avahi}       # a key inside a variable
    lines: [{param: cis_hardening_pwquality, with: {effective: minlen, value: {param: cis_hardening_password_min_length}}}]
                                                                    # a mapping variable with fields added

``resolve`` replaces those references with the values a ``lookup(name)`` gives for the variable
(the action plugin's templar over the task's variables); nothing else in a row is evaluated.
"""
from __future__ import annotations

import os

import yaml

from ansible_collections.guardrail.ecs.plugins.module_utils.cis.catalogue import BENCHMARKS, CatalogueError

PARAM = "param"
WITH = "with"


def manifest_path(directory, benchmark):
    return os.path.join(directory, "manifest-%s.yml" % benchmark)


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as exc:
        raise CatalogueError("cannot read %s: %s" % (path, exc.strerror or exc))
    except yaml.YAMLError as exc:
        raise CatalogueError("%s is not valid YAML: %s" % (path, exc))


def load(directory, benchmark):
    """The rows of the benchmark's manifest sections, in manifest order, unresolved."""
    if benchmark not in BENCHMARKS:
        raise CatalogueError("benchmark must be one of %s, not %r" % (", ".join(BENCHMARKS), benchmark))
    path = manifest_path(directory, benchmark)
    manifest = _read_yaml(path)
    if not isinstance(manifest, dict) or manifest.get("benchmark") != benchmark \
            or not isinstance(manifest.get("sections"), list) or not manifest["sections"]:
        raise CatalogueError("%s must be a mapping with benchmark: %s and a list of section files" % (path, benchmark))
    rows = []
    for section in manifest["sections"]:
        if not isinstance(section, str) or os.path.basename(section) != section or not section.endswith(".yml"):
            raise CatalogueError("%s: section %r must be a .yml file name in %s" % (path, section, directory))
        found = _read_yaml(os.path.join(directory, section))
        if not isinstance(found, list) or not all(isinstance(row, dict) for row in found):
            raise CatalogueError("%s must be a list of controls" % os.path.join(directory, section))
        rows.extend(found)
    return rows


def _is_reference(value):
    return isinstance(value, dict) and PARAM in value


def references(value):
    """Every variable name (with its dotted keys) the value refers to."""
    if _is_reference(value):
        yield value[PARAM]
        yield from references(value.get(WITH))
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def _lookup_path(name, lookup, cache):
    if not isinstance(name, str) or not name:
        raise CatalogueError("a parameter reference needs a variable name, not %r" % (name,))
    top, *keys = name.split(".")
    if top not in cache:
        cache[top] = lookup(top)
    value = cache[top]
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise KeyError(name)
        value = value[key]
    return value


def _resolve(value, lookup, cache):
    if _is_reference(value):
        unknown = sorted(set(value) - {PARAM, WITH})
        if unknown:
            raise CatalogueError("parameter reference %r: unknown key %s (keys: %s, %s)" % (value, unknown[0], PARAM, WITH))
        found = _lookup_path(value[PARAM], lookup, cache)
        if WITH not in value:
            return found
        if not isinstance(found, dict) or not isinstance(value[WITH], dict):
            raise CatalogueError("parameter %s: with needs a mapping variable and a mapping of fields" % value[PARAM])
        return dict(found, **_resolve(value[WITH], lookup, cache))
    if isinstance(value, dict):
        return {key: _resolve(item, lookup, cache) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, lookup, cache) for item in value]
    return value


def resolve(rows, lookup):
    """The rows with every ``{param: name}`` replaced by the variable's value.

    ``lookup(name)`` returns the value of a top-level variable and raises KeyError when it is not
    defined; an unknown variable or key is refused with the row that names it.
    """
    cache = {}
    resolved = []
    for index, row in enumerate(rows):
        try:
            resolved.append(_resolve(row, lookup, cache))
        except KeyError as exc:
            raise CatalogueError("catalogue row %d (id %s): parameter %s is not defined"
                                 % (index, row.get("id"), exc.args[0] if exc.args else "?"))
    return resolved
