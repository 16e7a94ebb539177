//! The forced arm for testers (`spec.routing.forceArmHeader`, off by default): a request that
//! carries the rollout's header with value `canary` or `stable` goes to that arm whatever the
//! weight, so a QA team can try the canary at 0 %. Forced requests are counted in their own
//! families (`gray_release_forced_requests_total`, `gray_release_forced_tokens_total`), so the
//! controller's analysis and token budget never see them.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, StatusCode};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::split::Track;
use crate::table::Route;

/// The header name of a routing document's `forceArmHeader`, or why it is not one.
pub fn header_name(name: Option<&str>) -> Result<Option<HeaderName>, String> {
    name.map(|name| {
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            format!("routing document field forceArmHeader is {name:?}: not a header name")
        })
    })
    .transpose()
}

/// `route` with its arms counting into the forced families: what forced requests go through.
pub fn forced_view(route: &Route, metrics: &Metrics) -> Route {
    let mut view = route.clone();
    view.forced = None;
    let document = &route.document;
    for arm in [&mut view.stable, &mut view.canary] {
        arm.metrics = metrics.forced_arm(
            &document.rollout,
            &document.namespace,
            &arm.model,
            arm.track.is_canary(),
        );
    }
    view
}

/// The track a request forces, from its value of the header: `canary` or `stable`, any case.
fn track_of(value: &[u8]) -> Option<Track> {
    if value.eq_ignore_ascii_case(b"canary") {
        Some(Track::Canary)
    } else if value.eq_ignore_ascii_case(b"stable") {
        Some(Track::Stable)
    } else {
        None
    }
}

impl Route {
    /// When the request forces an arm: the route to forward through (its arms count apart) and
    /// the track. `None` when the rollout has no force header, the request does not carry it,
    /// or the rollout is gone (its alias goes to stable, forced or not). A value other than
    /// `canary` or `stable` is refused, so a typo never silently lands on a random arm.
    pub fn forced(&self, headers: &HeaderMap) -> Result<Option<(Arc<Route>, Track)>, ApiError> {
        let Some((name, view)) = self.forced.as_ref() else { return Ok(None) };
        let Some(value) = headers.get(name) else { return Ok(None) };
        if self.retired {
            return Ok(None);
        }
        match track_of(value.as_bytes()) {
            Some(track) => Ok(Some((Arc::clone(view), track))),
            None => Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid_request_error",
                code: "invalid_forced_arm",
                message: format!(
                    "The request header {name} is {:?}; set it to canary or stable to force an \
                     arm of {}, or leave it out.",
                    String::from_utf8_lossy(value.as_bytes()),
                    self.alias()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only `canary` and `stable` force an arm, in any case.
    #[test]
    fn header_values() {
        assert_eq!(track_of(b"canary"), Some(Track::Canary));
        assert_eq!(track_of(b"Stable"), Some(Track::Stable));
        assert_eq!(track_of(b"CANARY"), Some(Track::Canary));
        assert_eq!(track_of(b"canry"), None);
        assert_eq!(track_of(b""), None);
    }

    /// A header name is parsed, a bad one refused naming the field.
    #[test]
    fn header_names() {
        assert_eq!(header_name(None), Ok(None));
        assert_eq!(header_name(Some("X-Force-Arm")).unwrap().unwrap().as_str(), "x-force-arm");
        let err = header_name(Some("X Force")).unwrap_err();
        assert!(err.contains("forceArmHeader"), "{err}");
    }
}
