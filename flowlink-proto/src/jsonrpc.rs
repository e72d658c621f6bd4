//! JSON-RPC 2.0 framing for the MCP stdio transport.
//!
//! A line is parsed into a [`Frame`]: one [`Message`] or a batch of them. A [`Message`] keeps its
//! top-level members in order with raw JSON values, so forwarding re-emits every value exactly as the
//! peer wrote it; only the members the relay changes (usually `id`) are replaced.
//!
//! Duplicate member names are rejected wherever this module decodes JSON. A proxy that reads the
//! first `"name"` while the server reads the last one would be deciding about a different call than
//! the one that runs; refusing such input closes that gap.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// JSON-RPC error code: the line was not valid JSON (or not UTF-8).
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error code: the JSON was not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC error code: the method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC error code: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC error code: internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// FlowLink: the wrapped MCP server exited while the request was in flight.
pub const SERVER_EXITED: i64 = -32001;
/// FlowLink: a rate limit of the policy refused the call; `data.retryAfterMs` says when to retry.
pub const RATE_LIMITED: i64 = -32002;
/// FlowLink: the message exceeded the proxy's size limit.
pub const MESSAGE_TOO_LARGE: i64 = -32003;
/// FlowLink: the call could not be decided (policy or audit store unavailable) and was not forwarded.
pub const DECISION_UNAVAILABLE: i64 = -32004;

/// Why a line could not be turned into a [`Frame`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The line held only whitespace; the relay skips it.
    #[error("empty line")]
    Empty,
    /// The bytes were not UTF-8.
    #[error("line is not valid UTF-8 (byte {valid_up_to} onwards)")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The text was not JSON, or had duplicate member names.
    #[error("line is not valid JSON: {0}")]
    Json(String),
    /// The JSON was valid but not a JSON-RPC object (or array of objects).
    #[error("not a JSON-RPC message: {0}")]
    NotJsonRpc(String),
}

/// One line of the stdio transport.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A single message.
    Single(Message),
    /// A JSON-RPC batch (protocol revision 2025-03-26 only, but accepted from anyone).
    Batch(Vec<Message>),
}

impl Frame {
    /// Parses one line (without or with its trailing newline).
    pub fn parse(line: &[u8]) -> Result<Frame, FrameError> {
        let text = std::str::from_utf8(line).map_err(|e| FrameError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
        if text.is_empty() {
            return Err(FrameError::Empty);
        }
        if text.starts_with('[') {
            let items: Vec<Box<RawValue>> =
                serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
            if items.is_empty() {
                return Err(FrameError::NotJsonRpc("empty batch".into()));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(Message::from_json(item.get())?);
            }
            Ok(Frame::Batch(out))
        } else {
            Ok(Frame::Single(Message::from_json(text)?))
        }
    }

    /// Serialises the frame as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        match self {
            Frame::Single(m) => m.to_line(),
            Frame::Batch(ms) => {
                let mut out =
                    Vec::with_capacity(ms.iter().map(|m| m.approx_len()).sum::<usize>() + 4);
                out.push(b'[');
                for (i, m) in ms.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    m.write_to(&mut out);
                }
                out.extend_from_slice(b"]\n");
                out
            }
        }
    }
}

/// What a message is, by the members it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`.
    Request,
    /// Has `method` and no `id`.
    Notification,
    /// Has `id` and `result` or `error`, no `method`.
    Response,
}

