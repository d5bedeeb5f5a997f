//! Request counters: totals, per type, per error code, rates, top patterns and prefixes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::ErrorCode;
use crate::pattern::PatternType;

/// Per-second buckets over the last five minutes, for `per_second_1m` / `per_second_5m`.
/// Each bucket stores (second stamp, count); a stale stamp reads as zero.
pub struct RateWindow {
    start: Instant,
    buckets: Vec<(AtomicU64, AtomicU64)>,
}

const WINDOW_SECS: u64 = 300;

impl RateWindow {
    pub fn new(start: Instant) -> Self {
        RateWindow {
            start,
            buckets: (0..WINDOW_SECS)
                .map(|_| (AtomicU64::new(u64::MAX), AtomicU64::new(0)))
                .collect(),
        }
    }

    pub fn add(&self, n: u64) {
        let sec = self.start.elapsed().as_secs();
        let (stamp, count) = &self.buckets[(sec % WINDOW_SECS) as usize];
        let old = stamp.load(Ordering::Acquire);
        if old != sec
            && stamp
                .compare_exchange(old, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            count.store(0, Ordering::Release);
        }
        count.fetch_add(n, Ordering::Relaxed);
    }

    /// Mean events per second over the last `secs` whole seconds (the current, partial
    /// second included; the window is shortened when the process is younger).
    pub fn per_second(&self, secs: u64) -> f64 {
        let now = self.start.elapsed().as_secs();
        let span = secs.min(now + 1).max(1);
        let mut total = 0;
        for s in (now + 1 - span)..=now {
            let (stamp, count) = &self.buckets[(s % WINDOW_SECS) as usize];
            if stamp.load(Ordering::Acquire) == s {
                total += count.load(Ordering::Relaxed);
            }
        }
        let elapsed = self.start.elapsed().as_secs_f64().min(secs as f64).max(1.0);
        ((total as f64 / elapsed) * 1000.0).round() / 1000.0
    }
}

/// Approximate heavy hitters in bounded memory: at most `cap` counters. When a new item finds
/// the map full, the map is pruned to its `cap / 2` largest counters (one sort, amortised over
/// the next `cap / 2` new items, so a record stays O(1) amortised instead of a full scan per
/// new item). Exact while fewer than `cap` distinct items were seen; after that an item that
/// keeps coming back stays on top, which is what "most invalidated" needs.
pub struct TopK {
    cap: usize,
    counts: Mutex<HashMap<String, u64>>,
}

impl TopK {
    pub fn new(cap: usize) -> Self {
        TopK {
            cap: cap.max(2),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Add `n` to each item (one lock for the batch).
    pub fn add_all<'a>(&self, items: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut m = self.counts.lock();
        for (item, n) in items {
            if let Some(c) = m.get_mut(item) {
                *c += n;
                continue;
            }
            if m.len() >= self.cap {
                let mut all: Vec<(String, u64)> = m.drain().collect();
                all.sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
                all.truncate(self.cap / 2);
                m.extend(all);
            }
            m.insert(item.to_string(), n);
        }
    }

    /// The `n` largest, by count then name.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let m = self.counts.lock();
        let mut v: Vec<(String, u64)> = m.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// The part of a key before its first `:` (the whole key if there is none).
pub fn key_prefix(key: &str) -> &str {
    key.split_once(':').map_or(key, |(p, _)| p)
}

/// Counters of requests answered by the HTTP API.
pub struct RequestCounters {
    pub total: AtomicU64,
    pub keys_total: AtomicU64,
    pub duplicates: AtomicU64,
    /// Accepted soft invalidations.
    pub soft: AtomicU64,
    by_type: [AtomicU64; 5],
    rejected: [AtomicU64; ErrorCode::ALL.len()],
    pub rate: RateWindow,
    pub top_patterns: TopK,
    pub top_prefixes: TopK,
}

impl RequestCounters {
    pub fn new(start: Instant) -> Self {
        RequestCounters {
            total: AtomicU64::new(0),
            keys_total: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            soft: AtomicU64::new(0),
            by_type: Default::default(),
            rejected: Default::default(),
            rate: RateWindow::new(start),
            top_patterns: TopK::new(1000),
            top_prefixes: TopK::new(1000),
        }
    }

    pub fn accepted(&self, kind: PatternType, keys: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.keys_total.fetch_add(keys, Ordering::Relaxed);
        self.by_type[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.rate.add(1);
    }

    pub fn rejected(&self, code: ErrorCode) {
        self.rejected[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn by_type(&self, kind: PatternType) -> u64 {
        self.by_type[kind as usize].load(Ordering::Relaxed)
    }

    pub fn rejected_by(&self, code: ErrorCode) -> u64 {
        self.rejected[code as usize].load(Ordering::Relaxed)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(key_prefix("user:1:x"), "user");
        assert_eq!(key_prefix("plain"), "plain");
    }

    #[test]
    fn topk_exact_under_capacity() {
        let t = TopK::new(10);
        t.add_all([("a", 1), ("b", 3), ("a", 1)]);
        assert_eq!(t.top(5), vec![("b".to_string(), 3), ("a".to_string(), 2)]);
    }

    #[test]
    fn topk_keeps_heavy_hitters_when_full() {
        let t = TopK::new(4);
        for i in 0..100 {
            t.add_all([("hot", 1), (format!("cold{i}").as_str(), 1)]);
        }
        assert_eq!(t.top(1)[0].0, "hot");
        assert!(t.counts.lock().len() <= 4);
    }

    #[test]
    fn rate_counts_recent() {
        let r = RateWindow::new(Instant::now());
        r.add(10);
        assert!(r.per_second(60) >= 10.0 - 1e-9);
    }
}
