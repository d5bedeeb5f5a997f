//! Start-up, the accept loop and graceful shutdown.
//!
//! Start-up order: config → audit pipeline (opens the write-ahead log; an unreachable database does
//! not stop us) → seq allocator (continues above everything already used) → hub → listener.
//! Shutdown (SIGTERM/SIGINT or the `shutdown` future): stop accepting, let in-flight HTTP
//! requests finish, close WebSockets, then drain the audit pipeline; exit 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::audit::AuditPipeline;
use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::fanout::Hub;
use crate::idempotency::Idempotency;
use crate::metrics::Metrics;
use crate::pattern::{PatternCache, PatternLimits};
use crate::publish::{Publisher, Sequencer};
use crate::seq::SeqAllocator;

/// Everything a request handler can reach.
pub struct App {
    pub config: Config,
    pub auth: Authenticator,
    pub patterns: Arc<PatternCache>,
    pub hub: Arc<Hub>,
    pub audit: Arc<AuditPipeline>,
    pub publisher: Publisher,
    pub idempotency: Arc<Idempotency>,
    pub metrics: Arc<Metrics>,
    pub cluster: Option<Arc<Cluster>>,
}

impl App {
    /// NATS reachability in cluster mode; always true on a single node.
    pub fn cluster_ready(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.ready())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Token(#[from] crate::auth::TokenConfigError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A random epoch for this process's history (single-node: history is not persisted).
fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Build the application state (no listener yet).
pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
    config.validate()?;
    let auth = Authenticator::new(&config.tokens)?;
    let data_dir = |source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir)?;
    let audit = AuditPipeline::start(&config).await?;
    let cluster = match &config.nats_url {
        Some(url) => Some(Cluster::connect(url, &config.cluster).await?),
        None => None,
    };
    let limits = PatternLimits {
        max_pattern_bytes: config.limits.max_pattern_bytes,
        max_regex_bytes: config.limits.max_regex_bytes,
    };
    let patterns = Arc::new(PatternCache::new(config.limits.pattern_cache_size, limits));
    let node_id: Arc<str> = Arc::from(config.node_id.as_str());
    let (sequencer, epoch, start_seq, history_from_zero) = match &cluster {
        Some(c) => {
            // The hub starts just before the events the consumer refills, so a `resume` is
            // answered only from events the ring really holds.
            let history = config.ws.history_events;
            (
                Sequencer::Cluster(c.clone()),
                c.epoch().to_string(),
                c.refill_start(history) - 1,
                c.refill_is_whole_stream(history),
            )
        }
        None => {
            let floor = audit.max_seq().await.unwrap_or(0);
            let seq = SeqAllocator::open(&config.data_dir, floor).map_err(data_dir)?;
            let last = seq.last();
            (
                Sequencer::Local(parking_lot::Mutex::new(seq)),
                new_epoch(),
                last,
                true,
            )
        }
    };
    let hub = Hub::new(
        &config,
        epoch,
        node_id.clone(),
        patterns.clone(),
        start_seq,
        history_from_zero,
    );
    let idempotency = Idempotency::new(
        Duration::from_secs(config.audit.idempotency_window_secs),
        config.audit.idempotency_memory_bytes,
        config.audit.idempotency_filter_bytes,
    );
    if let Some(c) = &cluster {
        c.spawn_consumer(
            hub.clone(),
            patterns.clone(),
            idempotency.clone(),
            start_seq + 1,
        );
        c.spawn_audit(audit.clone(), config.audit.batch_size);
    }
    {
        let hub = hub.clone();
        audit.set_pusher(Arc::new(move |inv| {
            hub.publish(inv);
        }));
    }
    spawn_maintenance(&hub);
    spawn_filter_load(audit.clone(), idempotency.clone());
    let metrics = Arc::new(Metrics::new());
    let publisher = Publisher::new(
        sequencer,
        patterns.clone(),
        hub.clone(),
        audit.clone(),
        metrics.clone(),
        node_id,
        config.audit.benchmark_disable_audit,
    );
    Ok(Arc::new(App {
        config,
        auth,
        patterns,
        hub,
        audit,
        publisher,
        idempotency,
        metrics,
        cluster,
    }))
}

