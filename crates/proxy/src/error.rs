//! OpenAI-style error responses (`{"error":{"message","type","code"}}`) for everything the proxy
//! itself refuses or cannot do. Upstream errors are not wrapped: they pass through unchanged.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// An error answered by the proxy itself, in the shape OpenAI clients parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// `error.code`, e.g. `model_not_found`.
    pub code: &'static str,
    /// `error.message`: one sentence naming what is wrong and the fix.
    pub message: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl ApiError {
    /// 400: the body is not a JSON object.
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_json",
            message: format!(
                "The request body is not valid JSON ({detail}); send a JSON object such as \
                 {{\"model\": \"...\", \"messages\": [...]}}."
            ),
        }
    }

    /// 400: the body has no usable `model`.
    pub fn missing_model(detail: &str) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "missing_model",
            message: format!(
                "The request body field model {detail}; set it to one of the models this proxy \
                 serves (GET /v1/models lists them)."
            ),
        }
    }

    /// 404: no rollout serves this alias.
    pub fn model_not_found(model: &str, served: &[&str]) -> Self {
        let served = if served.is_empty() {
            "none (no routing document is loaded)".to_owned()
        } else {
            served.join(", ")
        };
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            message: format!(
                "The model `{model}` does not exist or is not served by this proxy; served models: \
                 {served}."
            ),
        }
    }

    /// 413: the body is larger than `--max-body-bytes`.
    pub fn body_too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            code: "request_too_large",
            message: format!(
                "The request body is larger than this proxy's limit of {limit} bytes; send a \
                 smaller request or raise --max-body-bytes (MODELROLLOUT_PROXY_MAX_BODY_BYTES)."
            ),
        }
    }

    /// 400: the request body could not be read from the client.
    pub fn body_unreadable(detail: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "body_unreadable",
            message: format!("The request body could not be read ({detail}); resend the request."),
        }
    }

    /// 408: the client did not send its body within `--client-body-timeout`.
    pub fn body_timeout(after: std::time::Duration) -> Self {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            kind: "invalid_request_error",
            code: "request_timeout",
            message: format!(
                "The request body did not arrive within {after:?} (--client-body-timeout); \
                 send it faster or raise the limit."
            ),
        }
    }

    /// 503: the request bodies in flight already fill `--max-inflight-body-bytes`.
    pub fn overloaded(budget: usize) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: "proxy_overloaded",
            message: format!(
                "The proxy is holding its limit of {budget} request body bytes \
                 (--max-inflight-body-bytes); retry shortly."
            ),
        }
    }

    /// 500: the proxy's own configuration stops this request (e.g. an unreadable credential).
    /// Says nothing about the configuration: the log line with the same request id does.
    pub fn internal_configuration(track: &str, model: &str, request_id: &str) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: "proxy_configuration_error",
            message: format!(
                "The {track} upstream of model {model} cannot be called because of a proxy \
                 configuration problem; the operator finds the cause in the proxy log under \
                 request id {request_id}."
            ),
        }
    }

    /// 400: the path holds `..`, an encoded dot segment or an encoded slash.
    pub fn invalid_path(path: &str) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_path",
            message: format!(
                "The request path {path} contains a '..' segment, an encoded dot segment or an \
                 encoded slash; send a plain /v1/... path."
            ),
        }
    }

    /// 502: the upstream could not be reached or broke before answering.
    pub fn upstream_unreachable(
        track: &str,
        endpoint: &str,
        detail: impl std::fmt::Display,
    ) -> Self {
        ApiError {
            status: StatusCode::BAD_GATEWAY,
            kind: "server_error",
            code: "upstream_unreachable",
            message: format!("The {track} upstream {endpoint} could not be reached: {detail}."),
        }
    }

    /// 504: the upstream sent no response headers within `--first-byte-timeout`.
    pub fn upstream_timeout(track: &str, endpoint: &str, after: std::time::Duration) -> Self {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "server_error",
            code: "upstream_timeout",
            message: format!(
                "The {track} upstream {endpoint} sent no response within {after:?} \
                 (--first-byte-timeout)."
            ),
        }
    }

    /// 400: a pass-through request cannot be attributed to one rollout.
    pub fn ambiguous_route(served: &[&str]) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "ambiguous_route",
            message: format!(
                "This proxy serves several models ({}); name the one whose stable upstream should \
                 answer this request in the x-modelrollout-model header.",
                served.join(", ")
            ),
        }
    }

    /// 404: a `/v1/` path that is neither routed nor on the pass-through list.
    pub fn path_not_allowed(path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "unknown_url",
            message: format!(
                "Unknown request URL: {path}; this proxy passes through the OpenAI API only \
                 (add a prefix with --passthrough-path to pass more)."
            ),
        }
    }

    /// 404: a path outside the OpenAI API.
    pub fn not_found(path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "unknown_url",
            message: format!("Unknown request URL: {path}; this proxy serves the /v1/ API."),
        }
    }

    /// 405: a known path with the wrong method.
    pub fn method_not_allowed(method: &http::Method, path: &str, allowed: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "invalid_request_error",
            code: "method_not_allowed",
            message: format!("{method} is not allowed on {path}; use {allowed}."),
        }
    }

    /// 503: the proxy has no routing table yet.
    pub fn not_ready() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: "routing_not_loaded",
            message: "The proxy has not loaded its routing table yet; retry shortly.".to_owned(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: Body { message: &self.message, kind: self.kind, param: None, code: self.code },
        };
        // A struct of strings always serialises.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// The complete response, with `content-type: application/json`.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.body()));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error serialises as {"error":{"message","type","param","code"}}.
    #[test]
    fn openai_shape() {
        let error = ApiError::model_not_found("gpt-x", &["chat-default", "embed"]);
        let json: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], "model_not_found");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains("gpt-x") && message.contains("chat-default, embed"), "{message}");
        assert_eq!(error.status, StatusCode::NOT_FOUND);
    }

    /// Statuses as documented in crates/proxy/README.md.
    #[test]
    fn statuses() {
        let table = [
            (ApiError::invalid_json("eof"), 400),
            (ApiError::body_too_large(10), 413),
            (ApiError::internal_configuration("canary", "chat", "0123"), 500),
            (ApiError::body_timeout(std::time::Duration::from_secs(1)), 408),
            (ApiError::overloaded(10), 503),
            (ApiError::invalid_path("/v1/../x"), 400),
            (ApiError::path_not_allowed("/v1/x"), 404),
            (ApiError::upstream_unreachable("canary", "http://x", "refused"), 502),
            (
                ApiError::upstream_timeout("stable", "http://x", std::time::Duration::from_secs(1)),
                504,
            ),
        ];
        for (error, status) in table {
            assert_eq!(error.status.as_u16(), status, "{error:?}");
        }
    }
}
