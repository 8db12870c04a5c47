# guardrail.ecs: `make demo` runs the main job on a lab host, `make test` runs the
# whole suite. Both install what they need first (scripts/bootstrap).
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PATH := $(CURDIR)/.venv/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/tests/lab/containers.conf
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.cache/collections
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export GUARDRAIL_LAB_IMAGE ?= localhost/guardrail-lab:debian12

.PHONY: help bootstrap lab-image demo test unit sanity lint integration molecule compat benchmarks build docs \
	ee-context release clean hydrate-helper

help:
	@echo "make demo    - build the lab host and run the main job on it"
	@echo "make test    - the whole suite: unit, sanity, lint, integration, compat, molecule, demo"
	@echo "make unit | sanity | lint | integration | molecule | compat - one stage"
	@echo "make benchmarks - run every benchmark in benchmarks/"
	@echo "make build   - build the collection tarball"
	@echo "make hydrate-helper - the static guardrail-hydrate binary in .cache/build"
	@echo "make docs    - the HTML documentation site in docs/build/html"
	@echo "make ee-context - the execution environment build context in context/"
	@echo "make release - CHANGELOG.rst and changelogs/changelog.yaml for galaxy.yml's version"

bootstrap:
	@scripts/bootstrap

lab-image: bootstrap
	@tests/lab/build-image.sh

demo: lab-image
	@scripts/demo

test: lab-image
	@scripts/test

unit sanity lint integration molecule compat: bootstrap
	@scripts/test $@

benchmarks: lab-image
	@for b in benchmarks/*.py; do echo "== $$b"; python "$$b" || exit 1; done

build: bootstrap
	ansible-galaxy collection build --force --output-path .cache/build

# The efs_volume role's container-start helper, static so any image can carry it.
hydrate-helper: bootstrap
	@mkdir -p .cache/build
	gcc -static -O2 -Wall -Wextra -o .cache/build/guardrail-hydrate roles/efs_volume/files/guardrail-hydrate.c

docs: bootstrap
	@scripts/docs

# The build context only (ansible-builder create): no image is built and
# nothing is installed on this machine. Needs the tarball of galaxy.yml's version.
ee-context: build
	@scripts/ee-context

# Run on the release commit: turns the fragments into the version's entry in
# changelogs/changelog.yaml and CHANGELOG.rst (see README, Releasing).
release: bootstrap
	@scripts/release

clean:
	rm -rf .cache/build .cache/sanity .cache/docs-src docs/build context tests/output reports .dist
