//! Cache-manager client library: keeps a local cache coherent with an invalidator server.
//!
//! A [`CacheClient`] owns one background task holding one WebSocket connection. It
//! subscribes to the configured patterns, applies every `invalidate` event to a
//! [`LocalCache`] (by default a bounded [`BoundedCache`]), tracks the keys the application
//! fills (one-shot, as the server does), and on any disconnect (network, server restart, a
//! 4008 slow-consumer close, a silent server) reconnects after a full-jitter exponential
//! backoff and `resume`s from the last position it has fully applied: it re-subscribes and
//! re-tracks every key it still holds (with its tags) first, so the replay covers exactly
//! what it missed. A `reset` (history gap, epoch change) clears the local cache: the only
//! safe answer when events may have been lost.
//!
//! Fills go through the [`fill`] guard: [`CacheClient::begin_fill`] registers the key (and
//! tracks it on the server) before the application reads the source of truth, and
//! [`CacheClient::complete_fill`] stores the value only if no invalidation of the key arrived
//! meanwhile. [`CacheClient::get_or_fill`] does both, one load per key at a time.
//!
//! Events:
//! - keys: the event's `keys` are dropped;
//! - pattern: also every cached key the pattern matches (the cache may hold keys the server
//!   does not know about);
//! - tags: also every held key carrying one of the event's `tags`;
//! - `"soft": true`: the same keys are marked stale instead of dropped; [`CacheClient::get`]
//!   serves a stale entry for up to [`ClientOptions::max_staleness`], and
//!   [`CacheClient::get_or_fill`] serves it while exactly one refetch runs.
//!
//! Position rule: the position (epoch, seq) advances on events, heartbeats and pongs, but not
//! while a `resume` is in flight: replayed events arrive then, and a disconnect mid-replay
//! must resume from the old position again.

mod cache;
mod engine;
pub mod fill;
mod flight;
mod held;
mod session;

pub use invalidator_core::pattern;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use invalidator_core::pattern::PatternType;

pub use cache::{BoundedCache, Cached, EvictionListener, LocalCache, MapCache};
pub use fill::{FillGuard, FillToken};
pub use invalidator_core::backoff::Backoff;

use engine::Shared;
use flight::Join;
use session::{Command, Inbox, Session};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://host:port/ws`.
    pub url: String,
    /// Bearer token (a token with the `subscribe` scope), if the server has tokens.
    pub token: Option<String>,
    /// Patterns to subscribe to: (pattern, explicit type or inferred).
    pub subscriptions: Vec<(String, Option<PatternType>)>,
    /// Reconnect backoff: the n-th consecutive attempt waits a random delay in
    /// `[0, min(reconnect_cap, reconnect_base · 2^n)]`; a successful connect starts over.
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// How long an operation (and a connect) waits for the server's reply.
    pub request_timeout: Duration,
    /// How long a soft-invalidated entry may still be served. Zero: soft events drop
    /// entries like hard ones.
    pub max_staleness: Duration,
    /// Send a `ping` after this long without a frame (zero: no watchdog)...
    pub ping_interval: Duration,
    /// ...and replace the connection after this long without one (a half-open link).
    pub idle_timeout: Duration,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ClientOptions {
            url: url.into(),
            token: None,
            subscriptions: Vec::new(),
            reconnect_base: Duration::from_millis(100),
            reconnect_cap: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_staleness: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(45),
        }
    }

    pub fn subscribe(mut self, pattern: impl Into<String>, kind: Option<PatternType>) -> Self {
        self.subscriptions.push((pattern.into(), kind));
        self
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Reconnect backoff base and cap.
    pub fn reconnect_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.reconnect_base = base;
        self.reconnect_cap = cap;
        self
    }

    pub fn max_staleness(mut self, max: Duration) -> Self {
        self.max_staleness = max;
        self
    }

    pub fn request_timeout(mut self, within: Duration) -> Self {
        self.request_timeout = within;
        self
    }

    /// Watchdog: ping after `ping` of silence, reconnect after `idle` (zero `ping`: off).
    pub fn watchdog(mut self, ping: Duration, idle: Duration) -> Self {
        self.ping_interval = ping;
        self.idle_timeout = idle;
        self
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the server refused the operation: {code}: {message}")]
    Server { code: String, message: String },
    #[error("not connected")]
    NotConnected,
    #[error("no reply from the server within {0:?}")]
    Timeout(Duration),
    #[error("the client has shut down")]
    Closed,
}

