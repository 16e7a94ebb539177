//! Where routing documents come from, and how a change reaches the routing table.
//!
//! Both sources hand a complete snapshot (every key → bytes) to a [`Reloader`], which merges it
//! over the current table ([`TableUpdater`]) and swaps the result in atomically.
//!
//! - **Directory** (`--routing-dir`): every `*.json` file not starting with `.`; symlinks are
//!   followed, so a mounted ConfigMap (`key.json → ..data/key.json`, `..data →
//!   ..2026_11_27_…`), where the kubelet swaps the `..data` symlink atomically, works like a
//!   plain directory. The directory is watched (inotify via `notify`) and rescanned 20 ms after
//!   any event, plus every `--rescan-interval` in case an event was missed (or the directory
//!   itself was replaced). Write plain files atomically (write a temporary file, rename it over).
//! - **ConfigMap** (`--configmap NAMESPACE/NAME`): a Kubernetes watch on that one object
//!   (kube-runtime's watcher, field selector on the name), applied as events arrive: sub-second.
//!   A deleted ConfigMap is an empty snapshot, so its aliases retire to stable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use notify::Watcher;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::table::{RoutingTable, TableUpdater};

/// Applies snapshots to the proxy's table; the only writer of it. It holds the table handle
/// and the metrics, nothing else of the server.
#[derive(Debug)]
pub struct Reloader {
    table: Arc<ArcSwap<RoutingTable>>,
    metrics: Arc<Metrics>,
    updater: TableUpdater,
}

impl Reloader {
    /// A reloader publishing into `table`, counting in `metrics`.
    pub fn new(table: Arc<ArcSwap<RoutingTable>>, metrics: Arc<Metrics>) -> Self {
        Reloader { table, metrics, updater: TableUpdater::default() }
    }

    /// Merges `snapshot` over the current table and publishes the result if it changed (the
    /// refusals are in the published table, for `/admin/status`).
    pub fn apply(&mut self, snapshot: &BTreeMap<String, Bytes>) {
        let current = self.table.load();
        let (table, _newly_refused) = self.updater.apply(&current, snapshot, &self.metrics);
        if let Some(table) = table {
            self.table.store(Arc::new(table));
        }
    }
}

// === directory ===

/// Reads every routing document in `dir`: file name → content.
pub fn scan_directory(dir: &Path) -> std::io::Result<BTreeMap<String, Bytes>> {
    let mut snapshot = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(entry.path()) {
            Ok(content) => {
                snapshot.insert(name, Bytes::from(content));
            }
            // Gone between listing and reading (a symlink swap, a rename): the next scan sees it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if entry.path().is_dir() => {
                tracing::debug!(name, "skipping directory in routing dir: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(snapshot)
}

/// Loads `dir` once (an unreadable directory is a startup error) and returns the task that
/// keeps watching it until `cancel`.
pub fn watch_directory(
    dir: PathBuf,
    rescan: Duration,
    mut reloader: Reloader,
    cancel: CancellationToken,
) -> crate::Result<impl Future<Output = ()> + Send + 'static> {
    let dir_error = |detail: String| crate::Error::RoutingDir { path: dir.clone(), detail };
    let snapshot = scan_directory(&dir)
        .map_err(|e| dir_error(format!("cannot be read ({e}); create it or fix the path")))?;
    reloader.apply(&snapshot);

    let changed = Arc::new(tokio::sync::Notify::new());
    let notifier = Arc::clone(&changed);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            notifier.notify_one();
        }
    })
    .map_err(|e| dir_error(format!("cannot be watched ({e})")))?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| dir_error(format!("cannot be watched ({e})")))?;

    Ok(async move {
        // The watcher stops when dropped: keep it for the life of the task.
        let _watcher = watcher;
        // tokio's interval refuses zero; a rescan more often than 100 ms buys nothing.
        let mut ticker = tokio::time::interval(rescan.max(Duration::from_millis(100)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = changed.notified() => {
                    // Let a burst of events (a symlink swap is several) settle into one rescan.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = ticker.tick() => {}
            }
            match scan_directory(&dir) {
                Ok(snapshot) => {
                    last_error = None;
                    reloader.apply(&snapshot);
                }
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_deref() != Some(&message) {
                        tracing::warn!(
                            dir = %dir.display(),
                            "routing directory cannot be read ({message}); keeping the current table"
                        );
                        last_error = Some(message);
                    }
                }
            }
        }
    })
}

