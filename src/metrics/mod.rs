//! Counters and histograms behind `/invalidate/metrics` and `/metrics`.
mod histogram;

pub use histogram::{LatencyHistogram, LatencySummary};
