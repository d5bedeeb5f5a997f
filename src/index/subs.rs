//! The subscription index: every connection's subscription patterns, split by class so that
//! routing one key costs O(key length) whatever the number of patterns.
//!
//! # Design
//!
//! * One entry per distinct pattern (same type, source and effective literal), holding the
//!   list of subscribed connections (reference counting by list); `per_conn` lists each
//!   connection's entries so `remove_conn` touches only what the connection had.
//! * Exact keys and prefixes go into the forward [`Trie`], suffixes into the trie of reversed
//!   bytes; exact keys go into both (the reversed copy answers "which exact subscriptions end
//!   with this suffix" for suffix invalidations). Classes are the pattern's *effective* ones
//!   (an explicit glob `user:*` is indexed as a prefix).
//! * Globs and regexes get a slot. An immutable [`AutoSet`] (multi-pattern dense DFAs) covers
//!   the slots that existed at its last build; newer slots are "pending" and checked one by
//!   one with `Pattern::is_match`. When the pending list reaches [`PENDING_LIMIT`] (or many
//!   slots died), a background thread rebuilds the set from a snapshot and installs it under
//!   the write lock (an `Arc` swap); [`SubscriptionIndex::maintain`] does the same for a
//!   periodic tick. A slot is reused only after it died and an installed set no longer covers
//!   it, so a DFA pattern id never points at another pattern.
//! * Each slot also keeps the literal start and end of the keys its pattern matches, so a
//!   pattern invalidation calls `may_overlap` (an automaton product search, microseconds) only
//!   on subscriptions whose literal bounds are compatible with its own.
//!
//! Why a lock and not only `ArcSwap`: the trie, the entries and the pending list must change
//! together with each subscribe, and a reader must never see a new DFA set without the
//! matching pending list. One `parking_lot::RwLock` with short critical sections gives that;
//! the expensive part (compiling DFAs) runs outside it and is installed by a pointer swap.
//!
//! # Costs (L = key length, m = matching subscriptions, G = glob/regex DFA groups, P = pending,
//! E = distinct patterns)
//!
//! * `match_key`: O(L) per trie (a bit test per byte) + at most one table lookup per byte per
//!   DFA group + P `is_match` calls + O(m). No allocation besides `out`. A non-ASCII key
//!   checks the user regexes with `is_match` (see `automata.rs`). Measured: ~40-55 ns at
//!   10,000 patterns (benches/index.rs).
//! * `match_pattern`: exact → `match_key`; prefix `p` → one trie walk over `p`, the trie under
//!   `p`, every suffix subscription (a prefix and a suffix always overlap: an O(E) scan of the
//!   entries) and `may_overlap` per glob/regex subscription with compatible bounds; suffix
//!   likewise mirrored; glob/regex → an O(E) scan deciding exact keys with `is_match` and the
//!   rest with `may_overlap` (pruned by literal bounds).
//! * `subscribe`/`unsubscribe`: O(length) trie update + O(c) in the entry's connection list;
//!   a glob/regex also parses its regex once (literal bounds), outside the lock.
//! * Memory: the patterns, one trie node (~110 bytes) per distinct byte-prefix of the
//!   literals, about 1 KiB of DFA per glob/regex (measured: 500 regexes < 1 MiB).
//!
//! # Invariants
//!
//! * `len` = Σ over entries of their connection count = Σ over `per_conn` of map sizes.
//! * A live slot is either covered by `built` or in `pending` (possibly both for a moment).
//! * A dead slot stays out of `free_slots` until an installed set no longer covers it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use super::automata::AutoSet;
use super::shape::{Shape, comparable, literal_prefix, literal_suffix, regex_source, shape};
use super::trie::{Slot, Trie};
use super::{ConnId, spawn_background};
use crate::pattern::{Pattern, PatternType};

/// Sizes of the subscription index, for metrics, tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubscriptionStats {
    /// (connection, pattern) pairs.
    pub subscriptions: u64,
    /// Distinct patterns.
    pub patterns: u64,
    /// Globs/regexes waiting for the next DFA rebuild (checked one by one meanwhile).
    pub pending: u64,
    /// DFAs in the installed set.
    pub dfa_groups: u64,
    /// Globs/regexes that cannot go into a DFA (always checked one by one).
    pub loose: u64,
}

