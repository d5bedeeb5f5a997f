//! The HTTP front door: routing, body limits, auth, and the mapping of every outcome to
//! SPEC's JSON bodies and status codes.
//!
//! Every request is answered here; handlers return `Result<Value, ApiError>` and nothing
//! below this layer writes a response. A bad request never changes state: validation and
//! authorisation happen before the publisher is called.

mod assets;
mod browser;
pub mod client;
pub mod invalidate;
pub mod request;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::{Principal, Scope, bearer};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{Snapshot, prometheus_text};
use crate::server::App;

pub type Body = Full<Bytes>;

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Render an error (and count it).
pub fn error_response(app: &App, e: &ApiError) -> Response<Body> {
    app.metrics.requests.rejected(e.code);
    let mut resp = json_response(e.code.status(), &e.body());
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The routes, for 404 vs 405: (path, allowed methods).
const ROUTES: &[(&str, &str)] = &[
    ("/invalidate/key", "POST"),
    ("/invalidate/pattern", "POST"),
    ("/invalidate/metrics", "GET"),
    ("/metrics", "GET"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/audit/logs", "GET"),
    ("/ws", "GET"),
    ("/openapi.json", "GET"),
    ("/dashboard", "GET"),
];

/// `?token=` of a WebSocket (or SSE) URL, percent-decoded like every query parameter (a
/// browser's `encodeURIComponent` turns `+`, `/` and `=` of a secret into `%2B`, ...).
fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .and_then(|t| crate::audit::query::percent_decode(t).ok())
        .filter(|t| !t.is_empty())
}

fn authenticate(
    app: &App,
    req: &Request<Incoming>,
    scope: Scope,
) -> Result<Arc<Principal>, ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let from_query = match (bearer(header), scope) {
        (None, Scope::Subscribe) => query_token(req.uri().query()),
        _ => None,
    };
    let secret = bearer(header).or(from_query.as_deref());
    app.auth.authenticate(secret, scope)
}

/// An over-limit body is still read (and discarded) up to this many bytes before the 413 is
/// sent, so that a client still writing its body reads our answer instead of a reset
/// connection. Past it the connection is simply closed.
const DRAIN_CAP: usize = 64 << 20;

/// Read the whole body, refusing more than `limit` bytes with 413.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is over the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP as u64) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut buf =
        bytes::BytesMut::with_capacity(declared.map_or(4096, |n| (n as usize).min(limit)));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::validation("body", format!("cannot read request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_CAP {
            break;
        }
        if seen <= limit {
            buf.extend_from_slice(&data);
        }
    }
    if seen > limit {
        Err(too_large())
    } else {
        Ok(buf.freeze())
    }
}

/// Entry point for every HTTP request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let received = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let result = match browser::check(&app, &req) {
        Ok(()) => route(&app, req, &path, &method, received).await,
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.code.status().is_server_error() {
                tracing::warn!(%path, code = e.code.as_str(), message = %e.message, "request failed");
            }
            let mut resp = error_response(&app, &e);
            if e.code == ErrorCode::MethodNotAllowed
                && let Some((_, allow)) = ROUTES.iter().find(|(p, _)| *p == path)
            {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            resp
        }
    })
}

async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
    path: &str,
    method: &Method,
    received: Instant,
) -> Result<Response<Body>, ApiError> {
    let ok = |v: Value| json_response(StatusCode::OK, &v);
    match (method, path) {
        (&Method::POST, "/invalidate/key") => {
            let who = authenticate(app, &req, Scope::Invalidate)?;
            let body = read_body(req, app.config.limits.max_body_bytes).await?;
            let v = invalidate::keys(app, &who, body, received).await?;
            Ok(json_response(StatusCode::OK, &v))
        }
        (&Method::POST, "/invalidate/pattern") => {
            let who = authenticate(app, &req, Scope::Invalidate)?;
            let body = read_body(req, app.config.limits.max_pattern_body_bytes).await?;
            let v = invalidate::pattern(app, &who, body, received).await?;
            Ok(json_response(StatusCode::OK, &v))
        }
        (&Method::GET, "/invalidate/metrics") => {
            authenticate(app, &req, Scope::Metrics)?;
            Ok(ok(snapshot(app, |s| s.to_json())))
        }
        (&Method::GET, "/metrics") => {
            authenticate(app, &req, Scope::Metrics)?;
            let text = snapshot(app, prometheus_text);
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        (&Method::GET, "/healthz") => Ok(ok(json!({"status": "ok"}))),
        (&Method::GET, "/openapi.json") => Ok(assets::openapi()),
        (&Method::GET, p) if p.starts_with("/dashboard") => assets::dashboard(p)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no dashboard file at {p}"))),
        (&Method::GET, "/readyz") => readyz(app),
        (&Method::GET, "/audit/logs") => {
            authenticate(app, &req, Scope::AuditRead)?;
            Ok(ok(app
                .audit
                .query_logs(req.uri().query().unwrap_or(""))
                .await?))
        }
        (&Method::GET, "/ws") => {
            let who = authenticate(app, &req, Scope::Subscribe)?;
            Ok(crate::ws::upgrade(req, app.hub.clone(), who))
        }
        _ if ROUTES.iter().any(|(p, _)| *p == path) => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no route for {path}"),
        )),
    }
}

fn snapshot<T>(app: &App, f: impl FnOnce(&Snapshot<'_>) -> T) -> T {
    let s = Snapshot {
        metrics: &app.metrics,
        hub: app.hub.stats(),
        patterns: app.patterns.stats(),
        audit: app.audit.stats(),
        idempotency: app.idempotency.stats(),
        audit_write_latency: app.audit.write_latency(),
        wal_fsync_latency: app.audit.wal_fsync_latency(),
    };
    f(&s)
}

fn readyz(app: &App) -> Result<Response<Body>, ApiError> {
    let audit = app.audit.ready();
    let cluster = app.cluster_ready();
    if audit && cluster {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ready", "audit_store": true, "cluster": cluster}),
        ));
    }
    let mut what = Vec::new();
    if !audit {
        what.push("the audit store is unreachable");
    }
    if !cluster {
        what.push("NATS is unreachable");
    }
    Err(ApiError::unavailable(format!(
        "not ready: {}",
        what.join(" and ")
    )))
}
