//! The store writer: the one task that moves records from the write-ahead log into the store.
//!
//! ```text
//!   WAL (durable end) ──read ≤ batch_size──▶ store.write ──commit──▶ checkpoint (+ delete
//!   old segments)          ▲ woken by each group commit, or every flush_ms
//!   tick ──▶ connect / ping with backoff while the store is down
//! ```
//!
//! Invariants:
//! - The checkpoint only moves past records the store has committed, so everything after it
//!   is replayed at the next start; a record is never lost between the log and the store.
//! - Rows are read and written in log order (= `seq` order on one node), so ids in the store
//!   follow `seq`.
//! - Rows that may already be in the store (the start-up backlog, a retry after a failed or
//!   timed-out write) are written with [`WriteMode::Replay`] (`ON CONFLICT DO NOTHING`):
//!   exactly once per `(scope, request_id)`.
//! - While the store is down nothing is read; records wait, durably, in the log.
//!
//! Backoff: after a failure the next connect/ping/write waits `retry_initial_ms`, doubling up
//! to `retry_max_ms`; reset on success.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::postgres::WriteMode;
use super::record::AuditRow;
use super::store::{Store, StoreTarget};
use super::wal::{Position, WalReader, WalShared};
use super::{AuditError, Shared};
use crate::backoff::Backoff;
use crate::config::AuditConfig;

