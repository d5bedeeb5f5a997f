//! The systems a user would compare us with, behind one small interface the benchmark
//! scenarios (`bench-fanout`, `bench-patterns` in `bench.rs`) drive the same way:
//!
//! | system | subscriber | publisher | fan-out interest | prefix pattern `j` |
//! |---|---|---|---|---|
//! | `invalidator` | WebSocket `/ws` | `POST /invalidate/key` | `fanout:*` | `p<j>:*` |
//! | `redis` | RESP `SUBSCRIBE` / `PSUBSCRIBE` | `PUBLISH` | channel `fanout` | `p<j>:*` |
//! | `nats` | core protocol over TCP | `PUB` + `PING` (TCP) | subject `fanout` | `p<j>.>` |
//! | `nats-ws` | core protocol over nats-server's WebSocket listener | `PUB` + `PING` (TCP) | as `nats` | as `nats` |
//!
//! Every system delivers the same bytes: our server's `invalidate` frame for the event (the
//! peers get an identical JSON document, built here, as their message payload), so the event
//! index is found the same way everywhere (`"keys":["<prefix>:<index>:`).
//!
//! Recording: each subscriber appends `(event index, receipt ns)` to its own log under an
//! uncontended mutex (one lock per read batch); the scenario drains the logs between phases.
//! The clients are hand-written (RESP and the NATS text protocol) to add no crate.

pub mod invalidator;
pub mod nats;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

pub use crate::common::BoxError;

/// A system under test.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Our server: WebSocket subscribers, HTTP publisher.
    Invalidator,
    /// Redis pub/sub: SUBSCRIBE (fan-out) / PSUBSCRIBE (patterns), PUBLISH.
    Redis,
    /// nats-server, core protocol over TCP.
    Nats,
    /// nats-server's WebSocket listener for subscribers (publisher over TCP).
    NatsWs,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Invalidator => "invalidator",
            System::Redis => "redis",
            System::Nats => "nats",
            System::NatsWs => "nats-ws",
        }
    }
}

/// Where an event goes: the one fan-out interest, or prefix pattern number `j`.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    Fanout,
    Pattern(usize),
}

/// What subscribers and receipts share.
pub struct Shared {
    pub start: Instant,
    pub deliveries: AtomicU64,
    /// Size of the first delivered payload (what the subscriber's parser handed over).
    pub payload_bytes: AtomicU64,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            start: Instant::now(),
            deliveries: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// One subscriber's receipt log.
pub type Log = Arc<Mutex<Vec<(u32, u64)>>>;

/// A subscriber's handle on the recording: its own log plus the shared counters.
pub struct Sink {
    pub shared: Arc<Shared>,
    pub log: Log,
}

impl Sink {
    pub fn now_ns(&self) -> u64 {
        self.shared.now_ns()
    }

    /// Locks this subscriber's log for a batch of receipts.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            shared: &self.shared,
            log: self.log.lock(),
            count: 0,
        }
    }
}

pub struct Batch<'a> {
    shared: &'a Shared,
    log: MutexGuard<'a, Vec<(u32, u64)>>,
    count: u64,
}

