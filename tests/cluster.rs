//! Cluster mode: three real nodes on the local NATS JetStream and the local PostgreSQL.
//! Each test isolates itself with its own stream, subject and database.

mod common;

use std::time::Duration;

use common::TestServer;
use common::ws::Ws;
use serde_json::{Value, json};
use sqlx::Connection;

const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// A fresh PostgreSQL database, dropped (with its connections) when the test ends.
struct TestDb {
    name: String,
}

impl TestDb {
    fn url(&self) -> String {
        format!("{PG}/{}", self.name)
    }
}

async fn admin(sql: String) {
    let mut c = sqlx::PgConnection::connect(&format!("{PG}/postgres"))
        .await
        .expect("postgres");
    sqlx::Executor::execute(&mut c, sqlx::AssertSqlSafe(sql))
        .await
        .expect("admin statement");
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(admin(sql));
            }
        })
        .join();
    }
}

async fn fresh_database() -> TestDb {
    let name = format!("inv_cluster_{:x}", fastrand::u64(..));
    admin(format!("CREATE DATABASE {name}")).await;
    TestDb { name }
}

fn cluster_toml(tag: &str, nats_port: u16) -> String {
    format!(
        "nats_url = \"nats://127.0.0.1:{nats_port}\"\n[cluster]\nstream = \"T_{tag}\"\nsubject = \"test-{tag}\"\nmax_age_secs = 900\n"
    )
}

async fn node(db: &TestDb, toml: &str, id: &str) -> TestServer {
    TestServer::builder()
        .config_toml(toml)
        .arg("--database-url")
        .arg(db.url())
        .arg("--node-id")
        .arg(id)
        .start()
        .await
}

/// A unique tag for this test's stream and subject; the stream is deleted when it drops.
struct Tag(String);

impl std::ops::Deref for Tag {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let stream = format!("T_{}", self.0);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(c) = async_nats::connect("127.0.0.1:4222").await {
                        let _ = async_nats::jetstream::new(c).delete_stream(&stream).await;
                    }
                });
            }
        })
        .join();
    }
}

fn tag() -> Tag {
    Tag(format!("{:x}", fastrand::u64(..)))
}

