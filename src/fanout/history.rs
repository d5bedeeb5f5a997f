//! The history ring: the last `ws.history_events` invalidations not older than
//! `ws.history_age_secs`, kept for `resume`.
//!
//! Entries are `Arc<Invalidation>` (shared with the publisher and the audit pipeline), so the
//! ring costs one pointer and one timestamp per event plus whatever the invalidations hold.
//! The ring is only touched under the hub's publish gate: appends are O(1) amortised, a
//! snapshot for `resume` is O(retained events after the position) pointer copies.
//!
//! Positions: `floor` is the highest `seq` that can no longer be replayed (the last evicted
//! event, or the `seq` at start-up: events before this process are not retained). A resume
//! from `since_seq` is complete iff `since_seq >= floor`, except that `since_seq == 0` before
//! any eviction means "from the start of this epoch" and replays everything retained.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::Invalidation;

/// Why a `resume` cannot replay; SPEC's `reset` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    HistoryGap,
    EpochChanged,
    InvalidPosition,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::HistoryGap => "history_gap",
            ResetReason::EpochChanged => "epoch_changed",
            ResetReason::InvalidPosition => "invalid_position",
        }
    }
}

struct Entry {
    inv: Arc<Invalidation>,
    at: Instant,
}

pub struct History {
    entries: VecDeque<Entry>,
    max_events: usize,
    max_age: Duration,
    floor: u64,
    evicted_any: bool,
}

impl History {
    /// `start_seq`: the last `seq` before this ring's first event. `zero_complete`: whether
    /// the ring holds every event of the epoch from its start (so `since_seq: 0` can be
    /// answered): true for a single node (a new epoch per process), false for a cluster node
    /// that refills only the tail of a longer stream.
    pub fn new(
        max_events: usize,
        max_age: Duration,
        start_seq: u64,
        zero_complete: bool,
    ) -> History {
        History {
            entries: VecDeque::new(),
            max_events: max_events.max(1),
            max_age,
            floor: start_seq,
            evicted_any: !zero_complete,
        }
    }

    pub fn push(&mut self, inv: Arc<Invalidation>, now: Instant) {
        self.entries.push_back(Entry { inv, at: now });
        while self.entries.len() > self.max_events {
            self.evict_front();
        }
        self.expire(now);
    }

    /// Drop entries older than the age bound.
    pub fn expire(&mut self, now: Instant) {
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > self.max_age)
        {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.floor = self.floor.max(e.inv.seq);
            self.evicted_any = true;
        }
    }

    /// Every retained event with `seq > since_seq`, or why they would not be the complete
    /// set of events after `since_seq`. `current` is the hub's last `seq`.
    pub fn since(
        &mut self,
        since_seq: u64,
        current: u64,
        now: Instant,
    ) -> Result<Vec<Arc<Invalidation>>, ResetReason> {
        if since_seq > current {
            return Err(ResetReason::InvalidPosition);
        }
        self.expire(now);
        let from_epoch_start = since_seq == 0 && !self.evicted_any;
        if since_seq < self.floor && !from_epoch_start {
            return Err(ResetReason::HistoryGap);
        }
        // Entries are in seq order: binary search for the first one after the position.
        let start = self.entries.partition_point(|e| e.inv.seq <= since_seq);
        Ok(self.entries.range(start..).map(|e| e.inv.clone()).collect())
    }

    /// Events after `seq` were lost (cluster mode: the stream expired them before this node
    /// delivered them): forget everything and answer any `resume` from before `seq` with
    /// `history_gap`.
    pub fn cut(&mut self, seq: u64) {
        self.entries.clear();
        self.floor = self.floor.max(seq);
        self.evicted_any = true;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod cut_tests {
    use super::*;

    #[test]
    fn a_cut_turns_older_positions_into_gaps() {
        let mut h = History::new(10, Duration::from_secs(60), 0, true);
        h.cut(7);
        assert_eq!(
            h.since(0, 7, Instant::now()).unwrap_err(),
            ResetReason::HistoryGap
        );
        assert_eq!(
            h.since(6, 7, Instant::now()).unwrap_err(),
            ResetReason::HistoryGap
        );
        assert!(h.since(7, 7, Instant::now()).unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Target;

    fn inv(seq: u64) -> Arc<Invalidation> {
        Arc::new(Invalidation {
            seq,
            request_id: format!("r{seq}"),
            triggered_by: "t".into(),
            token_name: None,
            published_at_us: 0,
            node_id: Arc::from("n"),
            target: Target::Keys(vec!["k".into()]),
            soft: false,
        })
    }

    fn seqs(v: &[Arc<Invalidation>]) -> Vec<u64> {
        v.iter().map(|i| i.seq).collect()
    }

    #[test]
    fn replays_after_position() {
        let now = Instant::now();
        let mut h = History::new(10, Duration::from_secs(60), 0, true);
        for s in 1..=5 {
            h.push(inv(s), now);
        }
        assert_eq!(seqs(&h.since(0, 5, now).unwrap()), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(&h.since(3, 5, now).unwrap()), vec![4, 5]);
        assert_eq!(seqs(&h.since(5, 5, now).unwrap()), Vec::<u64>::new());
        assert_eq!(
            h.since(6, 5, now).unwrap_err(),
            ResetReason::InvalidPosition
        );
    }

    /// A cluster node refilling the tail of a longer stream: `since_seq: 0` cannot be answered
    /// from the tail (the events before it are not in the ring), positions inside it can.
    #[test]
    fn a_refilled_tail_answers_zero_with_a_gap() {
        let now = Instant::now();
        let mut h = History::new(10, Duration::from_secs(60), 40, false);
        for s in 41..=45 {
            h.push(inv(s), now);
        }
        assert_eq!(h.since(0, 45, now).unwrap_err(), ResetReason::HistoryGap);
        assert_eq!(h.since(39, 45, now).unwrap_err(), ResetReason::HistoryGap);
        assert_eq!(
            seqs(&h.since(40, 45, now).unwrap()),
            vec![41, 42, 43, 44, 45]
        );
    }

    #[test]
    fn count_bound_makes_a_gap() {
        let now = Instant::now();
        let mut h = History::new(3, Duration::from_secs(60), 0, true);
        for s in 1..=5 {
            h.push(inv(s), now);
        }
        assert_eq!(h.since(1, 5, now).unwrap_err(), ResetReason::HistoryGap);
        assert_eq!(h.since(0, 5, now).unwrap_err(), ResetReason::HistoryGap);
        assert_eq!(seqs(&h.since(2, 5, now).unwrap()), vec![3, 4, 5]);
    }

    #[test]
    fn age_bound_makes_a_gap() {
        let t0 = Instant::now();
        let mut h = History::new(100, Duration::from_secs(10), 0, true);
        h.push(inv(1), t0);
        h.push(inv(2), t0 + Duration::from_secs(8));
        let later = t0 + Duration::from_secs(15);
        assert_eq!(h.since(0, 2, later).unwrap_err(), ResetReason::HistoryGap);
        assert_eq!(seqs(&h.since(1, 2, later).unwrap()), vec![2]);
    }

    #[test]
    fn restart_floor() {
        let now = Instant::now();
        let mut h = History::new(100, Duration::from_secs(10), 40, true);
        h.push(inv(41), now);
        assert_eq!(h.since(10, 41, now).unwrap_err(), ResetReason::HistoryGap);
        assert_eq!(seqs(&h.since(0, 41, now).unwrap()), vec![41]);
        assert_eq!(seqs(&h.since(40, 41, now).unwrap()), vec![41]);
    }
}
