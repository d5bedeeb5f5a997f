//! # invalidator-core
//!
//! What the server and every client share: the pattern language (SPEC "Patterns": type
//! inference, escapes, compiled matchers, overlap decisions) and the WebSocket protocol's
//! frame types. It depends on no runtime (no tokio, no I/O), so a cache manager that links
//! `invalidator-client` compiles this crate and nothing of the server.

pub mod backoff;
pub mod pattern;
