//! Multi-pattern DFAs over the glob and regex subscriptions.
//!
//! An [`AutoSet`] is an immutable snapshot: a few dense DFAs, each compiled from up to
//! [`GROUP_SIZE`] whole-key regexes with `MatchKind::All`, plus the patterns that could not go
//! into a DFA ("loose"; the caller checks them one by one with `Pattern::is_match`).
//! Building costs milliseconds to seconds, so it only ever happens on a background thread
//! (see `subs.rs`); searching is allocation-free and costs O(key length) per group.
//!
//! Byte semantics: the DFAs are compiled with Unicode off (`unicode(false).utf8(false)`), as
//! measurements recommend (Unicode `\w` or `.` make dense DFAs explode). Two kinds of sources:
//! * glob sources are written by the pattern engine with explicit byte classes, so a byte
//!   DFA matches exactly the same keys: those groups serve every key;
//! * user regexes have Unicode semantics. On an ASCII key a byte DFA gives the same answer,
//!   provided the regex cannot name a non-ASCII character (its source is ASCII and has no
//!   `\x`/`\u`/`\U` escape; case folding of an ASCII letter to a non-ASCII one, like `k` to
//!   the Kelvin sign, only matters on non-ASCII keys). Those groups serve ASCII keys only;
//!   for other keys their patterns are reported "unsure" and checked by the caller.
//!
//! Failure modes: a group whose DFA exceeds the size limits is split in halves and retried; a
//! single pattern that still fails is loose. A walk reaching a quit state (it cannot happen
//! with Unicode off, but the API allows it) reports the whole group as "unsure".

use regex_automata::dfa::{Automaton, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};

/// Most patterns compiled into one DFA. Larger groups mean fewer DFA walks per key but a
/// larger (and, for overlapping globs, possibly exponential) determinisation.
pub(crate) const GROUP_SIZE: usize = 512;
/// Size limits of one DFA and of its determinisation (always set them: an unbounded determinisation can take gigabytes).
const DFA_SIZE_LIMIT: usize = 16 << 20;
const DETERMINIZE_SIZE_LIMIT: usize = 32 << 20;

struct Group {
    dfa: dense::DFA<Vec<u32>>,
    /// The anchored start state (computed once; keys are matched whole).
    start: StateID,
    /// Exact on every key (glob sources), else on ASCII keys only (user regexes).
    all_keys: bool,
    /// `slots[pattern id]` = the caller's slot of that pattern.
    slots: Vec<u32>,
}

/// Immutable set of compiled glob/regex subscriptions.
#[derive(Default)]
pub(crate) struct AutoSet {
    groups: Vec<Group>,
    loose: Vec<u32>,
    /// Every slot this set refers to, sorted (a slot is reused only once no set refers to it).
    covered: Vec<u32>,
}

impl AutoSet {
    /// Compile `items` (slot, whole-key regex source and whether it is byte-level; None for
    /// a pattern without a regex source). Never fails: what cannot be compiled is loose.
    pub(crate) fn build(items: &[(u32, Option<(String, bool)>)]) -> AutoSet {
        let mut set = AutoSet::default();
        let mut bytes: Vec<(u32, String)> = Vec::new();
        let mut ascii: Vec<(u32, String)> = Vec::new();
        for (slot, source) in items {
            set.covered.push(*slot);
            let Some((source, byte_level)) = source else {
                set.loose.push(*slot);
                continue;
            };
            let wrapped = format!("(?:{source})\\z");
            match (*byte_level, dfa_safe(source, *byte_level)) {
                (_, false) => set.loose.push(*slot),
                (true, true) => bytes.push((*slot, wrapped)),
                (false, true) => ascii.push((*slot, wrapped)),
            }
        }
        set.covered.sort_unstable();
        for chunk in bytes.chunks(GROUP_SIZE) {
            set.compile(chunk, true);
        }
        for chunk in ascii.chunks(GROUP_SIZE) {
            set.compile(chunk, false);
        }
        set
    }

    fn compile(&mut self, items: &[(u32, String)], all_keys: bool) {
        if items.is_empty() {
            return;
        }
        match build_dfa(items) {
            Ok((dfa, start)) => {
                let slots = items.iter().map(|(s, _)| *s).collect();
                self.groups.push(Group {
                    dfa,
                    start,
                    all_keys,
                    slots,
                });
            }
            Err(err) if items.len() == 1 => {
                tracing::debug!(error = %err, "subscription pattern left out of the DFA set");
                self.loose.push(items[0].0);
            }
            Err(_) => {
                let (left, right) = items.split_at(items.len() / 2);
                self.compile(left, all_keys);
                self.compile(right, all_keys);
            }
        }
    }

