//! Request bodies of `POST /invalidate/key` and `POST /invalidate/pattern`: parsing and
//! validation into drafts the publisher can sequence.
//!
//! Parsing is two-phase so that every error names its field: the body is first split into
//! top-level raw values (a syntax error is `invalid_json`), then each known field is decoded
//! with its own type (a wrong type is `validation_failed` with `field`). Unknown fields are
//! ignored; `null` is the same as absent.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::Limits;
use crate::error::{ApiError, ErrorCode};
use crate::pattern::PatternType;

/// Top-level fields of either endpoint, undecoded.
#[derive(Deserialize)]
struct RawBody<'a> {
    #[serde(borrow, default)]
    keys: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pattern: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pattern_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache_keys: Option<&'a RawValue>,
    #[serde(borrow, default)]
    triggered_by: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    soft: Option<&'a RawValue>,
}

/// A validated `POST /invalidate/key` body.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    /// Distinct keys, first-occurrence order.
    pub keys: Vec<String>,
    pub triggered_by: String,
    pub request_id: Option<String>,
    /// Mark stale instead of dropping (SPEC "Soft invalidation").
    pub soft: bool,
}

/// A validated `POST /invalidate/pattern` body (the pattern is not compiled yet).
#[derive(Debug, Clone)]
pub struct PatternRequest {
    pub pattern: String,
    pub pattern_type: Option<PatternType>,
    pub cache_keys: Vec<String>,
    pub triggered_by: String,
    pub request_id: Option<String>,
    pub soft: bool,
}

fn split(body: &[u8]) -> Result<RawBody<'_>, ApiError> {
    let not_object = || ApiError::validation("body", "request body must be a JSON object");
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // serde would map a JSON array onto the struct's fields: refuse anything but an object.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(not_object()),
            Err(e) => Err(ApiError::new(
                ErrorCode::InvalidJson,
                format!("request body is not valid JSON: {e}"),
            )),
        };
    }
    serde_json::from_slice::<RawBody>(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => not_object(),
        _ => ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid JSON: {e}"),
        ),
    })
}

/// Decode one present, non-null field.
fn decode<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &'static str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => serde_json::from_str::<T>(r.get())
            .map(Some)
            .map_err(|_| ApiError::validation(field, format!("`{field}` must be {expected}"))),
    }
}

fn required<T>(v: Option<T>, field: &'static str) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::validation(field, format!("`{field}` is required")))
}

/// No empty strings, no ASCII control characters, at most `max` bytes.
fn check_text(s: &str, field: &'static str, what: &str, max: usize) -> Result<(), ApiError> {
    if s.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{what} must not be empty"),
        ));
    }
    if s.len() > max {
        return Err(ApiError::validation(
            field,
            format!("{what} is {} bytes, over the limit of {max}", s.len()),
        ));
    }
    if s.bytes().any(|b| b.is_ascii_control()) {
        return Err(ApiError::validation(
            field,
            format!("{what} must not contain ASCII control characters"),
        ));
    }
    Ok(())
}

/// The fields every invalidation body shares: `triggered_by`, `request_id`, `soft`.
fn common(raw: &RawBody<'_>, limits: &Limits) -> Result<(String, Option<String>, bool), ApiError> {
    let triggered_by: String = required(
        decode(raw.triggered_by, "triggered_by", "a string")?,
        "triggered_by",
    )?;
    check_text(
        &triggered_by,
        "triggered_by",
        "`triggered_by`",
        limits.max_triggered_by_bytes,
    )?;
    let request_id: Option<String> = decode(raw.request_id, "request_id", "a string")?;
    if let Some(id) = &request_id {
        check_text(
            id,
            "request_id",
            "`request_id`",
            limits.max_request_id_bytes,
        )?;
    }
    let soft: bool = decode(raw.soft, "soft", "a boolean")?.unwrap_or(false);
    Ok((triggered_by, request_id, soft))
}

/// Validate a list of keys: count, each key's text; duplicates removed keeping first order.
fn key_list(
    keys: Vec<String>,
    field: &'static str,
    max_count: usize,
    limits: &Limits,
) -> Result<Vec<String>, ApiError> {
    if keys.len() > max_count {
        return Err(ApiError::validation(
            field,
            format!(
                "`{field}` has {} entries, over the limit of {max_count}",
                keys.len()
            ),
        ));
    }
    for k in &keys {
        check_text(k, field, "a key", limits.max_key_bytes)?;
    }
    Ok(dedup_keep_order(keys))
}

/// Distinct strings in first-occurrence order. O(n): a borrowed hash set marks the first
/// occurrences, then the vector is filtered in place; no string is copied.
pub fn dedup_keep_order(mut keys: Vec<String>) -> Vec<String> {
    if keys.len() < 2 {
        return keys;
    }
    let keep: Vec<bool> = {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.iter().map(|k| seen.insert(k.as_str())).collect()
    };
    if keep.iter().all(|k| *k) {
        return keys;
    }
    let mut i = 0;
    keys.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    keys
}

pub fn parse_key_request(body: &[u8], limits: &Limits) -> Result<KeyRequest, ApiError> {
    let raw = split(body)?;
    let keys: Vec<String> = required(decode(raw.keys, "keys", "an array of strings")?, "keys")?;
    if keys.is_empty() {
        return Err(ApiError::validation("keys", "`keys` must not be empty"));
    }
    let keys = key_list(keys, "keys", limits.max_keys, limits)?;
    let (triggered_by, request_id, soft) = common(&raw, limits)?;
    Ok(KeyRequest {
        keys,
        triggered_by,
        request_id,
        soft,
    })
}

