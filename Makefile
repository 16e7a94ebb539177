# modelrollout — every command a developer or CI needs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Where `make control-plane` leaves etcd, kube-apiserver, kubectl and helm (printed by the build).
CONTROL_PLANE_BUILD := tests/control-plane/build.sh
# Where it leaves kubelet, kube-controller-manager and kube-scheduler (a cache of their own).
NODE_BUILD := tests/control-plane/build-node.sh
# Binaries `make images` turns into images, one word each; the node imports every tarball.
IMAGES ?= modelrollout-controller modelrollout-proxy modelrollout-mockllm mockllm-probe
IMAGE_DIR := .cache/images
# Cargo profile of the imaged binaries (`make images IMAGE_PROFILE=dev` reuses the test build).
IMAGE_PROFILE ?= release
IMAGE_BIN_DIR := target/$(if $(filter dev,$(IMAGE_PROFILE)),debug,$(IMAGE_PROFILE))
# Files the Helm chart carries a copy of (source:copy): `make crds` copies, `make crd-check` compares.
CHART := charts/modelrollout
CHART_COPIES := crds/modelrollout.yaml:$(CHART)/crds/modelrollout.yaml \
  deploy/rbac/clusterrole.yaml:$(CHART)/files/rbac/clusterrole.yaml \
  deploy/rbac/leader-election-role.yaml:$(CHART)/files/rbac/leader-election-role.yaml \
  deploy/monitoring/alerts.rules.yaml:$(CHART)/files/alerts.rules.yaml
# `make cluster-up NODE=1` also runs a node (containerd, kubelet, scheduler, controller-manager).
NODE ?=
# Python tools the tests drive (the official `openai` client) live in a virtualenv of our own.
VENV := .cache/venv
# Debian's promtool is built without Kubernetes discovery, so deploy/monitoring/prometheus.yml is
# checked by upstream's, built once per machine from the Prometheus Go module (3.x; the version
# is also in tests/monitoring/src/lib.rs).
PROMTOOL_VERSION := v0.316.0
UPSTREAM_PROMTOOL := $(HOME)/.cache/modelrollout/promtool-$(PROMTOOL_VERSION)/promtool
GO ?= $(or $(shell command -v go),/usr/local/go/bin/go)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

.PHONY: build
build: ## build every binary (release)
	$(CARGO) build --release --workspace --bins

