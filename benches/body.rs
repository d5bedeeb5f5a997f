//! Body parsing: our two-phase serde_json parser (the one the server uses) against simd-json
//! into a borrowed struct, on a ~200-byte `POST /invalidate/key` body and a 5 KB
//! `/invalidate/pattern` body. Decides which parser the server uses (see BENCHMARKS.md).

use criterion::{Criterion, criterion_group, criterion_main};
use invalidator::config::Limits;
use invalidator::http::request::{parse_key_request, parse_pattern_request};
use serde::Deserialize;
use std::hint::black_box;

const KEY_BODY: &str = r#"{"keys": ["user:12345:profile", "user:12345:settings", "user:12345:avatar", "user:12345:orders"], "triggered_by": "orders-service/checkout-worker", "request_id": "req-2025-01-15-000123456-checkout-retry"}"#;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Borrowed<'a> {
    #[serde(borrow)]
    keys: Vec<&'a str>,
    #[serde(borrow)]
    triggered_by: &'a str,
    #[serde(borrow)]
    request_id: Option<&'a str>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct BorrowedPattern<'a> {
    #[serde(borrow)]
    pattern: &'a str,
    #[serde(borrow)]
    cache_keys: Vec<&'a str>,
    #[serde(borrow)]
    triggered_by: &'a str,
}

fn pattern_body() -> String {
    let keys: Vec<String> = (0..200).map(|i| format!("user:{i}:profile")).collect();
    serde_json::json!({"pattern": "user:1*", "triggered_by": "bench", "cache_keys": keys})
        .to_string()
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    assert!((180..=220).contains(&KEY_BODY.len()), "{}", KEY_BODY.len());
    let mut g = c.benchmark_group("body_200B");
    g.bench_function("server_parser_serde_json", |b| {
        b.iter(|| parse_key_request(black_box(KEY_BODY.as_bytes()), &limits).map(|r| r.keys.len()))
    });
    g.bench_function("serde_json_borrowed", |b| {
        b.iter(|| {
            serde_json::from_slice::<Borrowed>(black_box(KEY_BODY.as_bytes())).map(|r| r.keys.len())
        })
    });
    g.bench_function("simd_json_borrowed", |b| {
        let mut buf = KEY_BODY.as_bytes().to_vec();
        b.iter(|| {
            // simd-json parses in place: it needs its own mutable copy of the body.
            buf.copy_from_slice(KEY_BODY.as_bytes());
            simd_json::serde::from_slice::<Borrowed>(black_box(&mut buf)).map(|r| r.keys.len())
        })
    });
    g.finish();
    let body = pattern_body();
    let mut g = c.benchmark_group("body_5KB");
    g.bench_function("server_parser_serde_json", |b| {
        b.iter(|| {
            parse_pattern_request(black_box(body.as_bytes()), &limits).map(|r| r.cache_keys.len())
        })
    });
    g.bench_function("serde_json_borrowed", |b| {
        b.iter(|| {
            serde_json::from_slice::<BorrowedPattern>(black_box(body.as_bytes()))
                .map(|r| r.cache_keys.len())
        })
    });
    g.bench_function("simd_json_borrowed", |b| {
        let mut buf = body.as_bytes().to_vec();
        b.iter(|| {
            buf.copy_from_slice(body.as_bytes());
            simd_json::serde::from_slice::<BorrowedPattern>(black_box(&mut buf))
                .map(|r| r.cache_keys.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
