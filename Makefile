# guardrail.ecs: `make demo` runs the main job on a lab host, `make test` runs the
# whole suite. Both install what they need first (scripts/bootstrap).
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PATH := $(CURDIR)/.venv/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/tests/lab/containers.conf
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.cache/collections
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export GUARDRAIL_LAB_IMAGE ?= localhost/guardrail-lab:debian12

.PHONY: help bootstrap lab-image demo test unit sanity lint integration molecule benchmarks build clean

help:
	@echo "make demo    - build the lab host and run the main job on it"
	@echo "make test    - the whole suite: unit, sanity, lint, integration, molecule"
	@echo "make unit | sanity | lint | integration | molecule - one stage"
	@echo "make benchmarks - run every benchmark in benchmarks/"
	@echo "make build   - build the collection tarball"

bootstrap:
	@scripts/bootstrap

lab-image: bootstrap
	@tests/lab/build-image.sh

demo: lab-image
	@scripts/demo

test: lab-image
	@scripts/test

unit sanity lint integration molecule: bootstrap
	@scripts/test $@

benchmarks: lab-image
	@for b in benchmarks/*.py; do echo "== $$b"; python "$$b" || exit 1; done

build: bootstrap
	ansible-galaxy collection build --force --output-path .cache/build

clean:
	rm -rf .cache/build .cache/sanity tests/output reports .dist
