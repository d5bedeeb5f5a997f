//! Fan-out: routing, per-connection queues, the history ring and the slow-consumer policy.
//!
//! # Design
//! The publisher calls [`Hub::publish`] once per accepted invalidation, in `seq` order. Under
//! the *publish gate* (one mutex that also owns the history ring and the router's scratch
//! buffers) it:
//! 1. routes the invalidation through the subscription and tracked-key indexes
//!    ([`router`]): one slot per receiving connection with its keys;
//! 2. encodes each distinct payload once as a complete WebSocket text frame
//!    ([`frame`]); connections receiving the same key subset share one `Bytes`;
//! 3. offers the frame to each connection's bounded lock-free outbox ([`conn`]): never
//!    waits; an outbox that overflows marks its connection a slow consumer (closed 4008);
//! 4. appends the invalidation to the history ring ([`history`]) and publishes its `seq`.
//!
//! Because `seq` is stored last, under the gate, reading [`Hub::current_seq`] = S means every
//! event up to S is already in the outboxes of the connections it matched. The WebSocket
//! writer relies on that: a `heartbeat`/`pong` carrying S is written only after draining
//! the outbox, and `resume` takes its cut (drain the outbox, snapshot the history after the
//! position) under the gate, so replay and live events neither overlap nor leave a gap.
//!
//! # Costs
//! `publish` is O(index lookups + matching connections), allocation-free in steady state
//! except one `Bytes` per distinct frame. Resume holds the gate for O(queued + retained)
//! pointer copies; matching the snapshot against the connection's interests happens outside.
//!
//! # Invariants
//! * Each connection receives live events in `seq` order, at most one per invalidation.
//! * The tracked-key mirror of a connection equals its entries in the tracked index: both
//!   change under the connection's `tracked` lock (lock order: gate, conns map, tracked).

pub mod conn;
pub mod frame;
pub mod history;
pub mod router;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::auth::Principal;
use crate::config::{Config, Limits, WsConfig};
use crate::event::{Invalidation, Target};
use crate::index::{ConnId, SubscriptionIndex, TrackedIndex};
use crate::pattern::{Pattern, PatternCache};

pub use conn::{CloseReason, Conn, Offer, QueuedFrame};
pub use history::ResetReason;

use frame::{EventEncoder, EventKeys};
use history::History;
use router::{Indexes, Router};

/// Result of handing one invalidation to the connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery {
    /// Connections whose queue received the event.
    pub delivered: u64,
    /// Connections that matched but whose queue was full (closed as slow consumers).
    pub dropped: u64,
}

/// Counters for `/invalidate/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HubStats {
    pub connections_active: u64,
    pub connections_total: u64,
    pub slow_consumer_closes: u64,
    pub events_delivered: u64,
    pub events_dropped: u64,
    pub subscriptions: u64,
    pub tracked_keys: u64,
}

/// What the publish gate protects.
struct Gate {
    history: History,
    router: Router,
    /// Frames by key subset, for the invalidation being published.
    subsets: HashMap<Vec<u32>, Bytes>,
    scratch_idx: Vec<u32>,
}

/// The `resume` cut: what the connection must write before `resumed`.
pub struct ResumeCut {
    /// Frames that were queued at the cut, in order (live events not yet written).
    pub pending: Vec<QueuedFrame>,
    /// Retained invalidations after the position, to filter by the connection's interests.
    pub events: Vec<Arc<Invalidation>>,
    /// The `seq` of the cut: later events arrive through the outbox.
    pub seq: u64,
}

/// Every live connection, the subscription and tracked-key indexes, and the history ring.
pub struct Hub {
    epoch: String,
    node_id: Arc<str>,
    seq: AtomicU64,
    patterns: Arc<PatternCache>,
    ws: WsConfig,
    limits: Limits,
    subs: SubscriptionIndex,
    tracked: TrackedIndex,
    conns: RwLock<HashMap<ConnId, Arc<Conn>>>,
    gate: Mutex<Gate>,
    next_conn: AtomicU64,
    closing: AtomicBool,
    /// Signalled when the last connection unregisters (for `wait_closed`).
    idle: tokio::sync::Notify,
    connections_total: AtomicU64,
    slow_consumer_closes: AtomicU64,
    events_delivered: AtomicU64,
    events_dropped: AtomicU64,
    subscriptions: AtomicU64,
}