async fn audit_rows(s: &TestServer, request_id: &str) -> Vec<Value> {
    for _ in 0..100 {
        let (_, v) = s
            .get_json(&format!("/audit/logs?request_id={request_id}"), None)
            .await;
        let logs = v["logs"].as_array().cloned().unwrap_or_default();
        if !logs.is_empty() {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vec::new()
}

#[tokio::test]
async fn post_to_a_reaches_b_and_c_in_one_order() {
    let db = fresh_database().await;
    let t = tag();
    let toml = cluster_toml(&t, 4222);
    let a = node(&db, &toml, "node-a").await;
    let b = node(&db, &toml, "node-b").await;
    let c = node(&db, &toml, "node-c").await;
    let mut subs = Vec::new();
    for n in [&a, &b, &c] {
        let mut ws = Ws::connect_url(&n.ws_url()).await;
        ws.subscribe(json!(["user:*"])).await;
        subs.push(ws);
    }
    assert_eq!(subs[0].hello["epoch"], subs[1].hello["epoch"]);
    assert_eq!(subs[1].hello["epoch"], subs[2].hello["epoch"]);
    assert_eq!(subs[1].hello["node_id"], "node-b");
    let mut seqs = Vec::new();
    for (i, n) in [&a, &b, &c, &a, &b].into_iter().enumerate() {
        let (st, v) = n
            .post_json(
                "/invalidate/key",
                &json!({"keys": [format!("user:{i}")], "triggered_by": "t"}),
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        seqs.push(v["seq"].as_u64().unwrap());
    }
    for ws in &mut subs {
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(ws.event().await["seq"].as_u64().unwrap());
        }
        assert_eq!(got, seqs, "every node delivers the same seq order");
    }
    let mut logs = Value::Null;
    for _ in 0..100 {
        logs = a.get_json("/audit/logs?limit=10", None).await.1;
        // Each node writes its own rows: wait until all five are visible to one page read and
        // to its count (read concurrently with the page, so it may lag by a commit).
        if logs["logs"].as_array().map_or(0, |l| l.len()) >= 5 && logs["total_count"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        logs["total_count"], 5,
        "one audit row per invalidation: {logs}"
    );
    let nodes: std::collections::HashSet<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["node_id"].as_str())
        .collect();
    assert!(
        nodes.contains("node-a") && nodes.contains("node-b") && nodes.contains("node-c"),
        "{nodes:?} {logs}"
    );
}

#[tokio::test]
async fn subscriber_moves_from_a_to_c_with_resume() {
    let db = fresh_database().await;
    let t = tag();
    let toml = cluster_toml(&t, 4222);
    let a = node(&db, &toml, "node-a").await;
    let c = node(&db, &toml, "node-c").await;
    let mut ws = Ws::connect_url(&a.ws_url()).await;
    ws.subscribe(json!(["order:*"])).await;
    a.post_json(
        "/invalidate/key",
        &json!({"keys": ["order:1"], "triggered_by": "t"}),
        None,
    )
    .await;
    let first = ws.event().await;
    let epoch = ws.hello["epoch"].clone();
    drop(ws);
    // Missed while moving: two matching, one not.
    for k in ["order:2", "user:9", "order:3"] {
        a.post_json(
            "/invalidate/key",
            &json!({"keys": [k], "triggered_by": "t"}),
            None,
        )
        .await;
    }
    let mut ws = Ws::connect_url(&c.ws_url()).await;
    ws.subscribe(json!(["order:*"])).await;
    ws.send(json!({"op": "resume", "epoch": epoch, "since_seq": first["seq"]}))
        .await;
    // Replayed events come before `resumed`; if C's consumer is still catching up, the rest
    // arrive live right after. Either way: each missed matching event exactly once, in order.
    let mut keys = Vec::new();
    let mut resumed = false;
    while let Some(v) = ws
        .recv_within(Duration::from_millis(if resumed { 500 } else { 10_000 }))
        .await
    {
        match v["type"].as_str() {
            // A lagging node may still deliver the already-seen event live: clients skip by seq.
            Some("invalidate") if v["seq"].as_u64() <= first["seq"].as_u64() => {}
            Some("invalidate") => keys.push(v["keys"][0].as_str().unwrap().to_string()),
            Some("resumed") => resumed = true,
            _ => panic!("unexpected {v}"),
        }
        if resumed && keys.len() == 2 {
            break;
        }
    }
    assert!(resumed);
    assert_eq!(keys, vec!["order:2", "order:3"]);
}

#[tokio::test]
async fn same_request_id_on_two_nodes_is_one_event_and_one_row() {
    let db = fresh_database().await;
    let t = tag();
    let toml = cluster_toml(&t, 4222);
    let a = node(&db, &toml, "node-a").await;
    let b = node(&db, &toml, "node-b").await;
    let mut ws = Ws::connect_url(&b.ws_url()).await;
    ws.subscribe(json!(["k:*"])).await;
    let rid = format!("dup-{t}");
    let body = json!({"keys": ["k:1"], "triggered_by": "t", "request_id": rid});
    let (_, first) = a.post_json("/invalidate/key", &body, None).await;
    let (st, second) = b.post_json("/invalidate/key", &body, None).await;
    assert_eq!(st, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["seq"], first["seq"]);
    let (st, _) = b
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["k:2"], "triggered_by": "t", "request_id": rid}),
            None,
        )
        .await;
    assert_eq!(st, 409);
    assert_eq!(ws.event().await["seq"], first["seq"]);
    assert!(
        ws.recv_within(Duration::from_millis(500)).await.is_none(),
        "one event only"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = audit_rows(&a, &rid).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["node_id"], "node-a");
}

/// A TCP proxy in front of NATS that the test can cut and restore.
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (o, cs) = (open.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                cs.lock().push(h.abort_handle());
            }
        });
        Proxy { port, open, conns }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn nats_outage_gives_503_then_recovers_without_loss() {
    let db = fresh_database().await;
    let t = tag();
    let proxy = Proxy::start("127.0.0.1:4222").await;
    let a = node(&db, &cluster_toml(&t, proxy.port), "node-a").await;
    let b = node(&db, &cluster_toml(&t, 4222), "node-b").await;
    let mut ws = Ws::connect_url(&b.ws_url()).await;
    ws.subscribe(json!(["n:*"])).await;
    let (st, _) = a
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["n:1"], "triggered_by": "t"}),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(ws.event().await["keys"], json!(["n:1"]));
    proxy.cut();
    let mut saw_503 = false;
    for _ in 0..50 {
        let (st, v) = a
            .post_json(
                "/invalidate/key",
                &json!({"keys": ["n:lost"], "triggered_by": "t"}),
                None,
            )
            .await;
        if st == 503 {
            assert_eq!(v["error"]["code"], "unavailable");
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_503, "POSTs must fail while NATS is unreachable");
    assert_eq!(a.get("/readyz", None).await.0, 503);
    proxy.restore();
    let mut recovered = false;
    for _ in 0..100 {
        if a.get("/readyz", None).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "node reconnects by itself");
    let (st, v) = a
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["n:2"], "triggered_by": "t"}),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // B delivers what A accepted after the outage. A POST whose ack was lost in the cut got
    // 503 ("outcome unknown") but may still have reached the stream: then it is delivered,
    // and it must be audited like any other.
    loop {
        let e = ws.event().await;
        if e["keys"] == json!(["n:2"]) {
            break;
        }
        assert_eq!(e["keys"], json!(["n:lost"]), "{e}");
        let rid = e["request_id"].as_str().unwrap();
        assert_eq!(
            audit_rows(&a, rid).await.len(),
            1,
            "a delivered event is audited"
        );
    }
}

