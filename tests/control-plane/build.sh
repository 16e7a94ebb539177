#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kubectl, helm) from the pinned Go modules
# in this folder, into a cache keyed by the pins, and prints the folder that holds the binaries.
# A second run with the same pins only checks the cache, so it takes well under a second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

k8s_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
helm_version=$(awk '$1 == "helm.sh/helm/v3" && $2 ~ /^v/ {print $2; exit}' helm/go.mod)
key=$(cat go.mod go.sum helm/go.mod helm/go.sum build.sh | sha256sum | cut -c1-16)
out="${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}/control-plane/$k8s_version-$key"
log() { printf '[control-plane] %s\n' "$*" >&2; }

if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -x "$out/kubectl" ] && [ -x "$out/helm" ]; then
  log "cached: $out (kubernetes $k8s_version, helm $helm_version)"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed; install Go 1.26 or newer"; exit 1; }
mkdir -p "$out.tmp"
major=${k8s_version#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # build <what> <dir> <package> [ldflags]
  local start=$SECONDS
  log "building $1 (first build downloads modules and takes several minutes on 2 cores)..."
  (cd "$2" && go build -trimpath -ldflags "$4" -o "$out.tmp/$1" "$3")
  log "built $1 in $((SECONDS - start))s"
}
build etcd . go.etcd.io/etcd/server/v3 "-s -w"
build kube-apiserver . k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kubectl . k8s.io/kubernetes/cmd/kubectl "$ldflags"
build helm helm helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
rm -rf "$out" && mv "$out.tmp" "$out"
log "ready: $out"
echo "$out"
