//! One WebSocket connection: a single task that reads client frames, drains the fan-out
//! outbox and sends heartbeats.
//!
//! # Writing
//! Every server frame (events, replies, replays) is pre-encoded ([`crate::fanout::frame`]) and
//! written straight to the socket under the WebSocket stream, batched into one buffer and one
//! `write_all` per batch: the fan-out's `Bytes` are copied once into the batch, and never
//! re-framed. tungstenite itself only writes its automatic pong and close replies; before every
//! raw write we `flush` it, so its buffered bytes always go first and frames never interleave.
//!
//! # Closing
//! A connection whose outbox overflowed (slow consumer) or a server shutdown is closed with
//! 4008 "slow consumer" / 1001. A write that is stuck on a full socket when the close is
//! requested gets [`CLOSE_GRACE`] to finish, then the close frame gets as long again, then the
//! socket is dropped: best effort, as SPEC says.
//!
//! # Positions
//! Every reply that carries a `seq` (pong, heartbeat, subscribed, ...) reads the hub's
//! `seq` first and drains the outbox second, so all events up to that `seq` are written before
//! the reply. `resume` follows the cut protocol documented in [`crate::fanout`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::error::ErrorCode;
use crate::event::{Invalidation, Target};
use crate::fanout::frame::{EventEncoder, EventKeys};
use crate::fanout::{CloseReason, Conn, Hub, QueuedFrame};
use crate::pattern::Pattern;

use super::protocol::{self, FrameError, Op, PatternOut, PatternSpec, Reply, Request};

/// How long a stuck write may still run once the connection must close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Bytes gathered into one socket write before the task goes back to reading.
const BATCH_BYTES: usize = 256 * 1024;

/// Most live `seq`s remembered before the first `resume` (to not replay what was written).
const LIVE_SENT_MAX: usize = 65_536;

/// Serve one upgraded connection until it ends. Registers it with the hub first and always
/// unregisters it.
pub async fn serve<S>(ws: WebSocketStream<S>, hub: Arc<Hub>, principal: Arc<crate::auth::Principal>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(conn) = hub.register(principal) else {
        let mut ws = ws;
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        let _ = timeout(CLOSE_GRACE, ws.close(Some(frame))).await;
        return;
    };
    let heartbeat = Duration::from_secs(hub.ws_config().heartbeat_secs.max(1));
    let mut session = Session {
        ws,
        hub: hub.clone(),
        conn: conn.clone(),
        subs: Vec::new(),
        out: Vec::with_capacity(16 * 1024),
        heartbeat,
        last_write: Instant::now(),
        timer: Box::pin(sleep_until(Instant::now() + heartbeat)),
        ws_pending: false,
        live_sent: Some(Vec::new()),
    };
    let end = session.run().await;
    tracing::debug!(conn = conn.id, %end, "websocket connection ended");
    hub.unregister(&conn, session.subs.len());
}

/// Why a session ended (for logs).
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("closed by the server: {0:?}")]
    Closed(CloseReason),
    #[error("socket error: {0}")]
    Io(io::Error),
    #[error("websocket protocol error: {0}")]
    Protocol(String),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> Self {
        End::Io(e)
    }
}

