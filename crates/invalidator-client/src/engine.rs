//! The protocol state machine, without a socket: what to send when a session starts, and
//! what each server frame does to the cache, the fills, the held keys and the position.
//! [`handle_frame`] only queues outgoing frames in [`Conn::outbox`]; the session sends them.
//! Tests drive it by feeding frames.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot, watch};

use invalidator_core::pattern::{Pattern, PatternLimits, PatternType};

use crate::cache::LocalCache;
use crate::fill::FillGuard;
use crate::flight::Flights;
use crate::held::HeldKeys;
use crate::{ClientError, ClientEvent, ClientOptions, Invalidation, Status};

/// Keys per `track` frame when re-tracking.
pub(crate) const TRACK_CHUNK: usize = 1000;

/// What the connection task and the API share.
pub(crate) struct Shared<C: LocalCache> {
    pub cache: Arc<C>,
    pub fills: Arc<FillGuard>,
    /// Keys tracked on the server on our behalf (cached or being filled), with their tags:
    /// re-tracked after a reconnect, and the index tag events are applied through.
    pub held: Mutex<HeldKeys>,
    pub flights: Arc<Flights>,
    pub status: watch::Sender<Status>,
    pub events: broadcast::Sender<ClientEvent>,
    pub opts: ClientOptions,
}

impl<C: LocalCache> Shared<C> {
    pub fn new(opts: ClientOptions, cache: Arc<C>) -> Self {
        Shared {
            cache,
            fills: FillGuard::new(),
            held: Mutex::new(HeldKeys::default()),
            flights: Arc::new(Flights::default()),
            status: watch::channel(Status::default()).0,
            events: broadcast::channel(1024).0,
            opts,
        }
    }

    fn emit(&self, event: ClientEvent) {
        // No receiver is fine.
        let _ = self.events.send(event);
    }
}

pub(crate) type Reply = oneshot::Sender<Result<usize, ClientError>>;

/// One connection's protocol state.
pub(crate) struct Conn {
    /// From the server's `hello`.
    pub epoch: String,
    pub hello_seq: u64,
    next_id: u64,
    /// Pending replies by request id (dropped with the connection: the callers see
    /// [`ClientError::NotConnected`]).
    waiting: HashMap<u64, Reply>,
    /// `resume` in flight: do not advance the position.
    pub resuming: bool,
    /// Frames to send, in order.
    pub outbox: Vec<Value>,
}

impl Conn {
    pub fn new(hello: &Value) -> Conn {
        Conn {
            epoch: hello["epoch"].as_str().unwrap_or_default().to_string(),
            hello_seq: hello["seq"].as_u64().unwrap_or(0),
            next_id: 1,
            waiting: HashMap::new(),
            resuming: false,
            outbox: Vec::new(),
        }
    }

    /// Queue `frame` with a fresh `id`; `reply` gets the server's answer.
    pub fn request(&mut self, mut frame: Value, reply: Reply) {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = id.into();
        self.waiting.insert(id, reply);
        self.outbox.push(frame);
    }

    fn reply(&mut self, v: &Value, result: Result<usize, ClientError>) {
        if let Some(tx) = v["id"].as_u64().and_then(|id| self.waiting.remove(&id)) {
            let _ = tx.send(result);
        }
    }
}

/// The frames that open a session: subscribe, re-track every held key (with its tags), then
/// `resume` from the position if there is one. Tracking before the resume makes the replay
/// cover the held keys too.
pub(crate) fn start<C: LocalCache>(shared: &Shared<C>, conn: &mut Conn) {
    let opts = &shared.opts;
    if !opts.subscriptions.is_empty() {
        let patterns: Vec<Value> = opts
            .subscriptions
            .iter()
            .map(|(p, t)| json!({"pattern": p, "pattern_type": t.map(|t| t.as_str())}))
            .collect();
        conn.outbox
            .push(json!({"op": "subscribe", "patterns": patterns}));
    }
    conn.outbox
        .extend(shared.held.lock().all_track_frames(TRACK_CHUNK));
    let known = {
        let st = shared.status.borrow();
        st.epoch.clone().map(|e| (e, st.seq))
    };
    match known {
        Some((epoch, since)) => {
            conn.resuming = true;
            conn.outbox
                .push(json!({"op": "resume", "epoch": epoch, "since_seq": since}));
        }
        None => {
            let (epoch, seq) = (conn.epoch.clone(), conn.hello_seq);
            shared.status.send_modify(|s| {
                s.epoch = Some(epoch);
                s.seq = seq;
            });
        }
    }
    let resuming = conn.resuming;
    shared.status.send_modify(|s| s.resuming = resuming);
}

