//! `modelrollout-mockllm`: a fault-injectable OpenAI-compatible upstream. The proxy's component
//! tests start it in-process, and the demo and `make bench` run it as a binary.
//!
//! It serves `POST /v1/chat/completions` (streamed and not, honouring
//! `stream_options.include_usage`), `POST /v1/completions`, `POST /v1/responses`,
//! `POST /v1/embeddings` and `GET /v1/models`, plus `GET/PUT/PATCH /control/config` to change the
//! knobs at runtime, `GET/DELETE /control/requests` and `GET /healthz`.

mod config;
pub mod openai;
mod server;

pub use config::MockConfig;
pub use server::{DEFAULT_MODEL_NAME, MockServer, RecordedRequest, ServerOptions};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A knob is out of range.
    #[error("invalid mock configuration: {0}")]
    InvalidConfig(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
