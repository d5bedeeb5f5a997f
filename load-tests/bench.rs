//! Scenarios `bench-fanout` and `bench-patterns`: the same measurement against our server and
//! the peers a user would pick instead (Redis pub/sub, nats-server over TCP and WebSocket; see
//! `peers/mod.rs` for how each maps an interest and a publish).
//!
//! * `bench-fanout`: N subscribers on one interest, one publisher; every event reaches all N.
//! * `bench-patterns`: S subscribers holding M distinct prefix patterns in total (pattern `j`
//!   belongs to subscriber `j % S`, so with M < S some subscribers hold none); event `i` goes to
//!   pattern `(i * 7919) % M`, so it reaches exactly one subscriber and every pattern is used.
//!
//! Each scenario runs three phases on the same connections:
//! 1. warm-up (discarded);
//! 2. latency: one publisher at a fixed rate, the same offered load for every system;
//! 3. max rate: P publishers in a closed loop (each publish acknowledged before the next: HTTP
//!    200, Redis's `PUBLISH` reply, NATS's `PONG` after the `PUB`), bounded by an event count
//!    and a duration.
//!
//! Per phase: publish → LAST receiver latency (per event, complete events only), per-delivery
//! latency, deliveries/s from the first send to the last receipt, publishes/s, the server's CPU
//! seconds (from /proc, `--server-pid`) and ours, and deliveries per server CPU-second. The load
//! generator shares the machine with the server, so the CPU-second figures are the fair
//! comparison; wall-clock rates include the generator's own cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::common::{BoxError, Progress, cpu_seconds, fmt_us, histogram, summary};
use crate::peers::{Endpoints, Log, Publisher, Route, Shared, Sink, System, subscribe};

/// Options every benchmark scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// System under test.
    #[arg(long, value_enum)]
    pub system: System,
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Subscribers (connections).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
    /// Warm-up events (at the latency phase's rate; not reported).
    #[arg(long, default_value_t = 50)]
    pub warmup_events: u64,
    /// Events in the fixed-rate latency phase.
    #[arg(long, default_value_t = 300)]
    pub latency_events: u64,
    /// Publishes per second in the latency phase.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Most events in the max-rate phase.
    #[arg(long, default_value_t = 2000)]
    pub max_events: u64,
    /// Most seconds of publishing in the max-rate phase.
    #[arg(long, default_value_t = 5.0)]
    pub max_secs: f64,
    /// Closed-loop publishing connections in the max-rate phase.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// PID of the server process, to report its CPU seconds.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up waiting for deliveries this many seconds after the last publish (or after 3 s
    /// without a new delivery).
    #[arg(long, default_value_t = 20)]
    pub drain_secs: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PatternsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Distinct prefix patterns in total, spread over the subscribers.
    #[arg(long, short = 'm', default_value_t = 1000)]
    pub patterns: usize,
}

/// The connected subscribers and what routes an event.
struct Bench {
    system: System,
    common: Common,
    shared: Arc<Shared>,
    logs: Vec<Log>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// Route of event `i`.
    route: Arc<dyn Fn(u64) -> Route + Send + Sync>,
    /// Subscribers each event reaches.
    fan: u64,
    next_index: u64,
    /// Server RSS before the subscribers connected, and once they had.
    rss_idle_kib: Option<u64>,
    rss_connected_kib: Option<u64>,
}

/// Stride between consecutive events' patterns: prime, so every pattern gets used.
const STRIDE: u64 = 7_919;

pub async fn run_fanout(a: FanoutArgs) -> Result<(), BoxError> {
    let c = a.common;
    let holdings = vec![vec![Route::Fanout]; c.subscribers];
    let fan = c.subscribers as u64;
    let mut b = Bench::connect(c, holdings, Arc::new(|_| Route::Fanout), fan).await?;
    let out = b.run_phases().await?;
    b.finish(json!({"scenario": "fanout"}), out)
}

