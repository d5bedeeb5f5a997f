//! Cache-manager client library: keeps a local cache coherent with an invalidator server.
//!
//! A [`CacheClient`] owns one background task holding one WebSocket connection. It
//! subscribes to the configured patterns, applies every `invalidate` event to a
//! [`LocalCache`], tracks the keys the application fills (one-shot, as the server does), and on
//! any disconnect (network, server restart, a 4008 slow-consumer close) reconnects with
//! backoff and `resume`s from the last position it has fully applied: it re-subscribes and
//! re-tracks every key it still holds first, so the replay covers exactly what it missed. A
//! `reset` (history gap, epoch change) clears the local cache: the only safe answer when
//! events may have been lost.
//!
//! Fills go through the [`fill`] guard: [`CacheClient::begin_fill`] registers the key (and tracks
//! it on the server) before the application reads the source of truth, and
//! [`CacheClient::complete_fill`] stores the value only if no invalidation of the key arrived
//! meanwhile.
//!
//! Position rule: the position (epoch, seq) advances on events, heartbeats and pongs, but not
//! while a `resume` is in flight: replayed events arrive then, and a disconnect mid-replay
//! must resume from the old position again.

pub mod fill;

pub use invalidator_core::pattern;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use invalidator_core::pattern::{Pattern, PatternLimits, PatternType};

pub use fill::{FillGuard, FillToken};

/// The application's local cache, as the client sees it.
pub trait LocalCache: Send + Sync + 'static {
    type Value: Send;
    /// Store a value (called by [`CacheClient::complete_fill`] only).
    fn insert(&self, key: &str, value: Self::Value);
    fn invalidate(&self, key: &str);
    /// Drop every entry whose key `pattern` matches.
    fn invalidate_pattern(&self, pattern: &Pattern);
    /// Drop everything (after a `reset`).
    fn clear(&self);
}

/// A `HashMap` behind a mutex: the simplest [`LocalCache`].
pub struct MapCache<V> {
    map: Mutex<HashMap<String, V>>,
}

