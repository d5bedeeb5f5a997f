//! `GET /audit/logs` parameters: parsing, validation, and the response shape.
//!
//! Parsing is pure (no database) so every rule is unit-tested here; the stores only turn a
//! validated [`LogQuery`] into SQL with bind parameters (never string interpolation).
//! Unknown parameters are ignored (SPEC); a known parameter given twice, empty, or with a bad
//! value is 400 `validation_failed` naming it in `field`.

use serde_json::{Value, json};

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// A validated audit-log query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    pub limit: u32,
    pub offset: i64,
    pub triggered_by: Option<String>,
    pub request_id: Option<String>,
    /// An exact key contained in `keys`.
    pub key: Option<String>,
    pub pattern: Option<String>,
    /// Inclusive, unix µs.
    pub since_us: Option<i64>,
    /// Exclusive, unix µs.
    pub until_us: Option<i64>,
    /// Keyset cursor: only rows with `id < before_id`.
    pub before_id: Option<i64>,
}

impl LogQuery {
    /// True when no filter applies, so `total_count` is the whole table (the O(1) counter).
    pub fn unfiltered(&self) -> bool {
        self.triggered_by.is_none()
            && self.request_id.is_none()
            && self.key.is_none()
            && self.pattern.is_none()
            && self.since_us.is_none()
            && self.until_us.is_none()
    }

    /// Parse a raw query string (without the `?`).
    pub fn parse(raw: &str) -> Result<LogQuery, ApiError> {
        let mut q = LogQuery {
            limit: DEFAULT_LIMIT,
            ..LogQuery::default()
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Ok(name) = percent_decode(name) else {
                continue;
            };
            let Some(field) = known(&name) else { continue };
            if seen.contains(&field) {
                return Err(ApiError::validation(
                    field,
                    format!("`{field}` is given more than once"),
                ));
            }
            seen.push(field);
            let value = percent_decode(value).map_err(|m| ApiError::validation(field, m))?;
            if value.is_empty() {
                return Err(ApiError::validation(
                    field,
                    format!("`{field}` must not be empty"),
                ));
            }
            q.set(field, value)?;
        }
        Ok(q)
    }

    fn set(&mut self, field: &'static str, value: String) -> Result<(), ApiError> {
        match field {
            "limit" => {
                self.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::validation(
                            field,
                            format!("`limit` must be an integer in 1..={MAX_LIMIT}"),
                        )
                    })?;
            }
            "offset" => {
                self.offset = value
                    .parse::<i64>()
                    .ok()
                    .filter(|o| *o >= 0)
                    .ok_or_else(|| {
                        ApiError::validation(field, "`offset` must be a non-negative integer")
                    })?;
            }
            "before_id" => {
                self.before_id = Some(value.parse::<i64>().ok().filter(|o| *o > 0).ok_or_else(
                    || ApiError::validation(field, "`before_id` must be a positive integer"),
                )?);
            }
            "since" | "until" => {
                let us = crate::time::parse_rfc3339_us(&value).ok_or_else(|| {
                    ApiError::validation(
                        field,
                        format!(
                            "`{field}` must be an RFC 3339 timestamp, e.g. 2025-01-15T10:30:00Z"
                        ),
                    )
                })?;
                if field == "since" {
                    self.since_us = Some(us);
                } else {
                    self.until_us = Some(us);
                }
            }
            "triggered_by" => self.triggered_by = Some(value),
            "request_id" => self.request_id = Some(value),
            "key" => self.key = Some(value),
            _ => self.pattern = Some(value),
        }
        Ok(())
    }
}

/// The parameter names we know, as `'static` for `ApiError::field`.
fn known(name: &str) -> Option<&'static str> {
    [
        "limit",
        "offset",
        "triggered_by",
        "request_id",
        "key",
        "pattern",
        "since",
        "until",
        "before_id",
    ]
    .into_iter()
    .find(|k| *k == name)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the result
/// must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                match byte {
                    Some(b) => out.push(b),
                    None => return Err("malformed percent-encoding".into()),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "value is not valid UTF-8".into())
}

/// One row as the stores read it back, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub id: i64,
    pub seq: i64,
    pub kind: String,
    pub pattern: Option<String>,
    pub pattern_type: Option<String>,
    /// The stored JSON array text.
    pub keys_json: Option<String>,
    pub matched_count: Option<i64>,
    pub triggered_by: String,
    pub timestamp_us: i64,
    pub request_id: String,
    pub latency_us: Option<i64>,
    pub node_id: Option<String>,
    pub token_name: Option<String>,
    pub soft: bool,
}

