#!/usr/bin/env bash
# Renders charts/podium with its default values (release podium, namespace podium-system) into
# the plain manifests under config/manager, config/rbac and config/admission, one file per
# template, and its monitoring objects (off by default) into config/monitoring. The chart is
# the source; the kustomization files in config/ are written by hand. The alerts and the
# dashboard are the other way round: config/monitoring's plain files are the source, copied
# into the chart.
#
#   charts/render.sh          regenerate the files, and copy crds/ into the chart (make manifests)
#   charts/render.sh --check  render into a temporary directory and fail, with a diff, when
#                             config/ differs (make check-manifests)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

helm=$("$root/charts/tools/build.sh")

# config/<file> <- templates/<basename of file>
files=(
  manager/namespace.yaml manager/deployment.yaml manager/service.yaml manager/pdb.yaml
  rbac/service_account.yaml rbac/role.yaml rbac/role_binding.yaml
  admission/admission_policy.yaml
)

out="$root/config"
if $check; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi

# Blank (or all-space) lines at the end of a document, before a `---` or at the end, are dropped.
drop_document_end_blanks() {
  awk '/^[[:space:]]*$/ {held = held $0 "\n"; next} /^---$/ {held = ""} {printf "%s", held; held = ""; print}'
}

for f in "${files[@]}"; do
  t="templates/$(basename "$f")"
  mkdir -p "$(dirname "$out/$f")"
  {
    echo "# Generated from charts/podium ($t, default values) by \`make manifests\`."
    echo "# Do not edit by hand: change the chart and run \`make manifests\`."
    # helm opens the output with a document separator and a "# Source:" line per document;
    # helm 4 ends each document with blank lines, which are dropped (a blank line inside stays).
    "$helm" template podium "$root/charts/podium" --namespace podium-system --show-only "$t" |
      sed -e '1{/^---$/d;}' -e '/^# Source: /d' |
      drop_document_end_blanks
  } >"$out/$f.tmp"
  mv "$out/$f.tmp" "$out/$f"
done

# config/monitoring/<file> <- templates/<basename of file>, with the value that enables it.
monitoring=(
  "monitoring/servicemonitor.yaml monitoring.serviceMonitor.enabled=true"
  "monitoring/podmonitor.yaml monitoring.podMonitor.enabled=true"
  "monitoring/prometheusrule.yaml monitoring.prometheusRule.enabled=true"
  "monitoring/dashboard.yaml monitoring.dashboard.enabled=true"
)
# The chart's alerts and dashboard are copies of config/monitoring's plain files.
monitoring_files=(podium-alerts.rules.yaml podium-dashboard.json)
if ! $check; then
  for f in "${monitoring_files[@]}"; do
    cp "$root/config/monitoring/$f" "$root/charts/podium/files/$f"
  done
fi
for m in "${monitoring[@]}"; do
  read -r f set <<<"$m"
  t="templates/$(basename "$f")"
  mkdir -p "$(dirname "$out/$f")"
  {
    echo "# Generated from charts/podium ($t, $set) by \`make manifests\`."
    echo "# Do not edit by hand: change the chart and run \`make manifests\`."
    "$helm" template podium "$root/charts/podium" --namespace podium-system --set "$set" --show-only "$t" |
      sed -e '1{/^---$/d;}' -e '/^# Source: /d' | drop_document_end_blanks
  } >"$out/$f.tmp"
  mv "$out/$f.tmp" "$out/$f"
done

# The chart's CRD is a copy of crds/ (make crds writes both).
crd=charts/podium/crds/electiongroup.yaml
if ! $check; then
  cp "$root/crds/electiongroup.yaml" "$root/$crd"
fi

if $check; then
  status=0
  for f in "${files[@]}"; do
    diff -u --label "config/$f" --label "config/$f (rendered from charts/podium)" \
      "$root/config/$f" "$out/$f" || status=1
  done
  diff -u "$root/$crd" "$root/crds/electiongroup.yaml" || status=1
  for m in "${monitoring[@]}"; do
    read -r f _ <<<"$m"
    diff -u --label "config/$f" --label "config/$f (rendered from charts/podium)" \
      "$root/config/$f" "$out/$f" || status=1
  done
  for f in "${monitoring_files[@]}"; do
    diff -u "$root/charts/podium/files/$f" "$root/config/monitoring/$f" || status=1
  done
  if [ $status -ne 0 ]; then
    echo "config/ (or charts/podium/crds, charts/podium/files) is stale: run make manifests" >&2
  fi
  exit $status
fi
