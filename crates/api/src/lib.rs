//! The `ModelRollout` API: the custom resource, its phase and condition vocabulary, and the
//! routing document the controller writes and the proxy reads. Pure types and validation, no I/O.

pub mod duration;
pub mod rollout;
pub mod routing;
pub mod vocabulary;

pub use duration::{Duration, DurationError};
pub use routing::{
    ROUTING_DOCUMENT_VERSION, RoutingArm, RoutingDocument, RoutingDocumentError, Stickiness,
};
pub use vocabulary::{
    ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_RETRY, ConditionType, FIELD_MANAGER, Phase,
    Reason, UnknownWord, Verdict,
};

pub use rollout::{ModelRollout, ModelRolloutSpec, ModelRolloutStatus};

/// The `ModelRollout` CustomResourceDefinition as installed in a cluster.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    <ModelRollout as kube::CustomResourceExt>::crd()
}
