//! `request_id` idempotency (SPEC "Idempotency").
//!
//! Recent ids live in memory (bounded by count and age); older ones, and ids from before a
//! restart, are found in the audit store. Claiming an id is atomic: the first request inserts
//! a `Pending` slot; a concurrent request with the same id waits for it to settle. A request
//! refused with an error releases its slot, so the id is not reserved.
//!
//! Cost: one hash-map operation under a short lock per request that carries an id; memory
//! ~ (id + fingerprint + response) per remembered id.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// What a settled id remembers: the fingerprint of its body and its response.
#[derive(Debug, Clone)]
pub struct Settled {
    pub fingerprint: String,
    pub response: Arc<serde_json::Value>,
}

enum Slot {
    Pending(Arc<Notify>),
    Done(Settled, Instant),
}

/// Outcome of [`Idempotency::claim`].
pub enum Claim {
    /// The id is new: proceed, then `complete` or drop the guard.
    Fresh(ClaimGuard),
    /// The id was settled before.
    Settled(Settled),
}

pub struct Idempotency {
    slots: Mutex<State>,
    window: Duration,
    max_entries: usize,
}

struct State {
    map: HashMap<String, Slot>,
    /// Settled ids in settle order, for eviction by age and count.
    order: VecDeque<(String, Instant)>,
}

/// Holds a claimed id. Dropping it without `complete` releases the id.
pub struct ClaimGuard {
    owner: Arc<Idempotency>,
    id: Option<String>,
    notify: Arc<Notify>,
}

impl ClaimGuard {
    pub fn complete(mut self, settled: Settled) {
        if let Some(id) = self.id.take() {
            self.owner.settle(id, settled);
        }
        self.notify.notify_waiters();
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.owner.slots.lock().map.remove(&id);
            self.notify.notify_waiters();
        }
    }
}

impl Idempotency {
    pub fn new(window: Duration, max_entries: usize) -> Arc<Idempotency> {
        Arc::new(Idempotency {
            slots: Mutex::new(State {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            window,
            max_entries: max_entries.max(1),
        })
    }

    /// Claim `id`, waiting while another request with the same id is in flight.
    pub async fn claim(self: &Arc<Self>, id: &str) -> Claim {
        loop {
            let notify = {
                let mut st = self.slots.lock();
                match st.map.get(id) {
                    Some(Slot::Done(s, _)) => return Claim::Settled(s.clone()),
                    Some(Slot::Pending(n)) => n.clone(),
                    None => {
                        let n = Arc::new(Notify::new());
                        st.map.insert(id.to_string(), Slot::Pending(n.clone()));
                        return Claim::Fresh(ClaimGuard {
                            owner: self.clone(),
                            id: Some(id.to_string()),
                            notify: n,
                        });
                    }
                }
            };
            let notified = notify.notified();
            // Re-check after registering interest, or a wake-up between the two could be lost.
            if !matches!(self.slots.lock().map.get(id), Some(Slot::Pending(_))) {
                continue;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
        }
    }

    fn settle(&self, id: String, settled: Settled) {
        let now = Instant::now();
        let mut st = self.slots.lock();
        st.map.insert(id.clone(), Slot::Done(settled, now));
        st.order.push_back((id, now));
        while let Some((old, at)) = st.order.front() {
            if st.order.len() <= self.max_entries && at.elapsed() < self.window {
                break;
            }
            let (old, at) = (old.clone(), *at);
            st.order.pop_front();
            // The id may have been forgotten and settled again since: keep the newer entry.
            if matches!(st.map.get(&old), Some(Slot::Done(_, t)) if *t == at) {
                st.map.remove(&old);
            }
        }
    }

    /// Remembered ids (settled or in flight).
    pub fn len(&self) -> usize {
        self.slots.lock().map.len()
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

    #[tokio::test]
    async fn claim_settle_and_release() {
        let idem = Idempotency::new(Duration::from_secs(60), 10);
        let Claim::Fresh(g) = idem.claim("a").await else {
            panic!("fresh expected")
        };
        g.complete(settled("x"));
        assert!(matches!(idem.claim("a").await, Claim::Settled(s) if s.fingerprint == "x"));
        let Claim::Fresh(g) = idem.claim("b").await else {
            panic!()
        };
        drop(g); // an error releases the id
        assert!(matches!(idem.claim("b").await, Claim::Fresh(_)));
    }

    #[tokio::test]
    async fn concurrent_claim_waits_for_the_first() {
        let idem = Idempotency::new(Duration::from_secs(60), 10);
        let Claim::Fresh(g) = idem.claim("a").await else {
            panic!()
        };
        let other = {
            let idem = idem.clone();
            tokio::spawn(async move { matches!(idem.claim("a").await, Claim::Settled(_)) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        g.complete(settled("x"));
        assert!(other.await.unwrap());
    }

    #[tokio::test]
    async fn bounded_by_count() {
        let idem = Idempotency::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            let Claim::Fresh(g) = idem.claim(&i.to_string()).await else {
                panic!()
            };
            g.complete(settled("x"));
        }
        assert_eq!(idem.len(), 3);
    }
}
