//! The compiled-pattern cache: a bounded, sharded LRU keyed by (source, explicit type).
//!
//! Design: the key space is split over up to [`SHARDS`] shards by hash, each a
//! `parking_lot::Mutex` around a `HashMap` from key to slot and an intrusive doubly linked
//! list threaded through a `Vec` of slots (indices, no pointers, no `unsafe`). A hit is one
//! hash, one lock, one map probe (no allocation: the map is probed through a borrowed view
//! of the key) and four index writes to move the slot to the front. A miss compiles *outside*
//! the lock, so a slow regex never blocks hits on other patterns; two threads missing the same
//! key at once both compile and the first insert wins.
//!
//! Bounds: at most `capacity` entries in total (each shard holds `capacity / shards`, so the
//! order is LRU per shard, close to global LRU) and at most a byte budget of compiled
//! automata (default [`DEFAULT_BYTE_BUDGET`]); the least recently used entries go first.
//!
//! Errors are cached like successes: parsing is a pure function of (source, type, limits),
//! and caching a refusal means a client repeating an expensive, oversized regex pays for its
//! compilation once, not on every request.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use super::{Pattern, PatternError, PatternLimits, PatternType};

/// Most shards of a cache (fewer for small capacities, so each shard holds a useful number).
pub const SHARDS: usize = 8;

/// Default bound of the heap bytes held by cached patterns.
pub const DEFAULT_BYTE_BUDGET: usize = 256 << 20;

/// Counters of the compiled-pattern cache.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub size: u64,
}

type CachedResult = Result<Arc<Pattern>, PatternError>;

/// Bounded LRU of compiled patterns, keyed by (source, explicit type). Thread-safe.
pub struct PatternCache {
    limits: PatternLimits,
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PatternCache {
    /// A cache of at most `capacity` patterns (0 disables caching) and the default byte budget.
    pub fn new(capacity: usize, limits: PatternLimits) -> PatternCache {
        Self::with_byte_budget(capacity, limits, DEFAULT_BYTE_BUDGET)
    }

    /// A cache bounded by `capacity` entries and `byte_budget` heap bytes of patterns.
    pub fn with_byte_budget(
        capacity: usize,
        limits: PatternLimits,
        byte_budget: usize,
    ) -> PatternCache {
        let shard_count = if capacity >= SHARDS * 16 { SHARDS } else { 1 };
        let shards = if capacity == 0 {
            Vec::new()
        } else {
            (0..shard_count)
                .map(|_| {
                    Mutex::new(Shard::new(
                        capacity.div_ceil(shard_count),
                        byte_budget / shard_count,
                    ))
                })
                .collect()
        };
        PatternCache {
            limits,
            shards,
            hasher: RandomState::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The limits patterns are compiled with.
    pub fn limits(&self) -> &PatternLimits {
        &self.limits
    }

    /// The compiled pattern for (`source`, `explicit`), from the cache or freshly compiled.
    pub fn get(
        &self,
        source: &str,
        explicit: Option<PatternType>,
    ) -> Result<Arc<Pattern>, PatternError> {
        let view = KeyRef {
            kind: explicit,
            source,
        };
        let hash = self.hasher.hash_one(&view as &dyn KeyView);
        let Some(shard) = self.shards.get(shard_index(hash, self.shards.len())) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Pattern::parse(source, explicit, &self.limits).map(Arc::new);
        };
        if let Some(found) = shard.lock().get(&view) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return found;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let result = Pattern::parse(source, explicit, &self.limits).map(Arc::new);
        let bytes = match &result {
            Ok(p) => p.memory_usage(),
            Err(_) => source.len(),
        };
        let key = CacheKey {
            kind: explicit,
            source: source.into(),
        };
        shard.lock().insert(key, result, bytes)
    }

    pub fn stats(&self) -> CacheStats {
        let size = self.shards.iter().map(|s| s.lock().map.len() as u64).sum();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            size,
        }
    }
}

fn shard_index(hash: u64, shards: usize) -> usize {
    // Take high bits: the shard's own map uses the low ones.
    if shards == 0 {
        0
    } else {
        ((hash >> 32) as usize) % shards
    }
}

/// An owned cache key.
#[derive(Clone)]
struct CacheKey {
    kind: Option<PatternType>,
    source: Box<str>,
}

/// A borrowed cache key, to probe the map without allocating.
struct KeyRef<'a> {
    kind: Option<PatternType>,
    source: &'a str,
}

/// What owned and borrowed keys share; the map is probed through `dyn KeyView`.
trait KeyView {
    fn kind(&self) -> Option<PatternType>;
    fn source(&self) -> &str;
}

impl KeyView for CacheKey {
    fn kind(&self) -> Option<PatternType> {
        self.kind
    }
    fn source(&self) -> &str {
        &self.source
    }
}

impl KeyView for KeyRef<'_> {
    fn kind(&self) -> Option<PatternType> {
        self.kind
    }
    fn source(&self) -> &str {
        self.source
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for CacheKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind().hash(state);
        self.source().hash(state);
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.source() == other.source()
    }
}

impl Eq for dyn KeyView + '_ {}

// The owned key must hash and compare exactly as its view does (`Borrow`'s contract).
impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn KeyView).hash(state);
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn KeyView) == (other as &dyn KeyView)
    }
}

