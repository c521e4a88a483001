#!/usr/bin/env bash
# Builds helm from the Go module pinned in go.mod (the `tool` directive) into a cache outside
# the repository, keyed by go.mod and go.sum; prints the binary's path. A binary already in the
# cache is reused. Needs only Go and the module proxy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
dir="${PODIUM_CACHE:-$HOME/.cache/podium}/helm-${key}"
helm="$dir/helm"

if [ ! -x "$helm" ]; then
  mkdir -p "$dir"
  echo "building helm" >&2
  export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
  cd "$here"
  # The version strings helm's own Makefile sets for a release. helm 4 reads the Kubernetes
  # version of its client-go (the default for .Capabilities and for lint's deprecation checks)
  # from the binary's build information, so it needs no flag of its own.
  helm_ver=$(go list -m -f '{{.Version}}' helm.sh/helm/v4)
  ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=${helm_ver}"
  ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
  # Two compile jobs at once keep peak memory well inside a small machine.
  go build -p "${PODIUM_BUILD_JOBS:-2}" -ldflags "$ldflags" -o "$helm.tmp.$$" helm.sh/helm/v4/cmd/helm
  mv "$helm.tmp.$$" "$helm"
fi

echo "$helm"
