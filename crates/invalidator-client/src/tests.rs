//! Unit tests of the client without a socket: frames are fed to the frame handler
//! ([`engine::handle_frame`]) and the fake connection task answers the API's commands.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::*;
use engine::Conn;

type Client = CacheClient<BoundedCache<String>>;

/// What the fake connection task received.
#[derive(Default)]
struct Sent {
    tracks: parking_lot::Mutex<Vec<(Vec<String>, Vec<String>)>>,
}

impl<C: LocalCache> CacheClient<C> {
    /// A client with no connection task: commands go to the returned receiver.
    fn detached(
        opts: ClientOptions,
        cache: Arc<C>,
    ) -> (
        Self,
        mpsc::UnboundedReceiver<Command>,
        mpsc::UnboundedReceiver<String>,
    ) {
        let shared = Arc::new(Shared::new(opts, cache));
        let (evict_tx, evictions) = mpsc::unbounded_channel();
        shared
            .cache
            .set_eviction_listener(Arc::new(move |key: &str| {
                let _ = evict_tx.send(key.to_string());
            }));
        let (commands, rx) = mpsc::unbounded_channel();
        let status = shared.status.subscribe();
        (
            CacheClient {
                handle: Handle { shared, commands },
                status,
            },
            rx,
            evictions,
        )
    }

    fn shared(&self) -> &Shared<C> {
        &self.handle.shared
    }
}

/// A client whose fake connection task confirms every `track`/`untrack`.
fn client_with(opts: ClientOptions, cache: BoundedCache<String>) -> (Client, Arc<Sent>) {
    let (client, mut rx, _evictions) = CacheClient::detached(opts, Arc::new(cache));
    let sent = Arc::new(Sent::default());
    let log = sent.clone();
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Track { keys, tags, reply } => {
                    log.tracks.lock().push((keys, tags));
                    let _ = reply.send(Ok(1));
                }
                Command::Untrack { reply, .. } => {
                    let _ = reply.send(Ok(0));
                }
                _ => {}
            }
        }
    });
    (client, sent)
}

fn client() -> (Client, Arc<Sent>) {
    client_with(opts(), BoundedCache::new(1000))
}

fn opts() -> ClientOptions {
    ClientOptions::new("ws://unused")
}

fn hello(epoch: &str, seq: u64) -> Conn {
    Conn::new(&json!({"type": "hello", "protocol": 1, "node_id": "n", "epoch": epoch, "seq": seq}))
}

/// A live session at (e1, 10).
fn session(c: &Client) -> Conn {
    let mut conn = hello("e1", 10);
    engine::start(c.shared(), &mut conn);
    conn.outbox.clear();
    conn
}

fn feed(c: &Client, conn: &mut Conn, frame: Value) {
    engine::handle_frame(c.shared(), conn, &frame);
}