/// Pending glob/regex patterns that trigger a background rebuild of the DFA set.
pub const PENDING_LIMIT: usize = 8;
/// Dead slots (still compiled into the DFA set) that trigger a rebuild, if they are also at
/// least a quarter of the live ones.
const DEAD_LIMIT: usize = 64;

/// Identity of a pattern: type and source, plus the effective literal, because one source
/// and type can still mean two key sets (an explicit `exact` `user:\*` is the key as written,
/// an inferred one is `user:*`).
type EntryKey = (PatternType, Box<str>, Box<str>);

/// A subscription as the protocol names it: type and source.
type SubId = (PatternType, Box<str>);

fn entry_key(p: &Pattern) -> EntryKey {
    (
        p.kind(),
        p.source().into(),
        p.effective_literal().unwrap_or("").into(),
    )
}

/// The matcher class of an entry (the pattern's effective class, see `shape.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Exact,
    Prefix,
    Suffix,
    Auto,
}

struct Entry {
    pattern: Arc<Pattern>,
    class: Class,
    /// Exact key, prefix or suffix (empty for globs and regexes).
    literal: Box<str>,
    /// Subscribed connections (each once). For globs/regexes they live in the slot instead.
    conns: Vec<ConnId>,
    slot: Option<u32>,
}

struct AutoSlot {
    pattern: Arc<Pattern>,
    conns: Vec<ConnId>,
    /// What every matching key starts / ends with, to skip `may_overlap` (an automaton
    /// product search, microseconds) for invalidation patterns that cannot overlap.
    bounds: Bounds,
}

/// Literal start and end of every key a pattern matches (see `shape.rs`).
#[derive(Default)]
struct Bounds {
    prefix: Box<[u8]>,
    suffix: Box<[u8]>,
}

impl Bounds {
    /// Costs a regex parse for a glob or regex: call it outside the lock.
    fn of(p: &Pattern) -> Bounds {
        Bounds {
            prefix: literal_prefix(p).as_bytes().into(),
            suffix: literal_suffix(p).into(),
        }
    }

    fn may_meet(&self, prefix: &[u8], suffix: &[u8]) -> bool {
        comparable(&self.prefix, prefix, false) && comparable(&self.suffix, suffix, true)
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<EntryKey, Entry>,
    /// Each connection's patterns by (type, source), the identity the protocol uses for
    /// `unsubscribe`, to the literal that completes the entry key.
    per_conn: HashMap<ConnId, HashMap<SubId, Box<str>>>,
    /// Exact keys (`Exact` lists) and prefixes (`Wild` lists).
    fwd: Trie,
    /// Reversed exact keys (`Exact`) and reversed suffixes (`Wild`).
    rev: Trie,
    slots: Vec<Option<AutoSlot>>,
    live_slots: usize,
    free_slots: Vec<u32>,
    dead_slots: Vec<u32>,
    pending: Vec<u32>,
    built: Arc<AutoSet>,
    len: usize,
}

struct Inner {
    state: RwLock<State>,
    /// Serialises rebuilds (the background one and explicit `rebuild` calls).
    build: Mutex<()>,
    /// A background rebuild thread is scheduled or running.
    spawned: AtomicBool,
}

/// Every connection's subscription patterns, indexed so that one key (or one invalidation
/// pattern) finds the matching connections without a scan over all patterns.
pub struct SubscriptionIndex {
    inner: Arc<Inner>,
}

impl Default for SubscriptionIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl SubscriptionIndex {
    pub fn new() -> Self {
        let inner = Inner {
            state: RwLock::new(State::default()),
            build: Mutex::new(()),
            spawned: AtomicBool::new(false),
        };
        SubscriptionIndex {
            inner: Arc::new(inner),
        }
    }

    /// Add `pattern` for `conn` (a repeat of the same source and type is a no-op, as in the
    /// protocol, even if one was sent with an explicit type and one without).
    pub fn subscribe(&self, conn: ConnId, pattern: Arc<Pattern>) {
        let key = entry_key(&pattern);
        let bounds = match shape(&pattern) {
            Shape::Auto => Bounds::of(&pattern),
            _ => Bounds::default(),
        };
        let rebuild = {
            let mut st = self.inner.state.write();
            let mine = st.per_conn.entry(conn).or_default();
            let (kind, source, literal) = key.clone();
            if mine.contains_key(&(kind, source.clone())) {
                return;
            }
            mine.insert((kind, source), literal);
            st.add(conn, key, pattern, bounds);
            st.needs_rebuild()
        };
        if rebuild {
            self.spawn_rebuild();
        }
    }