impl Batch<'_> {
    /// Records `payload` received at `now` if it carries an event index.
    pub fn record(&mut self, payload: &[u8], now: u64) {
        if let Some(i) = event_index(payload) {
            if self.count == 0 {
                let _ = self.shared.payload_bytes.compare_exchange(
                    0,
                    payload.len() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            self.log.push((i, now));
            self.count += 1;
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.count > 0 {
            self.shared
                .deliveries
                .fetch_add(self.count, Ordering::Relaxed);
        }
    }
}

/// The event index in a payload: the number after the first `:` of the first key, in
/// `"keys":["<prefix>:<index>:...`. A byte search, not a JSON parse, to keep the client cheap.
pub fn event_index(payload: &[u8]) -> Option<u32> {
    const NEEDLE: &[u8] = b"\"keys\":[\"";
    let at = payload.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = payload.get(at..)?;
    let rest = rest.get(rest.iter().position(|&b| b == b':')? + 1..)?;
    let end = rest.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The cache key of event `index` on `route`.
pub fn key(index: u64, route: Route) -> String {
    match route {
        Route::Fanout => format!("fanout:{index}:profile"),
        Route::Pattern(j) => format!("p{j}:{index}:profile"),
    }
}

/// The body we POST to our server for event `index`, with a fresh `request_id` (as users
/// send them: every published figure pays for idempotency).
pub fn post_body(index: u64, route: Route) -> String {
    let key = key(index, route);
    format!(
        "{{\"keys\":[\"{key}\"],\"triggered_by\":\"bench\",\"request_id\":\"lg-{}-{key}\"}}",
        crate::common::run_id()
    )
}

/// The payload the peers carry: the same `invalidate` document our server delivers for
/// `post_body(index, route)` (same fields, same lengths), so every system moves the same bytes.
pub fn peer_payload(index: u64, route: Route) -> Vec<u8> {
    format!(
        "{{\"type\":\"invalidate\",\"seq\":{},\"epoch\":\"5f0c2a9e17d3b864\",\"request_id\":\"inv-1764140000000-{:09}\",\"triggered_by\":\"bench\",\"published_at\":\"2026-11-26T07:00:00.123Z\",\"keys\":[\"{}\"],\"pattern\":null,\"pattern_type\":null}}",
        index + 1,
        (index * 7_919) % 1_000_000_000,
        key(index, route)
    )
    .into_bytes()
}

/// Subscription interests of a subscriber, in `system`'s own syntax.
pub fn interests(system: System, routes: &[Route]) -> Vec<String> {
    routes
        .iter()
        .map(|r| match (system, r) {
            (System::Invalidator, Route::Fanout) => "fanout:*".to_string(),
            (System::Invalidator | System::Redis, Route::Pattern(j)) => format!("p{j}:*"),
            (System::Redis | System::Nats | System::NatsWs, Route::Fanout) => "fanout".into(),
            (System::Nats | System::NatsWs, Route::Pattern(j)) => format!("p{j}.>"),
        })
        .collect()
}

/// Where each system listens (host:port); the WebSocket one for `nats-ws`'s subscribers.
#[derive(clap::Args, Debug, Clone)]
pub struct Endpoints {
    /// Our server (host:port): WebSocket at /ws, POST /invalidate/key.
    #[arg(long, default_value = "127.0.0.1:14000")]
    pub invalidator_addr: String,
    /// Bearer token for our server (with `invalidate` and `subscribe`), if it needs one.
    #[arg(long, env = "INVALIDATOR_TOKEN")]
    pub token: Option<String>,
    /// Redis (host:port).
    #[arg(long, default_value = "127.0.0.1:16379")]
    pub redis_addr: String,
    /// nats-server core protocol (host:port); also the publisher for `nats-ws`.
    #[arg(long, default_value = "127.0.0.1:14222")]
    pub nats_addr: String,
    /// nats-server WebSocket listener URL.
    #[arg(long, default_value = "ws://127.0.0.1:14223")]
    pub nats_ws_url: String,
}

/// Connects one subscriber of `system` holding `routes`; returns once the server confirmed
/// every subscription, with the task reading deliveries into `sink`.
pub async fn subscribe(
    system: System,
    ep: &Endpoints,
    routes: &[Route],
    sink: Sink,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let names = interests(system, routes);
    match system {
        System::Invalidator => invalidator::subscriber(&ep.invalidator_addr, &names, sink).await,
        System::Redis => {
            let listen = match routes {
                [Route::Fanout] => redis::Listen::Channel("fanout"),
                _ => redis::Listen::Patterns(&names),
            };
            redis::subscriber(&ep.redis_addr, listen, sink).await
        }
        System::Nats => nats::tcp_subscriber(&ep.nats_addr, &names, sink).await,
        System::NatsWs => nats::ws_subscriber(&ep.nats_ws_url, &names, sink).await,
    }
}

/// A publishing connection of any system; `publish` returns once the server accepted the
/// event (HTTP 200, Redis's reply, NATS's PONG after the PUB).
pub enum Publisher {
    Invalidator(invalidator::Publisher),
    Redis(redis::Publisher),
    Nats(nats::Publisher),
}

impl Publisher {
    pub async fn connect(system: System, ep: &Endpoints) -> Result<Publisher, BoxError> {
        Ok(match system {
            System::Invalidator => Publisher::Invalidator(
                invalidator::Publisher::connect(&ep.invalidator_addr, ep.token.clone()).await?,
            ),
            System::Redis => Publisher::Redis(redis::Publisher::connect(&ep.redis_addr).await?),
            System::Nats | System::NatsWs => {
                Publisher::Nats(nats::Publisher::connect(&ep.nats_addr).await?)
            }
        })
    }

    pub async fn publish(&mut self, index: u64, route: Route) -> Result<(), BoxError> {
        match self {
            Publisher::Invalidator(p) => p.publish(post_body(index, route)).await,
            Publisher::Redis(p) => {
                let channel = match route {
                    Route::Fanout => "fanout".to_string(),
                    Route::Pattern(_) => key(index, route),
                };
                p.publish(channel.as_bytes(), &peer_payload(index, route))
                    .await
                    .map(|_| ())
            }
            Publisher::Nats(p) => {
                let subject = match route {
                    Route::Fanout => "fanout".to_string(),
                    Route::Pattern(j) => format!("p{j}.{index}"),
                };
                p.publish(subject.as_bytes(), &peer_payload(index, route))
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_carries_its_index() {
        for route in [Route::Fanout, Route::Pattern(42)] {
            assert_eq!(event_index(&peer_payload(12_345, route)), Some(12_345));
            assert_eq!(event_index(post_body(7, route).as_bytes()), Some(7));
        }
        let ours = r#"{"type":"invalidate","seq":5,"epoch":"e","request_id":"r","triggered_by":"t","published_at":"x","keys":["p3:42:profile"],"pattern":null,"pattern_type":null}"#;
        assert_eq!(event_index(ours.as_bytes()), Some(42));
        assert_eq!(event_index(br#"{"type":"pong","seq":1}"#), None);
    }

    #[test]
    fn interests_use_each_systems_syntax() {
        let r = [Route::Pattern(7)];
        assert_eq!(interests(System::Invalidator, &r), ["p7:*"]);
        assert_eq!(interests(System::Redis, &r), ["p7:*"]);
        assert_eq!(interests(System::NatsWs, &r), ["p7.>"]);
        assert_eq!(interests(System::Nats, &[Route::Fanout]), ["fanout"]);
    }
}
