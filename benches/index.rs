//! Routing indexes (SPEC targets):
//! - `SubscriptionIndex::match_key` with 10 and with 10,000 subscription patterns in the measured
//!   mix (70% prefixes, 25% suffixes, 5% globs and regexes): 10,000 must stay within 1.5x of 10.
//! - `TrackedIndex::matches` over 1,000,000 tracked keys: a prefix resolving 1,000 keys
//!   (target < 2 ms p99) and a selective regex.
//!
//! Run: `cargo bench --bench index -- --warm-up-time 1 --measurement-time 3`. After the
//! criterion groups, a p99 over 2,000 timed calls is printed for the tracked-key lookups.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use invalidator::index::{SubscriptionIndex, TrackedIndex};
use invalidator::pattern::{Pattern, PatternLimits, PatternType};

fn pat(source: &str, explicit: Option<PatternType>) -> Arc<Pattern> {
    match Pattern::parse(source, explicit, &PatternLimits::default()) {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("bench pattern {source:?}: {e}"),
    }
}

/// `n` subscription patterns, one connection each, in the measured mix (70% prefixes, 25% suffixes, 5% regexes).
fn subscriptions(n: usize) -> SubscriptionIndex {
    let idx = SubscriptionIndex::new();
    let prefixes = n * 70 / 100;
    let suffixes = n * 25 / 100;
    let automata = n - prefixes - suffixes;
    let mut conn = 0u64;
    let mut add = |p: Arc<Pattern>| {
        idx.subscribe(conn, p);
        conn += 1;
    };
    for i in 0..prefixes {
        add(pat(&format!("svc{}:obj{}:*", i % 97, i), None));
    }
    for i in 0..suffixes {
        add(pat(&format!("*:field{i}"), None));
    }
    for i in 0..automata {
        if i % 2 == 0 {
            add(pat(&format!("user:*:item{i}"), None));
        } else {
            add(pat(
                &format!("order:[0-9]+:line{i}"),
                Some(PatternType::Regex),
            ));
        }
    }
    idx.rebuild();
    let stats = idx.stats();
    println!("{n} patterns: {stats:?}");
    idx
}

/// Keys of every class, each matching the same subscriptions in the 10-pattern and the
/// 10,000-pattern index (the patterns of the small index are also in the large one), plus
/// keys missing everything: the same answer from a larger index must not cost more.
fn probe_keys_same_answer() -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..7 {
        keys.push(format!("svc{i}:obj{i}:name{i}"));
    }
    for i in 0..2 {
        keys.push(format!("tenant{i}:cache:field{i}"));
    }
    keys.push("user:42:item0".to_string());
    keys.push("session:42:token".to_string());
    keys.push("zzz:1".to_string());
    keys
}

/// Keys hitting each class in the 10,000-pattern index (most miss in the 10-pattern one, so
/// the large index does more work: longer trie walks, more connections pushed).
fn probe_keys_mixed() -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..64 {
        keys.push(format!("svc{}:obj{}:name", i % 97, i * 13));
        keys.push(format!("tenant{i}:cache:field{}", i * 7));
        keys.push(format!("user:{i}:item{}", i * 2));
        keys.push(format!("order:{}:line{}", i * 31, i * 2 + 1));
        keys.push(format!("session:{i}:token"));
    }
    keys
}

