//! Router, per-connection queues, history ring and slow-consumer policy.
//!
//! OWNER: websocket helper. This file currently holds the public API the rest of the crate
//! codes against (`Hub`); the implementation fills it in without changing the signatures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::config::Config;
use crate::event::Invalidation;
use crate::pattern::{Pattern, PatternCache};

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

/// Every live connection, the subscription and tracked-key indexes, and the history ring.
pub struct Hub {
    epoch: String,
    node_id: Arc<str>,
    seq: AtomicU64,
    #[allow(dead_code)]
    patterns: Arc<PatternCache>,
}

impl Hub {
    /// `start_seq` is the last `seq` already used (for `hello` before any event).
    pub fn new(
        config: &Config,
        epoch: String,
        node_id: Arc<str>,
        patterns: Arc<PatternCache>,
        start_seq: u64,
    ) -> Arc<Hub> {
        let _ = config;
        Arc::new(Hub { epoch, node_id, seq: AtomicU64::new(start_seq), patterns })
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

    /// Route `inv` and enqueue it on every matching connection; append it to the history
    /// ring. Callers serialise calls in `seq` order. Never blocks on a connection.
    pub fn publish(&self, inv: Arc<Invalidation>) -> Delivery {
        self.seq.store(inv.seq, Ordering::Release);
        Delivery::default()
    }

    /// Tracked keys (of every connection) matching `pattern`, in byte order, at most `cap`
    /// of them, plus the full distinct count.
    pub fn tracked_matches(&self, pattern: &Pattern, cap: usize) -> (Vec<String>, u64) {
        let _ = (pattern, cap);
        (Vec::new(), 0)
    }

    pub fn stats(&self) -> HubStats {
        HubStats::default()
    }

    /// Close every connection (shutdown).
    pub fn close_all(&self) {}
}