/// Bound on one store write; past it the outcome is unknown and the batch is retried
/// idempotently.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a background connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Writer {
    shared: Arc<Shared>,
    wal: Arc<WalShared>,
    /// `None` only while a read runs on the blocking pool.
    reader: Option<WalReader>,
    target: StoreTarget,
    cfg: AuditConfig,
    /// The drain deadline, once stopped.
    stop: watch::Receiver<Option<tokio::time::Instant>>,
    done: watch::Sender<bool>,
    /// Log position that existed at start-up: rows before it are written as replays.
    replay_until: Position,
    /// The last write failed or timed out: its rows may be partly in.
    retrying: bool,
    healthy: bool,
    backoff: Backoff,
    next_attempt: Instant,
    /// A running connect (`Some(store)`) or ping (`None`) attempt.
    probe: Option<JoinHandle<Result<Option<Store>, AuditError>>>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        wal: Arc<WalShared>,
        target: StoreTarget,
        cfg: AuditConfig,
        stop: watch::Receiver<Option<tokio::time::Instant>>,
        done: watch::Sender<bool>,
    ) -> Writer {
        let healthy = shared.store.load().is_some();
        // At least 1 ms: a zero base would retry a dead store in a busy loop.
        let backoff = Backoff::new(
            Duration::from_millis(cfg.retry_initial_ms.max(1)),
            Duration::from_millis(cfg.retry_max_ms),
        );
        let reader = WalReader::new(wal.dir());
        shared.set_checkpoint(reader.pos);
        let reader = Some(reader);
        let replay_until = wal.durable();
        Writer {
            shared,
            wal,
            reader,
            target,
            cfg,
            stop,
            done,
            replay_until,
            retrying: false,
            healthy,
            backoff,
            next_attempt: Instant::now(),
            probe: None,
        }
    }

    /// Run until stopped, then drain until the deadline the stop carries.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.flush_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.probe_done() {
                // Write whole batches while the log has them (a backlog drains at full speed).
                while self.write_next().await == Progress::Wrote {
                    if self.stop.borrow().is_some() {
                        break;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.changed() => {
                    if self.stop.borrow().is_some() {
                        break;
                    }
                }
                _ = self.wal.appended_notify.notified() => {
                    // Let a group or two more arrive: one store write per flush window.
                    tokio::time::sleep(Duration::from_millis(self.cfg.flush_ms.min(5))).await;
                }
                _ = tick.tick() => {}
            }
        }
        let deadline =
            (*self.stop.borrow()).map_or_else(Instant::now, tokio::time::Instant::into_std);
        self.drain(deadline).await;
    }

    /// Shutdown: write what the log holds while the store takes it and time remains; what is
    /// left stays in the log for the next start.
    async fn drain(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            if !self.probe_done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            match self.write_next().await {
                Progress::Wrote => {}
                Progress::Idle => break,
                Progress::Failed => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let left = self.shared.pending(&self.wal);
        if left > 0 {
            tracing::warn!(
                records = left,
                "audit records still in the write-ahead log at shutdown; replayed at the next start"
            );
        }
        let _ = self.done.send(true);
    }

    /// Read one batch from the log and write it.
    async fn write_next(&mut self) -> Progress {
        if Instant::now() < self.next_attempt {
            return Progress::Failed;
        }
        let Some(store) = self.shared.store.load_full() else {
            return Progress::Failed;
        };
        let durable = self.wal.durable();
        let batch = self.cfg.batch_size.max(1);
        let read = match self.read(durable, batch).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the write-ahead log");
                self.retry_later();
                return Progress::Failed;
            }
        };
        let (rows, at, torn) = read;
        self.wal.torn_frames.fetch_add(torn, Ordering::Relaxed);
        if rows.is_empty() {
            // Moving past a finished segment is progress too.
            if self.shared.checkpoint() != at {
                self.commit_position(at);
            }
            return Progress::Idle;
        }
        let mode = if self.retrying || self.position() < self.replay_until {
            WriteMode::Replay
        } else {
            WriteMode::Fresh
        };
        if !self.write(&store, &rows, mode).await {
            self.retrying = true;
            return Progress::Failed;
        }
        self.retrying = false;
        self.commit_position(at);
        Progress::Wrote
    }

    async fn read(
        &mut self,
        durable: Position,
        max: usize,
    ) -> std::io::Result<(Vec<AuditRow>, Position, u64)> {
        // File reads are blocking; a batch is a few megabytes at most, from the page cache.
        let Some(mut reader) = self.reader.take() else {
            return Err(std::io::Error::other("write-ahead log reader is busy"));
        };
        let (reader, result) = tokio::task::spawn_blocking(move || {
            let result = reader.read(durable, max);
            (reader, result)
        })
        .await
        .map_err(std::io::Error::other)?;
        self.reader = Some(reader);
        result
    }

    fn position(&self) -> Position {
        self.reader.as_ref().map(|r| r.pos).unwrap_or_default()
    }

    fn commit_position(&mut self, at: Position) {
        if let Some(reader) = self.reader.as_mut() {
            reader.advance(at);
        }
        self.shared.set_checkpoint(at);
        if let Err(e) = super::wal::write_checkpoint(self.wal.dir(), at) {
            tracing::warn!(error = %e, "cannot write the write-ahead log checkpoint");
        }
    }

    /// One store write with stats; false (and unhealthy) on failure.
    async fn write(&mut self, store: &Store, rows: &[AuditRow], mode: WriteMode) -> bool {
        let started = Instant::now();
        let result = tokio::time::timeout(WRITE_TIMEOUT, store.write(rows, mode)).await;
        match result {
            Ok(Ok(())) => {
                let s = &self.shared;
                s.write_latency.record(started.elapsed().as_micros() as u64);
                s.batch_sizes.record(rows.len() as u64);
                s.written.fetch_add(rows.len() as u64, Ordering::Relaxed);
                if mode == WriteMode::Replay {
                    s.replayed.fetch_add(rows.len() as u64, Ordering::Relaxed);
                }
                if let Some(max) = rows.iter().map(|r| r.seq).max() {
                    s.written_max_seq.fetch_max(max, Ordering::Relaxed);
                }
                self.recovered();
                true
            }
            Ok(Err(e)) => {
                self.fail(&format!("audit write failed: {e}"));
                false
            }
            Err(_) => {
                self.fail("audit write timed out");
                false
            }
        }
    }

    /// A store write failed: count it, go unhealthy, back off. The rows stay in the log.
    fn fail(&mut self, why: &str) {
        tracing::warn!(
            retry_within_ms = self.backoff.ceiling().as_millis() as u64,
            "{why}; records wait in the write-ahead log"
        );
        self.shared.failed_batches.fetch_add(1, Ordering::Relaxed);
        self.retry_later();
    }

    /// Unhealthy until a probe succeeds; the next attempt waits out the (jittered) backoff.
    fn retry_later(&mut self) {
        self.healthy = false;
        self.shared.ready.store(false, Ordering::Relaxed);
        self.next_attempt = Instant::now() + self.backoff.next_delay();
    }

    fn recovered(&mut self) {
        self.healthy = true;
        self.shared.ready.store(true, Ordering::Relaxed);
        self.backoff.reset();
    }

    /// Connection attempts and health pings run as their own task, so a black-holed server
    /// never stalls the loop. True when the store is connected and healthy.
    fn probe_done(&mut self) -> bool {
        if self.healthy && self.shared.store.load().is_some() {
            return true;
        }
        if let Some(probe) = self.probe.take_if(|p| p.is_finished()) {
            match probe.now_or_never() {
                Some(Ok(Ok(Some(store)))) => {
                    tracing::info!("audit store connected and migrated");
                    self.shared.store.store(Some(Arc::new(store)));
                    self.recovered();
                    self.next_attempt = Instant::now();
                    return true;
                }
                Some(Ok(Ok(None))) => {
                    tracing::info!("audit store reachable again");
                    self.recovered();
                    self.next_attempt = Instant::now();
                    return true;
                }
                Some(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "audit store still unreachable");
                    self.retry_later();
                }
                _ => self.retry_later(),
            }
        }
        if self.probe.is_none() && Instant::now() >= self.next_attempt {
            let store = self.shared.store.load_full();
            let target = self.target.clone();
            self.probe = Some(tokio::spawn(async move {
                match store {
                    None => Store::connect(&target, CONNECT_TIMEOUT).await.map(Some),
                    Some(store) => {
                        match tokio::time::timeout(CONNECT_TIMEOUT, store.ping()).await {
                            Ok(r) => r.map(|()| None),
                            Err(_) => Err(AuditError::Store("ping timed out".into())),
                        }
                    }
                }
            }));
        }
        false
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Wrote,
    Idle,
    Failed,
}
