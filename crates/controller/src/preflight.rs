//! Preflight: before any traffic moves, each arm's endpoint is asked `GET {endpoint}/models`
//! with the arm's own credential. A wrong key, a misspelt model or an endpoint that cannot be
//! reached then shows as a named condition at weight 0, not as failed user requests at 5 %.
//!
//! [`Prober::check`] does the I/O (the Secret, then the request); [`verdict`] turns what the
//! endpoints answered into the condition, and is pure so every rule has a unit test.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use modelrollout_api::{ModelRollout, ModelTarget, Reason};
use serde::Deserialize;

/// How long one request for the model list may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first retry after a failed check; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);

/// The longest wait between two checks of a failing preflight.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Model names shown in a ModelNotFound message before "and N more".
const LISTED_MODELS: usize = 10;

/// The wait before the next check after `failures` failed ones in a row (at least one).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// Which arm of the rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// The model serving traffic today.
    Stable,
    /// The model being rolled out.
    Canary,
}

impl Arm {
    /// The arm's name in messages and in the spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Arm::Stable => "stable",
            Arm::Canary => "canary",
        }
    }
}

/// What one arm's endpoint answered to `GET {endpoint}/models`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200 with an OpenAI model list: the ids it serves.
    Models(Vec<String>),
    /// 200 with a body that is not a model list: the endpoint answers, the model is unchecked.
    NotAList,
    /// 404 or 405: the endpoint has no model list (some gateways do not). Not a failure.
    NoModelList(u16),
    /// 429: the endpoint is reachable and rate-limits; the model is unchecked. Not a failure.
    RateLimited,
    /// 401 or 403: the credential was refused.
    Refused(u16),
    /// Another status: an error page, an outage (5xx), a redirect.
    Status(u16),
    /// No answer: connection refused, DNS, TLS, timeout. The cause in words.
    Unreachable(String),
    /// The arm's credential could not be read from its Secret; the endpoint was not asked.
    NoCredential(String),
}

impl Answer {
    /// No answer, or a server error: worth one more try before it counts.
    fn is_transient(&self) -> bool {
        match self {
            Answer::Unreachable(_) => true,
            Answer::Status(status) => (500..600).contains(status),
            _ => false,
        }
    }
}

/// One arm's check: where it asked, with which credential, and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmCheck {
    /// Stable or canary.
    pub arm: Arm,
    /// The arm's endpoint as written in the spec.
    pub endpoint: String,
    /// The model the arm sends upstream.
    pub model: String,
    /// `<secret>/<key>` of the credential sent (never its value), if any.
    pub credential: Option<String>,
    /// The arm forwards each caller's key instead of its own (`passCallerAuthorization`).
    pub passes_caller_key: bool,
    /// What the endpoint answered.
    pub answer: Answer,
}

/// Both arms' checks, canary first (the canary is what is new).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The canary's check.
    pub canary: ArmCheck,
    /// The stable arm's check.
    pub stable: ArmCheck,
}

/// The preflight's verdict: the `PreflightPassed` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// True when traffic may move.
    pub passed: bool,
    /// The condition's reason: EndpointsReady, or the first failing arm's reason.
    pub reason: Reason,
    /// Both arms in words, with the endpoint, the credential's name and what was answered.
    pub message: String,
}

/// One arm's outcome: a failure reason with its words, or a note on a pass.
fn judge_arm(check: &ArmCheck) -> Result<String, (Reason, String)> {
    let ArmCheck { arm, endpoint, model, credential, passes_caller_key, answer } = check;
    let arm = arm.as_str();
    match answer {
        Answer::Models(served) if served.iter().any(|id| id == model) => {
            Ok(format!("{arm} endpoint {endpoint} serves {model}"))
        }
        Answer::Models(served) => {
            let listed = list(served);
            let hint = closest(model, served)
                .map(|name| format!(": did you mean {name}?"))
                .unwrap_or_else(|| format!(": set spec.{arm}.model to one of them"));
            Err((
                Reason::ModelNotFound,
                format!(
                    "{arm} endpoint {endpoint} does not serve {model} (it lists {listed}){hint}"
                ),
            ))
        }
        Answer::NotAList => Ok(format!(
            "{arm} endpoint {endpoint} answered /models without a model list: {model} not checked"
        )),
        Answer::NoModelList(status) => Ok(format!(
            "{arm} endpoint {endpoint} has no /models (answered {status}): {model} not checked"
        )),
        Answer::RateLimited => Ok(format!(
            "{arm} endpoint {endpoint} answered /models with 429 (rate limited): reachable, \
             {model} not checked"
        )),
        Answer::Refused(status) if *passes_caller_key && credential.is_none() => Ok(format!(
            "{arm} endpoint {endpoint} answered {status} without a key: it gets each caller's \
             key (passCallerAuthorization), so {model} is not checked"
        )),
        Answer::Refused(status) => Err((
            Reason::Unauthorized,
            match credential {
                Some(credential) => format!(
                    "{arm} endpoint {endpoint} answered {status} with credential {credential}: \
                     the key is missing, revoked or for another account"
                ),
                None => format!(
                    "{arm} endpoint {endpoint} answered {status} without a credential: set \
                     spec.{arm}.credentialsSecretRef to the Secret key that holds its API key"
                ),
            },
        )),
        Answer::Status(status) => Err((
            Reason::EndpointUnreachable,
            format!("{arm} endpoint {endpoint} answered {status} to GET /models"),
        )),
        Answer::Unreachable(cause) => Err((
            Reason::EndpointUnreachable,
            format!("{arm} endpoint {endpoint} is unreachable: {cause}"),
        )),
        Answer::NoCredential(cause) => Err((
            Reason::CredentialUnavailable,
            format!("{arm} credential {}: {cause}", credential.as_deref().unwrap_or("(none)")),
        )),
    }
}

