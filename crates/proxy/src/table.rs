//! The routing table: every routing document (one per ConfigMap key or file `<rollout>.json`)
//! merged into one map keyed by the `model` alias clients send.
//!
//! Tables are immutable; a reload builds a new one from the complete current set of documents
//! ([`TableUpdater::apply`]) and the server swaps it in atomically, so a reload never blocks or
//! disturbs a request in flight. Merge rules:
//! - a document that fails [`RoutingDocument::parse`], whose key is not `<rollout>.json`, or whose
//!   endpoints cannot be used is refused: the last good entry for that key stays, the
//!   `gray_release_config_reloads_total{result="failure"}` counter rises and one log line names
//!   the key and why (once per distinct bad content, not on every rescan);
//! - an alias belongs to the key that already serves it; another key claiming it is refused the
//!   same way (between two new claims, the key that sorts first wins);
//! - a key that disappears (its rollout was deleted) is *retired*: its alias keeps being served,
//!   by the stable arm only, until the process restarts or another document claims the alias —
//!   deleting a rollout sends its traffic to stable, never to a 404 (docs/routing-document.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use modelrollout_api::Endpoint;
use modelrollout_api::routing::RoutingDocument;
use serde::Serialize;

use crate::metrics::{ArmMetrics, Metrics};
use crate::pool::Http1Pool;
use crate::request::{InspectedBody, encode_model};
use crate::server::MODEL_ROUTED_PATHS;
use crate::split::{StickyHasher, Track, random_bucket, track_for};

/// An upstream base URL, split so per-request URIs are one concatenation.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// What request URIs start with: `scheme://authority/base-path` for the legacy client (TLS),
    /// the origin-form base path (e.g. `/v1`) for a plain-HTTP upstream's own connections;
    /// never a trailing slash.
    prefix: String,
    /// The endpoint as written in the document.
    pub endpoint: String,
    /// The `Host` header of a plain-HTTP upstream, built once (the client would format it per
    /// request); `None` for HTTPS, which may speak HTTP/2 and is left to the client.
    pub host: Option<HeaderValue>,
    /// A plain-HTTP upstream's own HTTP/1.1 connections (shared by clones of the route);
    /// `None` for HTTPS, which goes through the legacy client for ALPN and HTTP/2.
    pub(crate) pool: Option<Arc<Http1Pool>>,
    /// The URIs of the model-routed paths, parsed once (a clone per request is a reference
    /// count, a parse is a few hundred instructions).
    prebuilt: Vec<(&'static str, Uri)>,
}

impl Upstream {
    /// Parses an `http(s)://host[:port][/base]` endpoint with the routing document's own parser.
    pub fn parse(text: &str) -> Result<Self, String> {
        let endpoint = Endpoint::parse(text).map_err(str::to_owned)?;
        // The value hyper-util's client sets: the host, plus the port unless it is the default.
        let host = if endpoint.is_tls() {
            None
        } else {
            HeaderValue::from_str(&endpoint.authority()).ok()
        };
        // Own connections need the Host header; without one the legacy client sets it.
        let pool = host.as_ref().map(|_| Http1Pool::new(&endpoint.authority()));
        let prefix = match pool {
            Some(_) => endpoint.base_path().to_owned(),
            None => endpoint.to_string(),
        };
        let prebuilt = MODEL_ROUTED_PATHS
            .iter()
            .filter_map(|path| {
                let suffix = path.strip_prefix("/v1")?;
                Some((suffix, join_uri(&prefix, suffix).ok()?))
            })
            .collect();
        Ok(Upstream { prefix, endpoint: text.to_owned(), host, pool, prebuilt })
    }

    /// The upstream URI for a client path below `/v1` (e.g. `/chat/completions?x=1`).
    pub fn uri(&self, suffix: &str) -> Result<Uri, http::uri::InvalidUri> {
        match self.prebuilt.iter().find(|(known, _)| *known == suffix) {
            Some((_, uri)) => Ok(uri.clone()),
            None => join_uri(&self.prefix, suffix),
        }
    }
}

/// `prefix` and `suffix` joined and parsed as a URI.
fn join_uri(prefix: &str, suffix: &str) -> Result<Uri, http::uri::InvalidUri> {
    let mut s = String::with_capacity(prefix.len() + suffix.len());
    s.push_str(prefix);
    s.push_str(suffix);
    Uri::try_from(s)
}