    /// Remove `pattern` (same source and type) for `conn`; returns whether it was there.
    pub fn unsubscribe(&self, conn: ConnId, pattern: &Pattern) -> bool {
        let id: SubId = (pattern.kind(), pattern.source().into());
        let rebuild = {
            let mut st = self.inner.state.write();
            let Some(mine) = st.per_conn.get_mut(&conn) else {
                return false;
            };
            let Some(literal) = mine.remove(&id) else {
                return false;
            };
            if mine.is_empty() {
                st.per_conn.remove(&conn);
            }
            st.drop_sub(conn, &(id.0, id.1, literal));
            st.needs_rebuild()
        };
        if rebuild {
            self.spawn_rebuild();
        }
        true
    }

    pub fn remove_conn(&self, conn: ConnId) {
        let rebuild = {
            let mut st = self.inner.state.write();
            let Some(mine) = st.per_conn.remove(&conn) else {
                return;
            };
            for ((kind, source), literal) in mine {
                st.drop_sub(conn, &(kind, source, literal));
            }
            st.needs_rebuild()
        };
        if rebuild {
            self.spawn_rebuild();
        }
    }

    /// Push every connection with a subscription matching `key` onto `out` (a connection may
    /// appear more than once; the caller deduplicates).
    pub fn match_key(&self, key: &str, out: &mut Vec<ConnId>) {
        self.inner.state.read().match_key(key, out);
    }

    /// Push every connection with a subscription whose key set may overlap `pattern`.
    pub fn match_pattern(&self, pattern: &Pattern, out: &mut Vec<ConnId>) {
        let st = self.inner.state.read();
        match shape(pattern) {
            Shape::Exact(key) => st.match_key(key, out),
            Shape::Prefix(prefix) => st.match_prefix(pattern, prefix, out),
            Shape::Suffix(suffix) => st.match_suffix(pattern, suffix, out),
            Shape::Auto => st.match_auto(pattern, out),
        }
    }