/// The `PreflightPassed` condition from both arms' answers. On a failure the reason is the
/// canary's if it failed, else the stable arm's; the message names every failing arm.
pub fn verdict(report: &Report) -> Verdict {
    let outcomes = [judge_arm(&report.canary), judge_arm(&report.stable)];
    let failures: Vec<&(Reason, String)> =
        outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    match failures.first() {
        None => Verdict {
            passed: true,
            reason: Reason::EndpointsReady,
            message: outcomes
                .iter()
                .filter_map(|o| o.as_ref().ok().cloned())
                .collect::<Vec<_>>()
                .join("; "),
        },
        Some((reason, _)) => Verdict {
            passed: false,
            reason: *reason,
            message: failures.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; "),
        },
    }
}

/// Up to [`LISTED_MODELS`] names, sorted, then how many more.
fn list(served: &[String]) -> String {
    if served.is_empty() {
        return "no models".to_owned();
    }
    let mut names: Vec<&str> = served.iter().map(String::as_str).collect();
    names.sort_unstable();
    let shown = names.iter().take(LISTED_MODELS).copied().collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(LISTED_MODELS) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// The served name nearest to `wanted` by edit distance (case-insensitive), if it is near
/// enough to be a likely typo: at most a third of the name's length, and at least 1 apart.
pub fn closest<'a>(wanted: &str, served: &'a [String]) -> Option<&'a str> {
    let wanted_lower = wanted.to_lowercase();
    let limit = (wanted.chars().count() / 3).max(2);
    served
        .iter()
        .map(|name| (edit_distance(&wanted_lower, &name.to_lowercase()), name))
        .filter(|(distance, _)| *distance <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, name)| name.as_str())
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// An OpenAI model list: `{"object": "list", "data": [{"id": ...}, ...]}`.
#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// Asks the arms' endpoints for their model lists.
#[derive(Clone, Debug)]
pub struct Prober {
    http: reqwest::Client,
}

impl Prober {
    /// A prober whose every request (connection included) ends within `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(modelrollout_analysis::tls_config()?)
            .connect_timeout(timeout)
            .timeout(timeout)
            // A redirect would carry the key to another place: report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("preflight HTTP client: {e}"))?;
        Ok(Prober { http })
    }

    /// Checks both arms of `rollout` (concurrently), reading credentials through `client`.
    pub async fn check(&self, client: &Client, rollout: &ModelRollout) -> Report {
        let namespace = rollout.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let spec = &rollout.spec;
        let (canary, stable) = tokio::join!(
            self.check_arm(&secrets, &namespace, Arm::Canary, &spec.canary),
            self.check_arm(&secrets, &namespace, Arm::Stable, &spec.stable),
        );
        Report { canary, stable }
    }

    async fn check_arm(
        &self,
        secrets: &Api<Secret>,
        namespace: &str,
        arm: Arm,
        target: &ModelTarget,
    ) -> ArmCheck {
        let reference = target.credentials_secret_ref.as_ref();
        let answer = match reference {
            Some(reference) => {
                match read_key(secrets, namespace, &reference.name, &reference.key).await {
                    Ok(key) => self.ask(&target.endpoint, Some(&key)).await,
                    Err(cause) => Answer::NoCredential(cause),
                }
            }
            None => self.ask(&target.endpoint, None).await,
        };
        ArmCheck {
            arm,
            endpoint: target.endpoint.clone(),
            model: target.model.clone(),
            credential: reference.map(|r| format!("{}/{}", r.name, r.key)),
            passes_caller_key: target.pass_caller_authorization,
            answer,
        }
    }

    /// `GET {endpoint}/models`, retried once when no answer came at all or the answer was a
    /// 5xx: both are often passing, and one unlucky request should not hold a rollout back for
    /// a whole backoff period.
    async fn ask(&self, endpoint: &str, key: Option<&str>) -> Answer {
        match self.ask_once(endpoint, key).await {
            answer if answer.is_transient() => self.ask_once(endpoint, key).await,
            answer => answer,
        }
    }

    async fn ask_once(&self, endpoint: &str, key: Option<&str>) -> Answer {
        let url = format!("{}/models", endpoint.trim_end_matches('/'));
        let mut request = self.http.get(&url).header("accept", "application/json");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Answer::Unreachable(cause(&error)),
        };
        let status = response.status().as_u16();
        match status {
            200 => match response.bytes().await {
                Ok(body) => match serde_json::from_slice::<ModelList>(&body) {
                    Ok(list) => Answer::Models(list.data.into_iter().map(|m| m.id).collect()),
                    Err(_) => Answer::NotAList,
                },
                Err(error) => Answer::Unreachable(cause(&error)),
            },
            401 | 403 => Answer::Refused(status),
            404 | 405 => Answer::NoModelList(status),
            429 => Answer::RateLimited,
            _ => Answer::Status(status),
        }
    }
}