/// One arm of a route: where its requests go and how they are counted.
#[derive(Clone, Debug)]
pub struct Arm {
    /// Stable or canary.
    pub track: Track,
    /// The model name sent upstream.
    pub model: String,
    /// `model` encoded as a JSON string, spliced into request bodies.
    pub model_json: Bytes,
    /// Where requests go.
    pub upstream: Upstream,
    /// `"<secret>/<key>"`, when the arm injects its own credential.
    pub credential: Option<String>,
    /// Without a credential: forward the caller's own key (otherwise none is sent).
    pub pass_caller_authorization: bool,
    /// This arm's metric series.
    pub metrics: ArmMetrics,
}

/// One alias's routing: a validated document plus what requests need, precomputed.
#[derive(Clone, Debug)]
pub struct Route {
    /// The ConfigMap key / file name the document came from.
    pub key: String,
    /// The document.
    pub document: RoutingDocument,
    /// The exact bytes it was parsed from (to skip unchanged documents on reload).
    raw: Bytes,
    /// True when the document disappeared: everything goes to stable.
    pub retired: bool,
    hasher: StickyHasher,
    sticky_headers: Vec<HeaderName>,
    /// The stable arm.
    pub stable: Arm,
    /// The canary arm.
    pub canary: Arm,
    /// The document's forceArmHeader and the route forced requests go through (its arms
    /// count apart); built with the metrics (see [`crate::forced`]).
    pub(crate) forced: Option<(HeaderName, Arc<Route>)>,
    force_header: Option<HeaderName>,
}

impl Route {
    /// Builds a route from the bytes stored under `key`; the error is one line saying why.
    /// Its arms' metric series are not registered yet ([`Route::with_metrics`] does that once
    /// the route is accepted), so a refused document never shows up in `/metrics`.
    pub fn build(key: &str, raw: &[u8]) -> Result<Self, String> {
        let document = RoutingDocument::parse(raw).map_err(|e| e.to_string())?;
        let expected_key = document.config_map_key();
        if key != expected_key {
            return Err(format!(
                "it holds rollout {:?}, whose key must be {expected_key:?}; rename the key or fix \
                 field rollout",
                document.rollout
            ));
        }
        let arm = |track: Track, spec: &modelrollout_api::routing::RoutingArm| {
            let field = if track.is_canary() { "canary.endpoint" } else { "stable.endpoint" };
            let upstream = Upstream::parse(&spec.endpoint).map_err(|why| {
                format!("routing document field {field} is {:?}: {why}", spec.endpoint)
            })?;
            Ok::<_, String>(Arm {
                track,
                model: spec.model.clone(),
                model_json: encode_model(&spec.model),
                upstream,
                credential: spec.credential.clone(),
                pass_caller_authorization: spec.pass_caller_authorization,
                metrics: ArmMetrics::unregistered(),
            })
        };
        let stable = arm(Track::Stable, &document.stable)?;
        let canary = arm(Track::Canary, &document.canary)?;
        // RoutingDocument::parse admitted only header names, and every one is a HeaderName
        // (`header_names_agree` below), so nothing is validated a second time here.
        let sticky_headers = document
            .stickiness
            .headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let force_header = crate::forced::header_name(document.force_arm_header.as_deref())?;
        Ok(Route {
            key: key.to_owned(),
            hasher: StickyHasher::new(&document.namespace, &document.rollout),
            sticky_headers,
            raw: Bytes::copy_from_slice(raw),
            retired: false,
            document,
            stable,
            canary,
            forced: None,
            force_header,
        })
    }

    /// The alias this route serves.
    pub fn alias(&self) -> &str {
        &self.document.model
    }

    /// The canary weight in effect (0 when retired).
    pub fn weight(&self) -> u32 {
        if self.retired { 0 } else { self.document.canary_weight.min(100) }
    }

    /// The arm for `track`.
    pub fn arm(&self, track: Track) -> &Arm {
        match track {
            Track::Stable => &self.stable,
            Track::Canary => &self.canary,
        }
    }

    /// Picks the arm of a request by its sticky key (see [`crate::split`]).
    pub fn choose(&self, headers: &HeaderMap, body: Option<&InspectedBody<'_>>) -> Track {
        let weight = self.weight();
        if weight == 0 {
            return Track::Stable;
        }
        if weight >= 100 {
            return Track::Canary;
        }
        let bucket = self
            .sticky_headers
            .iter()
            .find_map(|name| headers.get(name))
            .map(|value| self.hasher.bucket(value.as_bytes()))
            .or_else(|| {
                let field = self.document.stickiness.body_field.as_deref()?;
                let value = body?.sticky_value(field)?;
                Some(self.hasher.bucket(&value))
            })
            .unwrap_or_else(random_bucket);
        track_for(bucket, weight)
    }

