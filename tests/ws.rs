//! `GET /ws` against the real server with real tokio-tungstenite clients: every operation and
//! frame, SPEC's routing matrix, one-shot tracking, broadcast to many subscribers, slow
//! consumers, resume/reset, malformed frames, prefix-restricted tokens, and the client library.

mod common;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use common::ws::{WAIT, Ws};

fn keys(v: &Value) -> Vec<String> {
    v["keys"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

async fn post_keys(s: &TestServer, ks: &[&str], token: Option<&str>) -> u64 {
    let (st, v) = s
        .post_json(
            "/invalidate/key",
            &json!({"keys": ks, "triggered_by": "ws-test"}),
            token,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v["seq"].as_u64().unwrap()
}

async fn post_pattern(s: &TestServer, body: Value) -> u64 {
    let mut body = body;
    body["triggered_by"] = json!("ws-test");
    let (st, v) = s.post_json("/invalidate/pattern", &body, None).await;
    assert_eq!(st, 200, "{v}");
    v["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn hello_ping_subscribe_track_and_their_replies() {
    let s = TestServer::start().await;
    let mut c = Ws::connect(&s).await;
    assert_eq!(c.hello["protocol"], 1);
    assert!(c.hello["node_id"].is_string() && c.hello["epoch"].is_string());
    assert_eq!(c.hello["seq"], 0);

    let pong = c.request(json!({"op": "ping", "id": 42})).await;
    assert_eq!(pong, json!({"type": "pong", "seq": 0, "id": 42}));

    let r = c
        .request(json!({"op": "subscribe", "id": "s1", "patterns": [
            "user:*", "*:profile", "user:?", "a:*:b", "exact:1",
            {"pattern": "order:[0-9]+", "pattern_type": "regex"},
            {"pattern": "a*b", "pattern_type": "exact"}]}))
        .await;
    assert_eq!(r["type"], "subscribed");
    assert_eq!(r["id"], "s1");
    assert_eq!(r["seq"], 0);
    let types: Vec<(&str, &str)> = r["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pattern"].as_str().unwrap(),
                p["pattern_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            ("user:*", "prefix"),
            ("*:profile", "suffix"),
            ("user:?", "glob"),
            ("a:*:b", "glob"),
            ("exact:1", "exact"),
            ("order:[0-9]+", "regex"),
            ("a*b", "exact"),
        ]
    );
    // A repeat is a no-op; unsubscribe answers the remaining list.
    let r = c.subscribe(json!(["user:*"])).await;
    assert_eq!(r["patterns"].as_array().unwrap().len(), 7);
    let r = c
        .request(json!({"op": "unsubscribe", "patterns": ["user:*", "never:*"]}))
        .await;
    assert_eq!(r["type"], "unsubscribed");
    assert_eq!(r["patterns"].as_array().unwrap().len(), 6);

    let r = c
        .request(json!({"op": "track", "keys": ["k:1", "k:2", "k:1"], "id": 1}))
        .await;
    assert_eq!(r, json!({"type": "tracked", "count": 2, "id": 1}));
    let r = c
        .request(json!({"op": "untrack", "keys": ["k:1", "zz"]}))
        .await;
    assert_eq!(r, json!({"type": "untracked", "count": 1}));

    // Metrics see the connection and its interests.
    let (_, m) = s.get_json("/invalidate/metrics", None).await;
    assert_eq!(m["connections"]["active"], 1, "{m}");
    assert_eq!(m["index"]["subscriptions"], 6, "{m}");
    assert_eq!(m["index"]["tracked_keys"], 1, "{m}");
}

#[tokio::test]
async fn non_upgrade_get_is_400_json() {
    let s = TestServer::start().await;
    let (st, body) = s.get("/ws", None).await;
    assert_eq!(st, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], false);
    assert!(v["error"]["code"].is_string());
}

#[tokio::test]
async fn key_invalidation_routing_matrix() {
    let s = TestServer::start().await;
    let subs = [
        json!("user:1"),
        json!("user:*"),
        json!("*:profile"),
        json!("user:?:profile"),
        json!({"pattern": "order:[0-9]+", "pattern_type": "regex"}),
        json!("nomatch:*"),
    ];
    let mut conns = Vec::new();
    for p in &subs {
        let mut c = Ws::connect(&s).await;
        c.subscribe(json!([p])).await;
        conns.push(c);
    }
    let seq = post_keys(
        &s,
        &[
            "user:1",
            "user:2:profile",
            "order:12",
            "order:x",
            "misc:profile",
        ],
        None,
    )
    .await;
    let expected: [&[&str]; 6] = [
        &["user:1"],
        &["user:1", "user:2:profile"],
        &["user:2:profile", "misc:profile"],
        &["user:2:profile"],
        &["order:12"],
        &[],
    ];
    for (c, want) in conns.iter_mut().zip(expected) {
        let evs = c.events_until_pong().await;
        if want.is_empty() {
            assert!(evs.is_empty(), "{evs:?}");
            continue;
        }
        assert_eq!(
            evs.len(),
            1,
            "one event per connection per request: {evs:?}"
        );
        let e = &evs[0];
        assert_eq!(e["type"], "invalidate");
        assert_eq!(e["seq"], seq);
        assert_eq!(e["epoch"], c.hello["epoch"]);
        assert_eq!(e["triggered_by"], "ws-test");
        assert!(e["request_id"].is_string() && e["published_at"].is_string());
        assert_eq!(e["pattern"], Value::Null);
        assert_eq!(e["pattern_type"], Value::Null);
        assert_eq!(
            keys(e),
            want.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn pattern_invalidation_routing_matrix() {
    let s = TestServer::start().await;
    let mut exact = Ws::connect(&s).await;
    exact.subscribe(json!(["user:1"])).await;
    let mut prefix = Ws::connect(&s).await;
    prefix.subscribe(json!(["user:*"])).await;
    let mut suffix = Ws::connect(&s).await;
    suffix.subscribe(json!(["*:profile"])).await;
    let mut orders = Ws::connect(&s).await;
    orders.subscribe(json!(["order:*"])).await;

    // user:* overlaps user:1, user:*, *:profile; not order:*.
    let seq = post_pattern(&s, json!({"pattern": "user:*"})).await;
    for c in [&mut exact, &mut prefix, &mut suffix] {
        let evs = c.events_until_pong().await;
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0]["seq"], seq);
        assert_eq!(evs[0]["pattern"], "user:*");
        assert_eq!(evs[0]["pattern_type"], "prefix");
        assert_eq!(evs[0]["keys"], json!([]));
    }
    assert!(orders.events_until_pong().await.is_empty());

    // An exact pattern decides exactly against exact, prefix and suffix.
    post_pattern(
        &s,
        json!({"pattern": "misc:profile", "pattern_type": "exact"}),
    )
    .await;
    assert!(exact.events_until_pong().await.is_empty());
    assert!(prefix.events_until_pong().await.is_empty());
    assert!(orders.events_until_pong().await.is_empty());
    assert_eq!(suffix.events_until_pong().await.len(), 1);

    // A suffix pattern: *:settings overlaps user:* and order:* but not *:profile or user:1.
    post_pattern(&s, json!({"pattern": "*:settings"})).await;
    assert!(exact.events_until_pong().await.is_empty());
    assert!(suffix.events_until_pong().await.is_empty());
    assert_eq!(prefix.events_until_pong().await.len(), 1);
    assert_eq!(orders.events_until_pong().await.len(), 1);
}

#[tokio::test]
async fn tracking_is_one_shot_for_keys_and_patterns() {
    let s = TestServer::start().await;
    let mut c = Ws::connect(&s).await;
    let r = c
        .request(json!({"op": "track", "keys": ["t:1", "t:3", "t:2"]}))
        .await;
    assert_eq!(r["count"], 3);
    post_keys(&s, &["x", "t:1"], None).await;
    let evs = c.events_until_pong().await;
    assert_eq!(evs.len(), 1);
    assert_eq!(keys(&evs[0]), vec!["t:1"]);
    post_keys(&s, &["t:1"], None).await;
    assert!(c.events_until_pong().await.is_empty(), "t:1 was consumed");

    // The pattern response lists tracked keys; the event carries them in byte order.
    let (_, v) = s
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": "t:*", "triggered_by": "x"}),
            None,
        )
        .await;
    assert_eq!(v["matched_keys"], json!(["t:2", "t:3"]), "{v}");
    let evs = c.events_until_pong().await;
    assert_eq!(evs.len(), 1);
    assert_eq!(keys(&evs[0]), vec!["t:2", "t:3"]);
    assert_eq!(evs[0]["pattern"], "t:*");
    post_pattern(&s, json!({"pattern": "t:*"})).await;
    assert!(c.events_until_pong().await.is_empty());
    let r = c.request(json!({"op": "track", "keys": ["t:1"]})).await;
    assert_eq!(r["count"], 1, "tracked again after being consumed");
}

#[tokio::test]
async fn seq_is_strictly_increasing_per_connection() {
    let s = TestServer::start().await;
    let mut c = Ws::connect(&s).await;
    c.subscribe(json!(["*"])).await;
    let mut posted = Vec::new();
    for i in 0..20 {
        posted.push(post_keys(&s, &[&format!("k:{i}")], None).await);
    }
    let evs = c.events_until_pong().await;
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, posted);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn broadcast_reaches_500_subscribers() {
    let s = TestServer::start().await;
    let url = s.ws_url();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(600);
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    for _ in 0..500 {
        let url = url.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Ws::connect_url(&url).await;
            c.subscribe(json!(["bcast:*"])).await;
            ready.send(()).await.unwrap();
            let e = c.recv().await;
            assert_eq!(e["type"], "invalidate");
            keys(&e)
        }));
    }
    drop(go);
    for _ in 0..500 {
        timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    post_keys(&s, &["bcast:1", "other"], None).await;
    for t in tasks {
        assert_eq!(timeout(WAIT, t).await.unwrap().unwrap(), vec!["bcast:1"]);
    }
}

