//! The audit pipeline against real stores: a fresh PostgreSQL database per test
//! (127.0.0.1:5432, user postgres) and SQLite in a temp dir; faults through a TCP proxy that
//! the test cuts and restores (the shared PostgreSQL itself is never stopped).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use invalidator::audit::record::AuditRow;
use invalidator::audit::wal::encode_frame;
use invalidator::audit::{AuditPipeline, AuditRecord};
use invalidator::config::{AuditConfig, Config};
use invalidator::event::{Invalidation, Target};
use invalidator::pattern::{Pattern, PatternLimits, PatternType};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, Row};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const BASE_US: i64 = 1_736_938_200_000_000; // 2025-01-15T10:50:00Z

// ---- helpers: records ------------------------------------------------------------------

fn key_inv(seq: u64, keys: &[&str], triggered_by: &str) -> Invalidation {
    Invalidation {
        seq,
        request_id: format!("req-{seq}"),
        triggered_by: triggered_by.into(),
        token_name: Some("orders-service".into()),
        published_at_us: BASE_US + seq as i64 * 1_000_000,
        node_id: Arc::from("node-a"),
        target: Target::Keys(keys.iter().map(|k| k.to_string()).collect()),
        soft: false,
    }
}

fn pattern_inv(seq: u64, pattern: &str, kind: PatternType, matched: &[&str]) -> Invalidation {
    let pattern = Pattern::parse(pattern, Some(kind), &PatternLimits::default()).expect("pattern");
    Invalidation {
        seq,
        request_id: format!("req-{seq}"),
        triggered_by: "cache_manager".into(),
        token_name: None,
        published_at_us: BASE_US + seq as i64 * 1_000_000,
        node_id: Arc::from("node-b"),
        target: Target::Pattern {
            pattern: Arc::new(pattern),
            matched_keys: matched.iter().map(|k| k.to_string()).collect(),
            matched_count: matched.len() as u64 + 5,
        },
        soft: seq.is_multiple_of(2),
    }
}

fn record(inv: Invalidation) -> AuditRecord {
    let latency_us = 100 + inv.seq * 7;
    AuditRecord {
        body_hash: format!("hash-{}", inv.seq),
        inv: Arc::new(inv),
        latency_us,
    }
}

/// A mixed workload: seq 1..=n, three triggerers, every 5th a pattern.
fn workload(range: std::ops::RangeInclusive<u64>) -> Vec<AuditRecord> {
    range
        .map(|seq| {
            if seq % 5 == 0 {
                record(pattern_inv(
                    seq,
                    &format!("user:{}:*", seq % 3),
                    PatternType::Prefix,
                    &["user:0:a"],
                ))
            } else {
                let who = ["admin", "deploy", "orders"][(seq % 3) as usize];
                let k1 = format!("user:{}", seq % 10);
                let k2 = format!("item:{seq}");
                record(key_inv(seq, &[&k1, &k2], who))
            }
        })
        .collect()
}

/// A graceful shutdown's deadline, as the server gives it.
fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(25)
}

/// Send every record, then wait until all are durable in the write-ahead log (as a request
/// does before it answers 200).
async fn send_all(audit: &AuditPipeline, records: Vec<AuditRecord>) {
    let mut durable = Vec::with_capacity(records.len());
    for r in records {
        let permit = audit.reserve().await.expect("reserve");
        durable.push(permit.send(r));
    }
    for d in durable {
        d.wait().await.expect("durable");
    }
}

/// Write `rows` as one write-ahead log segment `id` under `dir` (as a crashed process left it).
fn write_wal_segment(dir: &Path, id: u64, rows: &[AuditRow], cut_tail: usize) {
    let wal = dir.join("wal");
    std::fs::create_dir_all(&wal).expect("wal dir");
    let mut buf = Vec::new();
    for row in rows {
        encode_frame(&mut buf, &serde_json::to_vec(row).expect("encode"));
    }
    buf.truncate(buf.len() - cut_tail);
    std::fs::write(wal.join(format!("seg-{id:020}.wal")), buf).expect("write segment");
}

fn wal_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        })
        .count()
}

/// A temp directory removed when the test ends.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "audit-{tag}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

fn config(data_dir: &Path, database_url: Option<String>) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        database_url,
        audit: AuditConfig {
            batch_size: 500,
            flush_ms: 5,
            retry_initial_ms: 20,
            retry_max_ms: 200,
            ..AuditConfig::default()
        },
        shutdown_timeout: Duration::from_secs(20),
        ..Config::default()
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- helpers: databases ----------------------------------------------------------------