    /// This route with its arms' series registered in `metrics`.
    fn with_metrics(mut self, metrics: &Metrics) -> Route {
        let document = &self.document;
        let bounds = document.latency_bounds_seconds();
        for arm in [&mut self.stable, &mut self.canary] {
            arm.metrics = metrics.arm_with_bounds(
                &document.rollout,
                &document.namespace,
                &arm.model,
                arm.track.is_canary(),
                &bounds,
            );
        }
        if let Some(header) = self.force_header.clone() {
            let view = crate::forced::forced_view(&self, metrics);
            self.forced = Some((header, Arc::new(view)));
        }
        self
    }

    fn retire(&self) -> Route {
        Route { retired: true, ..self.clone() }
    }
}

/// Sort key of a claim on an alias: older creation first, undated last, then the key.
fn precedence<'a>(key: &'a str, route: &'a Route) -> (bool, &'a str, &'a str) {
    let created = route.document.created_at.as_deref();
    (created.is_none(), created.unwrap_or_default(), key)
}

/// The merged, immutable routing table.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Number of tables published before this one, plus one (0 = nothing loaded yet).
    pub generation: u64,
    by_alias: HashMap<String, Arc<Route>>,
    /// Documents present but not served, with why (for `/admin/status`).
    refused: Vec<Refusal>,
    /// The sticky body field most routes use, read in the same pass as `model`.
    sticky_body_field: Option<Arc<str>>,
}

impl RoutingTable {
    /// True once a table has been loaded from the source (even an empty one).
    pub fn is_loaded(&self) -> bool {
        self.generation > 0
    }

    /// The route serving `alias`.
    pub fn route(&self, alias: &str) -> Option<&Arc<Route>> {
        self.by_alias.get(alias)
    }

    /// The sticky body field to read while looking for `model` (see [`InspectedBody::parse`]):
    /// the one most routes use; a route with another one reads it in a second pass.
    pub fn sticky_body_field(&self) -> Option<&Arc<str>> {
        self.sticky_body_field.as_ref()
    }

    /// Served aliases, sorted.
    pub fn aliases(&self) -> Vec<&str> {
        let mut aliases: Vec<&str> = self.by_alias.keys().map(String::as_str).collect();
        aliases.sort_unstable();
        aliases
    }

    /// Every route, sorted by alias.
    pub fn routes(&self) -> Vec<&Arc<Route>> {
        let mut routes: Vec<&Arc<Route>> = self.by_alias.values().collect();
        routes.sort_unstable_by(|a, b| a.alias().cmp(b.alias()));
        routes
    }

    /// The `/admin/status` view.
    pub fn status(&self) -> TableStatus<'_> {
        TableStatus {
            loaded: self.is_loaded(),
            generation: self.generation,
            refused: &self.refused,
            routes: self
                .routes()
                .into_iter()
                .map(|route| RouteStatus {
                    model: route.alias(),
                    key: &route.key,
                    rollout: &route.document.rollout,
                    namespace: &route.document.namespace,
                    document_generation: route.document.generation,
                    phase: route.document.phase.as_str(),
                    canary_weight: route.weight(),
                    retired: route.retired,
                    stable: ArmStatus::of(&route.stable),
                    canary: ArmStatus::of(&route.canary),
                })
                .collect(),
        }
    }
}

/// `/admin/status` JSON: the table.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus<'a> {
    /// A table has been loaded.
    pub loaded: bool,
    /// Published table count.
    pub generation: u64,
    /// Documents present in the source but not served, each with the reason.
    pub refused: &'a [Refusal],
    /// One entry per alias.
    pub routes: Vec<RouteStatus<'a>>,
}

/// `/admin/status` JSON: one route.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus<'a> {
    /// Alias.
    pub model: &'a str,
    /// Source key.
    pub key: &'a str,
    /// Rollout name.
    pub rollout: &'a str,
    /// Rollout namespace.
    pub namespace: &'a str,
    /// The rollout generation the document was written from.
    pub document_generation: i64,
    /// The rollout phase in the document.
    pub phase: &'a str,
    /// Weight in effect.
    pub canary_weight: u32,
    /// The document is gone; stable serves everything.
    pub retired: bool,
    /// Stable arm.
    pub stable: ArmStatus<'a>,
    /// Canary arm.
    pub canary: ArmStatus<'a>,
}

