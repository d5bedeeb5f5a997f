//! Property tests: the indexes against a naive reference (a list of (connection, pattern)
//! scanned with `is_match` / `may_overlap`, a map of tracked keys), with rebuilds interleaved.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::shape::{Shape, shape};
use super::{ConnId, SubscriptionIndex, TrackedIndex};
use crate::pattern::{Pattern, PatternLimits, PatternType};

fn pat(source: &str, explicit: Option<PatternType>) -> Arc<Pattern> {
    Arc::new(Pattern::parse(source, explicit, &PatternLimits::default()).unwrap())
}

fn sorted(mut v: Vec<ConnId>) -> Vec<ConnId> {
    v.sort_unstable();
    v.dedup();
    v
}

fn key_match(idx: &SubscriptionIndex, key: &str) -> Vec<ConnId> {
    let mut out = Vec::new();
    idx.match_key(key, &mut out);
    sorted(out)
}

fn pattern_match(idx: &SubscriptionIndex, p: &Pattern) -> Vec<ConnId> {
    let mut out = Vec::new();
    idx.match_pattern(p, &mut out);
    sorted(out)
}

// ---- Examples ---------------------------------------------------------------------------

#[test]
fn routes_each_class() {
    let idx = SubscriptionIndex::new();
    idx.subscribe(1, pat("user:1", None));
    idx.subscribe(2, pat("user:*", None));
    idx.subscribe(3, pat("*:profile", None));
    idx.subscribe(4, pat("user:*:profile", None));
    idx.subscribe(5, pat("user:[0-9]+", Some(PatternType::Regex)));
    idx.subscribe(6, pat("*", None));
    assert_eq!(idx.len(), 6);
    assert_eq!(key_match(&idx, "user:1"), vec![1, 2, 5, 6]);
    assert_eq!(key_match(&idx, "user:1:profile"), vec![2, 3, 4, 6]);
    assert_eq!(key_match(&idx, "order:1"), vec![6]);
    idx.rebuild();
    assert_eq!(idx.pending_len(), 0);
    assert_eq!(key_match(&idx, "user:1"), vec![1, 2, 5, 6]);
    assert_eq!(key_match(&idx, "user:1:profile"), vec![2, 3, 4, 6]);
    assert_eq!(key_match(&idx, "user:é:profile"), vec![2, 3, 4, 6]);
}

#[test]
fn pattern_invalidations_are_exact_between_literal_classes() {
    let idx = SubscriptionIndex::new();
    idx.subscribe(1, pat("user:1", None));
    idx.subscribe(2, pat("user:*", None));
    idx.subscribe(3, pat("*:profile", None));
    idx.subscribe(4, pat("order:*", None));
    idx.subscribe(5, pat("us*", None));
    idx.subscribe(6, pat("*:settings", None));
    // Prefix `user:1*`: exact keys under it, prefixes of it, every suffix.
    assert_eq!(
        pattern_match(&idx, &pat("user:1*", None)),
        vec![1, 2, 3, 5, 6]
    );
    // Suffix `*:profile`: suffixes of it or ending with it, every prefix; `user:1` does not
    // end with `:profile`.
    assert_eq!(
        pattern_match(&idx, &pat("*:profile", None)),
        vec![2, 3, 4, 5]
    );
    // Exact: as a key.
    assert_eq!(pattern_match(&idx, &pat("order:9", None)), vec![4]);
    // Glob: exact keys decided by matching, the rest by overlap.
    assert_eq!(pattern_match(&idx, &pat("user:?", None)), vec![1, 2, 5]);
}

#[test]
fn identical_patterns_share_an_entry_and_unsubscribe_by_value() {
    let idx = SubscriptionIndex::new();
    idx.subscribe(1, pat("a:*", None));
    idx.subscribe(1, pat("a:*", None));
    idx.subscribe(2, pat("a:*", None));
    idx.subscribe(2, pat("a:", Some(PatternType::Prefix)));
    assert_eq!(idx.len(), 3);
    assert!(idx.unsubscribe(1, &pat("a:*", None)));
    assert!(!idx.unsubscribe(1, &pat("a:*", None)));
    // One source and type, two meanings: shared by neither, removed by type and source.
    idx.subscribe(3, pat(r"k:\*", None));
    idx.subscribe(4, pat(r"k:\*", Some(PatternType::Exact)));
    idx.subscribe(4, pat(r"k:\*", None));
    assert_eq!(key_match(&idx, "k:*"), vec![3]);
    assert_eq!(key_match(&idx, r"k:\*"), vec![4]);
    assert!(idx.unsubscribe(4, &pat(r"k:\*", None)));
    assert_eq!(key_match(&idx, r"k:\*"), Vec::<ConnId>::new());
    idx.remove_conn(3);
    assert_eq!(key_match(&idx, "a:x"), vec![2]);
    idx.remove_conn(2);
    assert!(idx.is_empty());
    assert_eq!(key_match(&idx, "a:x"), Vec::<ConnId>::new());
}

