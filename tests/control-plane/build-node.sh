#!/usr/bin/env bash
# Builds the node beside the local control plane (kubelet, kube-controller-manager, kube-scheduler)
# from the pinned module in node/, into a cache folder of its own keyed by node/go.mod, node/go.sum
# and this script, and prints that folder. It is separate from build.sh so that adding the node did
# not invalidate the control plane's cache, and so a change here rebuilds only these three.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/node"

k8s_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
key=$(cat go.mod go.sum ../build-node.sh | sha256sum | cut -c1-16)
out="${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}/control-plane/node-$k8s_version-$key"
log() { printf '[node] %s\n' "$*" >&2; }

if [ -x "$out/kubelet" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/kube-scheduler" ]; then
  log "cached: $out (kubernetes $k8s_version)"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed; install Go 1.26 or newer"; exit 1; }
mkdir -p "$out.tmp"
# the same version stamping as build.sh, so `kubectl get nodes` shows the release, not v0.0.0
major=${k8s_version#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

for cmd in kubelet kube-controller-manager kube-scheduler; do
  start=$SECONDS
  log "building $cmd (kubelet: about 6 to 9 minutes cold on 2 cores)..."
  go build -trimpath -ldflags "$ldflags" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  log "built $cmd in $((SECONDS - start))s"
done
rm -rf "$out" && mv "$out.tmp" "$out"
log "ready: $out"
echo "$out"
