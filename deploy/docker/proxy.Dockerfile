# syntax=docker/dockerfile:1
# modelrollout-proxy, the routing proxy (sidecar or gateway). From the repository root:
#   docker build -f deploy/docker/proxy.Dockerfile -t modelrollout-proxy .
# Kept honest by tests/e2e/tests/dockerfiles.rs (binary, flags and ports exist).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p modelrollout-proxy --bin modelrollout-proxy \
 && cp target/release/modelrollout-proxy /modelrollout-proxy

# glibc, libgcc and CA certificates, user 65532, no shell
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /modelrollout-proxy /usr/local/bin/modelrollout-proxy
USER 65532:65532
# 8080: the OpenAI-compatible API; 9901: /healthz, /readyz, /metrics, /admin/status
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/modelrollout-proxy"]
# As a gateway; a sidecar keeps --listen on 127.0.0.1 and adds --routing-dir or --configmap.
CMD ["--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9901", "--routing-dir", "/etc/modelrollout/routing"]