#[test]
fn many_globs_trigger_a_background_rebuild_and_stay_correct() {
    let idx = SubscriptionIndex::new();
    for i in 0..200u64 {
        idx.subscribe(i, pat(&format!("t{i}:*:x"), None));
    }
    for i in (0..200u64).step_by(7) {
        assert_eq!(key_match(&idx, &format!("t{i}:abc:x")), vec![i]);
    }
    idx.rebuild();
    assert!(idx.pending_len() == 0);
    for i in 0..200u64 {
        assert!(idx.unsubscribe(i, &pat(&format!("t{i}:*:x"), None)));
    }
    idx.maintain();
    assert_eq!(key_match(&idx, "t3:abc:x"), Vec::<ConnId>::new());
    // Freed slots are reused by new patterns without confusing the old DFA ids.
    idx.subscribe(9, pat("z*z", None));
    assert_eq!(key_match(&idx, "t3:abc:x"), Vec::<ConnId>::new());
    assert_eq!(key_match(&idx, "zaz"), vec![9]);
}

#[test]
fn concurrent_churn_never_loses_a_subscription() {
    let idx = Arc::new(SubscriptionIndex::new());
    idx.subscribe(0, pat("keep:*:x", None));
    idx.subscribe(0, pat("keep:[0-9]+", Some(PatternType::Regex)));
    let workers: Vec<_> = (1..=3u64)
        .map(|w| {
            let idx = Arc::clone(&idx);
            std::thread::spawn(move || {
                for round in 0..30u64 {
                    for i in 0..20u64 {
                        idx.subscribe(w, pat(&format!("w{w}:{i}:*:{round}"), None));
                    }
                    for i in 0..20u64 {
                        idx.unsubscribe(w, &pat(&format!("w{w}:{i}:*:{round}"), None));
                    }
                }
                idx.subscribe(w, pat(&format!("w{w}:*:end"), None));
            })
        })
        .collect();
    let mut checks = 0;
    while workers.iter().any(|h| !h.is_finished()) || checks < 100 {
        assert_eq!(key_match(&idx, "keep:1:x"), vec![0]);
        assert_eq!(key_match(&idx, "keep:42"), vec![0]);
        checks += 1;
    }
    for h in workers {
        h.join().unwrap();
    }
    idx.maintain();
    assert_eq!(idx.len(), 5);
    assert_eq!(key_match(&idx, "w2:0:a:3"), Vec::<ConnId>::new());
    assert_eq!(key_match(&idx, "w2:a:end"), vec![2]);
    assert_eq!(idx.stats().pending, 0);
}

#[test]
fn tracked_one_shot_and_counts() {
    let t = TrackedIndex::new();
    assert_eq!(t.track(1, "user:1:profile"), 1);
    assert_eq!(t.track(1, "user:1:profile"), 1);
    assert_eq!(t.track(1, "user:2:profile"), 2);
    assert_eq!(t.track(2, "user:1:profile"), 1);
    assert_eq!(t.len(), 2);
    let (keys, count) = t.matches(&pat("user:*", None), 1);
    assert_eq!((keys, count), (vec!["user:1:profile".to_string()], 2));
    let mut out = Vec::new();
    t.take_key("user:1:profile", &mut out);
    assert_eq!(sorted(out), vec![1, 2]);
    assert_eq!(t.count(1), 1);
    assert_eq!(t.count(2), 0);
    t.rebuild();
    let mut pairs = Vec::new();
    t.take_pattern(&pat("*:profile", None), &mut pairs);
    assert_eq!(pairs, vec![("user:2:profile".to_string(), 1)]);
    assert!(t.is_empty());
    assert_eq!(t.untrack(1, "nope"), 0);
}

// ---- Properties -------------------------------------------------------------------------

const ALPHABET: [char; 4] = ['a', 'b', ':', 'é'];

fn key_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(ALPHABET.to_vec()), 1..6)
        .prop_map(|v| v.into_iter().collect())
}

