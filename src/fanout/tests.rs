//! Hub tests against the real indexes and patterns: routing, one-shot tracking, prefix
//! restrictions, slow consumers and the resume cut.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::auth::Scope;
use crate::pattern::{PatternLimits, PatternType};

fn hub_with(ws: WsConfig) -> Arc<Hub> {
    let config = Config {
        ws,
        ..Config::default()
    };
    let cache = Arc::new(PatternCache::new(64, PatternLimits::default()));
    Hub::new(&config, "ep".into(), Arc::from("node-t"), cache, 0, true)
}

fn hub() -> Arc<Hub> {
    hub_with(WsConfig::default())
}

fn open() -> Arc<Principal> {
    Arc::new(Principal::open())
}

fn restricted(prefixes: &[&str]) -> Arc<Principal> {
    Arc::new(Principal {
        name: Some("r".into()),
        scopes: vec![Scope::Subscribe],
        prefixes: Some(prefixes.iter().map(|s| s.to_string()).collect()),
    })
}

fn pat(src: &str, kind: Option<PatternType>) -> Arc<Pattern> {
    Arc::new(Pattern::parse(src, kind, &PatternLimits::default()).unwrap())
}

fn key_inv(seq: u64, keys: &[&str]) -> Arc<Invalidation> {
    Arc::new(Invalidation {
        seq,
        request_id: format!("req-{seq}"),
        triggered_by: "test".into(),
        token_name: None,
        published_at_us: 1_736_937_000_123_000,
        node_id: Arc::from("node-t"),
        target: Target::Keys(keys.iter().map(|s| s.to_string()).collect()),
        soft: false,
    })
}

fn pattern_inv(seq: u64, src: &str) -> Arc<Invalidation> {
    Arc::new(Invalidation {
        seq,
        request_id: format!("req-{seq}"),
        triggered_by: "test".into(),
        token_name: None,
        published_at_us: 0,
        node_id: Arc::from("node-t"),
        target: Target::Pattern {
            pattern: pat(src, None),
            matched_keys: vec![],
            matched_count: 0,
        },
        soft: false,
    })
}

/// Every queued event of `conn` as JSON.
fn events(conn: &Conn) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(f) = conn.pop() {
        out.push(serde_json::from_slice(frame::payload(&f.bytes)).unwrap());
    }
    out
}

