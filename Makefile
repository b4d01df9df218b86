# zeropod — the two entry points are `make demo` and `make test` (see README.md).
# Every target is idempotent; heavy artefacts are cached in $(ZEROPOD_CACHE).
SHELL := /bin/bash
export ZEROPOD_CACHE ?= /var/cache/zeropod
PY := .venv/bin/python
CONTAINERD_VERSIONS ?= 2.1 1.7

.PHONY: setup demo test unit lint e2e faults bench bench-quick bench-shim-memory node-start node-stop clean cold-setup package

## setup: host packages, CRIU 4.2.1, generated protos, venv, node rootfs (setup-host), test images
## (static apps, and Debian's own servers for the real-workload tests)
setup:
	scripts/setup-host
	$(PY) images/build
	$(PY) images/build-servers
	$(PY) images/build-servers --image jvm

## demo: boot the node, run a pod under the zeropod runtime, curl it, print timings
demo: setup
	$(PY) scripts/demo.py

## test: lint, unit tests (no root), the end-to-end suite on the node for each containerd, the
## fault suite, the quick benchmark (so it never rots; its numbers never fail the suite), and
## the demo again from an empty cache (every install step must work on a machine that never
## ran us)
test: setup lint unit e2e faults bench-quick cold-setup

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

unit:
	.venv/bin/pytest -q tests

e2e:
	.venv/bin/pytest -q -m node e2e --ignore=e2e/faults --containerd "$(CONTAINERD_VERSIONS)"

## faults: one fault injected per scenario on the node, for each containerd; prints the fault
## table (also build/faults/table.md, results.json)
faults: setup
	.venv/bin/pytest -q -m node e2e/faults --containerd "$(CONTAINERD_VERSIONS)"

## bench: zeropod beside raw CRIU, a cold start and plain runc (5/100/500 MB, N=7): bench/results
bench: setup
	$(PY) bench/run.py

## bench-quick: the same at 5 MB, N=2 (CI: keeps the suite from rotting; numbers never fail it)
bench-quick: setup
	$(PY) bench/run.py --quick  # writes build/bench-quick/

bench-shim-memory: setup
	$(PY) bench/shim_memory.py

node-start:
	node/start
node-stop:
	node/stop

## cold-setup: `make demo` with an empty cache on a private node (scripts/cold-setup)
cold-setup:
	scripts/cold-setup

## package: the node package `zeropod install` and the Ansible role put on nodes (dist/)
package: setup
	$(PY) scripts/package
