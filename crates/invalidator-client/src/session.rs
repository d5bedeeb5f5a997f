//! The connection task: one WebSocket at a time, reconnecting with full-jitter backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::cache::LocalCache;
use crate::engine::{self, Conn, Reply, Shared};
use crate::held::track_frame;
use crate::{ClientError, ClientEvent};
use invalidator_core::backoff::Backoff;

/// Evicted keys untracked per `untrack` frame.
const UNTRACK_CHUNK: usize = 1000;

pub(crate) enum Command {
    Track {
        keys: Vec<String>,
        tags: Vec<String>,
        reply: Reply,
    },
    Untrack {
        keys: Vec<String>,
        reply: Reply,
    },
    Disconnect,
    Reconnect,
    Shutdown,
}

/// What the connection task listens to besides the socket.
pub(crate) struct Inbox {
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Keys the cache evicted (from its eviction listener).
    pub evictions: mpsc::UnboundedReceiver<String>,
}

enum Input {
    Command(Option<Command>),
    Evicted(String),
}

impl Inbox {
    async fn next(&mut self) -> Input {
        tokio::select! {
            biased;
            c = self.commands.recv() => Input::Command(c),
            Some(k) = self.evictions.recv() => Input::Evicted(k),
        }
    }

    /// `first` and the evicted keys queued behind it that should be untracked.
    fn evicted_batch<C: LocalCache>(&mut self, shared: &Shared<C>, first: String) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(k) = next {
            if engine::forget_evicted(shared, &k) {
                out.push(k);
            }
            next = if out.len() < UNTRACK_CHUNK {
                self.evictions.try_recv().ok()
            } else {
                None
            };
        }
        out
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One connection.
pub(crate) struct Session {
    ws: Socket,
    conn: Conn,
}

impl Session {
    /// Connect, read `hello`, subscribe, re-track held keys and resume from the position.
    pub async fn open<C: LocalCache>(shared: &Shared<C>) -> Result<Session, ClientError> {
        let opts = &shared.opts;
        let within = opts.request_timeout;
        let mut s = match tokio::time::timeout(within, Self::handshake(shared)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Connect {
                    url: opts.url.clone(),
                    message: format!("no hello within {within:?}"),
                });
            }
        };
        engine::start(shared, &mut s.conn);
        if let Err(e) = s.flush().await {
            shared.status.send_modify(|st| st.resuming = false);
            return Err(e);
        }
        let mut sessions = 0;
        shared.status.send_modify(|st| {
            st.connected = true;
            st.sessions += 1;
            sessions = st.sessions;
        });
        let _ = shared.events.send(ClientEvent::Connected {
            session: sessions,
            epoch: s.conn.epoch.clone(),
            resuming: s.conn.resuming,
        });
        Ok(s)
    }

    async fn handshake<C: LocalCache>(shared: &Shared<C>) -> Result<Session, ClientError> {
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
        let mut s = Session {
            ws,
            conn: Conn::new(&Value::Null),
        };
        let hello = s
            .next_json()
            .await
            .ok_or_else(|| connect_err("no hello".into()))?;
        if hello["type"] != "hello" {
            return Err(connect_err(format!("expected hello, got {hello}")));
        }
        s.conn = Conn::new(&hello);
        Ok(s)
    }

    /// Send the queued frames.
    async fn flush(&mut self) -> Result<(), ClientError> {
        if self.conn.outbox.is_empty() {
            return Ok(());
        }
        for frame in std::mem::take(&mut self.conn.outbox) {
            self.ws
                .feed(Message::text(frame.to_string()))
                .await
                .map_err(|_| ClientError::NotConnected)?;
        }
        self.ws.flush().await.map_err(|_| ClientError::NotConnected)
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

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

/// What ended a session.
enum Next {
    /// The connection was lost: reconnect after a backoff delay.
    Reconnect,
    /// [`CacheClient::reconnect`](crate::CacheClient::reconnect): at once.
    ReconnectNow,
    Offline,
    Shutdown,
}

/// The connection task.
pub(crate) async fn run<C: LocalCache>(shared: Arc<Shared<C>>, mut inbox: Inbox, first: Session) {
    let opts = &shared.opts;
    let mut backoff = Backoff::new(opts.reconnect_base, opts.reconnect_cap);
    let mut session = first;
    loop {
        let next = serve(&shared, session, &mut inbox).await;
        shared.status.send_modify(|s| {
            s.connected = false;
            s.resuming = false;
        });
        let _ = shared.events.send(ClientEvent::Disconnected);
        let mut wait = match next {
            Next::Shutdown => return,
            Next::Offline => {
                if !offline(&shared, &mut inbox).await {
                    return;
                }
                false
            }
            Next::ReconnectNow => false,
            Next::Reconnect => true,
        };
        session = loop {
            if wait {
                let delay = backoff.next_delay();
                tracing::debug!(
                    ?delay,
                    attempt = backoff.attempt(),
                    "reconnecting after a delay"
                );
                match idle(&shared, delay, &mut inbox).await {
                    Idle::Elapsed | Idle::Now => {}
                    Idle::Offline => {
                        if !offline(&shared, &mut inbox).await {
                            return;
                        }
                    }
                    Idle::Shutdown => return,
                }
            }
            wait = true;
            match Session::open(&shared).await {
                Ok(s) => break s,
                Err(e) => tracing::info!(error = %e, "reconnect failed; retrying"),
            }
        };
        backoff.reset();
    }
}

enum Idle {
    Elapsed,
    Now,
    Offline,
    Shutdown,
}

/// Answer what can be answered while there is no connection.
fn unconnected<C: LocalCache>(shared: &Shared<C>, inbox: &mut Inbox, input: Input) -> Option<Idle> {
    match input {
        Input::Command(None | Some(Command::Shutdown)) => Some(Idle::Shutdown),
        Input::Command(Some(Command::Disconnect)) => Some(Idle::Offline),
        Input::Command(Some(Command::Reconnect)) => Some(Idle::Now),
        Input::Command(Some(Command::Track { reply, .. } | Command::Untrack { reply, .. })) => {
            // The held keys are (re)tracked when the next session opens.
            let _ = reply.send(Err(ClientError::NotConnected));
            None
        }
        Input::Evicted(k) => {
            inbox.evicted_batch(shared, k);
            None
        }
    }
}

/// Wait out a reconnect delay while answering commands.
async fn idle<C: LocalCache>(shared: &Shared<C>, delay: Duration, inbox: &mut Inbox) -> Idle {
    let wait = tokio::time::sleep(delay);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => return Idle::Elapsed,
            input = inbox.next() => {
                if let Some(r) = unconnected(shared, inbox, input) {
                    return r;
                }
            }
        }
    }
}

