//! `fanout` scenario: N WebSocket subscribers on one interest, a publisher POSTing
//! `/invalidate/key`, latency from the POST being sent to the LAST subscriber receiving the
//! event, and deliveries per second.
//!
//! Each event carries one key `fanout:<index>:<padding>` (a ~200-byte body); subscribers find
//! the index with a substring search rather than a JSON parse, so the client side stays cheap
//! on a machine it shares with the server. Per event we keep the send time, the number of
//! subscribers that received it and the latest receipt time (atomics, no locks).
//!
//! `--rate 0` publishes as fast as `--publishers` keep-alive connections allow: that run's
//! deliveries/s is the fan-out throughput. A fixed `--rate` measures latency under that load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use invalidator::http::client::HttpClient;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

// `super::common`: the load generator's shared helpers (crate root in `invalidator-load`;
// tests/ws.rs mounts both files under one module to smoke-test this scenario).
use super::common::{BoxError, authority, cpu_seconds, fmt_us, histogram, summary};

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Server base URL (the WebSocket URL is derived from it: ws://host:port/ws).
    #[arg(long, env = "INVALIDATOR_URL", default_value = "http://127.0.0.1:4000")]
    pub url: String,
    /// WebSocket subscribers.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Publish to this server instead of `--url` (cluster mode: subscribers on one node,
    /// publisher on another).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Events to publish.
    #[arg(long, short = 'e', default_value_t = 2000)]
    pub events: u64,
    /// Events per second; 0 publishes as fast as the publishers can.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Concurrent publishing connections (with --rate 0).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Subscription pattern every subscriber uses.
    #[arg(long, default_value = "fanout:*")]
    pub pattern: String,
    /// Bearer token (needs `invalidate` and `subscribe`).
    #[arg(long, env = "INVALIDATOR_TOKEN")]
    pub token: Option<String>,
    /// PID of the server, to report its CPU seconds.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up waiting for deliveries this many seconds after the last POST.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// Per-event bookkeeping shared by the publisher and the subscribers.
struct Board {
    start: Instant,
    sent_ns: Vec<AtomicU64>,
    received: Vec<AtomicU32>,
    last_ns: Vec<AtomicU64>,
    deliveries: AtomicU64,
}

impl Board {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, index: usize) {
        let now = self.now_ns();
        if let (Some(r), Some(l)) = (self.received.get(index), self.last_ns.get(index)) {
            r.fetch_add(1, Ordering::Relaxed);
            l.fetch_max(now, Ordering::Relaxed);
            self.deliveries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The event index in an `invalidate` frame: `"keys":["fanout:<index>:`.
fn event_index(text: &str) -> Option<usize> {
    let at = text.find("\"keys\":[\"")? + 9;
    let rest = text.get(at..)?;
    let rest = &rest[rest.find(':')? + 1..];
    let end = rest.find(':')?;
    rest[..end].parse().ok()
}

fn body(index: u64) -> String {
    let key = format!("fanout:{index}:{}", "p".repeat(96));
    let request_id = format!("lg-{}-fanout-{index}", super::common::run_id());
    json!({"keys": [key], "triggered_by": "load-generator/fanout-scenario", "request_id": request_id})
        .to_string()
}

async fn subscriber(
    url: String,
    token: Option<String>,
    pattern: String,
    board: Arc<Board>,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let mut req = url.as_str().into_client_request()?;
    if let Some(t) = &token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    // tungstenite zero-fills its whole read buffer before every read: keep it small, or the
    // 1000 clients' memsets dominate the machine the server shares with them.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    ws.send(Message::text(
        json!({"op": "subscribe", "patterns": [pattern]}).to_string(),
    ))
    .await?;
    // hello, then subscribed.
    let mut seen = 0;
    while seen < 2 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"error\"") => {
                return Err(format!("subscribe refused: {t}").into());
            }
            Some(Ok(Message::Text(_))) => seen += 1,
            Some(Ok(_)) => {}
            _ => return Err("connection ended before subscribed".into()),
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg
                && let Some(i) = event_index(t.as_str())
            {
                board.record(i);
            }
        }
    }))
}