/// Every key over the alphabet up to length 4: a witness universe for overlaps.
fn universe() -> Vec<String> {
    let mut all = vec![String::new()];
    let mut layer = vec![String::new()];
    for _ in 0..4 {
        layer = layer
            .iter()
            .flat_map(|k| ALPHABET.iter().map(move |c| format!("{k}{c}")))
            .collect();
        all.extend(layer.iter().cloned());
    }
    all
}

fn pattern_strategy() -> impl Strategy<Value = Arc<Pattern>> {
    let glob_text = proptest::collection::vec(
        proptest::sample::select(vec!["a", "b", ":", "é", "*", "?", "*", "\\*"]),
        1..6,
    )
    .prop_map(|v| v.concat());
    let regexes = proptest::sample::select(vec![
        "a[b:]+", "(a|b)*:", "[^:]*", "a.b", "(?i)A:.*", r"\w+:b", "é+", "a|ab", r"a\b.*", ".*:",
    ]);
    let explicit = proptest::option::of(proptest::sample::select(vec![
        PatternType::Exact,
        PatternType::Prefix,
        PatternType::Suffix,
        PatternType::Glob,
    ]));
    prop_oneof![
        3 => (glob_text, explicit).prop_filter_map("unparseable", |(s, e)| {
            Pattern::parse(&s, e, &PatternLimits::default()).ok().map(Arc::new)
        }),
        1 => regexes.prop_map(|r| pat(r, Some(PatternType::Regex))),
    ]
}

#[derive(Debug, Clone)]
enum SubOp {
    Subscribe(ConnId, usize),
    Unsubscribe(ConnId, usize),
    RemoveConn(ConnId),
    Rebuild,
}

fn sub_op() -> impl Strategy<Value = SubOp> {
    prop_oneof![
        6 => (0..5u64, 0..12usize).prop_map(|(c, p)| SubOp::Subscribe(c, p)),
        2 => (0..5u64, 0..12usize).prop_map(|(c, p)| SubOp::Unsubscribe(c, p)),
        1 => (0..5u64).prop_map(SubOp::RemoveConn),
        1 => Just(SubOp::Rebuild),
    ]
}

fn is_literal(p: &Pattern) -> bool {
    !matches!(shape(p), Shape::Auto)
}

/// The reference: (conn, pattern) pairs, each once.
#[derive(Default)]
struct RefSubs(Vec<(ConnId, Arc<Pattern>)>);

impl RefSubs {
    fn position(&self, conn: ConnId, p: &Pattern) -> Option<usize> {
        self.0
            .iter()
            .position(|(c, q)| *c == conn && q.source() == p.source() && q.kind() == p.kind())
    }

    fn apply(&mut self, op: &SubOp, pats: &[Arc<Pattern>], idx: &SubscriptionIndex) {
        match *op {
            SubOp::Subscribe(c, i) => {
                let p = &pats[i % pats.len()];
                idx.subscribe(c, Arc::clone(p));
                if self.position(c, p).is_none() {
                    self.0.push((c, Arc::clone(p)));
                }
            }
            SubOp::Unsubscribe(c, i) => {
                let p = &pats[i % pats.len()];
                let was = self.position(c, p);
                assert_eq!(idx.unsubscribe(c, p), was.is_some());
                if let Some(pos) = was {
                    self.0.remove(pos);
                }
            }
            SubOp::RemoveConn(c) => {
                idx.remove_conn(c);
                self.0.retain(|(x, _)| *x != c);
            }
            SubOp::Rebuild => idx.rebuild(),
        }
    }
}

#[derive(Debug, Clone)]
enum TrackOp {
    Track(ConnId, String),
    Untrack(ConnId, String),
    RemoveConn(ConnId),
    TakeKey(String),
    TakePattern(usize),
    Rebuild,
}

fn track_op() -> impl Strategy<Value = TrackOp> {
    prop_oneof![
        8 => (0..4u64, key_strategy()).prop_map(|(c, k)| TrackOp::Track(c, k)),
        2 => (0..4u64, key_strategy()).prop_map(|(c, k)| TrackOp::Untrack(c, k)),
        1 => (0..4u64).prop_map(TrackOp::RemoveConn),
        2 => key_strategy().prop_map(TrackOp::TakeKey),
        2 => (0..8usize).prop_map(TrackOp::TakePattern),
        1 => Just(TrackOp::Rebuild),
    ]
}

