//! A cache manager that keeps a bounded local cache coherent with a running invalidator server.
//!
//! ```text
//! invalidator serve &                                   # listens on 127.0.0.1:4000
//! cargo run -p invalidator-client --example cache_manager -- ws://127.0.0.1:4000/ws 'user:*' user:1,user:2
//! curl -XPOST localhost:4000/invalidate/key -H 'content-type: application/json' \
//!   -d '{"keys":["user:2"],"triggered_by":"me"}'
//! ```
//! Arguments: URL (default `ws://127.0.0.1:4000/ws`), subscription pattern (default `user:*`),
//! comma-separated keys the "application" reads (default `user:1,user:2,user:3,order:1`).
//! Env: `INVALIDATOR_TOKEN` (a token with the `subscribe` scope), `EXAMPLE_RUN_SECONDS` (stop
//! after that long; default: until Ctrl-C).
//!
//! Every second it reads its keys cache-aside through `get_or_fill` from a toy "database"
//! (the fill guard makes sure a value read before an invalidation is never stored after it),
//! and prints what it read. Every connection and invalidation event is printed as it is
//! applied, prefixed with the Unix time in microseconds (`t=1733050000.123456`), e.g.
//!
//! ```text
//! t=1733050000.123456 connected session=1 epoch=3f2a... resuming=false
//! t=1733050001.200100 invalidate seq=7 keys=["user:2"] dropped
//! t=1733050009.000300 reset reason=epoch_changed: local cache cleared
//! ```
//! Kill the server and restart it: the client reconnects (full-jitter backoff), resumes, or
//! clears its cache on a `reset`.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use invalidator_client::{BoundedCache, CacheClient, ClientEvent, ClientOptions};

/// The source of truth: a value per key that changes on every load (so staleness shows).
struct Database {
    loads: AtomicU64,
}

impl Database {
    async fn load(&self, key: &str) -> Result<String, String> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(format!(
            "{key}@v{}",
            self.loads.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

/// Unix time with microseconds.
fn stamp() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("t={}.{:06}", t.as_secs(), t.subsec_micros())
}

fn describe(event: &ClientEvent) -> String {
    match event {
        ClientEvent::Connected {
            session,
            epoch,
            resuming,
        } => format!("connected session={session} epoch={epoch} resuming={resuming}"),
        ClientEvent::Resumed { replayed, seq } => format!("resumed replayed={replayed} seq={seq}"),
        ClientEvent::Reset { reason } => format!("reset reason={reason}: local cache cleared"),
        ClientEvent::Disconnected => "disconnected; reconnecting".to_string(),
        ClientEvent::Invalidated(inv) => {
            let mut line = format!("invalidate seq={} keys={:?}", inv.seq, inv.keys);
            if let (Some(p), Some(t)) = (&inv.pattern, inv.pattern_type) {
                line += &format!(" pattern={p:?} ({})", t.as_str());
            }
            if !inv.tags.is_empty() {
                line += &format!(" tags={:?}", inv.tags);
            }
            if inv.replayed {
                line += " replayed";
            }
            line += if inv.cleared {
                " cleared (pattern not understood)"
            } else if inv.soft {
                " marked stale"
            } else {
                " dropped"
            };
            line
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:4000/ws".into());
    let pattern = args.next().unwrap_or_else(|| "user:*".into());
    let keys: Vec<String> = args
        .next()
        .unwrap_or_else(|| "user:1,user:2,user:3,order:1".into())
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let mut opts = ClientOptions::new(&url).subscribe(pattern.clone(), None);
    if let Ok(token) = std::env::var("INVALIDATOR_TOKEN") {
        opts = opts.token(token);
    }
    let run_for = std::env::var("EXAMPLE_RUN_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64);

    let cache = Arc::new(BoundedCache::<String>::new(10_000));
    let client = CacheClient::connect(opts, cache.clone()).await?;
    let st = client.status();
    println!(
        "{} ready: {url} epoch={} seq={} subscribed to {pattern}",
        stamp(),
        st.epoch.unwrap_or_default(),
        st.seq
    );
    // Print every event as it is applied.
    let mut events = client.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => println!("{} {}", stamp(), describe(&e)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("{} ({n} events not printed)", stamp())
                }
                Err(_) => return,
            }
        }
    });

    let db = Arc::new(Database {
        loads: AtomicU64::new(0),
    });
    let stop = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Vec<Option<String>> = vec![None; keys.len()];
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        for (i, key) in keys.iter().enumerate() {
            // Cache-aside with the fill guard: a hit is local, a miss loads once.
            let db = db.clone();
            match client
                .get_or_fill(key, move |k| async move { db.load(&k).await })
                .await
            {
                Ok(v) => {
                    if last[i].as_ref() != Some(&v) {
                        println!("{} read {key} = {v}", stamp());
                        last[i] = Some(v);
                    }
                }
                Err(e) => println!("{} read {key} failed: {e}", stamp()),
            }
        }
    }
    let st = client.status();
    println!(
        "{} stopping: {} cached, {} events, {} resets, {} sessions, seq={}",
        stamp(),
        cache.len(),
        st.events,
        st.resets,
        st.sessions,
        st.seq
    );
    Ok(())
}
