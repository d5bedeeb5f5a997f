//! Decoding of result rows, shared by both stores: they select the same column names with
//! the same types (`keys` as JSON text, `timestamp` as unix microseconds `ts_us`).

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::postgres::store_err;
use super::query::LogEntry;
use super::{AuditError, StoredRequest};

pub(super) fn entry_from_row<R>(r: &R) -> Result<LogEntry, AuditError>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'d> i64: Decode<'d, R::Database> + Type<R::Database>,
    for<'d> String: Decode<'d, R::Database> + Type<R::Database>,
    for<'d> bool: Decode<'d, R::Database> + Type<R::Database>,
{
    Ok(LogEntry {
        id: r.try_get("id").map_err(store_err)?,
        seq: r.try_get("seq").map_err(store_err)?,
        kind: r.try_get("kind").map_err(store_err)?,
        pattern: r.try_get("pattern").map_err(store_err)?,
        pattern_type: r.try_get("pattern_type").map_err(store_err)?,
        keys_json: r.try_get("keys").map_err(store_err)?,
        matched_count: r.try_get("matched_count").map_err(store_err)?,
        triggered_by: r.try_get("triggered_by").map_err(store_err)?,
        timestamp_us: r.try_get("ts_us").map_err(store_err)?,
        request_id: r.try_get("request_id").map_err(store_err)?,
        latency_us: r.try_get("latency_us").map_err(store_err)?,
        node_id: r.try_get("node_id").map_err(store_err)?,
        token_name: r.try_get("token_name").map_err(store_err)?,
        soft: r.try_get("soft").map_err(store_err)?,
    })
}

pub(super) fn stored_from_row<R>(r: &R) -> Result<StoredRequest, AuditError>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'d> i64: Decode<'d, R::Database> + Type<R::Database>,
    for<'d> String: Decode<'d, R::Database> + Type<R::Database>,
    for<'d> bool: Decode<'d, R::Database> + Type<R::Database>,
{
    let keys: Option<String> = r.try_get("keys").map_err(store_err)?;
    let pattern_type: Option<String> = r.try_get("pattern_type").map_err(store_err)?;
    Ok(StoredRequest {
        request_id: r.try_get("request_id").map_err(store_err)?,
        body_hash: r
            .try_get::<Option<String>, _>("body_hash")
            .map_err(store_err)?
            .unwrap_or_default(),
        seq: u64::try_from(r.try_get::<i64, _>("seq").map_err(store_err)?).unwrap_or(0),
        published_at_us: r.try_get("ts_us").map_err(store_err)?,
        pattern: r.try_get("pattern").map_err(store_err)?,
        pattern_type: pattern_type
            .as_deref()
            .and_then(crate::pattern::PatternType::parse),
        keys: keys
            .as_deref()
            .and_then(|k| serde_json::from_str(k).ok())
            .unwrap_or_default(),
        matched_count: u64::try_from(
            r.try_get::<Option<i64>, _>("matched_count")
                .map_err(store_err)?
                .unwrap_or(0),
        )
        .unwrap_or(0),
        soft: r.try_get("soft").map_err(store_err)?,
    })
}
