#!/usr/bin/env bash
# Builds an OCI image of one static binary without a container engine (buildah, FROM scratch)
# and writes it as an OCI archive:
#   image.sh NAME:TAG BINARY ARCHIVE [--user UID:GID] [--port N] [-- CMD...]
# The image holds only /<basename of BINARY>, its entrypoint; CMD becomes the image's default
# arguments. The Dockerfile builds podium's image with the same contents.
set -euo pipefail

ref=$1 binary=$2 archive=$3
shift 3
user=65532:65532 port=""
while [ $# -gt 0 ]; do
  case $1 in
    --user) user=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "image.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
name=/$(basename "$binary")

# A store of the project's own (target/buildah), never the machine's: vfs works wherever
# the builder runs (no overlay mount needed), and nothing of a user's images is touched.
store=$(cd "$(dirname "$0")/../.." && pwd)/target/buildah
b=(buildah --root "$store/storage" --runroot "$store/run" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot
ctr=$("${b[@]}" from --quiet scratch)
trap '"${b[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
"${b[@]}" copy --quiet --chmod 0755 "$ctr" "$binary" "$name" >/dev/null
args=(--user "$user" --entrypoint "[\"$name\"]")
[ -n "$port" ] && args+=(--port "$port")
if [ $# -gt 0 ]; then
  cmd=$(printf '"%s",' "$@")
  args+=(--cmd "[${cmd%,}]")
fi
"${b[@]}" config "${args[@]}" "$ctr"
# The previous image of that name is replaced, not kept beside it.
"${b[@]}" rmi --force "$ref" >/dev/null 2>&1 || true
"${b[@]}" commit --quiet --rm "$ctr" "$ref" >/dev/null
trap - EXIT
mkdir -p "$(dirname "$archive")"
rm -f "$archive"
# The archive names the image as a kubelet asks for it: a name without a registry is Docker
# Hub's (podium:dev is docker.io/library/podium:dev).
full=docker.io/library/$ref
if [[ $ref == */* ]]; then
  case ${ref%%/*} in
    *.*|*:*|localhost) full=$ref ;;
    *) full=docker.io/$ref ;;
  esac
fi
"${b[@]}" push --quiet "$ref" "oci-archive:$archive:$full" >/dev/null
echo "$full -> $archive"
