//! Cluster mode over NATS JetStream (SPEC "Cluster mode").
//!
//! Every node publishes the invalidations it accepts to one stream (subject
//! `cache-invalidate`, message id = `request_id` so JetStream deduplicates inside its window)
//! and answers the HTTP request after the publish ack; the ack's stream sequence is the
//! event's `seq`, the same on every node. Every node runs one ordered consumer over the stream
//! and hands each message, in stream order, to its own hub; so the hub sees one global order,
//! and a node that restarts refills its history ring from the stream (it starts consuming up
//! to `ws.history_events` before the end), which is what lets `resume` work on any node.
//!
//! `epoch` is derived from the stream's creation time: stable across node and NATS restarts
//! while the stream keeps its history, different when the stream is recreated.
//!
//! Auditing: the node that accepted an invalidation writes its record when its own consumer
//! delivers it (it knows the `seq` then), before handing it to its hub. So every event in the
//! stream is audited, exactly once (the store's unique `request_id`), by its accepting node,
//! even one whose publish ack was lost and whose HTTP request got 503; and a node that
//! restarts re-offers the records of its recent events, which the store ignores if present.
//!
//! Failure model: NATS unreachable → `ready()` is false and `publish` fails fast with 503
//! (never a silent local-only push); the client reconnects on its own and the consumer task
//! re-creates its consumer from the last sequence it delivered.

mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::audit::{AuditPipeline, AuditRecord};
use crate::error::ApiError;
use crate::event::Invalidation;
use crate::fanout::Hub;
use crate::pattern::PatternCache;

pub use wire::WireEvent;

/// The subject of the original design.
pub const SUBJECT: &str = "cache-invalidate";
/// The stream holding it.
pub const STREAM: &str = "CACHE_INVALIDATE";

/// Stream settings (`[cluster]` in the config file).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// JetStream stream name.
    pub stream: String,
    /// Subject the stream captures.
    pub subject: String,
    /// Oldest event kept in the stream (seconds): the resume horizon.
    pub max_age_secs: u64,
    /// Most events kept in the stream.
    pub max_messages: i64,
    /// JetStream duplicate window for `request_id` (seconds).
    pub duplicate_window_secs: u64,
    /// Publish ack timeout (ms).
    pub publish_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            stream: STREAM.into(),
            subject: SUBJECT.into(),
            max_age_secs: 24 * 3600,
            max_messages: 10_000_000,
            duplicate_window_secs: 120,
            publish_timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream stream: {0}")]
    Stream(String),
    #[error(
        "JetStream stream exists with a conflicting configuration: {0}; \
         delete it (`nats stream rm NAME`) or align the [cluster] settings"
    )]
    Conflict(String),
}

/// A connected node's handle on the bus.
pub struct Cluster {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    subject: String,
    epoch: String,
    /// Stream sequence at start-up.
    last_seq_at_start: u64,
    first_seq_at_start: u64,
    /// Last stream sequence handed to the hub.
    delivered: AtomicU64,
}

impl Cluster {
    /// Connect, create or check the stream, learn the epoch.
    pub async fn connect(url: &str, cfg: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .connect(url)
            .await
            .map_err(|e| ClusterError::Connect {
                url: url.into(),
                message: e.to_string(),
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_millis(cfg.publish_timeout_ms));
        let wanted = stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![cfg.subject.clone()],
            max_age: Duration::from_secs(cfg.max_age_secs),
            max_messages: cfg.max_messages,
            duplicate_window: Duration::from_secs(cfg.duplicate_window_secs),
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let mut s = js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| ClusterError::Stream(e.to_string()))?;
        let info = s
            .info()
            .await
            .map_err(|e| ClusterError::Stream(e.to_string()))?
            .clone();
        check_config(&info.config, &wanted)?;
        let epoch = format!("js-{:x}", info.created.unix_timestamp_nanos());
        Ok(Arc::new(Cluster {
            client,
            js,
            stream: cfg.stream.clone(),
            subject: cfg.subject.clone(),
            epoch,
            last_seq_at_start: info.state.last_sequence,
            first_seq_at_start: info.state.first_sequence,
            delivered: AtomicU64::new(info.state.last_sequence),
        }))
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Last stream sequence at start-up (the hub's starting `seq`).
    pub fn last_seq_at_start(&self) -> u64 {
        self.last_seq_at_start
    }

    /// Is NATS reachable right now?
    pub fn ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publish an accepted invalidation; returns (stream sequence, duplicate).
    pub async fn publish(&self, event: &WireEvent) -> Result<(u64, bool), ApiError> {
        if !self.ready() {
            return Err(ApiError::unavailable(
                "NATS is unreachable; the invalidation was not accepted",
            ));
        }
        let payload = serde_json::to_vec(event)
            .map_err(|e| ApiError::unavailable(format!("cannot encode event: {e}")))?;
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(&event.request_id);
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(request_id = %event.request_id, error = %e, "JetStream publish failed");
            ApiError::unavailable("NATS did not acknowledge the invalidation; it was not accepted")
        };
        let ack = self
            .js
            .send_publish(self.subject.clone(), msg)
            .await
            .map_err(|e| unavailable(&e))?;
        let ack = ack.await.map_err(|e| unavailable(&e))?;
        Ok((ack.sequence, ack.duplicate))
    }

    /// The event stored at `seq` (to answer a duplicate accepted by another node).
    pub async fn fetch(&self, seq: u64) -> Result<WireEvent, ApiError> {
        let s = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| ApiError::unavailable(format!("JetStream: {e}")))?;
        let m = s
            .get_raw_message(seq)
            .await
            .map_err(|e| ApiError::unavailable(format!("JetStream: {e}")))?;
        serde_json::from_slice(&m.payload)
            .map_err(|e| ApiError::unavailable(format!("bad stream message {seq}: {e}")))
    }