pub async fn run(a: FanoutArgs) -> Result<(), BoxError> {
    let addr = authority(&a.url)?;
    let ws_url = format!("ws://{addr}/ws");
    let publish_addr = match &a.publish_url {
        Some(u) => authority(u)?,
        None => addr.clone(),
    };
    let n = a.events as usize;
    let board = Arc::new(Board {
        start: Instant::now(),
        sent_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        received: (0..n).map(|_| AtomicU32::new(0)).collect(),
        last_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
        deliveries: AtomicU64::new(0),
    });

    eprintln!("connecting {} subscribers to {ws_url} ...", a.subscribers);
    let mut readers = Vec::with_capacity(a.subscribers);
    for chunk in (0..a.subscribers).collect::<Vec<_>>().chunks(64) {
        let batch = chunk.iter().map(|_| {
            subscriber(
                ws_url.clone(),
                a.token.clone(),
                a.pattern.clone(),
                board.clone(),
            )
        });
        for r in futures_util::future::join_all(batch).await {
            readers.push(r?);
        }
    }

    let cpu_before = a.server_pid.and_then(cpu_seconds);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let publishers = if a.rate > 0 { 1 } else { a.publishers.max(1) };
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(1.0 / a.rate as f64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let mut client = HttpClient::connect(&publish_addr).await?;
        let (board, next, errors, token) =
            (board.clone(), next.clone(), errors.clone(), a.token.clone());
        let events = a.events;
        tasks.push(tokio::spawn(async move {
            let mut ticker = interval.map(tokio::time::interval);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return;
                }
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let b = body(i);
                if let Some(s) = board.sent_ns.get(i as usize) {
                    s.store(board.now_ns(), Ordering::Relaxed);
                }
                match client
                    .post_json("/invalidate/key", b, token.as_deref())
                    .await
                {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let posted_in = start.elapsed().as_secs_f64();
    let expected = a.events * a.subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs(a.drain_secs);
    while board.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_ns = board
        .last_ns
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let first_sent = board
        .sent_ns
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .filter(|&s| s > 0)
        .min()
        .unwrap_or(0);
    let elapsed = (last_ns.saturating_sub(first_sent)) as f64 / 1e9;
    let cpu = match (cpu_before, a.server_pid.and_then(cpu_seconds)) {
        (Some(b), Some(e)) => Some(e - b),
        _ => None,
    };
    for r in readers {
        r.abort();
    }

    let mut h = histogram();
    let mut complete = 0u64;
    for i in 0..n {
        if board.received[i].load(Ordering::Relaxed) as usize == a.subscribers {
            complete += 1;
            let lat = board.last_ns[i]
                .load(Ordering::Relaxed)
                .saturating_sub(board.sent_ns[i].load(Ordering::Relaxed));
            let _ = h.record((lat / 1000).max(1));
        }
    }
    let deliveries = board.deliveries.load(Ordering::Relaxed);
    let per_sec = deliveries as f64 / elapsed.max(1e-9);
    println!(
        "scenario fanout: {} subscribers on {:?}, {} events ({}), published in {posted_in:.2} s",
        a.subscribers,
        a.pattern,
        a.events,
        if a.rate > 0 {
            format!("{}/s", a.rate)
        } else {
            format!("max rate, {publishers} publishers")
        }
    );
    println!(
        "  deliveries {deliveries}/{expected}  complete events {complete}/{}  POST errors {}",
        a.events,
        errors.load(Ordering::Relaxed)
    );
    println!("  throughput {per_sec:.0} deliveries/s over {elapsed:.2} s");
    println!(
        "  latency POST sent -> last subscriber received: {}",
        fmt_us(&h)
    );
    if let Some(cpu) = cpu {
        println!(
            "  server CPU {cpu:.2} s ({:.0} deliveries per server CPU-second)",
            deliveries as f64 / cpu.max(1e-9)
        );
    }
    if let Some(path) = a.json {
        let v = json!({"scenario": "fanout", "subscribers": a.subscribers, "events": a.events,
            "rate": a.rate, "deliveries": deliveries, "expected": expected, "complete_events": complete,
            "seconds": elapsed, "deliveries_per_second": per_sec, "latency_us": summary(&h),
            "server_cpu_seconds": cpu, "post_errors": errors.load(Ordering::Relaxed)});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_event_index() {
        let frame = r#"{"type":"invalidate","seq":5,"epoch":"e","request_id":"r","triggered_by":"t","published_at":"x","keys":["fanout:42:ppp"],"pattern":null,"pattern_type":null}"#;
        assert_eq!(event_index(frame), Some(42));
        assert_eq!(event_index(r#"{"type":"pong","seq":1}"#), None);
        assert!(body(7).len() < 260);
    }
}