/// Offline until [`CacheClient::reconnect`](crate::CacheClient::reconnect): true to reconnect,
/// false to shut down.
async fn offline<C: LocalCache>(shared: &Shared<C>, inbox: &mut Inbox) -> bool {
    loop {
        let input = inbox.next().await;
        match unconnected(shared, inbox, input) {
            Some(Idle::Shutdown) => return false,
            Some(Idle::Now) => return true,
            _ => {}
        }
    }
}

async fn serve<C: LocalCache>(shared: &Shared<C>, mut s: Session, inbox: &mut Inbox) -> Next {
    let opts = &shared.opts;
    let watchdog = !opts.ping_interval.is_zero();
    let mut last = Instant::now();
    let mut pinged = false;
    loop {
        let wake = if pinged {
            last + opts.idle_timeout.max(opts.ping_interval)
        } else {
            last + opts.ping_interval
        };
        tokio::select! {
            frame = s.next_json() => match frame {
                Some(v) => {
                    last = Instant::now();
                    pinged = false;
                    engine::handle_frame(shared, &mut s.conn, &v);
                }
                None => return Next::Reconnect,
            },
            input = inbox.next() => match input {
                Input::Command(None | Some(Command::Shutdown)) => {
                    s.close().await;
                    return Next::Shutdown;
                }
                Input::Command(Some(Command::Disconnect)) => {
                    s.close().await;
                    return Next::Offline;
                }
                Input::Command(Some(Command::Reconnect)) => {
                    s.close().await;
                    return Next::ReconnectNow;
                }
                Input::Command(Some(Command::Track { keys, tags, reply })) => {
                    s.conn.request(track_frame(&keys, &tags, None), reply);
                }
                Input::Command(Some(Command::Untrack { keys, reply })) => {
                    s.conn.request(json!({"op": "untrack", "keys": keys}), reply);
                }
                Input::Evicted(k) => {
                    let keys = inbox.evicted_batch(shared, k);
                    if !keys.is_empty() {
                        tracing::debug!(count = keys.len(), "untracking evicted keys");
                        s.conn.outbox.push(json!({"op": "untrack", "keys": keys}));
                    }
                }
            },
            _ = tokio::time::sleep_until(wake), if watchdog => {
                if pinged {
                    tracing::warn!(idle = ?opts.idle_timeout, "no frame from the server; reconnecting");
                    return Next::Reconnect;
                }
                s.conn.outbox.push(json!({"op": "ping"}));
                pinged = true;
            }
        }
        if s.flush().await.is_err() {
            return Next::Reconnect;
        }
    }
}
