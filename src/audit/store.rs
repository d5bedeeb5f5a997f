//! One face over the two backends: PostgreSQL when a database URL is configured, otherwise
//! the embedded SQLite file under the data dir.

use std::path::PathBuf;

use super::postgres::{PgStore, WriteMode};
use super::query::{LogEntry, LogQuery};
use super::record::AuditRow;
use super::sqlite::SqliteStore;
use super::{AuditError, StoredRequest};
use crate::config::Config;

/// Where the store lives (known before it is reachable).
#[derive(Debug, Clone)]
pub enum StoreTarget {
    Postgres(String),
    Sqlite(PathBuf),
}

impl StoreTarget {
    pub fn from_config(config: &Config) -> StoreTarget {
        match config.database_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => StoreTarget::Postgres(url.to_owned()),
            _ => StoreTarget::Sqlite(config.data_dir.join("audit.sqlite3")),
        }
    }
}

/// A connected store with migrations applied.
#[derive(Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Connect and migrate; `timeout` bounds the connection attempt.
    pub async fn connect(
        target: &StoreTarget,
        timeout: std::time::Duration,
    ) -> Result<Store, AuditError> {
        let attempt = async {
            match target {
                StoreTarget::Postgres(url) => {
                    PgStore::connect(url, timeout).await.map(Store::Postgres)
                }
                StoreTarget::Sqlite(path) => SqliteStore::open(path).await.map(Store::Sqlite),
            }
        };
        // Migrations on a slow server may take longer than a connect; give them room.
        tokio::time::timeout(timeout * 4, attempt)
            .await
            .map_err(|_| AuditError::Store("timed out connecting to the audit store".into()))?
    }

    pub async fn ping(&self) -> Result<(), AuditError> {
        match self {
            Store::Postgres(s) => s.ping().await,
            Store::Sqlite(s) => s.ping().await,
        }
    }

    pub async fn write(&self, rows: &[AuditRow], mode: WriteMode) -> Result<(), AuditError> {
        match self {
            Store::Postgres(s) => s.write(rows, mode).await,
            Store::Sqlite(s) => s.write(rows).await,
        }
    }

    pub async fn max_seq(&self) -> Result<i64, AuditError> {
        match self {
            Store::Postgres(s) => s.max_seq().await,
            Store::Sqlite(s) => s.max_seq().await,
        }
    }

    pub async fn find_request(
        &self,
        scope: &str,
        request_id: &str,
    ) -> Result<Option<StoredRequest>, AuditError> {
        match self {
            Store::Postgres(s) => s.find_request(scope, request_id).await,
            Store::Sqlite(s) => s.find_request(scope, request_id).await,
        }
    }

    /// Call `f(scope, request_id)` for every row; returns the count.
    pub async fn each_request_id(&self, f: impl FnMut(&str, &str)) -> Result<u64, AuditError> {
        match self {
            Store::Postgres(s) => s.each_request_id(f).await,
            Store::Sqlite(s) => s.each_request_id(f).await,
        }
    }

    pub async fn query(&self, q: &LogQuery) -> Result<(Vec<LogEntry>, i64), AuditError> {
        match self {
            Store::Postgres(s) => s.query(q).await,
            Store::Sqlite(s) => s.query(q).await,
        }
    }
}
