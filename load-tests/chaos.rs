//! Scenario `chaos`: faults run against the real binary, and a count of what survived.
//!
//! Each run drives `POST /invalidate/key` (fresh `request_id`s, many connections) while a
//! fault happens, then reads the audit store directly and compares it with what the server
//! acknowledged:
//!
//! * `kill9-sqlite`, `kill9-postgres`: `kill -9` mid-burst, restart on the same data dir;
//! * `pg-restart`: PostgreSQL restarted mid-load (`pg_ctlcluster ... restart`);
//! * `nats-restart`: two cluster nodes, the NATS server killed and started again mid-load;
//! * `node-kill`: two cluster nodes, a burst on one, that node killed for good.
//!
//! A run fails when an acknowledged invalidation has no audit row (`missing`) or a request has
//! more than one (`duplicated`). It also reports rows of requests whose answer was lost with
//! the process (`unacknowledged_audited`: allowed, their outcome was unknown to the client)
//! and acknowledged events a WebSocket subscriber never received (`pushes_missing`; a
//! failure only where no server process died, since a killed process takes its unsent frames
//! with it). Exit status: non-zero if any run lost or duplicated anything.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use invalidator::http::client::HttpClient;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio_tungstenite::tungstenite::Message;

use super::common::BoxError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    Kill9Sqlite,
    Kill9Postgres,
    PgRestart,
    NatsRestart,
    NodeKill,
    /// Every fault above, in that order.
    All,
}

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Which fault to run.
    #[arg(value_enum)]
    fault: Fault,
    /// Runs of each fault.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// The server binary.
    #[arg(long, default_value = "target/release/invalidator")]
    bin: PathBuf,
    /// Concurrent publishing connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Seconds of load before the fault.
    #[arg(long, default_value_t = 2.0)]
    before_secs: f64,
    /// Seconds of load after the fault (restart faults).
    #[arg(long, default_value_t = 2.0)]
    after_secs: f64,
    /// PostgreSQL server (a database is created per run and dropped after it).
    #[arg(
        long,
        env = "CHAOS_PG",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg: String,
    /// NATS with JetStream (cluster faults).
    #[arg(long, env = "CHAOS_NATS", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Write every run's counts as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one run counted.
#[derive(Debug, Default)]
struct Outcome {
    fault: &'static str,
    acknowledged: usize,
    refused: usize,
    rows: usize,
    missing: usize,
    duplicated: usize,
    unacknowledged_audited: usize,
    pushes_missing: usize,
    /// Pushes must all arrive (no server process died in this fault).
    pushes_required: bool,
    seconds: f64,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && (!self.pushes_required || self.pushes_missing == 0)
            && self.acknowledged > 0
    }

    fn to_json(&self) -> Value {
        json!({"fault": self.fault, "acknowledged": self.acknowledged, "refused": self.refused,
               "rows": self.rows, "missing": self.missing, "duplicated": self.duplicated,
               "unacknowledged_audited": self.unacknowledged_audited,
               "pushes_missing": self.pushes_missing, "pushes_required": self.pushes_required,
               "seconds": self.seconds, "ok": self.ok()})
    }
}