/// A fresh PostgreSQL database, dropped (forcefully) when the guard goes.
struct PgDb {
    name: String,
}

impl PgDb {
    async fn create() -> PgDb {
        let name = format!("inv_test_{:x}", fastrand::u64(..));
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN)
            .await
            .expect("postgres on 127.0.0.1:5432");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create db");
        PgDb { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    async fn conn(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connect test db")
    }

    async fn drop_db(mut self) {
        if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if admin.execute(sqlx::AssertSqlSafe(sql)).await.is_ok() {
                self.name.clear();
            }
        }
    }
}

impl Drop for PgDb {
    /// A test that panicked still drops its database (on a thread with its own runtime).
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        if name.is_empty() {
            return;
        }
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = admin.execute(sqlx::AssertSqlSafe(sql)).await;
                }
            });
        })
        .join();
    }
}

async fn pg_count(db: &PgDb) -> i64 {
    let mut c = db.conn().await;
    let row = sqlx::query("SELECT count(*), count(DISTINCT request_id) FROM invalidation_audit")
        .fetch_one(&mut c)
        .await
        .expect("count");
    let (n, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(n, distinct, "duplicate request_ids in the store");
    n
}

/// Every stored request id.
async fn pg_request_ids(db: &PgDb) -> HashSet<String> {
    let mut c = db.conn().await;
    sqlx::query_scalar::<_, String>("SELECT request_id FROM invalidation_audit")
        .fetch_all(&mut c)
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

fn expected_ids(range: std::ops::RangeInclusive<u64>) -> HashSet<String> {
    range.map(|s| format!("req-{s}")).collect()
}

// ---- helpers: a cuttable TCP proxy ------------------------------------------------------

/// Forwards to PostgreSQL; `cut` drops every connection and refuses new ones until `restore`.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(up: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let flag = Arc::new(AtomicBool::new(up));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (f, c) = (flag.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !f.load(Ordering::SeqCst) {
                    drop(client); // refused: the peer sees the connection closed
                    continue;
                }
                c.lock().push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Proxy {
            addr,
            up: flag,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

// ---- rows match records ----------------------------------------------------------------

fn check_log(log: &Value, r: &AuditRecord) {
    let inv = &r.inv;
    assert_eq!(log["seq"], json!(inv.seq));
    assert_eq!(log["request_id"], json!(inv.request_id));
    assert_eq!(log["triggered_by"], json!(inv.triggered_by));
    assert_eq!(log["token_name"], json!(inv.token_name));
    assert_eq!(log["node_id"], json!(&*inv.node_id));
    assert_eq!(log["soft"], json!(inv.soft));
    assert_eq!(log["timestamp"], json!(inv.published_at_rfc3339()));
    assert_eq!(log["keys"], json!(inv.keys()));
    assert_eq!(log["matched_count"], json!(inv.invalidated_count()));
    assert_eq!(log["latency_us"], json!(r.latency_us));
    assert_eq!(log["latency"], json!(r.latency_us / 1000));
    match &inv.target {
        Target::Keys(_) => {
            assert_eq!(log["kind"], "keys");
            assert_eq!(log["pattern"], Value::Null);
            assert_eq!(log["pattern_type"], Value::Null);
        }
        Target::Pattern { pattern, .. } => {
            assert_eq!(log["kind"], "pattern");
            assert_eq!(log["pattern"], json!(pattern.source()));
            assert_eq!(log["pattern_type"], json!(pattern.kind().as_str()));
        }
    }
}

async fn rows_match_records(audit: &AuditPipeline) {
    let records = vec![
        record(key_inv(1, &["user:1", "user:2"], "admin")),
        record(pattern_inv(
            2,
            "user:*:profile",
            PatternType::Glob,
            &["user:1:profile"],
        )),
        record(key_inv(3, &["quote\"d\\key", "ünïcödé"], "nul\0byte")),
    ];
    send_all(audit, records.clone()).await;
    wait_until("3 rows", Duration::from_secs(10), async || {
        audit.stats().written == 3
    })
    .await;
    let page = audit.query_logs("").await.expect("query");
    assert_eq!(page["total_count"], 3);
    assert_eq!(page["has_more"], false);
    let logs = page["logs"].as_array().expect("logs");
    check_log(&logs[2], &records[0]);
    check_log(&logs[1], &records[1]);
    // NUL is stored as U+FFFD (see audit::record); everything else verbatim.
    assert_eq!(logs[0]["triggered_by"], "nul\u{FFFD}byte");
    assert_eq!(logs[0]["keys"], json!(["quote\"d\\key", "ünïcödé"]));
    assert!(logs[0]["id"].as_i64() > logs[1]["id"].as_i64());

    let found = audit
        .find_request("", "req-2")
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found.body_hash, "hash-2");
    assert_eq!(found.seq, 2);
    assert_eq!(found.published_at_us, BASE_US + 2_000_000);
    assert_eq!(found.pattern.as_deref(), Some("user:*:profile"));
    assert_eq!(found.pattern_type, Some(PatternType::Glob));
    assert_eq!(found.keys, vec!["user:1:profile".to_string()]);
    assert_eq!(found.matched_count, 6);
    assert!(
        audit
            .find_request("", "nope")
            .await
            .expect("find")
            .is_none()
    );
    // Another token's scope never sees this id.
    assert!(
        audit
            .find_request("other-tenant", "req-2")
            .await
            .expect("find")
            .is_none()
    );
    assert_eq!(audit.max_seq().await.expect("max_seq"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_rows_match_records() {
    let db = PgDb::create().await;
    let dir = temp_dir("pg-rows");
    let audit = AuditPipeline::start(&config(&dir, Some(db.url())))
        .await
        .expect("start");
    assert!(audit.ready());
    rows_match_records(&audit).await;
    // The raw columns, as an operator reading the table sees them.
    let mut c = db.conn().await;
    let row = sqlx::query(
        "SELECT kind, pattern, pattern_type, keys::text, latency_ms, latency_us, node_id, token_name, \
                body_hash, to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), created_at IS NOT NULL \
         FROM invalidation_audit WHERE request_id = 'req-1'",
    )
    .fetch_one(&mut c)
    .await
    .expect("row");
    assert_eq!(row.get::<String, _>(0), "keys");
    assert_eq!(row.get::<Option<String>, _>(1), None);
    assert_eq!(row.get::<String, _>(3), r#"["user:1", "user:2"]"#);
    assert_eq!(row.get::<i64, _>(4), 0);
    assert_eq!(row.get::<i64, _>(5), 107);
    assert_eq!(row.get::<String, _>(6), "node-a");
    assert_eq!(row.get::<String, _>(7), "orders-service");
    assert_eq!(row.get::<String, _>(8), "hash-1");
    assert_eq!(row.get::<String, _>(9), "2025-01-15 10:50:01");
    assert!(row.get::<bool, _>(10));
    audit.shutdown(deadline()).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_match_records() {
    let dir = temp_dir("sqlite-rows");
    let audit = AuditPipeline::start(&config(&dir, None))
        .await
        .expect("start");
    assert!(audit.ready());
    assert!(dir.join("audit.sqlite3").exists());
    rows_match_records(&audit).await;
    audit.shutdown(deadline()).await;
}

// ---- filters and paging ----------------------------------------------------------------

async fn filters_and_paging(audit: &AuditPipeline) {
    send_all(audit, workload(1..=300)).await;
    wait_until("300 rows", Duration::from_secs(10), async || {
        audit.stats().written == 300
    })
    .await;
    let q = async |s: &str| audit.query_logs(s).await.expect("query");

    let all = q("limit=1000").await;
    assert_eq!(all["total_count"], 300);
    assert_eq!(all["has_more"], false);
    let seqs: Vec<i64> = all["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=300).rev().collect::<Vec<_>>(), "newest first");

    let first = q("").await;
    assert_eq!(first["logs"].as_array().unwrap().len(), 50);
    assert_eq!(first["has_more"], true);
    let off = q("limit=10&offset=295").await;
    assert_eq!(off["logs"].as_array().unwrap().len(), 5);
    assert_eq!(off["has_more"], false);
    assert_eq!(off["total_count"], 300);

    // triggered_by: seq % 3 == 0 → admin, except the pattern ones (seq % 5 == 0).
    let admin = (1..=300).filter(|s| s % 5 != 0 && s % 3 == 0).count();
    let r = q("triggered_by=admin&limit=1000").await;
    assert_eq!(r["total_count"], admin as i64);
    assert!(
        r["logs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["triggered_by"] == "admin")
    );

    let r = q("request_id=req-42").await;
    assert_eq!(r["total_count"], 1);
    assert_eq!(r["logs"][0]["seq"], 42);

    // key: exact containment, not substring.
    let with_key = (1..=300).filter(|s| s % 5 != 0 && s % 10 == 7).count();
    let r = q("key=user%3A7&limit=1000").await;
    assert_eq!(r["total_count"], with_key as i64);
    assert!(
        r["logs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["keys"].as_array().unwrap().contains(&json!("user:7")))
    );
    assert_eq!(q("key=user%3A").await["total_count"], 0);
    assert_eq!(q("key=item%3A12").await["total_count"], 1);

    let r = q("pattern=user%3A1%3A*&limit=1000").await;
    let n = (1..=300).filter(|s| s % 5 == 0 && s % 3 == 1).count();
    assert_eq!(r["total_count"], n as i64);
    assert_eq!(r["logs"][0]["pattern_type"], "prefix");

    // since inclusive, until exclusive: seq s is at BASE + s seconds.
    let at = |s: i64| invalidator::time::format_us(BASE_US + s * 1_000_000).replace(':', "%3A");
    let r = q(&format!("since={}&until={}&limit=1000", at(100), at(110))).await;
    assert_eq!(r["total_count"], 10);
    assert_eq!(r["logs"][0]["seq"], 109);
    assert_eq!(r["logs"][9]["seq"], 100);

    // Combined filters, and keyset paging: before_id does not change total_count.
    let r = q("triggered_by=orders&key=user%3A1").await;
    let n = (1..=300)
        .filter(|s| s % 5 != 0 && s % 3 == 2 && s % 10 == 1)
        .count();
    assert_eq!(r["total_count"], n as i64);
    let mut seen = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let page = match cursor {
            None => q("limit=7&triggered_by=deploy").await,
            Some(c) => q(&format!("limit=7&triggered_by=deploy&before_id={c}")).await,
        };
        let logs = page["logs"].as_array().unwrap().clone();
        assert_eq!(
            page["total_count"],
            (1..=300).filter(|s| s % 5 != 0 && s % 3 == 1).count() as i64
        );
        seen.extend(logs.iter().map(|l| l["seq"].as_i64().unwrap()));
        if page["has_more"] == false {
            break;
        }
        cursor = logs.last().and_then(|l| l["id"].as_i64());
    }
    let expect: Vec<i64> = (1..=300)
        .rev()
        .filter(|s| s % 5 != 0 && s % 3 == 1)
        .collect();
    assert_eq!(seen, expect);

    // Validation.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("since=nope", "since"),
        ("before_id=x", "before_id"),
    ] {
        let e = audit.query_logs(query).await.expect_err(query);
        assert_eq!(e.body()["error"]["code"], "validation_failed");
        assert_eq!(e.field, Some(field));
    }
    assert_eq!(
        q("unknown=1&limit=1").await["logs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_filters_and_paging() {
    let db = PgDb::create().await;
    let dir = temp_dir("pg-filters");
    let audit = AuditPipeline::start(&config(&dir, Some(db.url())))
        .await
        .expect("start");
    filters_and_paging(&audit).await;
    audit.shutdown(deadline()).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_filters_and_paging() {
    let dir = temp_dir("sqlite-filters");
    let audit = AuditPipeline::start(&config(&dir, None))
        .await
        .expect("start");
    filters_and_paging(&audit).await;
    audit.shutdown(deadline()).await;
}

// ---- keyset paging while writes continue ------------------------------------------------

async fn keyset_while_writing(audit: Arc<AuditPipeline>) {
    send_all(&audit, workload(1..=1000)).await;
    wait_until("1000 rows", Duration::from_secs(10), async || {
        audit.stats().written == 1000
    })
    .await;
    let writer = {
        let audit = audit.clone();
        tokio::spawn(async move {
            for chunk in workload(1001..=4000).chunks(50) {
                send_all(&audit, chunk.to_vec()).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let first = audit.query_logs("limit=25").await.expect("page");
    let top = first["logs"][0]["id"].as_i64().expect("id");
    let mut ids: Vec<i64> = first["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    let mut cursor = *ids.last().unwrap();
    loop {
        let page = audit
            .query_logs(&format!("limit=25&before_id={cursor}"))
            .await
            .expect("page");
        let logs = page["logs"].as_array().unwrap();
        ids.extend(logs.iter().map(|l| l["id"].as_i64().unwrap()));
        match logs.last() {
            Some(l) if page["has_more"] == true => cursor = l["id"].as_i64().unwrap(),
            _ => break,
        }
    }
    writer.await.expect("writer");
    // Strictly decreasing (no duplicates) and exactly the rows with id <= top (no gaps).
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "ids not strictly decreasing"
    );
    let all = audit.query_logs("limit=1000").await.expect("q");
    assert!(all["total_count"].as_i64().unwrap() >= 1000);
    let mut expected = Vec::new();
    let mut cursor = top + 1;
    loop {
        let page = audit
            .query_logs(&format!("limit=1000&before_id={cursor}"))
            .await
            .expect("page");
        let logs = page["logs"].as_array().unwrap();
        expected.extend(logs.iter().map(|l| l["id"].as_i64().unwrap()));
        match logs.last() {
            Some(l) => cursor = l["id"].as_i64().unwrap(),
            None => break,
        }
    }
    assert_eq!(ids, expected);
    wait_until("4000 rows", Duration::from_secs(20), async || {
        audit.stats().written == 4000
    })
    .await;
    assert_eq!(
        audit.query_logs("limit=1").await.expect("q")["total_count"],
        4000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_keyset_pages_while_writing() {
    let db = PgDb::create().await;
    let dir = temp_dir("pg-keyset");
    let audit = AuditPipeline::start(&config(&dir, Some(db.url())))
        .await
        .expect("start");
    keyset_while_writing(audit.clone()).await;
    audit.shutdown(deadline()).await;
    assert_eq!(pg_count(&db).await, 4000);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keyset_pages_while_writing() {
    let dir = temp_dir("sqlite-keyset");
    let audit = AuditPipeline::start(&config(&dir, None))
        .await
        .expect("start");
    keyset_while_writing(audit.clone()).await;
    audit.shutdown(deadline()).await;
}

// ---- immutability ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_rejects_update_delete_truncate() {
    let db = PgDb::create().await;
    let dir = temp_dir("pg-immutable");
    let audit = AuditPipeline::start(&config(&dir, Some(db.url())))
        .await
        .expect("start");
    send_all(&audit, workload(1..=3)).await;
    audit.shutdown(deadline()).await;
    let mut c = db.conn().await;
    for sql in [
        "UPDATE invalidation_audit SET triggered_by = 'x'",
        "DELETE FROM invalidation_audit WHERE seq = 1",
        "TRUNCATE invalidation_audit",
        "UPDATE invalidation_audit_count SET total = 0",
        "TRUNCATE invalidation_audit_count",
        "UPDATE invalidation_audit_count_by_triggered_by SET total = 0",
        "DELETE FROM invalidation_audit_count_by_triggered_by",
    ] {
        let err = c.execute(sql).await.expect_err(sql);
        assert!(err.to_string().contains("not allowed"), "{sql}: {err}");
    }
    assert_eq!(pg_count(&db).await, 3);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rejects_update_delete() {
    let dir = temp_dir("sqlite-immutable");
    let audit = AuditPipeline::start(&config(&dir, None))
        .await
        .expect("start");
    send_all(&audit, workload(1..=3)).await;
    audit.shutdown(deadline()).await;
    let url = format!("sqlite://{}", dir.join("audit.sqlite3").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
    for sql in [
        "UPDATE invalidation_audit SET triggered_by = 'x'",
        "DELETE FROM invalidation_audit WHERE seq = 1",
        "DELETE FROM invalidation_audit",
        "DELETE FROM invalidation_audit_keys",
    ] {
        let err = c.execute(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM invalidation_audit")
        .fetch_one(&mut c)
        .await
        .expect("n");
    assert_eq!(n, 3);
}

// ---- faults ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_outage_mid_run_loses_and_duplicates_nothing() {
    let db = PgDb::create().await;
    let proxy = Proxy::start(true).await;
    let dir = temp_dir("pg-outage");
    let audit = AuditPipeline::start(&config(&dir, Some(db.url_via(proxy.addr))))
        .await
        .expect("start");
    assert!(audit.ready());
    send_all(&audit, workload(1..=2000)).await;
    proxy.cut();
    send_all(&audit, workload(2001..=4000)).await;
    wait_until("not ready", Duration::from_secs(10), async || {
        !audit.ready()
    })
    .await;
    send_all(&audit, workload(4001..=5000)).await;
    wait_until("spooled", Duration::from_secs(10), async || {
        audit.stats().spooled > 0
    })
    .await;
    let during = audit.stats();
    assert!(during.failed_batches >= 1, "{during:?}");
    proxy.restore();
    send_all(&audit, workload(5001..=6000)).await;
    wait_until(
        "ready + spool drained",
        Duration::from_secs(30),
        async || {
            let s = audit.stats();
            audit.ready() && s.spooled == 0 && s.queued == 0
        },
    )
    .await;
    audit.shutdown(deadline()).await;
    assert_eq!(pg_request_ids(&db).await, expected_ids(1..=6000));
    assert_eq!(pg_count(&db).await, 6000);
    // Acceptance order preserved: id order is seq order.
    let mut c = db.conn().await;
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY id) AS prev FROM invalidation_audit) t WHERE prev > seq",
    )
    .fetch_one(&mut c)
    .await
    .expect("order");
    assert_eq!(out_of_order, 0);
    // The live segment and the spare prepared after it; everything behind is deleted.
    assert!(
        wal_segments(&dir) <= 2,
        "segments behind the checkpoint are deleted"
    );
    drop(proxy);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_unreachable_at_start_then_appears() {
    let db = PgDb::create().await;
    let proxy = Proxy::start(false).await;
    let dir = temp_dir("pg-late");
    let started = Instant::now();
    let audit = AuditPipeline::start(&config(&dir, Some(db.url_via(proxy.addr))))
        .await
        .expect("start");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "start must not hang: {:?}",
        started.elapsed()
    );
    assert!(!audit.ready());
    send_all(&audit, workload(1..=500)).await;
    wait_until("spooled", Duration::from_secs(10), async || {
        audit.stats().spooled == 500
    })
    .await;
    // While the store is away an id cannot be proven new or old: an error (503 upstream).
    assert!(audit.find_request("", "req-7").await.is_err());
    assert!(audit.query_logs("").await.is_err(), "no store yet: 503");
    // The schema does not exist yet; it appears with the database.
    let mut c = db.conn().await;
    assert!(c.execute("SELECT 1 FROM invalidation_audit").await.is_err());
    proxy.restore();
    wait_until("ready + drained", Duration::from_secs(30), async || {
        audit.ready() && audit.stats().spooled == 0
    })
    .await;
    assert_eq!(audit.query_logs("").await.expect("q")["total_count"], 500);
    let found = audit
        .find_request("orders-service", "req-7")
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found.seq, 7);
    audit.shutdown(deadline()).await;
    assert_eq!(pg_request_ids(&db).await, expected_ids(1..=500));
    drop(proxy);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_spool_replayed_after_restart_exactly_once() {
    let db = PgDb::create().await;
    let proxy = Proxy::start(true).await;
    let dir = temp_dir("pg-restart");
    let cfg = config(&dir, Some(db.url_via(proxy.addr)));
    let audit = AuditPipeline::start(&cfg).await.expect("start");
    send_all(&audit, workload(1..=300)).await;
    wait_until("300 written", Duration::from_secs(10), async || {
        audit.stats().written == 300
    })
    .await;
    proxy.cut();
    send_all(&audit, workload(301..=1000)).await;
    audit.shutdown(deadline()).await; // store down: the rest stays in the write-ahead log
    assert_eq!(audit.stats().spooled, 700);
    assert_eq!(pg_count(&db).await, 300);
    drop(audit);

    // Also put already-stored rows into the log: a replay must not duplicate them.
    let again: Vec<AuditRow> = workload(250..=300)
        .iter()
        .map(AuditRow::from_record)
        .collect();
    write_wal_segment(&dir, 1_000_000, &again, 0);
    proxy.restore();
    let audit = AuditPipeline::start(&cfg).await.expect("restart");
    wait_until("log replayed", Duration::from_secs(30), async || {
        audit.stats().spooled == 0
    })
    .await;
    audit.shutdown(deadline()).await;
    assert_eq!(pg_request_ids(&db).await, expected_ids(1..=1000));
    assert_eq!(pg_count(&db).await, 1000);
    drop(proxy);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_is_replayed_up_to_the_tear() {
    let dir = temp_dir("torn");
    let rows: Vec<AuditRow> = workload(1..=20).iter().map(AuditRow::from_record).collect();
    write_wal_segment(&dir, 1, &rows, 3);

    let audit = AuditPipeline::start(&config(&dir, None))
        .await
        .expect("start");
    assert_eq!(audit.stats().wal_torn_frames, 1);
    wait_until("replayed", Duration::from_secs(10), async || {
        audit.stats().spooled == 0
    })
    .await;
    let all = audit.query_logs("limit=100").await.expect("q");
    assert_eq!(all["total_count"], 19);
    assert_eq!(all["logs"][0]["seq"], 19);
    // New records after the torn segment still land.
    send_all(&audit, workload(21..=25)).await;
    audit.shutdown(deadline()).await;
    let audit = AuditPipeline::start(&config(&dir, None))
        .await
        .expect("restart");
    assert_eq!(audit.query_logs("").await.expect("q")["total_count"], 24);
    audit.shutdown(deadline()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_channel_is_503_and_shutdown_refuses() {
    let dir = temp_dir("full");
    let mut cfg = config(&dir, None);
    cfg.audit.channel_capacity = 2;
    cfg.audit.enqueue_wait_ms = 20;
    let audit = AuditPipeline::start(&cfg).await.expect("start");
    // Hold both slots: the third reservation must time out with 503.
    let a = audit.reserve().await.expect("slot 1");
    let b = audit.reserve().await.expect("slot 2");
    let e = audit.reserve().await.err().expect("full");
    assert_eq!(e.code.status().as_u16(), 503);
    a.send(record(key_inv(1, &["k"], "t")));
    b.send(record(key_inv(2, &["k"], "t")));
    audit.shutdown(deadline()).await;
    let e = audit.reserve().await.err().expect("shut down");
    assert_eq!(e.code.status().as_u16(), 503);
    let audit = AuditPipeline::start(&cfg).await.expect("restart");
    assert_eq!(audit.query_logs("").await.expect("q")["total_count"], 2);
    audit.shutdown(deadline()).await;
}

// ---- the real server -------------------------------------------------------------------

/// `n` key invalidations from `tasks` concurrent connections; returns (request_id, seq).
async fn post_many(addr: SocketAddr, n: usize, tasks: usize) -> Vec<(String, u64)> {
    post_many_with(addr, n, tasks, true).await
}

/// As [`post_many`]; `with_ids` false lets the server generate every `request_id`.
async fn post_many_with(
    addr: SocketAddr,
    n: usize,
    tasks: usize,
    with_ids: bool,
) -> Vec<(String, u64)> {
    let per = n / tasks;
    let mut handles = Vec::new();
    for t in 0..tasks {
        handles.push(tokio::spawn(async move {
            let mut c = invalidator::http::client::HttpClient::connect(&addr.to_string())
                .await
                .expect("connect");
            let mut out = Vec::with_capacity(per);
            for i in 0..per {
                let mut body =
                    json!({"keys": [format!("user:{t}:{i}")], "triggered_by": format!("task-{t}")});
                if with_ids {
                    body["request_id"] = json!(format!("bulk-{t}-{i}"));
                }
                let r = c
                    .post_json("/invalidate/key", body.to_string(), None)
                    .await
                    .expect("post");
                assert_eq!(r.status, 200, "{}", r.json());
                let v = r.json();
                out.push((
                    v["request_id"].as_str().expect("rid").to_string(),
                    v["seq"].as_u64().expect("seq"),
                ));
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    all
}

fn sqlite_ids(dir: &Path) -> Vec<(String, i64)> {
    let path = dir.join("audit.sqlite3");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("open sqlite");
        sqlx::query("SELECT request_id, seq FROM invalidation_audit")
            .fetch_all(&mut c)
            .await
            .expect("rows")
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_5000_concurrent_then_sigterm_sqlite() {
    let mut server = common::TestServer::start().await;
    let posted = post_many(server.addr, 5000, 50).await;
    assert_eq!(server.sigterm(), 0);
    let dir = server.data_dir().to_path_buf();
    let rows = tokio::task::spawn_blocking(move || sqlite_ids(&dir))
        .await
        .expect("read");
    assert_eq!(
        rows.len(),
        5000,
        "exactly one row per accepted invalidation"
    );
    let stored: HashSet<(String, i64)> = rows.into_iter().collect();
    let sent: HashSet<(String, i64)> = posted.into_iter().map(|(r, s)| (r, s as i64)).collect();
    assert_eq!(stored, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_5000_concurrent_then_sigterm_postgres() {
    let db = PgDb::create().await;
    let mut server = common::TestServer::builder()
        .arg("--database-url")
        .arg(db.url())
        .start()
        .await;
    let posted = post_many(server.addr, 5000, 50).await;
    assert_eq!(server.sigterm(), 0);
    assert_eq!(pg_count(&db).await, 5000);
    let sent: HashSet<String> = posted.into_iter().map(|(r, _)| r).collect();
    assert_eq!(pg_request_ids(&db).await, sent);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rows_match_api_calls_and_filters() {
    let server = common::TestServer::start().await;
    let (st, k) = server
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["user:1", "user:2"], "triggered_by": "admin", "request_id": "req-k"}),
            None,
        )
        .await;
    assert_eq!(st, 200, "{k}");
    let (st, p) = server
        .post_json(
            "/invalidate/pattern",
            &json!({"pattern": "user:1:*", "triggered_by": "cache_manager", "request_id": "req-p",
                    "cache_keys": ["user:1:a", "user:2:a", "user:1:b"]}),
            None,
        )
        .await;
    assert_eq!(st, 200, "{p}");
    // A duplicate writes no row.
    let (st, d) = server
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["user:1", "user:2"], "triggered_by": "admin", "request_id": "req-k"}),
            None,
        )
        .await;
    assert_eq!((st, d["duplicate"].clone()), (200, json!(true)));

    let mut page = json!(null);
    for _ in 0..100 {
        let (st, v) = server.get_json("/audit/logs", None).await;
        assert_eq!(st, 200, "{v}");
        if v["total_count"] == 2 {
            page = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(page["total_count"], 2, "{page}");
    let (pl, kl) = (&page["logs"][0], &page["logs"][1]);
    assert_eq!(kl["kind"], "keys");
    assert_eq!(kl["request_id"], "req-k");
    assert_eq!(kl["seq"], k["seq"]);
    assert_eq!(kl["timestamp"], k["published_at"]);
    assert_eq!(kl["keys"], json!(["user:1", "user:2"]));
    assert_eq!(kl["triggered_by"], "admin");
    assert_eq!(kl["pattern"], Value::Null);
    assert_eq!(pl["kind"], "pattern");
    assert_eq!(pl["seq"], p["seq"]);
    assert_eq!(pl["timestamp"], p["published_at"]);
    assert_eq!(pl["pattern"], "user:1:*");
    assert_eq!(pl["pattern_type"], "prefix");
    assert_eq!(pl["keys"], p["matched_keys"]);
    assert_eq!(pl["matched_count"], p["invalidated_count"]);
    assert!(
        pl["latency_us"].as_u64().is_some() && pl["node_id"].is_string(),
        "{pl}"
    );

    let (_, v) = server
        .get_json("/audit/logs?triggered_by=cache_manager", None)
        .await;
    assert_eq!(
        (v["total_count"].clone(), v["logs"][0]["request_id"].clone()),
        (json!(1), json!("req-p"))
    );
    let (_, v) = server.get_json("/audit/logs?key=user%3A2", None).await;
    assert_eq!(
        (v["total_count"].clone(), v["logs"][0]["request_id"].clone()),
        (json!(1), json!("req-k"))
    );
    let (_, v) = server
        .get_json("/audit/logs?pattern=user%3A1%3A*", None)
        .await;
    assert_eq!(v["total_count"], 1);
    let (_, v) = server.get_json("/audit/logs?request_id=req-k", None).await;
    assert_eq!(v["total_count"], 1);
    let (_, v) = server.get_json("/audit/logs?limit=1", None).await;
    assert_eq!(
        (v["logs"].as_array().map(Vec::len), v["has_more"].clone()),
        (Some(1), json!(true))
    );
    let id = v["logs"][0]["id"].as_i64().expect("id");
    let (_, v) = server
        .get_json(&format!("/audit/logs?limit=1&before_id={id}"), None)
        .await;
    assert_eq!(
        (v["logs"][0]["request_id"].clone(), v["has_more"].clone()),
        (json!("req-k"), json!(false))
    );
    let (st, v) = server.get_json("/audit/logs?limit=0", None).await;
    assert_eq!(
        (st, v["error"]["code"].clone(), v["error"]["field"].clone()),
        (400, json!("validation_failed"), json!("limit"))
    );
    let (st, v) = server.get_json("/audit/logs?since=garbage", None).await;
    assert_eq!((st, v["error"]["field"].clone()), (400, json!("since")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_accepts_while_database_is_down_then_catches_up() {
    let db = PgDb::create().await;
    let proxy = Proxy::start(false).await;
    let mut server = common::TestServer::builder()
        .arg("--database-url")
        .arg(db.url_via(proxy.addr))
        .start()
        .await;
    let (st, _) = server.get("/readyz", None).await;
    assert_eq!(st, 503, "store unreachable: not ready");
    // An id the node cannot prove new (the store may hold it) is refused, not accepted twice.
    let (st, v) = server
        .post_json(
            "/invalidate/key",
            &json!({"keys": ["k"], "triggered_by": "t", "request_id": "maybe-old"}),
            None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (503, json!("unavailable"))
    );
    // Requests without an id are accepted into the write-ahead log.
    let posted = post_many_with(server.addr, 200, 4, false).await;
    assert_eq!(posted.len(), 200);
    proxy.restore();
    let mut ready = false;
    for _ in 0..300 {
        if server.get("/readyz", None).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ready once the database appears");
    assert_eq!(server.sigterm(), 0);
    let sent: HashSet<String> = posted.into_iter().map(|(r, _)| r).collect();
    assert_eq!(pg_request_ids(&db).await, sent);
    assert_eq!(pg_count(&db).await, 200);
    drop(proxy);
    db.drop_db().await;
}
