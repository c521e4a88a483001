#!/usr/bin/env bash
# Stops real-node-0 (e2e/node/up.sh): kube-proxy and its iptables rules, the kubelet, every
# container, containerd, the API server relay, and the pod network; removes its state.
#   down.sh STATE_DIR BIN_DIR
set -uo pipefail

state=$1 bin=$2
link=$state/node
[ -e "$link" ] || exit 0
# up.sh keeps the state under /run when the checkout's path is too long for unix sockets.
node=$(readlink -f "$link")
sock=$node/containerd.sock

stop() { # pidfile: TERM, then KILL after 5 s
  local f=$node/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$f"
}

stop kube-proxy
[ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1
stop kubelet
# The kubelet's and kube-proxy's remaining KUBE-* chains (canaries, the localnet firewall), and
# the jumps to them from the built-in chains — unless another kubelet or kube-proxy runs here.
others=$(pgrep -x kubelet; pgrep -x kube-proxy)
for cmd in iptables ip6tables; do
  [ -z "$others" ] || break
  command -v "$cmd" >/dev/null || continue
  for table in filter nat mangle; do
    "$cmd" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | sed 's/^-A /-D /' |
      while read -r rule; do eval "\"$cmd\" -t $table $rule" 2>/dev/null; done
    chains=$("$cmd" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}')
    for c in $chains; do "$cmd" -t "$table" -F "$c" 2>/dev/null; done
    for c in $chains; do "$cmd" -t "$table" -X "$c" 2>/dev/null; done
  done
done
# The containers outlive containerd (each has its own shim), so they are killed first.
if [ -S "$sock" ]; then
  for task in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1
  done
  sleep 0.5
fi
stop containerd
# Shims whose containerd is gone (matched by this node's socket address).
pkill -9 -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null
stop relay
# Mounts the kubelet and containerd left under the state directory, deepest first.
awk -v p="$node/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
# The pods' network namespaces (containerd names them cni-<uuid>), unless another containerd
# runs here and may own some.
if ! pgrep -x containerd >/dev/null; then
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns" 2>/dev/null; done
fi
# The kubelet's links to container logs (its directory is fixed: /var/log/containers).
find /var/log/containers -maxdepth 1 -type l -lname "$node/*" -delete 2>/dev/null
ip link delete podium0 2>/dev/null
# The machine's own forwarding settings, as up.sh found them.
[ -f "$node/ip_forward.orig" ] && sysctl -qw net.ipv4.ip_forward="$(cat "$node/ip_forward.orig")"
[ -f "$node/route_localnet.orig" ] && sysctl -qw net.ipv4.conf.all.route_localnet="$(cat "$node/route_localnet.orig")"
rm -rf "$node" "$link"
echo "real node down"
