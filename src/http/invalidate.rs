//! `POST /invalidate/key` and `POST /invalidate/pattern`: validate, authorise, apply
//! idempotency, resolve matched keys, publish, answer.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::audit::StoredRequest;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::event::{Invalidation, Target};
use crate::http::request::{Endpoint, body_fingerprint, parse_key_request, parse_pattern_request};
use crate::idempotency::{Claim, Settled};
use crate::pattern::{PatternError, PatternType};
use crate::publish::{Draft, Published};
use crate::server::App;

/// The response body of an accepted invalidation. The one function that shapes it, for fresh
/// requests and for duplicates answered from the store alike.
fn response(
    request_id: &str,
    seq: u64,
    published_at_us: i64,
    pattern: Option<(&str, PatternType)>,
    keys: &[String],
    count: u64,
    soft: bool,
) -> Value {
    let published_at = crate::time::format_us(published_at_us);
    match pattern {
        None => json!({
            "success": true, "invalidated_count": count, "keys": keys, "request_id": request_id,
            "published_at": published_at, "seq": seq, "duplicate": false, "soft": soft,
        }),
        Some((p, t)) => json!({
            "success": true, "pattern": p, "pattern_type": t.as_str(), "matched_keys": keys,
            "invalidated_count": count, "matched_keys_truncated": count > keys.len() as u64,
            "request_id": request_id, "published_at": published_at, "seq": seq, "duplicate": false,
            "soft": soft,
        }),
    }
}

fn response_of(inv: &Invalidation) -> Value {
    let pattern = inv.pattern().map(|p| (p.source(), p.kind()));
    response(
        &inv.request_id,
        inv.seq,
        inv.published_at_us,
        pattern,
        inv.keys(),
        inv.invalidated_count(),
        inv.soft,
    )
}

fn response_of_stored(s: &StoredRequest) -> Value {
    let pattern = s.pattern.as_deref().zip(s.pattern_type);
    let count = if pattern.is_some() {
        s.matched_count
    } else {
        s.keys.len() as u64
    };
    response(
        &s.request_id,
        s.seq,
        s.published_at_us,
        pattern,
        &s.keys,
        count,
        s.soft,
    )
}

/// `inv-<unix_ms>-<16 hex digits>`: 64 random bits, so collisions stay out of reach at any
/// rate (a birthday collision needs ~4 billion ids within one millisecond).
fn generate_request_id() -> String {
    format!(
        "inv-{}-{:016x}",
        crate::time::now_us() / 1000,
        fastrand::u64(..)
    )
}

/// A settled earlier request: its response marked duplicate, or 409 if the body differs.
fn replay(app: &App, settled: &Settled, fingerprint: &str) -> Result<Arc<Value>, ApiError> {
    if settled.fingerprint != fingerprint {
        return Err(ApiError::field(
            ErrorCode::RequestIdConflict,
            "request_id",
            "request_id was already used with a different body or endpoint",
        ));
    }
    app.metrics
        .requests
        .duplicates
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut v = (*settled.response).clone();
    v["duplicate"] = Value::Bool(true);
    Ok(Arc::new(v))
}

/// Bytes the idempotency memory charges for remembering a response with these keys, pattern
/// and request id.
fn response_bytes(keys: &[String], pattern: Option<&str>, request_id: &str) -> usize {
    keys.iter().map(|k| k.len() + 3).sum::<usize>()
        + pattern.map_or(0, str::len)
        + request_id.len()
        + 160
}

fn response_bytes_of(inv: &Invalidation) -> usize {
    response_bytes(
        inv.keys(),
        inv.pattern().map(|p| p.source()),
        &inv.request_id,
    )
}

/// Run `publish` at most once per `(token, request_id)` (SPEC "Idempotency"). The response is
/// shared with the idempotency memory, not copied.
async fn idempotent<F, Fut>(
    app: &App,
    who: &Principal,
    request_id: Option<String>,
    fingerprint: String,
    publish: F,
) -> Result<Arc<Value>, ApiError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Published, ApiError>>,
{
    let Some(id) = request_id else {
        return match publish(generate_request_id()).await? {
            Published::Fresh(inv) => Ok(Arc::new(response_of(&inv))),
            Published::Duplicate { inv, .. } => Ok(Arc::new(response_of(&inv))),
        };
    };
    let scope = who.name.as_deref().unwrap_or("");
    let guard = match app.idempotency.claim(scope, &id).await {
        Claim::Settled(s) => return replay(app, &s, &fingerprint),
        Claim::Fresh(guard) => guard,
        Claim::Unknown(guard) => match app.audit.find_request(scope, &id).await {
            Ok(Some(stored)) => {
                let settled = Settled {
                    fingerprint: stored.body_hash.clone(),
                    response: Arc::new(response_of_stored(&stored)),
                };
                let bytes =
                    response_bytes(&stored.keys, stored.pattern.as_deref(), &stored.request_id);
                guard.complete(settled.clone(), bytes);
                return replay(app, &settled, &fingerprint);
            }
            Ok(None) => guard,
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "idempotency lookup failed");
                return Err(ApiError::unavailable(
                    "cannot check request_id against the audit store; retry shortly",
                ));
            }
        },
    };
    match publish(id).await? {
        Published::Fresh(inv) => {
            let resp = Arc::new(response_of(&inv));
            let settled = Settled {
                fingerprint,
                response: resp.clone(),
            };
            guard.complete(settled, response_bytes_of(&inv));
            Ok(resp)
        }
        Published::Duplicate {
            fingerprint: original,
            inv,
        } => {
            let settled = Settled {
                fingerprint: original,
                response: Arc::new(response_of(&inv)),
            };
            guard.complete(settled.clone(), response_bytes_of(&inv));
            replay(app, &settled, &fingerprint)
        }
    }
}

