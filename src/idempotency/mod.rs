//! `request_id` idempotency (SPEC "Idempotency"): scoped by token, fast for new ids, exact.
//!
//! The key is `(scope, request_id)`, where the scope is the token's name (empty in open
//! mode), so tenants can never collide on, block or probe each other's ids.
//!
//! Three tiers answer "was this id accepted before?":
//! 1. **Recent memory** (exact, bounded in bytes by `audit.idempotency_memory_bytes` and in age
//!    by `idempotency_window_secs`): settled ids with their fingerprint and response, so a
//!    retry is answered without the store; in-flight ids as `Pending` slots, so concurrent
//!    requests with one id publish once (the others wait and get the duplicate).
//! 2. **The filter** ([`filter::IdFilter`]): every id the store holds (loaded at start-up) and
//!    every id accepted since. A miss there proves the id new: no store round trip, the usual
//!    case for a stream of fresh ids.
//! 3. **The store**, only when the filter cannot rule the id out (a retry older than the
//!    recent memory, a false positive, or the filter still loading). The caller looks it up
//!    ([`Claim::Unknown`]); while the store is down that is a 503, never a second acceptance.
//!
//! A request refused with an error releases its slot (dropping the [`ClaimGuard`]) and is not
//! added to the filter, so the id is not reserved.
//!
//! Cost per request with an id: one hash-map probe under a short lock, plus seven filter bit
//! loads; settling adds one insert and seven `fetch_or`s. Memory: the two budgets.

pub mod filter;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use self::filter::IdFilter;

/// What a settled id remembers: the fingerprint of its body and its response.
#[derive(Debug, Clone)]
pub struct Settled {
    pub fingerprint: String,
    pub response: Arc<serde_json::Value>,
}

enum Slot {
    Pending(Arc<Notify>),
    Done { settled: Settled, stamp: u64 },
}

/// Outcome of [`Idempotency::claim`].
pub enum Claim {
    /// Proven new: proceed, then `complete` or drop the guard.
    Fresh(ClaimGuard),
    /// Not in memory, but the filter cannot rule it out: look it up in the store first.
    Unknown(ClaimGuard),
    /// Settled before (answer it as a duplicate or a conflict).
    Settled(Settled),
}

/// Counters for `/invalidate/metrics` (`idempotency` section).
#[derive(Debug, Clone, Serialize)]
pub struct IdempotencyStats {
    /// Ids in the recent memory (settled or in flight).
    pub memory_entries: usize,
    pub memory_bytes: usize,
    pub memory_budget_bytes: usize,
    /// Distinct ids in the filter.
    pub filter_ids: u64,
    pub filter_bytes: usize,
    pub filter_false_positive_rate: f64,
    /// The filter holds every id of the store (until then every id is looked up).
    pub filter_complete: bool,
    /// Requests whose id had to be looked up in the store.
    pub store_lookups: u64,
}

pub struct Idempotency {
    state: Mutex<State>,
    filter: IdFilter,
    filter_complete: AtomicBool,
    window: Duration,
    memory_budget: usize,
    store_lookups: AtomicU64,
}

struct State {
    map: HashMap<String, Slot>,
    /// Settled ids in settle order, for eviction by age and bytes: (key, stamp, bytes, at).
    order: VecDeque<(String, u64, usize, Instant)>,
    bytes: usize,
    next_stamp: u64,
}

/// The key of `(scope, id)`: length-prefixed, so no two pairs share one. Also the JetStream
/// message id in cluster mode.
pub fn scoped_key(scope: &str, id: &str) -> String {
    format!("{}:{scope}{id}", scope.len())
}

/// Holds a claimed id. Dropping it without `complete` releases the id.
pub struct ClaimGuard {
    owner: Arc<Idempotency>,
    scope: String,
    id: String,
    key: Option<String>,
    notify: Arc<Notify>,
}

impl ClaimGuard {
    /// The id is accepted: remember it (`bytes`: an estimate of the response's size).
    pub fn complete(mut self, settled: Settled, bytes: usize) {
        if let Some(key) = self.key.take() {
            self.owner
                .settle(&self.scope, &self.id, key, settled, bytes);
        }
        self.notify.notify_waiters();
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.owner.state.lock().map.remove(&key);
            self.notify.notify_waiters();
        }
    }
}

impl Idempotency {
    pub fn new(window: Duration, memory_budget: usize, filter_bytes: usize) -> Arc<Idempotency> {
        Arc::new(Idempotency {
            state: Mutex::new(State {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                next_stamp: 0,
            }),
            filter: IdFilter::new(filter_bytes),
            filter_complete: AtomicBool::new(false),
            window,
            memory_budget: memory_budget.max(1),
            store_lookups: AtomicU64::new(0),
        })
    }