impl<V> Default for MapCache<V> {
    fn default() -> Self {
        MapCache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> MapCache<V> {
    pub fn get(&self, key: &str) -> Option<V> {
        self.map.lock().get(key).cloned()
    }
}

impl<V> MapCache<V> {
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.lock().contains_key(key)
    }
}

impl<V: Send + 'static> LocalCache for MapCache<V> {
    type Value = V;
    fn insert(&self, key: &str, value: V) {
        self.map.lock().insert(key.to_string(), value);
    }
    fn invalidate(&self, key: &str) {
        self.map.lock().remove(key);
    }
    fn invalidate_pattern(&self, pattern: &Pattern) {
        self.map.lock().retain(|k, _| !pattern.is_match(k));
    }
    fn clear(&self) {
        self.map.lock().clear();
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://host:port/ws`.
    pub url: String,
    /// Bearer token (a token with the `subscribe` scope), if the server has tokens.
    pub token: Option<String>,
    /// Patterns to subscribe to: (pattern, explicit type or inferred).
    pub subscriptions: Vec<(String, Option<PatternType>)>,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long an operation waits for the server's reply.
    pub request_timeout: Duration,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ClientOptions {
            url: url.into(),
            token: None,
            subscriptions: Vec::new(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
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

/// Where the client stands, published on a watch channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Epoch and last fully applied `seq`, once known.
    pub epoch: Option<String>,
    pub seq: u64,
    pub connected: bool,
    /// Sessions established so far (1 after the first connect).
    pub sessions: u64,
    /// `reset`s received (each cleared the cache).
    pub resets: u64,
    /// Events replayed by `resume`s.
    pub replayed: u64,
    /// `invalidate` events applied.
    pub events: u64,
}

enum Command {
    Track(Vec<String>, oneshot::Sender<Result<usize, ClientError>>),
    Untrack(Vec<String>, oneshot::Sender<Result<usize, ClientError>>),
    Disconnect,
    Reconnect,
    Shutdown,
}

struct Shared<C: LocalCache> {
    cache: Arc<C>,
    fills: Arc<FillGuard>,
    /// Keys tracked on the server on our behalf: re-tracked after a reconnect.
    held: Mutex<HashSet<String>>,
    status: watch::Sender<Status>,
    opts: ClientOptions,
}

/// A connected cache manager. Dropping it stops the background task.
pub struct CacheClient<C: LocalCache> {
    shared: Arc<Shared<C>>,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
}

impl<C: LocalCache> Drop for CacheClient<C> {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

impl<C: LocalCache> CacheClient<C> {
    /// Connect, subscribe, and keep `cache` coherent from now on. Fails if the first
    /// connection cannot be made; later disconnects are retried forever.
    pub async fn connect(opts: ClientOptions, cache: Arc<C>) -> Result<Self, ClientError> {
        let (status_tx, status) = watch::channel(Status::default());
        let shared = Arc::new(Shared {
            cache,
            fills: FillGuard::new(),
            held: Mutex::new(HashSet::new()),
            status: status_tx,
            opts,
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let first = Session::open(&shared).await?;
        tokio::spawn(run(shared.clone(), rx, first));
        let client = CacheClient {
            shared,
            commands,
            status,
        };
        client
            .wait_until(|s| s.connected, client.shared.opts.request_timeout)
            .await;
        Ok(client)
    }

    pub fn cache(&self) -> &Arc<C> {
        &self.shared.cache
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

    /// Tell the server this client holds `keys` (one-shot tracking). Returns the count the
    /// server now tracks for this connection.
    pub async fn track(&self, keys: &[&str]) -> Result<usize, ClientError> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.shared.held.lock().extend(keys.iter().cloned());
        self.call(|tx| Command::Track(keys, tx)).await
    }

    pub async fn untrack(&self, keys: &[&str]) -> Result<usize, ClientError> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        {
            let mut held = self.shared.held.lock();
            for k in &keys {
                held.remove(k);
            }
        }
        self.call(|tx| Command::Untrack(keys, tx)).await
    }

    /// Start filling `key`: registers the fill and tracks the key on the server, then
    /// returns. Read the source of truth only after this returns, then call
    /// [`complete_fill`](Self::complete_fill). While disconnected the key is tracked at the
    /// reconnect, before the resume, so a missed invalidation still voids the token.
    pub async fn begin_fill(&self, key: &str) -> Result<FillToken, ClientError> {
        let token = self.shared.fills.begin(key);
        match self.track(&[key]).await {
            Ok(_) | Err(ClientError::NotConnected) => Ok(token),
            Err(e) => Err(e),
        }
    }

    /// Store `value` unless `token`'s key was invalidated since `begin_fill`.
    pub fn complete_fill(&self, token: FillToken, value: C::Value) -> bool {
        let cache = &self.shared.cache;
        self.shared
            .fills
            .complete(token, |key| cache.insert(key, value))
    }

    /// Drop the connection and stay offline until [`reconnect`](Self::reconnect).
    pub fn disconnect(&self) {
        let _ = self.commands.send(Command::Disconnect);
    }

    /// Reconnect (and resume) after [`disconnect`](Self::disconnect).
    pub fn reconnect(&self) {
        let _ = self.commands.send(Command::Reconnect);
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

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One connection.
struct Session {
    ws: Socket,
    epoch: String,
    hello_seq: u64,
    next_id: u64,
    /// Pending replies by request id.
    waiting: HashMap<u64, oneshot::Sender<Result<usize, ClientError>>>,
    /// `resume` in flight: do not advance the position.
    resuming: bool,
}

impl Session {
    /// Connect, read `hello`, subscribe, re-track held keys and resume from the position.
    async fn open<C: LocalCache>(shared: &Shared<C>) -> Result<Session, ClientError> {
        let opts = &shared.opts;
        let connect_err = |m: String| ClientError::Connect {
            url: opts.url.clone(),
            message: m,
        };
        let mut req = opts
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| connect_err(e.to_string()))?;
        if let Some(t) = &opts.token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| connect_err("token is not a valid header".into()))?;
            req.headers_mut().insert("authorization", v);
        }
        // A modest read buffer: tungstenite zero-fills all of it before every read attempt.
        let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let mut session = Session {
            ws,
            epoch: String::new(),
            hello_seq: 0,
            next_id: 1,
            waiting: HashMap::new(),
            resuming: false,
        };
        let hello = session
            .next_json()
            .await
            .ok_or_else(|| connect_err("no hello".into()))?;
        session.epoch = hello["epoch"].as_str().unwrap_or_default().to_string();
        session.hello_seq = hello["seq"].as_u64().unwrap_or(0);
        if !opts.subscriptions.is_empty() {
            let patterns: Vec<Value> = opts
                .subscriptions
                .iter()
                .map(|(p, t)| json!({"pattern": p, "pattern_type": t.map(|t| t.as_str())}))
                .collect();
            session
                .send(json!({"op": "subscribe", "patterns": patterns}))
                .await?;
        }
        let held: Vec<String> = shared.held.lock().iter().cloned().collect();
        if !held.is_empty() {
            session.send(json!({"op": "track", "keys": held})).await?;
        }
        let known = shared.status.borrow().epoch.clone();
        match known {
            Some(epoch) => {
                let since = shared.status.borrow().seq;
                session.resuming = true;
                session
                    .send(json!({"op": "resume", "epoch": epoch, "since_seq": since}))
                    .await?;
            }
            None => {
                let (epoch, seq) = (session.epoch.clone(), session.hello_seq);
                shared.status.send_modify(|s| {
                    s.epoch = Some(epoch);
                    s.seq = seq;
                });
            }
        }
        shared.status.send_modify(|s| {
            s.connected = true;
            s.sessions += 1;
        });
        Ok(session)
    }

    async fn send(&mut self, v: Value) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .map_err(|_| ClientError::NotConnected)
    }

    /// The next JSON text frame, or None when the connection ended.
    async fn next_json(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => match serde_json::from_str(t.as_str()) {
                    Ok(v) => return Some(v),
                    Err(e) => tracing::warn!(error = %e, "server sent a frame that is not JSON"),
                },
                Ok(Message::Close(f)) => {
                    tracing::info!(close = ?f, "server closed the connection");
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(error = %e, "connection lost");
                    return None;
                }
            }
        }
    }

    async fn request(
        &mut self,
        op: &str,
        keys: Vec<String>,
        reply: oneshot::Sender<Result<usize, ClientError>>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        match self.send(json!({"op": op, "keys": keys, "id": id})).await {
            Ok(()) => {
                self.waiting.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// What ended a session.
enum Next {
    Reconnect,
    Offline,
    Shutdown,
}

async fn run<C: LocalCache>(
    shared: Arc<Shared<C>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    first: Session,
) {
    let mut session = Some(first);
    let mut delay = shared.opts.reconnect_min;
    loop {
        let next = match session.take() {
            Some(s) => {
                delay = shared.opts.reconnect_min;
                serve(&shared, s, &mut commands).await
            }
            None => match Session::open(&shared).await {
                Ok(s) => {
                    session = Some(s);
                    continue;
                }
                Err(e) => {
                    tracing::info!(error = %e, ?delay, "reconnect failed; retrying");
                    let wait = tokio::time::sleep(delay);
                    delay = (delay * 2).min(shared.opts.reconnect_max);
                    match idle(wait, &mut commands).await {
                        Some(next) => next,
                        None => continue,
                    }
                }
            },
        };
        shared.status.send_modify(|s| s.connected = false);
        match next {
            Next::Reconnect => {}
            Next::Shutdown => return,
            Next::Offline => loop {
                match commands.recv().await {
                    None | Some(Command::Shutdown) => return,
                    Some(Command::Reconnect) => break,
                    Some(Command::Track(_, tx) | Command::Untrack(_, tx)) => {
                        let _ = tx.send(Err(ClientError::NotConnected));
                    }
                    Some(Command::Disconnect) => {}
                }
            },
        }
    }
}

/// Wait out a reconnect delay while answering commands.
async fn idle(
    wait: tokio::time::Sleep,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Next> {
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => return None,
            cmd = commands.recv() => match cmd {
                None | Some(Command::Shutdown) => return Some(Next::Shutdown),
                Some(Command::Disconnect) => return Some(Next::Offline),
                Some(Command::Reconnect) => return None,
                Some(Command::Track(_, tx) | Command::Untrack(_, tx)) => {
                    let _ = tx.send(Err(ClientError::NotConnected));
                }
            },
        }
    }
}

async fn serve<C: LocalCache>(
    shared: &Shared<C>,
    mut s: Session,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Next {
    loop {
        tokio::select! {
            frame = s.next_json() => match frame {
                Some(v) => apply(shared, &mut s, &v),
                None => return Next::Reconnect,
            },
            cmd = commands.recv() => match cmd {
                None | Some(Command::Shutdown) => {
                    let _ = s.ws.close(None).await;
                    return Next::Shutdown;
                }
                Some(Command::Disconnect) => {
                    let _ = s.ws.close(None).await;
                    return Next::Offline;
                }
                Some(Command::Reconnect) => return Next::Reconnect,
                Some(Command::Track(keys, tx)) => s.request("track", keys, tx).await,
                Some(Command::Untrack(keys, tx)) => s.request("untrack", keys, tx).await,
            },
        }
    }
}

/// Apply one server frame.
fn apply<C: LocalCache>(shared: &Shared<C>, s: &mut Session, v: &Value) {
    let seq = v["seq"].as_u64();
    match v["type"].as_str().unwrap_or("") {
        "invalidate" => {
            invalidate(shared, v);
            shared.status.send_modify(|st| {
                st.events += 1;
                if s.resuming {
                    st.replayed += 1;
                }
            });
            advance(shared, s, seq);
        }
        "resumed" => {
            s.resuming = false;
            advance(shared, s, seq);
        }
        "reset" => {
            tracing::info!(
                reason = v["reason"].as_str(),
                "reset: clearing the local cache"
            );
            shared.fills.void_all();
            shared.cache.clear();
            shared.held.lock().clear();
            s.resuming = false;
            let (epoch, seq) = (s.epoch.clone(), s.hello_seq);
            shared.status.send_modify(|st| {
                st.resets += 1;
                st.epoch = Some(epoch);
                st.seq = seq;
            });
        }
        "heartbeat" | "pong" | "subscribed" | "unsubscribed" => advance(shared, s, seq),
        "tracked" | "untracked" => reply(s, v, Ok(v["count"].as_u64().unwrap_or(0) as usize)),
        "error" => {
            let code = v["code"].as_str().unwrap_or("").to_string();
            let message = v["message"].as_str().unwrap_or("").to_string();
            tracing::warn!(%code, %message, "server refused an operation");
            reply(s, v, Err(ClientError::Server { code, message }));
        }
        _ => {}
    }
}

fn reply(s: &mut Session, v: &Value, result: Result<usize, ClientError>) {
    if let Some(tx) = v["id"].as_u64().and_then(|id| s.waiting.remove(&id)) {
        let _ = tx.send(result);
    }
}

fn advance<C: LocalCache>(shared: &Shared<C>, s: &Session, seq: Option<u64>) {
    if let (Some(seq), false) = (seq, s.resuming) {
        shared.status.send_modify(|st| st.seq = st.seq.max(seq));
    }
}

/// Apply an `invalidate` event: its keys, and for a pattern event the pattern itself (the
/// event's keys are only the keys this connection tracked; the cache may hold others).
fn invalidate<C: LocalCache>(shared: &Shared<C>, v: &Value) {
    let keys = v["keys"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    {
        let mut held = shared.held.lock();
        for k in keys.iter().filter_map(Value::as_str) {
            shared.fills.void_key(k);
            shared.cache.invalidate(k);
            held.remove(k);
        }
    }
    let Some(source) = v["pattern"].as_str() else {
        return;
    };
    let kind = v["pattern_type"].as_str().and_then(PatternType::parse);
    let limits = PatternLimits {
        max_pattern_bytes: usize::MAX,
        ..PatternLimits::default()
    };
    match Pattern::parse(source, kind, &limits) {
        Ok(p) => {
            shared.fills.void_pattern(&p);
            shared.cache.invalidate_pattern(&p);
            shared.held.lock().retain(|k| !p.is_match(k));
        }
        Err(e) => {
            // Cannot tell what it covers: dropping everything is the only safe answer.
            tracing::warn!(pattern = source, error = %e, "cannot compile an invalidation pattern; clearing");
            shared.fills.void_all();
            shared.cache.clear();
        }
    }
}
