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
//!
//! Writes into one ConfigMap are grouped ([`batch`]): keys that arrive while a write to it is in
//! flight go out together in the next one, and each caller returns once its key is written. At
//! 100 rollouts to a ConfigMap, each write rewrites up to 100 documents in etcd and wakes every
//! proxy watching it: one write per batch instead of one per rollout.

pub mod batch;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, GetParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use modelrollout_api::{FIELD_MANAGER, ModelRollout, Phase};
use serde_json::json;
use tokio::sync::oneshot;

use self::batch::{Changes, Joined, Queue};
use crate::{Error, Result};

/// How long a document this process wrote is trusted before it is compared with the ConfigMap.
pub const RECHECK_AFTER: Duration = Duration::from_secs(300);

/// The documents this process wrote or found in place: rollout uid → (hash of ConfigMap, key and
/// document, when).
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, (u64, Instant)>>);

impl Written {
    fn fresh(&self, uid: &str, hash: u64) -> bool {
        let written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        written.get(uid).is_some_and(|(h, at)| *h == hash && at.elapsed() < RECHECK_AFTER)
    }

    fn record(&self, uid: &str, hash: u64) {
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        written.insert(uid.to_owned(), (hash, Instant::now()));
    }

    /// Forgets a deleted rollout.
    pub fn forget(&self, rollout: &ModelRollout) {
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        written.remove(rollout.uid().as_deref().unwrap_or_default());
    }
}

/// Writes the rollout's routing document at `weight` into its ConfigMap, unless it is known to be
/// there already and the proxies have not contradicted it (`unconfirmed` false).
pub async fn apply<S: Store>(
    config_maps: &GroupCommit<S>,
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
    let failed = |source| Error::Routing { config_map: format!("{namespace}/{name}"), source };
    // A rollout without a status has never had its document written (the status comes first):
    // nothing to find, so no read.
    if !unconfirmed && rollout.status.is_some() {
        if written.fresh(&uid, hash) {
            return Ok(());
        }
        // A read from the API server's cache is much cheaper than a write.
        let current = config_maps
            .store
            .read(&namespace, name, &key)
            .await
            .map_err(|e| failed(Arc::new(e)))?;
        if current.as_deref() == Some(json.as_str()) {
            written.record(&uid, hash);
            return Ok(());
        }
    }
    config_maps.write(&namespace, name, key, Some(json)).await.map_err(failed)?;
    written.record(&uid, hash);
    Ok(())
}

/// Removes the rollout's key (the proxies then serve its alias from stable). A missing
/// ConfigMap is fine: there is nothing to remove.
pub async fn remove<S: Store>(config_maps: &GroupCommit<S>, rollout: &ModelRollout) -> Result<()> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = &rollout.spec.routing.config_map_ref.name;
    let key = modelrollout_api::routing::config_map_key(&rollout.name_any());
    config_maps
        .write(&namespace, name, key, None)
        .await
        .map_err(|source| Error::Routing { config_map: format!("{namespace}/{name}"), source })
}

/// The outcome of one ConfigMap write, shared by every caller whose key it carried.
pub type Outcome = std::result::Result<(), Arc<kube::Error>>;

/// Where the routing keys live: the API server, or a fake in tests.
pub trait Store: Send + Sync + 'static {
    /// The value of `key` in ConfigMap `namespace/name` (`None` if the key or the ConfigMap is
    /// absent), from the API server's cache.
    fn read(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> impl Future<Output = kube::Result<Option<String>>> + Send;

    /// Sets and removes `changes` in ConfigMap `namespace/name` in one write, touching no other
    /// key; creates the ConfigMap when it is absent and there is something to set.
    fn write(
        &self,
        namespace: &str,
        name: &str,
        changes: &Changes,
    ) -> impl Future<Output = kube::Result<()>> + Send;
}

/// The ConfigMaps on the API server, written by JSON merge patches under [`FIELD_MANAGER`].
#[derive(Clone)]
pub struct ApiStore(pub Client);

