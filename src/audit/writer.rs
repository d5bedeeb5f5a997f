//! The batcher: the one task that drains the channel and owns every write.
//!
//! ```text
//!   channel ──recv_many──▶ batch ──(store healthy, spool empty)──▶ store.write(Fresh)
//!                              └──(otherwise, or the write failed)──▶ spool.append + fsync
//!   tick (flush_ms) ──▶ flush a partial batch; connect / ping with backoff; replay the spool
//! ```
//!
//! Invariants:
//! - A record leaves the writer's hands only into the store (committed) or the spool
//!   (fsynced). If both fail the rows stay in memory (`stuck`) and the writer stops receiving,
//!   so the channel fills and requests get 503 instead of being pushed without an audit row.
//! - While the spool holds records, new batches go to the spool too and the spool is replayed
//!   oldest first: rows reach the store in acceptance order, so `id` order is `seq` order
//!   per node.
//! - Everything that may already be partly stored (spool replays) is written with
//!   [`WriteMode::Replay`] (`ON CONFLICT DO NOTHING`): exactly once per `request_id`.
//!
//! Backoff: after a failure the next connect/ping/replay attempt waits `retry_initial_ms`,
//! doubling up to `retry_max_ms`; reset on success.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::postgres::WriteMode;
use super::record::AuditRow;
use super::store::{Store, StoreTarget};
use super::{AuditRecord, Shared};
use crate::config::AuditConfig;

/// Bound on one store write; past it the outcome is unknown and the rows go to the spool (a
/// later replay is idempotent).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a background connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Spool replay per tick, so the channel keeps draining during a long catch-up.
const REPLAY_SLICE: Duration = Duration::from_millis(250);

