//! The publish seam: every accepted invalidation goes through [`Publisher::publish`].
//!
//! Order of operations, and why:
//! 1. reserve a slot in the audit pipeline (SPEC: nothing is pushed unless its audit record
//!    has been accepted into the pipeline; a full pipeline waits briefly, then 503);
//! 2. under the ordering lock: take the next `seq`, stamp `published_at`, and hand the event
//!    to the hub, which routes it and enqueues it on every matching connection without
//!    waiting for any of them. Holding the lock across both is what makes every connection
//!    see events in `seq` order; the critical section is the routing itself (microseconds);
//! 3. send the audit record (with the measured latency) through the reserved slot;
//! 4. count it.
//!
//! Cluster mode replaces step 2's local sequencing with the JetStream stream sequence.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::audit::{AuditPipeline, AuditRecord};
use crate::error::ApiError;
use crate::event::{Invalidation, Target};
use crate::fanout::Hub;
use crate::metrics::Metrics;
use crate::seq::SeqAllocator;

/// An invalidation ready to be sequenced.
pub struct Draft {
    pub request_id: String,
    pub triggered_by: String,
    pub token_name: Option<String>,
    pub target: Target,
    /// Hex SHA-256 fingerprint of the request body (idempotency).
    pub body_hash: String,
    /// When the request was received (latency origin).
    pub received: Instant,
}

pub struct Publisher {
    order: Mutex<SeqAllocator>,
    hub: Arc<Hub>,
    audit: Arc<AuditPipeline>,
    metrics: Arc<Metrics>,
    node_id: Arc<str>,
}

impl Publisher {
    pub fn new(
        seq: SeqAllocator,
        hub: Arc<Hub>,
        audit: Arc<AuditPipeline>,
        metrics: Arc<Metrics>,
        node_id: Arc<str>,
    ) -> Publisher {
        Publisher { order: Mutex::new(seq), hub, audit, metrics, node_id }
    }

    /// Audit-reserve, sequence, fan out, audit-send, count. Returns the sequenced event.
    pub async fn publish(&self, draft: Draft) -> Result<Arc<Invalidation>, ApiError> {
        let permit = self.audit.reserve().await?;
        let inv = {
            let mut seq = self.order.lock();
            let seq = seq.next().map_err(|e| {
                tracing::error!(error = %e, "cannot persist the seq high-water mark");
                ApiError::unavailable("cannot persist the sequence number; see the server log")
            })?;
            let inv = Arc::new(Invalidation {
                seq,
                request_id: draft.request_id,
                triggered_by: draft.triggered_by,
                token_name: draft.token_name,
                published_at_us: crate::time::now_us(),
                node_id: self.node_id.clone(),
                target: draft.target,
            });
            self.hub.publish(inv.clone());
            inv
        };
        let latency_us = draft.received.elapsed().as_micros() as u64;
        permit.send(AuditRecord { inv: inv.clone(), latency_us, body_hash: draft.body_hash });
        self.metrics.record_accepted(&inv, latency_us);
        Ok(inv)
    }

    /// Last `seq` handed out.
    pub fn last_seq(&self) -> u64 {
        self.order.lock().last()
    }
}