#[tokio::test]
async fn stalled_reader_is_closed_with_4008_while_others_keep_receiving() {
    let s = TestServer::builder()
        .config_toml("[ws]\nqueue_events = 4\n")
        .start()
        .await;
    // The stalled client has a tiny receive buffer so the socket fills quickly.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(s.addr).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(s.ws_url(), stream)
        .await
        .unwrap();
    let hello = stalled.next().await.unwrap().unwrap();
    assert!(hello.is_text());
    stalled
        .send(Message::text(
            json!({"op": "subscribe", "patterns": ["*"]}).to_string(),
        ))
        .await
        .unwrap();
    let sub = stalled.next().await.unwrap().unwrap();
    assert!(sub.to_text().unwrap().contains("subscribed"));

    let mut healthy = Ws::connect(&s).await;
    healthy.subscribe(json!(["*"])).await;

    // ~100 KB events: the stalled socket and its 4-event queue overflow after a few MB.
    let big: Vec<String> = (0..1000)
        .map(|i| format!("big:{i:04}:{}", "x".repeat(90)))
        .collect();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    let mut last;
    let mut posted = 0;
    loop {
        last = post_keys(&s, &big, None).await;
        posted += 1;
        let e = healthy.recv().await;
        assert_eq!(e["seq"], last);
        let (_, m) = s.get_json("/invalidate/metrics", None).await;
        if m["connections"]["slow_consumer_closes"].as_u64().unwrap() >= 1 {
            assert!(m["events"]["dropped"].as_u64().unwrap() >= 1, "{m}");
            break;
        }
        assert!(
            posted < 300,
            "no slow-consumer close after {posted} events: {m}"
        );
    }

    // Reading again, the stalled client finds a 4008 close after what was written.
    let mut code = None;
    let mut got = 0;
    while let Ok(Some(msg)) = timeout(WAIT, stalled.next()).await {
        match msg {
            Ok(Message::Close(Some(f))) => {
                code = Some(u16::from(f.code));
                assert_eq!(f.reason.as_str(), "slow consumer");
                break;
            }
            Ok(Message::Text(_)) => got += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(4008), "after {got} events");
    assert!(got < posted);
    // The healthy client is still served.
    let seq = post_keys(&s, &["after"], None).await;
    assert_eq!(healthy.recv().await["seq"], seq);
    assert!(seq > last);
}

/// An event written live with fewer keys than the connection's interests at the time of a
/// later `resume` (it tracked a key of that event afterwards) is replayed with the keys it
/// matches now, not skipped as "already sent".
#[tokio::test]
async fn resume_replays_an_event_sent_live_with_fewer_keys() {
    let s = TestServer::start().await;
    let mut a = Ws::connect(&s).await;
    let epoch = a.hello["epoch"].as_str().unwrap().to_string();
    let before = a.hello["seq"].as_u64().unwrap();
    a.subscribe(json!(["a:*"])).await;
    let seq = post_keys(&s, &["a:1", "b:1"], None).await;
    let live = a.recv().await;
    assert_eq!(
        (live["seq"].as_u64(), keys(&live)),
        (Some(seq), vec!["a:1".to_string()])
    );
    a.request(json!({"op": "track", "keys": ["b:1"]})).await;
    let r = a
        .request(json!({"op": "resume", "epoch": epoch, "since_seq": before}))
        .await;
    assert_eq!(r["type"], "invalidate", "replayed, not skipped: {r}");
    assert_eq!(
        (r["seq"].as_u64(), keys(&r)),
        (Some(seq), vec!["a:1".to_string(), "b:1".to_string()])
    );
    assert_eq!(a.recv().await["type"], "resumed");
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_matching_events() {
    let s = TestServer::start().await;
    let mut a = Ws::connect(&s).await;
    let epoch = a.hello["epoch"].as_str().unwrap().to_string();
    a.subscribe(json!(["user:*"])).await;
    a.request(json!({"op": "track", "keys": ["t:1"]})).await;
    let first = post_keys(&s, &["user:0"], None).await;
    assert_eq!(a.recv().await["seq"], first);
    drop(a);

    let s1 = post_keys(&s, &["user:1", "order:1"], None).await;
    post_keys(&s, &["order:2"], None).await;
    let s3 = post_keys(&s, &["t:1"], None).await;
    let s4 = post_keys(&s, &["user:2", "t:1"], None).await;

    let mut b = Ws::connect(&s).await;
    b.subscribe(json!(["user:*"])).await;
    b.request(json!({"op": "track", "keys": ["t:1"]})).await;
    let r = b
        .request(json!({"op": "resume", "epoch": epoch, "since_seq": first, "id": "r"}))
        .await;
    assert_eq!(r["type"], "invalidate");
    assert_eq!(
        (r["seq"].as_u64().unwrap(), keys(&r)),
        (s1, vec!["user:1".to_string()])
    );
    let e = b.recv().await;
    assert_eq!(
        (e["seq"].as_u64().unwrap(), keys(&e)),
        (s3, vec!["t:1".to_string()])
    );
    // t:1 was consumed by the replay of s3 (one-shot), so s4 carries only user:2.
    let e = b.recv().await;
    assert_eq!(
        (e["seq"].as_u64().unwrap(), keys(&e)),
        (s4, vec!["user:2".to_string()])
    );
    let r = b.recv().await;
    assert_eq!(
        r,
        json!({"type": "resumed", "replayed": 3, "seq": s4, "id": "r"})
    );
    // Then live events.
    let s5 = post_keys(&s, &["user:5"], None).await;
    assert_eq!(b.recv().await["seq"], s5);
}

#[tokio::test]
async fn resume_resets_on_gap_epoch_and_position_and_replays_from_zero() {
    let s = TestServer::builder()
        .config_toml("[ws]\nhistory_events = 3\n")
        .start()
        .await;
    let mut c = Ws::connect(&s).await;
    let epoch = c.hello["epoch"].as_str().unwrap().to_string();
    c.subscribe(json!(["*"])).await;
    for i in 0..2 {
        post_keys(&s, &[&format!("k:{i}")], None).await;
    }
    c.events_until_pong().await;
    // since 0 on a fresh server replays everything retained (a second resume may repeat).
    let mut d = Ws::connect(&s).await;
    d.subscribe(json!(["*"])).await;
    d.send(json!({"op": "resume", "epoch": epoch, "since_seq": 0}))
        .await;
    assert_eq!(d.recv().await["seq"], 1);
    assert_eq!(d.recv().await["seq"], 2);
    assert_eq!(
        d.recv().await,
        json!({"type": "resumed", "replayed": 2, "seq": 2})
    );

    for i in 2..6 {
        post_keys(&s, &[&format!("k:{i}")], None).await;
    }
    c.events_until_pong().await;
    let r = c
        .request(json!({"op": "resume", "epoch": epoch, "since_seq": 1}))
        .await;
    assert_eq!(r, json!({"type": "reset", "reason": "history_gap"}));
    let r = c
        .request(json!({"op": "resume", "epoch": "not-the-epoch", "since_seq": 5}))
        .await;
    assert_eq!(r, json!({"type": "reset", "reason": "epoch_changed"}));
    let r = c
        .request(json!({"op": "resume", "epoch": epoch, "since_seq": 99, "id": 3}))
        .await;
    assert_eq!(
        r,
        json!({"type": "reset", "reason": "invalid_position", "id": 3})
    );
    // Still inside history: since 4 of 6 replays 5 and 6.
    let mut e = Ws::connect(&s).await;
    e.subscribe(json!(["*"])).await;
    e.send(json!({"op": "resume", "epoch": epoch, "since_seq": 4}))
        .await;
    assert_eq!(e.recv().await["seq"], 5);
    assert_eq!(e.recv().await["seq"], 6);
    assert_eq!(e.recv().await["type"], "resumed");
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays_usable() {
    let s = TestServer::start().await;
    let mut c = Ws::connect(&s).await;
    c.ws.send(Message::text("{not json")).await.unwrap();
    let e = c.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("invalid_json")),
        "{e}"
    );
    let e = c.request(json!({"op": "fly", "id": 9})).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("validation_failed"), Some(9)),
        "{e}"
    );
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(c.recv().await["type"], "error");
    let e = c
        .request(
            json!({"op": "subscribe", "patterns": [{"pattern": "(", "pattern_type": "regex"}]}),
        )
        .await;
    assert_eq!(e["code"], "invalid_pattern", "{e}");
    let e = c
        .request(json!({"op": "subscribe", "patterns": [""]}))
        .await;
    assert_eq!(e["code"], "validation_failed", "{e}");
    let e = c
        .request(json!({"op": "track", "keys": ["ok", "bad\u{1}"]}))
        .await;
    assert_eq!(e["code"], "validation_failed", "{e}");
    let e = c
        .request(json!({"op": "track", "keys": ["x".repeat(2000)]}))
        .await;
    assert_eq!(e["code"], "validation_failed", "{e}");
    let e = c.request(json!({"op": "resume", "epoch": 1})).await;
    assert_eq!(e["code"], "validation_failed", "{e}");
    let e = c.request(json!([1, 2])).await;
    assert_eq!(e["type"], "error");
    // Nothing of the refused frames took effect; the connection works.
    let r = c.request(json!({"op": "track", "keys": ["ok"]})).await;
    assert_eq!(r["count"], 1);
    c.ws.send(Message::Ping(vec![7u8].into())).await.unwrap();
    let pong = c.request(json!({"op": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

const TOKENS: &str = r#"
[[tokens]]
name = "admin"
token = "admin-secret"
scopes = ["invalidate", "subscribe", "audit:read", "metrics"]

[[tokens]]
name = "orders"
token = "orders-secret"
scopes = ["subscribe"]
prefixes = ["orders:"]
"#;

#[tokio::test]
async fn prefix_restricted_tokens_subscribe_track_and_receive_only_inside() {
    let s = TestServer::builder().config_toml(TOKENS).start().await;
    let mut r = Ws::connect_url(&format!("{}?token=orders-secret", s.ws_url())).await;
    let e = r
        .request(json!({"op": "subscribe", "patterns": ["users:*"]}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let e = r
        .request(json!({"op": "subscribe", "patterns": ["*:1"]}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let e = r.request(json!({"op": "track", "keys": ["users:1"]})).await;
    assert_eq!(e["code"], "forbidden", "{e}");
    r.subscribe(json!(["orders:*"])).await;
    let mut admin = Ws::connect_url(&format!("{}?token=admin-secret", s.ws_url())).await;
    admin.subscribe(json!(["*"])).await;

    let seq = post_keys(
        &s,
        &["users:1", "orders:7", "orders:8"],
        Some("admin-secret"),
    )
    .await;
    let e = r.recv().await;
    assert_eq!(
        (e["seq"].as_u64(), keys(&e)),
        (Some(seq), vec!["orders:7".to_string(), "orders:8".into()])
    );
    assert_eq!(keys(&admin.recv().await).len(), 3);
    post_keys(&s, &["users:2"], Some("admin-secret")).await;
    assert!(r.events_until_pong().await.is_empty());

    // No token, wrong token: refused before the upgrade.
    assert!(tokio_tungstenite::connect_async(s.ws_url()).await.is_err());
    assert!(
        tokio_tungstenite::connect_async(format!("{}?token=nope", s.ws_url()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn idle_connections_get_heartbeats_with_the_position() {
    let s = TestServer::builder()
        .config_toml("[ws]\nheartbeat_secs = 1\n")
        .start()
        .await;
    let mut c = Ws::connect(&s).await;
    let seq = post_keys(&s, &["quiet"], None).await;
    let msg = timeout(Duration::from_secs(5), c.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(v, json!({"type": "heartbeat", "seq": seq}));
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let mut s = TestServer::start().await;
    let mut c = Ws::connect(&s).await;
    let pid = s.pid();
    let waiter = tokio::spawn(async move {
        loop {
            match timeout(WAIT, c.ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pid > 0);
    let code = tokio::task::spawn_blocking(move || s.sigterm())
        .await
        .unwrap();
    assert_eq!(code, 0);
    // The server waits for connection tasks (`Hub::wait_closed`) before exiting, so every
    // connection gets its close frame: 1001 "going away", never a bare end of the socket.
    let close = waiter.await.unwrap();
    assert_eq!(close, Some(1001), "a close frame with 1001");
}

// ---- the client library against the real server ----

mod client_lib {
    use std::sync::Arc;
    use std::time::Duration;

    use invalidator_client::{CacheClient, ClientOptions, MapCache};

    use super::*;

    const T: Duration = Duration::from_secs(10);

    async fn filled(client: &CacheClient<MapCache<String>>, key: &str) {
        let token = client.begin_fill(key).await.unwrap();
        assert!(client.complete_fill(token, format!("v-{key}")));
        assert!(client.cache().contains(key));
    }

    #[tokio::test]
    async fn client_applies_events_and_resumes_after_reconnect() {
        let s = TestServer::start().await;
        let cache = Arc::new(MapCache::<String>::default());
        let opts = ClientOptions::new(s.ws_url()).subscribe("user:*", None);
        let client = CacheClient::connect(opts, cache.clone()).await.unwrap();
        for k in ["user:1", "user:2", "order:1", "order:2"] {
            filled(&client, k).await;
        }
        let seq = post_keys(&s, &["user:1"], None).await;
        assert!(client.wait_until(|st| st.seq >= seq, T).await);
        assert!(!cache.contains("user:1"));
        assert!(cache.contains("user:2"));

        // Offline: invalidations of a subscribed key and of a tracked key are missed...
        client.disconnect();
        assert!(client.wait_until(|st| !st.connected, T).await);
        post_keys(&s, &["order:1"], None).await;
        let last = post_keys(&s, &["user:2", "misc"], None).await;
        assert!(cache.contains("order:1") && cache.contains("user:2"));
        // ...and replayed by the resume after the reconnect.
        client.reconnect();
        assert!(
            client
                .wait_until(|st| st.sessions == 2 && st.connected && st.seq >= last, T)
                .await
        );
        assert!(!cache.contains("order:1"));
        assert!(!cache.contains("user:2"));
        assert!(cache.contains("order:2"));
        let st = client.status();
        assert_eq!((st.resets, st.replayed), (0, 2), "{st:?}");

        // A pattern invalidation reaches the tracked key and the subscription.
        let seq = post_pattern(&s, json!({"pattern": "order:*"})).await;
        assert!(client.wait_until(|st| st.seq >= seq, T).await);
        assert!(!cache.contains("order:2"));
    }

    #[tokio::test]
    async fn fill_guard_refuses_a_value_read_before_an_invalidation() {
        let s = TestServer::start().await;
        let cache = Arc::new(MapCache::<String>::default());
        let client = CacheClient::connect(ClientOptions::new(s.ws_url()), cache.clone())
            .await
            .unwrap();
        let token = client.begin_fill("acct:9").await.unwrap();
        // The value is read here; an update and its invalidation land before the store.
        let seq = post_keys(&s, &["acct:9"], None).await;
        assert!(client.wait_until(|st| st.seq >= seq, T).await);
        assert!(!client.complete_fill(token, "stale".into()));
        assert!(!cache.contains("acct:9"));
        // A fill with no invalidation in between is stored.
        filled(&client, "acct:9").await;
    }

    #[tokio::test]
    async fn client_clears_its_cache_on_a_history_gap() {
        let s = TestServer::builder()
            .config_toml("[ws]\nhistory_events = 2\n")
            .start()
            .await;
        let cache = Arc::new(MapCache::<String>::default());
        let opts = ClientOptions::new(s.ws_url()).subscribe("*", None);
        let client = CacheClient::connect(opts, cache.clone()).await.unwrap();
        filled(&client, "a").await;
        client.disconnect();
        assert!(client.wait_until(|st| !st.connected, T).await);
        for i in 0..5 {
            post_keys(&s, &[&format!("other:{i}")], None).await;
        }
        client.reconnect();
        assert!(
            client
                .wait_until(|st| st.resets == 1 && st.connected, T)
                .await
        );
        assert!(cache.is_empty());
    }
}

// ---- the load scenario, smoke-tested against the real server ----

#[allow(dead_code)]
#[path = "../load-tests"]
mod load {
    pub mod common;
    pub mod fanout;
}

#[tokio::test]
async fn fanout_load_scenario_runs() {
    let s = TestServer::start().await;
    let out = common::fresh_dir("fanout-load").join("r.json");
    let args = load::fanout::FanoutArgs {
        url: format!("http://{}", s.addr),
        publish_url: None,
        subscribers: 20,
        events: 50,
        rate: 0,
        publishers: 2,
        pattern: "fanout:*".into(),
        token: None,
        server_pid: Some(s.pid()),
        drain_secs: 10,
        json: Some(out.clone()),
    };
    load::fanout::run(args).await.unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["deliveries"], 1000, "{v}");
    assert_eq!(v["complete_events"], 50, "{v}");
}

/// The fan-out benchmark on a real server (release build recommended):
/// `FANOUT_SUBSCRIBERS=1000 FANOUT_EVENTS=2000 cargo nextest run --release --test ws
/// fanout_benchmark --run-ignored only --no-capture` (`FANOUT_RATE` for a fixed rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn fanout_benchmark() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let s = TestServer::start().await;
    let args = load::fanout::FanoutArgs {
        url: format!("http://{}", s.addr),
        publish_url: None,
        subscribers: env("FANOUT_SUBSCRIBERS", 1000) as usize,
        events: env("FANOUT_EVENTS", 2000),
        rate: env("FANOUT_RATE", 0),
        publishers: env("FANOUT_PUBLISHERS", 4) as usize,
        pattern: "fanout:*".into(),
        token: None,
        server_pid: Some(s.pid()),
        drain_secs: 60,
        json: None,
    };
    load::fanout::run(args).await.unwrap();
}

#[tokio::test]
async fn an_oversized_client_frame_closes_with_1009() {
    let s = TestServer::builder()
        .config_toml("[limits]\nmax_ws_frame_bytes = 1024\n")
        .start()
        .await;
    let mut c = Ws::connect(&s).await;
    let big = json!({"op": "track", "keys": ["k".repeat(4000)]});
    c.ws.send(Message::text(big.to_string())).await.unwrap();
    let mut code = None;
    while let Ok(Some(Ok(msg))) = timeout(WAIT, c.ws.next()).await {
        if let Message::Close(f) = msg {
            code = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1009));
    // The server is fine.
    let mut d = Ws::connect(&s).await;
    assert_eq!(d.request(json!({"op": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_disconnect_forgets_interests() {
    let s = TestServer::start().await;
    let mut c = Ws::connect(&s).await;
    c.subscribe(json!(["a:*", {"pattern": "b:1", "pattern_type": "exact"}]))
        .await;
    let r = c
        .request(json!({"op": "unsubscribe", "patterns": ["a:*"]}))
        .await;
    assert_eq!(
        r["patterns"],
        json!([{"pattern": "b:1", "pattern_type": "exact"}])
    );
    post_keys(&s, &["a:1"], None).await;
    assert!(c.events_until_pong().await.is_empty());
    c.request(json!({"op": "track", "keys": ["t"]})).await;
    drop(c);
    let mut m = Value::Null;
    for _ in 0..50 {
        m = s.get_json("/invalidate/metrics", None).await.1;
        if m["connections"]["active"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m["connections"]["active"], 0, "{m}");
    assert_eq!(m["index"]["subscriptions"], 0, "{m}");
    assert_eq!(m["index"]["tracked_keys"], 0, "{m}");
}

/// `audit.push_after_durable`: the write-ahead log thread pushes each event once it is
/// durable; events still arrive, in `seq` order, and the audit and metrics say so.
#[tokio::test]
async fn push_after_durable_delivers_in_order() {
    let s = TestServer::builder()
        .config_toml("[audit]\npush_after_durable = true\n")
        .start()
        .await;
    let mut ws = Ws::connect(&s).await;
    ws.subscribe(json!(["d:*"])).await;
    let posts: Vec<_> = (0..20)
        .map(|i| {
            let body = json!({"keys": [format!("d:{i}")], "triggered_by": "t"});
            let s = &s;
            async move {
                s.post_json("/invalidate/key", &body, None).await.1["seq"]
                    .as_u64()
                    .unwrap()
            }
        })
        .collect();
    let mut seqs = futures_util::future::join_all(posts).await;
    seqs.sort_unstable();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(ws.event().await["seq"].as_u64().unwrap());
    }
    assert_eq!(got, seqs, "every event, in seq order");
    let m = s.get_json("/invalidate/metrics", None).await.1;
    assert_eq!(m["audit"]["push_after_durable"], true);
    assert_eq!(m["audit"]["durability"], "fsync");
}

/// `?token=` is percent-decoded like every query parameter: a secret with `+`, `/` and `=`
/// sent as a browser's `encodeURIComponent` writes it authenticates.
#[tokio::test]
async fn query_token_is_percent_decoded() {
    let toml = "[[tokens]]\nname = \"web\"\ntoken = \"a+b/c=\"\nscopes = [\"subscribe\"]\n";
    let s = TestServer::builder().config_toml(toml).start().await;
    let mut ws = Ws::connect_url(&format!("{}?token=a%2Bb%2Fc%3D", s.ws_url())).await;
    assert_eq!(ws.hello["type"], "hello");
    ws.subscribe(json!(["x:*"])).await;
    let refused = tokio_tungstenite::connect_async(format!("{}?token=a%2Bb", s.ws_url())).await;
    assert!(refused.is_err(), "a wrong secret is still refused");
}