.PHONY: test
test: deps lint crd-check control-plane chart-lint ## everything CI checks: format, clippy, CRD drift, unit, component and end-to-end tests
	@# debug images: the test build compiles those binaries anyway (a release build would double CI's time)
	$(MAKE) --no-print-directory images IMAGE_PROFILE=dev
	MODELROLLOUT_CONTROL_PLANE="$$($(CONTROL_PLANE_BUILD))" \
	MODELROLLOUT_NODE_BINARIES="$$($(NODE_BUILD))" \
	MODELROLLOUT_IMAGES="$(CURDIR)/$(IMAGE_DIR)" \
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
	@# the chart carries copies (Helm reads only files inside the chart); a missing source is skipped
	@for pair in $(CHART_COPIES); do src=$${pair%%:*}; dst=$${pair#*:}; \
	  if [ -f $$src ]; then mkdir -p $$(dirname $$dst) && cp $$src $$dst; fi; done

.PHONY: crd-check
crd-check: ## fail when crds/ differs from what the code generates
	@mkdir -p .cache
	@$(CARGO) run --quiet -p modelrollout-api --bin crdgen > .cache/crd.yaml
	@diff -u crds/modelrollout.yaml .cache/crd.yaml || \
	  { echo "crds/modelrollout.yaml is out of date with the code: run 'make crds' and commit it"; exit 1; }
	@for pair in $(CHART_COPIES); do src=$${pair%%:*}; dst=$${pair#*:}; \
	  if [ -f $$src ]; then diff -u $$dst $$src || \
	    { echo "$$dst differs from $$src: run 'make crds' and commit it"; exit 1; }; fi; done

.PHONY: chart-lint
chart-lint: control-plane ## helm lint --strict of charts/modelrollout, with its defaults and with every option on
	@helm="$$($(CONTROL_PLANE_BUILD))/helm"; \
	  "$$helm" lint --strict $(CHART) && \
	  for values in $(CHART)/ci/*-values.yaml; do "$$helm" lint --strict $(CHART) --values $$values; done

.PHONY: control-plane
control-plane: ## build the pinned etcd, kube-apiserver, kubectl, helm, kubelet, kube-controller-manager, kube-scheduler (cached)
	@$(CONTROL_PLANE_BUILD) >/dev/null
	@$(NODE_BUILD) >/dev/null

.PHONY: images
images: ## OCI image tarballs of the IMAGES binaries and the pause image in .cache/images (imported into a running node-up cluster)
	@mkdir -p $(IMAGE_DIR)
	@# dev: the same build (and features) as `cargo test --workspace --all-targets`, so nothing compiles twice
	$(if $(filter dev,$(IMAGE_PROFILE)),$(CARGO) build --workspace --all-targets,$(CARGO) build --profile $(IMAGE_PROFILE) $(addprefix --bin ,$(IMAGES)))
	cc -static -Os -o $(IMAGE_DIR)/pause tests/imagebuild/pause.c
	python3 tests/imagebuild/imagebuild.py --binary $(IMAGE_DIR)/pause --name modelrollout.local/pause:dev --user 65535 --out $(IMAGE_DIR)/pause.tar
	@for bin in $(IMAGES); do \
	  python3 tests/imagebuild/imagebuild.py --binary $(IMAGE_BIN_DIR)/$$bin --name modelrollout.local/$$bin:dev --out $(IMAGE_DIR)/$$bin.tar; \
	done
	@if [ -S .cache/cluster/node/containerd.sock ]; then \
	  $(CARGO) run --quiet -p modelrollout-testcluster --bin testcluster -- load-images --dir .cache/cluster $(IMAGE_DIR)/*.tar; \
	fi

.PHONY: cluster-up
cluster-up: control-plane $(if $(NODE),images) ## start a local control plane for hands-on use (NODE=1: with a node); prints the KUBECONFIG line
	MODELROLLOUT_NODE_BINARIES="$$($(NODE_BUILD) 2>/dev/null)" MODELROLLOUT_IMAGES="$(CURDIR)/$(IMAGE_DIR)" \
	$(CARGO) run --quiet -p modelrollout-testcluster --bin testcluster -- up \
	  --binaries "$$($(CONTROL_PLANE_BUILD) 2>/dev/null)" --dir .cache/cluster $(if $(NODE),--node)

.PHONY: node-up
node-up: ## the same as `make cluster-up NODE=1`
	$(MAKE) cluster-up NODE=1

.PHONY: demo
demo: ## the whole story on a local cluster with a node: chart, Prometheus, a rollout promoted live, one rolled back (DEMO_KEEP=1 keeps it up)
	@echo "==> [1/4] what a fresh machine lacks: Debian packages, the openai client (make deps)"
	@$(MAKE) --no-print-directory deps
	@echo "==> [2/4] the pinned Kubernetes binaries (first time: about 20 minutes of Go builds, then cached)"
	@$(MAKE) --no-print-directory control-plane
	@echo "==> [3/4] our binaries and their images (first time: a debug build of the workspace, ~10 minutes)"
	@$(MAKE) --no-print-directory images IMAGE_PROFILE=dev
	@echo "==> [4/4] the demo (about a minute)"
	@MODELROLLOUT_CONTROL_PLANE="$$($(CONTROL_PLANE_BUILD) 2>/dev/null)" \
	MODELROLLOUT_NODE_BINARIES="$$($(NODE_BUILD) 2>/dev/null)" \
	MODELROLLOUT_IMAGES="$(CURDIR)/$(IMAGE_DIR)" \
	target/debug/modelrollout-demo

.PHONY: cluster-down
cluster-down: ## stop the local control plane started by cluster-up
	$(CARGO) run --quiet -p modelrollout-testcluster --bin testcluster -- down --dir .cache/cluster

.PHONY: bench-controller
bench-controller: control-plane ## the controller with 10 000 rollouts and the ConfigMap-to-proxy delay, release build (BENCH_ROLLOUTS=N to change)
	$(CARGO) build --release -p modelrollout-controller -p modelrollout-proxy -p modelrollout-e2e --bins
	@mkdir -p .cache
	MODELROLLOUT_CONTROL_PLANE="$$($(CONTROL_PLANE_BUILD))" target/release/bench-controller | tee .cache/bench-controller.md
	@echo "the section above is in .cache/bench-controller.md: copy it into docs/benchmarks.md"

.PHONY: bench
bench: ## proxy vs direct, nginx and LiteLLM on loopback; writes docs/benchmarks.md (not part of make test)
	bash bench/run.sh

.PHONY: sim
sim: ## simulate thousands of rollouts: sequential judge vs Flagger/Argo-style thresholds; writes docs/decisions.md
	$(CARGO) run --release --quiet -p modelrollout-sim -- --write docs/decisions.md

.PHONY: deps
deps: ## install what the tests need on a fresh machine (Debian packages incl. prometheus and amtool, upstream promtool, the openai client)
	@mkdir -p .cache
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
	@[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import openai' 2>/dev/null || $(VENV)/bin/pip install -q 'openai>=1.50,<3'
	@# the analysis tests start their own Prometheus: Debian's service is stopped and disabled
	@[ -x /usr/bin/prometheus ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	  && { systemctl disable --now prometheus || service prometheus stop; } >/dev/null 2>&1 || true; }
	@# amtool checks deploy/monitoring/alertmanager.yml; the Alertmanager service itself is not wanted
	@[ -x /usr/bin/amtool ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager \
	  && { systemctl disable --now prometheus-alertmanager || service prometheus-alertmanager stop; } >/dev/null 2>&1 || true; }
	@[ -x $(UPSTREAM_PROMTOOL) ] || { echo "building promtool $(PROMTOOL_VERSION) with Kubernetes discovery (once per machine; log in .cache/promtool-build.log)"; \
	  GOBIN=$(dir $(UPSTREAM_PROMTOOL)) $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION) >.cache/promtool-build.log 2>&1 \
	  || { tail -20 .cache/promtool-build.log; exit 1; }; }
	@# the node beside the local control plane: container runtime, CNI plugins, the forwarders
	@command -v containerd >/dev/null && command -v runc >/dev/null && [ -x /usr/lib/cni/bridge ] && command -v socat >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc containernetworking-plugins socat; }