impl Hub {
    /// `start_seq` is the last `seq` already used (for `hello` before any event).
    pub fn new(
        config: &Config,
        epoch: String,
        node_id: Arc<str>,
        patterns: Arc<PatternCache>,
        start_seq: u64,
        history_from_zero: bool,
    ) -> Arc<Hub> {
        let ws = config.ws.clone();
        let history = History::new(
            ws.history_events,
            Duration::from_secs(ws.history_age_secs),
            start_seq,
            history_from_zero,
        );
        Arc::new(Hub {
            epoch,
            node_id,
            seq: AtomicU64::new(start_seq),
            patterns,
            ws,
            limits: config.limits.clone(),
            subs: SubscriptionIndex::new(),
            tracked: TrackedIndex::new(),
            conns: RwLock::new(HashMap::new()),
            gate: Mutex::new(Gate {
                history,
                router: Router::new(),
                subsets: HashMap::new(),
                scratch_idx: Vec::new(),
            }),
            next_conn: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            idle: tokio::sync::Notify::new(),
            connections_total: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            events_delivered: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
        })
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The last `seq` handed to `publish`.
    pub fn current_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// WebSocket settings (queue bounds, heartbeat, per-connection limits).
    pub fn ws_config(&self) -> &WsConfig {
        &self.ws
    }

    /// Request limits (key length, frame size).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The shared compiled-pattern cache.
    pub fn patterns(&self) -> &PatternCache {
        &self.patterns
    }

    /// Route `inv` and enqueue it on every matching connection; append it to the history
    /// ring. Callers serialise calls in `seq` order. Never blocks on a connection.
    pub fn publish(&self, inv: Arc<Invalidation>) -> Delivery {
        let mut gate = self.gate.lock();
        let Gate {
            history,
            router,
            subsets,
            scratch_idx,
        } = &mut *gate;
        subsets.clear();
        let encoder = EventEncoder::new(&inv, &self.epoch);
        let indexes = Indexes {
            subs: &self.subs,
            tracked: &self.tracked,
        };
        let slots = router.route(&inv.target, &indexes);
        let conns = self.conns.read();
        let mut all_keys: Option<Bytes> = None;
        let mut no_keys: Option<Bytes> = None;
        let mut delivery = Delivery::default();
        for slot in slots {
            let Some(conn) = conns.get(&slot.conn) else {
                continue;
            };
            forget_taken(conn, &inv.target, slot);
            let bytes = match &inv.target {
                Target::Keys(keys) => {
                    let idx = allowed_indexes(&conn.principal, keys, &slot.keys, scratch_idx);
                    if idx.is_empty() {
                        continue;
                    }
                    if idx.len() == keys.len() {
                        all_keys
                            .get_or_insert_with(|| encoder.encode(EventKeys::All(keys)))
                            .clone()
                    } else if let Some(b) = subsets.get(idx) {
                        b.clone()
                    } else {
                        let b = encoder.encode(EventKeys::Indexed(keys, idx));
                        subsets.insert(idx.to_vec(), b.clone());
                        b
                    }
                }
                Target::Pattern { .. } => {
                    let names = allowed_names(&conn.principal, &slot.names);
                    if names.is_empty() {
                        no_keys
                            .get_or_insert_with(|| encoder.encode(EventKeys::None))
                            .clone()
                    } else {
                        encoder.encode(EventKeys::Named(&names))
                    }
                }
            };
            match conn.offer(QueuedFrame {
                seq: inv.seq,
                bytes,
            }) {
                Offer::Queued => delivery.delivered += 1,
                Offer::Overflowed => {
                    delivery.dropped += 1;
                    self.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        conn = conn.id,
                        seq = inv.seq,
                        "slow consumer: closing with 4008"
                    );
                }
                Offer::Closed => delivery.dropped += 1,
            }
        }
        drop(conns);
        let seq = inv.seq;
        history.push(inv, Instant::now());
        self.seq.store(seq, Ordering::Release);
        drop(gate);
        self.events_delivered
            .fetch_add(delivery.delivered, Ordering::Relaxed);
        self.events_dropped
            .fetch_add(delivery.dropped, Ordering::Relaxed);
        delivery
    }

