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
//! Auditing: rows are written from the stream by one durable pull consumer that every node
//! shares (`<stream>_AUDIT`): a node fetches a batch, writes it to the shared store
//! (`ON CONFLICT DO NOTHING`), and only then acknowledges the messages. A node that dies with
//! a batch in hand never acknowledges it, so JetStream redelivers it to another node after
//! `audit_ack_wait_secs`: the rows of a node killed right after its publish ack and never
//! restarted are still written, exactly once (unique `(scope, request_id)`), with the
//! `node_id` the message carries. The JetStream publish ack is the durable point of a 200.
//!
//! Delivery holes are never silent: a consumer that jumps forward in stream sequence, or a
//! message it cannot decode, cuts the history and sends `reset` (`history_gap`) to every
//! connection, since events were lost for them.
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

use crate::audit::AuditPipeline;
use crate::backoff::Backoff;
use crate::error::ApiError;
use crate::event::Invalidation;
use crate::fanout::Hub;
use crate::idempotency::Idempotency;
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
    /// Durable consumer shared by all nodes for the audit rows ("" = `<stream>_AUDIT`).
    pub audit_consumer: String,
    /// An audit batch not acknowledged within this long is redelivered to another node.
    pub audit_ack_wait_secs: u64,
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
            audit_consumer: String::new(),
            audit_ack_wait_secs: 30,
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
    audit_consumer: String,
    /// Stream messages that could not be decoded (each cut the history).
    undecodable: AtomicU64,
    /// Forward jumps of the stream sequence met by the delivery consumer (each a gap).
    gaps: AtomicU64,
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
        let audit_consumer = match cfg.audit_consumer.trim() {
            "" => format!("{}_AUDIT", cfg.stream),
            name => name.to_string(),
        };
        let audit_ack_wait = Duration::from_secs(cfg.audit_ack_wait_secs.max(1));
        s.get_or_create_consumer(
            &audit_consumer,
            consumer::pull::Config {
                durable_name: Some(audit_consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: audit_ack_wait,
                deliver_policy: consumer::DeliverPolicy::All,
                filter_subject: cfg.subject.clone(),
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ClusterError::Stream(format!("audit consumer {audit_consumer}: {e}")))?;
        Ok(Arc::new(Cluster {
            client,
            js,
            stream: cfg.stream.clone(),
            subject: cfg.subject.clone(),
            epoch,
            last_seq_at_start: info.state.last_sequence,
            first_seq_at_start: info.state.first_sequence,
            delivered: AtomicU64::new(info.state.last_sequence),
            audit_consumer,
            undecodable: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        }))
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The first stream sequence the delivery consumer hands to the hub: far enough back to
    /// refill a history ring of `history` events, never before the stream's first message.
    pub fn refill_start(&self, history: usize) -> u64 {
        self.last_seq_at_start
            .saturating_sub(history as u64)
            .max(self.first_seq_at_start)
            .max(1)
    }

    /// Does the refill reach back to the stream's first retained message (so the ring holds
    /// everything the epoch still has, and `since_seq: 0` can be answered)?
    pub fn refill_is_whole_stream(&self, history: usize) -> bool {
        self.refill_start(history) <= self.first_seq_at_start.max(1)
    }

    /// (undecodable messages, sequence gaps) met so far.
    pub fn faults(&self) -> (u64, u64) {
        (
            self.undecodable.load(Ordering::Relaxed),
            self.gaps.load(Ordering::Relaxed),
        )
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
        // Deduplication is per token scope too: two tenants' `req-001` are two messages.
        let scope = event.token_name.as_deref().unwrap_or("");
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(crate::idempotency::scoped_key(scope, &event.request_id));
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

    /// Consume the stream forever from `start`, handing each event to `hub` in stream order
    /// and noting its id as taken; re-creates its consumer after any error.
    pub fn spawn_consumer(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        patterns: Arc<PatternCache>,
        idempotency: Arc<Idempotency>,
        start: u64,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        me.delivered.store(start.max(1) - 1, Ordering::Release);
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                match me.consume(&hub, &patterns, &idempotency).await {
                    Ok(()) => backoff.reset(),
                    Err(e) => {
                        tracing::warn!(error = %e, "JetStream consumer stopped; re-creating");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        })
    }

    async fn consume(
        &self,
        hub: &Hub,
        patterns: &PatternCache,
        idempotency: &Idempotency,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let s = self.js.get_stream(&self.stream).await?;
        let next = self.delivered.load(Ordering::Acquire) + 1;
        let first = s.cached_info().state.first_sequence;
        if next < first {
            // The events we were about to deliver have expired from the stream.
            tracing::warn!(next, first, "stream history no longer reaches our position");
            self.gap(hub, first.saturating_sub(1));
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
            let last = self.delivered.load(Ordering::Acquire);
            if seq <= last {
                continue;
            }
            if seq > last + 1 {
                if still_stored(&s, last + 1).await? {
                    // The consumer skipped messages the stream still holds (it happens across
                    // a NATS restart): start again right after the last one delivered.
                    return Err(format!(
                        "ordered consumer jumped from {last} to {seq} over stored messages"
                    )
                    .into());
                }
                // Messages between were removed (limits, a purge) before we delivered them.
                tracing::warn!(
                    expected = last + 1,
                    got = seq,
                    "stream sequence jumped forward"
                );
                self.gap(hub, seq - 1);
            }
            match serde_json::from_slice::<WireEvent>(&m.payload) {
                Ok(ev) => self.deliver(ev, seq, hub, patterns, idempotency),
                Err(e) => {
                    // Its connections would silently miss it: reset them instead.
                    tracing::error!(seq, error = %e, "undecodable stream event; resetting connections");
                    self.undecodable.fetch_add(1, Ordering::Relaxed);
                    self.gap(hub, seq);
                }
            }
            self.delivered.store(seq, Ordering::Release);
        }
        Ok(())
    }

    /// Events through `lost_through` will never be delivered here: cut the history, reset.
    fn gap(&self, hub: &Hub, lost_through: u64) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        hub.history_gap(lost_through);
        self.delivered.fetch_max(lost_through, Ordering::AcqRel);
    }

    /// Hand one stream event to the hub (auditing is the shared audit consumer's job).
    fn deliver(
        &self,
        ev: WireEvent,
        seq: u64,
        hub: &Hub,
        patterns: &PatternCache,
        idempotency: &Idempotency,
    ) {
        idempotency.note_taken(ev.token_name.as_deref().unwrap_or(""), &ev.request_id);
        match ev.into_invalidation(seq, patterns) {
            Ok(inv) => {
                hub.publish(Arc::new(inv));
            }
            Err(e) => {
                tracing::error!(seq, error = %e, "undeliverable stream event (pattern); resetting connections");
                self.undecodable.fetch_add(1, Ordering::Relaxed);
                self.gap(hub, seq);
            }
        }
    }

    /// Write audit rows from the stream through the shared durable consumer, forever.
    pub fn spawn_audit(self: &Arc<Self>, audit: Arc<AuditPipeline>, batch: usize) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                match me.audit_batch(&audit, batch.max(1)).await {
                    Ok(_) => backoff.reset(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster audit consumer: retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
    }

    /// Fetch one batch, write it, then acknowledge it. Unacknowledged messages (the store
    /// failed, or this node died) are redelivered after the ack wait.
    async fn audit_batch(
        &self,
        audit: &AuditPipeline,
        batch: usize,
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        if !audit.ready() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(0);
        }
        let consumer: consumer::PullConsumer = self
            .js
            .get_stream_no_info(&self.stream)
            .await?
            .get_consumer(&self.audit_consumer)
            .await?;
        let mut fetched = consumer
            .fetch()
            .max_messages(batch)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let mut messages = Vec::new();
        let mut rows = Vec::new();
        while let Some(m) = fetched.next().await {
            let m = m?;
            let seq = m.info()?.stream_sequence;
            match serde_json::from_slice::<WireEvent>(&m.payload) {
                Ok(ev) => rows.push(ev.audit_row(seq)),
                Err(e) => {
                    tracing::error!(seq, error = %e, "undecodable stream event: no audit row")
                }
            }
            messages.push(m);
        }
        if messages.is_empty() {
            return Ok(0);
        }
        if let Err(e) = audit.write_rows(&rows).await {
            // Hand them back now rather than after the ack wait: any node may retry them.
            for m in &messages {
                let _ = m.ack_with(jetstream::AckKind::Nak(None)).await;
            }
            return Err(Box::new(e));
        }
        for m in &messages {
            m.ack().await?;
        }
        Ok(messages.len())
    }
}

/// Is the message at `seq` still in the stream? (An error other than "no such message" is an
/// error: the caller retries instead of declaring a gap it cannot prove.)
async fn still_stored(
    s: &stream::Stream,
    seq: u64,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind as Kind;
    match s.get_raw_message(seq).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            Kind::NoMessageFound => Ok(false),
            Kind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND =>
            {
                Ok(false)
            }
            _ => Err(Box::new(e)),
        },
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
    pub fn of(inv: &Invalidation, body_hash: &str, latency_us: u64) -> WireEvent {
        wire::of(inv, body_hash, latency_us)
    }
}
