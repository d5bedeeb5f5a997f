//! Resolving a pattern against fst sets of keys without scanning them all.
//!
//! The caller (the tracked-key index) keeps two `fst::Set`s: `forward` holds every key,
//! `reversed` every key with its bytes reversed. Per matcher:
//! - exact: `contains`, O(key length);
//! - prefix: `range().ge(p).lt(successor(p))`, O(matches + key length);
//! - suffix: the same range over `reversed` with the reversed suffix; the hits are reversed
//!   back and sorted (O(m log m)), since reversed order is not byte order;
//! - glob / regex: an [`fst::Automaton`] over the pattern's dense DFA (anchored start,
//!   `can_match` = not dead, whole-key acceptance through the end-of-input transition), so the
//!   fst walk prunes every subtree the DFA has left: a literal prefix prunes to its range, a
//!   selective regex visits little. A pattern with no literal prefix but a literal suffix
//!   (`*:profile:?`, `.*:x`) instead takes the range of that suffix in `reversed` and verifies
//!   each candidate with the DFA; with neither, every key is visited (nothing prunes).
//!
//! Results are always in byte order. `limit` caps the keys returned; the count (of
//! [`Pattern::fst_search`]) is always the full number of matches.

use std::cell::RefCell;

use fst::{Automaton as FstAutomaton, IntoStreamer, Set, Streamer};
use regex_automata::dfa::Automaton;
use regex_automata::hybrid::LazyStateID;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, hybrid};

use super::compile::Dense;
use super::{Matcher, Pattern};

/// Keys matched in an fst, capped, with the full count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FstMatches {
    /// The first `limit` matching keys in byte order.
    pub keys: Vec<String>,
    /// Every matching key, including those past `limit`.
    pub count: u64,
}

/// `fst::Automaton` over a pattern's dense DFA.
pub(crate) struct DfaAutomaton<'a>(pub(crate) &'a Dense);

impl FstAutomaton for DfaAutomaton<'_> {
    type State = StateID;

    fn start(&self) -> StateID {
        self.0.start
    }

    fn is_match(&self, s: &StateID) -> bool {
        // A quit state (Unicode word boundary) cannot be decided here: report it and let the
        // caller verify each candidate with `Pattern::is_match`.
        self.0.dfa.is_quit_state(*s) || self.0.accepts_at_end(*s)
    }

    fn can_match(&self, s: &StateID) -> bool {
        !self.0.dfa.is_dead_state(*s)
    }

    fn accept(&self, s: &StateID, byte: u8) -> StateID {
        if self.0.dfa.is_quit_state(*s) {
            *s
        } else {
            self.0.dfa.next_state(*s, byte)
        }
    }
}

/// `fst::Automaton` over a lazy DFA (patterns whose dense DFA is too big), with a cache
/// private to one search. `None` is "don't know" (cache full, or a quit state): every key
/// below it is a candidate the caller verifies with `Pattern::is_match`. The lazy DFA is
/// configured never to clear its cache, so state ids held by the fst walk stay valid.
pub(crate) struct LazyAutomaton<'a> {
    dfa: &'a hybrid::dfa::DFA,
    cache: RefCell<hybrid::dfa::Cache>,
}

impl<'a> LazyAutomaton<'a> {
    pub(crate) fn new(dfa: &'a hybrid::dfa::DFA) -> Self {
        LazyAutomaton {
            dfa,
            cache: RefCell::new(dfa.create_cache()),
        }
    }
}

impl FstAutomaton for LazyAutomaton<'_> {
    type State = Option<LazyStateID>;

    fn start(&self) -> Option<LazyStateID> {
        let mut cache = self.cache.try_borrow_mut().ok()?;
        let config = start::Config::new().anchored(Anchored::Yes);
        self.dfa.start_state(&mut cache, &config).ok()
    }

    fn is_match(&self, s: &Option<LazyStateID>) -> bool {
        match s {
            Some(s) if !s.is_quit() => {
                let Ok(mut cache) = self.cache.try_borrow_mut() else {
                    return true;
                };
                self.dfa
                    .next_eoi_state(&mut cache, *s)
                    .map_or(true, |eoi| eoi.is_match())
            }
            _ => true,
        }
    }

    fn can_match(&self, s: &Option<LazyStateID>) -> bool {
        s.is_none_or(|s| !s.is_dead())
    }

    fn accept(&self, s: &Option<LazyStateID>, byte: u8) -> Option<LazyStateID> {
        let s = s.filter(|s| !s.is_quit())?;
        let mut cache = self.cache.try_borrow_mut().ok()?;
        self.dfa.next_state(&mut cache, s, byte).ok()
    }
}

/// Smallest byte string greater than every string starting with `prefix`; None when there is
/// none (empty prefix, or only 0xFF bytes).
pub(crate) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Collects keys up to a limit and counts them all; stops early when the count is not needed.
struct Collector {
    keys: Vec<String>,
    count: u64,
    limit: usize,
    need_count: bool,
}

impl Collector {
    fn new(limit: Option<usize>, need_count: bool) -> Self {
        Collector {
            keys: Vec::new(),
            count: 0,
            limit: limit.unwrap_or(usize::MAX),
            need_count,
        }
    }