fn keys_of(v: &Value) -> Vec<String> {
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn key_event_carries_exactly_the_matching_keys_in_request_order() {
    let hub = hub();
    let a = hub.register(open()).unwrap();
    let b = hub.register(open()).unwrap();
    hub.subscribe(&a, pat("user:*", None));
    hub.subscribe(&b, pat("*:profile", None));
    hub.track(&b, ["order:9"]);
    let d = hub.publish(key_inv(1, &["order:9", "user:1:profile", "user:2", "misc"]));
    assert_eq!((d.delivered, d.dropped), (2, 0));
    let ea = events(&a);
    assert_eq!(ea.len(), 1);
    assert_eq!(keys_of(&ea[0]), vec!["user:1:profile", "user:2"]);
    let eb = events(&b);
    assert_eq!(keys_of(&eb[0]), vec!["order:9", "user:1:profile"]);
    assert_eq!(eb[0]["seq"], 1);
    assert_eq!(eb[0]["epoch"], "ep");
    assert_eq!(eb[0]["request_id"], "req-1");
    assert_eq!(eb[0]["published_at"], "2025-01-15T10:30:00.123Z");
    assert_eq!(eb[0]["pattern"], Value::Null);
    assert_eq!(eb[0]["pattern_type"], Value::Null);
    assert_eq!(hub.current_seq(), 1);
}

#[test]
fn tracking_is_one_shot() {
    let hub = hub();
    let a = hub.register(open()).unwrap();
    assert_eq!(hub.track(&a, ["k1", "k2"]), 2);
    hub.publish(key_inv(1, &["k1"]));
    assert_eq!(events(&a).len(), 1);
    assert_eq!(hub.tracked_count(&a), 1);
    hub.publish(key_inv(2, &["k1"]));
    assert!(events(&a).is_empty());
    assert_eq!(hub.track(&a, ["k1"]), 2);
    hub.publish(key_inv(3, &["k1", "k2"]));
    assert_eq!(keys_of(&events(&a)[0]), vec!["k1", "k2"]);
    assert_eq!(hub.tracked_count(&a), 0);
    assert_eq!(hub.stats().tracked_keys, 0);
}

#[test]
fn pattern_event_tracked_keys_in_byte_order_and_subscribers_get_empty_keys() {
    let hub = hub();
    let tracker = hub.register(open()).unwrap();
    let subscriber = hub.register(open()).unwrap();
    let disjoint = hub.register(open()).unwrap();
    hub.track(&tracker, ["user:1:b", "user:1:a", "user:2:a"]);
    hub.subscribe(&subscriber, pat("user:*", None));
    hub.subscribe(&disjoint, pat("order:*", None));
    let d = hub.publish(pattern_inv(1, "user:1:*"));
    assert_eq!(d.delivered, 2);
    let et = events(&tracker);
    assert_eq!(keys_of(&et[0]), vec!["user:1:a", "user:1:b"]);
    assert_eq!(et[0]["pattern"], "user:1:*");
    assert_eq!(et[0]["pattern_type"], "prefix");
    assert_eq!(keys_of(&events(&subscriber)[0]), Vec::<String>::new());
    assert!(events(&disjoint).is_empty());
    // One-shot: the tracked keys are gone, the unmatched one stays.
    assert_eq!(hub.tracked_count(&tracker), 1);
}

#[test]
fn restricted_principal_receives_only_keys_inside_its_prefixes() {
    let hub = hub();
    let r = hub.register(restricted(&["orders:"])).unwrap();
    hub.subscribe(&r, pat("orders:*", None));
    hub.track(&r, ["orders:1"]);
    hub.publish(key_inv(1, &["users:1", "orders:2", "orders:1"]));
    assert_eq!(keys_of(&events(&r)[0]), vec!["orders:2", "orders:1"]);
    hub.publish(key_inv(2, &["users:1"]));
    assert!(events(&r).is_empty());
}

#[test]
fn slow_consumer_is_marked_and_counted_others_keep_receiving() {
    let hub = hub_with(WsConfig {
        queue_events: 2,
        ..WsConfig::default()
    });
    let slow = hub.register(open()).unwrap();
    let fast = hub.register(open()).unwrap();
    hub.subscribe(&slow, pat("*", None));
    hub.subscribe(&fast, pat("*", None));
    for seq in 1..=3 {
        let d = hub.publish(key_inv(seq, &["k"]));
        events(&fast);
        if seq == 3 {
            assert_eq!((d.delivered, d.dropped), (1, 1));
        }
    }
    assert_eq!(slow.close_reason(), Some(CloseReason::SlowConsumer));
    let d = hub.publish(key_inv(4, &["k"]));
    assert_eq!((d.delivered, d.dropped), (1, 1));
    let s = hub.stats();
    assert_eq!(
        (s.slow_consumer_closes, s.events_dropped, s.events_delivered),
        (1, 2, 6)
    );
}

#[test]
fn subscribers_sharing_a_key_subset_share_one_frame() {
    let hub = hub();
    let conns: Vec<_> = (0..3).map(|_| hub.register(open()).unwrap()).collect();
    for c in &conns {
        hub.subscribe(c, pat("a:*", None));
    }
    hub.publish(key_inv(1, &["a:1", "b:1"]));
    let frames: Vec<Bytes> = conns.iter().map(|c| c.pop().unwrap().bytes).collect();
    assert!(frames.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()));
}

