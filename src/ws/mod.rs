//! WebSocket endpoint `GET /ws`: upgrade, protocol frames, connection task.
//!
//! OWNER: websocket helper. Current content is the API the HTTP router calls.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::auth::Principal;
use crate::fanout::Hub;

/// Answer an upgrade request on `/ws` (101 and spawn the connection task) or refuse it (400).
/// `principal` has already been authenticated and holds the `subscribe` scope.
pub fn upgrade(req: Request<Incoming>, hub: Arc<Hub>, principal: Arc<Principal>) -> Response<Full<Bytes>> {
    let _ = (req, hub, principal);
    let mut resp = Response::new(Full::new(Bytes::from_static(b"websocket not implemented yet")));
    *resp.status_mut() = StatusCode::NOT_IMPLEMENTED;
    resp
}
