//! The `invalidator` binary: `serve` (the default) and the operator subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use invalidator::config::{Config, FileConfig};
use invalidator::http::client::{HttpClient, authority};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "invalidator",
    version,
    about = "Cache-invalidation push server and its operator CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Invalidate keys or a pattern through a running server.
    Invalidate {
        #[command(subcommand)]
        what: InvalidateCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the server's metrics (JSON, or Prometheus text with --prometheus).
    Metrics {
        #[arg(long)]
        prometheus: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Read the audit log.
    Audit(AuditArgs),
    /// Print live invalidation events (JSON lines); reconnects and resumes on its own.
    Tail {
        /// Patterns to subscribe to (inferred types, as in SPEC) [default: every key]
        #[arg(long = "pattern", default_value = "*")]
        patterns: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:4000, or `listen` in the config file].
    #[arg(long, env = "INVALIDATOR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the embedded SQLite audit file, the write-ahead log and the seq mark
    /// [default: ./data, or `data_dir` in the config file].
    #[arg(long, env = "INVALIDATOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file (tokens, limits, audit and WebSocket settings).
    #[arg(long, env = "INVALIDATOR_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL URL for the audit store; without it, SQLite under the data dir.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// NATS URL: turns cluster mode on.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Node name in `hello` and the audit log [default: HOSTNAME-PORT].
    #[arg(long, env = "INVALIDATOR_NODE_ID")]
    node_id: Option<String>,
    /// Serve without tokens on a non-loopback address.
    #[arg(long, env = "INVALIDATOR_ALLOW_OPEN")]
    allow_open: bool,
    /// A token with every scope, named "admin" (in addition to the config file's tokens).
    #[arg(long, env = "INVALIDATOR_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// One deadline for a graceful shutdown, seconds [default: 25, under the usual 30 s kill
    /// grace; or `shutdown_timeout_secs` in the config file].
    #[arg(long, env = "INVALIDATOR_SHUTDOWN_TIMEOUT_SECS")]
    shutdown_timeout_secs: Option<u64>,
}

/// Where the operator subcommands find the server.
#[derive(Args, Clone)]
struct Remote {
    /// Server base URL.
    #[arg(
        long,
        env = "INVALIDATOR_URL",
        default_value = "http://127.0.0.1:4000",
        global = true
    )]
    server: String,
    /// Bearer token.
    #[arg(long, env = "INVALIDATOR_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum InvalidateCmd {
    /// Invalidate exact keys.
    Key {
        #[arg(required = true)]
        keys: Vec<String>,
        /// Who triggered it (recorded in the audit log).
        #[arg(long = "by", env = "INVALIDATOR_TRIGGERED_BY")]
        by: String,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Invalidate by pattern.
    Pattern {
        pattern: String,
        /// exact, prefix, suffix, glob or regex [default: inferred]
        #[arg(long = "type")]
        pattern_type: Option<String>,
        #[arg(long = "by", env = "INVALIDATOR_TRIGGERED_BY")]
        by: String,
        #[arg(long)]
        request_id: Option<String>,
        /// Keys the caller holds, matched against the pattern.
        #[arg(long = "cache-key")]
        cache_keys: Vec<String>,
    },
}

#[derive(Args)]
struct AuditArgs {
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    offset: Option<u64>,
    #[arg(long)]
    triggered_by: Option<String>,
    #[arg(long)]
    request_id: Option<String>,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    pattern: Option<String>,
    /// RFC 3339, inclusive.
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339, exclusive.
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    before_id: Option<u64>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INVALIDATOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn resolve_config(a: ServeArgs) -> Result<Config, String> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p).map_err(|e| e.to_string())?,
        None => FileConfig::default(),
    };
    let d = Config::default();
    let listen = a.listen.or(file.listen).unwrap_or(d.listen);
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let mut tokens = file.tokens;
    if let Some(secret) = a.admin_token {
        tokens.push(invalidator::config::TokenConfig {
            name: "admin".into(),
            token_sha256: None,
            token: Some(secret),
            scopes: ["invalidate", "subscribe", "audit:read", "metrics"]
                .map(String::from)
                .to_vec(),
            prefixes: None,
            rate_limit: None,
        });
    }
    Ok(Config {
        listen,
        data_dir: a.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
        database_url: a
            .database_url
            .or(file.database_url)
            .filter(|s| !s.is_empty()),
        nats_url: a.nats_url.or(file.nats_url).filter(|s| !s.is_empty()),
        node_id: a
            .node_id
            .or(file.node_id)
            .unwrap_or_else(|| format!("{host}-{}", listen.port())),
        allow_open: a.allow_open || file.allow_open.unwrap_or(false),
        limits: file.limits,
        audit: file.audit,
        ws: file.ws,
        http: file.http,
        cluster: file.cluster,
        tokens,
        shutdown_timeout: a
            .shutdown_timeout_secs
            .or(file.shutdown_timeout_secs)
            .map_or(d.shutdown_timeout, std::time::Duration::from_secs),
    })
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match resolve_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalidator: {e}");
            return ExitCode::from(2);
        }
    };
    let app = match invalidator::server::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("invalidator: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match invalidator::server::bind(&app.config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("invalidator: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, node_id = %app.config.node_id, open = app.auth.is_open(), "listening");
    // One machine-readable line on stdout so scripts and tests learn the bound port.
    println!("listening on {addr}");
    invalidator::server::serve(app, listener, invalidator::server::signal()).await;
    ExitCode::SUCCESS
}

