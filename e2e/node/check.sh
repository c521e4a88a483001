#!/usr/bin/env bash
# Whether this machine can run real-node-0 (up.sh): it needs root and commands from the
# distribution's packages (`make deps` installs them). Prints nothing and exits 0 when all is
# there; else prints what is missing on one line ("root" and the Debian package names) and
# exits 1.
set -euo pipefail

missing=()
[ "$(id -u)" = 0 ] || missing+=(root)
# command, and the package that has it
need() {
  command -v "$1" >/dev/null 2>&1 && return
  case " ${missing[*]-} " in *" $2 "*) ;; *) missing+=("$2") ;; esac
}
need containerd containerd
need containerd-shim-runc-v2 containerd
need ctr containerd
need runc runc
need buildah buildah
need socat socat
need iptables iptables
need ip iproute2
need sysctl procps
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)

if [ ${#missing[@]} -gt 0 ]; then
  echo "${missing[*]}"
  exit 1
fi
