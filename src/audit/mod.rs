//! The audit trail: records, bounded channel, batched writer (PostgreSQL COPY / SQLite),
//! spool, and queries for `GET /audit/logs`.
//!
//! OWNER: audit helper. Current content is the API the rest of the crate codes against; the
//! implementation fills it in without changing the signatures.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::ApiError;
use crate::event::Invalidation;
use crate::metrics::LatencySummary;
use crate::pattern::PatternType;

/// One audit row in the making: the accepted invalidation plus what only the accepting node
/// knows.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub inv: Arc<Invalidation>,
    /// Request receipt to "queued on every matching connection", µs.
    pub latency_us: u64,
    /// Hex SHA-256 of the request's canonical body (idempotency).
    pub body_hash: String,
}

/// What the store remembers of an earlier request with the same `request_id`; enough to
/// answer a duplicate with the original response.
#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub request_id: String,
    pub body_hash: String,
    pub seq: u64,
    pub published_at_us: i64,
    pub pattern: Option<String>,
    pub pattern_type: Option<PatternType>,
    /// Keys (capped for pattern invalidations).
    pub keys: Vec<String>,
    pub matched_count: u64,
}

/// Counters for `/invalidate/metrics` (`audit` section).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditStats {
    pub queued: u64,
    pub written: u64,
    pub spooled: u64,
    pub failed_batches: u64,
    pub write_latency_us: LatencySummary,
}

/// Errors of the audit store.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Store(String),
    #[error("audit spool: {0}")]
    Spool(#[from] std::io::Error),
}

/// The front of the pipeline: requests reserve a slot, then send their record.
pub struct AuditPipeline {
    tx: mpsc::Sender<AuditRecord>,
    wait: std::time::Duration,
}

/// A reserved slot in the pipeline: once held, sending cannot fail or wait.
pub struct AuditPermit<'a> {
    permit: mpsc::Permit<'a, AuditRecord>,
}

impl AuditPermit<'_> {
    pub fn send(self, record: AuditRecord) {
        self.permit.send(record);
    }
}

impl AuditPipeline {
    /// Open the store (SQLite under the data dir, or PostgreSQL when a URL is configured),
    /// replay the spool, spawn the writer.
    pub async fn start(config: &Config) -> Result<Arc<AuditPipeline>, AuditError> {
        let (tx, mut rx) = mpsc::channel(config.audit.channel_capacity);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Ok(Arc::new(AuditPipeline {
            tx,
            wait: std::time::Duration::from_millis(config.audit.enqueue_wait_ms),
        }))
    }

    /// Reserve room for one record, waiting at most `audit.enqueue_wait_ms`; 503 otherwise.
    pub async fn reserve(&self) -> Result<AuditPermit<'_>, ApiError> {
        match tokio::time::timeout(self.wait, self.tx.reserve()).await {
            Ok(Ok(permit)) => Ok(AuditPermit { permit }),
            Ok(Err(_)) => Err(ApiError::unavailable("audit pipeline is shut down")),
            Err(_) => Err(ApiError::unavailable("audit pipeline is full; retry shortly")),
        }
    }

    /// Durable idempotency lookup (records already written to the store).
    pub async fn find_request(&self, request_id: &str) -> Result<Option<StoredRequest>, AuditError> {
        let _ = request_id;
        Ok(None)
    }

    /// Highest `seq` the store has seen (to continue numbering after a restart).
    pub async fn max_seq(&self) -> Result<u64, AuditError> {
        Ok(0)
    }

    /// `GET /audit/logs?...`: the whole JSON response for a raw query string.
    pub async fn query_logs(&self, query: &str) -> Result<serde_json::Value, ApiError> {
        let _ = query;
        Ok(serde_json::json!({"logs": [], "total_count": 0, "has_more": false}))
    }

    /// Is the store reachable (for `/readyz`)?
    pub fn ready(&self) -> bool {
        true
    }

    pub fn stats(&self) -> AuditStats {
        AuditStats::default()
    }

    /// Stop accepting, drain channel and spool into the store (or the spool, fsynced).
    pub async fn shutdown(&self) {}
}
