//! The cluster side: a client from the kubeconfig as kubectl would pick it, who the user is,
//! reading rollouts and their events, writing a request, and watching for changes.

use std::path::Path;

use futures::{Stream, StreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use modelrollout_api::ModelRollout;

use crate::request::Change;
use crate::view::EventLine;
use crate::{Error, Result};

/// Field manager of every write the plugin makes, so managed fields show who changed what.
pub const FIELD_MANAGER: &str = "kubectl-modelrollout";

/// A connection to the cluster, with the namespace commands default to.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The kubeconfig's user name for the context, used when the API cannot say who we are.
    kubeconfig_user: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`,
    /// else the in-cluster service account; `--context` picks the context.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Self> {
        let options =
            KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
        let file = match kubeconfig {
            Some(path) => Some(Kubeconfig::read_from(path).map_err(|err| {
                Error::Config(format!("reading --kubeconfig {}: {err}", path.display()))
            })?),
            None => Kubeconfig::read().ok(),
        };
        let (config, kubeconfig_user) = match file {
            Some(file) => {
                let user = context_user(&file, context);
                let config = Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|err| Error::Config(format!("kubeconfig: {err}")))?;
                (config, user)
            }
            None => {
                let config = Config::incluster().map_err(|err| {
                    Error::Config(format!(
                        "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not in a pod ({err}): pass --kubeconfig FILE"
                    ))
                })?;
                (config, None)
            }
        };
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|err| Error::Config(err.to_string()))?;
        let namespace = namespace.map_or(default_namespace, str::to_owned);
        Ok(Cluster { client, namespace, kubeconfig_user })
    }

    /// The rollouts API of a namespace.
    pub fn rollouts(&self, namespace: &str) -> Api<ModelRollout> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Reads one rollout, with a clear error when it is missing.
    pub async fn get(&self, name: &str) -> Result<ModelRollout> {
        match self.rollouts(&self.namespace).get_opt(name).await {
            Ok(Some(rollout)) => Ok(rollout),
            Ok(None) => {
                Err(Error::NotFound { name: name.to_owned(), namespace: self.namespace.clone() })
            }
            Err(err) => Err(Error::api(format!("reading modelrollout {name}"), err)),
        }
    }

    /// Every rollout in the namespace, or in all of them.
    pub async fn list(&self, all_namespaces: bool) -> Result<Vec<ModelRollout>> {
        let api = if all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.rollouts(&self.namespace)
        };
        let mut list = api
            .list(&ListParams::default())
            .await
            .map_err(|err| Error::api("listing modelrollouts".into(), err))?
            .items;
        list.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        Ok(list)
    }

    /// Who the API server says we are (SelfSubjectReview), else the kubeconfig's user name.
    pub async fn user(&self) -> String {
        let reviews: Api<SelfSubjectReview> = Api::all(self.client.clone());
        let reviewed = reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await;
        reviewed
            .ok()
            .and_then(|r| r.status?.user_info?.username)
            .filter(|u| !u.is_empty())
            .or_else(|| self.kubeconfig_user.clone())
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// Writes a request with a merge patch.
    pub async fn apply(&self, name: &str, change: &Change) -> Result<ModelRollout> {
        let params =
            PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        self.rollouts(&self.namespace)
            .patch(name, &params, &Patch::Merge(change.merge_patch()))
            .await
            .map_err(|err| Error::api(format!("updating modelrollout {name}"), err))
    }

    fn events_api(&self) -> Api<Event> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn events_selector(name: &str) -> String {
        format!("involvedObject.kind=ModelRollout,involvedObject.name={name}")
    }

    /// The events about a rollout.
    pub async fn events(&self, name: &str) -> Result<Vec<Event>> {
        let params = ListParams::default().fields(&Self::events_selector(name));
        self.events_api()
            .list(&params)
            .await
            .map(|l| l.items)
            .map_err(|err| Error::api(format!("listing events of modelrollout {name}"), err))
    }

    /// Changes to one rollout, as watcher events.
    pub fn watch_rollout(
        &self,
        name: &str,
    ) -> impl Stream<Item = watcher::Result<watcher::Event<ModelRollout>>> + Send + use<> {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        watcher(self.rollouts(&self.namespace), config).default_backoff().boxed()
    }

    /// Changes to the events about one rollout.
    pub fn watch_events(
        &self,
        name: &str,
    ) -> impl Stream<Item = watcher::Result<watcher::Event<Event>>> + Send + use<> {
        let config = watcher::Config::default().fields(&Self::events_selector(name));
        watcher(self.events_api(), config).default_backoff().boxed()
    }
}

/// The user name the kubeconfig names for `context` (or its current context).
fn context_user(file: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let wanted = context.map(str::to_owned).or_else(|| file.current_context.clone())?;
    let named = file.contexts.iter().find(|c| c.name == wanted)?;
    named.context.as_ref()?.user.clone()
}

/// Sorted lines of a set of events.
pub fn event_lines<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<EventLine> {
    let mut lines: Vec<EventLine> = events.into_iter().map(EventLine::from_event).collect();
    lines.sort_by_key(|e| e.time);
    lines
}
