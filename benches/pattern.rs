//! Pattern engine benchmarks: parse + infer, compile per type, `is_match` per type, cache
//! hit, and fst resolution among 1,000,000 tracked keys.
//!
//! Run: `cargo bench --bench pattern -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fst::Set;
use invalidator::pattern::{Pattern, PatternCache, PatternLimits, PatternType};

const CASES: [(&str, &str, Option<PatternType>); 5] = [
    ("exact", "user:123:profile", None),
    ("prefix", "user:123:*", None),
    ("suffix", "*:profile", None),
    ("glob", "user:*:pro?ile", None),
    (
        "regex",
        "user:[0-9]+:(profile|settings)",
        Some(PatternType::Regex),
    ),
];

fn parse_and_compile(c: &mut Criterion) {
    let limits = PatternLimits::default();
    let mut group = c.benchmark_group("parse");
    for (name, source, explicit) in CASES {
        group.bench_function(name, |b| {
            b.iter(|| Pattern::parse(black_box(source), explicit, &limits))
        });
    }
    group.bench_function("regex_unicode_word", |b| {
        b.iter(|| Pattern::parse(black_box(r"user:\w+"), Some(PatternType::Regex), &limits))
    });
    // Worst case a client can make us pay per distinct pattern (refusals are cached too).
    group.sample_size(10);
    group.bench_function("too_big_rejected", |b| {
        b.iter(|| Pattern::parse(black_box(r"\w{500}"), Some(PatternType::Regex), &limits))
    });
    group.bench_function("dense_overflow_to_lazy", |b| {
        b.iter(|| {
            Pattern::parse(
                black_box("(a|b|c)*a(a|b|c){30}"),
                Some(PatternType::Regex),
                &limits,
            )
        })
    });
    group.finish();
}

fn is_match(c: &mut Criterion) {
    let limits = PatternLimits::default();
    let key = "user:123456:settings";
    let mut group = c.benchmark_group("is_match");
    for (name, source, explicit) in CASES {
        let Ok(pattern) = Pattern::parse(source, explicit, &limits) else {
            continue;
        };
        group.bench_function(name, |b| b.iter(|| pattern.is_match(black_box(key))));
    }
    // No dense DFA (it would exceed the limit): answered by the second tier.
    if let Ok(lazy) = Pattern::parse(r"user:\w{10}", Some(PatternType::Regex), &limits) {
        group.bench_function("regex_without_dense_dfa", |b| {
            b.iter(|| lazy.is_match(black_box("user:1234567890")))
        });
    }
    group.finish();
}

fn cache(c: &mut Criterion) {
    let cache = PatternCache::new(4096, PatternLimits::default());
    for i in 0..1000 {
        let _ = cache.get(&format!("user:{i}:*"), None);
    }
    let _ = cache.get("user:[0-9]+:(profile|settings)", Some(PatternType::Regex));
    c.bench_function("cache/hit_prefix", |b| {
        b.iter(|| cache.get(black_box("user:500:*"), None))
    });
    c.bench_function("cache/hit_regex", |b| {
        b.iter(|| {
            cache.get(
                black_box("user:[0-9]+:(profile|settings)"),
                Some(PatternType::Regex),
            )
        })
    });
    let mut i = 0u64;
    let cold = PatternCache::new(4096, PatternLimits::default());
    c.bench_function("cache/miss_glob", |b| {
        b.iter(|| {
            i += 1;
            cold.get(&format!("user:{i}:*:x?"), None)
        })
    });
}

fn overlap(c: &mut Criterion) {
    let limits = PatternLimits::default();
    let parse = |s: &str, t: Option<PatternType>| Pattern::parse(s, t, &limits);
    let pairs = [
        ("prefix_prefix", ("user:1:*", None), ("user:*", None)),
        ("glob_prefix", ("user:*:profile", None), ("user:12*", None)),
        (
            "glob_suffix_disjoint",
            ("user:*:profile", None),
            ("*:settings", None),
        ),
        (
            "regex_glob_disjoint",
            ("user:[0-9]+:x", Some(PatternType::Regex)),
            ("user:*:y", None),
        ),
        (
            "regex_regex_unicode",
            (r"\w+:a", Some(PatternType::Regex)),
            (r"\d+:b", Some(PatternType::Regex)),
        ),
    ];
    let mut group = c.benchmark_group("may_overlap");
    for (name, a, b) in pairs {
        let (Ok(a), Ok(b)) = (parse(a.0, a.1), parse(b.0, b.1)) else {
            continue;
        };
        group.bench_function(name, |bench| {
            bench.iter(|| black_box(&a).may_overlap(black_box(&b)))
        });
    }
    group.finish();
}

/// 1,000,000 keys `user:BBBB:III` (1,000 buckets of 1,000), forward and reversed.
fn tracked_sets() -> (Set<Vec<u8>>, Set<Vec<u8>>) {
    let keys: Vec<String> = (0..1_000_000u32)
        .map(|i| format!("user:{:04}:{:03}", i / 1000, i % 1000))
        .collect();
    let mut reversed: Vec<Vec<u8>> = keys.iter().map(|k| k.bytes().rev().collect()).collect();
    reversed.sort_unstable();
    let forward = Set::from_iter(keys.iter()).expect("sorted keys");
    let reversed = Set::from_iter(reversed).expect("sorted keys");
    (forward, reversed)
}

fn fst_search(c: &mut Criterion) {
    let (forward, reversed) = tracked_sets();
    let limits = PatternLimits::default();
    let cases = [
        ("prefix_1000_hits", "user:0500:*", None),
        (
            "selective_regex_200_hits",
            "user:(0042|0777):1[0-9]{2}",
            Some(PatternType::Regex),
        ),
        ("glob_10000_hits", "user:0?00:*", None),
        ("suffix_1000_hits", "*:042", None),
        ("glob_leading_star_1000_hits", "*?:042", None),
    ];
    let mut group = c.benchmark_group("fst_1m");
    group.sample_size(20);
    for (name, source, explicit) in cases {
        let Ok(pattern) = Pattern::parse(source, explicit, &limits) else {
            continue;
        };
        group.bench_function(name, |b| {
            b.iter(|| pattern.fst_search(&forward, &reversed, Some(10_000)))
        });
    }
    let regex = Pattern::parse(
        "user:(0042|0777):1[0-9]{2}",
        Some(PatternType::Regex),
        &limits,
    );
    if let Ok(regex) = regex {
        group.bench_function("linear_scan_regex", |b| {
            b.iter(|| {
                let mut stream = fst::IntoStreamer::into_stream(forward.stream());
                let mut n = 0u64;
                while let Some(k) = fst::Streamer::next(&mut stream) {
                    if std::str::from_utf8(k).is_ok_and(|k| regex.is_match(k)) {
                        n += 1;
                    }
                }
                n
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    parse_and_compile,
    is_match,
    cache,
    overlap,
    fst_search
);
criterion_main!(benches);
