//! Counters and histograms behind `GET /invalidate/metrics` (JSON) and `GET /metrics`
//! (Prometheus text). The hot path only touches atomics, one histogram record and two small
//! top-k maps; everything else is computed when the endpoint is read.

mod counters;
mod histogram;
mod report;

use std::time::Instant;

pub use counters::{RateWindow, RequestCounters, TopK, key_prefix};
pub use histogram::{LatencyHistogram, LatencySummary};
pub use report::{Snapshot, prometheus_text};

use crate::event::{Invalidation, Target};
use crate::pattern::PatternType;

/// Process-wide metrics owned by the HTTP layer and the publisher.
pub struct Metrics {
    pub started: Instant,
    pub requests: RequestCounters,
    /// Request receipt → event queued on every matching connection, µs.
    pub latency: LatencyHistogram,
    /// Refusals by limits counted outside the request path (connection caps).
    pub limits: LimitCounters,
}

/// Refusals that are not an HTTP answer (a connection closed at accept).
#[derive(Debug, Default)]
pub struct LimitCounters {
    pub connections: std::sync::atomic::AtomicU64,
}

impl LimitCounters {
    /// A connection closed at once: over `http.max_connections` or `max_connections_per_ip`.
    pub fn refused_connection(&self) {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let started = Instant::now();
        Metrics {
            started,
            requests: RequestCounters::new(started),
            latency: LatencyHistogram::new(),
            limits: LimitCounters::default(),
        }
    }

    /// Count one accepted invalidation.
    pub fn record_accepted(&self, inv: &Invalidation, latency_us: u64) {
        self.latency.record(latency_us);
        if inv.soft {
            self.requests
                .soft
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match &inv.target {
            Target::Keys(keys) => {
                self.requests
                    .accepted(PatternType::Exact, keys.len() as u64);
                self.requests
                    .top_prefixes
                    .add_all(keys.iter().map(|k| (key_prefix(k), 1)));
            }
            Target::Pattern {
                pattern,
                matched_count,
                ..
            } => {
                self.requests.accepted(pattern.kind(), *matched_count);
                self.requests.top_patterns.add_all([(pattern.source(), 1)]);
                self.requests
                    .top_prefixes
                    .add_all(inv.keys().iter().map(|k| (key_prefix(k), 1)));
            }
        }
    }
}
