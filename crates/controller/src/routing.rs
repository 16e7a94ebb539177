//! Traffic: the rollout's key in the proxy's ConfigMap.
//!
//! The key is written by a JSON merge patch of that one key (`{"data": {key: document}}`), and
//! removed by patching it to null: rollouts sharing one ConfigMap never touch each other's keys,
//! nor anything written by anyone else. The ConfigMap is created when it does not exist.
//!
//! Server-side apply was the first choice, with one field manager per rollout (one manager for
//! all would drop every key but the last applied). At 10 000 rollouts, 100 to a ConfigMap, each
//! apply cost the API server about 0.5 s (it recomputes the field sets of all 100 managers) and
//! was the bottleneck; a merge patch of one key under one manager costs what a status write does.
//!
//! A write is work for the API server even when nothing changes. So a document this process
//! wrote is written again only when the proxies do not report it (`unconfirmed`), and otherwise
//! checked against the API server's cache every [`RECHECK_AFTER`] (which repairs a hand edit the
//! proxies would otherwise keep, and costs no write after a restart).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, GetParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use modelrollout_api::{FIELD_MANAGER, ModelRollout, Phase};
use serde_json::{Value, json};

use crate::{Error, Result};

/// How long a document this process wrote is trusted before it is compared with the ConfigMap.
pub const RECHECK_AFTER: Duration = Duration::from_secs(300);

/// The documents this process wrote or found in place: rollout uid → (hash of ConfigMap, key and
/// document, when).
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, (u64, Instant)>>);

impl Written {
    fn fresh(&self, uid: &str, hash: u64) -> bool {
        let written = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        written.get(uid).is_some_and(|(h, at)| *h == hash && at.elapsed() < RECHECK_AFTER)
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

/// Writes the rollout's routing document at `weight` into its ConfigMap, unless it is known to be
/// there already and the proxies have not contradicted it (`unconfirmed` false).
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
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let failed = |source| Error::Routing { config_map: format!("{namespace}/{name}"), source };
    if !unconfirmed {
        if written.fresh(&uid, hash) {
            return Ok(());
        }
        // A read from the API server's cache is much cheaper than a write.
        let current = match api.get_with(name, &GetParams::any()).await {
            Ok(config_map) => config_map.data.and_then(|mut data| data.remove(&key)),
            Err(kube::Error::Api(status)) if status.is_not_found() => None,
            Err(source) => return Err(failed(source)),
        };
        if current.as_deref() == Some(json.as_str()) {
            written.record(&uid, hash);
            return Ok(());
        }
    }
    let patch = json!({"data": {&key: &json}});
    match api.patch(name, &params(), &Patch::Merge(&patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            create(&api, name, &key, &json).await.map_err(failed)?;
        }
        Err(source) => return Err(failed(source)),
    }
    written.record(&uid, hash);
    Ok(())
}

/// Removes the rollout's key (the proxies then serve its alias from stable). A missing
/// ConfigMap is fine: there is nothing to remove.
pub async fn remove(client: &Client, rollout: &ModelRollout) -> Result<()> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = &rollout.spec.routing.config_map_ref.name;
    let key = modelrollout_api::routing::config_map_key(&rollout.name_any());
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({"data": {key: Value::Null}});
    match api.patch(name, &params(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Routing { config_map: format!("{namespace}/{name}"), source }),
    }
}

fn params() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() }
}

/// Creates the ConfigMap with the rollout's key; if another rollout created it meanwhile, adds
/// the key to theirs.
async fn create(api: &Api<ConfigMap>, name: &str, key: &str, json: &str) -> kube::Result<()> {
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {key: json},
    }))
    .map_err(kube::Error::SerdeError)?;
    let post =
        PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
    match api.create(&post, &config_map).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            api.patch(name, &params(), &Patch::Merge(&json!({"data": {key: json}}))).await?;
            Ok(())
        }
        Err(error) => Err(error),
    }
}
