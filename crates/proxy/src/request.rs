//! Reading an OpenAI request body without disturbing it: find the top-level `model` (and the
//! sticky body field) and splice a new `model` value in, keeping every other byte as the client
//! sent it (unknown fields, tools, images, `stream_options`, number formatting, key order).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// The top-level fields of a JSON request body, each with the byte range of its value.
#[derive(Debug)]
pub struct InspectedBody<'a> {
    body: &'a [u8],
    fields: Vec<(Cow<'a, str>, Range<usize>)>,
    model_index: usize,
    model: Cow<'a, str>,
}

impl<'a> InspectedBody<'a> {
    /// Parses `body` as a JSON object with a string `model`; anything else is a 400.
    pub fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let TopLevelFields(raw_fields) =
            <TopLevelFields<'a> as de::Deserialize>::deserialize(&mut deserializer)
                .map_err(ApiError::invalid_json)?;
        deserializer.end().map_err(ApiError::invalid_json)?;
        let mut fields = Vec::with_capacity(raw_fields.len());
        for (name, raw) in raw_fields {
            fields.push((name, span_of(body, raw.get())?));
        }
        let mut model_positions =
            fields.iter().enumerate().filter(|(_, (name, _))| name == "model");
        let Some((model_index, _)) = model_positions.next() else {
            return Err(ApiError::missing_model("is missing"));
        };
        if model_positions.next().is_some() {
            return Err(ApiError::missing_model("appears more than once"));
        }
        let model_raw = &body[fields[model_index].1.clone()];
        let model: Cow<'a, str> = match serde_json::from_slice::<Cow<'a, str>>(model_raw) {
            Ok(model) if !model.is_empty() => model,
            Ok(_) => return Err(ApiError::missing_model("is empty")),
            Err(_) => return Err(ApiError::missing_model("must be a string")),
        };
        Ok(InspectedBody { body, fields, model_index, model })
    }

    /// The `model` the client asked for (unescaped).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The sticky key bytes from top-level field `name`: a string's unescaped content, any other
    /// value's JSON text; `None` when the field is absent or `null`.
    pub fn sticky_value(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        let (_, span) = self.fields.iter().rev().find(|(field, _)| field == name)?;
        let raw = &self.body[span.clone()];
        match raw.first() {
            Some(b'"') => match serde_json::from_slice::<Cow<'a, str>>(raw).ok()? {
                Cow::Borrowed(s) => Some(Cow::Borrowed(s.as_bytes())),
                Cow::Owned(s) => Some(Cow::Owned(s.into_bytes())),
            },
            Some(b'n') => None,
            _ => Some(Cow::Borrowed(raw)),
        }
    }

    /// The body with `model` replaced by `model_json` (an already-encoded JSON string).
    pub fn with_model(&self, model_json: &[u8]) -> Bytes {
        let span = &self.fields[self.model_index].1;
        let mut out = Vec::with_capacity(self.body.len() - span.len() + model_json.len());
        out.extend_from_slice(&self.body[..span.start]);
        out.extend_from_slice(model_json);
        out.extend_from_slice(&self.body[span.end..]);
        Bytes::from(out)
    }
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

struct TopLevelFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for TopLevelFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = TopLevelFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(FieldName(name)) = map.next_key::<FieldName<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            fields.push((name, value));
        }
        Ok(TopLevelFields(fields))
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
            let inspected = InspectedBody::parse(input.as_bytes()).unwrap();
            assert_eq!(inspected.model(), "chat", "{input}");
            let out = inspected.with_model(&encode_model("gpt-4.1"));
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        }
    }

    /// Model names that need escaping are encoded as JSON strings.
    #[test]
    fn escapes_new_model() {
        let inspected = InspectedBody::parse(br#"{"model":"a"}"#).unwrap();
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
        for (body, code) in table {
            let error = InspectedBody::parse(body).unwrap_err();
            assert_eq!(error.code, code, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(error.status, 400);
        }
    }

    /// The sticky field yields a string's content, another value's text, nothing for null/absent.
    #[test]
    fn sticky_values() {
        let body = br#"{"model":"m","user":"u-\u0031","n":42,"obj":{"a": 1},"nil":null}"#;
        let inspected = InspectedBody::parse(body).unwrap();
        let table: [(&str, Option<&[u8]>); 5] = [
            ("user", Some(b"u-1")),
            ("n", Some(b"42")),
            ("obj", Some(b"{\"a\": 1}")),
            ("nil", None),
            ("absent", None),
        ];
        for (field, expected) in table {
            assert_eq!(inspected.sticky_value(field).as_deref(), expected, "{field}");
        }
    }
}
