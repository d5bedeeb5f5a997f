//! The publish seam: every accepted invalidation goes through [`Publisher::publish`].
//!
//! Order of operations, and why:
//! 1. reserve a slot in the audit pipeline (SPEC: nothing is pushed unless its audit record
//!    has been accepted into the pipeline; a full pipeline waits briefly, then 503);
//! 2. under the ordering lock: take the next `seq`, stamp `published_at`, and hand the event
//!    to the hub, which routes it and enqueues it on every matching connection without
//!    waiting for any of them. Holding the lock across both is what makes every connection
//!    see events in `seq` order; the critical section is the routing itself (microseconds);
//! 3. send the audit record (with the measured latency) through the reserved slot, still
//!    under the lock so the write-ahead log holds records in `seq` order, then wait (outside
//!    the lock) until the log has made it durable: only then may the client hear 200;
//! 4. count it.
//!
//! With `audit.push_after_durable` step 2 does not push: the log thread hands the event to
//! the hub once it is durable, in log (= `seq`) order.
//!
//! Cluster mode replaces step 2: the event is published to JetStream and its stream sequence
//! is the `seq`; the node's consumer task (not the request) hands it to the hub, in stream
//! order, as every other node does. The latency sample then ends at the publish ack.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::audit::{AuditPipeline, AuditRecord};
use crate::cluster::{Cluster, WireEvent};
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
    pub soft: bool,
    /// Hex SHA-256 fingerprint of the request body (idempotency).
    pub body_hash: String,
    /// When the request was received (latency origin).
    pub received: Instant,
}

/// Where `seq` comes from.
pub enum Sequencer {
    /// Single node: the local allocator, under the ordering lock.
    Local(Mutex<SeqAllocator>),
    /// Cluster: the JetStream stream sequence.
    Cluster(Arc<Cluster>),
}

/// What became of a draft.
pub enum Published {
    /// Accepted now.
    Fresh(Arc<Invalidation>),
    /// Another node accepted the same `request_id` inside JetStream's duplicate window.
    Duplicate {
        fingerprint: String,
        inv: Arc<Invalidation>,
    },
}

pub struct Publisher {
    sequencer: Sequencer,
    patterns: Arc<crate::pattern::PatternCache>,
    hub: Arc<Hub>,
    audit: Arc<AuditPipeline>,
    metrics: Arc<Metrics>,
    node_id: Arc<str>,
    /// `audit.benchmark_disable_audit` (benchmarks only).
    audit_disabled: bool,
}

impl Publisher {
    pub fn new(
        sequencer: Sequencer,
        patterns: Arc<crate::pattern::PatternCache>,
        hub: Arc<Hub>,
        audit: Arc<AuditPipeline>,
        metrics: Arc<Metrics>,
        node_id: Arc<str>,
        audit_disabled: bool,
    ) -> Publisher {
        if audit_disabled {
            tracing::warn!("audit.benchmark_disable_audit is set: invalidations are NOT audited");
        }
        Publisher {
            sequencer,
            patterns,
            hub,
            audit,
            metrics,
            node_id,
            audit_disabled,
        }
    }

    /// Audit-reserve, sequence, fan out, audit-send, count.
    pub async fn publish(&self, draft: Draft) -> Result<Published, ApiError> {
        let order = match &self.sequencer {
            Sequencer::Local(order) => order,
            // The JetStream publish ack is the durable point; rows come from the stream.
            Sequencer::Cluster(cluster) => return self.publish_cluster(cluster, draft).await,
        };
        let permit = match self.audit_disabled {
            true => None,
            false => Some(self.audit.reserve().await?),
        };
        let (inv, latency_us, durable) = {
            let mut order = order.lock();
            let seq = order.allocate().map_err(|e| {
                tracing::error!(error = %e, "cannot persist the seq high-water mark");
                ApiError::unavailable("cannot persist the sequence number; see the server log")
            })?;
            let inv = Arc::new(self.stamp(
                seq,
                draft.request_id,
                draft.triggered_by,
                draft.token_name,
                draft.target,
                draft.soft,
            ));
            // Sent to the log under the lock too, so log order is seq order.
            match permit {
                Some(permit) if self.audit.push_after_durable() => {
                    let latency_us = draft.received.elapsed().as_micros() as u64;
                    let record = AuditRecord {
                        inv: inv.clone(),
                        latency_us,
                        body_hash: draft.body_hash,
                    };
                    let durable = permit.send_and_push(record, inv.clone());
                    (inv, None, Some(durable))
                }
                permit => {
                    self.hub.publish(inv.clone());
                    let latency_us = draft.received.elapsed().as_micros() as u64;
                    let durable = permit.map(|p| {
                        p.send(AuditRecord {
                            inv: inv.clone(),
                            latency_us,
                            body_hash: draft.body_hash,
                        })
                    });
                    (inv, Some(latency_us), durable)
                }
            }
        };
        // SPEC "Durability": the 200 waits until the record is in the fsynced log.
        if let Some(durable) = durable {
            durable.wait().await?;
        }
        let latency_us = latency_us.unwrap_or_else(|| draft.received.elapsed().as_micros() as u64);
        self.metrics.record_accepted(&inv, latency_us);
        Ok(Published::Fresh(inv))
    }

    /// The invalidation of a draft at `seq`, published now.
    fn stamp(
        &self,
        seq: u64,
        request_id: String,
        triggered_by: String,
        token_name: Option<String>,
        target: Target,
        soft: bool,
    ) -> Invalidation {
        Invalidation {
            seq,
            request_id,
            triggered_by,
            token_name,
            published_at_us: crate::time::now_us(),
            node_id: self.node_id.clone(),
            target,
            soft,
        }
    }

    async fn publish_cluster(
        &self,
        cluster: &Cluster,
        draft: Draft,
    ) -> Result<Published, ApiError> {
        let mut inv = self.stamp(
            0,
            draft.request_id,
            draft.triggered_by,
            draft.token_name,
            draft.target,
            draft.soft,
        );
        let latency_us = draft.received.elapsed().as_micros() as u64;
        let (seq, duplicate) = cluster
            .publish(&WireEvent::of(&inv, &draft.body_hash, latency_us))
            .await?;
        if duplicate {
            let original = cluster.fetch(seq).await?;
            let fingerprint = original.body_hash.clone();
            let inv = original
                .into_invalidation(seq, &self.patterns)
                .map_err(|e| ApiError::unavailable(format!("stored event {seq}: {e}")))?;
            return Ok(Published::Duplicate {
                fingerprint,
                inv: Arc::new(inv),
            });
        }
        // The audit row is written from the stream by the shared audit consumer (`cluster`).
        inv.seq = seq;
        let inv = Arc::new(inv);
        self.metrics
            .record_accepted(&inv, draft.received.elapsed().as_micros() as u64);
        Ok(Published::Fresh(inv))
    }
}