fn event(seq: u64, extra: Value) -> Value {
    let mut v = json!({
        "type": "invalidate", "seq": seq, "epoch": "e1", "request_id": format!("r{seq}"),
        "triggered_by": "t", "published_at": "2025-01-01T00:00:00.000Z",
        "keys": [], "pattern": null, "pattern_type": null, "tags": null, "soft": false,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

async fn fill(c: &Client, key: &str, tags: &[&str]) {
    let t = c.begin_fill_tagged(key, tags).await.unwrap();
    assert!(c.complete_fill(t, format!("v-{key}")));
}

fn has(c: &Client, key: &str) -> bool {
    c.cache().contains(key)
}

// ---- keys, patterns, position ----

#[tokio::test]
async fn key_event_drops_keys_voids_fills_and_ends_tracking() {
    let (c, _) = client();
    let mut conn = session(&c);
    let mut events = c.events();
    fill(&c, "a", &[]).await;
    fill(&c, "b", &[]).await;
    let token = c.begin_fill("a").await.unwrap();
    feed(&c, &mut conn, event(11, json!({"keys": ["a"]})));
    assert!(!has(&c, "a") && has(&c, "b"));
    assert!(
        !c.complete_fill(token, "stale".into()),
        "the fill was voided"
    );
    assert!(c.tags_of("a").is_none(), "one-shot: no longer held");
    assert!(c.tags_of("b").is_some());
    let st = c.status();
    assert_eq!((st.seq, st.events), (11, 1));
    let ClientEvent::Invalidated(inv) = events.recv().await.unwrap() else {
        panic!("an invalidation")
    };
    assert_eq!(inv.keys, ["a"]);
    assert_eq!(inv.request_id.as_deref(), Some("r11"));
    assert!(!inv.soft && !inv.replayed && !inv.cleared);
    assert!(conn.outbox.is_empty(), "a hard event sends nothing");
}

#[tokio::test]
async fn pattern_event_drops_every_matching_cached_key() {
    let (c, _) = client();
    let mut conn = session(&c);
    for k in ["user:1", "user:2", "order:1"] {
        fill(&c, k, &[]).await;
    }
    // Cached without the server knowing (e.g. tracked by another process): still dropped.
    c.cache().insert("user:3", "x".into());
    let t = c.begin_fill("user:9").await.unwrap();
    feed(
        &c,
        &mut conn,
        event(
            12,
            json!({"keys": ["user:1"], "pattern": "user:*", "pattern_type": "prefix"}),
        ),
    );
    for k in ["user:1", "user:2", "user:3"] {
        assert!(!has(&c, k), "{k}");
        assert!(c.tags_of(k).is_none(), "{k} still held");
    }
    assert!(has(&c, "order:1"));
    assert!(!c.complete_fill(t, "x".into()), "a matching fill is voided");
}

#[tokio::test]
async fn event_patterns_are_parsed_with_their_explicit_type() {
    let (c, _) = client();
    let mut conn = session(&c);
    fill(&c, "user:*", &[]).await;
    fill(&c, "user:1", &[]).await;
    // The escaped exact key `user:\*` arrives in canonical form.
    feed(
        &c,
        &mut conn,
        event(11, json!({"pattern": "user:*", "pattern_type": "exact"})),
    );
    assert!(!has(&c, "user:*"));
    assert!(has(&c, "user:1"), "an exact pattern is not a prefix");
    // An explicit prefix without its `*`: the text itself is the prefix.
    fill(&c, "user:10", &[]).await;
    fill(&c, "users", &[]).await;
    feed(
        &c,
        &mut conn,
        event(12, json!({"pattern": "user:1", "pattern_type": "prefix"})),
    );
    assert!(!has(&c, "user:1") && !has(&c, "user:10"));
    assert!(has(&c, "users"));
}

#[tokio::test]
async fn an_uncompilable_pattern_clears_everything() {
    let (c, _) = client();
    let mut conn = session(&c);
    fill(&c, "a", &[]).await;
    let t = c.begin_fill("b").await.unwrap();
    let mut events = c.events();
    feed(
        &c,
        &mut conn,
        event(11, json!({"pattern": "(", "pattern_type": "regex"})),
    );
    assert!(c.cache().is_empty());
    assert!(!c.complete_fill(t, "x".into()));
    let ClientEvent::Invalidated(inv) = events.recv().await.unwrap() else {
        panic!()
    };
    assert!(inv.cleared);
    // An unknown type is not guessed at either.
    fill(&c, "a", &[]).await;
    feed(
        &c,
        &mut conn,
        event(12, json!({"pattern": "a", "pattern_type": "fuzzy"})),
    );
    assert!(c.cache().is_empty());
}

#[tokio::test]
async fn position_holds_during_a_resume_and_moves_after() {
    let (c, _) = client();
    let mut conn = session(&c);
    feed(&c, &mut conn, json!({"type": "heartbeat", "seq": 20}));
    assert_eq!(c.status().seq, 20);
    // Reconnect: the next session resumes from 20.
    let mut conn = hello("e1", 30);
    engine::start(c.shared(), &mut conn);
    assert_eq!(
        conn.outbox.last().unwrap(),
        &json!({"op": "resume", "epoch": "e1", "since_seq": 20})
    );
    assert!(c.status().resuming);
    fill(&c, "k", &[]).await;
    feed(&c, &mut conn, event(25, json!({"keys": ["k"]})));
    feed(&c, &mut conn, json!({"type": "pong", "seq": 30}));
    assert!(!has(&c, "k"), "replayed events are applied...");
    assert_eq!(
        c.status().seq,
        20,
        "...but the position waits for `resumed`"
    );
    feed(
        &c,
        &mut conn,
        json!({"type": "resumed", "replayed": 1, "seq": 30}),
    );
    let st = c.status();
    assert_eq!((st.seq, st.replayed, st.resuming), (30, 1, false));
    // Positions never go back.
    feed(&c, &mut conn, json!({"type": "heartbeat", "seq": 3}));
    assert_eq!(c.status().seq, 30);
}

#[tokio::test]
async fn reset_clears_cache_fills_and_held_keys() {
    let (c, _) = client();
    let mut conn = session(&c);
    fill(&c, "a", &["t"]).await;
    let t = c.begin_fill("b").await.unwrap();
    feed(&c, &mut conn, json!({"type": "heartbeat", "seq": 15}));
    let mut conn = hello("e2", 3);
    engine::start(c.shared(), &mut conn);
    let mut events = c.events();
    feed(
        &c,
        &mut conn,
        json!({"type": "reset", "reason": "epoch_changed"}),
    );
    assert!(c.cache().is_empty());
    assert!(!c.complete_fill(t, "x".into()));
    assert!(c.tags_of("a").is_none());
    let st = c.status();
    assert_eq!(
        (st.epoch.as_deref(), st.seq, st.resets, st.resuming),
        (Some("e2"), 3, 1, false)
    );
    assert_eq!(
        events.recv().await.unwrap(),
        ClientEvent::Reset {
            reason: "epoch_changed".into()
        }
    );
    // After the reset nothing is re-tracked.
    let mut next = hello("e2", 3);
    engine::start(c.shared(), &mut next);
    assert!(next.outbox.iter().all(|f| f["op"] != "track"));
}

#[tokio::test]
async fn replies_answer_their_requests() {
    let (c, _) = client();
    let mut conn = session(&c);
    let (tx, rx) = oneshot::channel();
    conn.request(json!({"op": "track", "keys": ["x"]}), tx);
    assert_eq!(conn.outbox[0]["id"], 1);
    let (tx2, rx2) = oneshot::channel();
    conn.request(json!({"op": "track", "keys": ["y"]}), tx2);
    feed(
        &c,
        &mut conn,
        json!({"type": "error", "id": 2, "code": "forbidden", "message": "no"}),
    );
    feed(
        &c,
        &mut conn,
        json!({"type": "tracked", "id": 1, "count": 7}),
    );
    assert_eq!(rx.await.unwrap().unwrap(), 7);
    assert!(matches!(
        rx2.await.unwrap(),
        Err(ClientError::Server { code, .. }) if code == "forbidden"
    ));
}

// ---- tags ----

#[tokio::test]
async fn track_sends_tags_and_the_client_remembers_them() {
    let (c, sent) = client();
    c.track_tagged(&["p:1", "p:2"], &["product:1", "catalog"])
        .await
        .unwrap();
    fill(&c, "p:3", &["catalog"]).await;
    c.track(&["u:1"]).await.unwrap();
    c.track_tagged(&["p:1"], &["sale"]).await.unwrap();
    assert_eq!(
        c.tags_of("p:1").unwrap(),
        ["catalog", "product:1", "sale"],
        "tags add up"
    );
    assert_eq!(c.tags_of("u:1").unwrap(), Vec::<String>::new());
    let tracks = sent.tracks.lock().clone();
    assert_eq!(
        tracks[0],
        (
            vec!["p:1".to_string(), "p:2".into()],
            vec!["product:1".to_string(), "catalog".into()]
        )
    );
    assert_eq!(tracks[1], (vec!["p:3".to_string()], vec!["catalog".into()]));
    // The frames the session sends.
    let frame = held::track_frame(&["p:1"], ["product:1"], Some(4));
    assert_eq!(
        frame,
        json!({"op": "track", "keys": ["p:1"], "tags": ["product:1"], "id": 4})
    );
    assert_eq!(
        held::track_frame(&["u:1"], [] as [&str; 0], None),
        json!({"op": "track", "keys": ["u:1"]})
    );
}

#[tokio::test]
async fn reconnect_re_tracks_held_keys_with_their_tags() {
    let (c, _) = client_with(opts().subscribe("user:*", None), BoundedCache::new(100));
    let _conn = session(&c);
    fill(&c, "p:1", &["catalog"]).await;
    fill(&c, "p:2", &["catalog"]).await;
    fill(&c, "p:3", &["catalog", "product:3"]).await;
    fill(&c, "u:1", &[]).await;
    let mut conn = hello("e1", 10);
    engine::start(c.shared(), &mut conn);
    assert_eq!(
        conn.outbox,
        vec![
            json!({"op": "subscribe", "patterns": [{"pattern": "user:*", "pattern_type": null}]}),
            json!({"op": "track", "keys": ["u:1"]}),
            json!({"op": "track", "keys": ["p:1", "p:2"], "tags": ["catalog"]}),
            json!({"op": "track", "keys": ["p:3"], "tags": ["catalog", "product:3"]}),
            json!({"op": "resume", "epoch": "e1", "since_seq": 10}),
        ]
    );
}

#[tokio::test]
async fn tag_event_drops_its_keys_and_every_held_key_with_its_tags() {
    let (c, _) = client();
    let mut conn = session(&c);
    fill(&c, "p:1", &["product:1", "catalog"]).await;
    fill(&c, "p:2", &["product:2", "catalog"]).await;
    fill(&c, "p:3", &["product:3"]).await;
    fill(&c, "list:home", &["home"]).await;
    fill(&c, "other", &[]).await;
    let filling = c.begin_fill_tagged("p:4", &["product:2"]).await.unwrap();
    let mut events = c.events();
    // The server lists the tracked keys it found (here only one: the client holds more).
    feed(
        &c,
        &mut conn,
        event(
            11,
            json!({"keys": ["list:home"], "tags": ["product:2", "home"]}),
        ),
    );
    assert!(!has(&c, "list:home"), "the event's keys");
    assert!(!has(&c, "p:2"), "a held key carrying product:2");
    assert!(
        !c.complete_fill(filling, "x".into()),
        "a fill with product:2"
    );
    for k in ["p:1", "p:3", "other"] {
        assert!(has(&c, k), "{k} carries none of the tags");
    }
    assert!(c.tags_of("p:2").is_none() && c.tags_of("p:4").is_none());
    assert_eq!(c.tags_of("p:1").unwrap(), ["catalog", "product:1"]);
    let ClientEvent::Invalidated(inv) = events.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(inv.keys, ["list:home", "p:2", "p:4"]);
    assert_eq!(inv.tags, ["product:2", "home"]);
    // A later tag event for catalog finds p:1 (p:2 is gone already).
    feed(
        &c,
        &mut conn,
        event(12, json!({"keys": [], "tags": ["catalog"]})),
    );
    assert!(!has(&c, "p:1"));
    assert!(has(&c, "p:3") && has(&c, "other"));
    // The client re-tracks only what it still holds.
    let mut next = hello("e1", 12);
    engine::start(c.shared(), &mut next);
    let tracked: Vec<&Value> = next.outbox.iter().filter(|f| f["op"] == "track").collect();
    assert_eq!(
        tracked,
        [
            &json!({"op": "track", "keys": ["other"]}),
            &json!({"op": "track", "keys": ["p:3"], "tags": ["product:3"]}),
        ]
    );
}

// ---- soft invalidation ----

#[tokio::test]
async fn soft_event_marks_stale_and_re_tracks() {
    let (c, _) = client();
    let mut conn = session(&c);
    fill(&c, "a", &["t1"]).await;
    fill(&c, "b", &[]).await;
    let t = c.begin_fill("a").await.unwrap();
    let mut events = c.events();
    feed(
        &c,
        &mut conn,
        event(11, json!({"keys": ["a"], "soft": true})),
    );
    let e = c.get_entry("a").unwrap();
    assert!(e.is_stale(), "kept, marked stale");
    assert_eq!(
        c.get("a").as_deref(),
        Some("v-a"),
        "served within max staleness"
    );
    assert!(!c.get_entry("b").unwrap().is_stale());
    assert!(
        !c.complete_fill(t, "x".into()),
        "soft events void fills too"
    );
    assert_eq!(c.tags_of("a").unwrap(), ["t1"], "still held, with its tags");
    assert_eq!(
        conn.outbox,
        vec![json!({"op": "track", "keys": ["a"], "tags": ["t1"]})],
        "tracked again: the server ended the one-shot tracking"
    );
    let ClientEvent::Invalidated(inv) = events.recv().await.unwrap() else {
        panic!()
    };
    assert!(inv.soft);
    // A second soft event keeps the first mark; a hard one drops.
    let first = e.stale_since;
    conn.outbox.clear();
    feed(
        &c,
        &mut conn,
        event(12, json!({"keys": ["a"], "soft": true})),
    );
    assert_eq!(c.get_entry("a").unwrap().stale_since, first);
    feed(
        &c,
        &mut conn,
        event(13, json!({"keys": ["a"], "soft": false})),
    );
    assert!(!has(&c, "a"));
}

#[tokio::test]
async fn soft_pattern_and_tag_events_mark_every_covered_entry() {
    let (c, _) = client();
    let mut conn = session(&c);
    fill(&c, "user:1", &[]).await;
    fill(&c, "user:2", &[]).await;
    fill(&c, "p:1", &["catalog"]).await;
    fill(&c, "order:1", &[]).await;
    feed(
        &c,
        &mut conn,
        event(
            11,
            json!({"keys": ["user:1"], "pattern": "user:*", "pattern_type": "prefix", "soft": true}),
        ),
    );
    feed(
        &c,
        &mut conn,
        event(12, json!({"keys": [], "tags": ["catalog"], "soft": true})),
    );
    for k in ["user:1", "user:2", "p:1"] {
        assert!(c.get_entry(k).unwrap().is_stale(), "{k}");
        assert!(c.tags_of(k).is_some(), "{k} still held");
    }
    assert!(!c.get_entry("order:1").unwrap().is_stale());
    assert_eq!(
        conn.outbox,
        vec![
            json!({"op": "track", "keys": ["user:1"]}),
            json!({"op": "track", "keys": ["p:1"], "tags": ["catalog"]}),
        ]
    );
}

#[tokio::test]
async fn without_max_staleness_soft_events_drop() {
    let (c, _) = client_with(opts().max_staleness(Duration::ZERO), BoundedCache::new(100));
    let mut conn = session(&c);
    fill(&c, "a", &[]).await;
    feed(
        &c,
        &mut conn,
        event(11, json!({"keys": ["a"], "soft": true})),
    );
    assert!(!has(&c, "a"));
    assert!(c.tags_of("a").is_none());
}

#[test]
fn staleness_limit() {
    let t0 = Instant::now();
    let max = Duration::from_secs(30);
    let entry = |stale: Option<Instant>| {
        Some(Cached {
            value: 1,
            stale_since: stale,
        })
    };
    assert!(matches!(classify(entry(None), t0, max), Read::Fresh(1)));
    assert!(matches!(
        classify(entry(Some(t0)), t0 + max, max),
        Read::Stale(1)
    ));
    assert!(matches!(
        classify(entry(Some(t0)), t0 + max + Duration::from_millis(1), max),
        Read::Miss
    ));
    assert!(matches!(classify::<i32>(None, t0, max), Read::Miss));
}

#[tokio::test]
async fn stale_entries_expire_after_max_staleness() {
    let (c, _) = client_with(
        opts().max_staleness(Duration::from_millis(300)),
        BoundedCache::new(100),
    );
    let mut conn = session(&c);
    fill(&c, "a", &[]).await;
    feed(
        &c,
        &mut conn,
        event(11, json!({"keys": ["a"], "soft": true})),
    );
    assert!(c.get("a").is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(c.get("a").is_none(), "past max staleness it is a miss");
    assert!(c.get_entry("a").is_some(), "the raw entry is still there");
}

// ---- get_or_fill ----

/// A loader that counts its calls and takes `delay`.
fn loader(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
) -> impl FnOnce(String) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
+ Send
+ 'static {
    let calls = calls.clone();
    move |key: String| {
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(delay).await;
            Ok(format!("{key}#{n}"))
        })
    }
}

#[tokio::test]
async fn concurrent_misses_share_one_load() {
    let (c, _) = client();
    let c = Arc::new(c);
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            let l = loader(&calls, Duration::from_millis(50));
            tokio::spawn(async move { c.get_or_fill("k", l).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "k#1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.get("k").as_deref(), Some("k#1"));
    // A hit loads nothing.
    let l = loader(&calls, Duration::ZERO);
    assert_eq!(c.get_or_fill("k", l).await.unwrap(), "k#1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stale_entry_is_served_while_exactly_one_refetch_runs() {
    let (c, _) = client();
    let c = Arc::new(c);
    let mut conn = session(&c);
    let calls = Arc::new(AtomicUsize::new(0));
    let l = loader(&calls, Duration::ZERO);
    assert_eq!(c.get_or_fill("k", l).await.unwrap(), "k#1");
    feed(
        &c,
        &mut conn,
        event(11, json!({"keys": ["k"], "soft": true})),
    );
    // Many readers: all get the stale value at once, one refetch starts.
    for _ in 0..20 {
        let l = loader(&calls, Duration::from_millis(300));
        let v = tokio::time::timeout(Duration::from_millis(250), c.get_or_fill("k", l))
            .await
            .expect("a stale hit does not wait for the refetch")
            .unwrap();
        assert_eq!(v, "k#1");
    }
    assert!(c.shared().flights.is_running("k"));
    tokio::time::sleep(Duration::from_millis(800)).await; // the refetch finishes
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one refetch");
    let e = c.get_entry("k").unwrap();
    assert_eq!((e.value.as_str(), e.is_stale()), ("k#2", false));
    assert!(!c.shared().flights.is_running("k"));
}

#[tokio::test]
async fn an_invalidation_during_a_load_keeps_the_value_out_of_the_cache() {
    let (c, _) = client();
    let c = Arc::new(c);
    let calls = Arc::new(AtomicUsize::new(0));
    let reader = {
        let c = c.clone();
        let l = loader(&calls, Duration::from_millis(300));
        tokio::spawn(async move { c.get_or_fill("k", l).await.unwrap() })
    };
    // Wait until the load runs (its fill is registered).
    while !c.shared().fills.contains("k") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut conn = session(&c);
    feed(&c, &mut conn, event(11, json!({"keys": ["k"]})));
    assert_eq!(
        reader.await.unwrap(),
        "k#1",
        "the caller still gets what it read"
    );
    assert!(!has(&c, "k"), "but it is not cached");
    let l = loader(&calls, Duration::ZERO);
    assert_eq!(c.get_or_fill("k", l).await.unwrap(), "k#2");
    assert!(has(&c, "k"));
}

#[tokio::test]
async fn a_failed_load_is_an_error_and_the_next_caller_loads_again() {
    let (c, _) = client();
    let r = c
        .get_or_fill("k", |_| async { Err::<String, _>("db down".to_string()) })
        .await;
    assert!(matches!(r, Err(FillError::Load(e)) if e == "db down"));
    assert!(!has(&c, "k"));
    assert!(!c.shared().flights.is_running("k"));
    let v = c
        .get_or_fill("k", |k| async move { Ok::<_, String>(format!("{k}!")) })
        .await
        .unwrap();
    assert_eq!(v, "k!");
}

#[tokio::test]
async fn get_or_fill_tagged_tracks_with_tags() {
    let (c, sent) = client();
    c.get_or_fill_tagged("p:1", &["catalog"], |k| async move { Ok::<_, String>(k) })
        .await
        .unwrap();
    assert_eq!(c.tags_of("p:1").unwrap(), ["catalog"]);
    assert_eq!(
        sent.tracks.lock()[0],
        (vec!["p:1".to_string()], vec!["catalog".to_string()])
    );
}

// ---- eviction ----

#[tokio::test]
async fn evicted_keys_are_forgotten_unless_filled_again() {
    let (c, mut rx, mut evictions) = CacheClient::detached(opts(), Arc::new(BoundedCache::new(16)));
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let Command::Track { reply, .. } = cmd {
                let _ = reply.send(Ok(1));
            }
        }
    });
    for i in 0..100 {
        let t = c.begin_fill(&format!("k{i}")).await.unwrap();
        assert!(c.complete_fill(t, i.to_string()));
    }
    let mut evicted = Vec::new();
    while let Ok(k) = evictions.try_recv() {
        evicted.push(k);
    }
    assert!(evicted.len() >= 84, "{} evicted", evicted.len());
    // One evicted key is being filled again: it stays held (and tracked).
    let again = evicted[0].clone();
    let _token = c.begin_fill(&again).await.unwrap();
    let mut untrack = 0;
    for k in &evicted {
        if engine::forget_evicted(c.shared(), k) {
            untrack += 1;
        }
    }
    assert_eq!(untrack, evicted.len() - 1);
    assert!(c.tags_of(&again).is_some());
    assert_eq!(
        c.shared().held.lock().len(),
        c.cache().len() + 1,
        "held = cached + the fill in progress"
    );
}
