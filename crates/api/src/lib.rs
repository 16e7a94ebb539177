//! The `ModelRollout` API: the custom resource, its phase and condition vocabulary, and the
//! routing document the controller writes and the proxy reads. Pure types and validation, no I/O.
