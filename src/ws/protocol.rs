//! The `/ws` wire protocol: client operations in, reply frames out (SPEC "WebSocket push").
//!
//! Client frames are parsed in two steps, JSON first and then the operation, so that a
//! malformed frame gets `invalid_json` and a well-formed frame with a bad field gets
//! `validation_failed` naming it. Replies echo the request's `id` (any JSON value) when present.
//! Event frames are not here: the fan-out encodes them once per invalidation
//! ([`crate::fanout::frame`]).
//!
//! Choices where SPEC is silent:
//! * error codes: malformed JSON and binary frames are `invalid_json`; a frame that is not an
//!   object, an unknown `op`, a missing or mistyped field, an empty / too long / control-char
//!   key or pattern, and per-connection limits are `validation_failed`; a regex or glob that
//!   does not compile is `invalid_pattern`; a key or pattern outside the token's prefixes is
//!   `forbidden`. A refused frame changes nothing (subscribe and track are all-or-nothing).
//! * empty `patterns` / `keys` lists are accepted (the reply reports the current state).
//! * `unsubscribe` of a pattern the connection does not hold is ignored.
//! * close codes: 4008 "slow consumer", 1001 on server shutdown, 1009 for a client frame over
//!   `limits.max_ws_frame_bytes`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::ErrorCode;
use crate::fanout::frame::json_frame;
use crate::pattern::{Pattern, PatternError, PatternType};

/// Protocol version announced in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A pattern as a client writes it: a string, or `{"pattern", "pattern_type"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternSpec {
    pub pattern: String,
    pub pattern_type: Option<PatternType>,
}

/// A client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Subscribe(Vec<PatternSpec>),
    Unsubscribe(Vec<PatternSpec>),
    Track(Vec<String>),
    Untrack(Vec<String>),
    Resume { epoch: String, since_seq: u64 },
    Ping,
}

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub op: Op,
}

/// A refused client frame; becomes an `error` frame, the connection stays up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct FrameError {
    pub id: Option<Value>,
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            id: None,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn with_id(mut self, id: Option<Value>) -> Self {
        self.id = id;
        self
    }

    /// Map a pattern compile error to SPEC's codes.
    pub fn from_pattern(source: &str, err: PatternError) -> Self {
        let code = match err {
            PatternError::Empty | PatternError::TooLong { .. } | PatternError::ControlChar => {
                ErrorCode::ValidationFailed
            }
            PatternError::Invalid(_) | PatternError::TooBig { .. } => ErrorCode::InvalidPattern,
        };
        Self::new(code, format!("pattern {source:?}: {err}"))
    }
}

/// Parse one text frame.
pub fn parse(text: &str) -> Result<Request, FrameError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(FrameError::validation(
            "a frame must be a JSON object with an \"op\" field",
        ));
    };
    let id = obj.remove("id");
    let op = parse_op(&mut obj).map_err(|e| e.with_id(id.clone()))?;
    Ok(Request { id, op })
}

fn parse_op(obj: &mut serde_json::Map<String, Value>) -> Result<Op, FrameError> {
    let op = match obj.get("op") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(FrameError::validation("\"op\" must be a string")),
        None => return Err(FrameError::validation("missing field \"op\"")),
    };
    match op.as_str() {
        "subscribe" => Ok(Op::Subscribe(patterns(obj)?)),
        "unsubscribe" => Ok(Op::Unsubscribe(patterns(obj)?)),
        "track" => Ok(Op::Track(keys(obj)?)),
        "untrack" => Ok(Op::Untrack(keys(obj)?)),
        "ping" => Ok(Op::Ping),
        "resume" => {
            let epoch = match obj.get("epoch") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(FrameError::validation("\"epoch\" must be a string")),
            };
            let since_seq = obj
                .get("since_seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    FrameError::validation("\"since_seq\" must be a non-negative integer")
                })?;
            Ok(Op::Resume { epoch, since_seq })
        }
        other => Err(FrameError::validation(format!(
            "unknown op {other:?} (expected subscribe, unsubscribe, track, untrack, resume or ping)"
        ))),
    }
}

fn patterns(obj: &mut serde_json::Map<String, Value>) -> Result<Vec<PatternSpec>, FrameError> {
    let Some(Value::Array(items)) = obj.remove("patterns") else {
        return Err(FrameError::validation("\"patterns\" must be an array"));
    };
    items.into_iter().map(pattern_spec).collect()
}

fn pattern_spec(item: Value) -> Result<PatternSpec, FrameError> {
    match item {
        Value::String(pattern) => Ok(PatternSpec {
            pattern,
            pattern_type: None,
        }),
        Value::Object(mut o) => {
            let Some(Value::String(pattern)) = o.remove("pattern") else {
                return Err(FrameError::validation(
                    "a pattern object needs a string \"pattern\"",
                ));
            };
            let pattern_type = match o.remove("pattern_type") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(PatternType::parse(&t).ok_or_else(|| {
                    FrameError::validation(format!(
                        "unknown pattern_type {t:?} (expected exact, prefix, suffix, glob or regex)"
                    ))
                })?),
                Some(_) => return Err(FrameError::validation("\"pattern_type\" must be a string")),
            };
            Ok(PatternSpec {
                pattern,
                pattern_type,
            })
        }
        _ => Err(FrameError::validation(
            "each pattern must be a string or an object",
        )),
    }
}

fn keys(obj: &mut serde_json::Map<String, Value>) -> Result<Vec<String>, FrameError> {
    let Some(Value::Array(items)) = obj.remove("keys") else {
        return Err(FrameError::validation(
            "\"keys\" must be an array of strings",
        ));
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            _ => Err(FrameError::validation(
                "\"keys\" must be an array of strings",
            )),
        })
        .collect()
}