async fn remote_call(
    remote: &Remote,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, String), String> {
    let addr = authority(&remote.server).map_err(|e| e.to_string())?;
    let mut c = HttpClient::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let token = remote.token.as_deref();
    let reply = match body {
        Some(b) => c.post_json(path, b.to_string(), token).await,
        None => c.get(path, token).await,
    }
    .map_err(|e| e.to_string())?;
    Ok((
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    ))
}

fn finish(result: Result<(u16, String), String>) -> ExitCode {
    match result {
        Ok((status, body)) => {
            println!("{body}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("invalidator: {e}");
            ExitCode::from(2)
        }
    }
}

fn query_string(a: &AuditArgs) -> String {
    let mut q = vec![format!("limit={}", a.limit)];
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            q.push(format!("{k}={}", percent_encode(&v)));
        }
    };
    add("offset", a.offset.map(|v| v.to_string()));
    add("triggered_by", a.triggered_by.clone());
    add("request_id", a.request_id.clone());
    add("key", a.key.clone());
    add("pattern", a.pattern.clone());
    add("since", a.since.clone());
    add("until", a.until.clone());
    add("before_id", a.before_id.map(|v| v.to_string()));
    q.join("&")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn print_audit_table(body: &str) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    println!(
        "{:>8} {:>8} {:<24} {:<8} {:<16} {:>6} pattern / keys",
        "id", "seq", "timestamp", "kind", "triggered_by", "keys"
    );
    for l in v["logs"].as_array().into_iter().flatten() {
        let keys: Vec<&str> = l["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str())
            .collect();
        let what = l["pattern"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| keys.join(","));
        println!(
            "{:>8} {:>8} {:<24} {:<8} {:<16} {:>6} {}",
            l["id"].to_string(),
            l["seq"].to_string(),
            l["timestamp"].as_str().unwrap_or(""),
            l["kind"].as_str().unwrap_or(""),
            l["triggered_by"].as_str().unwrap_or(""),
            l["matched_count"].to_string(),
            what
        );
    }
    println!(
        "total_count: {}  has_more: {}",
        v["total_count"], v["has_more"]
    );
}

/// `invalidator tail`: subscribe, print every event as one JSON line; on a dropped connection
/// reconnect and `resume` from the last seq seen (a `reset` is printed too).
async fn tail(patterns: Vec<String>, remote: Remote) -> ExitCode {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let addr = match authority(&remote.server) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("invalidator: {e}");
            return ExitCode::from(2);
        }
    };
    let url = match &remote.token {
        Some(t) => format!("ws://{addr}/ws?token={}", percent_encode(t)),
        None => format!("ws://{addr}/ws"),
    };
    let mut position: Option<(String, u64)> = None;
    loop {
        let (mut ws, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("invalidator: cannot connect to {url}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut ops = vec![json!({"op": "subscribe", "patterns": patterns})];
        if let Some((epoch, seq)) = &position {
            ops.push(json!({"op": "resume", "epoch": epoch, "since_seq": seq}));
        }
        for op in ops {
            if ws.send(Message::text(op.to_string())).await.is_err() {
                break;
            }
        }
        let mut here: Option<(String, u64)> = None;
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
            match v["type"].as_str() {
                Some("hello") => {
                    here = Some((
                        v["epoch"].as_str().unwrap_or_default().to_string(),
                        v["seq"].as_u64().unwrap_or(0),
                    ));
                    if position.is_none() {
                        position = here.clone();
                    }
                }
                Some("reset") => {
                    // History was lost: continue from this server's current position.
                    position = here.clone();
                    println!("{text}");
                }
                Some("invalidate") => {
                    if let Some(p) = position.as_mut() {
                        p.1 = v["seq"].as_u64().unwrap_or(p.1);
                    }
                    println!("{text}");
                }
                Some("error") => println!("{text}"),
                _ => {}
            }
        }
        eprintln!("invalidator: connection closed; reconnecting");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Invalidate { what, remote }) => {
            let (path, body) = match what {
                InvalidateCmd::Key {
                    keys,
                    by,
                    request_id,
                } => (
                    "/invalidate/key",
                    json!({"keys": keys, "triggered_by": by, "request_id": request_id}),
                ),
                InvalidateCmd::Pattern {
                    pattern,
                    pattern_type,
                    by,
                    request_id,
                    cache_keys,
                } => (
                    "/invalidate/pattern",
                    json!({"pattern": pattern, "pattern_type": pattern_type, "triggered_by": by,
                           "request_id": request_id, "cache_keys": cache_keys}),
                ),
            };
            finish(remote_call(&remote, path, Some(body)).await)
        }
        Some(Command::Metrics { prometheus, remote }) => {
            let path = if prometheus {
                "/metrics"
            } else {
                "/invalidate/metrics"
            };
            finish(remote_call(&remote, path, None).await)
        }
        Some(Command::Tail { patterns, remote }) => tail(patterns, remote).await,
        Some(Command::Audit(a)) => {
            let path = format!("/audit/logs?{}", query_string(&a));
            match remote_call(&a.remote, &path, None).await {
                Ok((200, body)) if !a.json => {
                    print_audit_table(&body);
                    ExitCode::SUCCESS
                }
                other => finish(other),
            }
        }
    }
}
