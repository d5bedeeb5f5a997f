//! # invalidator
//!
//! A cache-invalidation push server. Services POST invalidations (exact keys, or a prefix,
//! suffix, glob or regex pattern); the server records each one in an immutable audit log and
//! pushes it over WebSocket, within microseconds, to every cache manager whose interests
//! match. Several nodes form a cluster through NATS JetStream.
//!
//! ## Data flow
//!
//! ```text
//!  POST /invalidate/*          GET /ws (cache managers)
//!        │                            │
//!   http::request  (validate)     ws  (protocol frames, subscribe/track/resume)
//!        │                            │
//!   auth + idempotency                ▼
//!        │                     index::{SubscriptionIndex, TrackedIndex}
//!   publish::Publisher ──────► fanout::Hub ── route ──► per-connection lock-free queues
//!        │   │    (seq order)        │                         │
//!        │   │                  history ring (resume)     ws writer tasks (batched frames)
//!        │   └─► audit::AuditPipeline (write-ahead log, group commit → batched COPY / SQLite)
//!        └─────► cluster (NATS JetStream, when configured)
//! ```
//!
//! * [`http`] parses and validates requests and maps every failure to SPEC's error format
//!   ([`error`]).
//! * [`pattern`] infers and compiles patterns (regex-automata DFAs, cached in an LRU).
//! * [`publish`] is the one seam every accepted invalidation goes through: audit slot,
//!   sequence, fan-out, audit record, metrics.
//! * [`fanout`] routes an event to connections through [`index`] and never waits for a slow
//!   connection: its queue overflows and it is closed with 4008.
//! * [`audit`] writes records off the request path and never loses an accepted one.
//! * [`metrics`] keeps HDR histograms and counters for `/invalidate/metrics` and `/metrics`.

pub mod audit;
pub mod auth;
pub use invalidator_core::backoff;
pub mod cluster;
pub mod config;
pub mod error;
pub mod event;
pub mod fanout;
pub mod http;
pub mod idempotency;
pub mod index;
pub mod metrics;
pub mod pattern;
pub mod publish;
pub mod seq;
pub mod server;
pub mod time;
pub mod ws;