/// Check one key against the request limits (same rules as the HTTP API).
pub fn validate_key(key: &str, max_bytes: usize) -> Result<(), FrameError> {
    if key.is_empty() {
        return Err(FrameError::validation("keys must not be empty strings"));
    }
    if key.len() > max_bytes {
        return Err(FrameError::validation(format!(
            "key of {} bytes is over the limit of {max_bytes}",
            key.len()
        )));
    }
    if key.bytes().any(|b| b.is_ascii_control()) {
        return Err(FrameError::validation(
            "keys must not contain ASCII control characters",
        ));
    }
    Ok(())
}

/// A pattern in a `subscribed` / `unsubscribed` reply.
#[derive(Debug, Serialize)]
pub struct PatternOut<'a> {
    pub pattern: &'a str,
    pub pattern_type: &'static str,
}

impl<'a> From<&'a Pattern> for PatternOut<'a> {
    fn from(p: &'a Pattern) -> Self {
        PatternOut {
            pattern: p.source(),
            pattern_type: p.kind().as_str(),
        }
    }
}

/// Server frames other than `invalidate`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<'a> {
    Hello {
        protocol: u32,
        node_id: &'a str,
        epoch: &'a str,
        seq: u64,
    },
    Subscribed {
        patterns: Vec<PatternOut<'a>>,
        seq: u64,
    },
    Unsubscribed {
        patterns: Vec<PatternOut<'a>>,
        seq: u64,
    },
    Tracked {
        count: usize,
    },
    Untracked {
        count: usize,
    },
    Resumed {
        replayed: u64,
        seq: u64,
    },
    Reset {
        reason: &'static str,
    },
    Pong {
        seq: u64,
    },
    Heartbeat {
        seq: u64,
    },
    Error {
        code: &'static str,
        message: &'a str,
    },
}

#[derive(Serialize)]
struct WithId<'a> {
    #[serde(flatten)]
    reply: &'a Reply<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

/// Encode a reply as a complete text frame, echoing `id`.
pub fn encode(reply: &Reply<'_>, id: Option<&Value>) -> Bytes {
    json_frame(&WithId { reply, id })
}

/// Encode an `error` frame.
pub fn encode_error(err: &FrameError) -> Bytes {
    encode(
        &Reply::Error {
            code: err.code.as_str(),
            message: &err.message,
        },
        err.id.as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::frame::payload;

    fn json(frame: &Bytes) -> Value {
        serde_json::from_slice(payload(frame)).unwrap()
    }

    #[test]
    fn parses_every_op() {
        let r = parse(r#"{"op":"subscribe","id":7,"patterns":["user:*",{"pattern":"o:[0-9]+","pattern_type":"regex"}]}"#).unwrap();
        assert_eq!(r.id, Some(Value::from(7)));
        assert_eq!(
            r.op,
            Op::Subscribe(vec![
                PatternSpec {
                    pattern: "user:*".into(),
                    pattern_type: None
                },
                PatternSpec {
                    pattern: "o:[0-9]+".into(),
                    pattern_type: Some(PatternType::Regex)
                },
            ])
        );
        assert_eq!(
            parse(r#"{"op":"track","keys":["a","b"]}"#).unwrap().op,
            Op::Track(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse(r#"{"op":"untrack","keys":[]}"#).unwrap().op,
            Op::Untrack(vec![])
        );
        assert_eq!(parse(r#"{"op":"ping"}"#).unwrap().op, Op::Ping);
        assert_eq!(
            parse(r#"{"op":"resume","epoch":"e","since_seq":3}"#)
                .unwrap()
                .op,
            Op::Resume {
                epoch: "e".into(),
                since_seq: 3
            }
        );
    }

    #[test]
    fn errors_have_codes_and_keep_the_id() {
        assert_eq!(parse("{nope").unwrap_err().code, ErrorCode::InvalidJson);
        let e = parse(r#"{"op":"fly","id":"x"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::ValidationFailed, Some(Value::from("x")))
        );
        assert_eq!(
            parse(r#"[1]"#).unwrap_err().code,
            ErrorCode::ValidationFailed
        );
        assert_eq!(
            parse(r#"{"op":"track","keys":[1]}"#).unwrap_err().code,
            ErrorCode::ValidationFailed
        );
        assert_eq!(
            parse(r#"{"op":"resume","epoch":"e","since_seq":-1}"#)
                .unwrap_err()
                .code,
            ErrorCode::ValidationFailed
        );
        let e = parse(r#"{"op":"subscribe","patterns":[{"pattern":"a","pattern_type":"nope"}]}"#)
            .unwrap_err();
        assert!(e.message.contains("pattern_type"));
    }

    #[test]
    fn replies_are_spec_shaped() {
        let hello = json(&encode(
            &Reply::Hello {
                protocol: 1,
                node_id: "n",
                epoch: "e",
                seq: 4,
            },
            None,
        ));
        assert_eq!(
            hello,
            serde_json::json!({"type":"hello","protocol":1,"node_id":"n","epoch":"e","seq":4})
        );
        let id = Value::from("q");
        let pong = json(&encode(&Reply::Pong { seq: 9 }, Some(&id)));
        assert_eq!(pong, serde_json::json!({"type":"pong","seq":9,"id":"q"}));
        let err = json(&encode_error(&FrameError::new(ErrorCode::Forbidden, "no")));
        assert_eq!(
            err,
            serde_json::json!({"type":"error","code":"forbidden","message":"no"})
        );
    }

    #[test]
    fn key_rules() {
        assert!(validate_key("a", 4).is_ok());
        assert!(validate_key("", 4).is_err());
        assert!(validate_key("abcde", 4).is_err());
        assert!(validate_key("a\nb", 4).is_err());
    }
}
