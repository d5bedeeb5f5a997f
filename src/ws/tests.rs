//! Handshake checks and a session driven over an in-memory duplex stream.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::header::HeaderValue;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;
use crate::config::Config;
use crate::event::{Invalidation, Target};
use crate::pattern::{PatternCache, PatternLimits};

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn handshake_requires_upgrade_version_and_key() {
    let ok = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    assert_eq!(
        check_handshake(&headers(&ok)).unwrap(),
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    assert_eq!(
        derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    for missing in 0..ok.len() {
        let partial: Vec<_> = ok
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, p)| *p)
            .collect();
        let err = check_handshake(&headers(&partial)).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed);
    }
    let mut v12 = ok;
    v12[2] = ("sec-websocket-version", "12");
    assert!(check_handshake(&headers(&v12)).is_err());
    let resp = error_response(&check_handshake(&HeaderMap::new()).unwrap_err());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

type Client = WebSocketStream<tokio::io::DuplexStream>;

async fn session(hub: Arc<Hub>) -> Client {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve_stream(server_io, hub, Arc::new(Principal::open())));
    WebSocketStream::from_raw_socket(client_io, Role::Client, None).await
}

async fn recv(c: &mut Client) -> Value {
    let msg = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

async fn send(c: &mut Client, v: Value) {
    c.send(Message::text(v.to_string())).await.unwrap();
}

fn hub() -> Arc<Hub> {
    let cache = Arc::new(PatternCache::new(16, PatternLimits::default()));
    Hub::new(
        &Config::default(),
        "e1".into(),
        Arc::from("n1"),
        cache,
        10,
        true,
    )
}

fn inv(seq: u64, key: &str) -> Arc<Invalidation> {
    Arc::new(Invalidation {
        seq,
        request_id: format!("r{seq}"),
        triggered_by: "t".into(),
        token_name: None,
        published_at_us: 0,
        node_id: Arc::from("n1"),
        target: Target::Keys(vec![key.to_string()]),
        soft: false,
    })
}

#[tokio::test]
async fn session_over_a_duplex_stream() {
    let hub = hub();
    let mut c = session(hub.clone()).await;
    assert_eq!(
        recv(&mut c).await,
        json!({"type":"hello","protocol":1,"node_id":"n1","epoch":"e1","seq":10})
    );
    send(&mut c, json!({"op":"subscribe","patterns":["a:*"]})).await;
    assert_eq!(recv(&mut c).await["type"], "subscribed");
    hub.publish(inv(11, "a:1"));
    hub.publish(inv(12, "b:1"));
    hub.publish(inv(13, "a:2"));
    let e = recv(&mut c).await;
    assert_eq!(
        (e["seq"].as_u64(), e["keys"].clone()),
        (Some(11), json!(["a:1"]))
    );
    assert_eq!(recv(&mut c).await["seq"], 13);
    // A WebSocket ping is answered by the library; our frames stay intact around it.
    c.send(Message::Ping(vec![1u8].into())).await.unwrap();
    send(&mut c, json!({"op":"ping"})).await;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match msg {
            Message::Pong(p) => assert_eq!(&p[..], &[1u8]),
            Message::Text(t) => {
                assert_eq!(
                    serde_json::from_str::<Value>(t.as_str()).unwrap(),
                    json!({"type":"pong","seq":13})
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // Resume on the same connection replays only what was not written live.
    send(&mut c, json!({"op":"resume","epoch":"e1","since_seq":10})).await;
    assert_eq!(
        recv(&mut c).await,
        json!({"type":"resumed","replayed":0,"seq":13})
    );
    hub.close_all();
    let msg = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(msg, Message::Close(Some(f)) if u16::from(f.code) == 1001));
    tokio::time::timeout(Duration::from_secs(5), hub.wait_closed())
        .await
        .unwrap();
}