/// Why [`CacheClient::get_or_fill`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FillError<E> {
    /// The loader failed.
    #[error("loading the value failed: {0}")]
    Load(E),
    /// The key could not be tracked (the server refused it, or the client shut down).
    #[error(transparent)]
    Client(ClientError),
}

/// Where the client stands, published on a watch channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Epoch and last fully applied `seq`, once known.
    pub epoch: Option<String>,
    pub seq: u64,
    pub connected: bool,
    /// A `resume` is in flight (replayed events are arriving).
    pub resuming: bool,
    /// Sessions established so far (1 after the first connect).
    pub sessions: u64,
    /// `reset`s received (each cleared the cache).
    pub resets: u64,
    /// Events replayed by `resume`s.
    pub replayed: u64,
    /// `invalidate` events applied.
    pub events: u64,
}

/// One applied `invalidate` event, as [`CacheClient::events`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub seq: u64,
    pub request_id: Option<String>,
    /// The keys dropped (or marked stale): the event's keys, then the held keys carrying one
    /// of its tags. A pattern event also covers every cached key its pattern matches.
    pub keys: Vec<String>,
    pub pattern: Option<String>,
    pub pattern_type: Option<PatternType>,
    pub tags: Vec<String>,
    pub soft: bool,
    /// The pattern could not be compiled, so the whole cache was cleared.
    pub cleared: bool,
    /// Delivered by a `resume` replay.
    pub replayed: bool,
}

/// What happened on the connection (see [`CacheClient::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A session opened (`session` counts from 1); `resuming` when a `resume` was sent.
    Connected {
        session: u64,
        epoch: String,
        resuming: bool,
    },
    /// The `resume` replayed `replayed` events; the position is now `seq`.
    Resumed {
        replayed: u64,
        seq: u64,
    },
    /// The server could not resume (or asked for a reset): the local cache was cleared.
    Reset {
        reason: String,
    },
    Invalidated(Invalidation),
    /// The connection ended (a reconnect follows unless [`CacheClient::disconnect`]ed).
    Disconnected,
}

/// What the API and spawned refetches share with the connection task.
struct Handle<C: LocalCache> {
    shared: Arc<Shared<C>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl<C: LocalCache> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
            commands: self.commands.clone(),
        }
    }
}

/// A connected cache manager. Dropping it stops the background task.
pub struct CacheClient<C: LocalCache> {
    handle: Handle<C>,
    status: watch::Receiver<Status>,
}

impl<C: LocalCache> Drop for CacheClient<C> {
    fn drop(&mut self) {
        let _ = self.handle.commands.send(Command::Shutdown);
    }
}

/// A cache read, with the staleness limit applied.
enum Read<V> {
    Fresh(V),
    /// Soft-invalidated, within the staleness limit.
    Stale(V),
    /// Absent, or stale for longer than the limit.
    Miss,
}

fn classify<V>(entry: Option<Cached<V>>, now: Instant, max_staleness: Duration) -> Read<V> {
    match entry {
        None => Read::Miss,
        Some(Cached {
            value,
            stale_since: None,
        }) => Read::Fresh(value),
        Some(Cached {
            value,
            stale_since: Some(t),
        }) => {
            if now.saturating_duration_since(t) <= max_staleness {
                Read::Stale(value)
            } else {
                Read::Miss
            }
        }
    }
}

impl<C: LocalCache> CacheClient<C> {
    /// Connect, subscribe, and keep `cache` coherent from now on. Fails if the first
    /// connection cannot be made; later disconnects are retried forever.
    ///
    /// One client per cache: the client registers itself as the cache's eviction listener.
    pub async fn connect(opts: ClientOptions, cache: Arc<C>) -> Result<Self, ClientError> {
        let shared = Arc::new(Shared::new(opts, cache));
        let (evict_tx, evictions) = mpsc::unbounded_channel();
        shared
            .cache
            .set_eviction_listener(Arc::new(move |key: &str| {
                let _ = evict_tx.send(key.to_string());
            }));
        let (commands, rx) = mpsc::unbounded_channel();
        let first = Session::open(&shared).await?;
        let status = shared.status.subscribe();
        let inbox = Inbox {
            commands: rx,
            evictions,
        };
        tokio::spawn(session::run(shared.clone(), inbox, first));
        Ok(CacheClient {
            handle: Handle { shared, commands },
            status,
        })
    }

