# syntax=docker/dockerfile:1
# modelrollout-controller, the operator the Helm chart (charts/modelrollout) runs. From the root:
#   docker build -f deploy/docker/controller.Dockerfile -t modelrollout-controller .
# Kept honest by tests/e2e/tests/dockerfiles.rs (binary, flags and ports exist).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p modelrollout-controller --bin modelrollout-controller \
 && cp target/release/modelrollout-controller /modelrollout-controller

# glibc, libgcc and CA certificates (Prometheus over TLS), user 65532, no shell
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /modelrollout-controller /usr/local/bin/modelrollout-controller
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/modelrollout-controller"]
CMD ["--metrics-address", "0.0.0.0:8080"]
