//! Every option and limit, with its default, its environment variable and its TOML key.
//!
//! Precedence: command line / environment (clap) > config file (TOML) > built-in default.
//! The README's configuration table mirrors this file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Request limits (SPEC "Default limits").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_pattern_body_bytes: usize,
    pub max_keys: usize,
    pub max_cache_keys: usize,
    pub max_key_bytes: usize,
    pub max_pattern_bytes: usize,
    pub max_triggered_by_bytes: usize,
    pub max_request_id_bytes: usize,
    /// Cap on `matched_keys` in a response and on stored keys of a pattern audit record.
    pub max_matched_keys: usize,
    /// Size limit of one compiled regex or glob automaton, bytes.
    pub max_regex_bytes: usize,
    /// Entries in the compiled-pattern LRU.
    pub pattern_cache_size: usize,
    /// Maximum WebSocket frame a client may send, bytes.
    pub max_ws_frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_pattern_body_bytes: 8 << 20,
            max_keys: 10_000,
            max_cache_keys: 100_000,
            max_key_bytes: 1024,
            max_pattern_bytes: 1024,
            max_triggered_by_bytes: 256,
            max_request_id_bytes: 128,
            max_matched_keys: 10_000,
            max_regex_bytes: 1 << 20,
            pattern_cache_size: 4096,
            max_ws_frame_bytes: 8 << 20,
        }
    }
}

/// Audit pipeline settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Capacity of the bounded channel between requests and the writer.
    pub channel_capacity: usize,
    /// A batch is flushed when it has this many records...
    pub batch_size: usize,
    /// ...or when its oldest record has waited this long (ms).
    pub flush_ms: u64,
    /// How long a request waits for room in a full channel before 503 (ms).
    pub enqueue_wait_ms: u64,
    /// Idempotency: how long a `request_id` is remembered (seconds).
    pub idempotency_window_secs: u64,
    /// Idempotency: bytes of recent responses kept to answer duplicates without the store.
    pub idempotency_memory_bytes: usize,
    /// Idempotency: bytes of the filter of every `(token, request_id)` ever accepted, which
    /// proves a new id new without a store round trip.
    pub idempotency_filter_bytes: usize,
    /// `fsync` (default): a 200 means the record is fsynced in the write-ahead log; `os`:
    /// written to the OS only (survives a process crash, not a power loss).
    pub durability: crate::audit::wal::Durability,
    /// Push to WebSocket only once the record is durable ("pushed implies audited").
    pub push_after_durable: bool,
    /// Write-ahead log segment size, bytes.
    pub wal_segment_bytes: u64,
    /// First retry delay after a failed write (ms); doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// BENCHMARKS ONLY: publish without writing audit records, to measure what the audit
    /// pipeline costs. Breaks SPEC's audit guarantee; the server logs a warning at start.
    pub benchmark_disable_audit: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            channel_capacity: 65_536,
            batch_size: 5_000,
            flush_ms: 20,
            enqueue_wait_ms: 100,
            idempotency_window_secs: 24 * 3600,
            idempotency_memory_bytes: 64 << 20,
            idempotency_filter_bytes: 32 << 20,
            durability: crate::audit::wal::Durability::Fsync,
            push_after_durable: false,
            wal_segment_bytes: 8 << 20,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            benchmark_disable_audit: false,
        }
    }
}

/// HTTP connection settings (SPEC "Connections, timeouts and budgets").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must arrive within this long (seconds), or the connection closes.
    pub header_timeout_secs: u64,
    /// Most open connections in all; past it a new connection is closed at once, and counted.
    pub max_connections: usize,
    /// Most open connections from one client IP.
    pub max_connections_per_ip: usize,
    /// Origins (e.g. `"http://intranet.example:8080"`) a browser may call an open-mode server
    /// from, besides the server's own.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_secs: 10,
            max_connections: 50_000,
            max_connections_per_ip: 10_000,
            allowed_origins: Vec::new(),
        }
    }
}

