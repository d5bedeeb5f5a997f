//! Rendering of the metrics: SPEC's JSON document and the same figures as Prometheus text.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::audit::AuditStats;
use crate::error::ErrorCode;
use crate::fanout::HubStats;
use crate::idempotency::IdempotencyStats;
use crate::pattern::{CacheStats, PatternType};

use super::{LatencyHistogram, Metrics};

/// Everything one metrics read reports.
pub struct Snapshot<'a> {
    pub metrics: &'a Metrics,
    pub hub: HubStats,
    pub patterns: CacheStats,
    pub audit: AuditStats,
    pub idempotency: IdempotencyStats,
    pub audit_write_latency: &'a LatencyHistogram,
    pub wal_fsync_latency: &'a LatencyHistogram,
}

impl Snapshot<'_> {
    /// Refusals by the limit that caused them (SPEC: every refusal counted under `limits`).
    /// Reasons counted so far: a token's rate limit (429), a body over its byte limit (413),
    /// a slow consumer closed with 4008, and a connection over `http.max_connections` or
    /// `http.max_connections_per_ip`. (The 503s of the audit path are in `rejected_by_code`
    /// under `unavailable`.)
    pub fn limits(&self) -> Vec<(&'static str, u64)> {
        let r = &self.metrics.requests;
        vec![
            ("rate_limited", r.rejected_by(ErrorCode::RateLimited)),
            (
                "payload_too_large",
                r.rejected_by(ErrorCode::PayloadTooLarge),
            ),
            ("slow_consumer", self.hub.slow_consumer_closes),
            (
                "connections",
                self.metrics
                    .limits
                    .connections
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        let r = &self.metrics.requests;
        let by_type: serde_json::Map<String, Value> = PatternType::ALL
            .iter()
            .map(|t| (t.as_str().to_string(), Value::from(r.by_type(*t))))
            .collect();
        let rejected_by_code: serde_json::Map<String, Value> = ErrorCode::ALL
            .iter()
            .filter(|c| r.rejected_by(**c) > 0)
            .map(|c| (c.as_str().to_string(), Value::from(r.rejected_by(*c))))
            .collect();
        let top_patterns: Vec<Value> = r
            .top_patterns
            .top(10)
            .into_iter()
            .map(|(p, c)| json!({"pattern": p, "count": c}))
            .collect();
        let top_prefixes: Vec<Value> = r
            .top_prefixes
            .top(10)
            .into_iter()
            .map(|(p, c)| json!({"prefix": p, "count": c}))
            .collect();
        let h = &self.hub;
        json!({
            "uptime_seconds": self.metrics.started.elapsed().as_secs(),
            "invalidations": {
                "total": r.total.load(std::sync::atomic::Ordering::Relaxed),
                "keys_total": r.keys_total.load(std::sync::atomic::Ordering::Relaxed),
                "duplicates": r.duplicates.load(std::sync::atomic::Ordering::Relaxed),
                "soft": r.soft.load(std::sync::atomic::Ordering::Relaxed),
                "rejected": r.rejected_total(),
                "rejected_by_code": rejected_by_code,
                "by_type": by_type,
                "per_second_1m": r.rate.per_second(60),
                "per_second_5m": r.rate.per_second(300),
                "top_patterns": top_patterns,
                "top_prefixes": top_prefixes,
            },
            "latency_us": self.metrics.latency.summary(),
            "connections": {
                "active": h.connections_active,
                "total": h.connections_total,
                "slow_consumer_closes": h.slow_consumer_closes,
            },
            "events": {"delivered": h.events_delivered, "dropped": h.events_dropped},
            "index": {"subscriptions": h.subscriptions, "tracked_keys": h.tracked_keys},
            "pattern_cache": self.patterns,
            "audit": self.audit,
            "idempotency": self.idempotency,
            "limits": self.limits().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        })
    }
}

/// Histogram bucket bounds, µs: 25 µs to 10 s, roughly 1-2.5-5 per decade.
const BUCKETS_US: [u64; 18] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A Prometheus histogram in seconds (base units) from a µs HDR histogram, so latencies can
/// be aggregated over a cluster's nodes with `histogram_quantile`.
fn histogram(out: &mut String, name: &str, help: &str, h: &LatencyHistogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let (counts, total, sum_us) = h.cumulative(&BUCKETS_US);
    for (bound, count) in BUCKETS_US.iter().zip(counts) {
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {}", sum_us / 1e6);
    let _ = writeln!(out, "{name}_count {total}");
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The same figures as [`Snapshot::to_json`], in Prometheus text exposition format 0.0.4.
pub fn prometheus_text(s: &Snapshot<'_>) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let r = &s.metrics.requests;
    let mut out = String::with_capacity(4096);
    let one = |v: u64| vec![(String::new(), v as f64)];
    metric(
        &mut out,
        "invalidator_uptime_seconds",
        "gauge",
        "Seconds since start.",
        &one(s.metrics.started.elapsed().as_secs()),
    );
    metric(
        &mut out,
        "invalidator_invalidations_total",
        "counter",
        "Accepted invalidations.",
        &one(r.total.load(Relaxed)),
    );
    metric(
        &mut out,
        "invalidator_invalidated_keys_total",
        "counter",
        "Keys invalidated (keys of key requests plus matched counts of pattern requests).",
        &one(r.keys_total.load(Relaxed)),
    );
    metric(
        &mut out,
        "invalidator_duplicates_total",
        "counter",
        "Requests answered from idempotency.",
        &one(r.duplicates.load(Relaxed)),
    );
    metric(
        &mut out,
        "invalidator_soft_invalidations_total",
        "counter",
        "Accepted soft invalidations (mark stale instead of drop).",
        &one(r.soft.load(Relaxed)),
    );
    let by_type: Vec<(String, f64)> = PatternType::ALL
        .iter()
        .map(|t| (format!("{{type=\"{}\"}}", t.as_str()), r.by_type(*t) as f64))
        .collect();
    metric(
        &mut out,
        "invalidator_invalidations_by_type_total",
        "counter",
        "Accepted invalidations by pattern type (key requests as exact).",
        &by_type,
    );
    let rejected: Vec<(String, f64)> = ErrorCode::ALL
        .iter()
        .map(|c| {
            (
                format!("{{code=\"{}\"}}", c.as_str()),
                r.rejected_by(*c) as f64,
            )
        })
        .collect();
    metric(
        &mut out,
        "invalidator_rejected_total",
        "counter",
        "Requests answered with an error, by code.",
        &rejected,
    );
    let limits: Vec<(String, f64)> = s
        .limits()
        .into_iter()
        .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n as f64))
        .collect();
    metric(
        &mut out,
        "invalidator_limits_refused_total",
        "counter",
        "Requests and connections refused or closed by a configured limit, by reason.",
        &limits,
    );
    metric(
        &mut out,
        "invalidator_invalidations_per_second",
        "gauge",
        "Mean accepted invalidations per second over a window.",
        &[
            ("{window=\"1m\"}".into(), r.rate.per_second(60)),
            ("{window=\"5m\"}".into(), r.rate.per_second(300)),
        ],
    );
    let top_p: Vec<(String, f64)> = r
        .top_patterns
        .top(10)
        .into_iter()
        .map(|(p, c)| (format!("{{pattern=\"{}\"}}", escape(&p)), c as f64))
        .collect();
    metric(
        &mut out,
        "invalidator_top_pattern_invalidations",
        "gauge",
        "Most invalidated patterns (top 10).",
        &top_p,
    );
    let top_k: Vec<(String, f64)> = r
        .top_prefixes
        .top(10)
        .into_iter()
        .map(|(p, c)| (format!("{{prefix=\"{}\"}}", escape(&p)), c as f64))
        .collect();
    metric(
        &mut out,
        "invalidator_top_prefix_invalidations",
        "gauge",
        "Most invalidated key prefixes (top 10).",
        &top_k,
    );
    histogram(
        &mut out,
        "invalidator_publish_latency_seconds",
        "Request receipt to event queued on every matching connection, seconds.",
        &s.metrics.latency,
    );
    let h = &s.hub;
    metric(
        &mut out,
        "invalidator_connections_active",
        "gauge",
        "Open WebSocket connections.",
        &one(h.connections_active),
    );
    metric(
        &mut out,
        "invalidator_connections_total",
        "counter",
        "WebSocket connections accepted.",
        &one(h.connections_total),
    );
    metric(
        &mut out,
        "invalidator_slow_consumer_closes_total",
        "counter",
        "Connections closed with 4008.",
        &one(h.slow_consumer_closes),
    );
    metric(
        &mut out,
        "invalidator_events_delivered_total",
        "counter",
        "Events queued to connections.",
        &one(h.events_delivered),
    );
    metric(
        &mut out,
        "invalidator_events_dropped_total",
        "counter",
        "Events dropped on full queues.",
        &one(h.events_dropped),
    );
    metric(
        &mut out,
        "invalidator_subscriptions",
        "gauge",
        "Subscription patterns across connections.",
        &one(h.subscriptions),
    );
    metric(
        &mut out,
        "invalidator_tracked_keys",
        "gauge",
        "Distinct tracked keys.",
        &one(h.tracked_keys),
    );
    let p = &s.patterns;
    metric(
        &mut out,
        "invalidator_pattern_cache_hits_total",
        "counter",
        "Compiled-pattern cache hits.",
        &one(p.hits),
    );
    metric(
        &mut out,
        "invalidator_pattern_cache_misses_total",
        "counter",
        "Compiled-pattern cache misses.",
        &one(p.misses),
    );
    metric(
        &mut out,
        "invalidator_pattern_cache_size",
        "gauge",
        "Compiled patterns cached.",
        &one(p.size),
    );
    let a = &s.audit;
    metric(
        &mut out,
        "invalidator_audit_queued",
        "gauge",
        "Audit records waiting in the channel.",
        &one(a.queued),
    );
    metric(
        &mut out,
        "invalidator_audit_written_total",
        "counter",
        "Audit records written to the store.",
        &one(a.written),
    );
    metric(
        &mut out,
        "invalidator_audit_pending",
        "gauge",
        "Audit records durable in the write-ahead log, not yet in the store.",
        &one(a.spooled),
    );
    metric(
        &mut out,
        "invalidator_audit_failed_batches_total",
        "counter",
        "Audit batches that failed to write.",
        &one(a.failed_batches),
    );
    histogram(
        &mut out,
        "invalidator_audit_write_latency_seconds",
        "Audit batch write latency into the store, seconds.",
        s.audit_write_latency,
    );
    histogram(
        &mut out,
        "invalidator_wal_fsync_latency_seconds",
        "Write-ahead log group commit (write + fdatasync), seconds.",
        s.wal_fsync_latency,
    );
    out
}