/// `/admin/status` JSON: one arm with its local counters.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmStatus<'a> {
    /// Upstream model.
    pub model: &'a str,
    /// Upstream endpoint.
    pub endpoint: &'a str,
    /// Credential name (never its value).
    pub credential: Option<&'a str>,
    /// Upstream attempts counted since start.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
}

impl<'a> ArmStatus<'a> {
    fn of(arm: &'a Arm) -> Self {
        let (requests, errors) = arm.metrics.counts();
        ArmStatus {
            model: &arm.model,
            endpoint: &arm.upstream.endpoint,
            credential: arm.credential.as_deref(),
            requests,
            errors,
        }
    }
}

/// Builds successive tables from complete snapshots of the documents, remembering what it
/// refused so a bad document is reported once, not on every rescan.
#[derive(Debug, Default)]
pub struct TableUpdater {
    /// Key → the refused bytes and why, for keys still present.
    refused: BTreeMap<String, (Bytes, String)>,
}

/// One refused document: the key and the one-line reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The key / file name.
    pub key: String,
    /// Why, and what stays in effect.
    pub reason: String,
}

/// A claim on an alias: the key, its route, the bytes it was built from, and whether it was
/// built just now (fresh: its metric series are not registered yet).
struct Claim<'a> {
    key: &'a str,
    route: Arc<Route>,
    raw: &'a Bytes,
    fresh: bool,
}

/// The outcome of one merge, before anything is published.
struct Merge<'a> {
    by_alias: HashMap<String, Claim<'a>>,
    /// Keys refused in this merge: (key, bytes, reason, the entry kept for the key).
    refused: Vec<(&'a str, &'a Bytes, String, Option<Arc<Route>>)>,
}

impl TableUpdater {
    /// Merges `snapshot` (every key → its bytes, as the source holds them now) over `current`.
    /// Returns the new table when anything changed (always on the first load) and the documents
    /// newly refused. Merging is pure ([`merge`]); counters, series and log lines come from
    /// [`TableUpdater::publish`] alone.
    pub fn apply(
        &mut self,
        current: &RoutingTable,
        snapshot: &BTreeMap<String, Bytes>,
        metrics: &Metrics,
    ) -> (Option<RoutingTable>, Vec<Refusal>) {
        let merged = merge(current, snapshot);
        self.publish(current, snapshot, merged, metrics)
    }

    /// Records the merge's refusals (counting and logging each distinct bad content once),
    /// registers the metric series of newly accepted routes only, and builds the table if
    /// anything changed.
    fn publish(
        &mut self,
        current: &RoutingTable,
        snapshot: &BTreeMap<String, Bytes>,
        merged: Merge<'_>,
        metrics: &Metrics,
    ) -> (Option<RoutingTable>, Vec<Refusal>) {
        let mut newly_refused = Vec::new();
        for (key, raw, reason, kept) in merged.refused {
            let stored = self.refused.get(key);
            if stored.is_none_or(|(bytes, _)| bytes != raw) {
                let keeps = match kept.as_deref() {
                    Some(route) if !route.retired => format!(
                        "keeping the last good entry (generation {}, weight {}%)",
                        route.document.generation,
                        route.weight()
                    ),
                    _ => "the key serves nothing until it is fixed".to_owned(),
                };
                metrics.reload_failed();
                tracing::warn!(key, "routing document refused: {reason}; {keeps}");
                newly_refused.push(Refusal { key: key.to_owned(), reason: reason.clone() });
            }
            self.refused.insert(key.to_owned(), (raw.clone(), reason));
        }
        let served_keys: Vec<String> = merged
            .by_alias
            .values()
            .filter(|claim| snapshot.get(claim.key) == Some(claim.raw))
            .map(|claim| claim.key.to_owned())
            .collect();
        for key in served_keys {
            self.refused.remove(&key);
        }
        self.refused.retain(|key, _| snapshot.contains_key(key));
        let refused: Vec<Refusal> = self
            .refused
            .iter()
            .map(|(key, (_, reason))| Refusal { key: key.clone(), reason: reason.clone() })
            .collect();

        let by_alias: HashMap<String, Arc<Route>> = merged
            .by_alias
            .into_iter()
            .map(|(alias, claim)| {
                let route = if claim.fresh {
                    Arc::new(Arc::unwrap_or_clone(claim.route).with_metrics(metrics))
                } else {
                    claim.route
                };
                (alias, route)
            })
            .collect();
        let unchanged = current.is_loaded()
            && refused == current.refused
            && by_alias.len() == current.by_alias.len()
            && by_alias
                .iter()
                .all(|(alias, r)| current.by_alias.get(alias).is_some_and(|c| Arc::ptr_eq(c, r)));
        if unchanged {
            return (None, newly_refused);
        }
        let generation = current.generation + 1;
        for route in by_alias.values() {
            metrics.set_weight(&route.document.rollout, &route.document.namespace, route.weight());
            let changed =
                current.by_alias.get(route.alias()).is_none_or(|c| !Arc::ptr_eq(c, route));
            if changed && route.retired {
                tracing::info!(
                    key = %route.key,
                    "routing key removed: model {:?} now goes to its stable arm ({}) only",
                    route.alias(),
                    route.stable.model
                );
            } else if changed {
                tracing::info!(
                    key = %route.key,
                    "routing: model {:?} → rollout {}/{} generation {}, canary weight {}% \
                     (stable {} at {}, canary {} at {})",
                    route.alias(),
                    route.document.namespace,
                    route.document.rollout,
                    route.document.generation,
                    route.weight(),
                    route.stable.model,
                    route.stable.upstream.endpoint,
                    route.canary.model,
                    route.canary.upstream.endpoint,
                );
            }
        }
        metrics.reload_succeeded(generation);
        let sticky_body_field = most_used_body_field(&by_alias);
        (Some(RoutingTable { generation, by_alias, refused, sticky_body_field }), newly_refused)
    }
}