/// Total rows matching `query` as seen through `s`'s audit API.
async fn audit_total(s: &TestServer, query: &str) -> u64 {
    let (_, v) = s
        .get_json(&format!("/audit/logs?limit=1&{query}"), None)
        .await;
    v["total_count"].as_u64().unwrap_or(0)
}

/// SPEC "Cluster mode": rows are written from the stream by a consumer every node shares, so
/// a node killed right after acknowledging its requests, and never restarted, loses none.
#[tokio::test]
async fn node_killed_after_acking_never_restarted_loses_no_rows() {
    let db = fresh_database().await;
    let t = tag();
    // A short ack wait: batches the dead node held come back quickly.
    let toml = format!("{}audit_ack_wait_secs = 2\n", cluster_toml(&t, 4222));
    let mut a = node(&db, &toml, "node-a").await;
    let b = node(&db, &toml, "node-b").await;
    let by = format!("burst-{t}");
    let mut tasks = Vec::new();
    for w in 0..10 {
        let url = a.url("");
        let by = by.clone();
        tasks.push(tokio::spawn(async move {
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let mut c = invalidator::http::client::HttpClient::connect(&addr)
                .await
                .expect("connect");
            let mut ok = 0u64;
            for i in 0..50 {
                let body = json!({"keys": [format!("b:{w}:{i}")], "triggered_by": by});
                let r = c
                    .post_json("/invalidate/key", body.to_string(), None)
                    .await
                    .expect("post");
                ok += u64::from(r.status == 200);
            }
            ok
        }));
    }
    let mut acked = 0;
    for task in tasks {
        acked += task.await.expect("task");
    }
    a.kill();
    assert_eq!(acked, 500);
    let query = format!("triggered_by={by}");
    let mut rows = 0;
    for _ in 0..600 {
        rows = audit_total(&b, &query).await;
        if rows >= acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows, acked,
        "every acknowledged invalidation of the dead node has its row"
    );
    let (_, v) = b
        .get_json(&format!("/audit/logs?limit=1&{query}"), None)
        .await;
    assert_eq!(
        v["logs"][0]["node_id"], "node-a",
        "node_id comes from the message"
    );
}

/// What crosses NATS means the same on every node: an escaped `\*` or `\?` is a literal
/// character on the receiving node too, and reaches clients in the canonical form.
#[tokio::test]
async fn escaped_wildcards_mean_the_same_on_every_node() {
    let db = fresh_database().await;
    let t = tag();
    let toml = cluster_toml(&t, 4222);
    let a = node(&db, &toml, "node-a").await;
    let b = node(&db, &toml, "node-b").await;
    let mut ws = Ws::connect_url(&b.ws_url()).await;
    let r = ws
        .request(json!({"op": "track", "keys": ["user:*", "what?", "user:x"]}))
        .await;
    assert_eq!(r["count"], 3, "{r}");
    let (st, v) = a
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": r"user:\*", "triggered_by": "t"}),
            None,
        )
        .await;
    assert_eq!(
        (st, v["pattern_type"].clone()),
        (200, json!("exact")),
        "{v}"
    );
    let ev = ws.event().await;
    assert_eq!(ev["keys"], json!(["user:*"]), "only the literal key: {ev}");
    assert_eq!(
        (ev["pattern"].clone(), ev["pattern_type"].clone()),
        (json!("user:*"), json!("exact"))
    );
    a.post_json(
        "/invalidate/pattern",
        &json!({"pattern": r"wh*\?", "triggered_by": "t"}),
        None,
    )
    .await;
    let ev = ws.event().await;
    assert_eq!(ev["keys"], json!(["what?"]), "{ev}");
    assert_eq!(
        (ev["pattern"].clone(), ev["pattern_type"].clone()),
        (json!(r"wh*\?"), json!("glob"))
    );
    assert!(
        ws.recv_within(Duration::from_millis(300)).await.is_none(),
        "user:x untouched"
    );
}

