//! WebSocket endpoint `GET /ws`: upgrade, protocol frames, connection task.
//!
//! The upgrade is done on hyper 1.x directly (no framework): [`upgrade`] validates the
//! handshake headers, answers `101 Switching Protocols` and spawns a task that waits for
//! hyper to hand over the connection, wraps it in a tokio-tungstenite stream (server role, the
//! configured maximum frame size) and runs [`connection::serve`]. The HTTP server must serve
//! connections `with_upgrades()`, or the upgrade never resolves.
//!
//! * [`protocol`]: client operations and reply frames.
//! * [`connection`]: the per-connection task (reads, outbox drain, heartbeat, resume).

pub mod connection;
pub mod protocol;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::fanout::Hub;

/// Answer an upgrade request on `/ws` (101 and spawn the connection task) or refuse it (400).
/// `principal` has already been authenticated and holds the `subscribe` scope.
pub fn upgrade(
    mut req: Request<Incoming>,
    hub: Arc<Hub>,
    principal: Arc<Principal>,
) -> Response<Full<Bytes>> {
    let accept = match check_handshake(req.headers()) {
        Ok(key) => derive_accept_key(key.as_bytes()),
        Err(e) => return error_response(&e),
    };
    if hub.is_closing() {
        return error_response(&ApiError::unavailable("server is shutting down"));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = socket_config(&hub);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                connection::serve(ws, hub, principal).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Serve the protocol over an already-upgraded byte stream (the server role). Used by
/// [`upgrade`]; public so that other transports and tests can drive a session directly.
pub async fn serve_stream<S>(io: S, hub: Arc<Hub>, principal: Arc<Principal>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = socket_config(&hub);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    connection::serve(ws, hub, principal).await;
}

fn socket_config(hub: &Hub) -> WebSocketConfig {
    let max = hub.limits().max_ws_frame_bytes;
    // tungstenite zero-fills its whole read buffer before every read attempt, and the task
    // polls the socket after every outbox drain: with the 128 KiB default that memset was
    // more than half of the server's CPU under fan-out (perf). Client frames are small
    // operations; a large one still arrives (the buffer grows for it).
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// tungstenite's read buffer per connection (see `socket_config`).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The `Sec-WebSocket-Key` of a valid version-13 upgrade request.
fn check_handshake(headers: &HeaderMap) -> Result<&str, ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "GET /ws is a WebSocket endpoint: send `Connection: Upgrade` and `Upgrade: websocket`",
        ));
    }
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty())
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ValidationFailed,
                "missing Sec-WebSocket-Key header",
            )
        })
}

fn error_response(err: &ApiError) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = err.code.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if err.code == ErrorCode::ValidationFailed {
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    if let Some(secs) = err.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests;
