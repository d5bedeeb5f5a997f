//! Indexes that route an invalidation to connections without scanning everything: the
//! subscription-pattern index ([`SubscriptionIndex`], `subs.rs`) and the tracked-key index
//! ([`TrackedIndex`], `tracked.rs`).
//!
//! # Design
//!
//! Patterns are split by class, because no single automaton scales to thousands of mixed
//! patterns (measured: one DFA over 10,000 mixed patterns never finished building, 1.7 GB):
//!
//! * exact keys and prefixes live in a forward byte trie (`trie.rs`), suffixes (and exact keys
//!   again) in a trie of reversed bytes, so matching one key is one walk over its bytes in each
//!   trie: O(key length), whatever the number of patterns;
//! * globs and regexes are compiled together into a few multi-pattern dense DFAs
//!   (`automata.rs`), rebuilt off the hot path; patterns subscribed since the last build wait
//!   in a short "pending" list checked one by one;
//! * tracked keys live in a hash map (one-shot `take_key` is one lookup) plus an `fst::Set` of
//!   all keys and one of the reversed keys (base) with a small in-memory delta, so a pattern
//!   lookup walks only the part of the key space the pattern can reach.
//!
//! `shape.rs` is the one place that turns a [`Pattern`](crate::pattern::Pattern) into what the
//! indexes need (its literal, its literal prefix, its regex source).
//!
//! # Use
//!
//! The fan-out owns one of each. On publish: `SubscriptionIndex::match_key` per key and
//! `TrackedIndex::take_key` (one-shot) for key invalidations; `match_pattern` and
//! `take_pattern` for pattern invalidations; `TrackedIndex::matches` for the HTTP response's
//! `matched_keys`. Outputs may repeat a connection: the caller deduplicates. Both indexes
//! rebuild their compiled parts by themselves on background threads; `maintain()` on a timer
//! is optional upkeep, and `stats()` feeds the metrics.
//!
//! # Concurrency
//!
//! Publishing is serialised by the caller; subscribe/track calls come concurrently from the
//! connection tasks. Each index keeps its mutable state behind one `parking_lot::RwLock` with
//! short critical sections; the expensive rebuilds (DFA compilation, fst construction) run on
//! a background thread from a snapshot taken under the read lock and are installed with an
//! O(delta) step under the write lock.

mod automata;
mod shape;
mod subs;
mod tracked;
mod trie;

pub use subs::{PENDING_LIMIT, SubscriptionIndex, SubscriptionStats};
pub use tracked::{DELTA_MIN, TrackedIndex, TrackedStats};

/// Identifies one WebSocket connection for the lifetime of the process.
pub type ConnId = u64;

/// Spawn `job` on a named background thread. A failure to spawn (resource exhaustion) is not
/// fatal: the caller's `running` flag is reset so the next trigger retries, and the indexes
/// stay correct (only slower) without the rebuild.
fn spawn_background(
    name: &str,
    running: &std::sync::atomic::AtomicBool,
    job: impl FnOnce() + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(job);
    if let Err(err) = spawned {
        running.store(false, std::sync::atomic::Ordering::Release);
        tracing::warn!(error = %err, thread = name, "could not spawn index rebuild thread");
    }
}

#[cfg(test)]
mod tests;
