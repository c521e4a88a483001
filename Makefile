# podium — the front door. `make help` lists the targets.
# K8S_VERSION=1.35|1.36|1.37 (default 1.37, e2e/cluster/versions.env) selects the Kubernetes minor
# of the local control plane for every target that brings it up (cluster-up, test, e2e, e2e-node,
# chaos, bench, bench-scale); each minor is built into a cache directory of its own. A cluster
# that is up keeps its release (up.sh refuses another): cluster-down stops it, whatever K8S_VERSION says.

CLUSTER_DIR  := target/cluster
KUBECONFIG   := $(CURDIR)/$(CLUSTER_DIR)/kubeconfig
KUBECTL      := $(CLUSTER_DIR)/kubectl --kubeconfig $(KUBECONFIG)
export KUBECONFIG

IMAGE_TAG    ?= dev
MUSL         := x86_64-unknown-linux-musl
NODE_SOCK    := $(CLUSTER_DIR)/node/containerd.sock

.PHONY: help deps monitoring-check test unit model e2e plugin e2e-node chaos chaos-short lint fmt crds admission-check cluster-up cluster-down run demo demo-down bench bench-scale bench-micro build go-client image load-images deploy undeploy helm manifests check-manifests

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## Build the podium binary
	cargo build --bins

plugin: ## Build the kubectl plugin, kubectl podium (target/release/kubectl-podium)
	cargo build --release --locked -p kubectl-podium
	@echo "kubectl finds plugins on PATH: cp $${CARGO_TARGET_DIR:-target}/release/kubectl-podium ~/.local/bin/ (or any directory on PATH), then: kubectl podium --help"

deps: ## Install the Debian packages the real node, the image and the e2e tests need (as root; e2e/deps.sh)
	e2e/deps.sh

test: monitoring-check admission-check unit go-client e2e e2e-node chaos-short ## The monitoring kit's checks, the admission policy's check, unit tests, the Go client's tests, end-to-end tests (kwok, then the real node), a short chaos run

unit: ## Unit tests (pure logic, no cluster)
	cargo test --workspace --lib --bins

go-client: ## Go client: vet, test, and build target/go/podium-member-go
	cd clients/go && go vet ./...
	cd clients/go && go test ./...
	cd clients/go && CGO_ENABLED=0 go build -trimpath -o ../../target/go/podium-member-go ./cmd/podium-member-go

# promtool is built once (about as long as helm) from config/monitoring/tools/go.mod into ~/.cache/podium.
monitoring-check: ## Unit-test the alerts with promtool; check the dashboard's and alerts' queries against the metrics podium exports
	p=$$(nice -n 10 config/monitoring/tools/build.sh) && $$p check rules config/monitoring/podium-alerts.rules.yaml && \
	  $$p test rules config/monitoring/tests/alerts.test.yaml
	cd config/monitoring/tools && go run ./check -src ../../.. -dashboard ../podium-dashboard.json -rules ../podium-alerts.rules.yaml
	@cd config/monitoring/tools && if out=$$(go run ./check -src ../../.. -dashboard ../tests/bad-dashboard.json 2>&1); then \
	  echo "the check accepted tests/bad-dashboard.json" >&2; exit 1; fi; \
	  echo "$$out" | grep -q '6 problem(s)' || { echo "$$out" >&2; exit 1; }; \
	  echo "ok: the check refuses tests/bad-dashboard.json (6 problems)"

# Builds k8s.io/apiserver's CEL environment from config/admission/tools/go.mod (about 2 minutes once).
admission-check: ## Compile the admission policy's CEL (config/admission) and evaluate it on sample requests
	cd config/admission/tools && nice -n 10 go run . ../admission_policy.yaml

model: ## A long search of the decision model (PODIUM_MODEL_CASES, default 300000)
	PODIUM_MODEL_CASES=$${PODIUM_MODEL_CASES:-300000} cargo test --release -p podium-election --lib -- model

# The plugin is another package's binary: its tests (e2e/plugin.rs) find it next to theirs.
e2e: cluster-up go-client ## End-to-end tests (brings the local cluster up first)
	cargo build -p kubectl-podium
	cargo test --test e2e -- --test-threads=$${E2E_THREADS:-4}

# The in-cluster operator acts on every namespace, so these run after the other e2e tests, one
# at a time, with no host-process operator beside them; it is uninstalled afterwards, pass or
# fail, so that it meets no later test's operator.
e2e-node: cluster-up image ## End-to-end tests on real-node-0: make deploy, probes, traffic through a Service, upgrade, uninstall
	status=0; cargo test --test e2e -- --ignored --test-threads=1 real_node:: || status=$$?; \
	$(MAKE) --no-print-directory undeploy || true; exit $$status