    /// Returns false when the walk can stop.
    fn push(&mut self, key: &[u8]) -> bool {
        // Keys are inserted from `&str`; anything else is not ours and is skipped.
        let Ok(key) = std::str::from_utf8(key) else {
            return true;
        };
        self.count += 1;
        if self.keys.len() < self.limit {
            self.keys.push(key.to_string());
        }
        self.need_count || self.keys.len() < self.limit
    }

    fn finish(self) -> FstMatches {
        FstMatches {
            keys: self.keys,
            count: self.count,
        }
    }
}

impl Pattern {
    /// Keys of `forward` matching this pattern, in byte order, at most `limit` of them.
    /// `reversed` must hold the same keys with their bytes reversed (used for suffixes).
    /// Stops walking as soon as `limit` keys are found (except for suffixes, which must sort).
    pub fn fst_matches<D: AsRef<[u8]>>(
        &self,
        forward: &Set<D>,
        reversed: &Set<D>,
        limit: Option<usize>,
    ) -> Vec<String> {
        self.search(forward, reversed, limit, false).keys
    }

    /// Number of keys of `forward` matching this pattern (walks every match).
    pub fn fst_count<D: AsRef<[u8]>>(&self, forward: &Set<D>, reversed: &Set<D>) -> u64 {
        self.search(forward, reversed, Some(0), true).count
    }

    /// The first `limit` matching keys in byte order and the full count, in one walk.
    pub fn fst_search<D: AsRef<[u8]>>(
        &self,
        forward: &Set<D>,
        reversed: &Set<D>,
        limit: Option<usize>,
    ) -> FstMatches {
        self.search(forward, reversed, limit, true)
    }

    fn search<D: AsRef<[u8]>>(
        &self,
        forward: &Set<D>,
        reversed: &Set<D>,
        limit: Option<usize>,
        need_count: bool,
    ) -> FstMatches {
        let mut out = Collector::new(limit, need_count);
        match &self.matcher {
            Matcher::Exact(key) => {
                if forward.contains(key) {
                    out.push(key.as_bytes());
                }
            }
            Matcher::Prefix(p) => walk_range(forward, p.as_bytes(), |k| out.push(k)),
            // The empty suffix matches every key: the forward set is already in order.
            Matcher::Suffix(s) if s.is_empty() => walk_range(forward, b"", |k| out.push(k)),
            Matcher::Suffix(s) => {
                for key in &ending_with(reversed, s, |_| true) {
                    if !out.push(key) {
                        break;
                    }
                }
            }
            // A leading wildcard: a forward walk would visit every key, while the keys ending
            // with the literal suffix are one range of the reversed set. Verify each.
            Matcher::Dfa(compiled)
                if self.literal_prefix.is_empty() && !self.literal_suffix.is_empty() =>
            {
                for key in &ending_with(reversed, &self.literal_suffix, |k| compiled.is_match(k)) {
                    if !out.push(key) {
                        break;
                    }
                }
            }
            Matcher::Dfa(compiled) => {
                let verified = |key: &[u8]| !compiled.needs_verify() || compiled.is_match(key);
                let mut visit = |key: &[u8]| !verified(key) || out.push(key);
                match (compiled.dense(), compiled.lazy()) {
                    (Some(dense), _) => walk(
                        forward.search(DfaAutomaton(dense)).into_stream(),
                        &mut visit,
                    ),
                    (None, Some(lazy)) => walk(
                        forward.search(LazyAutomaton::new(lazy)).into_stream(),
                        &mut visit,
                    ),
                    // Unreachable by construction (one of the two is always built); a full
                    // scan verified key by key is still correct.
                    (None, None) => walk(forward.stream(), &mut visit),
                }
            }
        }
        out.finish()
    }
}

/// Keys of the forward set ending with `suffix` and accepted by `keep`, in byte order, from
/// the reversed set (one range). Cost: O(candidates log candidates).
fn ending_with<D: AsRef<[u8]>>(
    reversed: &Set<D>,
    suffix: &str,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let rev: Vec<u8> = suffix.bytes().rev().collect();
    let mut hits: Vec<Vec<u8>> = Vec::new();
    walk_range(reversed, &rev, |k| {
        let key: Vec<u8> = k.iter().rev().copied().collect();
        if keep(&key) {
            hits.push(key);
        }
        true
    });
    hits.sort_unstable();
    hits
}

/// Feed every key of a stream to `f` until it says stop.
fn walk<S>(mut stream: S, f: &mut impl FnMut(&[u8]) -> bool)
where
    S: for<'a> Streamer<'a, Item = &'a [u8]>,
{
    while let Some(key) = stream.next() {
        if !f(key) {
            break;
        }
    }
}

/// Visit every key of `set` starting with `prefix`, in byte order, until `f` says stop.
fn walk_range<D: AsRef<[u8]>>(set: &Set<D>, prefix: &[u8], mut f: impl FnMut(&[u8]) -> bool) {
    let builder = set.range().ge(prefix);
    let builder = match successor(prefix) {
        Some(upper) => builder.lt(upper),
        None => builder,
    };
    let mut stream = builder.into_stream();
    while let Some(key) = stream.next() {
        if !f(key) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_of_prefixes() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
        assert_eq!(successor(b""), None);
    }
}
