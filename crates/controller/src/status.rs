//! Writes a rollout's status through the status subresource by server-side apply, under the
//! field manager `modelrollout-controller`.

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use modelrollout_api::{FIELD_MANAGER, ModelRollout, ModelRolloutStatus};
use serde_json::json;

use crate::{Error, Result};

/// Applies `status` unless it equals what the object already has (an unchanged status must not
/// cause a write, or every look would trigger a watch event and another look).
pub async fn apply(
    client: &Client,
    rollout: &ModelRollout,
    status: &ModelRolloutStatus,
) -> Result<bool> {
    if rollout.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let patch = json!({
        "apiVersion": ModelRollout::api_version(&()),
        "kind": ModelRollout::kind(&()),
        "status": status,
    });
    let api: Api<ModelRollout> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&name, &params, &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Status { rollout: format!("{namespace}/{name}"), source })?;
    Ok(true)
}