    /// Tracked keys (of every connection) matching `pattern`, in byte order, at most `cap`
    /// of them, plus the full distinct count.
    pub fn tracked_matches(&self, pattern: &Pattern, cap: usize) -> (Vec<String>, u64) {
        self.tracked.matches(pattern, cap)
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            connections_active: self.conns.read().len() as u64,
            connections_total: self.connections_total.load(Ordering::Relaxed),
            slow_consumer_closes: self.slow_consumer_closes.load(Ordering::Relaxed),
            events_delivered: self.events_delivered.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            subscriptions: (self.subs.len() as u64).max(self.subscriptions.load(Ordering::Relaxed)),
            tracked_keys: self.tracked.len() as u64,
        }
    }

    /// Close every connection (shutdown). Connections opened afterwards are refused.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        for conn in self.conns.read().values() {
            conn.begin_close(CloseReason::Shutdown);
        }
    }

    /// Fold pending subscription patterns into the DFA set and merge a grown tracked-key
    /// delta into a new fst base. Blocking (milliseconds to a second): run it off the async
    /// workers, e.g. once a second through `spawn_blocking`.
    pub fn maintain(&self) {
        self.subs.maintain();
        self.tracked.maintain();
    }

    /// Send `{"type":"reset","reason":…}` to every connection: events were lost (cluster mode:
    /// the stream no longer holds what this node was about to deliver), so every cache
    /// manager must drop what its interests cover. Never waits on a connection.
    pub fn reset_all(&self, reason: ResetReason) {
        let bytes =
            frame::json_frame(&serde_json::json!({"type": "reset", "reason": reason.as_str()}));
        let seq = self.current_seq();
        for conn in self.conns.read().values() {
            if conn.offer(QueuedFrame {
                seq,
                bytes: bytes.clone(),
            }) == Offer::Overflowed
            {
                self.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events up to and including `lost_through` were lost before delivery (cluster mode: the
    /// stream expired them): move the position past them, make any later `resume` from before
    /// it a `history_gap` (not a partial replay), and send every connection a `reset`.
    pub fn history_gap(&self, lost_through: u64) {
        {
            let mut gate = self.gate.lock();
            gate.history.cut(lost_through);
            self.seq.fetch_max(lost_through, Ordering::AcqRel);
        }
        self.reset_all(ResetReason::HistoryGap);
    }

    /// Resolves once no connection is registered: after `close_all`, when every connection
    /// task has written its close frame and ended. Bound it with a timeout.
    pub async fn wait_closed(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.conns.read().is_empty() {
                return;
            }
            idle.await;
        }
    }

    /// Whether `close_all` has been called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    // ---- connection lifecycle and interests (called by the WebSocket task) ----

    /// Register a new connection, or `None` when shutting down.
    pub fn register(&self, principal: Arc<Principal>) -> Option<Arc<Conn>> {
        if self.is_closing() {
            return None;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(
            id,
            principal,
            self.ws.queue_events,
            self.ws.queue_bytes,
            self.ws.history_events.max(self.ws.queue_events),
        ));
        self.conns.write().insert(id, conn.clone());
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        // close_all may have run between the check and the insert.
        if self.is_closing() {
            conn.begin_close(CloseReason::Shutdown);
        }
        Some(conn)
    }

    /// Forget a connection and its interests. `subscriptions` is how many it had.
    pub fn unregister(&self, conn: &Conn, subscriptions: usize) {
        let now_empty = {
            let mut conns = self.conns.write();
            conns.remove(&conn.id);
            conns.is_empty()
        };
        self.subs.remove_conn(conn.id);
        let mut tracked = conn.tracked();
        self.tracked.remove_conn(conn.id);
        tracked.clear();
        drop(tracked);
        self.subscriptions
            .fetch_sub(subscriptions as u64, Ordering::Relaxed);
        if now_empty {
            self.idle.notify_waiters();
        }
    }

    pub fn subscribe(&self, conn: &Conn, pattern: Arc<Pattern>) {
        self.subs.subscribe(conn.id, pattern);
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unsubscribe(&self, conn: &Conn, pattern: &Pattern) {
        self.subs.unsubscribe(conn.id, pattern);
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Track `keys` for `conn`; returns how many keys it tracks now.
    pub fn track<'k>(&self, conn: &Conn, keys: impl IntoIterator<Item = &'k str>) -> usize {
        let mut mirror = conn.tracked();
        for key in keys {
            if mirror.insert(Box::from(key)) {
                self.tracked.track(conn.id, key);
            }
        }
        mirror.len()
    }

    /// Stop tracking `keys`; returns how many keys `conn` tracks now.
    pub fn untrack<'k>(&self, conn: &Conn, keys: impl IntoIterator<Item = &'k str>) -> usize {
        let mut mirror = conn.tracked();
        for key in keys {
            if mirror.remove(key) {
                self.tracked.untrack(conn.id, key);
            }
        }
        mirror.len()
    }

    /// Keys `conn` tracks now.
    pub fn tracked_count(&self, conn: &Conn) -> usize {
        conn.tracked().len()
    }

    /// Take the `resume` cut for `conn` (see the module doc). On success the connection is
    /// in replay mode until [`Hub::end_replay`]: outbox overflow spills instead of closing.
    pub fn resume_cut(
        &self,
        conn: &Conn,
        epoch: &str,
        since_seq: u64,
    ) -> Result<ResumeCut, ResetReason> {
        if epoch != self.epoch {
            return Err(ResetReason::EpochChanged);
        }
        let mut gate = self.gate.lock();
        let seq = self.current_seq();
        let events = gate.history.since(since_seq, seq, Instant::now())?;
        let pending = conn.drain();
        conn.start_replay();
        Ok(ResumeCut {
            pending,
            events,
            seq,
        })
    }

    /// End the replay started by `resume_cut`: the frames queued or spilled meanwhile.
    pub fn end_replay(&self, conn: &Conn) -> Vec<QueuedFrame> {
        let _gate = self.gate.lock();
        conn.end_replay()
    }

    /// Consume (one-shot) `key` from `conn`'s tracked keys if it is tracked there.
    pub fn take_tracked(&self, conn: &Conn, key: &str) -> bool {
        let mut mirror = conn.tracked();
        let had = mirror.remove(key);
        if had {
            self.tracked.untrack(conn.id, key);
        }
        had
    }
}

/// Keep the connection's tracked-key mirror in step with the index's one-shot removals.
fn forget_taken(conn: &Conn, target: &Target, slot: &router::Slot) {
    match target {
        Target::Keys(keys) if !slot.taken.is_empty() => {
            let mut mirror = conn.tracked();
            for &i in &slot.taken {
                if let Some(k) = keys.get(i as usize) {
                    mirror.remove(k.as_str());
                }
            }
        }
        Target::Pattern { .. } if !slot.names.is_empty() => {
            let mut mirror = conn.tracked();
            for k in &slot.names {
                mirror.remove(k.as_str());
            }
        }
        _ => {}
    }
}

/// The key indexes a (possibly prefix-restricted) principal may receive.
fn allowed_indexes<'a>(
    principal: &Principal,
    keys: &[String],
    idx: &'a [u32],
    scratch: &'a mut Vec<u32>,
) -> &'a [u32] {
    if principal.prefixes.is_none() {
        return idx;
    }
    scratch.clear();
    scratch.extend(idx.iter().copied().filter(|&i| {
        keys.get(i as usize)
            .is_some_and(|k| principal.allows_key(k))
    }));
    scratch
}

fn allowed_names<'a>(principal: &Principal, names: &'a [String]) -> Cow<'a, [String]> {
    if principal.prefixes.is_none() {
        return Cow::Borrowed(names);
    }
    Cow::Owned(
        names
            .iter()
            .filter(|k| principal.allows_key(k))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests;
