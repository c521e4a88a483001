#!/usr/bin/env bash
# Starts real-node-0, a node with a real kubelet, beside the kwok nodes of the local control
# plane (e2e/cluster/up.sh calls it): containerd and runc from the machine's packages, kubelet
# and kube-proxy built from the pinned Kubernetes module, a bridge pod network (podium0,
# 10.88.0.0/16) and a locally built pause image. The node is tainted
# podium.dev/real-node:NoSchedule, so only pods that ask for it (config/local, the samples'
# real-node overlay, the real-node tests) run there. Everything listens on loopback or on the
# bridge; state is in target/cluster/node. A no-op when the node is already up.
#   up.sh STATE_DIR BIN_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=$1 bin=$2
node=$state/node
kubeconfig=$state/kubeconfig
kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")
name=real-node-0
bridge=podium0 gateway=10.88.0.1 pod_cidr=10.88.0.0/16
sock=$node/containerd.sock

missing=$("$here/check.sh") || {
  echo "real node: needs $missing (make deps installs the packages, as root; PODIUM_REAL_NODE=0 leaves the node out)" >&2
  exit 1
}

# Unix socket paths are limited to 108 bytes; the kubelet's deepest one is under
# <root-dir>/plugins_registry/. A long checkout path moves the node's state under /run.
# target/cluster/node is then a link to it, so the other tools find the node's files there.
if [ ${#node} -gt 48 ]; then
  short=/run/podium-node-$(echo "$node" | sha256sum | cut -c1-8)
  mkdir -p "$short"
  [ -L "$node" ] || { rm -rf "$node"; ln -s "$short" "$node"; }
  node=$short
fi
sock=$node/containerd.sock

if ctr --address "$sock" version >/dev/null 2>&1 && "${kubectl[@]}" get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; then
  exit 0
fi
mkdir -p "$node"/{cni,cni-data,kubelet,containerd,logs,images,pod-logs,runc}

# The pod network: a bridge that the host routes to. Created here, not by the CNI plugin on the
# first pod, because the API server's relay and the kubelet listen on its address.
ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
ip addr show dev "$bridge" | grep -q "inet $gateway/" || ip addr add "$gateway/16" dev "$bridge"
ip link set "$bridge" up
# Pods reach Services through the host (ClusterIP DNAT, then routed back onto the bridge).
# The machine's own setting is kept, and restored by down.sh.
[ -f "$node/ip_forward.orig" ] || sysctl -n net.ipv4.ip_forward >"$node/ip_forward.orig"
[ -f "$node/route_localnet.orig" ] || sysctl -n net.ipv4.conf.all.route_localnet >"$node/route_localnet.orig"
sysctl -qw net.ipv4.ip_forward=1
cat >"$node/cni/10-podium.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "podium",
  "plugins": [{
    "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": { "type": "host-local", "dataDir": "$node/cni-data",
              "ranges": [[{ "subnet": "$pod_cidr", "rangeStart": "10.88.1.1", "gateway": "$gateway" }]],
              "routes": [{ "dst": "0.0.0.0/0" }] }
  }]
}
JSON

# containerd, its CRI plugin configured for this sandbox: no negative oom_score_adj (no
# CAP_SYS_RESOURCE here), cgroupfs, CNI from the package's plugin directory.
cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "podium.local/pause:dev"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "$node/runc"
TOML
if ! ctr --address "$sock" version >/dev/null 2>&1; then
  rm -f "$sock"
  setsid containerd --config "$node/containerd.toml" >"$node/logs/containerd.log" 2>&1 &
  echo $! >"$node/containerd.pid"
  for _ in $(seq 1 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr --address "$sock" version >/dev/null || { tail -20 "$node/logs/containerd.log" >&2; exit 1; }
fi
# The sandbox image, built from e2e/cluster/pause.
if ! ctr --address "$sock" -n k8s.io images ls -q | grep -qx podium.local/pause:dev; then
  (cd "$root/e2e/cluster" && CGO_ENABLED=0 go build -trimpath -o "$node/images/pause" ./pause)
  "$here/image.sh" podium.local/pause:dev "$node/images/pause" "$node/images/pause.tar" --user 65535:65535 >/dev/null
  ctr --address "$sock" -n k8s.io images import "$node/images/pause.tar" >/dev/null
fi

# Pods reach the API server through the kubernetes Service, whose endpoint is the advertised
# address (the bridge's, see e2e/cluster/kwokctl.yaml); the API server itself listens on
# loopback, so a relay on the bridge forwards to it.
port=$("${kubectl[@]}" config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's#.*:##')
if ! [ -f "$node/relay.pid" ] || ! kill -0 "$(cat "$node/relay.pid")" 2>/dev/null; then
  setsid socat "TCP-LISTEN:$port,bind=$gateway,fork,reuseaddr" "TCP:127.0.0.1:$port" >"$node/logs/relay.log" 2>&1 &
  echo $! >"$node/relay.pid"
fi

ca=$("${kubectl[@]}" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')
cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $gateway
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
# Machines like this one still mount cgroup v1; from Kubernetes 1.35 the kubelet refuses to
# start there unless told otherwise (the default became true).
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
resolvConf: ""
# Container logs under the node's state, not the machine's /var/log/pods.
podLogsDir: $node/pod-logs
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: "$ca" }
authorization: { mode: Webhook }
# The machine's disk is shared with the build: evict only when it is nearly full, and never
# collect the locally imported images (they cannot be pulled again).
evictionHard: { memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%" }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerWithTaints:
  - { key: podium.dev/real-node, effect: NoSchedule }
YAML
if ! [ -f "$node/kubelet.pid" ] || ! kill -0 "$(cat "$node/kubelet.pid")" 2>/dev/null; then
  setsid "$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --hostname-override "$name" --node-ip "$gateway" --root-dir "$node/kubelet" \
    --cert-dir "$node/kubelet/pki" --node-labels type=real >"$node/logs/kubelet.log" 2>&1 &
  echo $! >"$node/kubelet.pid"
fi

cat >"$node/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: "$kubeconfig" }
hostnameOverride: $name
mode: iptables
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $pod_cidr
# NodePorts on the bridge only: nothing listens on the machine's other interfaces, and
# kube-proxy leaves route_localnet alone.
nodePortAddresses: ["$gateway/32"]
# Pod -> Service -> pod on the same bridge comes back through the host (no br_netfilter).
iptables: { masqueradeAll: true }
# Leave the machine's conntrack settings alone (setting them needs privileges this sandbox lacks).
conntrack: { maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
YAML
if ! [ -f "$node/kube-proxy.pid" ] || ! kill -0 "$(cat "$node/kube-proxy.pid")" 2>/dev/null; then
  setsid "$bin/kube-proxy" --config "$node/kube-proxy.yaml" >"$node/logs/kube-proxy.log" 2>&1 &
  echo $! >"$node/kube-proxy.pid"
fi

# kubectl wait fails at once on a node that has not registered yet.
for _ in $(seq 1 600); do "${kubectl[@]}" get node "$name" >/dev/null 2>&1 && break; sleep 0.2; done
"${kubectl[@]}" wait --for=condition=Ready "node/$name" --timeout=120s >/dev/null || {
  tail -30 "$node/logs/kubelet.log" >&2
  exit 1
}
echo "real node up: $name"
