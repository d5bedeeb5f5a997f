//! The tracked-key index: which connections said they hold which keys (one-shot tracking, as
//! in Redis client-side caching), and an fst over all tracked keys for pattern lookups.
//!
//! # Design
//!
//! * `keys`: key → connections tracking it; `per_conn`: connection → its keys. `take_key` is
//!   one hash lookup; counts per connection are set sizes.
//! * `base`: an immutable `fst::Set` of the tracked keys at the last rebuild, and one of the
//!   same keys with their bytes reversed (suffix lookups walk it instead of every key).
//! * The delta since that rebuild: `added` (live keys missing from the base, a `BTreeSet` so a
//!   prefix is a range; `added_rev` holds them reversed so a suffix is one too) and `removed`
//!   (base keys no longer live).
//! * When the delta exceeds `max(DELTA_MIN, base/4)`, a background thread merges
//!   base − removed + added into new fsts (a scratch program: ~0.5 s for 1M keys; measured here ~1 s
//!   with the reversed fst). The snapshot only bumps reference counts; keys whose liveness
//!   changes during the build are logged, and the install (under the write lock) classifies
//!   just those against the new base: O(changes during the build), not O(delta). The
//!   geometric threshold keeps the total merge work of a bulk load at ~5x the final size.
//!
//! # Costs (n = tracked keys, d = delta size, m = matching keys, L = key length)
//!
//! * `track` / `untrack` / `take_key`: O(L) hashing + one fst lookup O(L) + O(log d).
//! * `matches` / `take_pattern`: exact O(L); prefix O(L + m) over the fst range plus a range
//!   of `added`; suffix O(L + m log m) over the reversed fst (results re-sorted); glob/regex
//!   through the pattern's fst search (`Pattern::fst_matches`: an fst walk pruned by the
//!   pattern's DFA), plus the range of `added` under its literal prefix checked with
//!   `is_match`. Never a scan of all keys unless the pattern itself can reach them all.
//! * Memory: each key once (`Arc<str>`, shared by the maps), ~1.1 MB per million keys per fst.
//!
//! # Invariants
//!
//! * live keys = `keys`' keys = (base − `removed`) ∪ `added`; `added` ∩ base = ∅;
//!   `removed` ⊆ base.
//! * `keys[k]` contains `c` ⇔ `per_conn[c]` contains `k`; no empty lists are kept.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fst::{Set, SetBuilder, Streamer};
use parking_lot::{Mutex, RwLock};

use super::shape::{Shape, literal_prefix, shape};
use super::{ConnId, spawn_background};
use crate::pattern::Pattern;

/// Smallest delta that triggers a background rebuild of the fsts.
pub const DELTA_MIN: usize = 16_384;

/// Sizes of the tracked-key index, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackedStats {
    /// Distinct live keys.
    pub keys: u64,
    /// Keys in the fst base.
    pub base_keys: u64,
    pub delta_added: u64,
    pub delta_removed: u64,
    /// Connections tracking at least one key.
    pub connections: u64,
}

#[derive(Default)]
struct Base {
    fwd: Set<Vec<u8>>,
    rev: Set<Vec<u8>>,
}

#[derive(Default)]
struct State {
    keys: HashMap<Arc<str>, Conns>,
    per_conn: HashMap<ConnId, HashSet<Arc<str>>>,
    base: Arc<Base>,
    added: BTreeSet<Arc<str>>,
    /// `added` with bytes reversed, so a suffix is a range here too.
    added_rev: BTreeSet<Box<[u8]>>,
    removed: HashSet<Arc<str>>,
    /// A rebuild is between its snapshot and its install: log every key whose liveness
    /// changes in `touched`.
    recording: bool,
    touched: Vec<Arc<str>>,
}

struct Inner {
    state: RwLock<State>,
    build: Mutex<()>,
    spawned: AtomicBool,
}

/// Keys each connection said it holds (one-shot, as in Redis client-side caching), with an
/// fst over all tracked keys (base + delta) for pattern lookups.
pub struct TrackedIndex {
    inner: Arc<Inner>,
}

