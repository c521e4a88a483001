# podium — the front door. `make help` lists the targets.

CLUSTER_DIR  := target/cluster
KUBECONFIG   := $(CURDIR)/$(CLUSTER_DIR)/kubeconfig
KUBECTL      := $(CLUSTER_DIR)/kubectl --kubeconfig $(KUBECONFIG)
export KUBECONFIG

.PHONY: help test unit model e2e chaos chaos-short lint fmt crds cluster-up cluster-down run demo demo-down bench build go-client

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build the podium binary
	cargo build --bins

test: unit go-client e2e chaos-short ## Unit tests, the Go client's tests, end-to-end tests, then a short chaos run

unit: ## Unit tests (pure logic, no cluster)
	cargo test --lib --bins

go-client: ## Go client: vet, test, and build target/go/podium-member-go
	cd clients/go && go vet ./...
	cd clients/go && go test ./...
	cd clients/go && CGO_ENABLED=0 go build -trimpath -o ../../target/go/podium-member-go ./cmd/podium-member-go

model: ## A long search of the decision model (PODIUM_MODEL_CASES, default 300000)
	PODIUM_MODEL_CASES=$${PODIUM_MODEL_CASES:-300000} cargo test --release --lib -- election::model

e2e: cluster-up go-client ## End-to-end tests (brings the local cluster up first)
	cargo test --test e2e -- --test-threads=$${E2E_THREADS:-4}

# Chaos restarts the API server and etcd, so it runs on a cluster of its own (podium-chaos,
# state in target/cluster-chaos), brought up before and down after, pass or fail.
chaos: ## Faults vs. invariants on a cluster of its own (CHAOS_SEED, CHAOS_FAULTS=200): target/chaos/
	PODIUM_CLUSTER=chaos e2e/cluster/up.sh
	status=0; PODIUM_CLUSTER=chaos cargo test --test e2e -- --ignored --exact chaos::chaos --nocapture || status=$$?; \
	PODIUM_CLUSTER=chaos e2e/cluster/down.sh; exit $$status

chaos-short: ## A short chaos run (30 faults, a few minutes), part of make test
	CHAOS_FAULTS=$${CHAOS_FAULTS:-30} $(MAKE) chaos

lint: ## rustfmt and clippy, as CI would
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

crds: ## Regenerate crds/ (and its copy in config/crd/) from the Rust types
	mkdir -p crds
	cargo run --quiet -- crd > crds/electiongroup.yaml
	cp crds/electiongroup.yaml config/crd/electiongroup.yaml

run: build cluster-up ## Run the operator against the local cluster (installs the CRD)
	$(KUBECTL) apply --server-side -f crds/electiongroup.yaml
	$(KUBECTL) wait --for=condition=Established crd/electiongroups.podium.dev --timeout=30s
	target/debug/podium run --kubeconfig $(KUBECONFIG)

demo: build cluster-up ## Local cluster, CRD, operator in the background, and the sample app
	e2e/demo.sh

cluster-up: ## Build (or reuse) and start the local control plane
	e2e/cluster/up.sh

cluster-down: ## Stop the local control plane and remove its state
	e2e/cluster/down.sh

demo-down: ## Remove the sample (the operator clears its labels), then stop the demo operator
	-$(KUBECTL) delete -k config/samples --ignore-not-found --timeout=30s
	-[ -f target/demo/podium.pid ] && kill $$(cat target/demo/podium.pid) && rm -f target/demo/podium.pid

bench: cluster-up go-client ## Benchmarks (about 15 minutes): target/bench/{results.json,report.md,failover.png}
	mkdir -p target/bench
	cd benches/lease-baseline && CGO_ENABLED=0 go build -trimpath -o ../../target/bench/lease-baseline .
	cargo bench --bench bench
	[ -x target/bench/venv/bin/python ] || (python3 -m venv target/bench/venv && target/bench/venv/bin/pip install --quiet matplotlib)
	target/bench/venv/bin/python benches/plot.py target/bench
