//! The JSON payload of one stream message: an accepted invalidation without its `seq` (the
//! stream sequence is the `seq`), plus what the shared audit consumer needs to write its row.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::record::{AuditRow, Kind};
use crate::event::{Invalidation, Target};
use crate::pattern::{Pattern, PatternCache, PatternError, PatternType};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEvent {
    pub request_id: String,
    pub triggered_by: String,
    pub token_name: Option<String>,
    pub published_at_us: i64,
    pub node_id: String,
    /// Request body fingerprint (cross-node idempotency: same id, other body → 409).
    pub body_hash: String,
    /// Keys of a key invalidation, or the accepting node's matched keys of a pattern.
    pub keys: Vec<String>,
    /// The pattern's canonical form: with `pattern_type` as an explicit type it means the
    /// same key set on every node (see [`Pattern::canonical`]).
    pub pattern: Option<String>,
    pub pattern_type: Option<PatternType>,
    /// The pattern as the client wrote it (the audit row and duplicate answers show it).
    #[serde(default)]
    pub pattern_source: Option<String>,
    pub matched_count: u64,
    /// Request receipt to the publish, µs (the audit row's latency).
    #[serde(default)]
    pub latency_us: u64,
    #[serde(default)]
    pub soft: bool,
}

pub(super) fn of(inv: &Invalidation, body_hash: &str, latency_us: u64) -> WireEvent {
    WireEvent {
        request_id: inv.request_id.clone(),
        triggered_by: inv.triggered_by.clone(),
        token_name: inv.token_name.clone(),
        published_at_us: inv.published_at_us,
        node_id: inv.node_id.to_string(),
        body_hash: body_hash.to_string(),
        keys: inv.keys().to_vec(),
        pattern: inv.pattern().map(|p| p.canonical().to_string()),
        pattern_type: inv.pattern_type(),
        pattern_source: inv.pattern().map(|p| p.source().to_string()),
        matched_count: inv.invalidated_count(),
        latency_us,
        soft: inv.soft,
    }
}

/// The pattern of a canonical form. The form of a prefix or suffix is one `*` longer than the
/// literal, so a literal at the length limit is parsed with one byte of room.
fn canonical_pattern(
    patterns: &PatternCache,
    text: &str,
    kind: PatternType,
) -> Result<Arc<Pattern>, PatternError> {
    match patterns.get(text, Some(kind)) {
        Err(PatternError::TooLong { .. }) => {
            let mut limits = *patterns.limits();
            limits.max_pattern_bytes += 1;
            Pattern::parse(text, Some(kind), &limits).map(Arc::new)
        }
        other => other,
    }
}

impl WireEvent {
    /// Rebuild the invalidation at stream position `seq` (patterns compiled through the cache).
    pub fn into_invalidation(
        self,
        seq: u64,
        patterns: &PatternCache,
    ) -> Result<Invalidation, PatternError> {
        let target = match (self.pattern, self.pattern_type) {
            (Some(p), Some(t)) => Target::Pattern {
                pattern: canonical_pattern(patterns, &p, t)?,
                matched_keys: self.keys,
                matched_count: self.matched_count,
            },
            _ => Target::Keys(self.keys),
        };
        Ok(Invalidation {
            seq,
            request_id: self.request_id,
            triggered_by: self.triggered_by,
            token_name: self.token_name,
            published_at_us: self.published_at_us,
            node_id: Arc::from(self.node_id.as_str()),
            target,
            soft: self.soft,
        })
    }

    /// The audit row of the event at `seq` (no pattern compilation needed).
    pub fn audit_row(&self, seq: u64) -> AuditRow {
        let kind = match self.pattern_type {
            Some(_) => Kind::Pattern,
            None => Kind::Keys,
        };
        AuditRow::clean(AuditRow {
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            scope: self.token_name.clone().unwrap_or_default(),
            request_id: self.request_id.clone(),
            triggered_by: self.triggered_by.clone(),
            token_name: self.token_name.clone(),
            timestamp_us: self.published_at_us,
            node_id: self.node_id.clone(),
            kind,
            pattern: self.pattern_source.clone().or_else(|| self.pattern.clone()),
            pattern_type: self.pattern_type,
            keys: self.keys.clone(),
            matched_count: i64::try_from(self.matched_count).unwrap_or(i64::MAX),
            latency_us: i64::try_from(self.latency_us).unwrap_or(i64::MAX),
            body_hash: self.body_hash.clone(),
            soft: self.soft,
        })
    }
}