impl Default for TrackedIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl TrackedIndex {
    pub fn new() -> Self {
        let inner = Inner {
            state: RwLock::new(State::default()),
            build: Mutex::new(()),
            spawned: AtomicBool::new(false),
        };
        TrackedIndex {
            inner: Arc::new(inner),
        }
    }

    /// Track `key` for `conn`; returns how many keys `conn` tracks now.
    pub fn track(&self, conn: ConnId, key: &str) -> usize {
        let (count, rebuild) = {
            let mut st = self.inner.state.write();
            let count = st.track(conn, key);
            (count, st.needs_rebuild())
        };
        if rebuild {
            self.spawn_rebuild();
        }
        count
    }

    /// Stop tracking; returns how many keys `conn` tracks now.
    pub fn untrack(&self, conn: ConnId, key: &str) -> usize {
        let (count, rebuild) = {
            let mut st = self.inner.state.write();
            st.untrack(conn, key);
            let count = st.per_conn.get(&conn).map_or(0, HashSet::len);
            (count, st.needs_rebuild())
        };
        if rebuild {
            self.spawn_rebuild();
        }
        count
    }

    /// How many keys `conn` tracks.
    pub fn count(&self, conn: ConnId) -> usize {
        self.inner
            .state
            .read()
            .per_conn
            .get(&conn)
            .map_or(0, HashSet::len)
    }

    pub fn remove_conn(&self, conn: ConnId) {
        let rebuild = {
            let mut st = self.inner.state.write();
            let Some(keys) = st.per_conn.remove(&conn) else {
                return;
            };
            for key in keys {
                st.drop_conn_from_key(&key, conn);
            }
            st.needs_rebuild()
        };
        if rebuild {
            self.spawn_rebuild();
        }
    }

    /// One-shot: remove `key` from every connection tracking it and push those connections.
    pub fn take_key(&self, key: &str, out: &mut Vec<ConnId>) {
        let mut st = self.inner.state.write();
        let Some((key, conns)) = st.keys.remove_entry(key) else {
            return;
        };
        st.forget_key(&key, conns.as_slice());
        out.extend_from_slice(conns.as_slice());
    }

    /// One-shot for a pattern: remove every tracked key matching `pattern` and push
    /// (key, connection) pairs, keys in byte order.
    pub fn take_pattern(&self, pattern: &Pattern, out: &mut Vec<(String, ConnId)>) {
        let mut st = self.inner.state.write();
        for key in st.collect(pattern, None).0 {
            let Some((key, conns)) = st.keys.remove_entry(key.as_str()) else {
                continue;
            };
            st.forget_key(&key, conns.as_slice());
            out.extend(conns.as_slice().iter().map(|&c| (key.to_string(), c)));
        }
    }

    /// Non-destructive: distinct tracked keys matching `pattern` in byte order, at most `cap`,
    /// and the full count.
    pub fn matches(&self, pattern: &Pattern, cap: usize) -> (Vec<String>, u64) {
        self.inner.state.read().collect(pattern, Some(cap))
    }

