//! Reading an OpenAI request body without disturbing it: find the top-level `model` (and the
//! sticky body field) and splice a new `model` value in, keeping every other byte as the client
//! sent it (unknown fields, tools, images, `stream_options`, number formatting, key order).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// A JSON request body's top-level `model`: its value and where it sits, so it can be replaced;
/// and the value of one sticky field, found in the same pass.
///
/// Only `model`'s span and one sticky value are kept, not an index of every field: a body of
/// millions of tiny fields must not cost more memory than its own bytes. A sticky field other
/// than the one named to [`InspectedBody::parse`] is found by a second pass when asked for.
#[derive(Debug)]
pub struct InspectedBody<'a> {
    body: &'a [u8],
    model_span: Range<usize>,
    model: Cow<'a, str>,
    /// The field named to `parse` and the raw value of its last occurrence (`None`: absent).
    sticky: Option<(Arc<str>, Option<&'a RawValue>)>,
}

impl<'a> InspectedBody<'a> {
    /// Parses `body` as a JSON object with a string `model`; anything else is a 400. The value
    /// of top-level field `sticky_field` is kept from the same pass for [`Self::sticky_value`].
    pub fn parse(body: &'a [u8], sticky_field: Option<&Arc<str>>) -> Result<Self, ApiError> {
        let found = scan(body, "model", sticky_field.map(|name| &**name))
            .map_err(ApiError::invalid_json)?;
        let model_raw = match (found.count, found.last) {
            (1, Some(raw)) => raw,
            (0, _) | (_, None) => return Err(ApiError::missing_model("is missing")),
            _ => return Err(ApiError::missing_model("appears more than once")),
        };
        let model_span = span_of(body, model_raw.get())?;
        let model: Cow<'a, str> = match serde_json::from_str::<Cow<'a, str>>(model_raw.get()) {
            Ok(model) if !model.is_empty() => model,
            Ok(_) => return Err(ApiError::missing_model("is empty")),
            Err(_) => return Err(ApiError::missing_model("must be a string")),
        };
        let sticky = sticky_field.map(|name| (Arc::clone(name), found.other));
        Ok(InspectedBody { body, model_span, model, sticky })
    }

    /// The `model` the client asked for (unescaped).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The sticky key bytes from top-level field `name`: a string's unescaped content, any other
    /// value's JSON text; `None` when the field is absent or `null`. The last occurrence wins.
    pub fn sticky_value(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        let raw = match &self.sticky {
            Some((kept, raw)) if **kept == *name => (*raw)?,
            // Not the field kept by the first pass: a second one (the body is valid JSON).
            _ => scan(self.body, name, None).ok()?.last?,
        };
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => match serde_json::from_str::<Cow<'a, str>>(text).ok()? {
                Cow::Borrowed(s) => Some(Cow::Borrowed(s.as_bytes())),
                Cow::Owned(s) => Some(Cow::Owned(s.into_bytes())),
            },
            Some(b'n') => None,
            _ => Some(Cow::Borrowed(text.as_bytes())),
        }
    }

    /// The body with `model` replaced by `model_json` (an already-encoded JSON string).
    pub fn with_model(&self, model_json: &[u8]) -> Bytes {
        let span = &self.model_span;
        let mut out = Vec::with_capacity(self.body.len() - span.len() + model_json.len());
        out.extend_from_slice(&self.body[..span.start]);
        out.extend_from_slice(model_json);
        out.extend_from_slice(&self.body[span.end..]);
        Bytes::from(out)
    }
}

/// What one pass over the top-level fields found under the wanted names.
struct Found<'a> {
    /// How many times the wanted name occurs.
    count: usize,
    /// The value of its last occurrence.
    last: Option<&'a RawValue>,
    /// The value of the other name's last occurrence.
    other: Option<&'a RawValue>,
}

/// One pass over `body`'s top-level fields, keeping only the values named `wanted` and `other`.
fn scan<'a>(
    body: &'a [u8],
    wanted: &str,
    other: Option<&str>,
) -> Result<Found<'a>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let visitor = FieldVisitor { wanted, other };
    let found = de::Deserializer::deserialize_map(&mut deserializer, visitor)?;
    deserializer.end()?;
    Ok(found)
}

/// Encodes `model` as a JSON string, ready for [`InspectedBody::with_model`].
pub fn encode_model(model: &str) -> Bytes {
    // A &str always serialises.
    Bytes::from(serde_json::to_vec(model).unwrap_or_default())
}

/// Where `value` (a sub-slice of `body` handed out by serde_json) sits inside `body`.
fn span_of(body: &[u8], value: &str) -> Result<Range<usize>, ApiError> {
    let start = (value.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    let end = start.wrapping_add(value.len());
    // serde_json borrows raw values straight from the input; check rather than trust it.
    match body.get(start..end) {
        Some(slice) if slice == value.as_bytes() => Ok(start..end),
        _ => Err(ApiError::invalid_json("a field value could not be located")),
    }
}

struct FieldVisitor<'w> {
    wanted: &'w str,
    other: Option<&'w str>,
}

impl<'de> Visitor<'de> for FieldVisitor<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Found { count: 0, last: None, other: None };
        while let Some(FieldName(name)) = map.next_key::<FieldName<'de>>()? {
            // Every value is parsed (to validate the body) but only borrowed, never stored.
            let value: &'de RawValue = map.next_value()?;
            if name == self.wanted {
                found.count += 1;
                found.last = Some(value);
            }
            if self.other == Some(&*name) {
                found.other = Some(value);
            }
        }
        Ok(found)
    }
}