pub async fn run(a: ChaosArgs) -> Result<(), BoxError> {
    let faults = match a.fault {
        Fault::All => vec![
            Fault::Kill9Sqlite,
            Fault::Kill9Postgres,
            Fault::PgRestart,
            Fault::NatsRestart,
            Fault::NodeKill,
        ],
        f => vec![f],
    };
    let mut all = Vec::new();
    for fault in faults {
        for i in 0..a.runs.max(1) {
            eprintln!("chaos: {fault:?} run {}/{}", i + 1, a.runs.max(1));
            let o = run_one(&a, fault).await?;
            println!(
                "{:<15} acked {:>6}  rows {:>6}  missing {}  duplicated {}  unacked-audited {}  pushes-missing {}{}  {:.1} s  {}",
                o.fault,
                o.acknowledged,
                o.rows,
                o.missing,
                o.duplicated,
                o.unacknowledged_audited,
                o.pushes_missing,
                if o.pushes_required {
                    " (required 0)"
                } else {
                    ""
                },
                o.seconds,
                if o.ok() { "OK" } else { "FAILED" }
            );
            all.push(o);
        }
    }
    let failed = all.iter().filter(|o| !o.ok()).count();
    println!("chaos: {} passed, {failed} failed", all.len() - failed);
    if let Some(path) = &a.json {
        let v: Vec<Value> = all.iter().map(Outcome::to_json).collect();
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    if failed > 0 {
        return Err(
            format!("{failed} chaos run(s) lost or duplicated acknowledged invalidations").into(),
        );
    }
    Ok(())
}

async fn run_one(a: &ChaosArgs, fault: Fault) -> Result<Outcome, BoxError> {
    let started = Instant::now();
    let tag = format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
    let dir = std::env::temp_dir().join(format!("inv-chaos-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let db = match fault {
        Fault::Kill9Sqlite => None,
        _ => Some(Database::create(&a.pg, &tag).await?),
    };
    let mut o = match fault {
        Fault::Kill9Sqlite | Fault::Kill9Postgres => kill9(a, &dir, db.as_ref(), &tag).await?,
        Fault::PgRestart => pg_restart(a, &dir, db.as_ref(), &tag).await?,
        Fault::NatsRestart => nats_restart(a, &dir, db.as_ref(), &tag).await?,
        Fault::NodeKill => node_kill(a, &dir, db.as_ref(), &tag).await?,
        Fault::All => unreachable!("expanded above"),
    };
    o.seconds = started.elapsed().as_secs_f64();
    if let Some(db) = db {
        db.drop_db().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(o)
}

// ---- the faults ---------------------------------------------------------------------------

async fn kill9(
    a: &ChaosArgs,
    dir: &Path,
    db: Option<&Database>,
    tag: &str,
) -> Result<Outcome, BoxError> {
    let name = if db.is_some() {
        "kill9-postgres"
    } else {
        "kill9-sqlite"
    };
    let extra = db
        .map(|d| vec!["--database-url".to_string(), d.url()])
        .unwrap_or_default();
    let mut server = Server::start(&a.bin, dir, &extra)?;
    server.ready().await?;
    let load = Load::start(&server.addr(), a.connections, tag, "chaos").await?;
    tokio::time::sleep(Duration::from_secs_f64(a.before_secs)).await;
    server.kill();
    let ledger = load.stop().await;
    // Restart on the same data dir: the write-ahead log is replayed into the store.
    let mut again = Server::start(&a.bin, dir, &extra)?;
    again.ready().await?;
    again.caught_up().await?;
    again.stop();
    let rows = match db {
        Some(db) => db.counts(tag).await?,
        None => sqlite_counts(&dir.join("audit.sqlite3"), tag).await?,
    };
    Ok(tally(name, &ledger, &rows, false))
}

async fn pg_restart(
    a: &ChaosArgs,
    dir: &Path,
    db: Option<&Database>,
    tag: &str,
) -> Result<Outcome, BoxError> {
    let db = db.ok_or("pg-restart needs PostgreSQL")?;
    let mut server = Server::start(&a.bin, dir, &["--database-url".to_string(), db.url()])?;
    server.ready().await?;
    let load = Load::start(&server.addr(), a.connections, tag, "chaos").await?;
    tokio::time::sleep(Duration::from_secs_f64(a.before_secs)).await;
    restart_postgres()?;
    tokio::time::sleep(Duration::from_secs_f64(a.after_secs)).await;
    let ledger = load.stop().await;
    server.caught_up().await?;
    server.stop();
    Ok(tally("pg-restart", &ledger, &db.counts(tag).await?, true))
}

async fn nats_restart(
    a: &ChaosArgs,
    dir: &Path,
    db: Option<&Database>,
    tag: &str,
) -> Result<Outcome, BoxError> {
    let db = db.ok_or("nats-restart needs PostgreSQL")?;
    let (mut n1, mut n2) = cluster_pair(a, dir, db, tag).await?;
    // Subscribed before the first request, so every acknowledged event is owed to it.
    let sub = Subscriber::start(&n2.addr(), "chaos:*").await?;
    sub.subscribed().await?;
    let load = Load::start(&n1.addr(), a.connections, tag, "chaos").await?;
    tokio::time::sleep(Duration::from_secs_f64(a.before_secs)).await;
    restart_nats()?;
    tokio::time::sleep(Duration::from_secs_f64(a.after_secs)).await;
    let mut ledger = load.stop().await;
    wait_rows(db, tag, ledger.acked.len(), Duration::from_secs(60)).await?;
    ledger.pushed = sub.stop(&ledger.acked, Duration::from_secs(60)).await;
    n1.stop();
    n2.stop();
    drop_stream(&a.nats, tag).await;
    Ok(tally("nats-restart", &ledger, &db.counts(tag).await?, true))
}

async fn node_kill(
    a: &ChaosArgs,
    dir: &Path,
    db: Option<&Database>,
    tag: &str,
) -> Result<Outcome, BoxError> {
    let db = db.ok_or("node-kill needs PostgreSQL")?;
    let (mut n1, mut n2) = cluster_pair(a, dir, db, tag).await?;
    let load = Load::start(&n1.addr(), a.connections, tag, "chaos").await?;
    tokio::time::sleep(Duration::from_secs_f64(a.before_secs)).await;
    n1.kill();
    let ledger = load.stop().await;
    // Never restarted: the surviving node's share of the audit consumer writes its rows.
    wait_rows(db, tag, ledger.acked.len(), Duration::from_secs(60)).await?;
    n2.stop();
    drop_stream(&a.nats, tag).await;
    Ok(tally("node-kill", &ledger, &db.counts(tag).await?, false))
}

/// Two nodes on their own stream (short audit ack wait) and the run's database.
async fn cluster_pair(
    a: &ChaosArgs,
    dir: &Path,
    db: &Database,
    tag: &str,
) -> Result<(Server, Server), BoxError> {
    let toml = dir.join("cluster.toml");
    std::fs::write(
        &toml,
        format!(
            "nats_url = \"{}\"\n[cluster]\nstream = \"CHAOS_{tag}\"\nsubject = \"chaos-{tag}\"\naudit_ack_wait_secs = 3\n",
            a.nats
        ),
    )?;
    let mut nodes = Vec::new();
    for id in ["chaos-a", "chaos-b"] {
        let args = [
            "--config".to_string(),
            toml.display().to_string(),
            "--database-url".to_string(),
            db.url(),
            "--node-id".to_string(),
            id.to_string(),
        ];
        let mut s = Server::start(&a.bin, &dir.join(id), &args)?;
        s.ready().await?;
        nodes.push(s);
    }
    let n2 = nodes.pop().ok_or("node")?;
    let n1 = nodes.pop().ok_or("node")?;
    Ok((n1, n2))
}

async fn drop_stream(nats: &str, tag: &str) {
    if let Ok(c) = async_nats::connect(nats).await {
        let _ = async_nats::jetstream::new(c)
            .delete_stream(format!("CHAOS_{tag}"))
            .await;
    }
}

fn restart_postgres() -> Result<(), BoxError> {
    let version = std::fs::read_dir("/etc/postgresql")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .ok_or("no cluster under /etc/postgresql")?;
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()?;
    if !status.success() {
        return Err(format!("pg_ctlcluster restart failed: {status}").into());
    }
    Ok(())
}

/// Kill the local nats-server and start it again with its own command line.
fn restart_nats() -> Result<(), BoxError> {
    let (pid, cmdline) = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first()?
                .ends_with("nats-server")
                .then_some((pid, args))
        })
        .ok_or("no nats-server process found")?;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new(&cmdline[0])
        .args(&cmdline[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}

// ---- counting ----------------------------------------------------------------------------

/// What the load saw: acknowledged request ids, refusals, and (optionally) ids pushed.
#[derive(Default)]
struct Ledger {
    acked: HashSet<String>,
    refused: usize,
    pushed: Option<HashSet<String>>,
}

fn tally(
    fault: &'static str,
    l: &Ledger,
    rows: &HashMap<String, usize>,
    pushes_required: bool,
) -> Outcome {
    let missing = l.acked.iter().filter(|id| !rows.contains_key(*id)).count();
    let duplicated = rows.values().map(|n| n.saturating_sub(1)).sum();
    let unacked = rows.keys().filter(|id| !l.acked.contains(*id)).count();
    let pushes_missing = l
        .pushed
        .as_ref()
        .map_or(0, |p| l.acked.iter().filter(|id| !p.contains(*id)).count());
    Outcome {
        fault,
        acknowledged: l.acked.len(),
        refused: l.refused,
        rows: rows.values().sum(),
        missing,
        duplicated,
        unacknowledged_audited: unacked,
        pushes_missing,
        pushes_required: pushes_required && l.pushed.is_some(),
        seconds: 0.0,
    }
}

async fn sqlite_counts(path: &Path, tag: &str) -> Result<HashMap<String, usize>, BoxError> {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT request_id, count(*) FROM invalidation_audit WHERE request_id LIKE ? GROUP BY request_id",
    )
    .bind(format!("chaos-{tag}-%"))
    .fetch_all(&mut c)
    .await?;
    Ok(rows.into_iter().map(|(id, n)| (id, n as usize)).collect())
}

struct Database {
    server: String,
    name: String,
}

impl Database {
    async fn create(server: &str, tag: &str) -> Result<Database, BoxError> {
        let name = format!("inv_chaos_{tag}");
        let mut c = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::Executor::execute(
            &mut c,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await?;
        Ok(Database {
            server: server.to_string(),
            name,
        })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    async fn connect(&self) -> Result<sqlx::PgConnection, BoxError> {
        // PostgreSQL may be coming back from a restart.
        let mut last = None;
        for _ in 0..100 {
            match sqlx::PgConnection::connect(&self.url()).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.map_or_else(|| "cannot connect".into(), |e| e.into()))
    }

    async fn counts(&self, tag: &str) -> Result<HashMap<String, usize>, BoxError> {
        let mut c = self.connect().await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT request_id, count(*) FROM invalidation_audit WHERE request_id LIKE $1 GROUP BY request_id",
        )
        .bind(format!("chaos-{tag}-%"))
        .fetch_all(&mut c)
        .await?;
        Ok(rows.into_iter().map(|(id, n)| (id, n as usize)).collect())
    }

    async fn drop_db(self) {
        if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{}/postgres", self.server)).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::Executor::execute(&mut c, sqlx::AssertSqlSafe(sql)).await;
        }
    }
}

async fn wait_rows(
    db: &Database,
    tag: &str,
    want: usize,
    within: Duration,
) -> Result<(), BoxError> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let have = db.counts(tag).await?;
        if have.len() >= want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(()) // the tally reports what is missing
}

// ---- the processes and clients -----------------------------------------------------------

struct Server {
    child: Option<Child>,
    port: u16,
}

impl Server {
    fn start(bin: &Path, dir: &Path, extra: &[String]) -> Result<Server, BoxError> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--data-dir", &dir.display().to_string()])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Server {
            child: Some(child),
            port,
        })
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn metrics(&self) -> Option<Value> {
        let mut c = HttpClient::connect(&self.addr()).await.ok()?;
        let r = c.get("/invalidate/metrics", None).await.ok()?;
        (r.status == 200).then(|| r.json())
    }

    async fn ready(&mut self) -> Result<(), BoxError> {
        for _ in 0..300 {
            if let Ok(mut c) = HttpClient::connect(&self.addr()).await
                && let Ok(r) = c.get("/readyz", None).await
                && r.status == 200
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("server exited at start-up: {status}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("server not ready within 15 s".into())
    }

    /// Every record in the write-ahead log is in the store.
    async fn caught_up(&self) -> Result<(), BoxError> {
        for _ in 0..600 {
            if let Some(m) = self.metrics().await
                && m["audit"]["spooled"] == 0
                && m["audit"]["queued"] == 0
                && m["audit"]["store_ready"] == true
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the audit store did not catch up within 60 s".into())
    }

    /// SIGKILL: nothing drains.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..600 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishing connections; each keeps going (reconnecting) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<String>, usize)>>,
}

impl Load {
    async fn start(
        addr: &str,
        connections: usize,
        tag: &str,
        key_prefix: &str,
    ) -> Result<Load, BoxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for conn in 0..connections.max(1) {
            let (stop, addr) = (stop.clone(), addr.to_string());
            let (tag, key_prefix) = (tag.to_string(), key_prefix.to_string());
            tasks.push(tokio::spawn(async move {
                let (mut acked, mut refused) = (Vec::new(), 0usize);
                let mut client: Option<HttpClient> = None;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let c = match client.as_mut() {
                        Some(c) => c,
                        None => match HttpClient::connect(&addr).await {
                            Ok(c) => client.insert(c),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        },
                    };
                    n += 1;
                    let id = format!("chaos-{tag}-{conn}-{n}");
                    let body = format!(
                        "{{\"keys\":[\"{key_prefix}:{conn}:{n}\"],\"triggered_by\":\"chaos\",\"request_id\":\"{id}\"}}"
                    );
                    match c.post_json("/invalidate/key", body, None).await {
                        Ok(r) if r.status == 200 => acked.push(id),
                        Ok(_) => refused += 1,
                        Err(_) => {
                            client = None;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (acked, refused)
            }));
        }
        Ok(Load { stop, tasks })
    }

    async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        let mut ledger = Ledger::default();
        for t in self.tasks {
            if let Ok((acked, refused)) = t.await {
                ledger.acked.extend(acked);
                ledger.refused += refused;
            }
        }
        ledger
    }
}

/// A WebSocket subscriber recording the `request_id` of every event; it resumes after a
/// disconnect, as a cache manager does.
struct Subscriber {
    seen: Arc<Mutex<HashSet<String>>>,
    /// Set once the first `subscribed` reply arrived.
    ready: Arc<AtomicBool>,
    /// `reset` frames received (each says events may have been missed).
    resets: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(addr: &str, pattern: &str) -> Result<Subscriber, BoxError> {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let resets = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = resets.clone();
        let ready = Arc::new(AtomicBool::new(false));
        let rd = ready.clone();
        let (url, pattern, s) = (format!("ws://{addr}/ws"), pattern.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            let mut position: Option<(String, u64)> = None;
            loop {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let sub = json!({"op": "subscribe", "patterns": [pattern]}).to_string();
                if ws.send(Message::text(sub)).await.is_err() {
                    continue;
                }
                if let Some((epoch, seq)) = &position {
                    let r = json!({"op": "resume", "epoch": epoch, "since_seq": seq}).to_string();
                    let _ = ws.send(Message::text(r)).await;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(t) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    match v["type"].as_str() {
                        Some("hello") if position.is_none() => {
                            position = Some((
                                v["epoch"].as_str().unwrap_or("").to_string(),
                                v["seq"].as_u64().unwrap_or(0),
                            ));
                        }
                        Some("subscribed") => rd.store(true, Ordering::Release),
                        Some("reset") => {
                            r.fetch_add(1, Ordering::Relaxed);
                            eprintln!("chaos subscriber: reset {}", v["reason"]);
                        }
                        Some("invalidate") => {
                            if let Some(id) = v["request_id"].as_str() {
                                s.lock().insert(id.to_string());
                            }
                            if let (Some(p), Some(seq)) = (position.as_mut(), v["seq"].as_u64()) {
                                p.1 = p.1.max(seq);
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        Ok(Subscriber {
            seen,
            ready,
            resets,
            task,
        })
    }

    /// Wait (at most 10 s) for the subscription to be in place.
    async fn subscribed(&self) -> Result<(), BoxError> {
        for _ in 0..200 {
            if self.ready.load(Ordering::Acquire) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the subscriber was not subscribed within 10 s".into())
    }

    /// Wait (at most `within`) until every acknowledged id was pushed; what was seen.
    async fn stop(self, acked: &HashSet<String>, within: Duration) -> Option<HashSet<String>> {
        let until = Instant::now() + within;
        while Instant::now() < until && !acked.iter().all(|id| self.seen.lock().contains(id)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.task.abort();
        let seen = self.seen.lock().clone();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|id| !seen.contains(*id))
            .take(5)
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "chaos subscriber: {} resets; not pushed, e.g. {missing:?}",
                self.resets.load(Ordering::Relaxed)
            );
        }
        Some(seen)
    }
}
