//! The client against the real server binary (see `common` for how it is found).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use invalidator_client::{BoundedCache, CacheClient, ClientError, ClientEvent, ClientOptions};
use serde_json::json;

use common::Server;

const T: Duration = Duration::from_secs(10);

type Client = CacheClient<BoundedCache<String>>;

async fn connect(s: &Server, opts: impl FnOnce(ClientOptions) -> ClientOptions) -> Client {
    let opts = opts(ClientOptions::new(s.ws_url()));
    CacheClient::connect(opts, Arc::new(BoundedCache::new(1000)))
        .await
        .expect("connect")
}

async fn fill(c: &Client, key: &str) {
    let t = c.begin_fill(key).await.expect("begin_fill");
    assert!(c.complete_fill(t, format!("v-{key}")));
    assert!(c.cache().contains(key));
}

/// Blocking HTTP off the runtime.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_pattern_events_drop_keys() {
    let s = Arc::new(blocking(Server::start).await);
    let c = connect(&s, |o| o.subscribe("user:*", None)).await;
    for k in ["user:1", "user:2", "user:*", "order:1", "order:2", "misc"] {
        fill(&c, k).await;
    }
    let mut events = c.events();

    // A subscribed key.
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_keys(&["user:1"])).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.cache().contains("user:1"));
    assert!(c.cache().contains("user:2"));
    let ClientEvent::Invalidated(inv) = events.recv().await.unwrap() else {
        panic!("an invalidation")
    };
    assert_eq!(
        (inv.seq, inv.keys.as_slice()),
        (seq, &["user:1".to_string()][..])
    );

    // A key reaching us only because we track it.
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_keys(&["order:1"])).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.cache().contains("order:1"));
    assert!(c.tags_of("order:1").is_none(), "one-shot tracking ended");

    // The escaped exact key `user:\*` arrives in canonical form and drops only that key.
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_pattern("user:\\*")).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.cache().contains("user:*"));
    assert!(c.cache().contains("user:2"));

    // A pattern: the tracked key matches.
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_pattern("order:*")).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.cache().contains("order:2"));
    // A pattern through the subscription drops every matching local key.
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_pattern("user:*")).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.cache().contains("user:2"));
    assert!(c.cache().contains("misc"), "untouched");
    assert_eq!(c.status().resets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_guard_refuses_a_value_read_before_an_invalidation() {
    let s = Arc::new(blocking(Server::start).await);
    let c = connect(&s, |o| o).await;
    let token = c.begin_fill("acct:9").await.unwrap();
    // The value is read here; an update and its invalidation land before the store.
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_keys(&["acct:9"])).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.complete_fill(token, "stale".into()));
    assert!(!c.cache().contains("acct:9"));
    // A fill with no invalidation in between is stored, and the key is tracked again.
    fill(&c, "acct:9").await;
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_keys(&["acct:9"])).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.cache().contains("acct:9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_fill_loads_once_and_reloads_after_an_invalidation() {
    let s = Arc::new(blocking(Server::start).await);
    let c = connect(&s, |o| o).await;
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |loads: &Arc<AtomicUsize>| {
        let loads = loads.clone();
        move |k: String| async move {
            let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, String>(format!("{k}#{n}"))
        }
    };
    assert_eq!(c.get_or_fill("p:1", load(&loads)).await.unwrap(), "p:1#1");
    assert_eq!(c.get_or_fill("p:1", load(&loads)).await.unwrap(), "p:1#1");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let s2 = s.clone();
    let seq = blocking(move || s2.invalidate_keys(&["p:1"])).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert_eq!(c.get_or_fill("p:1", load(&loads)).await.unwrap(), "p:1#2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_what_was_missed_offline() {
    let s = Arc::new(blocking(Server::start).await);
    let c = connect(&s, |o| o.subscribe("user:*", None)).await;
    for k in ["user:1", "order:1", "order:2"] {
        fill(&c, k).await;
    }
    c.disconnect();
    assert!(c.wait_until(|st| !st.connected, T).await);
    let s2 = s.clone();
    let last = blocking(move || {
        s2.invalidate_keys(&["order:1"]);
        s2.invalidate_keys(&["user:1", "misc"])
    })
    .await;
    assert!(c.cache().contains("order:1") && c.cache().contains("user:1"));
    c.reconnect();
    assert!(
        c.wait_until(|st| st.sessions == 2 && st.connected && st.seq >= last, T)
            .await
    );
    assert!(!c.cache().contains("order:1") && !c.cache().contains("user:1"));
    assert!(c.cache().contains("order:2"));
    let st = c.status();
    assert_eq!((st.resets, st.replayed), (0, 2), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_sigkill_and_restart() {
    let s = Arc::new(parking_lot::Mutex::new(blocking(Server::start).await));
    let url = s.lock().ws_url();
    let opts = ClientOptions::new(url)
        .subscribe("user:*", None)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    let c = CacheClient::connect(opts, Arc::new(BoundedCache::<String>::new(1000)))
        .await
        .unwrap();
    fill(&c, "user:1").await;
    fill(&c, "order:1").await;
    let mut events = c.events();
    let epoch = c.status().epoch.clone();

    let s2 = s.clone();
    blocking(move || s2.lock().kill9()).await;
    assert!(c.wait_until(|st| !st.connected, T).await);
    // Reads keep working from the cache while the server is down.
    assert!(c.cache().contains("user:1"));
    tokio::time::sleep(Duration::from_millis(700)).await; // a few failed attempts
    let s2 = s.clone();
    blocking(move || s2.lock().restart()).await;
    assert!(
        c.wait_until(|st| st.sessions == 2 && st.connected && !st.resuming, T)
            .await,
        "{:?}",
        c.status()
    );
    let st = c.status();
    eprintln!(
        "after the restart: epoch {:?} -> {:?}, {st:?}",
        epoch, st.epoch
    );
    if st.epoch != epoch {
        // Single node, history not persisted: a new epoch, so a reset cleared the cache.
        assert_eq!(st.resets, 1, "{st:?}");
        assert!(c.cache().is_empty());
        // The event follows the status update: wait for it.
        let reset = tokio::time::timeout(T, async {
            loop {
                if let ClientEvent::Reset { reason } = events.recv().await.unwrap() {
                    return reason;
                }
            }
        })
        .await
        .expect("a reset event");
        assert_eq!(reset, "epoch_changed");
    } else {
        assert_eq!(st.resets, 0, "{st:?}");
    }
    // Still usable: fills, tracking and events work on the new server.
    fill(&c, "order:1").await;
    fill(&c, "user:2").await;
    let s2 = s.clone();
    let seq = blocking(move || s2.lock().invalidate_keys(&["order:1", "user:2"])).await;
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    assert!(!c.cache().contains("order:1") && !c.cache().contains("user:2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_keys_are_untracked_on_the_server() {
    let s = Arc::new(blocking(Server::start).await);
    let opts = ClientOptions::new(s.ws_url());
    let c = CacheClient::connect(opts, Arc::new(BoundedCache::<String>::new(16)))
        .await
        .unwrap();
    for i in 0..200 {
        let t = c.begin_fill(&format!("k:{i}")).await.unwrap();
        c.complete_fill(t, i.to_string());
    }
    assert!(c.cache().len() <= 16);
    // The untracks are fire-and-forget: a ping round trip later the server has them.
    let s2 = s.clone();
    let mut tracked = u64::MAX;
    for _ in 0..100 {
        let s2 = s2.clone();
        let m = blocking(move || s2.get_json("/invalidate/metrics")).await;
        tracked = m["index"]["tracked_keys"].as_u64().unwrap_or(u64::MAX);
        if tracked <= 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tracked <= 16, "server still tracks {tracked} keys");
    assert_eq!(tracked as usize, c.cache().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_soft_as_far_as_the_server_supports_them() {
    let s = Arc::new(blocking(Server::start).await);
    let c = connect(&s, |o| o).await;
    // `track` with tags is accepted (a server without tags ignores the field).
    assert!(c.track_tagged(&["p:1"], &["catalog"]).await.unwrap() >= 1);
    let t = c.begin_fill_tagged("p:2", &["catalog"]).await.unwrap();
    assert!(c.complete_fill(t, "v".into()));
    let s2 = s.clone();
    let (status, v) = blocking(move || {
        s2.post(
            "/invalidate/tag",
            &json!({"tags": ["catalog"], "triggered_by": "client-tests"}),
        )
    })
    .await;
    if status == 200 {
        let seq = v["seq"].as_u64().unwrap();
        assert!(c.wait_until(|st| st.seq >= seq, T).await);
        assert!(!c.cache().contains("p:2"), "a tag event drops tagged keys");
    } else {
        eprintln!("note: POST /invalidate/tag answered {status}: {v}");
        assert_eq!(status, 404, "{v}");
    }
    fill(&c, "s:1").await;
    let s2 = s.clone();
    let (status, v) = blocking(move || {
        s2.post(
            "/invalidate/key",
            &json!({"keys": ["s:1"], "triggered_by": "client-tests", "soft": true}),
        )
    })
    .await;
    assert_eq!(status, 200, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    assert!(c.wait_until(|st| st.seq >= seq, T).await);
    if v["soft"] == true {
        let e = c.get_entry("s:1").expect("a soft event keeps the entry");
        assert!(e.is_stale());
        assert!(c.get("s:1").is_some());
    } else {
        eprintln!("note: the server does not report soft yet: {v}");
        assert!(!c.cache().contains("s:1"), "an event without soft drops");
    }
}

#[tokio::test]
async fn connecting_to_nothing_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = ClientOptions::new(format!("ws://127.0.0.1:{port}/ws"));
    let r = CacheClient::connect(opts, Arc::new(BoundedCache::<String>::new(10))).await;
    assert!(matches!(r, Err(ClientError::Connect { .. })));
}
