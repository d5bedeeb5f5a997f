//! One connection as the fan-out sees it: its bounded outbox, its close signal and its
//! one-shot tracked keys.
//!
//! The outbox is a lock-free bounded queue (`SegQueue` + count) of pre-encoded frames bounded twice (events and
//! bytes). The publisher pushes and never waits; the connection's writer task pops. A push
//! that does not fit marks the connection as a slow consumer and wakes the writer, which
//! closes it with 4008. While the connection replays history for `resume`, frames that do not
//! fit go to a spill list instead (bounded by the history size), so that a replay never trips
//! the slow-consumer limit; the spill is drained in order when the replay ends. All spill
//! transitions happen under the hub's publish gate, so queue and spill order never mix.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::auth::Principal;
use crate::index::ConnId;

/// One encoded event frame and its `seq`.
#[derive(Debug, Clone)]
pub struct QueuedFrame {
    pub seq: u64,
    pub bytes: Bytes,
}

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The outbox overflowed: close code 4008 "slow consumer".
    SlowConsumer,
    /// Server shutdown: close code 1001 "going away".
    Shutdown,
}

const OPEN: u8 = 0;
const SLOW: u8 = 1;
const SHUTDOWN: u8 = 2;

/// Outcome of offering a frame to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Did not fit: the connection has just been marked a slow consumer.
    Overflowed,
    /// The connection is already closing; the frame was discarded.
    Closed,
}

/// A bounded lock-free FIFO. `crossbeam`'s `ArrayQueue` preallocates its whole capacity
/// (10,000 slots of 40 bytes: 400 KiB for every idle connection); a `SegQueue` allocates
/// 31-slot blocks as frames arrive and frees them as they drain, so an idle connection costs
/// a few hundred bytes. The bound is an atomic count: pushes happen under the hub's publish
/// gate (one producer), so checking then pushing cannot overshoot.
struct Outbox {
    q: SegQueue<QueuedFrame>,
    len: AtomicUsize,
    cap: usize,
}

