//! Component tests of modelrollout-proxy over loopback: the proxy (in-process, or the real
//! binary for lifecycle tests) in front of in-process mockllm upstreams.

mod admin;
mod clients;
mod configmap;
mod forwarding;
mod guards;
mod lifecycle;
mod openai_python;
mod reload;
mod streaming;
mod support;
mod tls;
