# modelrollout — every command a developer or CI needs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Where `make control-plane` leaves etcd, kube-apiserver, kubectl and helm (printed by the build).
CONTROL_PLANE_BUILD := tests/control-plane/build.sh
# Python tools the tests drive (the official `openai` client) live in a virtualenv of our own.
VENV := .cache/venv

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

.PHONY: build
build: ## build every binary (release)
	$(CARGO) build --release --workspace --bins

.PHONY: test
test: deps lint crd-check control-plane ## everything CI checks: format, clippy, CRD drift, unit, component and end-to-end tests
	MODELROLLOUT_CONTROL_PLANE="$$($(CONTROL_PLANE_BUILD))" \
	MODELROLLOUT_PYTHON="$(CURDIR)/$(VENV)/bin/python" \
	$(CARGO) test --workspace --all-targets -- --test-threads=4

.PHONY: unit
unit: ## unit tests only (pure logic: no network, no control plane)
	$(CARGO) test --workspace --lib --bins

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all -- --check || { echo "formatting differs: run 'cargo fmt --all'"; exit 1; }
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: crds
crds: ## regenerate crds/modelrollout.yaml from the Rust types
	@mkdir -p crds .cache
	@# through a temporary file: a redirect straight into crds/ would empty it while crdgen compiles
	$(CARGO) run --quiet -p modelrollout-api --bin crdgen > .cache/crd.yaml
	mv .cache/crd.yaml crds/modelrollout.yaml

.PHONY: crd-check
crd-check: ## fail when crds/ differs from what the code generates
	@mkdir -p .cache
	@$(CARGO) run --quiet -p modelrollout-api --bin crdgen > .cache/crd.yaml
	@diff -u crds/modelrollout.yaml .cache/crd.yaml || \
	  { echo "crds/modelrollout.yaml is out of date with the code: run 'make crds' and commit it"; exit 1; }

.PHONY: control-plane
control-plane: ## build the pinned etcd, kube-apiserver, kubectl and helm (cached)
	@$(CONTROL_PLANE_BUILD) >/dev/null

.PHONY: cluster-up
cluster-up: control-plane ## start a local control plane for hands-on use; prints the KUBECONFIG line
	$(CARGO) run --quiet -p modelrollout-testcluster --bin testcluster -- up \
	  --binaries "$$($(CONTROL_PLANE_BUILD) 2>/dev/null)" --dir .cache/cluster

.PHONY: cluster-down
cluster-down: ## stop the local control plane started by cluster-up
	$(CARGO) run --quiet -p modelrollout-testcluster --bin testcluster -- down --dir .cache/cluster

.PHONY: bench
bench: ## proxy vs direct, nginx and LiteLLM on loopback; writes docs/benchmarks.md (not part of make test)
	bash bench/run.sh

.PHONY: deps
deps: ## install what the tests need on a fresh machine (Debian packages incl. prometheus, the openai client)
	@mkdir -p .cache
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
	@[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import openai' 2>/dev/null || $(VENV)/bin/pip install -q 'openai>=1.50,<3'
	@# the analysis tests start their own Prometheus: Debian's service is stopped and disabled
	@[ -x /usr/bin/prometheus ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	  && { systemctl disable --now prometheus || service prometheus stop; } >/dev/null 2>&1 || true; }
