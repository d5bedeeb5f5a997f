//! Static assets compiled into the binary: the dashboard (`GET /dashboard`, `/dashboard/*`)
//! and the OpenAPI document (`GET /openapi.json`). No file is read at run time and nothing is
//! fetched from a CDN, so the dashboard works on an air-gapped host.
//!
//! The dashboard needs no token to load (it is static); it asks the operator for one when
//! an API it calls answers 401, and then uses the same APIs as every client.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::Body;

/// (path under `/dashboard/`, content type, bytes); "" is the page itself.
const DASHBOARD: &[(&str, &str, &[u8])] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../../dashboard/index.html"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/style.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.min.css"),
    ),
    (
        "vendor/uPlot.LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uPlot.LICENSE.txt"),
    ),
];

const OPENAPI: &[u8] = include_bytes!("../../docs/openapi.json");

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(bytes)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The dashboard file at `path` (`/dashboard` or `/dashboard/<file>`), if there is one.
pub fn dashboard(path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/dashboard")?;
    let rest = match rest {
        "" => "",
        r => r.strip_prefix('/')?,
    };
    DASHBOARD
        .iter()
        .find(|(p, _, _)| *p == rest)
        .map(|(_, ct, bytes)| asset(ct, bytes))
}

pub fn openapi() -> Response<Body> {
    asset("application/json", OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_dashboard_file_is_embedded() {
        let listed = include_str!("../../dashboard/FILES");
        for file in listed.lines().map(str::trim).filter(|l| !l.is_empty()) {
            assert!(
                DASHBOARD.iter().any(|(p, _, _)| *p == file),
                "dashboard/FILES lists {file}, which is not embedded"
            );
        }
        assert!(dashboard("/dashboard").is_some());
        assert!(dashboard("/dashboard/app.js").is_some());
        assert!(dashboard("/dashboard/../Cargo.toml").is_none());
        assert!(dashboard("/dashboardx").is_none());
    }

    #[test]
    fn openapi_is_json_and_3_1() {
        let v: serde_json::Value = serde_json::from_slice(OPENAPI).expect("valid JSON");
        assert!(v["openapi"].as_str().is_some_and(|s| s.starts_with("3.1")));
    }
}