/// A JSON-RPC id, kept as the exact JSON text the peer sent (`1`, `"abc"`, `null`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// The JSON text of the id.
    pub fn as_json(&self) -> &str {
        &self.0
    }
    /// A numeric id.
    pub fn number(n: u64) -> Id {
        Id(n.to_string())
    }
    /// The id as an unsigned number, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
    /// `null`, the id of an error response to a message whose id could not be read.
    pub fn null() -> Id {
        Id("null".into())
    }
    /// Builds an id from a JSON value (a string, a number or null).
    pub fn from_value(v: &Value) -> Option<Id> {
        match v {
            Value::String(_) | Value::Number(_) | Value::Null => Some(Id(v.to_string())),
            _ => None,
        }
    }
    fn raw(&self) -> Box<RawValue> {
        // An Id's text always came from a valid JSON scalar, so this cannot fail; fall back to null.
        RawValue::from_string(self.0.clone())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One JSON-RPC message: its top-level members in order, values as raw JSON.
#[derive(Debug, Clone)]
pub struct Message {
    members: Vec<(String, Box<RawValue>)>,
    kind: Kind,
    method: Option<String>,
    id: Option<Id>,
}

impl Message {
    /// Parses one JSON object as a JSON-RPC message.
    pub fn from_json(text: &str) -> Result<Message, FrameError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let members = RawMembersSeed
            .deserialize(&mut de)
            .map_err(|e| FrameError::Json(e.to_string()))?;
        de.end().map_err(|e| FrameError::Json(e.to_string()))?;
        Message::from_members(members)
    }

    fn from_members(members: Vec<(String, Box<RawValue>)>) -> Result<Message, FrameError> {
        let find = |k: &str| members.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let method = match find("method") {
            Some(raw) => Some(
                serde_json::from_str::<String>(raw.get())
                    .map_err(|_| FrameError::NotJsonRpc("`method` is not a string".into()))?,
            ),
            None => None,
        };
        let id = match find("id") {
            Some(raw) => {
                let t = raw.get();
                let ok = t == "null"
                    || t.starts_with('"')
                    || t.starts_with('-')
                    || t.as_bytes().first().is_some_and(u8::is_ascii_digit);
                if !ok {
                    return Err(FrameError::NotJsonRpc(
                        "`id` must be a string, a number or null".into(),
                    ));
                }
                Some(Id(t.to_owned()))
            }
            None => None,
        };
        let kind = match (&method, &id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, Some(_)) if find("result").is_some() || find("error").is_some() => {
                Kind::Response
            }
            _ => {
                return Err(FrameError::NotJsonRpc(
                    "neither a request, a notification nor a response".into(),
                ));
            }
        };
        Ok(Message {
            members,
            kind,
            method,
            id,
        })
    }

    /// A request.
    pub fn request(id: Id, method: &str, params: Option<&Value>) -> Message {
        let mut m = vec![
            ("jsonrpc".to_owned(), raw_of(&Value::from("2.0"))),
            ("id".to_owned(), id.raw()),
            ("method".to_owned(), raw_of(&Value::from(method))),
        ];
        if let Some(p) = params {
            m.push(("params".to_owned(), raw_of(p)));
        }
        Message {
            members: m,
            kind: Kind::Request,
            method: Some(method.to_owned()),
            id: Some(id),
        }
    }

    /// A notification.
    pub fn notification(method: &str, params: Option<&Value>) -> Message {
        let mut m = vec![
            ("jsonrpc".to_owned(), raw_of(&Value::from("2.0"))),
            ("method".to_owned(), raw_of(&Value::from(method))),
        ];
        if let Some(p) = params {
            m.push(("params".to_owned(), raw_of(p)));
        }
        Message {
            members: m,
            kind: Kind::Notification,
            method: Some(method.to_owned()),
            id: None,
        }
    }

    /// A successful response.
    pub fn result(id: Id, result: &Value) -> Message {
        Message {
            members: vec![
                ("jsonrpc".to_owned(), raw_of(&Value::from("2.0"))),
                ("id".to_owned(), id.raw()),
                ("result".to_owned(), raw_of(result)),
            ],
            kind: Kind::Response,
            method: None,
            id: Some(id),
        }
    }

    /// An error response.
    pub fn error(id: Id, code: i64, message: &str, data: Option<Value>) -> Message {
        let mut err = Map::new();
        err.insert("code".into(), Value::from(code));
        err.insert("message".into(), Value::from(message));
        if let Some(d) = data {
            err.insert("data".into(), d);
        }
        Message {
            members: vec![
                ("jsonrpc".to_owned(), raw_of(&Value::from("2.0"))),
                ("id".to_owned(), id.raw()),
                ("error".to_owned(), raw_of(&Value::Object(err))),
            ],
            kind: Kind::Response,
            method: None,
            id: Some(id),
        }
    }

    /// What the message is.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The `method` member of a request or notification.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }
    /// The `id` member.
    pub fn id(&self) -> Option<&Id> {
        self.id.as_ref()
    }
    /// Replaces the id (the relay renumbers requests so that ids never collide).
    pub fn set_id(&mut self, id: Id) {
        let raw = id.raw();
        match self.members.iter_mut().find(|(n, _)| n == "id") {
            Some(slot) => slot.1 = raw,
            None => self.members.push(("id".to_owned(), raw)),
        }
        self.id = Some(id);
    }
    /// The raw JSON text of a top-level member.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| &**v)
    }
    /// Replaces (or adds) a top-level member.
    pub fn set(&mut self, name: &str, value: &Value) {
        let raw = raw_of(value);
        match self.members.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = raw,
            None => self.members.push((name.to_owned(), raw)),
        }
    }
    /// Decodes a top-level member strictly (duplicate object keys anywhere are an error).
    pub fn decode(&self, name: &str) -> Result<Option<Value>, FrameError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => strict_value(raw.get()).map(Some),
        }
    }
    /// Whether a response carries `error` rather than `result`.
    pub fn is_error_response(&self) -> bool {
        self.kind == Kind::Response && self.get("error").is_some()
    }

    fn approx_len(&self) -> usize {
        self.members
            .iter()
            .map(|(n, v)| n.len() + v.get().len() + 4)
            .sum::<usize>()
            + 2
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (name, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, name);
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
    }

    /// Serialises the message as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.approx_len() + 1);
        self.write_to(&mut out);
        out.push(b'\n');
        out
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.members.len()))?;
        for (n, v) in &self.members {
            map.serialize_entry(n, v)?;
        }
        map.end()
    }
}

