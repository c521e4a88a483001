// The pause image's command (pause/). The control plane's pinned modules are one module per
// Kubernetes minor: v1.<minor>/go.mod (see build.sh and pin.sh).
module podium.dev/e2e/cluster

go 1.24.0
