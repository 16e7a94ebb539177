#!/usr/bin/env bash
# Builds kubectl-modelrollout for this machine (linux/amd64), packs it as krew expects, and
# writes dist/modelrollout.yaml: the krew manifest with the version and the archive's SHA256.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
version="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="kubectl-modelrollout"))')"
cargo build --release -p kubectl-modelrollout
mkdir -p dist/krew
cp target/release/kubectl-modelrollout dist/krew/
if [ -f LICENSE ]; then cp LICENSE dist/krew/; else echo "Apache-2.0" > dist/krew/LICENSE; fi
archive="dist/kubectl-modelrollout-linux-amd64.tar.gz"
tar -C dist/krew -czf "$archive" kubectl-modelrollout LICENSE
sha="$(sha256sum "$archive" | cut -d' ' -f1)"
sed -e "s/\${VERSION}/$version/g" -e "s/\${SHA256_LINUX_AMD64}/$sha/g" deploy/krew/modelrollout.yaml > dist/modelrollout.yaml
echo "wrote $archive and dist/modelrollout.yaml (v$version, sha256 $sha)"
