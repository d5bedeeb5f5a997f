//! SPEC "Browsers": in open mode (no tokens) a web page on the operator's machine must not be
//! able to reach the server. A request whose `Origin` is neither the server's own origin
//! (`http://` + its `Host`) nor in `http.allowed_origins` is 403 `forbidden`, on every route
//! and on `/ws` before the upgrade; and when the server listens on a loopback address, a
//! `Host` that is not a loopback name or address is 403 too (a DNS-rebinding page reaches the
//! server under its own host name). The dashboard is same-origin and keeps working; clients
//! that are not browsers send no `Origin`.
//!
//! With tokens configured nothing here applies: a page cannot present a token it does not
//! know. Cost: two header lookups per request in open mode.

use hyper::Request;
use hyper::header::{self, HeaderMap};

use crate::error::{ApiError, ErrorCode};
use crate::server::App;

/// Refuse a request a browser page could have sent to an open-mode server.
pub fn check<B>(app: &App, req: &Request<B>) -> Result<(), ApiError> {
    if !app.auth.is_open() {
        return Ok(());
    }
    let headers = req.headers();
    let host = header_str(headers, header::HOST);
    if app.config.listen.ip().is_loopback()
        && let Some(h) = host
        && !is_loopback_host(h)
    {
        return Err(forbidden(format!(
            "Host {h:?} is not a loopback name: open mode serves only local clients"
        )));
    }
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        let own = host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
        let allowed = app
            .config
            .http
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin));
        if !own && !allowed {
            return Err(forbidden(format!(
                "Origin {origin:?} is not allowed: add it to http.allowed_origins, or configure tokens"
            )));
        }
    }
    Ok(())
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `localhost`, `*.localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:4000",
            "127.0.0.1:4000",
            "127.9.9.9",
            "[::1]:4000",
            "app.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:4000",
            "10.0.0.1:4000",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
