//! Scenario `keys`: C keep-alive connections each sending `POST /invalidate/key` back to back
//! (closed loop) for a duration; per-request latency in an HDR histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use invalidator::http::client::HttpClient;
use serde_json::json;

use crate::common::{BoxError, Progress, authority, cpu_seconds, fmt_us, histogram, summary};

#[derive(clap::Args)]
pub struct KeysArgs {
    /// Server base URL.
    #[arg(long, env = "INVALIDATOR_URL", default_value = "http://127.0.0.1:4000")]
    url: String,
    /// Concurrent keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, short = 'd', default_value_t = 10)]
    duration: u64,
    /// Target total requests per second: each connection sends on a fixed schedule (tokio's
    /// timer has 1 ms granularity, so sends come in small bursts) and latency counts from the
    /// actual send. 0 = closed loop, as fast as the server answers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Keys per request.
    #[arg(long, default_value_t = 2)]
    keys_per_request: usize,
    /// Send no `request_id` (the server generates one). By default every request carries a
    /// fresh one, as users send them.
    #[arg(long)]
    no_request_id: bool,
    /// Bearer token.
    #[arg(long, env = "INVALIDATOR_TOKEN")]
    token: Option<String>,
    /// PID of the server, to report its CPU seconds.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// A ~200-byte body with distinct keys (formatted by hand: the generator shares the CPU with
/// the server, so it keeps its own cost small).
fn body(conn: usize, n: u64, keys: usize, request_id: bool) -> String {
    use std::fmt::Write;
    let mut b = String::with_capacity(256);
    b.push_str("{\"keys\": [");
    for k in 0..keys {
        if k > 0 {
            b.push_str(", ");
        }
        let _ = write!(b, "\"user:{conn}:{n}:{k}:profile-settings-v2\"");
    }
    b.push_str("], \"triggered_by\": \"load-generator/keys-scenario\"");
    if request_id {
        let _ = write!(
            b,
            ", \"request_id\": \"lg-{}-{conn}-{n}\"",
            super::common::run_id()
        );
    }
    b.push('}');
    b
}

pub async fn run(a: KeysArgs) -> Result<(), BoxError> {
    let addr = authority(&a.url)?;
    let duration = Duration::from_secs(a.duration);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = a.server_pid.and_then(cpu_seconds);
    let mut clients = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        clients.push(HttpClient::connect(&addr).await?);
    }
    let progress = Progress::start("keys", duration, done.clone());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (conn, mut client) in clients.into_iter().enumerate() {
        let (done, errors, token) = (done.clone(), errors.clone(), a.token.clone());
        let keys = a.keys_per_request;
        let with_id = !a.no_request_id;
        // Per-connection interval of an open-loop run; connections start staggered.
        let interval =
            (a.rate > 0).then(|| Duration::from_secs_f64(a.connections as f64 / a.rate as f64));
        let offset = interval.map(|i| i.mul_f64(conn as f64 / a.connections as f64));
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let b = body(conn, n, keys, with_id);
                if let (Some(i), Some(o)) = (interval, offset) {
                    tokio::time::sleep_until((start + o + i.mul_f64(n as f64)).into()).await;
                }
                let t = Instant::now();
                n += 1;
                match client
                    .post_json("/invalidate/key", b, token.as_deref())
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            h
        }));
    }
    let mut total = histogram();
    for t in tasks {
        total.add(t.await?)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(progress);
    let ok = done.load(Ordering::Relaxed);
    let cpu = match (cpu_before, a.server_pid.and_then(cpu_seconds)) {
        (Some(b), Some(e)) => Some(e - b),
        _ => None,
    };
    let mode = match a.rate {
        0 => "closed loop".to_string(),
        r => format!("open loop at {r} req/s"),
    };
    let ids = if a.no_request_id {
        "no request_id"
    } else {
        "a fresh request_id each"
    };
    println!(
        "scenario keys: {} connections, {:.1} s, {} keys/request, {ids}, {mode}",
        a.connections, elapsed, a.keys_per_request
    );
    println!(
        "  requests ok {ok}  errors {}  throughput {:.0} req/s",
        errors.load(Ordering::Relaxed),
        ok as f64 / elapsed
    );
    println!("  latency {}", fmt_us(&total));
    if let Some(cpu) = cpu {
        println!(
            "  server CPU {cpu:.2} s ({:.0} req per server CPU-second)",
            ok as f64 / cpu.max(1e-9)
        );
    }
    if let Some(path) = a.json {
        let v = json!({"scenario": "keys", "connections": a.connections, "target_rate": a.rate, "seconds": elapsed,
            "request_ids": !a.no_request_id,
            "requests": ok, "errors": errors.load(Ordering::Relaxed), "per_second": ok as f64 / elapsed,
            "latency_us": summary(&total), "server_cpu_seconds": cpu});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
