//! The OpenAI wire shapes the mock answers with: request fields it reads, response bodies,
//! stream events and error bodies. Pure functions, no I/O, so every shape is unit-tested.

use bytes::Bytes;
use serde_json::{Value, json};

/// What the mock needs to know about an API request body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiRequest {
    /// The request's `model`, if any.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// Embeddings: how many vectors the `input` asks for.
    pub embedding_inputs: usize,
    /// Embeddings: `dimensions`, if given.
    pub dimensions: Option<usize>,
}

/// Embedding length when the request does not ask for one: small, since nobody reads them.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 8;

impl ApiRequest {
    /// Reads the fields the mock cares about; an empty body (GET) is an empty request.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| format!("the request body is not valid JSON: {error}"))?;
        let Value::Object(object) = value else {
            return Err("the request body must be a JSON object".to_owned());
        };
        let embedding_inputs = match object.get("input") {
            None | Some(Value::Null) => 0,
            // A list of strings or of token lists is one input each; a list of numbers is one.
            Some(Value::Array(items)) if items.iter().all(|item| !item.is_number()) => items.len(),
            Some(_) => 1,
        };
        Ok(Self {
            model: object.get("model").and_then(Value::as_str).map(str::to_owned),
            stream: object.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: object
                .get("stream_options")
                .and_then(|options| options.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            embedding_inputs,
            dimensions: object
                .get("dimensions")
                .and_then(Value::as_u64)
                .and_then(|dimensions| usize::try_from(dimensions).ok()),
        })
    }
}

/// Token counts reported in `usage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    fn chat_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    fn responses_json(self) -> Value {
        json!({
            "input_tokens": self.prompt_tokens,
            "output_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// The text of content chunk `index`; the non-streamed answer is all of them joined.
pub fn content_piece(index: u32) -> String {
    const WORDS: [&str; 8] =
        ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dogs. "];
    WORDS[index as usize % WORDS.len()].to_owned()
}

/// The whole answer text for `chunks` pieces.
pub fn content_text(chunks: u32) -> String {
    (0..chunks).map(content_piece).collect()
}

/// One answer being produced: identity, model and token usage shared by all its shapes.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Sequence number of the request, used in the ids.
    pub sequence: u64,
    /// The model it answers as.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// Number of content pieces.
    pub chunks: u32,
    pub usage: Usage,
}

impl Answer {
    fn chat_id(&self) -> String {
        format!("chatcmpl-mock{:08}", self.sequence)
    }

    /// `POST /v1/chat/completions`, not streamed.
    pub fn chat_completion(&self) -> Value {
        json!({
            "id": self.chat_id(),
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mockllm",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content_text(self.chunks), "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": self.usage.chat_json(),
        })
    }

    fn chat_chunk(&self, delta: Value, finish_reason: Option<&str>, include_usage: bool) -> Value {
        let mut chunk = json!({
            "id": self.chat_id(),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mockllm",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if include_usage {
            // With include_usage every chunk carries `usage: null` except the final usage chunk.
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The SSE events of a streamed chat completion: content chunks (the first also carries the
    /// role), the finish chunk, the usage chunk with empty `choices` if asked for, `[DONE]`.
    pub fn chat_stream(&self, include_usage: bool) -> StreamEvents {
        let content = (0..self.chunks)
            .map(|index| {
                let delta = if index == 0 {
                    json!({"role": "assistant", "content": content_piece(index)})
                } else {
                    json!({"content": content_piece(index)})
                };
                sse_data(&self.chat_chunk(delta, None, include_usage))
            })
            .collect();
        let mut trailer = vec![sse_data(&self.chat_chunk(json!({}), Some("stop"), include_usage))];
        if include_usage {
            trailer.push(sse_data(&json!({
                "id": self.chat_id(),
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_mockllm",
                "choices": [],
                "usage": self.usage.chat_json(),
            })));
        }
        trailer.push(Bytes::from_static(SSE_DONE));
        StreamEvents { content, trailer }
    }

    fn completion_id(&self) -> String {
        format!("cmpl-mock{:08}", self.sequence)
    }

    fn text_completion_with(&self, text: String, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.completion_id(),
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}],
        })
    }

    /// `POST /v1/completions`, not streamed.
    pub fn text_completion(&self) -> Value {
        let mut body = self.text_completion_with(content_text(self.chunks), Some("stop"));
        body["usage"] = self.usage.chat_json();
        body
    }

    /// The SSE events of a streamed legacy completion, shaped like the chat stream.
    pub fn text_completion_stream(&self, include_usage: bool) -> StreamEvents {
        let content = (0..self.chunks)
            .map(|index| sse_data(&self.text_completion_with(content_piece(index), None)))
            .collect();
        let mut trailer = vec![sse_data(&self.text_completion_with(String::new(), Some("stop")))];
        if include_usage {
            trailer.push(sse_data(&json!({
                "id": self.completion_id(),
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage.chat_json(),
            })));
        }
        trailer.push(Bytes::from_static(SSE_DONE));
        StreamEvents { content, trailer }
    }

    fn response_id(&self) -> String {
        format!("resp_mock{:08}", self.sequence)
    }

    fn response_with(&self, status: &str, text: Option<String>) -> Value {
        let output = match text {
            Some(text) => json!([{
                "type": "message",
                "id": format!("msg_mock{:08}", self.sequence),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }]),
            None => json!([]),
        };
        let usage = if status == "completed" { self.usage.responses_json() } else { Value::Null };
        json!({
            "id": self.response_id(),
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
        })
    }

    /// `POST /v1/responses`, not streamed.
    pub fn response(&self) -> Value {
        self.response_with("completed", Some(content_text(self.chunks)))
    }

    /// The SSE events of a streamed Responses API call: `response.created`, one
    /// `response.output_text.delta` per piece, `response.completed` (no `[DONE]` in this API).
    pub fn response_stream(&self) -> StreamEvents {
        let item_id = format!("msg_mock{:08}", self.sequence);
        let created = sse_event(
            "response.created",
            &json!({"type": "response.created", "sequence_number": 0,
                    "response": self.response_with("in_progress", None)}),
        );
        let mut content = vec![];
        for index in 0..self.chunks {
            let delta = sse_event(
                "response.output_text.delta",
                &json!({"type": "response.output_text.delta", "sequence_number": index + 1,
                        "item_id": item_id, "output_index": 0, "content_index": 0,
                        "delta": content_piece(index)}),
            );
            if index == 0 {
                // `response.created` goes out with the first piece so TTFT means the same here.
                content.push([created.clone(), delta].concat().into());
            } else {
                content.push(delta);
            }
        }
        if content.is_empty() {
            content.push(created);
        }
        let completed = sse_event(
            "response.completed",
            &json!({"type": "response.completed", "sequence_number": self.chunks + 1,
                    "response": self.response()}),
        );
        StreamEvents { content, trailer: vec![completed] }
    }

    /// `POST /v1/embeddings`: `inputs` deterministic vectors of `dimensions` floats.
    pub fn embeddings(&self, inputs: usize, dimensions: usize) -> Value {
        let data: Vec<Value> = (0..inputs)
            .map(|index| {
                let embedding: Vec<f64> = (0..dimensions)
                    .map(|position| ((index * 31 + position * 7) % 100) as f64 / 100.0 - 0.5)
                    .collect();
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        json!({
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "total_tokens": self.usage.prompt_tokens},
        })
    }
}

/// The events of one stream: content events are paced by TTFT and the inter-chunk delay; the
/// trailer (finish, usage, `[DONE]`) follows the last content event at once.
#[derive(Clone, Debug)]
pub struct StreamEvents {
    pub content: Vec<Bytes>,
    pub trailer: Vec<Bytes>,
}

/// The SSE end-of-stream line of the chat and completions APIs.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// One `data: {json}\n\n` line.
pub fn sse_data(value: &Value) -> Bytes {
    format!("data: {value}\n\n").into()
}

/// One `event: NAME\ndata: {json}\n\n` block (Responses API).
pub fn sse_event(name: &str, value: &Value) -> Bytes {
    format!("event: {name}\ndata: {value}\n\n").into()
}

/// `GET /v1/models`.
pub fn models_list(models: &[String], created: u64) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "modelrollout-mockllm"}))
        .collect();
    json!({"object": "list", "data": data})
}

