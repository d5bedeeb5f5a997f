//! The local cache the client keeps coherent: the [`LocalCache`] trait, the bounded default
//! [`BoundedCache`] (on [`quick_cache`]) and the unbounded [`MapCache`].
//!
//! Every entry is a [`Cached`]: the value and, after a soft invalidation, the moment it
//! became stale. The cache itself does not decide how long a stale entry may be served; the
//! client does, with [`ClientOptions::max_staleness`](crate::ClientOptions::max_staleness).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use quick_cache::sync::EntryAction;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use invalidator_core::pattern::Pattern;

/// A cached value, fresh or stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached<V> {
    pub value: V,
    /// When a soft invalidation marked the entry stale (the first one, if several did).
    pub stale_since: Option<Instant>,
}

impl<V> Cached<V> {
    pub fn fresh(value: V) -> Self {
        Cached {
            value,
            stale_since: None,
        }
    }

    pub fn is_stale(&self) -> bool {
        self.stale_since.is_some()
    }

    /// Mark stale at `at`, keeping an earlier mark.
    fn mark_stale(&mut self, at: Instant) {
        self.stale_since = Some(self.stale_since.map_or(at, |t| t.min(at)));
    }
}

/// Called with the key of every entry the cache drops on its own (capacity eviction), so the
/// client can stop tracking it on the server.
pub type EvictionListener = Arc<dyn Fn(&str) + Send + Sync>;

/// The application's local cache, as the client sees it.
///
/// The client calls `invalidate*`, `mark_stale*` and `clear` from its connection task as
/// events arrive, `insert` only through [`CacheClient::complete_fill`](crate::CacheClient::complete_fill)
/// (under the fill guard's lock, so keep it fast and never call back into the client), and
/// `lookup` from the read APIs.
pub trait LocalCache: Send + Sync + 'static {
    type Value: Clone + Send + Sync + 'static;
    /// Store a fresh value (replacing any entry, stale or not).
    fn insert(&self, key: &str, value: Self::Value);
    /// The entry for `key`, fresh or stale.
    fn lookup(&self, key: &str) -> Option<Cached<Self::Value>>;
    /// Is `key` held (fresh or stale)?
    fn contains(&self, key: &str) -> bool {
        self.lookup(key).is_some()
    }
    fn invalidate(&self, key: &str);
    /// Drop every entry whose key `pattern` matches.
    fn invalidate_pattern(&self, pattern: &Pattern);
    /// Soft invalidation: mark the entry stale as of `at` (keep an earlier mark). The
    /// default drops the entry, which is always safe.
    fn mark_stale(&self, key: &str, at: Instant) {
        let _ = at;
        self.invalidate(key);
    }
    /// Soft invalidation of every entry whose key `pattern` matches. The default drops them.
    fn mark_stale_pattern(&self, pattern: &Pattern, at: Instant) {
        let _ = at;
        self.invalidate_pattern(pattern);
    }
    /// Drop everything (after a `reset`).
    fn clear(&self);
    /// Register the client's eviction listener (called once, at connect). A cache that never
    /// drops entries on its own ignores it (the default).
    fn set_eviction_listener(&self, listener: EvictionListener) {
        let _ = listener;
    }
}

// ---- BoundedCache ----

type Weigh<V> = Arc<dyn Fn(&str, &V) -> u64 + Send + Sync>;

/// Entry weights: 1 each, or the application's function of key and value.
struct Weight<V>(Option<Weigh<V>>);

impl<V> Clone for Weight<V> {
    fn clone(&self) -> Self {
        Weight(self.0.clone())
    }
}

impl<V> Weighter<String, Cached<V>> for Weight<V> {
    fn weight(&self, key: &String, val: &Cached<V>) -> u64 {
        match &self.0 {
            None => 1,
            Some(f) => f(key, &val.value),
        }
    }
}

/// quick_cache lifecycle hook: reports evicted keys to the client's listener.
#[derive(Clone, Default)]
struct Evictions {
    listener: Arc<RwLock<Option<EvictionListener>>>,
}

impl<V> Lifecycle<String, Cached<V>> for Evictions {
    /// Evicted entries, dropped when the request ends (after the shard lock is released).
    type RequestState = Vec<(String, Cached<V>)>;

    fn on_evict(&self, state: &mut Self::RequestState, key: String, val: Cached<V>) {
        // Runs under the shard lock: the client's listener only queues the key.
        if let Some(listener) = &*self.listener.read() {
            listener(&key);
        }
        state.push((key, val));
    }
}

type Inner<V> =
    quick_cache::sync::Cache<String, Cached<V>, Weight<V>, DefaultHashBuilder, Evictions>;