pub async fn run_patterns(a: PatternsArgs) -> Result<(), BoxError> {
    let c = a.common;
    let m = a.patterns.max(1);
    if (m as u64).is_multiple_of(STRIDE) {
        return Err(format!("--patterns must not be a multiple of {STRIDE}").into());
    }
    let s = c.subscribers.max(1);
    let mut holdings = vec![Vec::new(); s];
    for j in 0..m {
        holdings[j % s].push(Route::Pattern(j));
    }
    let route = Arc::new(move |i: u64| Route::Pattern(((i * STRIDE) % m as u64) as usize));
    let mut b = Bench::connect(c, holdings, route, 1).await?;
    let out = b.run_phases().await?;
    b.finish(json!({"scenario": "patterns", "patterns": m}), out)
}

/// One phase's parameters.
struct Phase {
    label: &'static str,
    events: u64,
    /// Publishes per second; 0 = as fast as the closed loop goes.
    rate: u64,
    publishers: usize,
    max_secs: f64,
}

impl Bench {
    async fn connect(
        common: Common,
        holdings: Vec<Vec<Route>>,
        route: Arc<dyn Fn(u64) -> Route + Send + Sync>,
        fan: u64,
    ) -> Result<Bench, BoxError> {
        let system = common.system;
        let pid = common.server_pid;
        let shared = Shared::new();
        let rss_idle_kib = common.server_pid.and_then(rss_kib);
        let mut logs = Vec::with_capacity(holdings.len());
        let mut readers = Vec::with_capacity(holdings.len());
        eprintln!(
            "{}: connecting {} subscribers ({} interests) ...",
            system.name(),
            holdings.len(),
            holdings.iter().map(Vec::len).sum::<usize>()
        );
        for chunk in holdings.chunks(64) {
            let batch = chunk.iter().map(|routes| {
                let log: Log = Default::default();
                logs.push(log.clone());
                let sink = Sink {
                    shared: shared.clone(),
                    log,
                };
                subscribe(system, &common.endpoints, routes, sink)
            });
            for r in futures_util::future::join_all(batch).await {
                readers.push(r?);
            }
        }
        Ok(Bench {
            system,
            common,
            shared,
            logs,
            readers,
            route,
            fan,
            next_index: 0,
            rss_idle_kib,
            rss_connected_kib: pid.and_then(rss_kib),
        })
    }

    async fn run_phases(&mut self) -> Result<Value, BoxError> {
        let c = self.common.clone();
        let warm = Phase {
            label: "warm-up",
            events: c.warmup_events,
            rate: c.rate,
            publishers: 1,
            max_secs: 60.0,
        };
        if warm.events > 0 {
            self.phase(&warm).await?;
        }
        let latency = Phase {
            label: "latency",
            events: c.latency_events,
            rate: c.rate,
            publishers: 1,
            max_secs: 600.0,
        };
        let latency = self.phase(&latency).await?;
        let max = Phase {
            label: "max-rate",
            events: c.max_events,
            rate: 0,
            publishers: c.publishers.max(1),
            max_secs: c.max_secs,
        };
        let max = self.phase(&max).await?;
        Ok(json!({"latency_phase": latency, "max_rate_phase": max}))
    }

    fn finish(self, mut head: Value, phases: Value) -> Result<(), BoxError> {
        for r in &self.readers {
            r.abort();
        }
        let c = &self.common;
        head["system"] = json!(self.system.name());
        head["subscribers"] = json!(c.subscribers);
        head["payload_bytes"] = json!(self.shared.payload_bytes.load(Ordering::Relaxed));
        head["publishers"] = json!(c.publishers);
        head["latency_rate"] = json!(c.rate);
        head["server_rss_kib_before_connect"] = json!(self.rss_idle_kib);
        head["server_rss_kib_connected"] = json!(self.rss_connected_kib);
        head["server_rss_kib_end"] = json!(c.server_pid.and_then(rss_kib));
        if let (Some(a), Some(b)) = (self.rss_idle_kib, self.rss_connected_kib) {
            println!(
                "{}: server RSS {} KiB before the subscribers connected, {} KiB after ({:+} KiB)",
                self.system.name(),
                a,
                b,
                b as i64 - a as i64
            );
        }
        if let (Value::Object(h), Value::Object(p)) = (&mut head, phases) {
            h.extend(p);
        }
        if let Some(path) = &c.json {
            std::fs::write(path, serde_json::to_string_pretty(&head)?)?;
        }
        Ok(())
    }