pub fn parse_pattern_request(body: &[u8], limits: &Limits) -> Result<PatternRequest, ApiError> {
    let raw = split(body)?;
    let pattern: String = required(decode(raw.pattern, "pattern", "a string")?, "pattern")?;
    check_text(&pattern, "pattern", "`pattern`", limits.max_pattern_bytes)?;
    let pattern_type = match decode::<String>(raw.pattern_type, "pattern_type", "a string")? {
        None => None,
        Some(t) => Some(PatternType::parse(&t).ok_or_else(|| {
            ApiError::validation(
                "pattern_type",
                format!(
                    "`pattern_type` must be one of exact, prefix, suffix, glob, regex (got {t:?})"
                ),
            )
        })?),
    };
    let cache_keys: Vec<String> =
        decode(raw.cache_keys, "cache_keys", "an array of strings")?.unwrap_or_default();
    let cache_keys = key_list(cache_keys, "cache_keys", limits.max_cache_keys, limits)?;
    let (triggered_by, request_id, soft) = common(&raw, limits)?;
    Ok(PatternRequest {
        pattern,
        pattern_type,
        cache_keys,
        triggered_by,
        request_id,
        soft,
    })
}

/// Which endpoint a body was sent to; part of the idempotency fingerprint so that one
/// `request_id` on both endpoints conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Keys,
    Pattern,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Keys => "keys",
            Endpoint::Pattern => "pattern",
        }
    }
}

/// Hex SHA-256 of the endpoint and the body's canonical JSON: object keys sorted, white space
/// removed, top-level `null` fields dropped (absent == null). Only computed for requests that
/// carry a `request_id`.
pub fn body_fingerprint(endpoint: Endpoint, body: &[u8]) -> String {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.retain(|_, v| !v.is_null());
            serde_json::Value::Object(map).to_string()
        }
        Ok(other) => other.to_string(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let mut h = Sha256::new();
    h.update(endpoint.as_str().as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn key_request_ok_and_deduplicated() {
        let r = parse_key_request(
            br#"{"keys":["a","b","a"],"triggered_by":"me","request_id":null,"x":1}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(r.keys, vec!["a", "b"]);
        assert_eq!(r.request_id, None);
    }

    #[test]
    fn errors_name_their_field() {
        let cases: &[(&[u8], ErrorCode, Option<&str>)] = &[
            (b"{", ErrorCode::InvalidJson, None),
            (b"[1]", ErrorCode::ValidationFailed, Some("body")),
            (
                br#"{"triggered_by":"x"}"#,
                ErrorCode::ValidationFailed,
                Some("keys"),
            ),
            (
                br#"{"keys":[],"triggered_by":"x"}"#,
                ErrorCode::ValidationFailed,
                Some("keys"),
            ),
            (
                br#"{"keys":"a","triggered_by":"x"}"#,
                ErrorCode::ValidationFailed,
                Some("keys"),
            ),
            (
                br#"{"keys":[""],"triggered_by":"x"}"#,
                ErrorCode::ValidationFailed,
                Some("keys"),
            ),
            (
                br#"{"keys":["a\u0001"],"triggered_by":"x"}"#,
                ErrorCode::ValidationFailed,
                Some("keys"),
            ),
            (
                br#"{"keys":["a"]}"#,
                ErrorCode::ValidationFailed,
                Some("triggered_by"),
            ),
            (
                br#"{"keys":["a"],"triggered_by":5}"#,
                ErrorCode::ValidationFailed,
                Some("triggered_by"),
            ),
            (
                br#"{"keys":["a"],"triggered_by":"x","request_id":""}"#,
                ErrorCode::ValidationFailed,
                Some("request_id"),
            ),
        ];
        for (body, code, field) in cases {
            let e = parse_key_request(body, &limits()).unwrap_err();
            assert_eq!(e.code, *code, "{}", String::from_utf8_lossy(body));
            assert_eq!(e.field, *field, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn pattern_type_is_checked() {
        let e = parse_pattern_request(
            br#"{"pattern":"a","pattern_type":"fuzzy","triggered_by":"x"}"#,
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.field, Some("pattern_type"));
        let ok = parse_pattern_request(
            br#"{"pattern":"a*","triggered_by":"x","cache_keys":["a1","a1"]}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(ok.cache_keys, vec!["a1"]);
    }

    #[test]
    fn fingerprint_ignores_order_space_and_nulls() {
        let a = body_fingerprint(
            Endpoint::Keys,
            br#"{"keys":["a"],"triggered_by":"x","request_id":"r"}"#,
        );
        let b = body_fingerprint(
            Endpoint::Keys,
            br#"{ "request_id":"r", "triggered_by":"x","keys":["a"], "cache_keys": null}"#,
        );
        let c = body_fingerprint(
            Endpoint::Pattern,
            br#"{"keys":["a"],"triggered_by":"x","request_id":"r"}"#,
        );
        let d = body_fingerprint(
            Endpoint::Keys,
            br#"{"keys":["b"],"triggered_by":"x","request_id":"r"}"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