    /// Number of (connection, pattern) subscriptions.
    pub fn len(&self) -> usize {
        self.inner.state.read().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> SubscriptionStats {
        let st = self.inner.state.read();
        SubscriptionStats {
            subscriptions: st.len as u64,
            patterns: st.entries.len() as u64,
            pending: st.pending.len() as u64,
            dfa_groups: st.built.group_count() as u64,
            loose: st.built.loose_count() as u64,
        }
    }

    /// Number of distinct glob/regex patterns not yet compiled into the DFA set.
    pub fn pending_len(&self) -> usize {
        self.inner.state.read().pending.len()
    }

    /// Periodic upkeep (call it from a timer, e.g. every second): rebuild the DFA set on the
    /// calling thread if patterns are pending or dead, so fewer than [`PENDING_LIMIT`] new
    /// globs/regexes do not stay pending forever. Cheap when there is nothing to do; when
    /// there is, it blocks for the compilation (milliseconds): from async code, call it
    /// through `spawn_blocking`. Optional: without it the index stays correct.
    pub fn maintain(&self) {
        let work = {
            let st = self.inner.state.read();
            !st.pending.is_empty() || !st.dead_slots.is_empty()
        };
        if work {
            self.rebuild();
        }
    }

    /// Recompile the glob/regex DFA set from the current patterns and install it, on the
    /// calling thread (waits for a rebuild in progress). Costs milliseconds per hundred
    /// patterns; never call it on the publish path.
    pub fn rebuild(&self) {
        self.inner.rebuild();
    }

    fn spawn_rebuild(&self) {
        if self.inner.spawned.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        spawn_background("subs-index-rebuild", &self.inner.spawned, move || {
            // Rebuild until the trigger condition is gone (subscriptions keep arriving while
            // a build runs).
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

impl Inner {
    fn rebuild(&self) {
        let _build = self.build.lock();
        let items: Vec<(u32, Option<(String, bool)>)> = {
            let st = self.state.read();
            st.slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let source = regex_source(&s.as_ref()?.pattern);
                    Some((
                        i as u32,
                        source.map(|(src, bytes)| (src.to_string(), bytes)),
                    ))
                })
                .collect()
        };
        let set = Arc::new(AutoSet::build(&items));
        let mut st = self.state.write();
        st.pending.retain(|&s| !set.covers(s));
        let (still_dead, freed): (Vec<u32>, Vec<u32>) =
            st.dead_slots.iter().partition(|&&s| set.covers(s));
        st.dead_slots = still_dead;
        st.free_slots.extend(freed);
        st.built = set;
    }
}

impl State {
    fn needs_rebuild(&self) -> bool {
        self.pending.len() >= PENDING_LIMIT
            || (self.dead_slots.len() >= DEAD_LIMIT && self.dead_slots.len() * 4 >= self.live_slots)
    }

    /// Record a new (conn, pattern) pair; the caller checked it is new.
    fn add(&mut self, conn: ConnId, key: EntryKey, pattern: Arc<Pattern>, bounds: Bounds) {
        self.len += 1;
        if let Some(entry) = self.entries.get_mut(&key) {
            match entry.slot {
                Some(slot) => {
                    if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
                        s.conns.push(conn);
                    }
                }
                None => entry.conns.push(conn),
            }
            let (class, literal) = (entry.class, entry.literal.clone());
            self.trie_insert(class, &literal, conn);
            return;
        }
        let (class, literal, slot): (Class, Box<str>, Option<u32>) = match shape(&pattern) {
            Shape::Exact(l) => (Class::Exact, l.into(), None),
            Shape::Prefix(l) => (Class::Prefix, l.into(), None),
            Shape::Suffix(l) => (Class::Suffix, l.into(), None),
            Shape::Auto => (
                Class::Auto,
                Box::from(""),
                Some(self.alloc_slot(&pattern, conn, bounds)),
            ),
        };
        let conns = if slot.is_some() {
            Vec::new()
        } else {
            vec![conn]
        };
        self.trie_insert(class, &literal, conn);
        self.entries.insert(
            key,
            Entry {
                pattern,
                class,
                literal,
                conns,
                slot,
            },
        );
    }

    fn alloc_slot(&mut self, pattern: &Arc<Pattern>, conn: ConnId, bounds: Bounds) -> u32 {
        let slot = AutoSlot {
            pattern: Arc::clone(pattern),
            conns: vec![conn],
            bounds,
        };
        let id = match self.free_slots.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.live_slots += 1;
        self.pending.push(id);
        id
    }

    /// Remove the (conn, pattern) pair; the caller already removed it from `per_conn`.
    fn drop_sub(&mut self, conn: ConnId, key: &EntryKey) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.len = self.len.saturating_sub(1);
        let now_empty = match entry.slot {
            Some(slot) => match self.slots.get_mut(slot as usize) {
                Some(Some(s)) => {
                    remove_one(&mut s.conns, conn);
                    s.conns.is_empty()
                }
                _ => true,
            },
            None => {
                remove_one(&mut entry.conns, conn);
                entry.conns.is_empty()
            }
        };
        let (class, literal, slot) = (entry.class, entry.literal.clone(), entry.slot);
        self.trie_remove(class, &literal, conn);
        if now_empty {
            self.entries.remove(key);
            if let Some(slot) = slot {
                if let Some(s) = self.slots.get_mut(slot as usize) {
                    *s = None;
                }
                self.live_slots = self.live_slots.saturating_sub(1);
                self.pending.retain(|&p| p != slot);
                // Not reusable yet: the installed (or a building) DFA set may still name it.
                self.dead_slots.push(slot);
            }
        }
    }

    fn trie_insert(&mut self, class: Class, literal: &str, conn: ConnId) {
        match class {
            Class::Exact => {
                self.fwd.insert(literal.bytes(), Slot::Exact, conn);
                self.rev.insert(literal.bytes().rev(), Slot::Exact, conn);
            }
            Class::Prefix => self.fwd.insert(literal.bytes(), Slot::Wild, conn),
            Class::Suffix => self.rev.insert(literal.bytes().rev(), Slot::Wild, conn),
            Class::Auto => {}
        }
    }

    fn trie_remove(&mut self, class: Class, literal: &str, conn: ConnId) {
        match class {
            Class::Exact => {
                self.fwd.remove(literal.bytes(), Slot::Exact, conn);
                self.rev.remove(literal.bytes().rev(), Slot::Exact, conn);
            }
            Class::Prefix => {
                self.fwd.remove(literal.bytes(), Slot::Wild, conn);
            }
            Class::Suffix => {
                self.rev.remove(literal.bytes().rev(), Slot::Wild, conn);
            }
            Class::Auto => {}
        }
    }

    fn match_key(&self, key: &str, out: &mut Vec<ConnId>) {
        self.fwd.walk(key.bytes(), true, out);
        self.rev.walk(key.bytes().rev(), false, out);
        if self.live_slots == 0 {
            return;
        }
        self.built
            .for_each(key, |slot, sure| self.push_slot(slot, sure, key, out));
        for &slot in &self.pending {
            self.push_slot(slot, false, key, out);
        }
    }

    /// Push the connections of `slot` if its pattern matches `key` (`sure` = already known).
    fn push_slot(&self, slot: u32, sure: bool, key: &str, out: &mut Vec<ConnId>) {
        if let Some(Some(s)) = self.slots.get(slot as usize)
            && (sure || s.pattern.is_match(key))
        {
            out.extend_from_slice(&s.conns);
        }
    }

    /// Glob/regex subscriptions whose key set may overlap `pattern`.
    /// `prefix`/`suffix` bound every key `pattern` matches (cheap pre-filter).
    fn match_slots_overlapping(
        &self,
        pattern: &Pattern,
        prefix: &[u8],
        suffix: &[u8],
        out: &mut Vec<ConnId>,
    ) {
        for slot in self.slots.iter().flatten() {
            if slot.bounds.may_meet(prefix, suffix) && slot.pattern.may_overlap(pattern) {
                out.extend_from_slice(&slot.conns);
            }
        }
    }

    /// Push every connection subscribed to a pattern of `class` (a scan of the entries:
    /// sequential and hash-free, cheaper than a walk over the trie).
    fn push_class(&self, class: Class, out: &mut Vec<ConnId>) {
        for e in self.entries.values().filter(|e| e.class == class) {
            out.extend_from_slice(&e.conns);
        }
    }

    /// Prefix invalidation `prefix`: exact keys and prefixes under it, prefixes of it, every
    /// suffix (some key always has both), globs/regexes that may overlap.
    fn match_prefix(&self, pattern: &Pattern, prefix: &str, out: &mut Vec<ConnId>) {
        if let Some(node) = self.fwd.walk(prefix.bytes(), false, out) {
            self.fwd.collect_subtree(node, true, true, out);
        }
        self.push_class(Class::Suffix, out);
        self.match_slots_overlapping(pattern, prefix.as_bytes(), b"", out);
    }

    /// Mirror of `match_prefix` over the reversed trie.
    fn match_suffix(&self, pattern: &Pattern, suffix: &str, out: &mut Vec<ConnId>) {
        if let Some(node) = self.rev.walk(suffix.bytes().rev(), false, out) {
            self.rev.collect_subtree(node, true, true, out);
        }
        self.push_class(Class::Prefix, out);
        self.match_slots_overlapping(pattern, b"", suffix.as_bytes(), out);
    }

    /// Glob/regex invalidation: exact subscriptions are decided with `is_match`; prefixes,
    /// suffixes and other globs/regexes with `may_overlap`. Only prefixes comparable with the
    /// pattern's literal prefix can overlap it.
    fn match_auto(&self, pattern: &Pattern, out: &mut Vec<ConnId>) {
        let start = literal_prefix(pattern);
        let end = literal_suffix(pattern);
        for e in self.entries.values() {
            let literal = e.literal.as_bytes();
            let hit = match e.class {
                Class::Exact => {
                    literal.starts_with(start.as_bytes())
                        && literal.ends_with(&end)
                        && pattern.is_match(&e.literal)
                }
                Class::Prefix => {
                    comparable(literal, start.as_bytes(), false) && e.pattern.may_overlap(pattern)
                }
                Class::Suffix => comparable(literal, &end, true) && e.pattern.may_overlap(pattern),
                // In the slots, below.
                Class::Auto => false,
            };
            if hit {
                out.extend_from_slice(&e.conns);
            }
        }
        self.match_slots_overlapping(pattern, start.as_bytes(), &end, out);
    }
}

fn remove_one(list: &mut Vec<ConnId>, conn: ConnId) {
    if let Some(pos) = list.iter().position(|&c| c == conn) {
        list.swap_remove(pos);
    }
}