/// The default local cache: bounded (in entries, or in a weight you define), concurrent,
/// with quick_cache's S3-FIFO-style eviction (hot and cold queues plus a ghost queue, which
/// resists scans better than LRU). Evicted keys are reported to the client, which untracks
/// them on the server.
///
/// The bound is approximate in quick_cache's way: capacity is split over shards. Entries of
/// weight 0 are never evicted.
pub struct BoundedCache<V: Clone> {
    inner: Inner<V>,
    evictions: Evictions,
}

impl<V: Clone + Send + Sync + 'static> BoundedCache<V> {
    /// At most about `max_entries` entries.
    pub fn new(max_entries: usize) -> Self {
        Self::build(max_entries, max_entries as u64, Weight(None))
    }

    /// At most about `max_weight` in total weight, each entry weighing `weigh(key, value)`
    /// (for example its size in bytes); `estimated_entries` sizes the tables.
    pub fn with_weight(
        estimated_entries: usize,
        max_weight: u64,
        weigh: impl Fn(&str, &V) -> u64 + Send + Sync + 'static,
    ) -> Self {
        Self::build(estimated_entries, max_weight, Weight(Some(Arc::new(weigh))))
    }

    fn build(estimated: usize, capacity: u64, weight: Weight<V>) -> Self {
        let evictions = Evictions::default();
        let inner = Inner::with(
            estimated.max(1),
            capacity.max(1),
            weight,
            DefaultHashBuilder::default(),
            evictions.clone(),
        );
        BoundedCache { inner, evictions }
    }

    /// The value for `key`, stale or not (read through [`CacheClient::get`](crate::CacheClient::get)
    /// to apply the staleness limit).
    pub fn get(&self, key: &str) -> Option<V> {
        self.inner.peek(key).map(|c| c.value)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.inner.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Total weight held (the entry count without a weigher).
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }

    /// The weight capacity.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// Every key held (a snapshot; for inspection and tests).
    pub fn keys(&self) -> Vec<String> {
        let keys = RefCell::new(Vec::new());
        self.inner.retain(|k, _| {
            keys.borrow_mut().push(k.clone());
            true
        });
        keys.into_inner()
    }

    fn keys_matching(&self, pattern: &Pattern) -> Vec<String> {
        let keys = RefCell::new(Vec::new());
        self.inner.retain(|k, _| {
            if pattern.is_match(k) {
                keys.borrow_mut().push(k.clone());
            }
            true
        });
        keys.into_inner()
    }
}

impl<V: Clone + Send + Sync + 'static> Default for BoundedCache<V> {
    /// 10,000 entries.
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl<V: Clone + Send + Sync + 'static> LocalCache for BoundedCache<V> {
    type Value = V;

    fn insert(&self, key: &str, value: V) {
        self.inner.insert(key.to_string(), Cached::fresh(value));
    }

    fn lookup(&self, key: &str) -> Option<Cached<V>> {
        self.inner.get(key)
    }

    fn contains(&self, key: &str) -> bool {
        self.inner.contains_key(key)
    }

    fn invalidate(&self, key: &str) {
        self.inner.remove(key);
    }

    fn invalidate_pattern(&self, pattern: &Pattern) {
        self.inner.retain(|k, _| !pattern.is_match(k));
    }

    fn mark_stale(&self, key: &str, at: Instant) {
        if !self.inner.contains_key(key) {
            return;
        }
        // A vacant result (the entry went meanwhile) is a placeholder guard: dropping it
        // leaves nothing behind.
        let _ = self.inner.entry(key, Some(Duration::ZERO), |_, c| {
            c.mark_stale(at);
            EntryAction::Retain(())
        });
    }

    fn mark_stale_pattern(&self, pattern: &Pattern, at: Instant) {
        for key in self.keys_matching(pattern) {
            self.mark_stale(&key, at);
        }
    }

    fn clear(&self) {
        self.inner.clear();
    }

    fn set_eviction_listener(&self, listener: EvictionListener) {
        *self.evictions.listener.write() = Some(listener);
    }
}

// ---- MapCache ----

/// An unbounded `HashMap` behind a mutex: for tests and small, fixed key sets. Prefer
/// [`BoundedCache`].
pub struct MapCache<V> {
    map: Mutex<HashMap<String, Cached<V>>>,
}

