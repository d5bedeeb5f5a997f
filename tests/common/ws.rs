//! A raw WebSocket protocol client for tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
}

impl Ws {
    pub async fn connect(s: &super::TestServer) -> Ws {
        Self::connect_url(&s.ws_url()).await
    }

    pub async fn connect_url(url: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let mut ws = Ws {
            ws,
            hello: Value::Null,
        };
        ws.hello = ws.recv().await;
        assert_eq!(ws.hello["type"], "hello", "{}", ws.hello);
        ws
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// The next frame that is not a heartbeat.
    pub async fn recv(&mut self) -> Value {
        self.recv_within(WAIT)
            .await
            .expect("timed out waiting for a frame")
    }

    /// The next non-heartbeat frame, or None after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let msg = timeout(wait, self.ws.next()).await.ok()?;
            match msg.expect("connection ended").expect("ws error") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                    if v["type"] != "heartbeat" {
                        return Some(v);
                    }
                }
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    pub async fn subscribe(&mut self, patterns: Value) -> Value {
        let r = self
            .request(json!({"op": "subscribe", "patterns": patterns}))
            .await;
        assert_eq!(r["type"], "subscribed", "{r}");
        r
    }

    /// Every frame up to the `pong` of a ping sent now: what the server queued before it.
    pub async fn events_until_pong(&mut self) -> Vec<Value> {
        self.send(json!({"op": "ping", "id": "sync"})).await;
        let mut out = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["id"] == "sync" {
                return out;
            }
            out.push(v);
        }
    }

    /// The next `invalidate` event.
    pub async fn event(&mut self) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], "invalidate", "{v}");
        v
    }
}