// === ConfigMap ===

/// The routing documents in a ConfigMap's `data`.
pub fn configmap_snapshot(configmap: Option<&ConfigMap>) -> BTreeMap<String, Bytes> {
    configmap
        .and_then(|cm| cm.data.as_ref())
        .map(|data| {
            data.iter()
                .filter(|(key, _)| key.ends_with(".json"))
                .map(|(key, value)| (key.clone(), Bytes::from(value.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the Kubernetes client (a configuration error is a startup error) and returns the
/// task that watches ConfigMap `namespace/name` until `cancel`.
pub async fn watch_configmap(
    namespace: String,
    name: String,
    kubeconfig: Option<PathBuf>,
    mut reloader: Reloader,
    cancel: CancellationToken,
) -> crate::Result<impl Future<Output = ()> + Send + 'static> {
    let kube_error =
        |source| crate::Error::Kubernetes { configmap: format!("{namespace}/{name}"), source };
    let config = match &kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| kube_error(kube::Error::InferKubeconfig(e)))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| kube_error(kube::Error::InferKubeconfig(e)))?
        }
        None => kube::Config::infer().await.map_err(|e| kube_error(kube::Error::InferConfig(e)))?,
    };
    let client = kube::Client::try_from(config).map_err(kube_error)?;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, &namespace);
    let selector = format!("metadata.name={name}");
    Ok(async move {
        let mut events = watcher::watcher(api, watcher::Config::default().fields(&selector))
            .default_backoff()
            .boxed();
        // Objects listed since the last Init, applied as one snapshot at InitDone.
        let mut listing: Option<Option<ConfigMap>> = None;
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                None => return,
                Some(Ok(Event::Init)) => listing = Some(None),
                Some(Ok(Event::InitApply(configmap))) => listing = Some(Some(configmap)),
                Some(Ok(Event::InitDone)) => {
                    let listed = listing.take().flatten();
                    reloader.apply(&configmap_snapshot(listed.as_ref()));
                }
                Some(Ok(Event::Apply(configmap))) => {
                    reloader.apply(&configmap_snapshot(Some(&configmap)))
                }
                Some(Ok(Event::Delete(_))) => {
                    tracing::warn!(configmap = %format!("{namespace}/{name}"), "routing ConfigMap deleted");
                    reloader.apply(&BTreeMap::new());
                }
                Some(Err(e)) => tracing::warn!(
                    configmap = %format!("{namespace}/{name}"),
                    "watching the routing ConfigMap failed ({e}); retrying with backoff \
                     (check RBAC: the proxy needs get, list and watch on configmaps)"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only visible *.json entries are read; a kubelet-style `..data` symlink layout works.
    #[test]
    fn scans_plain_and_mounted_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_11_27_10_00_00.000")).unwrap();
        std::fs::write(root.join("..2026_11_27_10_00_00.000/chat.json"), "{\"a\":1}").unwrap();
        std::os::unix::fs::symlink("..2026_11_27_10_00_00.000", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/chat.json", root.join("chat.json")).unwrap();
        std::fs::write(root.join("plain.json"), "{}").unwrap();
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        std::fs::write(root.join(".hidden.json"), "{}").unwrap();
        std::os::unix::fs::symlink("..data/gone.json", root.join("dangling.json")).unwrap();
        let snapshot = scan_directory(root).unwrap();
        let keys: Vec<&str> = snapshot.keys().map(String::as_str).collect();
        assert_eq!(keys, ["chat.json", "plain.json"]);
        assert_eq!(snapshot["chat.json"], Bytes::from_static(b"{\"a\":1}"));
    }

    /// A ConfigMap's *.json data keys form the snapshot; other keys and no ConfigMap give none.
    #[test]
    fn configmap_keys() {
        let configmap = ConfigMap {
            data: Some(
                [("chat.json".to_owned(), "{}".to_owned()), ("README".to_owned(), "x".to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        let snapshot = configmap_snapshot(Some(&configmap));
        assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["chat.json"]);
        assert!(configmap_snapshot(None).is_empty());
    }
}
