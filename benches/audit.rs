//! Audit store benchmark (harness = false; prints rows/s and latencies).
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth); creates and drops a
//! database `inv_bench_<random>`. Run:
//!
//! ```text
//! cargo bench --bench audit                      # 1,000,000 rows for the query part
//! AUDIT_BENCH_ROWS=200000 cargo bench --bench audit
//! ```
//!
//! Measures, in one run:
//! 1. the pipeline end to end (`reserve` + `send` → batcher → binary COPY), rows/s;
//! 2. the store's two write paths on 5,000-row batches: plain COPY (fast path) and COPY into
//!    a temp table + `INSERT ... ON CONFLICT DO NOTHING` (replay path);
//! 3. the baseline: one autocommit INSERT per row;
//! 4. `query_logs` first-page latency (p50/p99) over the whole table, unfiltered and with
//!    each filter; and the same for SQLite.

use std::sync::Arc;
use std::time::{Duration, Instant};

use invalidator::audit::postgres::{PgStore, WriteMode};
use invalidator::audit::record::AuditRow;
use invalidator::audit::sqlite::SqliteStore;
use invalidator::audit::{AuditPipeline, AuditRecord};
use invalidator::config::{AuditConfig, Config};
use invalidator::event::{Invalidation, Target};
use invalidator::pattern::{Pattern, PatternLimits, PatternType};
use sqlx::{Connection, Executor};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const BASE_US: i64 = 1_736_938_200_000_000;

fn record(seq: u64, tag: &str) -> AuditRecord {
    let target = if seq.is_multiple_of(5) {
        let p = Pattern::parse(
            &format!("user:{}:*", seq % 1000),
            Some(PatternType::Prefix),
            &PatternLimits::default(),
        );
        match p {
            Ok(p) => Target::Pattern {
                pattern: Arc::new(p),
                matched_keys: vec![format!("user:{}:profile", seq % 1000)],
                matched_count: 1,
            },
            Err(_) => Target::Keys(vec![format!("user:{seq}")]),
        }
    } else {
        Target::Keys(vec![
            format!("user:{}", seq % 100_000),
            format!("order:{seq}"),
        ])
    };
    let inv = Invalidation {
        seq,
        request_id: format!("{tag}-{seq}"),
        triggered_by: format!("service-{}", seq % 20),
        token_name: Some("bench".into()),
        published_at_us: BASE_US + seq as i64 * 1000,
        node_id: Arc::from("node-bench"),
        target,
        soft: false,
    };
    AuditRecord {
        inv: Arc::new(inv),
        latency_us: 150,
        body_hash: "0".repeat(64),
    }
}

fn rows(range: std::ops::Range<u64>, tag: &str) -> Vec<AuditRow> {
    range
        .map(|s| AuditRow::from_record(&record(s, tag)))
        .collect()
}

