//! Routing one invalidation to connections (SPEC "Routing").
//!
//! * Key invalidation: for each key in request order, the connections whose subscriptions
//!   match it (`SubscriptionIndex::match_key`) and the connections tracking it
//!   (`TrackedIndex::take_key`, one-shot). Each connection gets the indexes of its keys in
//!   request order, each once.
//! * Pattern invalidation: the tracked keys the pattern matches (`take_pattern`, byte order,
//!   one-shot) and every connection with an overlapping subscription (`match_pattern`), which
//!   gets `keys: []` unless it also tracks matching keys.
//!
//! One slot per connection, so one event per connection per request. The router owns its
//! scratch buffers and reuses them across calls: in steady state a route allocates only when
//! a connection count or key count exceeds every earlier one. Cost: O(sum over keys of the
//! matching connections) hash-map probes, plus the index lookups.

use std::collections::HashMap;

use crate::event::Target;
use crate::index::{ConnId, SubscriptionIndex, TrackedIndex};
use crate::pattern::Pattern;

/// The index operations routing needs. Implemented by [`Indexes`] for the real indexes, and
/// by a naive scan in tests (the oracle).
pub trait RouteIndex {
    fn match_key(&self, key: &str, out: &mut Vec<ConnId>);
    fn take_key(&self, key: &str, out: &mut Vec<ConnId>);
    fn match_pattern(&self, pattern: &Pattern, out: &mut Vec<ConnId>);
    fn take_pattern(&self, pattern: &Pattern, out: &mut Vec<(String, ConnId)>);
}

/// The hub's two indexes.
pub struct Indexes<'a> {
    pub subs: &'a SubscriptionIndex,
    pub tracked: &'a TrackedIndex,
}

impl RouteIndex for Indexes<'_> {
    fn match_key(&self, key: &str, out: &mut Vec<ConnId>) {
        self.subs.match_key(key, out)
    }
    fn take_key(&self, key: &str, out: &mut Vec<ConnId>) {
        self.tracked.take_key(key, out)
    }
    fn match_pattern(&self, pattern: &Pattern, out: &mut Vec<ConnId>) {
        self.subs.match_pattern(pattern, out)
    }
    fn take_pattern(&self, pattern: &Pattern, out: &mut Vec<(String, ConnId)>) {
        self.tracked.take_pattern(pattern, out)
    }
}

/// What one connection receives for one invalidation.
#[derive(Debug, Default)]
pub struct Slot {
    pub conn: ConnId,
    /// Key invalidation: indexes of the event's keys, increasing.
    pub keys: Vec<u32>,
    /// Key invalidation: indexes of keys this connection tracked (now consumed).
    pub taken: Vec<u32>,
    /// Pattern invalidation: tracked keys consumed by it, byte order (also the event keys).
    pub names: Vec<String>,
}

impl Slot {
    fn reset(&mut self, conn: ConnId) {
        self.conn = conn;
        self.keys.clear();
        self.taken.clear();
        self.names.clear();
    }
}

/// Reusable routing state (lives under the publish gate).
#[derive(Default)]
pub struct Router {
    slot_of: HashMap<ConnId, usize>,
    slots: Vec<Slot>,
    used: usize,
    conns: Vec<ConnId>,
    pairs: Vec<(String, ConnId)>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    fn clear(&mut self) {
        self.slot_of.clear();
        self.used = 0;
    }

    fn slot(&mut self, conn: ConnId) -> &mut Slot {
        let next = self.used;
        let i = *self.slot_of.entry(conn).or_insert(next);
        if i == next {
            if self.slots.len() == next {
                self.slots.push(Slot::default());
            }
            self.slots[next].reset(conn);
            self.used += 1;
        }
        &mut self.slots[i]
    }

    /// Route `target`; the slots are valid until the next call.
    pub fn route(&mut self, target: &Target, index: &impl RouteIndex) -> &[Slot] {
        self.clear();
        match target {
            Target::Keys(keys) => self.route_keys(keys, index),
            Target::Pattern { pattern, .. } => self.route_pattern(pattern, index),
        }
        &self.slots[..self.used]
    }

    fn route_keys(&mut self, keys: &[String], index: &impl RouteIndex) {
        let mut conns = std::mem::take(&mut self.conns);
        for (i, key) in keys.iter().enumerate() {
            let i = i as u32;
            conns.clear();
            index.match_key(key, &mut conns);
            for &c in &conns {
                push_once(&mut self.slot(c).keys, i);
            }
            conns.clear();
            index.take_key(key, &mut conns);
            for &c in &conns {
                let slot = self.slot(c);
                push_once(&mut slot.keys, i);
                push_once(&mut slot.taken, i);
            }
        }
        self.conns = conns;
    }