#[test]
fn resume_cut_returns_history_and_pending_and_resets() {
    let hub = hub();
    let a = hub.register(open()).unwrap();
    hub.subscribe(&a, pat("*", None));
    for seq in 1..=3 {
        hub.publish(key_inv(seq, &["k"]));
    }
    let cut = hub.resume_cut(&a, "ep", 1).unwrap();
    assert_eq!(cut.seq, 3);
    assert_eq!(
        cut.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(
        cut.pending.iter().map(|f| f.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // During the replay, overflow spills instead of closing; end_replay returns it in order.
    hub.publish(key_inv(4, &["k"]));
    assert_eq!(
        hub.end_replay(&a).iter().map(|f| f.seq).collect::<Vec<_>>(),
        vec![4]
    );
    assert_eq!(
        hub.resume_cut(&a, "other", 1).err(),
        Some(ResetReason::EpochChanged)
    );
    assert_eq!(
        hub.resume_cut(&a, "ep", 9).err(),
        Some(ResetReason::InvalidPosition)
    );
}

#[test]
fn unregister_forgets_interests_and_close_all_refuses_new_connections() {
    let hub = hub();
    let a = hub.register(open()).unwrap();
    hub.subscribe(&a, pat("*", None));
    hub.track(&a, ["x"]);
    hub.unregister(&a, 1);
    let s = hub.stats();
    assert_eq!(
        (s.connections_active, s.subscriptions, s.tracked_keys),
        (0, 0, 0)
    );
    assert_eq!(hub.publish(key_inv(1, &["x"])).delivered, 0);
    let b = hub.register(open()).unwrap();
    hub.close_all();
    assert_eq!(b.close_reason(), Some(CloseReason::Shutdown));
    assert!(hub.register(open()).is_none());
    assert_eq!(json!(s.connections_total), json!(1));
}

mod properties {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn key() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
            .prop_map(|segs| segs.join(":"))
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            key(),
            key().prop_map(|k| format!("{k}*")),
            key().prop_map(|k| format!("*{k}")),
            key().prop_map(|k| k.replacen('b', "?", 1)),
            key().prop_map(|k| format!("{}*", k.replacen('a', "?", 1))),
        ]
    }

    #[derive(Debug, Clone)]
    struct ConnSpec {
        patterns: Vec<String>,
        tracked: Vec<String>,
    }

    fn conn_spec() -> impl Strategy<Value = ConnSpec> {
        (
            proptest::collection::vec(pattern(), 0..3),
            proptest::collection::vec(key(), 0..3),
        )
            .prop_map(|(patterns, tracked)| ConnSpec { patterns, tracked })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The hub (real indexes) delivers exactly what a linear scan says: per connection,
        /// the matching or tracked keys in request order, each once; tracking is consumed.
        #[test]
        fn key_routing_matches_a_linear_scan(
            specs in proptest::collection::vec(conn_spec(), 1..5),
            raw_keys in proptest::collection::vec(key(), 1..6),
        ) {
            let hub = hub();
            let mut keys: Vec<String> = Vec::new();
            for k in raw_keys {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let conns: Vec<_> = specs.iter().map(|_| hub.register(open()).unwrap()).collect();
            let mut compiled = Vec::new();
            for (c, spec) in conns.iter().zip(&specs) {
                let ps: Vec<_> = spec.patterns.iter().map(|p| pat(p, None)).collect();
                for p in &ps {
                    hub.subscribe(c, p.clone());
                }
                hub.track(c, spec.tracked.iter().map(String::as_str));
                compiled.push(ps);
            }
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            hub.publish(key_inv(1, &refs));
            for ((c, spec), ps) in conns.iter().zip(&specs).zip(&compiled) {
                let want: Vec<String> = keys
                    .iter()
                    .filter(|k| spec.tracked.contains(k) || ps.iter().any(|p| p.is_match(k)))
                    .cloned()
                    .collect();
                let got = events(c);
                if want.is_empty() {
                    prop_assert!(got.is_empty(), "{:?}", got);
                } else {
                    prop_assert_eq!(got.len(), 1);
                    prop_assert_eq!(keys_of(&got[0]), want);
                }
                let left: BTreeSet<&String> =
                    spec.tracked.iter().filter(|k| !keys.contains(k)).collect();
                prop_assert_eq!(hub.tracked_count(c), left.len());
            }
        }
    }
}