/// The sticky body field of most live routes (ties: the name that sorts first).
fn most_used_body_field(by_alias: &HashMap<String, Arc<Route>>) -> Option<Arc<str>> {
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for route in by_alias.values().filter(|route| !route.retired) {
        if let Some(field) = route.document.stickiness.body_field.as_deref() {
            *uses.entry(field).or_default() += 1;
        }
    }
    // max_by_key keeps the last maximum: iterate in reverse so the first name wins a tie.
    uses.into_iter().rev().max_by_key(|(_, count)| *count).map(|(field, _)| Arc::from(field))
}

/// The pure merge: which route serves each alias, and which keys are refused and why.
///
/// 1. Every key's claim: its current route when its bytes are unchanged, else a route built
///    from the new bytes, else (they do not build) a refusal, keeping its last good route.
/// 2. Claims on one alias are settled by [`precedence`]; the losers are refused, each keeping its
///    last good route if that one's alias is still free.
/// 3. Aliases of keys that vanished retire to their stable arm, unless claimed again.
fn merge<'a>(current: &'a RoutingTable, snapshot: &'a BTreeMap<String, Bytes>) -> Merge<'a> {
    let previous_by_key: HashMap<&str, &Arc<Route>> =
        current.by_alias.values().filter(|r| !r.retired).map(|r| (r.key.as_str(), r)).collect();
    let mut refused = Vec::new();
    let mut claims: Vec<Claim<'a>> = Vec::new();
    for (key, raw) in snapshot {
        let previous = previous_by_key.get(key.as_str()).copied();
        if let Some(previous) = previous
            && previous.raw == *raw
        {
            claims.push(Claim { key, route: Arc::clone(previous), raw, fresh: false });
            continue;
        }
        match Route::build(key, raw) {
            Ok(route) => claims.push(Claim { key, route: Arc::new(route), raw, fresh: true }),
            Err(reason) => {
                refused.push((key.as_str(), raw, reason, previous.cloned()));
                if let Some(previous) = previous {
                    claims.push(Claim {
                        key,
                        route: Arc::clone(previous),
                        raw: &previous.raw,
                        fresh: false,
                    });
                }
            }
        }
    }
    claims.sort_by(|a, b| precedence(a.key, &a.route).cmp(&precedence(b.key, &b.route)));

    let mut by_alias: HashMap<String, Claim<'a>> = HashMap::with_capacity(claims.len());
    for claim in claims {
        let Some(owner) = by_alias.get(claim.route.alias()) else {
            by_alias.insert(claim.route.alias().to_owned(), claim);
            continue;
        };
        let reason = format!(
            "it claims model {:?}, already served by rollout {}/{} (key {})",
            claim.route.alias(),
            owner.route.document.namespace,
            owner.route.document.rollout,
            owner.key
        );
        let previous = previous_by_key.get(claim.key).copied();
        // A kept last-good entry losing too was refused already for its new bytes.
        if let Some(raw) = snapshot.get(claim.key)
            && raw == claim.raw
        {
            refused.push((claim.key, raw, reason, previous.cloned()));
        }
        if let Some(previous) = previous
            && !by_alias.contains_key(previous.alias())
        {
            let kept = Claim {
                key: claim.key,
                route: Arc::clone(previous),
                raw: &previous.raw,
                fresh: false,
            };
            by_alias.insert(previous.alias().to_owned(), kept);
        }
    }
    for route in current.by_alias.values() {
        if !snapshot.contains_key(&route.key) && !by_alias.contains_key(route.alias()) {
            let retired = if route.retired { Arc::clone(route) } else { Arc::new(route.retire()) };
            let claim = Claim { key: &route.key, route: retired, raw: &route.raw, fresh: false };
            by_alias.insert(route.alias().to_owned(), claim);
        }
    }
    Merge { by_alias, refused }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(rollout: &str, alias: &str, weight: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"version":1,"rollout":"{rollout}","namespace":"ai","generation":1,"model":"{alias}",
            "stable":{{"model":"gpt-4.1","endpoint":"http://127.0.0.1:1/v1"}},
            "canary":{{"model":"claude","endpoint":"http://127.0.0.1:2/v1/","credential":"relay/api-key"}},
            "canaryWeight":{weight},"stickiness":{{"headers":["X-Session-ID"],"bodyField":"user"}},
            "phase":"Progressing"}}"#
        ))
    }

    fn snapshot(entries: &[(&str, Bytes)]) -> BTreeMap<String, Bytes> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    struct Harness {
        metrics: Metrics,
        updater: TableUpdater,
        table: RoutingTable,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                metrics: Metrics::new(),
                updater: TableUpdater::default(),
                table: RoutingTable::default(),
            }
        }
        /// Applies a snapshot; returns whether a table was published and the refusals.
        fn apply(&mut self, entries: &[(&str, Bytes)]) -> (bool, Vec<Refusal>) {
            let (table, refusals) =
                self.updater.apply(&self.table, &snapshot(entries), &self.metrics);
            let published = table.is_some();
            if let Some(table) = table {
                self.table = table;
            }
            (published, refusals)
        }
        fn weight(&self, alias: &str) -> Option<u32> {
            self.table.route(alias).map(|r| r.weight())
        }
    }

    /// The first load publishes even an empty table; unchanged snapshots publish nothing.
    #[test]
    fn first_load_and_no_op_reloads() {
        let mut h = Harness::new();
        assert!(!h.table.is_loaded());
        assert_eq!(h.apply(&[]), (true, vec![]));
        assert!(h.table.is_loaded());
        assert_eq!(h.apply(&[]), (false, vec![]));
        assert!(h.apply(&[("chat.json", doc("chat", "chat-default", 5))]).0);
        assert_eq!(h.apply(&[("chat.json", doc("chat", "chat-default", 5))]), (false, vec![]));
        assert_eq!(h.table.generation, 2);
        assert_eq!(h.metrics.reload_counts(), (2, 0));
    }

    /// A bad document keeps the last good entry, counts one failure, and is reported once.
    #[test]
    fn bad_document_keeps_last_good() {
        let mut h = Harness::new();
        h.apply(&[("chat.json", doc("chat", "chat-default", 25))]);
        let bad = Bytes::from_static(br#"{"version":1,"rollout":"chat""#);
        let (published, refusals) = h.apply(&[("chat.json", bad.clone())]);
        assert!(published, "the refusal is published for /admin/status");
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].key, "chat.json");
        assert_eq!(h.table.refused, refusals);
        assert_eq!(h.weight("chat-default"), Some(25));
        assert_eq!(h.apply(&[("chat.json", bad)]), (false, vec![]));
        assert_eq!(h.metrics.reload_counts().1, 1);
        // Fixing it applies the new content.
        assert!(h.apply(&[("chat.json", doc("chat", "chat-default", 50))]).0);
        assert_eq!(h.weight("chat-default"), Some(50));
        assert!(h.table.refused.is_empty());
    }

    /// Refusal reasons name the problem: invalid weight, key/rollout mismatch.
    #[test]
    fn refusal_reasons() {
        let table: [(&str, Bytes, &str); 3] = [
            ("chat.json", doc("chat", "chat-default", 140), "canaryWeight"),
            ("other.json", doc("chat", "chat-default", 5), "\"chat.json\""),
            ("chat.json", Bytes::from_static(b"not json"), "cannot be read"),
        ];
        for (key, raw, needle) in table {
            let mut h = Harness::new();
            let (_, refusals) = h.apply(&[(key, raw)]);
            assert_eq!(refusals.len(), 1, "{key}");
            assert!(refusals[0].reason.contains(needle), "{}", refusals[0].reason);
            assert!(h.table.route("chat-default").is_none());
        }
    }

    /// `doc` with the rollout's creation time.
    fn dated(rollout: &str, alias: &str, weight: u32, created_at: &str) -> Bytes {
        let text = String::from_utf8(doc(rollout, alias, weight).to_vec()).unwrap();
        let text = text.replace(
            r#""generation":1,"#,
            &format!(r#""generation":1,"createdAt":"{created_at}","#),
        );
        Bytes::from(text)
    }

    /// One alias, several claims: the oldest rollout wins, whatever order the documents came
    /// in; undated ones lose to dated ones, ties go to the key sorting first; every loser is
    /// listed with its reason.
    #[test]
    fn alias_conflicts() {
        let old = || ("b.json", dated("b", "chat-default", 10, "2026-01-01T00:00:00Z"));
        let new = || ("a.json", dated("a", "chat-default", 90, "2026-02-01T00:00:00Z"));
        // Loaded together, or the newer one first (a replica restarting after the clash).
        let mut together = Harness::new();
        let (_, refusals) = together.apply(&[new(), old()]);
        let mut newer_first = Harness::new();
        newer_first.apply(&[new()]);
        assert_eq!(newer_first.table.route("chat-default").unwrap().key, "a.json");
        newer_first.apply(&[new(), old()]);
        for h in [&together, &newer_first] {
            assert_eq!(h.table.route("chat-default").unwrap().key, "b.json");
            assert_eq!(h.table.refused.len(), 1);
            assert_eq!(h.table.refused[0].key, "a.json");
            assert!(
                h.table.refused[0].reason.contains("already served by rollout ai/b"),
                "{}",
                h.table.refused[0].reason
            );
        }
        assert_eq!(refusals.len(), 1);
        let exposition = together.metrics.encode();
        assert!(!exposition.contains(r#"rollout="a""#), "a refused route has no series");
        assert!(exposition.contains(r#"rollout="b""#));
        // The loser goes away: its refusal goes with it.
        together.apply(&[old()]);
        assert!(together.table.refused.is_empty());
        // Dated beats undated; two undated claims: the key sorting first wins.
        let mut h = Harness::new();
        h.apply(&[
            ("a.json", doc("a", "m", 10)),
            ("z.json", dated("z", "m", 20, "2030-01-01T00:00:00Z")),
        ]);
        assert_eq!(h.table.route("m").unwrap().key, "z.json");
        let mut h = Harness::new();
        let (_, refusals) =
            h.apply(&[("y.json", doc("y", "m", 10)), ("x.json", doc("x", "m", 20))]);
        assert_eq!(h.table.route("m").unwrap().key, "x.json");
        assert_eq!(refusals[0].key, "y.json");
    }

    /// The table names the sticky body field most live routes use (ties: the first name).
    #[test]
    fn most_used_sticky_body_field() {
        let with_field = |rollout: &str, alias: &str, field: &str| {
            let text = String::from_utf8(doc(rollout, alias, 50).to_vec()).unwrap();
            Bytes::from(text.replace(r#""bodyField":"user""#, &format!(r#""bodyField":"{field}""#)))
        };
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let table: [Case<'_>; 4] = [
            (&[], None),
            (&[("a", "user")], Some("user")),
            (&[("a", "user"), ("b", "session"), ("c", "session")], Some("session")),
            (&[("a", "zeta"), ("b", "alpha")], Some("alpha")),
        ];
        for (routes, expected) in table {
            let mut h = Harness::new();
            let entries: Vec<(String, Bytes)> = routes
                .iter()
                .map(|(rollout, field)| {
                    (format!("{rollout}.json"), with_field(rollout, &format!("m-{rollout}"), field))
                })
                .collect();
            let entries: Vec<(&str, Bytes)> =
                entries.iter().map(|(key, raw)| (key.as_str(), raw.clone())).collect();
            h.apply(&entries);
            assert_eq!(h.table.sticky_body_field().map(|f| &**f), expected, "{routes:?}");
        }
    }

    /// A removed key retires its alias to stable; a new document may claim it.
    #[test]
    fn removed_key_retires_to_stable() {
        let mut h = Harness::new();
        h.apply(&[("chat.json", doc("chat", "chat-default", 50))]);
        assert!(h.apply(&[]).0);
        let route = h.table.route("chat-default").unwrap();
        assert!(route.retired);
        assert_eq!(route.weight(), 0);
        assert_eq!(route.choose(&HeaderMap::new(), None), Track::Stable);
        assert_eq!(h.apply(&[]), (false, vec![]));
        assert!(h.apply(&[("new.json", doc("new", "chat-default", 100))]).0);
        let route = h.table.route("chat-default").unwrap();
        assert!(!route.retired);
        assert_eq!(route.key, "new.json");
    }

    /// The sticky key comes from the first present header, then the body field.
    #[test]
    fn choose_uses_sticky_key() {
        let route = Route::build("chat.json", &doc("chat", "m", 50)).unwrap();
        let hasher = StickyHasher::new("ai", "chat");
        for i in 0..200 {
            let key = format!("session-{i}");
            let expected = track_for(hasher.bucket(key.as_bytes()), 50);
            let mut headers = HeaderMap::new();
            headers.insert("x-session-id", key.parse().unwrap());
            assert_eq!(route.choose(&headers, None), expected);
            let body = format!(r#"{{"model":"m","user":"{key}"}}"#);
            for kept in [None, Some(Arc::from("user")), Some(Arc::from("other"))] {
                let inspected = InspectedBody::parse(body.as_bytes(), kept.as_ref()).unwrap();
                assert_eq!(route.choose(&HeaderMap::new(), Some(&inspected)), expected);
            }
        }
    }

    /// Every name the routing document's rule admits is an `http::HeaderName`, so the proxy
    /// never drops a sticky header the document listed.
    #[test]
    fn header_names_agree() {
        for byte in 0..=u8::MAX {
            let name = [b'x', byte];
            if let Ok(name) = std::str::from_utf8(&name)
                && modelrollout_api::routing::is_http_header_name(name)
            {
                assert!(HeaderName::from_bytes(name.as_bytes()).is_ok(), "{name:?}");
            }
        }
        let longest = "x".repeat(modelrollout_api::routing::HEADER_NAME_MAX_LENGTH);
        assert!(HeaderName::from_bytes(longest.as_bytes()).is_ok());
    }

    /// Upstream URIs join the base path and the client's path below /v1: origin-form for a
    /// plain-HTTP upstream's own connections, absolute for the legacy client (TLS).
    #[test]
    fn upstream_uris() {
        let table = [
            ("http://127.0.0.1:8080/v1", "/chat/completions", "/v1/chat/completions"),
            ("https://api.openai.com/v1/", "/models?x=1", "https://api.openai.com/v1/models?x=1"),
            ("http://relay:9000", "/embeddings", "/embeddings"),
            ("http://relay:9000/", "/", "/"),
            ("http://relay:9000/v1", "/embeddings", "/v1/embeddings"),
            ("https://api.openai.com/v1", "/responses", "https://api.openai.com/v1/responses"),
            ("http://relay:9000/v1", "/responses?x=1", "/v1/responses?x=1"),
        ];
        for (endpoint, suffix, expected) in table {
            assert_eq!(
                Upstream::parse(endpoint).unwrap().uri(suffix).unwrap().to_string(),
                expected
            );
        }
        assert!(Upstream::parse("ftp://x").is_err());
        assert!(Upstream::parse("http://user:pw@relay:9000").is_err());
    }

    /// A plain-HTTP upstream's Host header is the one the client would set (default port
    /// dropped); HTTPS upstreams leave it to the client (HTTP/2 carries it as :authority).
    #[test]
    fn upstream_host_headers() {
        let table = [
            ("http://127.0.0.1:8080/v1", Some("127.0.0.1:8080")),
            ("http://relay:80/v1", Some("relay")),
            ("http://[::1]:9000/v1", Some("[::1]:9000")),
            ("http://relay", Some("relay")),
            ("https://api.openai.com/v1", None),
        ];
        for (endpoint, expected) in table {
            let upstream = Upstream::parse(endpoint).unwrap();
            let host = upstream.host.as_ref().map(|v| v.to_str().unwrap());
            assert_eq!(host, expected, "{endpoint}");
        }
    }
}