/// Apply one server frame.
pub(crate) fn handle_frame<C: LocalCache>(shared: &Shared<C>, conn: &mut Conn, v: &Value) {
    let seq = v["seq"].as_u64();
    match v["type"].as_str().unwrap_or("") {
        "invalidate" => {
            let inv = invalidate(shared, conn, v);
            let replayed = conn.resuming;
            shared.status.send_modify(|st| {
                st.events += 1;
                if replayed {
                    st.replayed += 1;
                }
            });
            advance(shared, conn, seq);
            shared.emit(ClientEvent::Invalidated(inv));
        }
        "resumed" => {
            conn.resuming = false;
            shared.status.send_modify(|st| st.resuming = false);
            advance(shared, conn, seq);
            shared.emit(ClientEvent::Resumed {
                replayed: v["replayed"].as_u64().unwrap_or(0),
                seq: shared.status.borrow().seq,
            });
        }
        "reset" => {
            let reason = v["reason"].as_str().unwrap_or("").to_string();
            tracing::info!(%reason, "reset: clearing the local cache");
            clear_all(shared);
            conn.resuming = false;
            let (epoch, seq) = (conn.epoch.clone(), conn.hello_seq);
            shared.status.send_modify(|st| {
                st.resets += 1;
                st.resuming = false;
                st.epoch = Some(epoch);
                st.seq = seq;
            });
            shared.emit(ClientEvent::Reset { reason });
        }
        "heartbeat" | "pong" | "subscribed" | "unsubscribed" => advance(shared, conn, seq),
        "tracked" | "untracked" => {
            conn.reply(v, Ok(v["count"].as_u64().unwrap_or(0) as usize));
        }
        "error" => {
            let code = v["code"].as_str().unwrap_or("").to_string();
            let message = v["message"].as_str().unwrap_or("").to_string();
            tracing::warn!(%code, %message, "server refused an operation");
            conn.reply(v, Err(ClientError::Server { code, message }));
        }
        _ => {}
    }
}

/// The position advances on events, heartbeats and replies, except during a resume.
fn advance<C: LocalCache>(shared: &Shared<C>, conn: &Conn, seq: Option<u64>) {
    if let (Some(seq), false) = (seq, conn.resuming) {
        shared.status.send_if_modified(|st| {
            let before = st.seq;
            st.seq = st.seq.max(seq);
            st.seq != before
        });
    }
}

/// Drop everything: cache, fills in progress, held keys (a reset, or an event the client
/// cannot interpret).
fn clear_all<C: LocalCache>(shared: &Shared<C>) {
    shared.fills.void_all();
    shared.cache.clear();
    shared.held.lock().clear();
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The wall clock of staleness marks and checks.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Apply an `invalidate` event.
///
/// Keys covered: the event's `keys`; for a tag event also every held key carrying one of
/// its `tags` (the server lists only the keys it still tracked for this connection); for a
/// pattern event every cached key the pattern matches (the event's keys are only the
/// tracked ones; the cache may hold others, e.g. reached through a subscription).
///
/// Hard (no `soft`, or `false`): the keys are dropped, their fills voided, and they are no
/// longer held (tracking is one-shot). Soft: the entries are marked stale instead, fills are
/// still voided (the value being read may predate the change), and the held ones among them
/// are tracked again, since the server dropped their tracking.
fn invalidate<C: LocalCache>(shared: &Shared<C>, conn: &mut Conn, v: &Value) -> Invalidation {
    let soft = v["soft"].as_bool() == Some(true) && !shared.opts.max_staleness.is_zero();
    let at = now();
    let tags = strings(&v["tags"]);
    let mut keys = strings(&v["keys"]);
    let mut held = shared.held.lock();
    if !tags.is_empty() {
        for k in held.keys_tagged(&tags) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for k in &keys {
        shared.fills.void_key(k);
        if soft {
            shared.cache.mark_stale(k, at);
        } else {
            shared.cache.invalidate(k);
            held.remove(k);
        }
    }
    let mut pattern = None;
    let mut pattern_type = None;
    let mut cleared = false;
    if let Some(source) = v["pattern"].as_str() {
        pattern = Some(source.to_string());
        let kind = match &v["pattern_type"] {
            Value::String(t) => PatternType::parse(t).map(Some).ok_or(()),
            _ => Ok(None),
        };
        // Canonical form on the wire: the pattern parsed with its type as an explicit type
        // gives exactly the pattern's key set.
        let limits = PatternLimits {
            max_pattern_bytes: usize::MAX,
            max_regex_bytes: 16 << 20,
        };
        let parsed = match kind {
            Ok(kind) => Pattern::parse(source, kind, &limits).map_err(|e| e.to_string()),
            Err(()) => Err(format!("unknown pattern_type {}", v["pattern_type"])),
        };
        match parsed {
            Ok(p) => {
                shared.fills.void_pattern(&p);
                if soft {
                    shared.cache.mark_stale_pattern(&p, at);
                } else {
                    shared.cache.invalidate_pattern(&p);
                    held.remove_matching(&p);
                }
                pattern_type = Some(p.kind());
            }
            Err(e) => {
                // Cannot tell what it covers: dropping everything is the only safe answer.
                tracing::warn!(pattern = source, error = %e, "cannot compile an invalidation pattern; clearing");
                drop(held);
                clear_all(shared);
                held = shared.held.lock();
                cleared = true;
            }
        }
    }
    if soft {
        conn.outbox
            .extend(held.track_frames(keys.iter().map(String::as_str), TRACK_CHUNK));
    }
    drop(held);
    Invalidation {
        seq: v["seq"].as_u64().unwrap_or(0),
        keys,
        pattern,
        pattern_type,
        cleared,
        tags,
        soft,
        replayed: conn.resuming,
        request_id: v["request_id"].as_str().map(str::to_string),
    }
}

/// The cache evicted `key`: forget it unless it came back or is being filled again. Returns
/// whether it should be untracked on the server.
pub(crate) fn forget_evicted<C: LocalCache>(shared: &Shared<C>, key: &str) -> bool {
    let mut held = shared.held.lock();
    if !held.contains(key) || shared.fills.contains(key) || shared.cache.contains(key) {
        return false;
    }
    held.remove(key);
    true
}