    /// Number of distinct tracked keys.
    pub fn len(&self) -> usize {
        self.inner.state.read().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> TrackedStats {
        let st = self.inner.state.read();
        TrackedStats {
            keys: st.keys.len() as u64,
            base_keys: st.base.fwd.len() as u64,
            delta_added: st.added.len() as u64,
            delta_removed: st.removed.len() as u64,
            connections: st.per_conn.len() as u64,
        }
    }

    /// Merge the delta into a new fst base on the calling thread (waits for a rebuild in
    /// progress). About 0.5 s per million keys: never on the publish path.
    pub fn rebuild(&self) {
        self.inner.rebuild();
    }

    /// Periodic upkeep: rebuild on the calling thread if the delta is over its threshold
    /// (normally a background thread already did). Blocks for the merge: from async code,
    /// call it through `spawn_blocking`.
    pub fn maintain(&self) {
        if self.inner.state.read().needs_rebuild() {
            self.rebuild();
        }
    }

    fn spawn_rebuild(&self) {
        if self.inner.spawned.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        spawn_background("tracked-index-rebuild", &self.inner.spawned, move || {
            loop {
                inner.rebuild();
                inner.spawned.store(false, Ordering::Release);
                if !inner.state.read().needs_rebuild() || inner.spawned.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            }
        });
    }
}

/// The connections tracking one key. Most keys are tracked by one connection: `One` saves
/// a heap allocation per key (~32 bytes) against a `Vec`, at the same inline size.
enum Conns {
    One(ConnId),
    Many(Vec<ConnId>),
}

impl Default for Conns {
    fn default() -> Self {
        Conns::Many(Vec::new())
    }
}

impl Conns {
    fn as_slice(&self) -> &[ConnId] {
        match self {
            Conns::One(c) => std::slice::from_ref(c),
            Conns::Many(v) => v,
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Add `conn` (the caller knows it is not there yet).
    fn push(&mut self, conn: ConnId) {
        match self {
            Conns::Many(v) if v.is_empty() => *self = Conns::One(conn),
            Conns::One(first) => *self = Conns::Many(vec![*first, conn]),
            Conns::Many(v) => v.push(conn),
        }
    }

    fn remove(&mut self, conn: ConnId) {
        match self {
            Conns::One(c) if *c == conn => *self = Conns::default(),
            Conns::One(_) => {}
            Conns::Many(v) => {
                if let Some(pos) = v.iter().position(|&c| c == conn) {
                    v.swap_remove(pos);
                }
            }
        }
    }
}

/// What a rebuild works from: the base and the delta at its start.
struct Snapshot {
    base: Arc<Base>,
    added: Vec<Arc<str>>,
    removed: Vec<Arc<str>>,
}

impl Inner {
    fn rebuild(&self) {
        let _build = self.build.lock();
        let Some(snap) = self.state.write().begin_rebuild() else {
            return;
        };
        let merged = merge_base(&snap.base, &snap.added, &snap.removed);
        self.state.write().finish_rebuild(merged);
    }
}

impl State {
    /// Snapshot (reference-count bumps only) and start logging the keys that change while
    /// the new fsts are built. None when there is no delta.
    fn begin_rebuild(&mut self) -> Option<Snapshot> {
        if self.added.is_empty() && self.removed.is_empty() {
            return None;
        }
        self.recording = true;
        self.touched.clear();
        let added: Vec<Arc<str>> = self.added.iter().cloned().collect();
        let removed: Vec<Arc<str>> = self.removed.iter().cloned().collect();
        Some(Snapshot {
            base: Arc::clone(&self.base),
            added,
            removed,
        })
    }

    /// Install the merged base of the last snapshot.
    fn finish_rebuild(&mut self, merged: Result<Base, fst::Error>) {
        self.recording = false;
        let touched = std::mem::take(&mut self.touched);
        let new = match merged {
            Ok(new) => Arc::new(new),
            Err(err) => {
                // Cannot happen with sorted distinct input; the old base and delta stay
                // correct (the log was only needed for the install).
                tracing::error!(error = %err, "tracked-key fst rebuild failed");
                return;
            }
        };
        // The new base holds exactly the keys live at the snapshot, so only keys changed
        // since then can disagree with it: the new delta is those keys, classified. O(changes
        // during the build) under the lock, whatever the size of the old delta.
        let (mut added, mut added_rev, mut removed) =
            (BTreeSet::new(), BTreeSet::new(), HashSet::new());
        for key in touched {
            let live = self.keys.contains_key(&key);
            let in_base = new.fwd.contains(key.as_bytes());
            if live && !in_base {
                added_rev.insert(reversed(&key).into_boxed_slice());
                added.insert(key);
            } else if !live && in_base {
                removed.insert(key);
            }
        }
        self.base = new;
        self.added = added;
        self.added_rev = added_rev;
        self.removed = removed;
    }
}

/// (base − removed) ∪ added, forward and reversed.
fn merge_base(base: &Base, added: &[Arc<str>], removed: &[Arc<str>]) -> Result<Base, fst::Error> {
    let removed_fwd: HashSet<&[u8]> = removed.iter().map(|k| k.as_bytes()).collect();
    let mut added_fwd: Vec<&[u8]> = added.iter().map(|k| k.as_bytes()).collect();
    added_fwd.sort_unstable();
    let fwd = merge_set(&base.fwd, &removed_fwd, added_fwd.into_iter())?;

    let removed_rev: HashSet<Vec<u8>> = removed.iter().map(|k| reversed(k)).collect();
    let mut added_rev: Vec<Vec<u8>> = added.iter().map(|k| reversed(k)).collect();
    added_rev.sort_unstable();
    let removed_rev: HashSet<&[u8]> = removed_rev.iter().map(Vec::as_slice).collect();
    let rev = merge_set(&base.rev, &removed_rev, added_rev.iter().map(Vec::as_slice))?;
    Ok(Base { fwd, rev })
}

fn merge_set<'a>(
    base: &Set<Vec<u8>>,
    removed: &HashSet<&[u8]>,
    added: impl Iterator<Item = &'a [u8]>,
) -> Result<Set<Vec<u8>>, fst::Error> {
    let mut builder = SetBuilder::memory();
    let mut added = added.peekable();
    let mut stream = base.stream();
    while let Some(key) = stream.next() {
        if removed.contains(key) {
            continue;
        }
        while let Some(a) = added.next_if(|a| *a < key) {
            builder.insert(a)?;
        }
        if added.peek() == Some(&key) {
            added.next();
        }
        builder.insert(key)?;
    }
    for a in added {
        builder.insert(a)?;
    }
    Set::new(builder.into_inner()?)
}

fn reversed(key: &str) -> Vec<u8> {
    key.bytes().rev().collect()
}

impl State {
    fn needs_rebuild(&self) -> bool {
        self.added.len() + self.removed.len() > DELTA_MIN.max(self.base.fwd.len() / 4)
    }