# Chaos restarts the API server and etcd, so it runs on a cluster of its own (podium-chaos,
# state in target/cluster-chaos), brought up before and down after, pass or fail.
chaos: ## Faults vs. invariants on a cluster of its own (CHAOS_SEED, CHAOS_FAULTS=200): target/chaos/
	PODIUM_CLUSTER=chaos e2e/cluster/up.sh
	status=0; PODIUM_CLUSTER=chaos cargo test --test e2e -- --ignored --exact chaos::chaos --nocapture || status=$$?; \
	PODIUM_CLUSTER=chaos e2e/cluster/down.sh; exit $$status

chaos-short: ## A short chaos run (30 faults, a few minutes), part of make test
	CHAOS_FAULTS=$${CHAOS_FAULTS:-30} $(MAKE) chaos

lint: check-manifests ## rustfmt and clippy, as CI would (after check-manifests)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

crds: ## Regenerate crds/ (and its copies in config/crd/ and charts/podium/crds/) from the Rust types
	mkdir -p crds
	cargo run --quiet -- crd > crds/electiongroup.yaml
	cp crds/electiongroup.yaml config/crd/electiongroup.yaml
	cp crds/electiongroup.yaml charts/podium/crds/electiongroup.yaml

helm: ## Build (or reuse) helm from charts/tools/go.mod into ~/.cache/podium
	@charts/tools/build.sh >/dev/null

# The chart is the source of config/manager, config/rbac and config/admission (not of the kustomization files).
manifests: ## Regenerate config/manager, config/rbac and config/admission from charts/podium (default values)
	charts/render.sh

check-manifests: ## Fail when config/ is stale against charts/podium; helm lint both RBAC modes and the monitoring objects
	charts/render.sh --check
	h=$$(charts/tools/build.sh) && $$h lint --strict charts/podium && $$h lint --strict charts/podium --set watchNamespace=apps && \
	  $$h lint --strict charts/podium --set monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true

run: build cluster-up ## Run the operator against the local cluster (installs the CRD)
	$(KUBECTL) apply --server-side -f crds/electiongroup.yaml
	$(KUBECTL) wait --for=condition=Established crd/electiongroups.podium.dev --timeout=30s
	target/debug/podium run --kubeconfig $(KUBECONFIG)

demo: build ## Local cluster (without real-node-0 where its packages are missing), CRD, operator in the background, and the sample app
	e2e/demo.sh

image: ## Build podium:dev (tag: IMAGE_TAG) and podium-sample:dev without a container engine (buildah); load them into real-node-0 if it is up
	cargo build --release --locked --target $(MUSL) --bin podium
	cd clients/go && CGO_ENABLED=0 go build -trimpath -o ../../target/go/podium-sample ./cmd/podium-sample
	e2e/node/image.sh podium:$(IMAGE_TAG) target/$(MUSL)/release/podium target/image/podium.tar --port 8080 \
	  -- run --leader-elect --http-addr=0.0.0.0:8080 --log-format=json
	e2e/node/image.sh podium-sample:dev target/go/podium-sample target/image/podium-sample.tar --port 8080
	[ ! -S $(NODE_SOCK) ] || $(MAKE) --no-print-directory load-images