    /// Consume the stream forever, handing each event to `hub` in stream order. Starts far
    /// enough back to refill the history ring; re-creates its consumer after any error.
    pub fn spawn_consumer(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        patterns: Arc<PatternCache>,
        audit: Arc<AuditPipeline>,
        history: usize,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let start = self
            .last_seq_at_start
            .saturating_sub(history as u64)
            .max(self.first_seq_at_start)
            .max(1);
        me.delivered.store(start - 1, Ordering::Release);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match me.consume(&hub, &patterns, &audit).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, "JetStream consumer stopped; re-creating");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    async fn consume(
        &self,
        hub: &Hub,
        patterns: &PatternCache,
        audit: &AuditPipeline,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let s = self.js.get_stream(&self.stream).await?;
        let next = self.delivered.load(Ordering::Acquire) + 1;
        let first = s.cached_info().state.first_sequence;
        if next < first {
            // The events we were about to deliver have expired from the stream.
            tracing::warn!(next, first, "stream history no longer reaches our position");
            hub.history_gap(first.saturating_sub(1));
            self.delivered
                .store(first.saturating_sub(1), Ordering::Release);
        }
        let start_sequence = self.delivered.load(Ordering::Acquire) + 1;
        let consumer = s
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence },
                filter_subject: self.subject.clone(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        while let Some(m) = messages.next().await {
            let m = m?;
            let seq = m.info()?.stream_sequence;
            if seq <= self.delivered.load(Ordering::Acquire) {
                continue;
            }
            match serde_json::from_slice::<WireEvent>(&m.payload) {
                Ok(ev) => self.deliver(ev, seq, hub, patterns, audit).await,
                Err(e) => tracing::error!(seq, error = %e, "undecodable stream event"),
            }
            self.delivered.store(seq, Ordering::Release);
        }
        Ok(())
    }
}

impl Cluster {
    /// Audit (if this node accepted it) and hand one stream event to the hub.
    async fn deliver(
        &self,
        ev: WireEvent,
        seq: u64,
        hub: &Hub,
        patterns: &PatternCache,
        audit: &AuditPipeline,
    ) {
        let ours = ev.node_id == hub.node_id();
        let body_hash = ev.body_hash.clone();
        let inv = match ev.into_invalidation(seq, patterns) {
            Ok(inv) => Arc::new(inv),
            Err(e) => {
                tracing::error!(seq, error = %e, "undeliverable stream event (pattern)");
                return;
            }
        };
        if !ours {
            hub.publish(inv);
            return;
        }
        // Our own event: its audit slot first (waiting as long as it takes: the consumer may
        // lag, but a record is never skipped), then the push, then the record.
        let permit = loop {
            match audit.reserve().await {
                Ok(p) => break p,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        hub.publish(inv.clone());
        let latency_us = (crate::time::now_us() - inv.published_at_us).max(0) as u64;
        permit.send(AuditRecord {
            inv,
            latency_us,
            body_hash,
        });
    }
}

/// Refuse to run against a stream whose settings contradict ours in ways that break the
/// contract (another subject set, no dedup window, or memory storage that loses history).
fn check_config(have: &stream::Config, want: &stream::Config) -> Result<(), ClusterError> {
    if have.subjects != want.subjects {
        return Err(ClusterError::Conflict(format!(
            "subjects are {:?}, expected {:?}",
            have.subjects, want.subjects
        )));
    }
    if have.duplicate_window.is_zero() {
        return Err(ClusterError::Conflict(
            "duplicate_window is 0: request_id deduplication is off".into(),
        ));
    }
    if have.retention != stream::RetentionPolicy::Limits {
        return Err(ClusterError::Conflict(format!(
            "retention is {:?}, expected Limits",
            have.retention
        )));
    }
    if have.max_age != want.max_age
        || have.max_messages != want.max_messages
        || have.duplicate_window != want.duplicate_window
    {
        tracing::warn!(
            have_max_age = ?have.max_age, want_max_age = ?want.max_age,
            have_max_messages = have.max_messages, want_max_messages = want.max_messages,
            "stream exists with other limits; keeping the stream's"
        );
    }
    Ok(())
}

/// What the stream carries, for [`Invalidation`] conversion both ways.
impl WireEvent {
    pub fn of(inv: &Invalidation, body_hash: &str) -> WireEvent {
        wire::of(inv, body_hash)
    }
}