    /// Publishes `p.events` events (or for `p.max_secs`), waits for their deliveries, and
    /// summarizes.
    async fn phase(&mut self, p: &Phase) -> Result<Value, BoxError> {
        let first = self.next_index;
        let sent_ns: Arc<Vec<AtomicU64>> =
            Arc::new((0..p.events).map(|_| AtomicU64::new(0)).collect());
        let next = Arc::new(AtomicU64::new(0));
        let published = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let mut pubs = Vec::new();
        for _ in 0..p.publishers {
            pubs.push(Publisher::connect(self.system, &self.common.endpoints).await?);
        }
        let delivered_before = self.shared.deliveries.load(Ordering::Relaxed);
        let pid = self.common.server_pid;
        let server_cpu_before = pid.and_then(cpu_seconds);
        let own_cpu_before = cpu_seconds(std::process::id());
        let progress = Progress::start(p.label, publish_horizon(p), published.clone());
        let t0 = tokio::time::Instant::now();
        let deadline = t0 + Duration::from_secs_f64(p.max_secs);
        let mut tasks = Vec::new();
        for mut publisher in pubs {
            let (sent_ns, next, published, errors, route, shared) = (
                sent_ns.clone(),
                next.clone(),
                published.clone(),
                errors.clone(),
                self.route.clone(),
                self.shared.clone(),
            );
            let (events, rate) = (p.events, p.rate);
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events || tokio::time::Instant::now() >= deadline {
                        return;
                    }
                    if rate > 0 {
                        let at = t0 + Duration::from_secs_f64(i as f64 / rate as f64);
                        tokio::time::sleep_until(at).await;
                    }
                    let index = first + i;
                    sent_ns[i as usize].store(shared.now_ns().max(1), Ordering::Relaxed);
                    match publisher.publish(index, route(index)).await {
                        Ok(()) => {
                            published.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("publish failed: {e}");
                            }
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let publish_secs = t0.elapsed().as_secs_f64();
        drop(progress);
        let attempted = sent_ns
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) > 0)
            .count() as u64;
        let expected = attempted * self.fan;
        self.wait_deliveries(delivered_before, expected).await;
        let server_cpu = match (server_cpu_before, pid.and_then(cpu_seconds)) {
            (Some(b), Some(e)) => Some(e - b),
            _ => None,
        };
        let own_cpu = match (own_cpu_before, cpu_seconds(std::process::id())) {
            (Some(b), Some(e)) => Some(e - b),
            _ => None,
        };
        self.next_index = first + p.events;

        let stats = self.collect(first, &sent_ns);
        let ok = published.load(Ordering::Relaxed);
        // /proc counts CPU in 10 ms ticks: below one tick the ratio means nothing.
        let per_cpu = |n: u64| server_cpu.filter(|&c| c >= 0.01).map(|c| n as f64 / c);
        let v = json!({
            "events": attempted, "published_ok": ok, "publish_errors": errors.load(Ordering::Relaxed),
            "target_rate": p.rate, "publishers": p.publishers, "publish_seconds": publish_secs,
            "publishes_per_second": ok as f64 / publish_secs.max(1e-9),
            "deliveries": stats.deliveries, "expected": expected, "complete_events": stats.complete,
            "seconds": stats.seconds, "deliveries_per_second": stats.deliveries as f64 / stats.seconds.max(1e-9),
            "latency_last_us": summary(&stats.last), "latency_delivery_us": summary(&stats.each),
            "server_cpu_seconds": server_cpu, "generator_cpu_seconds": own_cpu,
            "deliveries_per_server_cpu_second": per_cpu(stats.deliveries),
            "publishes_per_server_cpu_second": per_cpu(ok),
        });
        if p.label != "warm-up" {
            self.print(p, &v, &stats);
        }
        Ok(v)
    }

