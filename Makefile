# podium — the front door. `make help` lists the targets.

CLUSTER_DIR  := target/cluster
KUBECONFIG   := $(CURDIR)/$(CLUSTER_DIR)/kubeconfig
KUBECTL      := $(CLUSTER_DIR)/kubectl --kubeconfig $(KUBECONFIG)
export KUBECONFIG

.PHONY: help test unit e2e lint fmt crds cluster-up cluster-down run demo demo-down bench build

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build the podium binary
	cargo build --bins

test: unit e2e ## Unit tests, then end-to-end tests against the local control plane

unit: ## Unit tests (pure logic, no cluster)
	cargo test --lib --bins

e2e: cluster-up ## End-to-end tests (brings the local cluster up first)
	cargo test --test e2e -- --test-threads=$${E2E_THREADS:-4}

lint: ## rustfmt and clippy, as CI would
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

crds: ## Regenerate crds/ from the Rust types
	mkdir -p crds
	cargo run --quiet -- crd > crds/electiongroup.yaml

cluster-up: ## Build (or reuse) and start the local control plane
	e2e/cluster/up.sh

cluster-down: ## Stop the local control plane and remove its state
	e2e/cluster/down.sh