load-images: ## Import target/image/*.tar into real-node-0's containerd
	for t in target/image/*.tar; do ctr --address $(NODE_SOCK) -n k8s.io images import "$$t" >/dev/null || exit 1; echo "loaded $$t"; done

deploy: cluster-up ## Install podium (config/local: config/default with the local image) on real-node-0; make image first
	@ls target/image/podium.tar >/dev/null 2>&1 || { echo "no image: run make image first" >&2; exit 1; }
	$(MAKE) --no-print-directory load-images
	$(KUBECTL) apply --server-side -k config/local
	$(KUBECTL) -n podium-system rollout status deployment/podium --timeout=120s
	$(KUBECTL) -n podium-system get pods -o wide

undeploy: ## Remove what make deploy installed; refuses while ElectionGroups exist (delete them first: podium clears its labels as they go)
	@left=$$($(KUBECTL) get electiongroups -A --no-headers 2>/dev/null); if [ -n "$$left" ]; then \
	  echo "ElectionGroups still exist; delete them first, while podium runs, so that it removes its labels:" >&2; \
	  echo "$$left" >&2; exit 1; fi
	$(KUBECTL) delete -k config/local --ignore-not-found --timeout=60s

cluster-up: ## Build (or reuse) and start the local control plane and real-node-0 (K8S_VERSION=1.35|1.36|1.37; PODIUM_REAL_NODE=0: without the node)
	e2e/cluster/up.sh

cluster-down: ## Stop the local control plane (whichever release is up) and remove its state
	e2e/cluster/down.sh

demo-down: ## Remove the sample (the operator clears its labels), then stop the demo operator
	-$(KUBECTL) delete -k config/samples --ignore-not-found --timeout=30s
	-[ -f target/demo/podium.pid ] && kill $$(cat target/demo/podium.pid) && rm -f target/demo/podium.pid

bench: cluster-up go-client ## Benchmarks (about 20 minutes): target/bench/{results.json,report.md,failover.png,failure_kinds.png,scale.png}
	mkdir -p target/bench
	cd benches/lease-baseline && CGO_ENABLED=0 go build -trimpath -o ../../target/bench/lease-baseline .
	e2e/node/image.sh lease-baseline:dev target/bench/lease-baseline target/image/lease-baseline.tar
	$(MAKE) --no-print-directory image
	cargo bench --bench bench
	[ -x target/bench/venv/bin/python ] || (python3 -m venv target/bench/venv && target/bench/venv/bin/pip install --quiet matplotlib)
	target/bench/venv/bin/python benches/plot.py target/bench

# criterion micro-benchmarks of the hot paths, no cluster needed: decide (groups of 3 and 100),
# routing a pod event among 10,000 groups, the pod cache at 50,000 pods. CRITERION_ARGS are
# criterion's options, e.g. CRITERION_ARGS="--warm-up-time 1 --measurement-time 3".
bench-micro: ## criterion micro-benchmarks (decide, routing, pod cache): target/criterion/
	cargo bench -p podium-election --bench decide -- $(CRITERION_ARGS)
	cargo bench -p podium-operator --bench routing --bench pod_cache -- $(CRITERION_ARGS)

# Only the scale runs (BENCH_SCALES, default 10,000 groups in one namespace, then 1,000
# namespaces of 10: 50,000 pods each), every other part of the bench off, into target/bench-scale
# so that make bench's results stay; pods are created 64 at a time (BENCH_CREATE_CONCURRENCY).
# The operator measured is the static (musl) build the image ships, unless PODIUM_BIN names
# another: its allocator sets the RSS users see. The operator runs on every namespace, so they run on a cluster of their own (podium-scale,
# state in target/cluster-scale), brought up before and down after, pass or fail: no e2e test's
# groups meet it, and the shared cluster's etcd never holds the 50,000 pods.
bench-scale: BENCH_OUT ?= target/bench-scale
bench-scale: ## Scale runs only (BENCH_SCALES=10000,1000x10; about 30 minutes on 2 cores) on a cluster of their own: target/bench-scale/{results.json,report.md,scale.png}
	[ -n "$$PODIUM_BIN" ] || cargo build --release --locked --target $(MUSL) --bin podium
	PODIUM_CLUSTER=scale e2e/cluster/up.sh
	status=0; PODIUM_CLUSTER=scale BENCH_OUT=$(BENCH_OUT) BENCH_SCALES=$${BENCH_SCALES:-10000,1000x10} \
	  PODIUM_BIN=$${PODIUM_BIN:-$(CURDIR)/target/$(MUSL)/release/podium} \
	  PODIUM_E2E_LOG=$${PODIUM_E2E_LOG:-info} \
	  BENCH_TRIALS=0 BENCH_APP_TRIALS=0 BENCH_IDLE_SECONDS=0 BENCH_HANDOFFS=0 \
	  BENCH_LEASE_KILLS=0 BENCH_LEASE_RELEASES=0 BENCH_LEASE_TUNED_KILLS=0 \
	  BENCH_KIND_TRIALS=0 BENCH_NODE_LOSS_TRIALS=0 BENCH_KIND_LEASE_TRIALS=0 \
	  cargo bench --bench bench || status=$$?; \
	PODIUM_CLUSTER=scale e2e/cluster/down.sh; exit $$status
	[ -x target/bench/venv/bin/python ] || (python3 -m venv target/bench/venv && target/bench/venv/bin/pip install --quiet matplotlib)
	target/bench/venv/bin/python benches/plot.py $(BENCH_OUT)