pub async fn keys(
    app: &App,
    who: &Principal,
    body: Bytes,
    received: Instant,
) -> Result<Arc<Value>, ApiError> {
    let req = parse_key_request(&body, &app.config.limits)?;
    if let Some(k) = req.keys.iter().find(|k| !who.allows_key(k)) {
        return Err(ApiError::field(
            ErrorCode::Forbidden,
            "keys",
            format!("key {k:?} is outside the prefixes this token may invalidate"),
        ));
    }
    let fingerprint = req
        .request_id
        .as_ref()
        .map(|_| body_fingerprint(Endpoint::Keys, &body))
        .unwrap_or_default();
    idempotent(
        app,
        who,
        req.request_id,
        fingerprint.clone(),
        |request_id| async move {
            let draft = Draft {
                request_id,
                triggered_by: req.triggered_by,
                token_name: who.name.clone(),
                target: Target::Keys(req.keys),
                soft: req.soft,
                body_hash: fingerprint,
                received,
            };
            app.publisher.publish(draft).await
        },
    )
    .await
}

pub fn pattern_error(e: PatternError) -> ApiError {
    let code = match e {
        PatternError::Empty | PatternError::TooLong { .. } | PatternError::ControlChar => {
            ErrorCode::ValidationFailed
        }
        PatternError::Invalid(_) | PatternError::TooBig { .. } => ErrorCode::InvalidPattern,
    };
    ApiError::field(code, "pattern", e.to_string())
}

pub async fn pattern(
    app: &App,
    who: &Principal,
    body: Bytes,
    received: Instant,
) -> Result<Arc<Value>, ApiError> {
    let req = parse_pattern_request(&body, &app.config.limits)?;
    let pattern = app
        .patterns
        .get(&req.pattern, req.pattern_type)
        .map_err(pattern_error)?;
    if !who.allows_pattern(&pattern) {
        return Err(ApiError::field(
            ErrorCode::Forbidden,
            "pattern",
            "pattern may match keys outside the prefixes this token may invalidate",
        ));
    }
    let fingerprint = req
        .request_id
        .as_ref()
        .map(|_| body_fingerprint(Endpoint::Pattern, &body))
        .unwrap_or_default();
    let cap = app.config.limits.max_matched_keys;
    idempotent(
        app,
        who,
        req.request_id,
        fingerprint.clone(),
        |request_id| async move {
            let (matched_keys, matched_count) = resolve(app, &pattern, req.cache_keys, cap);
            let draft = Draft {
                request_id,
                triggered_by: req.triggered_by,
                token_name: who.name.clone(),
                target: Target::Pattern {
                    pattern,
                    matched_keys,
                    matched_count,
                },
                soft: req.soft,
                body_hash: fingerprint,
                received,
            };
            app.publisher.publish(draft).await
        },
    )
    .await
}

/// `matched_keys`: matching `cache_keys` in request order, then matching tracked keys in byte
/// order, each once, at most `cap`; and the distinct count. Exact unless the tracked matches
/// exceed `cap + cache_keys` (then keys both sent and tracked past the cap may count twice).
fn resolve(
    app: &App,
    pattern: &crate::pattern::Pattern,
    cache_keys: Vec<String>,
    cap: usize,
) -> (Vec<String>, u64) {
    let mut matched: Vec<String> = cache_keys
        .into_iter()
        .filter(|k| pattern.is_match(k))
        .collect();
    let (tracked, tracked_count) = app
        .hub
        .tracked_matches(pattern, cap.saturating_add(matched.len()));
    let sent: std::collections::HashSet<&str> = matched.iter().map(String::as_str).collect();
    let overlap = tracked.iter().filter(|k| sent.contains(k.as_str())).count() as u64;
    let extra: Vec<String> = tracked
        .into_iter()
        .filter(|k| !sent.contains(k.as_str()))
        .collect();
    let count = matched.len() as u64 + tracked_count.saturating_sub(overlap);
    matched.extend(extra);
    matched.truncate(cap);
    (matched, count)
}
