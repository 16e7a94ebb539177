//! The ModelRollout operator: walks a rollout's steps on Prometheus analysis, writes the split
//! into the proxy's ConfigMap, rolls back on its own and says why in status and Events.
//!
//! - [`decision`]: the pure decision core (spec, status, observations, now → next status);
//! - [`judge`]: one analysis against the limits;
//! - [`preflight`]: each arm's endpoint checked before any traffic moves;
//! - [`reconcile`]: gathers what the core asks for and carries out its decision;
//! - [`routing`], [`events`], [`status`]: the writes, each idempotent;
//! - [`leader`]: one active replica at a time through a Lease;
//! - [`metrics`], [`server`]: the controller's own `/metrics`, `/healthz`, `/readyz`;
//! - [`config`]: flags and their environment variables.

pub mod config;
pub mod decision;
pub mod events;
pub mod guards;
pub mod judge;
pub mod leader;
pub mod metrics;
pub mod preflight;
pub mod reconcile;
pub mod routing;
pub mod sequential;
pub mod server;
pub mod status;

/// Everything that can go wrong while reconciling or running the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the rollout failed.
    #[error("reading ModelRollout {rollout}: {source}")]
    Read {
        /// `<namespace>/<name>` of the rollout.
        rollout: String,
        /// The API server's answer.
        source: kube::Error,
    },

    /// Writing the routing document failed.
    #[error("writing the routing document into ConfigMap {config_map}: {source}")]
    Routing {
        /// `<namespace>/<name>` of the ConfigMap.
        config_map: String,
        /// The API server's answer, shared by every rollout whose key was in the same write.
        source: std::sync::Arc<kube::Error>,
    },

    /// Writing the status failed.
    #[error("writing the status of ModelRollout {rollout}: {source}")]
    Status {
        /// `<namespace>/<name>` of the rollout.
        rollout: String,
        /// The API server's answer.
        source: kube::Error,
    },

    /// Writing an Event failed.
    #[error("writing a {reason} Event: {source}")]
    Event {
        /// The Event's reason.
        reason: &'static str,
        /// The API server's answer.
        source: kube::Error,
    },

    /// The rollout cannot be turned into a routing document.
    #[error(transparent)]
    Api(#[from] modelrollout_api::Error),

    /// The finalizer could not be added or removed.
    #[error("finalizer of ModelRollout {rollout}: {detail}")]
    Finalizer {
        /// `<namespace>/<name>` of the rollout.
        rollout: String,
        /// What failed.
        detail: String,
    },

    /// The decision core kept asking for observations (a bug: it asks for each at most once).
    #[error("the decision core asked for {need} twice for ModelRollout {rollout}")]
    Loop {
        /// `<namespace>/<name>` of the rollout.
        rollout: String,
        /// What it asked for.
        need: &'static str,
    },

    /// The Lease could not be read or written.
    #[error("leader election Lease {lease}: {source}")]
    Lease {
        /// `<namespace>/<name>` of the Lease.
        lease: String,
        /// The API server's answer.
        source: kube::Error,
    },
}

impl Error {
    /// A short label for counting failures by kind in metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Routing { .. } => "routing",
            Error::Status { .. } => "status",
            Error::Event { .. } => "event",
            Error::Api(_) => "api",
            Error::Finalizer { .. } => "finalizer",
            Error::Loop { .. } => "loop",
            Error::Lease { .. } => "lease",
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// FNV-1a over NUL-separated parts: short, stable names and hashes (not for security).
pub(crate) fn fnv64<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}