    fn route_pattern(&mut self, pattern: &Pattern, index: &impl RouteIndex) {
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.clear();
        index.take_pattern(pattern, &mut pairs);
        for (key, c) in pairs.drain(..) {
            self.slot(c).names.push(key);
        }
        self.pairs = pairs;
        let mut conns = std::mem::take(&mut self.conns);
        conns.clear();
        index.match_pattern(pattern, &mut conns);
        for &c in &conns {
            self.slot(c);
        }
        self.conns = conns;
        // The index yields keys in byte order already; sorting per slot makes it a property
        // of the router rather than an assumption about the index (cheap on sorted input).
        for slot in &mut self.slots[..self.used] {
            slot.names.sort_unstable();
            slot.names.dedup();
        }
    }
}

/// Append `i` unless it is already the last element (indexes arrive in increasing order).
fn push_once(v: &mut Vec<u32>, i: u32) {
    if v.last() != Some(&i) {
        v.push(i);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::pattern::{PatternLimits, PatternType};

    /// A naive index: linear scans over every subscription and tracked key.
    #[derive(Default)]
    pub(crate) struct NaiveIndex {
        pub subs: Vec<(ConnId, Arc<Pattern>)>,
        pub tracked: Mutex<BTreeMap<String, BTreeSet<ConnId>>>,
    }

    impl NaiveIndex {
        pub fn sub(&mut self, conn: ConnId, src: &str, kind: PatternType) {
            let p = Pattern::parse(src, Some(kind), &PatternLimits::default()).unwrap();
            self.subs.push((conn, Arc::new(p)));
        }
        pub fn track(&self, conn: ConnId, key: &str) {
            self.tracked
                .lock()
                .entry(key.to_string())
                .or_default()
                .insert(conn);
        }
    }

    impl RouteIndex for NaiveIndex {
        fn match_key(&self, key: &str, out: &mut Vec<ConnId>) {
            out.extend(
                self.subs
                    .iter()
                    .filter(|(_, p)| p.is_match(key))
                    .map(|(c, _)| *c),
            );
        }
        fn take_key(&self, key: &str, out: &mut Vec<ConnId>) {
            if let Some(cs) = self.tracked.lock().remove(key) {
                out.extend(cs);
            }
        }
        fn match_pattern(&self, pattern: &Pattern, out: &mut Vec<ConnId>) {
            out.extend(
                self.subs
                    .iter()
                    .filter(|(_, p)| p.may_overlap(pattern))
                    .map(|(c, _)| *c),
            );
        }
        fn take_pattern(&self, pattern: &Pattern, out: &mut Vec<(String, ConnId)>) {
            let mut t = self.tracked.lock();
            let keys: Vec<String> = t.keys().filter(|k| pattern.is_match(k)).cloned().collect();
            for k in keys {
                if let Some(cs) = t.remove(&k) {
                    out.extend(cs.into_iter().map(|c| (k.clone(), c)));
                }
            }
        }
    }

    fn keys(v: &[&str]) -> Target {
        Target::Keys(v.iter().map(|s| s.to_string()).collect())
    }

    /// Per connection: (keys, taken, names).
    type Summary = BTreeMap<ConnId, (Vec<u32>, Vec<u32>, Vec<String>)>;

    fn summary(slots: &[Slot]) -> Summary {
        slots
            .iter()
            .map(|s| (s.conn, (s.keys.clone(), s.taken.clone(), s.names.clone())))
            .collect()
    }

    #[test]
    fn key_invalidation_dedups_per_connection_in_request_order() {
        let mut idx = NaiveIndex::default();
        idx.sub(1, "b", PatternType::Exact);
        idx.sub(1, "b", PatternType::Exact);
        idx.sub(2, "a", PatternType::Exact);
        idx.track(1, "c");
        idx.track(1, "b");
        idx.track(3, "a");
        let mut r = Router::new();
        let got = summary(r.route(&keys(&["c", "b", "a", "zz"]), &idx));
        assert_eq!(got[&1], (vec![0, 1], vec![0, 1], vec![]));
        assert_eq!(got[&2], (vec![2], vec![], vec![]));
        assert_eq!(got[&3], (vec![2], vec![2], vec![]));
        assert_eq!(got.len(), 3);
        // One-shot: tracked keys are gone, subscriptions stay.
        let got = summary(r.route(&keys(&["c", "b", "a"]), &idx));
        assert_eq!(got[&1], (vec![1], vec![], vec![]));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn pattern_invalidation_tracked_keys_and_subscription_overlap() {
        let mut idx = NaiveIndex::default();
        idx.sub(7, "x", PatternType::Exact);
        idx.track(1, "k2");
        idx.track(1, "k1");
        idx.track(2, "k1");
        let p =
            Arc::new(Pattern::parse("k1", Some(PatternType::Exact), &Default::default()).unwrap());
        let target = Target::Pattern {
            pattern: p,
            matched_keys: vec![],
            matched_count: 0,
        };
        let mut r = Router::new();
        let got = summary(r.route(&target, &idx));
        assert_eq!(got[&1].2, vec!["k1".to_string()]);
        assert_eq!(got[&2].2, vec!["k1".to_string()]);
        // The stub `may_overlap` says true for everything; the real one decides exactly.
        if let Some(s) = got.get(&7) {
            assert!(s.2.is_empty());
        }
        let got = summary(r.route(&target, &idx));
        assert!(got.get(&1).is_none_or(|s| s.2.is_empty()));
    }
}