struct FieldName<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the model value changes; every other byte (spacing, order, unknown fields) stays.
    #[test]
    fn splices_model_only() {
        let table: [(&str, &str); 5] = [
            (r#"{"model":"chat","messages":[]}"#, r#"{"model":"gpt-4.1","messages":[]}"#),
            (
                r#"{ "messages" : [{"role":"user","content":"hi \"model\""}], "model" : "chat" , "x":1.50}"#,
                r#"{ "messages" : [{"role":"user","content":"hi \"model\""}], "model" : "gpt-4.1" , "x":1.50}"#,
            ),
            (
                r#"{"model":"ch\u0061t","tools":[{"type":"function","function":{"name":"f","parameters":{"model":"keep"}}}],"stream_options":{"include_usage":true}}"#,
                r#"{"model":"gpt-4.1","tools":[{"type":"function","function":{"name":"f","parameters":{"model":"keep"}}}],"stream_options":{"include_usage":true}}"#,
            ),
            (
                "{\n  \"model\": \"chat\",\n  \"n\": 12345678901234567890123\n}\n",
                "{\n  \"model\": \"gpt-4.1\",\n  \"n\": 12345678901234567890123\n}\n",
            ),
            (
                r#"{"model":"chat","image":"data:image/png;base64,iVBORw0KGgo="}"#,
                r#"{"model":"gpt-4.1","image":"data:image/png;base64,iVBORw0KGgo="}"#,
            ),
        ];
        for (input, expected) in table {
            let inspected = InspectedBody::parse(input.as_bytes(), None).unwrap();
            assert_eq!(inspected.model(), "chat", "{input}");
            let out = inspected.with_model(&encode_model("gpt-4.1"));
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        }
    }

    /// Model names that need escaping are encoded as JSON strings.
    #[test]
    fn escapes_new_model() {
        let inspected = InspectedBody::parse(br#"{"model":"a"}"#, None).unwrap();
        let out = inspected.with_model(&encode_model("we\"ird/\u{e9}"));
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["model"], "we\"ird/\u{e9}");
    }

    /// Bodies that are not a JSON object with one string model are 400s with a clear code.
    #[test]
    fn rejects_bad_bodies() {
        let table: [(&[u8], &str); 9] = [
            (b"", "invalid_json"),
            (b"{\"model\":", "invalid_json"),
            (b"[1,2]", "invalid_json"),
            (b"{\"model\":\"a\"} trailing", "invalid_json"),
            (b"{\"messages\":[]}", "missing_model"),
            (b"{\"model\":42}", "missing_model"),
            (b"{\"model\":\"\"}", "missing_model"),
            (b"{\"model\":\"a\",\"model\":\"b\"}", "missing_model"),
            (b"\xff\xfe", "invalid_json"),
        ];
        let user: Arc<str> = Arc::from("user");
        for (body, code) in table {
            for sticky_field in [None, Some(&user)] {
                let error = InspectedBody::parse(body, sticky_field).unwrap_err();
                assert_eq!(error.code, code, "{:?}", String::from_utf8_lossy(body));
                assert_eq!(error.status, 400);
            }
        }
    }

    /// Parsing keeps no per-field index: a body of a million fields inspects like a small one
    /// (the struct is the same few words whatever the body holds).
    #[test]
    fn no_per_field_index() {
        let mut body = String::from("{\"model\":\"m\"");
        for i in 0..1_000_000 {
            body.push_str(&format!(",\"f{i}\":0"));
        }
        body.push_str(",\"user\":\"u\"}");
        let inspected = InspectedBody::parse(body.as_bytes(), Some(&Arc::from("user"))).unwrap();
        assert_eq!(inspected.model(), "m");
        assert_eq!(inspected.sticky_value("user").as_deref(), Some(&b"u"[..]));
        assert_eq!(inspected.sticky_value("f7").as_deref(), Some(&b"0"[..]));
        assert!(std::mem::size_of_val(&inspected) <= 12 * std::mem::size_of::<usize>());
    }

    /// The sticky field yields a string's content, another value's text, nothing for null/absent;
    /// the same whether it was kept by the first pass or found by a second one.
    #[test]
    fn sticky_values() {
        let body =
            br#"{"model":"m","user":"u-\u0031","n":42,"obj":{"a": 1},"nil":null,"d":"x","d":"y"}"#;
        let table: [(&str, Option<&[u8]>); 7] = [
            ("user", Some(b"u-1")),
            ("n", Some(b"42")),
            ("obj", Some(b"{\"a\": 1}")),
            ("nil", None),
            ("absent", None),
            // A duplicate: the last occurrence wins.
            ("d", Some(b"y")),
            // Only the top level counts.
            ("a", None),
        ];
        for (field, expected) in table {
            let second_pass = InspectedBody::parse(body, None).unwrap();
            assert_eq!(second_pass.sticky_value(field).as_deref(), expected, "{field}");
            let kept = InspectedBody::parse(body, Some(&Arc::from(field))).unwrap();
            assert_eq!(kept.sticky_value(field).as_deref(), expected, "{field} (kept)");
            // Asking for another field than the kept one still finds it.
            let other = InspectedBody::parse(body, Some(&Arc::from("n"))).unwrap();
            assert_eq!(other.sticky_value(field).as_deref(), expected, "{field} (other kept)");
        }
    }

    /// A sticky field may be `model` itself.
    #[test]
    fn sticky_field_named_model() {
        let inspected =
            InspectedBody::parse(br#"{"model":"m"}"#, Some(&Arc::from("model"))).unwrap();
        assert_eq!(inspected.sticky_value("model").as_deref(), Some(&b"m"[..]));
    }
}
