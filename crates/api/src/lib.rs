//! The `ModelRollout` API: the custom resource, its phase and condition vocabulary, and the
//! routing document the controller writes and the proxy reads. Pure types and validation, no I/O.

pub mod routing;
pub mod vocabulary;

pub use routing::{
    ROUTING_DOCUMENT_VERSION, RoutingArm, RoutingDocument, RoutingDocumentError, Stickiness,
};
pub use vocabulary::Phase;
