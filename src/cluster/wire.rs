//! The JSON payload of one stream message: an accepted invalidation without its `seq` (the
//! stream sequence is the `seq`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Invalidation, Target};
use crate::pattern::{PatternCache, PatternError, PatternType};

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
    pub pattern: Option<String>,
    pub pattern_type: Option<PatternType>,
    pub matched_count: u64,
}

pub(super) fn of(inv: &Invalidation, body_hash: &str) -> WireEvent {
    WireEvent {
        request_id: inv.request_id.clone(),
        triggered_by: inv.triggered_by.clone(),
        token_name: inv.token_name.clone(),
        published_at_us: inv.published_at_us,
        node_id: inv.node_id.to_string(),
        body_hash: body_hash.to_string(),
        keys: inv.keys().to_vec(),
        pattern: inv.pattern().map(|p| p.source().to_string()),
        pattern_type: inv.pattern_type(),
        matched_count: inv.invalidated_count(),
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
                pattern: patterns.get(&p, Some(t))?,
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
        })
    }
}