struct Session<S> {
    ws: WebSocketStream<S>,
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    /// This connection's subscriptions, in subscription order.
    subs: Vec<Arc<Pattern>>,
    /// The batch being written.
    out: Vec<u8>,
    heartbeat: Duration,
    /// When the last batch was written; the heartbeat is due `heartbeat` after it.
    last_write: Instant,
    /// Fires at the heartbeat deadline. Re-armed only when it fires (a write just moves
    /// `last_write`), so the hot path never touches the timer wheel.
    timer: Pin<Box<Sleep>>,
    /// tungstenite may hold an automatic pong to write (a ping was read since the last flush).
    ws_pending: bool,
    /// `seq`s of live events written before the first `resume`, ascending.
    live_sent: Option<Vec<(u64, Bytes)>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn run(&mut self) -> End {
        let hello = Reply::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            node_id: self.hub.node_id(),
            epoch: self.hub.epoch(),
            seq: self.hub.current_seq(),
        };
        let hello = protocol::encode(&hello, None);
        self.out.extend_from_slice(&hello);
        if let Err(e) = self.flush_out().await {
            return e.into();
        }
        loop {
            if let Some(reason) = self.conn.close_reason() {
                self.close(reason).await;
                return End::Closed(reason);
            }
            let conn = self.conn.clone();
            let step = tokio::select! {
                biased;
                _ = conn.woken() => self.drain_batch().await.map_err(End::from),
                msg = self.ws.next() => self.on_message(msg).await,
                _ = &mut self.timer => self.on_timer().await.map_err(End::from),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_message(&mut self, msg: Option<Result<Message, WsError>>) -> Result<(), End> {
        match msg {
            None => Err(End::ClientClosed),
            Some(Err(WsError::Capacity(e))) => {
                // Over `limits.max_ws_frame_bytes`: tungstenite cannot resync, so close 1009.
                let frame = CloseFrame {
                    code: CloseCode::Size,
                    reason: "frame too large".into(),
                };
                let _ = timeout(CLOSE_GRACE, self.ws.close(Some(frame))).await;
                Err(End::Protocol(e.to_string()))
            }
            Some(Err(e)) => Err(End::Protocol(e.to_string())),
            Some(Ok(Message::Text(text))) => Ok(self.on_text(text.as_str()).await?),
            Some(Ok(Message::Binary(_))) => {
                let err = FrameError::new(
                    ErrorCode::InvalidJson,
                    "binary frames are not supported: send JSON text frames",
                );
                Ok(self.send_error(&err).await?)
            }
            Some(Ok(Message::Close(_))) => {
                // tungstenite has queued the close reply; push it out.
                let _ = timeout(CLOSE_GRACE, self.ws.flush()).await;
                Err(End::ClientClosed)
            }
            // Pings are answered by tungstenite on the next read or flush.
            Some(Ok(Message::Ping(_))) => {
                self.ws_pending = true;
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str) -> io::Result<()> {
        let Request { id, op } = match protocol::parse(text) {
            Ok(r) => r,
            Err(e) => return self.send_error(&e).await,
        };
        let result = match op {
            Op::Ping => {
                let seq = self.position();
                self.push_reply(&Reply::Pong { seq }, id.as_ref());
                Ok(())
            }
            Op::Subscribe(specs) => self.subscribe(specs, id.as_ref()),
            Op::Unsubscribe(specs) => self.unsubscribe(specs, id.as_ref()),
            Op::Track(keys) => self.track(keys, id.as_ref()),
            Op::Untrack(keys) => {
                let count = self
                    .hub
                    .untrack(&self.conn, keys.iter().map(String::as_str));
                self.push_reply(&Reply::Untracked { count }, id.as_ref());
                Ok(())
            }
            Op::Resume { epoch, since_seq } => return self.resume(&epoch, since_seq, id).await,
        };
        match result {
            Ok(()) => self.flush_out().await,
            Err(e) => self.send_error(&e.with_id(id)).await,
        }
    }

    // ---- operations ----

    fn compile(&self, specs: &[PatternSpec]) -> Result<Vec<Arc<Pattern>>, FrameError> {
        specs
            .iter()
            .map(|s| {
                let p = self
                    .hub
                    .patterns()
                    .get(&s.pattern, s.pattern_type)
                    .map_err(|e| FrameError::from_pattern(&s.pattern, e))?;
                if !self.conn.principal.allows_pattern(&p) {
                    return Err(FrameError::new(
                        ErrorCode::Forbidden,
                        format!(
                            "pattern {:?} reaches outside this token's key prefixes",
                            s.pattern
                        ),
                    ));
                }
                Ok(p)
            })
            .collect()
    }

    fn subscribe(&mut self, specs: Vec<PatternSpec>, id: Option<&Value>) -> Result<(), FrameError> {
        let compiled = self.compile(&specs)?;
        let mut fresh: Vec<Arc<Pattern>> = Vec::new();
        for p in compiled {
            if !self
                .subs
                .iter()
                .chain(fresh.iter())
                .any(|q| same_pattern(q, &p))
            {
                fresh.push(p);
            }
        }
        let max = self.hub.ws_config().max_subscriptions_per_conn;
        if self.subs.len() + fresh.len() > max {
            return Err(FrameError::validation(format!(
                "a connection may hold at most {max} subscriptions"
            )));
        }
        for p in fresh {
            self.hub.subscribe(&self.conn, p.clone());
            self.subs.push(p);
        }
        let seq = self.position();
        let patterns = self.subs.iter().map(|p| PatternOut::from(&**p)).collect();
        let frame = protocol::encode(&Reply::Subscribed { patterns, seq }, id);
        self.out.extend_from_slice(&frame);
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        specs: Vec<PatternSpec>,
        id: Option<&Value>,
    ) -> Result<(), FrameError> {
        for spec in &specs {
            // Compare on what the client wrote plus the inferred type: compile through the
            // cache so inference is the same as at subscribe time.
            let p = self
                .hub
                .patterns()
                .get(&spec.pattern, spec.pattern_type)
                .map_err(|e| FrameError::from_pattern(&spec.pattern, e))?;
            if let Some(i) = self.subs.iter().position(|q| same_pattern(q, &p)) {
                let removed = self.subs.remove(i);
                self.hub.unsubscribe(&self.conn, &removed);
            }
        }
        let seq = self.position();
        let patterns = self.subs.iter().map(|p| PatternOut::from(&**p)).collect();
        let frame = protocol::encode(&Reply::Unsubscribed { patterns, seq }, id);
        self.out.extend_from_slice(&frame);
        Ok(())
    }

    fn track(&mut self, keys: Vec<String>, id: Option<&Value>) -> Result<(), FrameError> {
        let max_bytes = self.hub.limits().max_key_bytes;
        for key in &keys {
            protocol::validate_key(key, max_bytes)?;
            if !self.conn.principal.allows_key(key) {
                return Err(FrameError::new(
                    ErrorCode::Forbidden,
                    format!("key {key:?} is outside this token's key prefixes"),
                ));
            }
        }
        let max = self.hub.ws_config().max_tracked_per_conn;
        let now = self.hub.tracked_count(&self.conn);
        if now + keys.len() > max {
            let fresh = {
                let mirror = self.conn.tracked();
                keys.iter().filter(|k| !mirror.contains(k.as_str())).count()
            };
            if now + fresh > max {
                return Err(FrameError::validation(format!(
                    "a connection may track at most {max} keys"
                )));
            }
        }
        let count = self.hub.track(&self.conn, keys.iter().map(String::as_str));
        self.push_reply(&Reply::Tracked { count }, id);
        Ok(())
    }

    async fn resume(&mut self, epoch: &str, since_seq: u64, id: Option<Value>) -> io::Result<()> {
        let cut = match self.hub.resume_cut(&self.conn, epoch, since_seq) {
            Ok(cut) => cut,
            Err(reason) => {
                self.push_reply(
                    &Reply::Reset {
                        reason: reason.as_str(),
                    },
                    id.as_ref(),
                );
                return self.flush_out().await;
            }
        };
        let already = self.live_sent.take().unwrap_or_default();
        let mut pending = cut.pending.into_iter().peekable();
        let mut replayed = 0u64;
        let result: io::Result<()> = async {
            for inv in &cut.events {
                let mut queued_too = false;
                while let Some(p) = pending.next_if(|p| p.seq <= inv.seq) {
                    queued_too |= p.seq == inv.seq;
                    replayed += u64::from(p.seq > since_seq);
                    self.out.extend_from_slice(&p.bytes);
                }
                if queued_too {
                    continue;
                }
                // An event already written live is skipped only if it said all that the
                // replay would: delivered live with fewer keys (a `track` came after it), the
                // replay's frame goes out too (repeating a key is harmless, missing one not).
                let frame = self.replay_frame(inv);
                let sent_live = |f: &Bytes| {
                    let from = already.partition_point(|(seq, _)| *seq < inv.seq);
                    already[from..]
                        .iter()
                        .take_while(|(seq, _)| *seq == inv.seq)
                        .any(|(_, b)| b == f)
                };
                if let Some(frame) = frame.filter(|f| !sent_live(f)) {
                    replayed += 1;
                    self.out.extend_from_slice(&frame);
                }
                if self.out.len() >= BATCH_BYTES {
                    self.flush_out().await?;
                }
            }
            for p in pending.by_ref() {
                replayed += u64::from(p.seq > since_seq);
                self.out.extend_from_slice(&p.bytes);
            }
            Ok(())
        }
        .await;
        // Always leave replay mode, even when the socket failed.
        let rest = self.hub.end_replay(&self.conn);
        result?;
        self.push_reply(
            &Reply::Resumed {
                replayed,
                seq: cut.seq,
            },
            id.as_ref(),
        );
        self.push_frames(rest);
        self.flush_out().await
    }

    /// The frame this connection would have received for `inv` given its interests now
    /// (tracked keys are consumed, one-shot, as live routing does).
    fn replay_frame(&self, inv: &Invalidation) -> Option<Bytes> {
        let principal = &self.conn.principal;
        let encoder = EventEncoder::new(inv, self.hub.epoch());
        match &inv.target {
            Target::Keys(keys) => {
                let idx: Vec<u32> = keys
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| {
                        let tracked = self.hub.take_tracked(&self.conn, k);
                        let subscribed = self.subs.iter().any(|p| p.is_match(k));
                        (tracked || subscribed) && principal.allows_key(k)
                    })
                    .map(|(i, _)| i as u32)
                    .collect();
                if idx.is_empty() {
                    None
                } else if idx.len() == keys.len() {
                    Some(encoder.encode(EventKeys::All(keys)))
                } else {
                    Some(encoder.encode(EventKeys::Indexed(keys, &idx)))
                }
            }
            Target::Pattern { pattern, .. } => {
                let mut names: Vec<String> = {
                    let mirror = self.conn.tracked();
                    mirror
                        .iter()
                        .filter(|k| pattern.is_match(k))
                        .map(|k| k.to_string())
                        .collect()
                };
                names.sort_unstable();
                self.hub
                    .untrack(&self.conn, names.iter().map(String::as_str));
                names.retain(|k| principal.allows_key(k));
                let subscribed = self.subs.iter().any(|p| p.may_overlap(pattern));
                if names.is_empty() && !subscribed {
                    None
                } else if names.is_empty() {
                    Some(encoder.encode(EventKeys::None))
                } else {
                    Some(encoder.encode(EventKeys::Named(&names)))
                }
            }
        }
    }

    // ---- writing ----

    /// The hub's `seq`, after moving every queued event into the batch: all events up to the
    /// returned `seq` precede whatever is appended next.
    fn position(&mut self) -> u64 {
        let seq = self.hub.current_seq();
        while let Some(f) = self.conn.pop() {
            self.append_live(f);
        }
        seq
    }

    fn append_live(&mut self, f: QueuedFrame) {
        if let Some(sent) = &mut self.live_sent
            && sent.len() < LIVE_SENT_MAX
        {
            sent.push((f.seq, f.bytes.clone()));
        }
        self.out.extend_from_slice(&f.bytes);
    }

    fn push_frames(&mut self, frames: Vec<QueuedFrame>) {
        for f in frames {
            self.append_live(f);
        }
    }

    fn push_reply(&mut self, reply: &Reply<'_>, id: Option<&Value>) {
        let frame = protocol::encode(reply, id);
        self.out.extend_from_slice(&frame);
    }

    async fn send_error(&mut self, err: &FrameError) -> io::Result<()> {
        let frame = protocol::encode_error(err);
        self.out.extend_from_slice(&frame);
        self.flush_out().await
    }

    async fn on_timer(&mut self) -> io::Result<()> {
        let due = self.last_write + self.heartbeat;
        if Instant::now() >= due {
            self.send_heartbeat().await?;
        }
        let next = self.last_write + self.heartbeat;
        self.timer.as_mut().reset(next);
        Ok(())
    }

    async fn send_heartbeat(&mut self) -> io::Result<()> {
        let seq = self.position();
        self.push_reply(&Reply::Heartbeat { seq }, None);
        self.flush_out().await
    }

    /// Move up to one batch of queued events to the socket. Re-arms the wake-up when more
    /// remain, so the task reads client frames between batches.
    async fn drain_batch(&mut self) -> io::Result<()> {
        while self.out.len() < BATCH_BYTES {
            match self.conn.pop() {
                Some(f) => self.append_live(f),
                None => break,
            }
        }
        if !self.conn.is_empty() {
            self.conn.rewake();
        }
        self.flush_out().await
    }

    /// Write the batch. Bounded by [`CLOSE_GRACE`] once the connection must close.
    async fn flush_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // tungstenite may hold an automatic pong: it goes first, whole.
        if self.ws_pending {
            self.ws.flush().await.map_err(io::Error::other)?;
            self.ws_pending = false;
        }
        let conn = self.conn.clone();
        let io = self.ws.get_mut();
        let write = io.write_all(&self.out);
        tokio::pin!(write);
        tokio::select! {
            r = &mut write => r?,
            _ = conn.closing() => match timeout(CLOSE_GRACE, &mut write).await {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled while closing")),
            },
        }
        io.flush().await?;
        self.out.clear();
        self.last_write = Instant::now();
        Ok(())
    }

    async fn close(&mut self, reason: CloseReason) {
        let frame = match reason {
            CloseReason::SlowConsumer => CloseFrame {
                code: CloseCode::from(4008),
                reason: "slow consumer".into(),
            },
            CloseReason::Shutdown => {
                // Deliver what is already queued first: shutdown drains.
                self.position();
                let _ = self.flush_out().await;
                CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                }
            }
        };
        self.out.clear();
        let _ = timeout(CLOSE_GRACE, self.ws.close(Some(frame))).await;
    }
}

fn same_pattern(a: &Pattern, b: &Pattern) -> bool {
    a.kind() == b.kind() && a.source() == b.source()
}
