//! The compiled-pattern cache: a bounded cache keyed by (source, explicit type), on
//! `quick_cache` (CLOCK-Pro, sharded, lock-light reads) rather than a hand-written LRU.
//!
//! A hit is one hash and one shard read lock (the key is probed through a borrowed view, no
//! allocation). A miss compiles *outside* any lock, so a slow regex never blocks hits on other
//! patterns; two threads missing the same key at once both compile and the second insert
//! replaces the first (same value).
//!
//! Bounds: at most `capacity` entries and at most a byte budget of compiled automata (default
//! [`DEFAULT_BYTE_BUDGET`]): each entry weighs its heap bytes, but never less than
//! `byte_budget / capacity`, so the weight capacity also caps the count. Cold entries go first
//! (CLOCK-Pro: a key used twice outlives a stream of one-off keys, which a plain LRU does not
//! guarantee).
//!
//! Errors are cached like successes: parsing is a pure function of (source, type, limits),
//! and caching a refusal means a client repeating an expensive, oversized regex pays for its
//! compilation once, not on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{Pattern, PatternError, PatternLimits, PatternType};

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

/// The owned key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    kind: Option<PatternType>,
    source: String,
}

/// A borrowed view of a key, hashing exactly like [`CacheKey`] (same fields, `str` hashes
/// like `String`).
#[derive(Hash)]
struct KeyRef<'a> {
    kind: Option<PatternType>,
    source: &'a str,
}

impl quick_cache::Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.kind == key.kind && self.source == key.source
    }
}

/// Each entry's weight, computed once at insert and carried with the value.
#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<CacheKey, (CachedResult, u64)> for ByWeight {
    fn weight(&self, _key: &CacheKey, val: &(CachedResult, u64)) -> u64 {
        val.1
    }
}

/// Bounded cache of compiled patterns, keyed by (source, explicit type). Thread-safe.
pub struct PatternCache {
    limits: PatternLimits,
    /// None when caching is disabled (capacity 0).
    cache: Option<quick_cache::sync::Cache<CacheKey, (CachedResult, u64), ByWeight>>,
    /// The least weight of an entry: `byte_budget / capacity`.
    unit: u64,
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
        let unit = (byte_budget / capacity.max(1)).max(1) as u64;
        let cache = (capacity > 0).then(|| {
            quick_cache::sync::Cache::with_weighter(capacity, unit * capacity as u64, ByWeight)
        });
        PatternCache {
            limits,
            cache,
            unit,
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
        let Some(cache) = &self.cache else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Pattern::parse(source, explicit, &self.limits).map(Arc::new);
        };
        let view = KeyRef {
            kind: explicit,
            source,
        };
        if let Some((found, _)) = cache.get(&view) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return found;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let result = Pattern::parse(source, explicit, &self.limits).map(Arc::new);
        let bytes = match &result {
            Ok(p) => p.memory_usage(),
            Err(_) => source.len(),
        } as u64;
        let key = CacheKey {
            kind: explicit,
            source: source.into(),
        };
        cache.insert(key, (result.clone(), bytes.max(self.unit)));
        result
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            size: self.cache.as_ref().map_or(0, |c| c.len() as u64),
        }
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
    fn a_hot_key_outlives_a_stream_of_cold_ones() {
        let c = cache(16);
        c.get("hot", None).unwrap();
        for i in 0..200 {
            c.get("hot", None).unwrap();
            c.get(&format!("cold-{i}"), None).unwrap();
        }
        assert!(c.stats().size <= 16, "{:?}", c.stats());
        let misses = c.stats().misses;
        c.get("hot", None).unwrap();
        assert_eq!(c.stats().misses, misses, "the hot key stayed");
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