/// The API key in `<secret>/<key>`, or why it cannot be read (never the value itself).
async fn read_key(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, String> {
    let secret = match secrets.get(name).await {
        Ok(secret) => secret,
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            return Err(format!(
                "Secret {name} does not exist in namespace {namespace}: create it"
            ));
        }
        Err(kube::Error::Api(status)) if status.is_forbidden() => {
            return Err(format!(
                "the controller may not read Secret {name} in namespace {namespace}: its \
                 ClusterRole needs get on secrets (deploy/rbac)"
            ));
        }
        Err(error) => {
            return Err(format!("reading Secret {name} in namespace {namespace}: {error}"));
        }
    };
    let value = secret.data.as_ref().and_then(|data| data.get(key));
    let Some(value) = value else {
        let mut keys: Vec<&str> =
            secret.data.iter().flat_map(|data| data.keys().map(String::as_str)).collect();
        keys.sort_unstable();
        let has = if keys.is_empty() { "no keys".to_owned() } else { keys.join(", ") };
        return Err(format!("Secret {name} has no key {key} (it has {has})"));
    };
    match std::str::from_utf8(&value.0).map(str::trim) {
        Ok("") => Err(format!("Secret {name} key {key} is empty")),
        Ok(text) => Ok(text.to_owned()),
        Err(_) => Err(format!("Secret {name} key {key} is not UTF-8 text")),
    }
}