fn bench_match_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("subs_match_key");
    for (set, keys) in [
        ("same_answer", probe_keys_same_answer()),
        ("mixed", probe_keys_mixed()),
    ] {
        for n in [10usize, 10_000] {
            let idx = subscriptions(n);
            let mut out = Vec::with_capacity(64);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(set, n), |b| {
                b.iter(|| {
                    out.clear();
                    i = (i + 1) % keys.len();
                    idx.match_key(black_box(&keys[i]), &mut out);
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

fn bench_match_pattern(c: &mut Criterion) {
    let idx = subscriptions(10_000);
    let mut group = c.benchmark_group("subs_match_pattern_10000");
    for (name, p) in [
        ("prefix", pat("svc5:obj*", None)),
        ("suffix", pat("*:field77", None)),
        ("glob", pat("user:*:item4?", None)),
    ] {
        let mut out = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                idx.match_pattern(black_box(&p), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// 1,000,000 keys `obj:NNNN:MMM` (1,000 per `obj:NNNN:` prefix), tracked by 100 connections.
fn tracked_million() -> TrackedIndex {
    let before = rss_mib();
    let start = Instant::now();
    let t = TrackedIndex::new();
    for i in 0..1_000_000u64 {
        t.track(i % 100, &format!("obj:{:04}:{:03}", i / 1000, i % 1000));
    }
    let tracked = start.elapsed();
    let start = Instant::now();
    t.rebuild();
    println!(
        "tracked 1M keys: track {tracked:?}, fst rebuild {:?}, RSS +{:.0} MiB, {:?}",
        start.elapsed(),
        rss_mib() - before,
        t.stats()
    );
    t
}

/// Resident set size of this process (Linux), 0 elsewhere.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn tracked_patterns() -> [(&'static str, Arc<Pattern>); 2] {
    [
        ("prefix_1000_hits", pat("obj:0042:*", None)),
        (
            "regex_50_hits",
            pat("obj:0[0-4]17:99[0-9]", Some(PatternType::Regex)),
        ),
    ]
}

fn bench_tracked(c: &mut Criterion, t: &TrackedIndex) {
    let mut group = c.benchmark_group("tracked_matches_1m");
    for (name, p) in tracked_patterns() {
        group.bench_function(name, |b| {
            b.iter(|| black_box(t.matches(black_box(&p), 10_000)))
        });
    }
    group.finish();
}

fn p99_report(t: &TrackedIndex) {
    for (name, p) in tracked_patterns() {
        let mut samples: Vec<Duration> = (0..2_000)
            .map(|_| {
                let start = Instant::now();
                black_box(t.matches(&p, 10_000));
                start.elapsed()
            })
            .collect();
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        let (_, count) = t.matches(&p, 0);
        println!(
            "tracked_matches_1m/{name}: {count} hits, p50 {:?}, p99 {:?}, max {:?}",
            at(0.50),
            at(0.99),
            samples[samples.len() - 1]
        );
    }
}

/// Noise-resistant comparison of `match_key` at 10 and 10,000 patterns: rounds alternate
/// between the two indexes, and each side keeps its fastest round (a shared machine only ever
/// makes a round slower).
fn ratio_report() {
    let small = subscriptions(10);
    let large = subscriptions(10_000);
    for (set, keys) in [
        ("same_answer", probe_keys_same_answer()),
        ("mixed", probe_keys_mixed()),
    ] {
        ratio_of(set, &keys, &small, &large);
    }
}

fn ratio_of(set: &str, keys: &[String], small: &SubscriptionIndex, large: &SubscriptionIndex) {
    let mut out = Vec::with_capacity(64);
    let mut time = |idx: &SubscriptionIndex| {
        let start = Instant::now();
        for _ in 0..20 {
            for key in keys {
                out.clear();
                idx.match_key(black_box(key), &mut out);
                black_box(out.len());
            }
        }
        start.elapsed().as_nanos() as f64 / (20 * keys.len()) as f64
    };
    let (mut best_small, mut best_large) = (f64::MAX, f64::MAX);
    for _ in 0..200 {
        best_small = best_small.min(time(small));
        best_large = best_large.min(time(large));
    }
    println!(
        "subs_match_key/{set} best of 200 rounds: 10 patterns {best_small:.1} ns, \
         10,000 patterns {best_large:.1} ns, ratio {:.2}",
        best_large / best_small
    );
}

criterion_group!(subs, bench_match_key, bench_match_pattern);

fn main() {
    if std::env::var_os("INDEX_BENCH_TRACKED_ONLY").is_some() {
        p99_report(&tracked_million());
        return;
    }
    ratio_report();
    if std::env::var_os("INDEX_BENCH_RATIO_ONLY").is_some() {
        return;
    }
    subs();
    let t = tracked_million();
    let mut c = Criterion::default().configure_from_args();
    bench_tracked(&mut c, &t);
    p99_report(&t);
    c.final_summary();
}