pub struct Writer {
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<AuditRecord>,
    pub target: StoreTarget,
    pub cfg: AuditConfig,
    /// Drain deadline on shutdown.
    pub shutdown_budget: Duration,
    pub stop: watch::Receiver<bool>,
    pub done: watch::Sender<bool>,
    healthy: bool,
    backoff: Duration,
    next_attempt: Instant,
    stuck: Vec<AuditRow>,
    /// A running connect (`Some(store)`) or ping (`None`) attempt.
    probe: Option<JoinHandle<Result<Option<Store>, super::AuditError>>>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<AuditRecord>,
        target: StoreTarget,
        cfg: AuditConfig,
        shutdown_budget: Duration,
        stop: watch::Receiver<bool>,
        done: watch::Sender<bool>,
    ) -> Writer {
        let healthy = shared.store.load().is_some();
        let backoff = Duration::from_millis(cfg.retry_initial_ms.max(1));
        Writer {
            shared,
            rx,
            target,
            cfg,
            shutdown_budget,
            stop,
            done,
            healthy,
            backoff,
            next_attempt: Instant::now(),
            stuck: Vec::new(),
            probe: None,
        }
    }

    pub async fn run(mut self) {
        let batch = self.cfg.batch_size.max(1);
        let mut buf: Vec<AuditRecord> = Vec::with_capacity(batch);
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.flush_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let receiving = self.stuck.is_empty();
            let room = batch.saturating_sub(buf.len()).max(1);
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                n = self.rx.recv_many(&mut buf, room), if receiving => {
                    if n == 0 {
                        break;
                    }
                    if buf.len() >= batch {
                        self.flush(&mut buf).await;
                    }
                }
                _ = tick.tick() => {
                    if !buf.is_empty() {
                        self.flush(&mut buf).await;
                    }
                    self.maintain().await;
                }
            }
        }
        self.drain(buf).await;
    }

    /// Shutdown: stop accepting, take what is buffered (and what outstanding permits send),
    /// write it to the store or the spool, then replay the spool while time remains.
    async fn drain(&mut self, mut buf: Vec<AuditRecord>) {
        let deadline = Instant::now() + self.shutdown_budget;
        self.rx.close();
        let batch = self.cfg.batch_size.max(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv_many(&mut buf, batch)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.len() >= batch {
                        self.flush(&mut buf).await;
                    }
                }
            }
        }
        // Out of time: whatever is still buffered goes to the spool below (store writes are
        // skipped once unhealthy), never dropped.
        while let Ok(record) = self.rx.try_recv() {
            buf.push(record);
        }
        self.flush(&mut buf).await;
        while !self.stuck.is_empty() && Instant::now() < deadline {
            self.deliver(Vec::new()).await;
            if !self.stuck.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while self.healthy
            && self.shared.spooled.load(Ordering::Relaxed) > 0
            && Instant::now() < deadline
        {
            if !self.replay_some(deadline).await {
                break;
            }
        }
        self.shared.save_high_water();
        if !self.stuck.is_empty() {
            tracing::error!(
                records = self.stuck.len(),
                "audit records lost at shutdown: store and spool both failed"
            );
        }
        let _ = self.done.send(true);
    }

    async fn flush(&mut self, buf: &mut Vec<AuditRecord>) {
        if buf.is_empty() && self.stuck.is_empty() {
            return;
        }
        let rows: Vec<AuditRow> = buf.drain(..).map(|r| AuditRow::from_record(&r)).collect();
        self.deliver(rows).await;
    }

    /// Put `rows` (after any stuck rows) into the store, else the spool, else keep them.
    async fn deliver(&mut self, rows: Vec<AuditRow>) {
        let (rows, mode) = if self.stuck.is_empty() {
            (rows, WriteMode::Fresh)
        } else {
            let mut all = std::mem::take(&mut self.stuck);
            all.extend(rows);
            (all, WriteMode::Replay)
        };
        if rows.is_empty() {
            return;
        }
        let store = self.shared.store.load_full();
        let direct = self.healthy && self.shared.spooled.load(Ordering::Relaxed) == 0;
        if let (true, Some(store)) = (direct, store)
            && self.write(&store, &rows, mode).await
        {
            return;
        }
        self.spill(rows).await;
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
                if let Some(max) = rows.iter().map(|r| r.seq).max() {
                    s.written_max_seq.fetch_max(max, Ordering::Relaxed);
                }
                self.healthy = true;
                s.ready.store(true, Ordering::Relaxed);
                self.backoff = Duration::from_millis(self.cfg.retry_initial_ms.max(1));
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

    /// A store write failed: count it, go unhealthy, back off.
    fn fail(&mut self, why: &str) {
        tracing::warn!(
            retry_in_ms = self.backoff.as_millis() as u64,
            "{why}; spilling to the spool"
        );
        self.shared.failed_batches.fetch_add(1, Ordering::Relaxed);
        self.retry_later();
    }

    /// Unhealthy until a probe succeeds; the next probe waits out the backoff, which doubles.
    fn retry_later(&mut self) {
        self.healthy = false;
        self.shared.ready.store(false, Ordering::Relaxed);
        self.next_attempt = Instant::now() + self.backoff;
        let max =
            Duration::from_millis(self.cfg.retry_max_ms.max(self.cfg.retry_initial_ms).max(1));
        self.backoff = self.backoff.saturating_mul(2).min(max);
    }

    /// Append to the spool off the runtime threads (fsync blocks).
    async fn spill(&mut self, rows: Vec<AuditRow>) {
        let shared = self.shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut spool = shared.spool.lock();
            let r = spool.append(&rows);
            shared.sync_spool_stats(&spool);
            (r, rows)
        })
        .await;
        match result {
            Ok((Ok(()), _)) => {}
            Ok((Err(e), rows)) => {
                tracing::error!(error = %e, records = rows.len(), "audit spool write failed; holding records in memory");
                self.stuck = rows;
            }
            Err(e) => tracing::error!(error = %e, "audit spool task failed"),
        }
    }

    /// Per tick: connect, retry stuck rows, check health, replay the spool.
    async fn maintain(&mut self) {
        let up = self.probe_done();
        if !self.stuck.is_empty() {
            // Store if it is up, else the spool again (it may have room by now).
            self.deliver(Vec::new()).await;
        }
        if up && self.healthy && self.shared.spooled.load(Ordering::Relaxed) > 0 {
            self.replay_some(Instant::now() + REPLAY_SLICE).await;
        }
    }

    /// Connection attempts and health pings run as their own task, so a black-holed server
    /// (connect and ping wait out their timeouts) never stalls draining the channel into the
    /// spool. True when the store is connected and healthy.
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
                    return true;
                }
                Some(Ok(Ok(None))) => {
                    tracing::info!("audit store reachable again");
                    self.recovered();
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
                            Err(_) => Err(super::AuditError::Store("ping timed out".into())),
                        }
                    }
                }
            }));
        }
        false
    }

    fn recovered(&mut self) {
        self.healthy = true;
        self.shared.ready.store(true, Ordering::Relaxed);
        self.backoff = Duration::from_millis(self.cfg.retry_initial_ms.max(1));
    }

    /// Replay whole segments, oldest first, until `until` or the spool is empty. False when
    /// the store failed.
    async fn replay_some(&mut self, until: Instant) -> bool {
        let Some(store) = self.shared.store.load_full() else {
            return false;
        };
        let batch = self.cfg.batch_size.max(1);
        while Instant::now() < until {
            let shared = self.shared.clone();
            let next =
                tokio::task::spawn_blocking(move || shared.spool.lock().oldest_for_replay()).await;
            let (id, rows) = match next {
                Ok(Ok(Some(seg))) => seg,
                Ok(Ok(None)) => return true,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read audit spool segment");
                    return false;
                }
                Err(_) => return false,
            };
            for chunk in rows.chunks(batch) {
                if !self.write(&store, chunk, WriteMode::Replay).await {
                    return false;
                }
            }
            self.shared
                .replayed
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            let shared = self.shared.clone();
            let confirmed = tokio::task::spawn_blocking(move || {
                let mut spool = shared.spool.lock();
                let r = spool.confirm_segment(id, &rows);
                shared.sync_spool_stats(&spool);
                r
            })
            .await;
            if let Ok(Err(e)) = confirmed {
                tracing::error!(error = %e, segment = id, "cannot delete replayed spool segment");
                return false;
            }
        }
        true
    }
}