    /// Whether `slot` is part of this set (compiled or loose).
    pub(crate) fn covers(&self, slot: u32) -> bool {
        self.covered.binary_search(&slot).is_ok()
    }

    /// Number of DFA groups.
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of patterns left out of the DFAs.
    pub(crate) fn loose_count(&self) -> usize {
        self.loose.len()
    }

    /// Call `f(slot, true)` for each compiled pattern matching the whole key and
    /// `f(slot, false)` for each pattern the caller must check itself (loose patterns,
    /// ASCII-only groups on a non-ASCII key, or a group whose search failed).
    pub(crate) fn for_each(&self, key: &str, mut f: impl FnMut(u32, bool)) {
        let ascii = key.is_ascii();
        for group in &self.groups {
            if !group.all_keys && !ascii {
                group.slots.iter().for_each(|&s| f(s, false));
                continue;
            }
            // A plain table walk (the overlapping-search API costs more per call than a
            // short key's whole walk): stop at the dead state, and at the end take the
            // end-of-input transition, whose match state lists every pattern that matched.
            let mut state = group.start;
            let mut unsure = false;
            for &byte in key.as_bytes() {
                state = group.dfa.next_state(state, byte);
                if group.dfa.is_special_state(state) {
                    if group.dfa.is_dead_state(state) {
                        break;
                    }
                    if group.dfa.is_quit_state(state) {
                        unsure = true;
                        break;
                    }
                }
            }
            if unsure {
                group.slots.iter().for_each(|&s| f(s, false));
                continue;
            }
            if group.dfa.is_dead_state(state) {
                continue;
            }
            let end = group.dfa.next_eoi_state(state);
            if group.dfa.is_match_state(end) {
                for i in 0..group.dfa.match_len(end) {
                    if let Some(&slot) = group.slots.get(group.dfa.match_pattern(end, i).as_usize())
                    {
                        f(slot, true);
                    }
                }
            }
        }
        self.loose.iter().for_each(|&s| f(s, false));
    }
}

/// Whether `source` may go into a byte DFA (see the module doc): a byte-level source always
/// (if it parses); a user regex if ASCII with no escape that can name a non-ASCII character.
fn dfa_safe(source: &str, byte_level: bool) -> bool {
    let names_non_ascii = !source.is_ascii()
        || source.contains("\\x")
        || source.contains("\\u")
        || source.contains("\\U");
    if !byte_level && names_non_ascii {
        return false;
    }
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(source)
        .is_ok()
}

fn build_dfa(items: &[(u32, String)]) -> Result<(dense::DFA<Vec<u32>>, StateID), String> {
    let patterns: Vec<&str> = items.iter().map(|(_, s)| s.as_str()).collect();
    let dfa = dense::Builder::new()
        .configure(
            dense::DFA::config()
                .match_kind(MatchKind::All)
                .start_kind(regex_automata::dfa::StartKind::Anchored)
                .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                .determinize_size_limit(Some(DETERMINIZE_SIZE_LIMIT)),
        )
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(
            thompson::Config::new()
                .utf8(false)
                .which_captures(thompson::WhichCaptures::None),
        )
        .build_many(&patterns)
        .map_err(|e| e.to_string())?;
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .map_err(|e| e.to_string())?;
    Ok((dfa, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(set: &AutoSet, key: &str) -> (Vec<u32>, Vec<u32>) {
        let (mut h, mut u) = (Vec::new(), Vec::new());
        set.for_each(key, |s, sure| if sure { h.push(s) } else { u.push(s) });
        h.sort();
        u.sort();
        (h, u)
    }

    #[test]
    fn whole_key_overlapping_matches() {
        let set = AutoSet::build(&[
            (7, Some(("user:[0-9]+".to_string(), false))),
            (9, Some(("^user:(?s-u:.)*$".to_string(), true))),
            (3, Some(("order".to_string(), false))),
            (4, Some(("\\p{Greek}+".to_string(), false))),
        ]);
        assert_eq!(set.group_count(), 2);
        assert_eq!(hits(&set, "user:12"), (vec![7, 9], vec![4]));
        assert_eq!(hits(&set, "user:12x"), (vec![9], vec![4]));
        assert_eq!(hits(&set, "orders"), (vec![], vec![4]));
        // Non-ASCII key: the byte-level glob group still answers, the regexes are unsure.
        assert_eq!(hits(&set, "user:é"), (vec![9], vec![3, 4, 7]));
        assert!(set.covers(4) && set.covers(3) && !set.covers(5));
    }
}