/// WebSocket fan-out settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Per-connection queue bound, in events.
    pub queue_events: usize,
    /// Per-connection queue bound, in bytes of encoded frames.
    pub queue_bytes: usize,
    /// Events kept for `resume`.
    pub history_events: usize,
    /// Oldest event kept for `resume` (seconds).
    pub history_age_secs: u64,
    /// Idle heartbeat period (seconds).
    pub heartbeat_secs: u64,
    /// Most patterns one connection may subscribe to.
    pub max_subscriptions_per_conn: usize,
    /// Most keys one connection may track.
    pub max_tracked_per_conn: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            queue_events: 10_000,
            queue_bytes: 8 << 20,
            history_events: 100_000,
            history_age_secs: 3600,
            heartbeat_secs: 15,
            max_subscriptions_per_conn: 10_000,
            max_tracked_per_conn: 1_000_000,
        }
    }
}

/// A token's rate limit.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// One API token (SPEC "Auth").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub token_sha256: Option<String>,
    /// The plain secret (accepted, but prefer `token_sha256`).
    pub token: Option<String>,
    pub scopes: Vec<String>,
    /// Allowed key prefixes; absent means every key.
    pub prefixes: Option<Vec<String>>,
    pub rate_limit: Option<RateLimit>,
}

/// The config file (TOML). Every section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub node_id: Option<String>,
    pub allow_open: Option<bool>,
    pub shutdown_timeout_secs: Option<u64>,
    pub limits: Limits,
    pub audit: AuditConfig,
    pub ws: WsConfig,
    pub http: HttpConfig,
    pub cluster: crate::cluster::ClusterConfig,
    pub tokens: Vec<TokenConfig>,
}

/// The resolved configuration of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub node_id: String,
    /// Serve without tokens on a non-loopback address.
    pub allow_open: bool,
    pub limits: Limits,
    pub audit: AuditConfig,
    pub ws: WsConfig,
    pub http: HttpConfig,
    pub cluster: crate::cluster::ClusterConfig,
    pub tokens: Vec<TokenConfig>,
    /// One deadline for the whole graceful shutdown (requests, WebSockets, audit drain).
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            nats_url: None,
            node_id: "node-4000".into(),
            allow_open: false,
            limits: Limits::default(),
            audit: AuditConfig::default(),
            ws: WsConfig::default(),
            http: HttpConfig::default(),
            cluster: Default::default(),
            tokens: Vec::new(),
            shutdown_timeout: Duration::from_secs(25),
        }
    }
}

/// A configuration that cannot be served, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source: Box::new(source),
        })
    }
}

impl Config {
    /// Checks that cannot be expressed in types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_pattern_body_bytes", l.max_pattern_body_bytes),
            ("limits.max_keys", l.max_keys),
            ("limits.max_key_bytes", l.max_key_bytes),
            ("limits.max_pattern_bytes", l.max_pattern_bytes),
            ("limits.max_triggered_by_bytes", l.max_triggered_by_bytes),
            ("limits.max_request_id_bytes", l.max_request_id_bytes),
            ("limits.pattern_cache_size", l.pattern_cache_size),
            ("audit.channel_capacity", self.audit.channel_capacity),
            ("audit.batch_size", self.audit.batch_size),
            ("ws.queue_events", self.ws.queue_events),
            ("ws.queue_bytes", self.ws.queue_bytes),
            ("ws.history_events", self.ws.history_events),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() && !self.allow_open {
            return Err(ConfigError::Invalid(format!(
                "no tokens are configured and {} is not a loopback address: add [[tokens]] to \
                 the config file or pass --allow-open to serve without authentication",
                self.listen
            )));
        }
        for t in &self.tokens {
            if t.token.is_none() && t.token_sha256.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "token {:?} has neither `token` nor `token_sha256`",
                    t.name
                )));
            }
        }
        Ok(())
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.ws.heartbeat_secs.max(1))
    }
}