impl LogEntry {
    pub fn to_json(&self) -> Value {
        let keys = self
            .keys_json
            .as_deref()
            .and_then(|k| serde_json::from_str::<Value>(k).ok())
            .unwrap_or_else(|| json!([]));
        json!({
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind,
            "pattern": self.pattern,
            "pattern_type": self.pattern_type,
            "keys": keys,
            "matched_count": self.matched_count,
            "triggered_by": self.triggered_by,
            "timestamp": crate::time::format_us(self.timestamp_us),
            "request_id": self.request_id,
            "latency": self.latency_us.map(|us| us / 1000),
            "latency_us": self.latency_us,
            "node_id": self.node_id,
            "token_name": self.token_name,
            "soft": self.soft,
        })
    }
}

/// SPEC's response. `rows` holds up to `limit + 1` entries: the extra one only says
/// `has_more`.
pub fn render(mut rows: Vec<LogEntry>, limit: u32, total_count: i64) -> Value {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let logs: Vec<Value> = rows.iter().map(LogEntry::to_json).collect();
    json!({"logs": logs, "total_count": total_count, "has_more": has_more})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn field_of(raw: &str) -> Option<&'static str> {
        match LogQuery::parse(raw) {
            Err(e) => {
                assert_eq!(e.code, ErrorCode::ValidationFailed);
                e.field
            }
            Ok(_) => None,
        }
    }

    #[test]
    fn defaults_and_unknown_ignored() {
        let q = LogQuery::parse("foo=bar&&x").unwrap();
        assert_eq!(q.limit, 50);
        assert_eq!(q.offset, 0);
        assert!(q.unfiltered());
    }

    #[test]
    fn all_parameters() {
        let q = LogQuery::parse(
            "limit=10&offset=5&triggered_by=cache+manager&request_id=r%2D1&key=user%3A1\
             &pattern=user%3A*&since=2025-01-15T10:30:00Z&until=2025-01-15T11:30:00.5%2B01:00\
             &before_id=99",
        )
        .unwrap();
        assert_eq!(q.limit, 10);
        assert_eq!(q.offset, 5);
        assert_eq!(q.triggered_by.as_deref(), Some("cache manager"));
        assert_eq!(q.request_id.as_deref(), Some("r-1"));
        assert_eq!(q.key.as_deref(), Some("user:1"));
        assert_eq!(q.pattern.as_deref(), Some("user:*"));
        assert_eq!(
            q.since_us,
            crate::time::parse_rfc3339_us("2025-01-15T10:30:00Z")
        );
        assert_eq!(
            q.until_us,
            crate::time::parse_rfc3339_us("2025-01-15T10:30:00.5Z")
        );
        assert_eq!(q.before_id, Some(99));
        assert!(!q.unfiltered());
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(field_of("limit=0"), Some("limit"));
        assert_eq!(field_of("limit=1001"), Some("limit"));
        assert_eq!(field_of("limit=abc"), Some("limit"));
        assert_eq!(field_of("limit=1000"), None);
        assert_eq!(field_of("offset=-1"), Some("offset"));
        assert_eq!(field_of("before_id=0"), Some("before_id"));
        assert_eq!(field_of("since=yesterday"), Some("since"));
        assert_eq!(field_of("until=2025-13-01T00:00:00Z"), Some("until"));
        assert_eq!(field_of("key=%ZZ"), Some("key"));
        assert_eq!(field_of("key=%FF"), Some("key"));
        assert_eq!(field_of("triggered_by="), Some("triggered_by"));
        assert_eq!(field_of("limit=1&limit=2"), Some("limit"));
    }

    #[test]
    fn render_shape() {
        let e = LogEntry {
            id: 3,
            seq: 9,
            kind: "keys".into(),
            pattern: None,
            pattern_type: None,
            keys_json: Some(r#"["a","b"]"#.into()),
            matched_count: Some(2),
            triggered_by: "t".into(),
            timestamp_us: 1_736_937_000_123_456,
            request_id: "r".into(),
            latency_us: Some(1_800),
            node_id: Some("n".into()),
            token_name: None,
            soft: false,
        };
        let v = render(vec![e.clone(), e], 1, 7);
        assert_eq!(v["total_count"], 7);
        assert_eq!(v["has_more"], true);
        let log = &v["logs"][0];
        assert_eq!(log["keys"], json!(["a", "b"]));
        assert_eq!(log["latency"], 1);
        assert_eq!(log["latency_us"], 1800);
        assert_eq!(log["pattern"], Value::Null);
        assert_eq!(log["timestamp"], "2025-01-15T10:30:00.123Z");
        assert_eq!(v["logs"].as_array().unwrap().len(), 1);
    }
}
