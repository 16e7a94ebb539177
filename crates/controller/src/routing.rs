//! Traffic: the rollout's key in the proxy's ConfigMap, written by server-side apply.
//!
//! Each rollout applies its key under a field manager of its own
//! (`modelrollout-controller/<rollout>`), so rollouts sharing one ConfigMap never take each
//! other's keys away (one manager for all would drop every key but the last applied), and keys
//! or fields written by anyone else are never touched. Removing the key is an apply of nothing
//! by the same manager. The ConfigMap is created by the first apply when it does not exist.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use modelrollout_api::{FIELD_MANAGER, ModelRollout, Phase};
use serde_json::json;

use crate::{Error, Result};

/// Field manager of one rollout's key (at most 128 characters, as the API server requires).
pub fn field_manager(rollout: &str) -> String {
    let mut manager = format!("{FIELD_MANAGER}/{rollout}");
    manager.truncate(128);
    manager
}

/// Writes the rollout's routing document at `weight` into its ConfigMap.
pub async fn apply(
    client: &Client,
    rollout: &ModelRollout,
    weight: u8,
    phase: Phase,
) -> Result<()> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = &rollout.spec.routing.config_map_ref.name;
    let document = rollout.routing_document(u32::from(weight), phase)?;
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {document.config_map_key(): document.to_json()},
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(&field_manager(&rollout.name_any())).force();
    api.patch(name, &params, &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Routing { config_map: format!("{namespace}/{name}"), source })?;
    Ok(())
}

/// Removes the rollout's key (the proxies then serve its alias from stable). A missing
/// ConfigMap is fine: there is nothing to remove.
pub async fn remove(client: &Client, rollout: &ModelRollout) -> Result<()> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = &rollout.spec.routing.config_map_ref.name;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    if api
        .get_opt(name)
        .await
        .map_err(|source| Error::Routing { config_map: format!("{namespace}/{name}"), source })?
        .is_none()
    {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
    });
    let params = PatchParams::apply(&field_manager(&rollout.name_any())).force();
    api.patch(name, &params, &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Routing { config_map: format!("{namespace}/{name}"), source })?;
    Ok(())
}