impl std::fmt::Debug for ApiStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiStore")
    }
}

impl Store for ApiStore {
    async fn read(&self, namespace: &str, name: &str, key: &str) -> kube::Result<Option<String>> {
        let api: Api<ConfigMap> = Api::namespaced(self.0.clone(), namespace);
        match api.get_with(name, &GetParams::any()).await {
            Ok(config_map) => Ok(config_map.data.and_then(|mut data| data.remove(key))),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn write(&self, namespace: &str, name: &str, changes: &Changes) -> kube::Result<()> {
        let api: Api<ConfigMap> = Api::namespaced(self.0.clone(), namespace);
        // A null value removes its key; keys not named are left alone.
        let patch = json!({"data": changes});
        match api.patch(name, &params(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                create(&api, name, changes).await
            }
            Err(error) => Err(error),
        }
    }
}

fn params() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() }
}

/// Creates the ConfigMap with the keys to set; if another writer created it meanwhile, patches
/// theirs. Only removals: nothing to do, a ConfigMap that does not exist holds no key.
async fn create(api: &Api<ConfigMap>, name: &str, changes: &Changes) -> kube::Result<()> {
    let data: BTreeMap<&String, &String> =
        changes.iter().filter_map(|(key, value)| Some((key, value.as_ref()?))).collect();
    if data.is_empty() {
        return Ok(());
    }
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": data,
    }))
    .map_err(kube::Error::SerdeError)?;
    let post =
        PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
    match api.create(&post, &config_map).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            api.patch(name, &params(), &Patch::Merge(&json!({"data": changes}))).await?;
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// A ConfigMap by namespace and name.
type Target = (String, String);

/// Who waits for a write: told its outcome.
type Waiter = oneshot::Sender<Outcome>;

/// The ConfigMap writes of this process, grouped per ConfigMap ([`batch`]).
pub struct GroupCommit<S = ApiStore> {
    store: Arc<S>,
    queue: Arc<Mutex<Queue<Target, Waiter>>>,
}

impl<S> std::fmt::Debug for GroupCommit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<S: Store> GroupCommit<S> {
    /// Group commit into `store`.
    pub fn new(store: S) -> Self {
        GroupCommit { store: Arc::new(store), queue: Arc::default() }
    }

    /// Sets `key` to `value` (removes it if `None`) in ConfigMap `namespace/name`, in one write
    /// with the other keys queued for it; returns once that write is done.
    pub async fn write(
        &self,
        namespace: &str,
        name: &str,
        key: String,
        value: Option<String>,
    ) -> Outcome {
        let target = (namespace.to_owned(), name.to_owned());
        let (waiter, outcome) = oneshot::channel();
        let joined = lock(&self.queue).join(&target, key, value, waiter);
        if joined == Joined::StartWriter {
            // A task of its own: the write finishes, and tells everyone in it, even if the
            // reconcile that started it is dropped.
            tokio::spawn(write_batches(self.store.clone(), self.queue.clone(), target));
        }
        outcome.await.unwrap_or_else(|_| {
            let stopped = std::io::Error::other(format!(
                "the writer of ConfigMap {namespace}/{name} stopped before writing: see the log"
            ));
            Err(Arc::new(kube::Error::Service(Box::new(stopped))))
        })
    }
}

/// Writes the batches of `target` until none is left.
async fn write_batches<S: Store>(
    store: Arc<S>,
    queue: Arc<Mutex<Queue<Target, Waiter>>>,
    target: Target,
) {
    let mut guard = Abandon { queue: &queue, target: &target, armed: true };
    loop {
        let Some(batch) = lock(guard.queue).next(guard.target) else {
            guard.armed = false;
            return;
        };
        let outcome = store.write(&target.0, &target.1, &batch.changes).await.map_err(Arc::new);
        for waiter in batch.waiters {
            // A waiter gone (its reconcile was dropped) needs no answer.
            drop(waiter.send(outcome.clone()));
        }
    }
}

