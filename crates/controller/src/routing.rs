//! Traffic: the rollout's key in the proxy's ConfigMap, written by server-side apply.
//!
//! Each rollout applies its key under a field manager of its own
//! (`modelrollout-controller/<rollout>`), so rollouts sharing one ConfigMap never take each
//! other's keys away (one manager for all would drop every key but the last applied), and keys
//! or fields written by anyone else are never touched. Removing the key is an apply of nothing
//! by the same manager. The ConfigMap is created by the first apply when it does not exist.
//!
//! An apply is a write the API server must process even when nothing changes; at 10 000
//! rollouts those writes were the bottleneck. So a document this process already wrote is
//! written again only when the proxies do not report it, or after [`REWRITE_AFTER`] (which
//! repairs a hand edit the proxies would otherwise keep).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long an unchanged document written by this process is trusted before it is written again.
pub const REWRITE_AFTER: Duration = Duration::from_secs(300);

/// The documents this process wrote: rollout uid → (hash of ConfigMap, key and document, when).
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, (u64, Instant)>>);

impl Written {
    fn fresh(&self, uid: &str, hash: u64) -> bool {
        let written = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        written.get(uid).is_some_and(|(h, at)| *h == hash && at.elapsed() < REWRITE_AFTER)
    }

    fn record(&self, uid: &str, hash: u64) {
        let mut written = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        written.insert(uid.to_owned(), (hash, Instant::now()));
    }

    /// Forgets a deleted rollout.
    pub fn forget(&self, rollout: &ModelRollout) {
        let mut written = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        written.remove(rollout.uid().as_deref().unwrap_or_default());
    }
}

/// Writes the rollout's routing document at `weight` into its ConfigMap, unless this process
/// wrote the same document recently and `unconfirmed` (proxies not reporting it) is false.
pub async fn apply(
    client: &Client,
    rollout: &ModelRollout,
    weight: u8,
    phase: Phase,
    written: &Written,
    unconfirmed: bool,
) -> Result<()> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = &rollout.spec.routing.config_map_ref.name;
    let document = rollout.routing_document(u32::from(weight), phase)?;
    let key = document.config_map_key();
    let json = document.to_json();
    let uid = rollout.uid().unwrap_or_default();
    let hash = crate::fnv64([namespace.as_str(), name.as_str(), key.as_str(), json.as_str()]);
    if !unconfirmed && written.fresh(&uid, hash) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: json},
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(&field_manager(&rollout.name_any())).force();
    api.patch(name, &params, &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Routing { config_map: format!("{namespace}/{name}"), source })?;
    written.record(&uid, hash);
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
