//! The `ModelRollout` API: the custom resource, its phase and condition vocabulary, and the
//! routing document the controller writes and the proxy reads. Pure types and validation, no I/O.

pub mod buckets;
pub mod duration;
pub mod endpoint;
pub mod rollout;
pub mod routing;
pub mod validation;
pub mod vocabulary;

pub use duration::{Duration, DurationError, parse_duration};
pub use endpoint::Endpoint;
pub use rollout::{
    Analysis, AnalysisMethod, AnalysisPoint, AnalysisResult, ArmMeasurements, CustomMetric,
    ModelRollout, ModelRolloutSpec, ModelRolloutStatus, ModelTarget, OnAnalysisError, Pricing,
    Step, StepAction,
};
pub use routing::{
    ROUTING_DOCUMENT_VERSION, RoutingArm, RoutingDocument, RoutingDocumentError, Stickiness,
};
pub use validation::{InvalidSpec, QueryValues, SpecProblem, render_query};
pub use vocabulary::{
    ANNOTATION_ABORT, ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FULL, ANNOTATION_RETRY, ConditionType,
    FIELD_MANAGER, Phase, Reason, UnknownWord, Verdict,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec breaks one or more rules.
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),

    /// A routing document is malformed or breaks a rule.
    #[error(transparent)]
    RoutingDocument(#[from] RoutingDocumentError),

    /// A duration string is malformed.
    #[error(transparent)]
    Duration(#[from] DurationError),

    /// A custom metric query template cannot be rendered.
    #[error("custom metric query has an {problem}")]
    QueryTemplate {
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// An object lacks metadata the operation needs (objects read from the API always have it).
    #[error("ModelRollout {object} has no metadata.{field}: read it from the API server or set it")]
    MissingMetadata {
        /// The object's name, or `<unnamed>`.
        object: String,
        /// `name`, `namespace` or `generation`.
        field: &'static str,
    },
}

impl Error {
    /// A short label for counting failures by kind in metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::RoutingDocument(_) => "routing_document",
            Error::Duration(_) => "duration",
            Error::QueryTemplate { .. } => "query_template",
            Error::MissingMetadata { .. } => "missing_metadata",
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `ModelRollout` CustomResourceDefinition as installed in a cluster.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = <ModelRollout as kube::CustomResourceExt>::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            unwrap_description_lines(schema);
        }
    }
    crd
}

/// Joins the hard-wrapped lines of doc comments so `kubectl explain` can wrap them itself;
/// blank lines (paragraphs) stay.
fn unwrap_description_lines(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = description
            .split("\n\n")
            .map(|paragraph| paragraph.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        unwrap_description_lines(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => unwrap_description_lines(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(unwrap_description_lines);
        }
        None => {}
    }
}
