# syntax=docker/dockerfile:1
# modelrollout-mockllm, the fault-injectable OpenAI-compatible upstream for tests and demos.
#   docker build -f deploy/docker/mockllm.Dockerfile -t modelrollout-mockllm .
# Kept honest by tests/e2e/tests/dockerfiles.rs (binary, flags and ports exist).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p modelrollout-mockllm --bin modelrollout-mockllm \
 && cp target/release/modelrollout-mockllm /modelrollout-mockllm

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /modelrollout-mockllm /usr/local/bin/modelrollout-mockllm
USER 65532:65532
# the OpenAI-compatible API, /healthz and /control/*
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/modelrollout-mockllm"]
CMD ["--listen", "0.0.0.0:8081"]