    pub fn cache(&self) -> &Arc<C> {
        &self.handle.shared.cache
    }

    pub fn options(&self) -> &ClientOptions {
        &self.handle.shared.opts
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Wait until `cond` holds for the status; false on timeout.
    pub async fn wait_until(&self, cond: impl Fn(&Status) -> bool, within: Duration) -> bool {
        let mut rx = self.status.clone();
        tokio::time::timeout(within, rx.wait_for(|s| cond(s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Connection and invalidation events from now on. A receiver that falls more than
    /// 1,024 events behind loses the oldest ones (`RecvError::Lagged`); the cache itself is
    /// never affected.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.handle.shared.events.subscribe()
    }

    /// Tell the server this client holds `keys` (one-shot tracking). Returns the count the
    /// server now tracks for this connection.
    pub async fn track(&self, keys: &[&str]) -> Result<usize, ClientError> {
        self.handle.track(keys, &[]).await
    }

    /// [`track`](Self::track) with tags: a tag invalidation of any of `tags` drops these keys.
    /// Tags add up: a key tracked twice with different tags carries both sets.
    pub async fn track_tagged(&self, keys: &[&str], tags: &[&str]) -> Result<usize, ClientError> {
        self.handle.track(keys, tags).await
    }

    pub async fn untrack(&self, keys: &[&str]) -> Result<usize, ClientError> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        {
            let mut held = self.handle.shared.held.lock();
            for k in &keys {
                held.remove(k);
            }
        }
        self.handle
            .call(|reply| Command::Untrack { keys, reply })
            .await
    }

    /// The tags a held key carries, or None when the key is not held (not cached, not being
    /// filled, or invalidated since).
    pub fn tags_of(&self, key: &str) -> Option<Vec<String>> {
        let held = self.handle.shared.held.lock();
        held.contains(key).then(|| held.tags(key))
    }

    /// Start filling `key`: registers the fill and tracks the key on the server, then
    /// returns. Read the source of truth only after this returns, then call
    /// [`complete_fill`](Self::complete_fill). While disconnected the key is tracked at the
    /// reconnect, before the resume, so a missed invalidation still voids the token.
    pub async fn begin_fill(&self, key: &str) -> Result<FillToken, ClientError> {
        self.handle.begin_fill(key, &[]).await
    }

    /// [`begin_fill`](Self::begin_fill) with tags (see [`track_tagged`](Self::track_tagged)).
    pub async fn begin_fill_tagged(
        &self,
        key: &str,
        tags: &[&str],
    ) -> Result<FillToken, ClientError> {
        self.handle.begin_fill(key, tags).await
    }

    /// Store `value` unless `token`'s key was invalidated since `begin_fill`.
    pub fn complete_fill(&self, token: FillToken, value: C::Value) -> bool {
        self.handle.complete_fill(token, value)
    }

    /// The cached value: fresh, or stale (soft-invalidated) for at most
    /// [`ClientOptions::max_staleness`]. Starts no load.
    pub fn get(&self, key: &str) -> Option<C::Value> {
        match self.handle.read(key) {
            Read::Fresh(v) | Read::Stale(v) => Some(v),
            Read::Miss => None,
        }
    }

    /// The raw entry, with its staleness mark and no limit applied.
    pub fn get_entry(&self, key: &str) -> Option<Cached<C::Value>> {
        self.handle.shared.cache.lookup(key)
    }

    /// Cache-aside read through the fill guard.
    ///
    /// - fresh hit: the value;
    /// - stale hit within [`ClientOptions::max_staleness`]: the stale value at once, and a
    ///   refetch in the background unless one already runs for the key (`load` runs in a
    ///   spawned task; its errors are logged);
    /// - miss (or stale for longer): waits for the load already running for the key, if any,
    ///   else loads with `load` under the fill guard. The loaded value is returned even when
    ///   an invalidation voided the fill (it was current when read); it is then not cached.
    pub async fn get_or_fill<F, Fut, E>(&self, key: &str, load: F) -> Result<C::Value, FillError<E>>
    where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<C::Value, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.get_or_fill_tagged(key, &[], load).await
    }

    /// [`get_or_fill`](Self::get_or_fill), tracking the key with `tags`.
    pub async fn get_or_fill_tagged<F, Fut, E>(
        &self,
        key: &str,
        tags: &[&str],
        load: F,
    ) -> Result<C::Value, FillError<E>>
    where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<C::Value, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let h = &self.handle;
        let mut load = Some(load);
        loop {
            match h.read(key) {
                Read::Fresh(v) => return Ok(v),
                Read::Stale(v) => {
                    if let (Join::Leader(guard), Some(load)) =
                        (h.shared.flights.join(key), load.take())
                    {
                        let h = h.clone();
                        let key = key.to_string();
                        let mut tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
                        tags.extend(h.shared.held.lock().tags(&key));
                        tags.sort_unstable();
                        tags.dedup();
                        tokio::spawn(async move {
                            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                            if let Err(e) = h.fill(&key, &tags, load).await {
                                tracing::warn!(%key, error = %e, "background refetch failed");
                            }
                            drop(guard);
                        });
                    }
                    return Ok(v);
                }
                Read::Miss => match h.shared.flights.join(key) {
                    Join::Leader(guard) => {
                        let load = load.take().expect("a caller loads at most once");
                        let r = h.fill(key, tags, load).await;
                        drop(guard);
                        return r;
                    }
                    Join::Follower(mut done) => {
                        let _ = done.changed().await;
                    }
                },
            }
        }
    }

    /// Drop `key` locally and stop tracking it.
    pub async fn remove(&self, key: &str) -> Result<(), ClientError> {
        let shared = &self.handle.shared;
        shared.fills.void_key(key);
        shared.cache.invalidate(key);
        match self.untrack(&[key]).await {
            Ok(_) | Err(ClientError::NotConnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Drop the connection and stay offline until [`reconnect`](Self::reconnect).
    pub fn disconnect(&self) {
        let _ = self.handle.commands.send(Command::Disconnect);
    }

    /// Reconnect (and resume) now: after [`disconnect`](Self::disconnect), during a backoff
    /// delay, or to replace a live connection.
    pub fn reconnect(&self) {
        let _ = self.handle.commands.send(Command::Reconnect);
    }
}

impl<C: LocalCache> Handle<C> {
    fn read(&self, key: &str) -> Read<C::Value> {
        classify(
            self.shared.cache.lookup(key),
            engine::now(),
            self.shared.opts.max_staleness,
        )
    }

    async fn track(&self, keys: &[&str], tags: &[&str]) -> Result<usize, ClientError> {
        {
            let mut held = self.shared.held.lock();
            for k in keys {
                held.add(k, tags);
            }
        }
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        self.call(|reply| Command::Track { keys, tags, reply })
            .await
    }

    async fn begin_fill(&self, key: &str, tags: &[&str]) -> Result<FillToken, ClientError> {
        let token = self.shared.fills.begin(key);
        match self.track(&[key], tags).await {
            Ok(_) | Err(ClientError::NotConnected) => Ok(token),
            Err(e) => Err(e),
        }
    }

    fn complete_fill(&self, token: FillToken, value: C::Value) -> bool {
        let cache = &self.shared.cache;
        self.shared
            .fills
            .complete(token, |key| cache.insert(key, value))
    }

    /// begin_fill, load, complete_fill; the loaded value.
    async fn fill<F, Fut, E>(
        &self,
        key: &str,
        tags: &[&str],
        load: F,
    ) -> Result<C::Value, FillError<E>>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<C::Value, E>>,
    {
        let token = self
            .begin_fill(key, tags)
            .await
            .map_err(FillError::Client)?;
        let value = load(key.to_string()).await.map_err(FillError::Load)?;
        self.complete_fill(token, value.clone());
        Ok(value)
    }

    async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<usize, ClientError>>) -> Command,
    ) -> Result<usize, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| ClientError::Closed)?;
        let within = self.shared.opts.request_timeout;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::NotConnected),
            Err(_) => Err(ClientError::Timeout(within)),
        }
    }
}

#[cfg(test)]
mod tests;