/// The innermost cause of a failed request, in words (connection refused, DNS, TLS, timeout).
fn cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer within the preflight timeout".to_owned();
    }
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(arm: Arm, answer: Answer) -> ArmCheck {
        let (endpoint, model, credential) = match arm {
            Arm::Canary => ("http://relay.ai.svc:8080/v1", "claude-sonnet-4.5", "relay/api-key"),
            Arm::Stable => ("https://api.openai.com/v1", "gpt-4.1", "openai/api-key"),
        };
        ArmCheck {
            arm,
            endpoint: endpoint.into(),
            model: model.into(),
            credential: Some(credential.into()),
            passes_caller_key: false,
            answer,
        }
    }

    /// Only a missing answer or a 5xx is asked again; every other answer is final.
    #[test]
    fn transient_answers() {
        let table = [
            (Answer::Unreachable("refused".into()), true),
            (Answer::Status(500), true),
            (Answer::Status(503), true),
            (Answer::Status(302), false),
            (Answer::Refused(401), false),
            (Answer::RateLimited, false),
            (Answer::NoModelList(404), false),
            (Answer::Models(vec![]), false),
        ];
        for (answer, transient) in table {
            assert_eq!(answer.is_transient(), transient, "{answer:?}");
        }
    }

    fn served(names: &[&str]) -> Answer {
        Answer::Models(names.iter().map(|n| (*n).to_owned()).collect())
    }

    fn report(canary: Answer, stable: Answer) -> Report {
        Report { canary: check(Arm::Canary, canary), stable: check(Arm::Stable, stable) }
    }

    #[test]
    fn both_arms_serving_their_model_pass() {
        let verdict =
            super::verdict(&report(served(&["claude-sonnet-4.5"]), served(&["gpt-4.1", "o3"])));
        assert!(verdict.passed);
        assert_eq!(verdict.reason, Reason::EndpointsReady);
        assert_eq!(
            verdict.message,
            "canary endpoint http://relay.ai.svc:8080/v1 serves claude-sonnet-4.5; stable \
             endpoint https://api.openai.com/v1 serves gpt-4.1"
        );
    }

    #[test]
    fn a_refused_key_names_the_endpoint_and_the_secret_key() {
        let verdict = super::verdict(&report(Answer::Refused(401), served(&["gpt-4.1"])));
        assert!(!verdict.passed);
        assert_eq!(verdict.reason, Reason::Unauthorized);
        assert_eq!(
            verdict.message,
            "canary endpoint http://relay.ai.svc:8080/v1 answered 401 with credential \
             relay/api-key: the key is missing, revoked or for another account"
        );
    }

    #[test]
    fn a_refusal_without_a_credential_says_which_field_to_set() {
        let mut report = report(served(&["claude-sonnet-4.5"]), Answer::Refused(403));
        report.stable.credential = None;
        let verdict = super::verdict(&report);
        assert_eq!(verdict.reason, Reason::Unauthorized);
        assert!(
            verdict.message.contains(
                "answered 403 without a credential: set spec.stable.credentialsSecretRef"
            ),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_refusal_of_an_arm_that_forwards_callers_keys_is_not_a_failure() {
        let mut report = report(Answer::Refused(401), served(&["gpt-4.1"]));
        report.canary.credential = None;
        report.canary.passes_caller_key = true;
        let verdict = super::verdict(&report);
        assert!(verdict.passed, "{verdict:?}");
        assert!(verdict.message.contains("passCallerAuthorization"), "{}", verdict.message);
    }

    #[test]
    fn a_missing_model_lists_what_is_served_and_the_closest_name() {
        let verdict = super::verdict(&report(
            served(&["claude-opus-4", "claude-sonnet-4-5", "claude-haiku-4-5"]),
            served(&["gpt-4.1"]),
        ));
        assert_eq!(verdict.reason, Reason::ModelNotFound);
        assert_eq!(
            verdict.message,
            "canary endpoint http://relay.ai.svc:8080/v1 does not serve claude-sonnet-4.5 (it \
             lists claude-haiku-4-5, claude-opus-4, claude-sonnet-4-5): did you mean \
             claude-sonnet-4-5?"
        );
    }

    #[test]
    fn a_missing_model_with_nothing_close_says_which_field_to_change() {
        let verdict = super::verdict(&report(served(&["llama-3"]), served(&["gpt-4.1"])));
        assert!(
            verdict.message.ends_with(": set spec.canary.model to one of them"),
            "{}",
            verdict.message
        );
        let many: Vec<String> = (0..14).map(|i| format!("m{i:02}")).collect();
        let verdict = super::verdict(&report(Answer::Models(many), served(&["gpt-4.1"])));
        assert!(verdict.message.contains("m09 and 4 more"), "{}", verdict.message);
    }

    #[test]
    fn an_unreachable_endpoint_gives_the_cause() {
        let verdict = super::verdict(&report(
            served(&["claude-sonnet-4.5"]),
            Answer::Unreachable("Connection refused (os error 111)".into()),
        ));
        assert_eq!(verdict.reason, Reason::EndpointUnreachable);
        assert_eq!(
            verdict.message,
            "stable endpoint https://api.openai.com/v1 is unreachable: Connection refused (os error 111)"
        );
        let verdict = super::verdict(&report(Answer::Status(503), served(&["gpt-4.1"])));
        assert_eq!(verdict.reason, Reason::EndpointUnreachable);
        assert!(verdict.message.ends_with("answered 503 to GET /models"), "{}", verdict.message);
    }

    #[test]
    fn no_model_list_rate_limits_and_odd_bodies_are_not_failures() {
        for answer in [
            Answer::NoModelList(404),
            Answer::NoModelList(405),
            Answer::RateLimited,
            Answer::NotAList,
        ] {
            let verdict = super::verdict(&report(answer.clone(), served(&["gpt-4.1"])));
            assert!(verdict.passed, "{answer:?}: {verdict:?}");
            assert!(
                verdict.message.contains("claude-sonnet-4.5 not checked"),
                "{}",
                verdict.message
            );
        }
    }

    #[test]
    fn the_canary_reason_comes_first_and_every_failing_arm_is_named() {
        let verdict = super::verdict(&report(
            served(&["x"]),
            Answer::NoCredential("Secret openai does not exist in namespace ai: create it".into()),
        ));
        assert_eq!(verdict.reason, Reason::ModelNotFound);
        assert!(
            verdict
                .message
                .contains("; stable credential openai/api-key: Secret openai does not exist"),
            "{}",
            verdict.message
        );
        let verdict = super::verdict(&report(
            served(&["claude-sonnet-4.5"]),
            Answer::NoCredential("x".into()),
        ));
        assert_eq!(verdict.reason, Reason::CredentialUnavailable);
    }

    #[test]
    fn closest_names() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let served = names(&["gpt-4.1", "gpt-4.1-mini", "gpt-4o"]);
        assert_eq!(closest("gpt-41", &served), Some("gpt-4.1"));
        assert_eq!(closest("GPT-4.1-Mini", &served), Some("gpt-4.1-mini"));
        assert_eq!(closest("claude-sonnet-4.5", &served), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
