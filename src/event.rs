//! An accepted invalidation: the one value that flows from the HTTP layer (or the cluster
//! bus) to the fan-out, the history ring and the audit pipeline.

use std::sync::Arc;

use crate::pattern::{Pattern, PatternType};

/// What an invalidation targets.
#[derive(Debug, Clone)]
pub enum Target {
    /// Exact keys, distinct, in request order.
    Keys(Vec<String>),
    /// A pattern. `matched_keys` are the keys the accepting node resolved (request's
    /// `cache_keys` first, then tracked keys in byte order), capped; `matched_count` is the
    /// full distinct count.
    Pattern {
        pattern: Arc<Pattern>,
        matched_keys: Vec<String>,
        matched_count: u64,
    },
}

/// An invalidation that has been accepted and sequenced.
#[derive(Debug, Clone)]
pub struct Invalidation {
    /// Position in the global order; strictly increasing, never reused.
    pub seq: u64,
    pub request_id: String,
    pub triggered_by: String,
    /// Name of the token that authorised it (None in open mode).
    pub token_name: Option<String>,
    /// Unix time in microseconds when it was accepted.
    pub published_at_us: i64,
    pub node_id: Arc<str>,
    pub target: Target,
    /// Soft invalidation: cache managers mark the entries stale instead of dropping them.
    pub soft: bool,
}

impl Invalidation {
    pub fn pattern(&self) -> Option<&Arc<Pattern>> {
        match &self.target {
            Target::Pattern { pattern, .. } => Some(pattern),
            Target::Keys(_) => None,
        }
    }

    pub fn pattern_type(&self) -> Option<PatternType> {
        self.pattern().map(|p| p.kind())
    }

    /// `keys` for a key invalidation; the (capped) matched keys of a pattern invalidation.
    pub fn keys(&self) -> &[String] {
        match &self.target {
            Target::Keys(keys) => keys,
            Target::Pattern { matched_keys, .. } => matched_keys,
        }
    }

    /// `invalidated_count` of the response: number of keys, or full matched count.
    pub fn invalidated_count(&self) -> u64 {
        match &self.target {
            Target::Keys(keys) => keys.len() as u64,
            Target::Pattern { matched_count, .. } => *matched_count,
        }
    }

    pub fn published_at_rfc3339(&self) -> String {
        crate::time::format_us(self.published_at_us)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A key invalidation at `seq`, for unit tests.
    pub(crate) fn key_invalidation(seq: u64, keys: &[&str]) -> Invalidation {
        Invalidation {
            seq,
            request_id: format!("req-{seq}"),
            triggered_by: "test".into(),
            token_name: None,
            published_at_us: 1_700_000_000_000_000,
            node_id: Arc::from("node"),
            target: Target::Keys(keys.iter().map(|k| k.to_string()).collect()),
            soft: false,
        }
    }
}