fn pct(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

async fn latency(audit: &AuditPipeline, query: &str, iters: usize) -> (f64, f64, i64) {
    let mut samples = Vec::with_capacity(iters);
    let mut total = 0;
    for _ in 0..iters {
        let t = Instant::now();
        let v = audit.query_logs(query).await.unwrap_or_default();
        samples.push(t.elapsed());
        total = v["total_count"].as_i64().unwrap_or(-1);
    }
    (pct(&mut samples, 0.5), pct(&mut samples, 0.99), total)
}

const QUERIES: [&str; 7] = [
    "limit=50",
    "limit=50&triggered_by=service-7",
    "limit=50&key=user%3A4242",
    "limit=50&pattern=user%3A5%3A*",
    "limit=50&request_id=q-777777",
    "limit=50&since=2025-01-15T10:50:10Z&until=2025-01-15T10:50:20Z",
    "limit=50&offset=0&before_id=500000",
];

async fn report_queries(name: &str, audit: &AuditPipeline) {
    for q in QUERIES {
        let _ = latency(audit, q, 5).await; // warm the cache
        let (p50, p99, total) = latency(audit, q, 200).await;
        println!("{name:<40} {q:<62} p50 {p50:6.2} ms  p99 {p99:6.2} ms  total_count {total}");
    }
}

async fn pg_bench(n_query_rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("inv_bench_{:x}", fastrand::u64(..));
    let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let result = pg_bench_in(&url, n_query_rows).await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .await?;
    result
}

async fn pg_bench_in(url: &str, n_query_rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("audit-bench-{:x}", fastrand::u64(..)));
    let config = Config {
        data_dir: dir.clone(),
        database_url: Some(url.into()),
        audit: AuditConfig {
            batch_size: 5000,
            ..AuditConfig::default()
        },
        ..Config::default()
    };

    // 1. The pipeline end to end.
    let audit = AuditPipeline::start(&config).await?;
    let n = 200_000u64;
    let records: Vec<AuditRecord> = (1..=n).map(|s| record(s, "pipe")).collect();
    let t = Instant::now();
    let mut full = 0u64;
    for r in records {
        // Like a client: a 503 (pipeline full after enqueue_wait_ms) is retried.
        loop {
            match audit.reserve().await {
                Ok(p) => {
                    p.send(r);
                    break;
                }
                Err(_) => full += 1,
            }
        }
    }
    while audit.stats().written < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let s = audit.stats();
    println!(
        "postgres pipeline (reserve+send → COPY, batch 5000): {n} rows in {secs:.2} s = {:.0} rows/s; \
         write latency p50 {} µs p99 {} µs; batch p50 {}; 503s while full: {full}",
        n as f64 / secs,
        s.write_latency_us.p50,
        s.write_latency_us.p99,
        s.batch_size.p50
    );
    audit
        .shutdown(tokio::time::Instant::now() + std::time::Duration::from_secs(25))
        .await;
    drop(audit);

    // 2. The store's write paths, and 3. the per-row baseline.
    let store = PgStore::connect(url, Duration::from_secs(5)).await?;
    for (mode, tag) in [(WriteMode::Fresh, "fresh"), (WriteMode::Replay, "replay")] {
        let batches: Vec<Vec<AuditRow>> = (0..20)
            .map(|b| rows(b * 5000..(b + 1) * 5000, tag))
            .collect();
        let t = Instant::now();
        for batch in &batches {
            store.write(batch, mode).await?;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "postgres store.write({mode:?}), 20 x 5000 rows: {:.0} rows/s",
            100_000.0 / secs
        );
    }
    let single = rows(0..5000, "single");
    let mut conn = store.pool().acquire().await?;
    let t = Instant::now();
    for r in &single {
        sqlx::query(
            "INSERT INTO invalidation_audit (seq, request_id, triggered_by, token_name, \"timestamp\", node_id, kind, \
             pattern, pattern_type, keys, matched_count, latency_us, latency_ms, body_hash) \
             VALUES ($1, $2, $3, $4, 'epoch'::timestamptz + $5 * interval '1 microsecond', $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14)",
        )
        .bind(r.seq)
        .bind(r.request_id.clone())
        .bind(r.triggered_by.clone())
        .bind(r.token_name.clone())
        .bind(r.timestamp_us)
        .bind(r.node_id.clone())
        .bind(r.kind.as_str())
        .bind(r.pattern.clone())
        .bind(r.pattern_type.map(|p| p.as_str()))
        .bind(r.keys_json())
        .bind(r.matched_count)
        .bind(r.latency_us)
        .bind(r.latency_ms())
        .bind(r.body_hash.clone())
        .execute(&mut *conn)
        .await?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "postgres baseline, one autocommit INSERT per row, 5000 rows: {:.0} rows/s",
        5000.0 / secs
    );
    drop(conn);

    // 4. Fill to n_query_rows and time the first page.
    let have = 200_000 + 100_000 + 100_000 + 5000;
    let t = Instant::now();
    let mut next = 0u64;
    while next + have < n_query_rows {
        let end = (next + 5000).min(n_query_rows - have);
        store.write(&rows(next..end, "q"), WriteMode::Fresh).await?;
        next = end;
    }
    println!(
        "postgres fill {next} rows: {:.0} rows/s",
        next as f64 / t.elapsed().as_secs_f64()
    );
    sqlx::query("ANALYZE invalidation_audit")
        .execute(store.pool())
        .await?;
    let audit = AuditPipeline::start(&config).await?;
    report_queries("postgres (fresh rows, before autovacuum)", &audit).await;
    // Steady state: autovacuum (tuned by the migration) keeps the visibility map current.
    sqlx::query("VACUUM ANALYZE invalidation_audit")
        .execute(store.pool())
        .await?;
    report_queries("postgres (after VACUUM)", &audit).await;
    audit
        .shutdown(tokio::time::Instant::now() + std::time::Duration::from_secs(25))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn sqlite_bench(n_rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("audit-bench-sqlite-{:x}", fastrand::u64(..)));
    let store = SqliteStore::open(&dir.join("audit.sqlite3")).await?;
    let t = Instant::now();
    let mut next = 0;
    while next < n_rows {
        let end = (next + 5000).min(n_rows);
        store.write(&rows(next..end, "q")).await?;
        next = end;
    }
    println!(
        "sqlite store.write, 5000-row transactions: {:.0} rows/s",
        n_rows as f64 / t.elapsed().as_secs_f64()
    );
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    let config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    let audit = AuditPipeline::start(&config).await?;
    report_queries("sqlite", &audit).await;
    audit
        .shutdown(tokio::time::Instant::now() + std::time::Duration::from_secs(25))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    let n: u64 = std::env::var("AUDIT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    if let Err(e) = rt.block_on(pg_bench(n)) {
        eprintln!("postgres bench failed: {e}");
    }
    if let Err(e) = rt.block_on(sqlite_bench(n)) {
        eprintln!("sqlite bench failed: {e}");
    }
}