    /// Waits until `expected` deliveries arrived since `before`, the drain time ran out, or
    /// nothing arrived for 3 s (a peer dropped something: reported as incomplete).
    async fn wait_deliveries(&self, before: u64, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(self.common.drain_secs);
        let mut last = (Instant::now(), 0);
        loop {
            let got = self.shared.deliveries.load(Ordering::Relaxed) - before;
            if got >= expected || Instant::now() >= deadline {
                return;
            }
            if got != last.1 {
                last = (Instant::now(), got);
            } else if last.0.elapsed() > Duration::from_secs(3) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Drains every subscriber's log and computes this phase's figures.
    fn collect(&self, first: u64, sent_ns: &[AtomicU64]) -> Stats {
        let n = sent_ns.len();
        let sent: Vec<u64> = sent_ns.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        let mut count = vec![0u64; n];
        let mut last = vec![0u64; n];
        let mut each = histogram();
        let mut deliveries = 0u64;
        for log in &self.logs {
            let entries = std::mem::take(&mut *log.lock());
            for (index, at) in entries {
                let Some(k) = (index as u64).checked_sub(first).map(|k| k as usize) else {
                    continue;
                };
                if k >= n || sent[k] == 0 {
                    continue;
                }
                deliveries += 1;
                count[k] += 1;
                last[k] = last[k].max(at);
                let _ = each.record((at.saturating_sub(sent[k]) / 1000).max(1));
            }
        }
        let mut last_h = histogram();
        let mut complete = 0;
        for k in 0..n {
            if sent[k] > 0 && count[k] == self.fan {
                complete += 1;
                let _ = last_h.record((last[k].saturating_sub(sent[k]) / 1000).max(1));
            }
        }
        let first_sent = sent.iter().copied().filter(|&s| s > 0).min().unwrap_or(0);
        let last_recv = last.iter().copied().max().unwrap_or(0);
        Stats {
            deliveries,
            complete,
            seconds: last_recv.saturating_sub(first_sent) as f64 / 1e9,
            last: last_h,
            each,
        }
    }

    fn print(&self, p: &Phase, v: &Value, s: &Stats) {
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        println!(
            "{} {} phase: {} subscribers, {} events ({}), {:.0} publishes/s",
            self.system.name(),
            p.label,
            self.common.subscribers,
            v["events"],
            if p.rate > 0 {
                format!("{}/s", p.rate)
            } else {
                format!("max rate, {} publishers", p.publishers)
            },
            f("publishes_per_second"),
        );
        println!(
            "  deliveries {}/{}  complete events {}  errors {}  {:.0} deliveries/s over {:.2} s",
            s.deliveries,
            v["expected"],
            s.complete,
            v["publish_errors"],
            f("deliveries_per_second"),
            s.seconds
        );
        println!("  publish -> last receiver: {}", fmt_us(&s.last));
        println!("  publish -> each delivery: {}", fmt_us(&s.each));
        if let Some(cpu) = v["server_cpu_seconds"].as_f64() {
            println!(
                "  server CPU {cpu:.2} s ({:.0} deliveries, {:.0} publishes per server CPU-second); generator CPU {:.2} s",
                f("deliveries_per_server_cpu_second"),
                f("publishes_per_server_cpu_second"),
                f("generator_cpu_seconds")
            );
        }
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` from /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How long the progress bar expects a phase to publish.
fn publish_horizon(p: &Phase) -> Duration {
    let secs = if p.rate > 0 {
        (p.events as f64 / p.rate as f64).min(p.max_secs)
    } else {
        p.max_secs
    };
    Duration::from_secs_f64(secs.max(0.1))
}

struct Stats {
    deliveries: u64,
    complete: u64,
    seconds: f64,
    last: Histogram<u64>,
    each: Histogram<u64>,
}
