//! The flat, owned form of one audit row, shared by both stores and the write-ahead log.
//!
//! An [`AuditRecord`] borrows its invalidation through an `Arc` so the
//! request path never copies keys; the writer flattens it into an [`AuditRow`] off the
//! request path, once per record. The same struct is what the write-ahead log frames (as JSON), so a
//! record replayed from disk is byte-for-byte the row that would have been written.
//!
//! Invariant: strings in an `AuditRow` contain no NUL character. PostgreSQL rejects NUL in
//! `text` and `\u0000` in `jsonb`, so a NUL would turn a batch into a poison batch that can
//! never be written; [`AuditRow::from_record`] replaces it with U+FFFD (the only lossy step,
//! and only for input no client should send).

use serde::{Deserialize, Serialize};

use super::AuditRecord;
use crate::event::Target;
use crate::pattern::PatternType;

/// `kind` column: a key invalidation or a pattern invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Keys,
    Pattern,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Keys => "keys",
            Kind::Pattern => "pattern",
        }
    }
}

/// One row of `invalidation_audit` (every column but `id` and `created_at`, which the
/// database assigns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: i64,
    /// Idempotency scope: the token's name, empty in open mode.
    #[serde(default)]
    pub scope: String,
    pub request_id: String,
    pub triggered_by: String,
    pub token_name: Option<String>,
    /// `timestamp` column: when the invalidation was accepted, unix µs.
    pub timestamp_us: i64,
    pub node_id: String,
    pub kind: Kind,
    pub pattern: Option<String>,
    pub pattern_type: Option<PatternType>,
    /// Keys (the capped matched keys of a pattern invalidation).
    pub keys: Vec<String>,
    /// Number of keys, or the full distinct match count of a pattern invalidation.
    pub matched_count: i64,
    pub latency_us: i64,
    pub body_hash: String,
    /// Soft invalidation (mark stale instead of drop).
    #[serde(default)]
    pub soft: bool,
}

/// Replace NUL (see the module invariant); otherwise a plain copy.
fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl AuditRow {
    /// Flatten a record. Cost: one copy of every string and key.
    pub fn from_record(record: &AuditRecord) -> AuditRow {
        let inv = &record.inv;
        let (kind, pattern, pattern_type) = match &inv.target {
            Target::Keys(_) => (Kind::Keys, None, None),
            Target::Pattern { pattern, .. } => (
                Kind::Pattern,
                Some(clean(pattern.source())),
                Some(pattern.kind()),
            ),
        };
        AuditRow {
            seq: to_i64(inv.seq),
            scope: inv.token_name.as_deref().map(clean).unwrap_or_default(),
            request_id: clean(&inv.request_id),
            triggered_by: clean(&inv.triggered_by),
            token_name: inv.token_name.as_deref().map(clean),
            timestamp_us: inv.published_at_us,
            node_id: clean(&inv.node_id),
            kind,
            pattern,
            pattern_type,
            keys: inv.keys().iter().map(|k| clean(k)).collect(),
            matched_count: to_i64(inv.invalidated_count()),
            latency_us: to_i64(record.latency_us),
            body_hash: clean(&record.body_hash),
            soft: inv.soft,
        }
    }

    /// The row with every NUL replaced (see the module invariant): for rows built from
    /// something other than a record (the cluster bus).
    pub fn clean(mut row: AuditRow) -> AuditRow {
        for s in [
            &mut row.scope,
            &mut row.request_id,
            &mut row.triggered_by,
            &mut row.node_id,
            &mut row.body_hash,
        ] {
            if s.contains('\0') {
                *s = clean(s);
            }
        }
        for s in row
            .token_name
            .iter_mut()
            .chain(row.pattern.iter_mut())
            .chain(row.keys.iter_mut())
        {
            if s.contains('\0') {
                *s = clean(s);
            }
        }
        row
    }

    /// `latency_ms` column: whole milliseconds, as in the original design.
    pub fn latency_ms(&self) -> i64 {
        self.latency_us / 1000
    }

    /// `keys` as the JSON array text both stores keep.
    pub fn keys_json(&self) -> String {
        // Serialising a Vec<String> cannot fail.
        serde_json::to_string(&self.keys).unwrap_or_else(|_| "[]".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_replaces_nul_only() {
        assert_eq!(clean("a\0b"), "a\u{FFFD}b");
        assert_eq!(clean("plain"), "plain");
    }

    #[test]
    fn row_round_trips_through_json() {
        let row = AuditRow {
            seq: 7,
            scope: "tenant".into(),
            request_id: "r".into(),
            triggered_by: "t".into(),
            token_name: None,
            timestamp_us: 1_736_938_200_123_000,
            node_id: "n".into(),
            kind: Kind::Pattern,
            pattern: Some("user:*".into()),
            pattern_type: Some(PatternType::Prefix),
            keys: vec!["user:1".into()],
            matched_count: 1,
            latency_us: 1500,
            body_hash: "h".into(),
            soft: true,
        };
        let back: AuditRow = serde_json::from_slice(&serde_json::to_vec(&row).unwrap()).unwrap();
        assert_eq!(back, row);
        assert_eq!(row.latency_ms(), 1);
        assert_eq!(row.keys_json(), r#"["user:1"]"#);
    }
}