    fn track(&mut self, conn: ConnId, key: &str) -> usize {
        let key: Arc<str> = match self.keys.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => {
                let key: Arc<str> = Arc::from(key);
                self.mark_live(&key);
                self.keys.insert(Arc::clone(&key), Conns::default());
                key
            }
        };
        let set = self.per_conn.entry(conn).or_default();
        if set.insert(Arc::clone(&key)) {
            let count = set.len();
            if let Some(conns) = self.keys.get_mut(&key) {
                conns.push(conn);
            }
            return count;
        }
        set.len()
    }

    fn untrack(&mut self, conn: ConnId, key: &str) {
        let Some(set) = self.per_conn.get_mut(&conn) else {
            return;
        };
        let Some(key) = set.take(key) else { return };
        if set.is_empty() {
            self.per_conn.remove(&conn);
        }
        self.drop_conn_from_key(&key, conn);
    }

    /// Remove `conn` from `key`'s list (the caller updated `per_conn`); the key dies when its
    /// list empties.
    fn drop_conn_from_key(&mut self, key: &Arc<str>, conn: ConnId) {
        let Some(conns) = self.keys.get_mut(key) else {
            return;
        };
        conns.remove(conn);
        if conns.is_empty() {
            self.keys.remove(key);
            self.mark_dead(key);
        }
    }

    /// `key` was removed from `keys` with these connections: update `per_conn` and the delta.
    fn forget_key(&mut self, key: &Arc<str>, conns: &[ConnId]) {
        for conn in conns {
            if let Some(set) = self.per_conn.get_mut(conn) {
                set.remove(key);
                if set.is_empty() {
                    self.per_conn.remove(conn);
                }
            }
        }
        self.mark_dead(key);
    }

    fn mark_live(&mut self, key: &Arc<str>) {
        if self.base.fwd.contains(key.as_bytes()) {
            self.removed.remove(key);
        } else {
            self.added.insert(Arc::clone(key));
            self.added_rev.insert(reversed(key).into_boxed_slice());
        }
        if self.recording {
            self.touched.push(Arc::clone(key));
        }
    }

    fn mark_dead(&mut self, key: &Arc<str>) {
        if self.base.fwd.contains(key.as_bytes()) {
            self.removed.insert(Arc::clone(key));
        } else {
            self.added.remove(key);
            self.added_rev.remove(reversed(key).as_slice());
        }
        if self.recording {
            self.touched.push(Arc::clone(key));
        }
    }

