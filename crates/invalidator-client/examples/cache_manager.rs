//! A cache manager that keeps a local `HashMap` coherent with a running invalidator server.
//!
//! ```text
//! invalidator serve &                                   # listens on 127.0.0.1:4000
//! cargo run --example cache_manager -- ws://127.0.0.1:4000/ws 'user:*'
//! curl -XPOST localhost:4000/invalidate/key -d '{"keys":["user:2"],"triggered_by":"me"}'
//! ```
//! Every second it reads a few keys cache-aside from a toy "database" (the fill guard makes
//! sure a value read before an invalidation is never stored after it), and prints what the
//! cache holds and where the client stands. Kill the server and restart it: the client
//! reconnects, resumes, or clears its cache on a `reset`. Token: `INVALIDATOR_TOKEN`.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use invalidator_client::{CacheClient, ClientOptions, MapCache};

/// The source of truth: a value per key that changes on every load (so staleness shows).
struct Database {
    loads: AtomicU64,
}

impl Database {
    async fn load(&self, key: &str) -> String {
        tokio::time::sleep(Duration::from_millis(5)).await;
        format!("{key}@v{}", self.loads.fetch_add(1, Ordering::Relaxed))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:4000/ws".into());
    let pattern = args.next().unwrap_or_else(|| "user:*".into());
    let mut opts = ClientOptions::new(url).subscribe(pattern, None);
    if let Ok(token) = std::env::var("INVALIDATOR_TOKEN") {
        opts = opts.token(token);
    }
    let cache = Arc::new(MapCache::<String>::default());
    let client = CacheClient::connect(opts, cache.clone()).await?;
    let db = Database {
        loads: AtomicU64::new(0),
    };
    let keys = ["user:1", "user:2", "user:3", "order:1"];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        for key in keys {
            if cache.get(key).is_some() {
                continue;
            }
            // Cache-aside with the fill guard: register, then read, then store if still valid.
            let token = client.begin_fill(key).await?;
            let value = db.load(key).await;
            if !client.complete_fill(token, value) {
                println!("{key}: invalidated while loading; not stored");
            }
        }
        let status = client.status();
        let held: Vec<String> = keys.iter().filter_map(|k| cache.get(k)).collect();
        println!(
            "seq {} connected {} sessions {} resets {} events {} | cache {:?}",
            status.seq, status.connected, status.sessions, status.resets, status.events, held
        );
    }
}