/// An OpenAI-style error body: `{"error":{"message","type","param","code"}}`.
pub fn error_body(message: &str, error_type: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": error_type, "param": null, "code": code}})
}

/// The error body OpenAI sends with `status` (type and code as its API uses them).
pub fn injected_error_body(status: u16) -> Value {
    let (error_type, code) = match status {
        400 => ("invalid_request_error", None),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("invalid_request_error", Some("unsupported_country_region_territory")),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        503 => ("server_error", Some("service_unavailable")),
        _ => ("server_error", None),
    };
    error_body(
        &format!("modelrollout-mockllm injected this {status} error (errorRate knob)"),
        error_type,
        code,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(chunks: u32) -> Answer {
        Answer {
            sequence: 3,
            model: "gpt-4.1".into(),
            created: 1_700_000_000,
            chunks,
            usage: Usage { prompt_tokens: 11, completion_tokens: 22 },
        }
    }

    /// Strips `data: ` and the blank line of an SSE data event and parses the JSON.
    fn data_json(event: &Bytes) -> Value {
        let text = std::str::from_utf8(event).unwrap();
        let json = text.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
        serde_json::from_str(json).unwrap()
    }

    /// The request fields the mock reads, for each shape a client can send.
    #[test]
    fn parse_request_table() {
        let cases: &[(&str, &str, Result<ApiRequest, &str>)] = &[
            ("empty body is an empty request", "", Ok(ApiRequest::default())),
            (
                "model and stream with usage",
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
                Ok(ApiRequest {
                    model: Some("m".into()),
                    stream: true,
                    include_usage: true,
                    ..ApiRequest::default()
                }),
            ),
            (
                "one string input is one embedding",
                r#"{"input":"hi"}"#,
                Ok(ApiRequest { embedding_inputs: 1, ..ApiRequest::default() }),
            ),
            (
                "a list of strings is one embedding each, with dimensions",
                r#"{"input":["a","b","c"],"dimensions":4}"#,
                Ok(ApiRequest {
                    embedding_inputs: 3,
                    dimensions: Some(4),
                    ..ApiRequest::default()
                }),
            ),
            (
                "a list of token ids is one embedding",
                r#"{"input":[1,2,3]}"#,
                Ok(ApiRequest { embedding_inputs: 1, ..ApiRequest::default() }),
            ),
            ("invalid JSON is refused", "{", Err("not valid JSON")),
            ("a JSON array is refused", "[]", Err("must be a JSON object")),
        ];
        for (rule, body, expected) in cases {
            match (ApiRequest::parse(body.as_bytes()), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{rule}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{rule}: {got}"),
                (got, want) => panic!("{rule}: got {got:?}, expected {want:?}"),
            }
        }
    }

    /// A non-streamed chat completion has the documented shape and the joined text.
    #[test]
    fn chat_completion_shape() {
        let body = answer(3).chat_completion();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4.1");
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(body["choices"][0]["message"]["content"], "The quick brown ");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens":11,"completion_tokens":22,"total_tokens":33})
        );
    }

    /// A chat stream without usage: N content chunks, a finish chunk, `[DONE]`, no usage keys.
    #[test]
    fn chat_stream_without_usage() {
        let events = answer(2).chat_stream(false);
        assert_eq!(events.content.len(), 2);
        let first = data_json(&events.content[0]);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"], json!({"role":"assistant","content":"The "}));
        assert!(first.get("usage").is_none());
        assert_eq!(
            data_json(&events.content[1])["choices"][0]["delta"],
            json!({"content":"quick "})
        );
        assert_eq!(events.trailer.len(), 2);
        assert_eq!(data_json(&events.trailer[0])["choices"][0]["finish_reason"], "stop");
        assert_eq!(events.trailer[1], Bytes::from_static(b"data: [DONE]\n\n"));
    }

    /// With include_usage: `usage: null` on every chunk, then a usage chunk with empty choices.
    #[test]
    fn chat_stream_with_usage() {
        let events = answer(2).chat_stream(true);
        for event in events.content.iter().chain(&events.trailer[..1]) {
            assert_eq!(data_json(event)["usage"], Value::Null);
            assert!(data_json(event).get("usage").is_some());
        }
        let usage = data_json(&events.trailer[1]);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 33);
        assert_eq!(events.trailer[2], Bytes::from_static(SSE_DONE));
    }

    /// Legacy completions: text_completion objects, streamed the same way.
    #[test]
    fn text_completion_shapes() {
        let body = answer(2).text_completion();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "The quick ");
        assert_eq!(body["usage"]["prompt_tokens"], 11);
        let events = answer(2).text_completion_stream(true);
        assert_eq!(data_json(&events.content[1])["choices"][0]["text"], "quick ");
        assert_eq!(data_json(&events.trailer[1])["choices"], json!([]));
        assert_eq!(events.trailer.last().unwrap(), &Bytes::from_static(SSE_DONE));
    }

    /// Responses API: a completed response object, and a created/delta/completed event stream.
    #[test]
    fn responses_shapes() {
        let body = answer(2).response();
        assert_eq!(body["object"], "response");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["output"][0]["content"][0]["text"], "The quick ");
        assert_eq!(body["usage"]["output_tokens"], 22);
        let events = answer(2).response_stream();
        let first = std::str::from_utf8(&events.content[0]).unwrap();
        assert!(first.starts_with("event: response.created\n"), "{first}");
        assert!(first.contains("event: response.output_text.delta\n"), "{first}");
        let last = std::str::from_utf8(&events.trailer[0]).unwrap();
        assert!(last.starts_with("event: response.completed\n"), "{last}");
    }

    /// Embeddings: one vector per input, of the asked dimension, in a list.
    #[test]
    fn embeddings_shape() {
        let body = answer(1).embeddings(2, 5);
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 5);
        assert_eq!(body["usage"], json!({"prompt_tokens":11,"total_tokens":11}));
    }

    /// Models list and error bodies have the OpenAI shapes.
    #[test]
    fn models_and_errors() {
        let models = models_list(&["a".into()], 5);
        assert_eq!(
            models,
            json!({"object":"list","data":[{"id":"a","object":"model","created":5,"owned_by":"modelrollout-mockllm"}]})
        );
        let error = injected_error_body(429);
        assert_eq!(error["error"]["type"], "requests");
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");
        assert!(error["error"]["message"].as_str().unwrap().contains("429"));
        assert_eq!(injected_error_body(500)["error"]["code"], Value::Null);
    }
}
