//! Pieces shared by the scenarios: histogram summaries, a progress bar, server CPU time.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A random tag of this generator run: request ids `lg-<run>-...` are fresh across runs too,
/// as users send them (a stale id would be answered as a duplicate, from memory).
pub fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| format!("{:016x}", fastrand::u64(..)))
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// p50/p90/p99/p999/max/mean in µs.
pub fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(), "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

pub fn fmt_us(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} µs  p90 {} µs  p99 {} µs  p999 {} µs  max {} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

/// A progress bar on stderr (indicatif; hidden when stderr is not a terminal, so CI logs and
/// pipes stay clean), filled by time over the run, with the count done and the current rate.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// `done` counts completed operations; the bar fills by time over `duration`.
    pub fn start(label: &'static str, duration: Duration, done: Arc<AtomicU64>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let bar = indicatif::ProgressBar::new(duration.as_millis().max(1) as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}%  {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label);
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut last = (start, 0u64);
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let now = Instant::now();
                let n = done.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, n);
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!("{n} done  {rate:>9.0}/s"));
            }
            bar.finish_and_clear();
        });
        Progress {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// CPU seconds (user + system) used so far by process `pid`, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

/// `host:port` of an http:// URL.
pub fn authority(url: &str) -> Result<String, BoxError> {
    Ok(invalidator::http::client::authority(url)?)
}
