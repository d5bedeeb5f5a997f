//! The fill guard: stops the stale-set race of a cache-aside client.
//!
//! The race: a client misses key K, reads K's value from the source of truth, and meanwhile K
//! is updated and invalidated; the client then stores the value it read, which is already
//! stale, and keeps it until the next invalidation. Like memcache leases (a fill token voided
//! by a delete) and Redis's "caching in progress" placeholder, [`FillGuard::begin`] hands out a
//! token, every invalidation of K (by key, pattern or reset) voids the tokens of K, and
//! [`FillGuard::complete`] stores only with a token that is still valid. Validity check and
//! store happen under one lock, so an invalidation either voids the token first or removes the
//! value after.
//!
//! Cost: one small map entry per fill in progress; a pattern invalidation scans the keys
//! being filled (few), not the cache.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use invalidator_core::pattern::Pattern;

/// Fills in progress, by key.
#[derive(Default)]
pub struct FillGuard {
    state: Mutex<FillState>,
}

#[derive(Default)]
struct FillState {
    next: u64,
    inflight: HashMap<String, Vec<u64>>,
}

/// Permission to store one value for one key, valid until that key is invalidated.
#[must_use = "a fill token does nothing unless passed to complete_fill"]
pub struct FillToken {
    key: String,
    id: u64,
    guard: Weak<FillGuard>,
}

impl FillToken {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for FillToken {
    fn drop(&mut self) {
        // An abandoned fill must not leave its entry behind.
        if let Some(guard) = self.guard.upgrade() {
            guard.state.lock().remove(&self.key, self.id);
        }
    }
}

impl FillState {
    /// Remove token `id` of `key`; returns whether it was still valid.
    fn remove(&mut self, key: &str, id: u64) -> bool {
        let Some(ids) = self.inflight.get_mut(key) else {
            return false;
        };
        let Some(pos) = ids.iter().position(|&i| i == id) else {
            return false;
        };
        ids.swap_remove(pos);
        if ids.is_empty() {
            self.inflight.remove(key);
        }
        true
    }
}

impl FillGuard {
    pub fn new() -> Arc<FillGuard> {
        Arc::new(FillGuard::default())
    }

    /// Start filling `key`. Read the source of truth only after this returns.
    pub fn begin(self: &Arc<Self>, key: &str) -> FillToken {
        let mut st = self.state.lock();
        st.next += 1;
        let id = st.next;
        st.inflight.entry(key.to_string()).or_default().push(id);
        FillToken {
            key: key.to_string(),
            id,
            guard: Arc::downgrade(self),
        }
    }

    /// Run `store` only if no invalidation of the token's key arrived since `begin`.
    /// Returns whether it ran.
    pub fn complete(&self, token: FillToken, store: impl FnOnce(&str)) -> bool {
        let mut st = self.state.lock();
        let valid = st.remove(&token.key, token.id);
        if valid {
            store(&token.key);
        }
        valid
        // `token` drops here, after the lock: its Drop finds nothing left to remove.
    }

    /// Void every fill of `key`.
    pub fn void_key(&self, key: &str) {
        self.state.lock().inflight.remove(key);
    }

    /// Void every fill whose key `pattern` matches.
    pub fn void_pattern(&self, pattern: &Pattern) {
        self.state
            .lock()
            .inflight
            .retain(|k, _| !pattern.is_match(k));
    }

    /// Void every fill (reset, or an event the client cannot interpret).
    pub fn void_all(&self) {
        self.state.lock().inflight.clear();
    }

    /// Is a fill of `key` in progress?
    pub fn contains(&self, key: &str) -> bool {
        self.state.lock().inflight.contains_key(key)
    }

    /// Fills in progress.
    pub fn len(&self) -> usize {
        self.state.lock().inflight.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use invalidator_core::pattern::PatternLimits;

    #[test]
    fn a_fill_stores_unless_invalidated_meanwhile() {
        let g = FillGuard::new();
        let t = g.begin("a");
        let mut stored = false;
        assert!(g.complete(t, |_| stored = true));
        assert!(stored);

        let t = g.begin("a");
        g.void_key("a");
        assert!(!g.complete(t, |_| panic!("stale value stored")));

        let t1 = g.begin("user:1");
        let t2 = g.begin("order:1");
        let p = Pattern::parse("user:*", None, &PatternLimits::default()).unwrap();
        g.void_pattern(&p);
        assert!(!g.complete(t1, |_| {}));
        assert!(g.complete(t2, |_| {}));

        let t = g.begin("x");
        g.void_all();
        assert!(!g.complete(t, |_| {}));
        assert!(g.is_empty());
    }

    #[test]
    fn dropped_tokens_leave_nothing_behind() {
        let g = FillGuard::new();
        let t = g.begin("a");
        let t2 = g.begin("a");
        drop(t);
        assert_eq!(g.len(), 1);
        assert!(g.complete(t2, |_| {}));
        assert!(g.is_empty());
    }
}
