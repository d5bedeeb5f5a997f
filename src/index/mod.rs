//! Indexes that route an invalidation to connections without scanning everything:
//! the subscription-pattern index and the tracked-key index.
//!
//! OWNER: index helper. Current content is the API the fan-out codes against; the
//! implementation fills it in without changing the signatures.

use std::sync::Arc;

use crate::pattern::Pattern;

/// Identifies one WebSocket connection for the lifetime of the process.
pub type ConnId = u64;

/// Every connection's subscription patterns, indexed so that one key (or one invalidation
/// pattern) finds the matching connections without a scan over all patterns.
#[derive(Default)]
pub struct SubscriptionIndex {}

impl SubscriptionIndex {
    pub fn new() -> Self {
        SubscriptionIndex {}
    }

    /// Add `pattern` for `conn` (a repeat of the same pattern and type is a no-op).
    pub fn subscribe(&self, conn: ConnId, pattern: Arc<Pattern>) {
        let _ = (conn, pattern);
    }

    /// Remove `pattern` (same source and type) for `conn`; returns whether it was there.
    pub fn unsubscribe(&self, conn: ConnId, pattern: &Pattern) -> bool {
        let _ = (conn, pattern);
        false
    }

    pub fn remove_conn(&self, conn: ConnId) {
        let _ = conn;
    }

    /// Push every connection with a subscription matching `key` onto `out` (a connection may
    /// appear more than once; the caller deduplicates).
    pub fn match_key(&self, key: &str, out: &mut Vec<ConnId>) {
        let _ = (key, out);
    }

    /// Push every connection with a subscription whose key set may overlap `pattern`.
    pub fn match_pattern(&self, pattern: &Pattern, out: &mut Vec<ConnId>) {
        let _ = (pattern, out);
    }

    /// Number of (connection, pattern) subscriptions.
    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keys each connection said it holds (one-shot, as in Redis client-side caching), with an
/// fst over all tracked keys (base + delta) for pattern lookups.
#[derive(Default)]
pub struct TrackedIndex {}

impl TrackedIndex {
    pub fn new() -> Self {
        TrackedIndex {}
    }

    /// Track `key` for `conn`; returns how many keys `conn` tracks now.
    pub fn track(&self, conn: ConnId, key: &str) -> usize {
        let _ = (conn, key);
        0
    }

    /// Stop tracking; returns how many keys `conn` tracks now.
    pub fn untrack(&self, conn: ConnId, key: &str) -> usize {
        let _ = (conn, key);
        0
    }

    pub fn remove_conn(&self, conn: ConnId) {
        let _ = conn;
    }

    /// One-shot: remove `key` from every connection tracking it and push those connections.
    pub fn take_key(&self, key: &str, out: &mut Vec<ConnId>) {
        let _ = (key, out);
    }

    /// One-shot for a pattern: remove every tracked key matching `pattern` and push
    /// (key, connection) pairs, keys in byte order.
    pub fn take_pattern(&self, pattern: &Pattern, out: &mut Vec<(String, ConnId)>) {
        let _ = (pattern, out);
    }

    /// Non-destructive: distinct tracked keys matching `pattern` in byte order, at most `cap`,
    /// and the full count.
    pub fn matches(&self, pattern: &Pattern, cap: usize) -> (Vec<String>, u64) {
        let _ = (pattern, cap);
        (Vec::new(), 0)
    }

    /// Number of distinct tracked keys.
    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