    /// Live keys matching `pattern`, distinct, in byte order, the first `cap` of them (all
    /// with None), and the full count. The pattern's own fst search over the base (asked for
    /// `cap` + |removed| keys, enough to survive the removals), minus `removed`, plus the keys
    /// of `added` in the range of its literal prefix (or of its suffix) that match.
    fn collect(&self, pattern: &Pattern, cap: Option<usize>) -> (Vec<String>, u64) {
        if let Shape::Exact(key) = shape(pattern) {
            let live = self.keys.contains_key(key);
            let keys = if live && cap != Some(0) {
                vec![key.to_string()]
            } else {
                Vec::new()
            };
            return (keys, u64::from(live));
        }
        let limit = cap.map(|c| c.saturating_add(self.removed.len()));
        let found = pattern.fst_search(&self.base.fwd, &self.base.rev, limit);
        let mut out = found.keys;
        let mut count = found.count;
        if !self.removed.is_empty() {
            out.retain(|k| !self.removed.contains(k.as_str()));
            // Every removed key is in the base: those matching were counted there.
            let gone = self.removed.iter().filter(|k| pattern.is_match(k)).count();
            count = count.saturating_sub(gone as u64);
        }
        if !self.added.is_empty() {
            let before = out.len();
            self.added_matches(pattern, &mut out);
            count += (out.len() - before) as u64;
            if out.len() > before {
                out.sort_unstable();
            }
        }
        if let Some(cap) = cap {
            out.truncate(cap);
        }
        (out, count)
    }

    /// Push the keys of `added` matching `pattern` (unordered).
    fn added_matches(&self, pattern: &Pattern, out: &mut Vec<String>) {
        if let Shape::Suffix(suffix) = shape(pattern) {
            let rev: Vec<u8> = suffix.bytes().rev().collect();
            let range = self
                .added_rev
                .range::<[u8], _>((Bound::Included(&rev[..]), Bound::Unbounded));
            for key in range.take_while(|k| k.starts_with(&rev)) {
                let key: Vec<u8> = key.iter().rev().copied().collect();
                if let Ok(key) = String::from_utf8(key) {
                    out.push(key);
                }
            }
        } else {
            let start = literal_prefix(pattern);
            let range = self
                .added
                .range::<str, _>((Bound::Included(start), Bound::Unbounded));
            let hits = range
                .take_while(|k| k.starts_with(start))
                .filter(|k| pattern.is_match(k));
            out.extend(hits.map(|k| k.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::PatternLimits;

    fn keys_of(st: &State, source: &str) -> Vec<String> {
        let p = Pattern::parse(source, None, &PatternLimits::default()).unwrap();
        st.collect(&p, None).0
    }

    /// Changes between a rebuild's snapshot and its install end up in the new delta.
    #[test]
    fn changes_during_a_rebuild_survive_the_install() {
        let mut st = State::default();
        for k in ["a:1", "a:2", "a:3", "b:1"] {
            st.track(1, k);
        }
        let snap = st.begin_rebuild().unwrap();
        // During the build: a new key, a key removed, a key removed and re-added, and one
        // added and removed again.
        st.track(2, "a:4");
        st.untrack(1, "a:2");
        st.untrack(1, "b:1");
        st.track(3, "b:1");
        st.track(2, "c:1");
        st.untrack(2, "c:1");
        let merged = merge_base(&snap.base, &snap.added, &snap.removed);
        st.finish_rebuild(merged);
        assert_eq!(keys_of(&st, "a:*"), vec!["a:1", "a:3", "a:4"]);
        assert_eq!(keys_of(&st, "*:1"), vec!["a:1", "b:1"]);
        assert_eq!(keys_of(&st, "c:*"), Vec::<String>::new());
        assert_eq!(
            st.added.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            vec!["a:4"]
        );
        assert_eq!(
            st.removed.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            vec!["a:2"]
        );
        assert_eq!(st.added_rev.len(), 1);
        // A second rebuild folds the rest in.
        let snap = st.begin_rebuild().unwrap();
        st.finish_rebuild(merge_base(&snap.base, &snap.added, &snap.removed));
        assert!(st.added.is_empty() && st.removed.is_empty());
        assert_eq!(st.base.fwd.len(), 4);
        assert_eq!(keys_of(&st, "*1"), vec!["a:1", "b:1"]);
    }
}