/// If a writer stops early (its task panicked or was dropped), its ConfigMap must not stay
/// marked as being written, or no key would go into it again: the pending callers are told
/// (their channel closes) and the next caller starts a new writer.
struct Abandon<'a> {
    queue: &'a Mutex<Queue<Target, Waiter>>,
    target: &'a Target,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(self.queue).abandon(self.target);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::Semaphore;

    /// Records each write; the first waits for `gate`, and each fails if `fail` is set.
    struct FakeStore {
        writes: Mutex<Vec<Changes>>,
        gate: Semaphore,
        fail: AtomicBool,
    }

    impl FakeStore {
        fn new() -> Arc<Self> {
            Arc::new(FakeStore {
                writes: Mutex::default(),
                gate: Semaphore::new(0),
                fail: AtomicBool::new(false),
            })
        }
    }

    impl Store for Arc<FakeStore> {
        async fn read(&self, _: &str, _: &str, _: &str) -> kube::Result<Option<String>> {
            Ok(None)
        }

        async fn write(&self, _: &str, _: &str, changes: &Changes) -> kube::Result<()> {
            let first = {
                let mut writes = lock(&self.writes);
                writes.push(changes.clone());
                writes.len() == 1
            };
            if first {
                drop(self.gate.acquire().await);
            }
            if self.fail.load(Ordering::SeqCst) {
                let refused = std::io::Error::other("refused");
                return Err(kube::Error::Service(Box::new(refused)));
            }
            Ok(())
        }
    }

    fn changes(keys: &[&str]) -> Vec<Changes> {
        vec![keys.iter().map(|k| ((*k).to_owned(), Some(format!("doc of {k}")))).collect()]
    }

    /// Starts a write of `key` into cm and lets it run until it waits.
    async fn start(
        commits: &Arc<GroupCommit<Arc<FakeStore>>>,
        key: &'static str,
    ) -> tokio::task::JoinHandle<Outcome> {
        let commits = commits.clone();
        let task = tokio::spawn(async move {
            commits.write("ns", "cm", key.to_owned(), Some(format!("doc of {key}"))).await
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        task
    }

    /// Keys that arrive during a write go out together in one next write, and every caller
    /// returns only after the write that carried its key.
    #[tokio::test(flavor = "current_thread")]
    async fn keys_queued_behind_a_write_share_the_next() {
        let store = FakeStore::new();
        let commits = Arc::new(GroupCommit::new(store.clone()));
        let first = start(&commits, "a").await;
        let second = start(&commits, "b").await;
        let third = start(&commits, "c").await;
        assert_eq!(*lock(&store.writes), changes(&["a"]), "b and c wait for a's write");
        assert!(!second.is_finished() && !third.is_finished());
        store.gate.add_permits(1);
        for task in [first, second, third] {
            assert!(task.await.is_ok_and(|outcome| outcome.is_ok()));
        }
        let expected = [changes(&["a"]), changes(&["b", "c"])].concat();
        assert_eq!(*lock(&store.writes), expected);
    }

    /// A failed write fails every caller whose key it carried; the next write starts afresh.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_write_fails_all_its_callers() {
        let store = FakeStore::new();
        store.fail.store(true, Ordering::SeqCst);
        let commits = Arc::new(GroupCommit::new(store.clone()));
        let first = start(&commits, "a").await;
        let second = start(&commits, "b").await;
        let third = start(&commits, "c").await;
        store.gate.add_permits(1);
        for task in [first, second, third] {
            assert!(task.await.is_ok_and(|outcome| outcome.is_err()));
        }
        store.fail.store(false, Ordering::SeqCst);
        let again = start(&commits, "a").await;
        assert!(again.await.is_ok_and(|outcome| outcome.is_ok()));
        assert_eq!(lock(&store.writes).len(), 3, "a, then b and c, then a again");
    }
}