impl Outbox {
    fn new(cap: usize) -> Outbox {
        Outbox {
            q: SegQueue::new(),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    fn push(&self, frame: QueuedFrame) -> Result<(), QueuedFrame> {
        if self.len.load(Ordering::Acquire) >= self.cap {
            return Err(frame);
        }
        self.len.fetch_add(1, Ordering::AcqRel);
        self.q.push(frame);
        Ok(())
    }

    fn pop(&self) -> Option<QueuedFrame> {
        let frame = self.q.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(frame)
    }

    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// The fan-out's handle on one WebSocket connection.
pub struct Conn {
    pub id: ConnId,
    pub principal: Arc<Principal>,
    queue: Outbox,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Set while a `resume` replay is being written; see the module doc.
    replaying: AtomicBool,
    spill: Mutex<Vec<QueuedFrame>>,
    max_spill: usize,
    state: AtomicU8,
    /// Wakes the writer: new frames, or a close request.
    wake: Notify,
    /// Wakes a writer stuck in a socket write when the connection must close.
    closing: Notify,
    /// Keys this connection tracks (mirror of the tracked index for this connection, kept
    /// for `resume` and the `tracked` count). Lock order: taken after the publish gate.
    tracked: Mutex<HashSet<Box<str>>>,
}

impl Conn {
    pub fn new(
        id: ConnId,
        principal: Arc<Principal>,
        max_events: usize,
        max_bytes: usize,
        max_spill: usize,
    ) -> Conn {
        Conn {
            id,
            principal,
            queue: Outbox::new(max_events.max(1)),
            queued_bytes: AtomicUsize::new(0),
            max_bytes: max_bytes.max(1),
            replaying: AtomicBool::new(false),
            spill: Mutex::new(Vec::new()),
            max_spill,
            state: AtomicU8::new(OPEN),
            wake: Notify::new(),
            closing: Notify::new(),
            tracked: Mutex::new(HashSet::new()),
        }
    }

    /// Publisher side: enqueue without waiting. O(1), lock-free except during a replay.
    pub fn offer(&self, frame: QueuedFrame) -> Offer {
        if self.state.load(Ordering::Acquire) != OPEN {
            return Offer::Closed;
        }
        // Once a replay has spilled, later frames spill too, or a small frame could overtake
        // a large one that did not fit.
        if self.replaying.load(Ordering::Acquire) {
            let mut spill = self.spill.lock();
            if !spill.is_empty() {
                if spill.len() < self.max_spill {
                    spill.push(frame);
                    return Offer::Queued;
                }
                drop(spill);
                return if self.begin_close(CloseReason::SlowConsumer) {
                    Offer::Overflowed
                } else {
                    Offer::Closed
                };
            }
        }
        let len = frame.bytes.len();
        let before = self.queued_bytes.load(Ordering::Acquire);
        // An event larger than the byte bound still goes through an empty queue, or a single
        // huge invalidation would kill every connection it reaches.
        let fits_bytes = before == 0 || before + len <= self.max_bytes;
        let rejected = if fits_bytes {
            self.queued_bytes.fetch_add(len, Ordering::AcqRel);
            match self.queue.push(frame) {
                Ok(()) => None,
                Err(frame) => {
                    self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                    Some(frame)
                }
            }
        } else {
            Some(frame)
        };
        let Some(frame) = rejected else {
            self.wake.notify_one();
            return Offer::Queued;
        };
        if self.replaying.load(Ordering::Acquire) {
            let mut spill = self.spill.lock();
            if spill.len() < self.max_spill {
                spill.push(frame);
                return Offer::Queued;
            }
        }
        if self.begin_close(CloseReason::SlowConsumer) {
            Offer::Overflowed
        } else {
            Offer::Closed
        }
    }

    /// Writer side: the next queued frame.
    pub fn pop(&self) -> Option<QueuedFrame> {
        let frame = self.queue.pop()?;
        self.queued_bytes
            .fetch_sub(frame.bytes.len(), Ordering::AcqRel);
        Some(frame)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Ask the writer to close the connection. Returns whether this call changed the state
    /// (the first reason wins).
    pub fn begin_close(&self, reason: CloseReason) -> bool {
        let to = match reason {
            CloseReason::SlowConsumer => SLOW,
            CloseReason::Shutdown => SHUTDOWN,
        };
        let changed = self
            .state
            .compare_exchange(OPEN, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.wake.notify_one();
            self.closing.notify_waiters();
        }
        changed
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.state.load(Ordering::Acquire) {
            SLOW => Some(CloseReason::SlowConsumer),
            SHUTDOWN => Some(CloseReason::Shutdown),
            _ => None,
        }
    }

    /// Resolves when frames may be waiting or the connection must close. Keeps a permit, so
    /// a push between two waits is never lost.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Re-arm the wake-up (the writer stopped draining before the queue was empty).
    pub fn rewake(&self) {
        self.wake.notify_one();
    }

    /// Resolves once the connection must close (checks the state, so it never misses it).
    pub async fn closing(&self) {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.close_reason().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Start a replay: overflow spills instead of closing. Call under the publish gate.
    pub(crate) fn start_replay(&self) {
        self.replaying.store(true, Ordering::Release);
    }

    /// End a replay: everything queued or spilled meanwhile, in order. Call under the publish
    /// gate (no push can interleave).
    pub(crate) fn end_replay(&self) -> Vec<QueuedFrame> {
        let mut out = Vec::new();
        while let Some(f) = self.pop() {
            out.push(f);
        }
        out.append(&mut self.spill.lock());
        self.replaying.store(false, Ordering::Release);
        out
    }

    /// Everything queued now, in order (used for the `resume` cut).
    pub(crate) fn drain(&self) -> Vec<QueuedFrame> {
        let mut out = Vec::new();
        while let Some(f) = self.pop() {
            out.push(f);
        }
        out
    }

    /// The tracked-key mirror.
    pub fn tracked(&self) -> parking_lot::MutexGuard<'_, HashSet<Box<str>>> {
        self.tracked.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, len: usize) -> QueuedFrame {
        QueuedFrame {
            seq,
            bytes: Bytes::from(vec![b'x'; len]),
        }
    }

    fn conn(events: usize, bytes: usize) -> Conn {
        Conn::new(1, Arc::new(Principal::open()), events, bytes, 4)
    }

    #[test]
    fn overflow_by_events_marks_slow_consumer_once() {
        let c = conn(2, 1 << 20);
        assert_eq!(c.offer(frame(1, 10)), Offer::Queued);
        assert_eq!(c.offer(frame(2, 10)), Offer::Queued);
        assert_eq!(c.offer(frame(3, 10)), Offer::Overflowed);
        assert_eq!(c.offer(frame(4, 10)), Offer::Closed);
        assert_eq!(c.close_reason(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn overflow_by_bytes_but_an_empty_queue_takes_a_big_frame() {
        let c = conn(100, 100);
        assert_eq!(c.offer(frame(1, 500)), Offer::Queued);
        assert_eq!(c.pop().map(|f| f.seq), Some(1));
        assert_eq!(c.offer(frame(2, 60)), Offer::Queued);
        assert_eq!(c.offer(frame(3, 60)), Offer::Overflowed);
    }

    #[test]
    fn replay_spills_in_order_instead_of_closing() {
        let c = conn(2, 1 << 20);
        c.start_replay();
        for seq in 1..=5 {
            assert_eq!(c.offer(frame(seq, 10)), Offer::Queued);
        }
        let seqs: Vec<u64> = c.end_replay().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert!(c.close_reason().is_none());
    }

    #[test]
    fn replay_spill_keeps_order_when_a_small_frame_would_fit() {
        let c = conn(10, 100);
        c.start_replay();
        assert_eq!(c.offer(frame(1, 80)), Offer::Queued);
        assert_eq!(c.offer(frame(2, 80)), Offer::Queued); // over the byte bound: spilled
        assert_eq!(c.offer(frame(3, 10)), Offer::Queued); // would fit, but must not overtake 2
        let seqs: Vec<u64> = c.end_replay().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn replay_spill_is_bounded() {
        let c = conn(1, 1 << 20);
        c.start_replay();
        for seq in 1..=5 {
            assert_eq!(c.offer(frame(seq, 10)), Offer::Queued);
        }
        assert_eq!(c.offer(frame(6, 10)), Offer::Overflowed);
    }

    #[tokio::test]
    async fn closing_resolves_after_begin_close() {
        let c = Arc::new(conn(1, 10));
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.closing().await });
        tokio::task::yield_now().await;
        assert!(c.begin_close(CloseReason::Shutdown));
        waiter.await.unwrap();
        assert!(!c.begin_close(CloseReason::SlowConsumer));
    }
}
