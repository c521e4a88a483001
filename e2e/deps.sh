#!/usr/bin/env bash
# `make deps`: installs from the distribution's packages (Debian 12 names) what the tests need
# beyond Go, Rust and make: kill(1) (procps) for the e2e tests; for the real node (e2e/node): ip
# (iproute2), containerd, runc, the CNI plugins, iptables for kube-proxy, socat for the API
# server relay, and buildah to build images without an engine; musl-gcc for the static binary
# in podium's image; gcc and libc6-dev, which cargo links with. Run as root; a no-op when all
# are installed.
set -euo pipefail

pkgs=(gcc libc6-dev procps iproute2 containerd runc containernetworking-plugins iptables socat buildah musl-tools)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || { echo "install: ${missing[*]}" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