proptest! {
    // INDEX_PROPTEST_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("INDEX_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(200)
    ))]

    #[test]
    fn subscription_index_matches_reference(
        pats in proptest::collection::vec(pattern_strategy(), 1..12),
        ops in proptest::collection::vec(sub_op(), 1..60),
        keys in proptest::collection::vec(key_strategy(), 1..20),
        queries in proptest::collection::vec(pattern_strategy(), 1..6),
    ) {
        let idx = SubscriptionIndex::new();
        let mut reference = RefSubs::default();
        let universe = universe();
        for (step, op) in ops.iter().enumerate() {
            reference.apply(op, &pats, &idx);
            prop_assert_eq!(idx.len(), reference.0.len());
            // Check after every few operations (and at the end), rebuilt or not.
            if step % 5 != 4 && step + 1 != ops.len() {
                continue;
            }
            for key in &keys {
                let want = sorted(reference.0.iter().filter(|(_, q)| q.is_match(key)).map(|(c, _)| *c).collect());
                prop_assert_eq!(key_match(&idx, key), want, "key {:?}", key);
            }
            for p in &queries {
                let got = pattern_match(&idx, p);
                let upper = sorted(reference.0.iter().filter(|(_, q)| q.may_overlap(p)).map(|(c, _)| *c).collect());
                let lower = sorted(reference.0.iter().filter(|(_, q)| {
                    if is_literal(q) && is_literal(p) {
                        q.may_overlap(p)
                    } else {
                        universe.iter().any(|k| q.is_match(k) && p.is_match(k))
                    }
                }).map(|(c, _)| *c).collect());
                prop_assert!(lower.iter().all(|c| got.contains(c)), "under-delivery for {:?}: {:?} < {:?}", p.source(), got, lower);
                prop_assert!(got.iter().all(|c| upper.contains(c)), "over-delivery for {:?}: {:?} > {:?}", p.source(), got, upper);
            }
        }
    }

    #[test]
    fn tracked_index_matches_reference(
        ops in proptest::collection::vec(track_op(), 1..80),
        pats in proptest::collection::vec(pattern_strategy(), 8),
        cap in 0usize..4,
    ) {
        let t = TrackedIndex::new();
        let mut reference: BTreeMap<String, BTreeSet<ConnId>> = BTreeMap::new();
        let count = |r: &BTreeMap<String, BTreeSet<ConnId>>, c: ConnId| r.values().filter(|s| s.contains(&c)).count();
        for op in &ops {
            match op {
                TrackOp::Track(c, k) => {
                    reference.entry(k.clone()).or_default().insert(*c);
                    prop_assert_eq!(t.track(*c, k), count(&reference, *c));
                }
                TrackOp::Untrack(c, k) => {
                    if let Some(s) = reference.get_mut(k) {
                        s.remove(c);
                        if s.is_empty() {
                            reference.remove(k);
                        }
                    }
                    prop_assert_eq!(t.untrack(*c, k), count(&reference, *c));
                }
                TrackOp::RemoveConn(c) => {
                    t.remove_conn(*c);
                    reference.retain(|_, s| {
                        s.remove(c);
                        !s.is_empty()
                    });
                }
                TrackOp::TakeKey(k) => {
                    let mut out = Vec::new();
                    t.take_key(k, &mut out);
                    let want: Vec<ConnId> = reference.remove(k).map(|s| s.into_iter().collect()).unwrap_or_default();
                    prop_assert_eq!(sorted(out), want);
                }
                TrackOp::TakePattern(i) => {
                    let p = &pats[*i];
                    let mut out = Vec::new();
                    t.take_pattern(p, &mut out);
                    let hit: Vec<String> = reference.keys().filter(|k| p.is_match(k)).cloned().collect();
                    let mut want = Vec::new();
                    for k in hit {
                        if let Some(s) = reference.remove(&k) {
                            want.extend(s.into_iter().map(|c| (k.clone(), c)));
                        }
                    }
                    // Keys in byte order; connections of one key in any order.
                    out.sort();
                    prop_assert_eq!(out, want);
                }
                TrackOp::Rebuild => t.rebuild(),
            }
            prop_assert_eq!(t.len(), reference.len());
            for p in &pats {
                let all: Vec<String> = reference.keys().filter(|k| p.is_match(k)).cloned().collect();
                let (keys, total) = t.matches(p, cap);
                prop_assert_eq!(total, all.len() as u64);
                prop_assert_eq!(keys, all.into_iter().take(cap).collect::<Vec<_>>());
            }
        }
    }
}
