//! Our own server in the comparison: WebSocket subscribers (`/ws`, one `subscribe` op with
//! every prefix pattern) and `POST /invalidate/key` publishers on keep-alive connections.

use futures_util::{SinkExt, StreamExt};
use invalidator::http::client::HttpClient;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{BoxError, Sink};

/// WebSocket subscriber with `patterns` (SPEC syntax, e.g. `p7:*`); returns once the server
/// answered `subscribed`.
pub async fn subscriber(
    addr: &str,
    patterns: &[String],
    sink: Sink,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    // tungstenite zero-fills its read buffer before reads: keep it small, or 1,000 clients'
    // memsets dominate the machine they share with the server.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await?;
    // `hello`, then `subscribed` (a subscriber holding nothing only waits for `hello`).
    let mut wanted = 1;
    if !patterns.is_empty() {
        ws.send(Message::text(
            json!({"op": "subscribe", "patterns": patterns}).to_string(),
        ))
        .await?;
        wanted = 2;
    }
    let mut seen = 0;
    while seen < wanted {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"type\":\"error\"") => {
                return Err(format!("subscribe refused: {t}").into());
            }
            Some(Ok(Message::Text(_))) => seen += 1,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("connection ended before subscribed".into()),
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                let now = sink.now_ns();
                sink.batch().record(t.as_bytes(), now);
            }
        }
    }))
}

/// A publishing connection: `POST /invalidate/key`, one at a time.
pub struct Publisher {
    client: HttpClient,
    token: Option<String>,
}

impl Publisher {
    pub async fn connect(addr: &str, token: Option<String>) -> Result<Publisher, BoxError> {
        Ok(Publisher {
            client: HttpClient::connect(addr).await?,
            token,
        })
    }

    pub async fn publish(&mut self, body: String) -> Result<(), BoxError> {
        let r = self
            .client
            .post_json("/invalidate/key", body, self.token.as_deref())
            .await?;
        if r.status != 200 {
            return Err(format!(
                "POST /invalidate/key: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )
            .into());
        }
        Ok(())
    }
}
