#!/usr/bin/env python3
"""Turns one Linux binary into an OCI image tarball that `ctr images import` (and podman, skopeo)
accept, without a registry or a container engine.

The image is one layer, FROM scratch: the binary, the shared libraries `ldd` lists and the loader
(this machine builds only for the gnu target), CA certificates, a non-root user in /etc/passwd,
and /tmp. The output is reproducible: the same inputs give the same digests.

usage: imagebuild.py --binary PATH --name REF --out FILE.tar [--user UID] [--port N]...
"""
import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def shared_libraries(binary):
    """Paths ldd lists for `binary` (libraries and the loader); none for a static one."""
    run = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if run.returncode != 0:
        if "not a dynamic executable" in run.stdout + run.stderr:
            return []
        sys.exit(f"imagebuild: ldd {binary} failed: {run.stderr.strip()}")
    paths = []
    for line in run.stdout.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            paths.append(match.group(1))
        elif "=> not found" in line:
            sys.exit(f"imagebuild: {binary} needs {line.split()[0]}, which ldd cannot find")
    return sorted(set(paths))


class Layer:
    """A tar layer with root-owned entries, parents created first, all times zero."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, path, kind, mode, size=0):
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def directory(self, path, mode=0o755):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent and parent not in self.dirs:
                self.dirs.add(parent)
                self.tar.addfile(self._info(parent, tarfile.DIRTYPE, mode if parent == path else 0o755))

    def file(self, path, data, mode):
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        self.tar.addfile(self._info(path, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def bytes(self):
        self.tar.close()
        return self.buffer.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest)
    info.size, info.mtime = len(data), 0
    out.addfile(info, io.BytesIO(data))
    return {"digest": "sha256:" + digest, "size": len(data)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the program, e.g. target/release/modelrollout-proxy")
    parser.add_argument("--name", required=True, help="image reference, e.g. modelrollout.local/modelrollout-proxy:dev")
    parser.add_argument("--out", required=True, help="the OCI image tarball to write")
    parser.add_argument("--user", default="65532", help="numeric uid (and gid) the image runs as")
    parser.add_argument("--port", action="append", default=[], help="a TCP port to declare (metadata)")
    args = parser.parse_args()
    if not args.user.isdigit() or args.user == "0":
        sys.exit(f"imagebuild: --user {args.user}: use a numeric non-root uid, e.g. 65532")

    program = os.path.basename(args.binary)
    entrypoint = "/usr/local/bin/" + program
    layer = Layer()
    with open(args.binary, "rb") as f:
        layer.file(entrypoint, f.read(), 0o755)
    for library in shared_libraries(args.binary):
        with open(os.path.realpath(library), "rb") as f:
            layer.file(library, f.read(), 0o755)
    if os.path.exists(CA_BUNDLE):
        with open(CA_BUNDLE, "rb") as f:
            layer.file(CA_BUNDLE, f.read(), 0o644)
    uid = args.user
    layer.file("/etc/passwd", f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{uid}:{uid}:nonroot:/home/nonroot:/sbin/nologin\n".encode(), 0o644)
    layer.file("/etc/group", f"root:x:0:\nnonroot:x:{uid}:\n".encode(), 0o644)
    layer.directory("/home/nonroot")
    layer.directory("/tmp", 0o1777)
    layer_bytes = layer.bytes()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{uid}:{uid}",
            "Entrypoint": [entrypoint],
            "Env": ["PATH=/usr/local/bin", "SSL_CERT_FILE=" + CA_BUNDLE],
            "WorkingDir": "/",
            "ExposedPorts": {f"{p}/tcp": {} for p in args.port},
            "Labels": {"org.opencontainers.image.title": program},
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
        "history": [{"created_by": "tests/imagebuild/imagebuild.py"}],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    partial = args.out + ".partial"
    with tarfile.open(partial, "w") as out:
        layer_ref = blob(out, layer_bytes)
        config_ref = blob(out, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_ref},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_ref}],
        }
        manifest_ref = blob(out, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_ref,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": args.name, "org.opencontainers.image.ref.name": args.name},
            }],
        }
        for name, data in (("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index)):
            encoded = json.dumps(data, sort_keys=True).encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(encoded), 0
            out.addfile(info, io.BytesIO(encoded))
    os.replace(partial, args.out)
    print(f"{args.name} {manifest_ref['digest']} ({len(layer_bytes) // 1024} KiB layer) -> {args.out}")


if __name__ == "__main__":
    main()