/// Publish `payload` on the test's subject directly (not through a node).
async fn raw_publish(t: &Tag, payload: &'static [u8]) -> u64 {
    let c = async_nats::connect("127.0.0.1:4222").await.expect("nats");
    let js = async_nats::jetstream::new(c);
    let ack = js
        .publish(format!("test-{t}"), payload.into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    ack.sequence
}

/// Events a node never delivered (removed from the stream, or undecodable) are a gap: a
/// resume from before them is a `reset`, never a replay that silently skips them.
#[tokio::test]
async fn stream_holes_are_gaps_not_silent_skips() {
    let db = fresh_database().await;
    let t = tag();
    let toml = cluster_toml(&t, 4222);
    let mut a = node(&db, &toml, "node-a").await;
    let mut seqs = Vec::new();
    for k in ["h:1", "h:2", "h:3"] {
        let (_, v) = a
            .post_json(
                "/invalidate/key",
                &json!({"keys": [k], "triggered_by": "t"}),
                None,
            )
            .await;
        seqs.push(v["seq"].as_u64().unwrap());
    }
    let epoch = Ws::connect_url(&a.ws_url()).await.hello["epoch"].clone();
    a.kill();
    // Remove the middle event, and append one no node can decode, then one good event.
    {
        let c = async_nats::connect("127.0.0.1:4222").await.expect("nats");
        let js = async_nats::jetstream::new(c);
        let stream = js.get_stream(format!("T_{t}")).await.expect("stream");
        stream.delete_message(seqs[1]).await.expect("delete");
    }
    let garbage = raw_publish(&t, b"not an event").await;
    // A fresh node refills its history from the stream: it meets both holes.
    let c = node(&db, &toml, "node-c").await;
    let (st, v) = c
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["h:4"], "triggered_by": "t"}),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let last = v["seq"].as_u64().unwrap();
    // Wait until the node has delivered everything (while its refill meets the holes it sends
    // `reset` to whoever is connected), then resume on fresh connections.
    for _ in 0..100 {
        if Ws::connect_url(&c.ws_url()).await.hello["seq"].as_u64() >= Some(last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resume = async |since: u64| {
        let mut ws = Ws::connect_url(&c.ws_url()).await;
        ws.subscribe(json!(["h:*"])).await;
        ws.request(json!({"op": "resume", "epoch": epoch, "since_seq": since}))
            .await
    };
    let r = resume(seqs[0]).await;
    assert_eq!(
        (r["type"].clone(), r["reason"].clone()),
        (json!("reset"), json!("history_gap")),
        "{r}"
    );
    let r = resume(garbage - 1).await;
    assert_eq!(
        (r["type"].clone(), r["reason"].clone()),
        (json!("reset"), json!("history_gap")),
        "{r}"
    );
    // After the last hole the history is whole again.
    let r = resume(garbage).await;
    assert_eq!(
        r["type"], "invalidate",
        "the event after the holes is replayed: {r}"
    );
    assert_eq!(r["keys"], json!(["h:4"]));
    // `since_seq: 0` on a node whose ring holds only part of the epoch is a reset too.
    let r = resume(0).await;
    assert_eq!(r["type"], "reset", "{r}");
}

/// A node (re)started on a stream longer than its history ring holds only the tail: a
/// `resume` from 0 cannot be answered from it (it would skip the events before the tail).
#[tokio::test]
async fn resume_from_zero_on_a_refilled_tail_is_a_reset() {
    let db = fresh_database().await;
    let t = tag();
    let toml = format!("{}[ws]\nhistory_events = 2\n", cluster_toml(&t, 4222));
    let a = node(&db, &toml, "node-a").await;
    let mut last = 0;
    for i in 0..5 {
        let (_, v) = a
            .post_json(
                "/invalidate/key",
                &json!({"keys": [format!("z:{i}")], "triggered_by": "t"}),
                None,
            )
            .await;
        last = v["seq"].as_u64().unwrap();
    }
    let b = node(&db, &toml, "node-b").await;
    let mut ws = Ws::connect_url(&b.ws_url()).await;
    for _ in 0..100 {
        if ws.hello["seq"].as_u64() >= Some(last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        ws = Ws::connect_url(&b.ws_url()).await;
    }
    ws.subscribe(json!(["z:*"])).await;
    let epoch = ws.hello["epoch"].clone();
    let r = ws
        .request(json!({"op": "resume", "epoch": epoch, "since_seq": 0}))
        .await;
    assert_eq!(
        (r["type"].clone(), r["reason"].clone()),
        (json!("reset"), json!("history_gap")),
        "{r}"
    );
    // A position inside the tail is answered from it.
    let r = ws
        .request(json!({"op": "resume", "epoch": epoch, "since_seq": last - 1}))
        .await;
    assert_eq!(
        (r["type"].clone(), r["keys"].clone()),
        (json!("invalidate"), json!(["z:4"])),
        "{r}"
    );
}