fn raw_of(v: &Value) -> Box<RawValue> {
    // Serialising a serde_json::Value cannot fail (its keys are strings).
    serde_json::value::to_raw_value(v)
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// Decodes JSON text into a [`Value`], refusing duplicate object keys at any depth.
pub fn strict_value(text: &str) -> Result<Value, FrameError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = StrictValueSeed
        .deserialize(&mut de)
        .map_err(|e| FrameError::Json(e.to_string()))?;
    de.end().map_err(|e| FrameError::Json(e.to_string()))?;
    Ok(v)
}

struct RawMembersSeed;

impl<'de> DeserializeSeed<'de> for RawMembersSeed {
    type Value = Vec<(String, Box<RawValue>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(RawMembersVisitor)
    }
}

struct RawMembersVisitor;

impl<'de> Visitor<'de> for RawMembersVisitor {
    type Value = Vec<(String, Box<RawValue>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(String, Box<RawValue>)> = Vec::with_capacity(4);
        while let Some(key) = map.next_key::<String>()? {
            if out.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate member `{key}`")));
            }
            let v: Box<RawValue> = map.next_value()?;
            out.push((key, v));
        }
        Ok(out)
    }
}

struct StrictValueSeed;

impl<'de> DeserializeSeed<'de> for StrictValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictValueVisitor)
    }
}

struct StrictValueVisitor;

impl<'de> Visitor<'de> for StrictValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValueSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(StrictValueSeed)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let members = RawMembersSeed.deserialize(d)?;
        Message::from_members(members).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forwards_members_byte_for_byte() {
        let line = br#"{"jsonrpc":"2.0","id":7,"method":"x/y","params":{"b": 1.50, "a":[1, 2],"_meta":{"traceparent":"00-ab"}},"extra":{"z":true}}"#;
        let Frame::Single(m) = Frame::parse(line).unwrap() else {
            panic!("single")
        };
        assert_eq!(m.kind(), Kind::Request);
        assert_eq!(m.method(), Some("x/y"));
        assert_eq!(m.id().unwrap().as_json(), "7");
        let out = m.to_line();
        assert_eq!(&out[..out.len() - 1], &line[..]);
    }

    #[test]
    fn renumbering_changes_only_the_id() {
        let Frame::Single(mut m) =
            Frame::parse(br#"{"jsonrpc":"2.0","id":"abc","method":"ping"}"#).unwrap()
        else {
            panic!()
        };
        m.set_id(Id::number(42));
        assert_eq!(
            m.to_line(),
            b"{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"ping\"}\n"
        );
    }

    #[test]
    fn classifies_and_rejects() {
        assert_eq!(Frame::parse(b"  \r\n").unwrap_err(), FrameError::Empty);
        assert!(matches!(
            Frame::parse(b"\xff\xfe").unwrap_err(),
            FrameError::NotUtf8 { .. }
        ));
        assert!(matches!(
            Frame::parse(b"hello").unwrap_err(),
            FrameError::Json(_)
        ));
        assert!(matches!(
            Frame::parse(b"{\"jsonrpc\":\"2.0\"}").unwrap_err(),
            FrameError::NotJsonRpc(_)
        ));
        assert!(matches!(
            Frame::parse(b"{\"id\":{},\"method\":\"a\"}").unwrap_err(),
            FrameError::NotJsonRpc(_)
        ));
        let Frame::Single(n) =
            Frame::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(n.kind(), Kind::Notification);
        let Frame::Single(r) =
            Frame::parse(br#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(r.kind(), Kind::Response);
        assert!(r.is_error_response());
    }

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        assert!(Frame::parse(br#"{"id":1,"id":2,"method":"a"}"#).is_err());
        let Frame::Single(m) = Frame::parse(
            br#"{"id":1,"method":"tools/call","params":{"name":"safe","arguments":{"c":"ls","c":"rm -rf /"}}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert!(m.decode("params").is_err());
    }

    #[test]
    fn batches_round_trip() {
        let f = Frame::parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]"#,
        )
        .unwrap();
        let Frame::Batch(ref ms) = f else { panic!() };
        assert_eq!(ms.len(), 2);
        assert_eq!(
            f.to_line(),
            b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"},{\"jsonrpc\":\"2.0\",\"method\":\"b\"}]\n"
        );
        assert!(Frame::parse(b"[]").is_err());
    }

    #[test]
    fn builds_errors_and_results() {
        let e = Message::error(Id::null(), PARSE_ERROR, "bad", Some(json!({"x":1})));
        let v: Value = serde_json::from_slice(&e.to_line()).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad","data":{"x":1}}})
        );
        let r = Message::result(Id::number(3), &json!({"ok":true}));
        assert_eq!(r.kind(), Kind::Response);
    }
}