impl<V> Default for MapCache<V> {
    fn default() -> Self {
        MapCache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> MapCache<V> {
    /// The value for `key`, stale or not.
    pub fn get(&self, key: &str) -> Option<V> {
        self.map.lock().get(key).map(|c| c.value.clone())
    }
}

impl<V> MapCache<V> {
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.lock().contains_key(key)
    }
}

impl<V: Clone + Send + Sync + 'static> LocalCache for MapCache<V> {
    type Value = V;
    fn insert(&self, key: &str, value: V) {
        self.map
            .lock()
            .insert(key.to_string(), Cached::fresh(value));
    }
    fn lookup(&self, key: &str) -> Option<Cached<V>> {
        self.map.lock().get(key).cloned()
    }
    fn invalidate(&self, key: &str) {
        self.map.lock().remove(key);
    }
    fn invalidate_pattern(&self, pattern: &Pattern) {
        self.map.lock().retain(|k, _| !pattern.is_match(k));
    }
    fn mark_stale(&self, key: &str, at: Instant) {
        if let Some(c) = self.map.lock().get_mut(key) {
            c.mark_stale(at);
        }
    }
    fn mark_stale_pattern(&self, pattern: &Pattern, at: Instant) {
        for (k, c) in self.map.lock().iter_mut() {
            if pattern.is_match(k) {
                c.mark_stale(at);
            }
        }
    }
    fn clear(&self) {
        self.map.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use invalidator_core::pattern::PatternLimits;

    fn pattern(p: &str) -> Pattern {
        Pattern::parse(p, None, &PatternLimits::default()).unwrap()
    }

    /// The same behaviour from both caches.
    fn exercise<C: LocalCache<Value = String>>(c: &C) {
        c.insert("user:1", "a".into());
        c.insert("user:2", "b".into());
        c.insert("order:1", "c".into());
        assert_eq!(c.lookup("user:1"), Some(Cached::fresh("a".to_string())));
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        c.mark_stale("user:1", t1);
        c.mark_stale("user:1", t0 + Duration::from_secs(5));
        assert_eq!(
            c.lookup("user:1").unwrap().stale_since,
            Some(t1),
            "first mark kept"
        );
        c.mark_stale("missing", t0);
        assert!(
            c.lookup("missing").is_none(),
            "marking a missing key adds nothing"
        );
        c.mark_stale_pattern(&pattern("user:*"), t0);
        assert_eq!(
            c.lookup("user:1").unwrap().stale_since,
            Some(t0),
            "earlier mark wins"
        );
        assert_eq!(c.lookup("user:2").unwrap().stale_since, Some(t0));
        assert!(!c.lookup("order:1").unwrap().is_stale());
        c.insert("user:1", "a2".into());
        assert_eq!(
            c.lookup("user:1"),
            Some(Cached::fresh("a2".to_string())),
            "insert is fresh"
        );
        c.invalidate_pattern(&pattern("user:*"));
        assert!(c.lookup("user:1").is_none() && c.lookup("user:2").is_none());
        c.invalidate("order:1");
        assert!(c.lookup("order:1").is_none());
        c.insert("x", "y".into());
        c.clear();
        assert!(c.lookup("x").is_none());
    }

    #[test]
    fn map_cache_semantics() {
        exercise(&MapCache::<String>::default());
    }

    #[test]
    fn bounded_cache_semantics() {
        exercise(&BoundedCache::<String>::new(100));
    }

    #[test]
    fn bounded_cache_evicts_and_reports_the_keys() {
        let c = BoundedCache::<u64>::new(16);
        let evicted = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = evicted.clone();
        c.set_eviction_listener(Arc::new(move |k| sink.lock().push(k.to_string())));
        for i in 0..200u64 {
            c.insert(&format!("k{i}"), i);
        }
        assert!(c.len() <= 16, "len {}", c.len());
        let n = {
            let evicted = evicted.lock();
            assert_eq!(
                evicted.len() + c.len(),
                200,
                "every key is held or was reported"
            );
            for k in evicted.iter() {
                assert!(!c.contains(k), "{k} reported but still held");
            }
            evicted.len()
        };
        // Replacing a value may report the key (quick_cache evicts the old value) while it
        // is held: the client checks the cache before untracking.
        let keys = c.keys();
        c.insert(&keys[0], 0);
        let n = {
            let evicted = evicted.lock();
            for k in &evicted[n..] {
                assert!(c.contains(k), "{k} reported after a replacement and gone");
            }
            evicted.len()
        };
        // Invalidations and clears are not evictions.
        for k in &keys[1..] {
            c.invalidate(k);
        }
        c.clear();
        assert_eq!(evicted.lock().len(), n);
    }

    #[test]
    fn bounded_cache_by_weight() {
        let c = BoundedCache::<String>::with_weight(10, 100, |_, v: &String| v.len() as u64);
        for i in 0..50 {
            c.insert(&format!("k{i}"), "x".repeat(10));
        }
        assert!(c.weight() <= 100, "weight {}", c.weight());
        assert!(c.len() <= 10);
        assert_eq!(c.capacity(), 100);
    }
}