impl Eq for CacheKey {}

const NIL: u32 = u32::MAX;

struct Slot {
    key: CacheKey,
    value: CachedResult,
    bytes: usize,
    prev: u32,
    next: u32,
}

/// One LRU: `head` is the most recently used slot, `tail` the next to evict.
struct Shard {
    map: HashMap<CacheKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    bytes: usize,
    capacity: usize,
    byte_budget: usize,
}

impl Shard {
    fn new(capacity: usize, byte_budget: usize) -> Shard {
        Shard {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            capacity: capacity.max(1),
            byte_budget,
        }
    }

    fn get(&mut self, key: &KeyRef<'_>) -> Option<CachedResult> {
        let idx = *self.map.get(key as &dyn KeyView)?;
        self.move_to_front(idx);
        self.slots.get(idx as usize).map(|s| s.value.clone())
    }

    /// Insert unless present (a concurrent miss got there first: keep and return its value).
    fn insert(&mut self, key: CacheKey, value: CachedResult, bytes: usize) -> CachedResult {
        if let Some(&idx) = self.map.get(&key) {
            self.move_to_front(idx);
            if let Some(slot) = self.slots.get(idx as usize) {
                return slot.value.clone();
            }
        }
        while !self.map.is_empty()
            && (self.map.len() >= self.capacity || self.bytes + bytes > self.byte_budget)
        {
            self.evict_tail();
        }
        let slot = Slot {
            key: key.clone(),
            value: value.clone(),
            bytes,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.slots[idx as usize] = slot;
                idx
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(key, idx);
        self.bytes += bytes;
        self.link_front(idx);
        value
    }

    fn evict_tail(&mut self) {
        let idx = self.tail;
        if idx == NIL {
            return;
        }
        self.unlink(idx);
        let slot = &mut self.slots[idx as usize];
        self.bytes -= slot.bytes;
        // Drop the pattern now (it may hold a large DFA); the slot is reused later.
        slot.value = Err(PatternError::Empty);
        let key = slot.key.clone();
        self.map.remove(&key);
        self.free.push(idx);
    }

    fn move_to_front(&mut self, idx: u32) {
        if self.head != idx {
            self.unlink(idx);
            self.link_front(idx);
        }
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let s = &self.slots[idx as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn link_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[idx as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old == NIL {
            self.tail = idx;
        } else {
            self.slots[old as usize].prev = idx;
        }
        self.head = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> PatternCache {
        PatternCache::new(capacity, PatternLimits::default())
    }

    #[test]
    fn hit_returns_the_same_pattern() {
        let c = cache(10);
        let a = c.get("user:*", None).unwrap();
        let b = c.get("user:*", None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.size), (1, 1, 1));
    }

    #[test]
    fn explicit_type_is_part_of_the_key() {
        let c = cache(10);
        let inferred = c.get("a*b", None).unwrap();
        let exact = c.get("a*b", Some(PatternType::Exact)).unwrap();
        assert_eq!(inferred.kind(), PatternType::Glob);
        assert_eq!(exact.kind(), PatternType::Exact);
        assert_eq!(c.stats().size, 2);
    }

    #[test]
    fn evicts_least_recently_used() {
        let c = cache(3);
        for s in ["a", "b", "c"] {
            c.get(s, None).unwrap();
        }
        c.get("a", None).unwrap(); // a is now the most recent; b is the oldest
        c.get("d", None).unwrap();
        assert_eq!(c.stats().size, 3);
        let misses = c.stats().misses;
        c.get("a", None).unwrap();
        c.get("c", None).unwrap();
        assert_eq!(c.stats().misses, misses, "a and c stayed");
        c.get("b", None).unwrap();
        assert_eq!(c.stats().misses, misses + 1, "b was evicted");
    }

    #[test]
    fn errors_are_cached_and_returned() {
        let c = cache(4);
        let e1 = c.get("(", Some(PatternType::Regex)).unwrap_err();
        let e2 = c.get("(", Some(PatternType::Regex)).unwrap_err();
        assert_eq!(e1, e2);
        assert_eq!(c.stats().hits, 1);
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let c = cache(0);
        c.get("a", None).unwrap();
        c.get("a", None).unwrap();
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.size), (0, 2, 0));
    }

    #[test]
    fn byte_budget_evicts() {
        let c = PatternCache::with_byte_budget(100, PatternLimits::default(), 64);
        for i in 0..50 {
            c.get(&format!("key-number-{i:04}"), None).unwrap();
        }
        assert!(c.stats().size <= 3, "{:?}", c.stats());
    }

    #[test]
    fn many_entries_over_shards_stay_bounded() {
        let c = cache(200);
        for i in 0..2000 {
            c.get(&format!("k{i}"), None).unwrap();
        }
        assert!(c.stats().size <= 200);
        for i in 1990..2000 {
            c.get(&format!("k{i}"), None).unwrap();
        }
        assert_eq!(c.stats().hits, 10);
    }

    #[test]
    fn concurrent_use() {
        let c = Arc::new(cache(256));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let p = c
                            .get(&format!("user:{}:*", (i * 7 + t) % 300), None)
                            .unwrap();
                        assert!(p.is_match(&format!("user:{}:x", (i * 7 + t) % 300)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(c.stats().size <= 256);
    }
}
