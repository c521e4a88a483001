#!/usr/bin/env bash
# Builds promtool from the Go module pinned in go.mod (the `tool` directive) into a cache
# outside the repository, keyed by go.mod and go.sum; prints the binary's path. A binary
# already in the cache is reused. Needs only Go and the module proxy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
dir="${PODIUM_CACHE:-$HOME/.cache/podium}/promtool-${key}"
promtool="$dir/promtool"

if [ ! -x "$promtool" ]; then
  mkdir -p "$dir"
  echo "building promtool" >&2
  export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
  cd "$here"
  # The version string Prometheus' own build sets, from the module's VERSION file.
  src=$(go list -m -f '{{.Dir}}' github.com/prometheus/prometheus)
  ldflags="-s -w -X github.com/prometheus/common/version.Version=$(cat "$src/VERSION")"
  # Two compile jobs at once keep peak memory well inside a small machine.
  go build -p "${PODIUM_BUILD_JOBS:-2}" -ldflags "$ldflags" -o "$promtool.tmp.$$" \
    github.com/prometheus/prometheus/cmd/promtool
  mv "$promtool.tmp.$$" "$promtool"
fi

echo "$promtool"