    /// Claim `(scope, id)`, waiting while another request with the same id is in flight.
    pub async fn claim(self: &Arc<Self>, scope: &str, id: &str) -> Claim {
        let k = scoped_key(scope, id);
        loop {
            let notify = {
                let mut st = self.state.lock();
                match st.map.get(&k) {
                    Some(Slot::Done { settled, .. }) => return Claim::Settled(settled.clone()),
                    Some(Slot::Pending(n)) => n.clone(),
                    None => {
                        let n = Arc::new(Notify::new());
                        st.map.insert(k.clone(), Slot::Pending(n.clone()));
                        drop(st);
                        let proven_new = self.filter_complete.load(Ordering::Acquire)
                            && !self.filter.contains(scope, id);
                        let guard = ClaimGuard {
                            owner: self.clone(),
                            scope: scope.to_owned(),
                            id: id.to_owned(),
                            key: Some(k),
                            notify: n,
                        };
                        if proven_new {
                            return Claim::Fresh(guard);
                        }
                        self.store_lookups.fetch_add(1, Ordering::Relaxed);
                        return Claim::Unknown(guard);
                    }
                }
            };
            let notified = notify.notified();
            // Re-check after registering interest, or a wake-up between the two could be lost.
            if !matches!(self.state.lock().map.get(&k), Some(Slot::Pending(_))) {
                continue;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
        }
    }

    fn settle(&self, scope: &str, id: &str, key: String, settled: Settled, bytes: usize) {
        // Filter first: from here on the id can leave the memory at any time.
        self.filter.insert(scope, id);
        let bytes = bytes + key.len() * 2 + settled.fingerprint.len() + 96;
        let now = Instant::now();
        let mut st = self.state.lock();
        let stamp = st.next_stamp;
        st.next_stamp += 1;
        st.map.insert(key.clone(), Slot::Done { settled, stamp });
        st.order.push_back((key, stamp, bytes, now));
        st.bytes += bytes;
        while let Some((_, _, _, at)) = st.order.front() {
            if st.bytes <= self.memory_budget && at.elapsed() < self.window {
                break;
            }
            let Some((old, old_stamp, old_bytes, _)) = st.order.pop_front() else {
                break;
            };
            st.bytes -= old_bytes;
            // The id may have been released and settled again since: keep the newer entry.
            if matches!(st.map.get(&old), Some(Slot::Done { stamp, .. }) if *stamp == old_stamp) {
                st.map.remove(&old);
            }
        }
    }

    /// An id known to be taken elsewhere (the store at start-up, another node's event).
    pub fn note_taken(&self, scope: &str, id: &str) {
        self.filter.insert(scope, id);
    }

    /// The filter now holds every id of the store: misses prove ids new from here on.
    pub fn mark_filter_complete(&self) {
        self.filter_complete.store(true, Ordering::Release);
    }

    pub fn filter_complete(&self) -> bool {
        self.filter_complete.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> IdempotencyStats {
        let st = self.state.lock();
        IdempotencyStats {
            memory_entries: st.map.len(),
            memory_bytes: st.bytes,
            memory_budget_bytes: self.memory_budget,
            filter_ids: self.filter.len(),
            filter_bytes: self.filter.bytes(),
            filter_false_positive_rate: self.filter.false_positive_rate(),
            filter_complete: self.filter_complete(),
            store_lookups: self.store_lookups.load(Ordering::Relaxed),
        }
    }

    /// Remembered ids (settled or in flight).
    pub fn len(&self) -> usize {
        self.state.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(fp: &str) -> Settled {
        Settled {
            fingerprint: fp.into(),
            response: Arc::new(serde_json::json!({"ok": fp})),
        }
    }

    fn idem(budget: usize) -> Arc<Idempotency> {
        let i = Idempotency::new(Duration::from_secs(60), budget, 1 << 16);
        i.mark_filter_complete();
        i
    }

    #[tokio::test]
    async fn claim_settle_and_release() {
        let idem = idem(1 << 20);
        let Claim::Fresh(g) = idem.claim("", "a").await else {
            panic!("fresh expected")
        };
        g.complete(settled("x"), 10);
        assert!(matches!(idem.claim("", "a").await, Claim::Settled(s) if s.fingerprint == "x"));
        let Claim::Fresh(g) = idem.claim("", "b").await else {
            panic!()
        };
        drop(g); // an error releases the id
        assert!(matches!(idem.claim("", "b").await, Claim::Fresh(_)));
    }

    #[tokio::test]
    async fn scopes_are_separate() {
        let idem = idem(1 << 20);
        let Claim::Fresh(g) = idem.claim("tenant-a", "req-001").await else {
            panic!()
        };
        g.complete(settled("a"), 10);
        assert!(matches!(
            idem.claim("tenant-b", "req-001").await,
            Claim::Fresh(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_claim_waits_for_the_first() {
        let idem = idem(1 << 20);
        let Claim::Fresh(g) = idem.claim("", "a").await else {
            panic!()
        };
        let other = {
            let idem = idem.clone();
            tokio::spawn(async move { matches!(idem.claim("", "a").await, Claim::Settled(_)) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        g.complete(settled("x"), 10);
        assert!(other.await.unwrap());
    }

    #[tokio::test]
    async fn bounded_in_bytes_and_evicted_ids_go_to_the_store() {
        let idem = idem(4096);
        for i in 0..100 {
            let Claim::Fresh(g) = idem.claim("", &i.to_string()).await else {
                panic!("{i} should be fresh")
            };
            g.complete(settled("x"), 100);
        }
        let s = idem.stats();
        assert!(s.memory_bytes <= 4096, "{s:?}");
        assert!(s.memory_entries < 100);
        // An evicted id is still in the filter: it is not proven new, the store decides.
        assert!(matches!(idem.claim("", "0").await, Claim::Unknown(_)));
    }

    #[tokio::test]
    async fn an_incomplete_filter_proves_nothing() {
        let idem = Idempotency::new(Duration::from_secs(60), 1 << 20, 1 << 16);
        assert!(matches!(idem.claim("", "a").await, Claim::Unknown(_)));
        idem.note_taken("", "b");
        idem.mark_filter_complete();
        assert!(matches!(idem.claim("", "b").await, Claim::Unknown(_)));
        assert!(matches!(idem.claim("", "c").await, Claim::Fresh(_)));
    }
}