/// Fill the idempotency filter with every id of the store, once the store has caught up with
/// the write-ahead log's start-up backlog (so replayed ids are in it too). Until it is
/// complete, requests with an id are checked against the store (correct, only slower);
/// retried with backoff while the store is down.
fn spawn_filter_load(audit: Arc<AuditPipeline>, idempotency: Arc<Idempotency>) {
    tokio::spawn(async move {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            if audit.caught_up(Duration::from_secs(30)).await
                && let Some(store) = audit.store()
            {
                let started = std::time::Instant::now();
                match store
                    .each_request_id(|scope, id| idempotency.note_taken(scope, id))
                    .await
                {
                    Ok(n) => {
                        idempotency.mark_filter_complete();
                        tracing::info!(
                            ids = n,
                            ms = started.elapsed().as_millis() as u64,
                            "idempotency filter loaded"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot load the idempotency filter; retrying")
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
}

/// Once a second, off the async workers: fold new glob/regex subscriptions into the DFA set
/// and merge the tracked-key delta (the indexes also do it themselves when they grow).
fn spawn_maintenance(hub: &Arc<Hub>) {
    let hub = Arc::downgrade(hub);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            let _ = tokio::task::spawn_blocking(move || hub.maintain()).await;
        }
    });
}

/// Bind the configured address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })
}

/// Serve until `shutdown` resolves, then drain.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    // Each connection task watches this channel and starts a graceful close when it flips;
    // `live` tracks connection tasks so shutdown can wait for them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let live = tokio_util::task::TaskTracker::new();
    let conns = ConnectionCaps::new(
        app.config.http.max_connections,
        app.config.http.max_connections_per_ip,
    );
    let header_timeout = Duration::from_secs(app.config.http.header_timeout_secs.max(1));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over a connection cap the connection is closed at once (and counted); the
                // slot is released when the connection task ends.
                let Some(slot) = conns.admit(peer.ip()) else {
                    app.metrics.limits.refused_connection();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| crate::http::handle(app.clone(), req));
                // Headers must arrive within `http.header_timeout_secs` (hyper needs a timer for
                // its header timeout, or the timeout is silently off).
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut stop = stop_rx.clone();
                live.spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // One deadline for everything below (`shutdown_timeout_secs`), under the kill grace of
    // the usual supervisors; the audit drain gets what is left of it.
    let deadline = tokio::time::Instant::now() + app.config.shutdown_timeout;
    tracing::info!("shutting down: finishing in-flight requests");
    app.hub.close_all();
    // Let WebSocket writers send their 1001 close frames before the process goes away.
    let ws_deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
    let _ = tokio::time::timeout_at(ws_deadline, app.hub.wait_closed()).await;
    let _ = stop_tx.send(true);
    let requests_deadline = deadline - app.config.shutdown_timeout.mul_f64(0.4);
    live.close();
    let all_done = live.wait();
    if tokio::time::timeout_at(requests_deadline, all_done)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time");
    }
    tracing::info!("draining the audit pipeline");
    app.audit.shutdown(deadline).await;
    tracing::info!("shutdown complete");
}

/// The global and per-IP connection caps (`http.max_connections`, `http.max_connections_per_ip`).
/// Cost: one short lock per accepted and per closed connection; memory one map entry per client
/// IP with an open connection.
struct ConnectionCaps {
    inner: Arc<parking_lot::Mutex<CapState>>,
    max: usize,
    max_per_ip: usize,
}

#[derive(Default)]
struct CapState {
    total: usize,
    per_ip: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// An admitted connection; dropping it frees its place.
struct Admitted {
    inner: Arc<parking_lot::Mutex<CapState>>,
    ip: std::net::IpAddr,
}

impl ConnectionCaps {
    fn new(max: usize, max_per_ip: usize) -> ConnectionCaps {
        ConnectionCaps {
            inner: Arc::default(),
            max: max.max(1),
            max_per_ip: max_per_ip.max(1),
        }
    }

    fn admit(&self, ip: std::net::IpAddr) -> Option<Admitted> {
        let mut st = self.inner.lock();
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        if st.total >= self.max || from_ip >= self.max_per_ip {
            return None;
        }
        st.total += 1;
        st.per_ip.insert(ip, from_ip + 1);
        Some(Admitted {
            inner: self.inner.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
