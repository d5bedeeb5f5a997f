//! Can two patterns match a common key? (SPEC routing: over-delivery only where the overlap
//! cannot be decided; exact, prefix and suffix against each other must be exact.)
//!
//! - An exact key overlaps X iff X matches it.
//! - prefix/prefix: one prefix starts with the other; suffix/suffix: one ends with the other;
//!   prefix/suffix: always (`p + s` matches both).
//! - Anything involving a DFA: breadth-first search over pairs of states of the two automata
//!   (the product automaton), looking for a pair where both accept at end of input. A prefix
//!   or suffix is walked as a tiny automaton of its own (positions in the literal; the suffix
//!   uses the Knuth-Morris-Pratt failure function). The alphabet is reduced to one byte per
//!   pair of equivalence classes, so a pair costs at most a few dozen transitions.
//!
//! The search is over bytes, a superset of UTF-8 keys: "no common byte string" implies "no
//! common key", so a `false` is always right. When the search exceeds
//! [`OVERLAP_STATE_BUDGET`] pairs, or reaches a state only a fallback engine can decide, the
//! answer is `true`. Cost: at most budget x alphabet transitions (about a millisecond), and a
//! visited set of at most budget pairs.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use regex_automata::dfa::Automaton;
use regex_automata::util::primitives::StateID;

use super::compile::Dense;
use super::{Matcher, Pattern, has_prefix, has_suffix};

/// Most state pairs the product search visits before answering "may overlap".
pub const OVERLAP_STATE_BUDGET: usize = 4096;

pub(crate) fn may_overlap(a: &Pattern, b: &Pattern) -> bool {
    use Matcher::{Dfa, Exact, Prefix, Suffix};
    // A common key starts with both literal prefixes and ends with both literal suffixes, so
    // one of each pair must extend the other. Decides most disjoint pairs in nanoseconds.
    let (pa, pb) = (a.literal_prefix(), b.literal_prefix());
    let (sa, sb) = (a.literal_suffix(), b.literal_suffix());
    if !(has_prefix(pa, pb) || has_prefix(pb, pa)) || !(has_suffix(sa, sb) || has_suffix(sb, sa)) {
        return false;
    }
    match (&a.matcher, &b.matcher) {
        (Exact(k), _) => b.is_match(k),
        (_, Exact(k)) => a.is_match(k),
        (Prefix(x), Prefix(y)) => has_prefix(x, y) || has_prefix(y, x),
        (Suffix(x), Suffix(y)) => has_suffix(x, y) || has_suffix(y, x),
        (Prefix(_), Suffix(_)) | (Suffix(_), Prefix(_)) => true,
        // Without a dense DFA (too big to build) there is nothing cheap to walk: "maybe".
        (Dfa(x), Dfa(y)) => match (x.dense(), y.dense()) {
            (Some(x), Some(y)) => product_nonempty(&DfaWalk(x), &DfaWalk(y)),
            _ => true,
        },
        (Dfa(x), Prefix(p)) | (Prefix(p), Dfa(x)) => x
            .dense()
            .is_none_or(|x| product_nonempty(&DfaWalk(x), &LitWalk::prefix(p.as_bytes()))),
        (Dfa(x), Suffix(s)) | (Suffix(s), Dfa(x)) => x
            .dense()
            .is_none_or(|x| product_nonempty(&DfaWalk(x), &LitWalk::suffix(s.as_bytes()))),
    }
}

/// A deterministic automaton over bytes, as the product search sees it.
trait Walk {
    type State: Copy + Eq + Hash;
    fn start(&self) -> Self::State;
    fn next(&self, s: Self::State, byte: u8) -> Self::State;
    /// No continuation can ever be accepted.
    fn is_dead(&self, s: Self::State) -> bool;
    /// This automaton cannot tell (a DFA quit state): the search must answer "maybe".
    fn is_unknown(&self, s: Self::State) -> bool;
    fn accepts_at_end(&self, s: Self::State) -> bool;
    /// Bytes with equal classes have equal transitions from every state.
    fn class(&self, byte: u8) -> u16;
    /// Classes are below this.
    fn class_count(&self) -> usize;
}

struct DfaWalk<'a>(&'a Dense);

impl Walk for DfaWalk<'_> {
    type State = StateID;

    fn start(&self) -> StateID {
        self.0.start
    }
    fn next(&self, s: StateID, byte: u8) -> StateID {
        self.0.dfa.next_state(s, byte)
    }
    fn is_dead(&self, s: StateID) -> bool {
        self.0.dfa.is_dead_state(s)
    }
    fn is_unknown(&self, s: StateID) -> bool {
        self.0.dfa.is_quit_state(s)
    }
    fn accepts_at_end(&self, s: StateID) -> bool {
        self.0.accepts_at_end(s)
    }
    fn class(&self, byte: u8) -> u16 {
        u16::from(self.0.dfa.byte_classes().get(byte))
    }
    fn class_count(&self) -> usize {
        self.0.dfa.byte_classes().alphabet_len()
    }
}

/// A prefix or suffix literal as an automaton whose state is a position in the literal.
struct LitWalk<'a> {
    lit: &'a [u8],
    /// Suffix only: KMP failure function (`fail[i]` = length of the longest proper border of
    /// `lit[..=i]`). Empty for a prefix.
    fail: Vec<usize>,
    suffix: bool,
    in_lit: [bool; 256],
}

/// State of [`LitWalk`] meaning "the literal can no longer be matched" (prefix only).
const LIT_DEAD: usize = usize::MAX;

impl<'a> LitWalk<'a> {
    fn new(lit: &'a [u8], suffix: bool) -> Self {
        let mut in_lit = [false; 256];
        for &b in lit {
            in_lit[usize::from(b)] = true;
        }
        let fail = if suffix {
            failure_function(lit)
        } else {
            Vec::new()
        };
        LitWalk {
            lit,
            fail,
            suffix,
            in_lit,
        }
    }
    fn prefix(lit: &'a [u8]) -> Self {
        Self::new(lit, false)
    }
    fn suffix(lit: &'a [u8]) -> Self {
        Self::new(lit, true)
    }
}

fn failure_function(lit: &[u8]) -> Vec<usize> {
    let mut fail = vec![0; lit.len()];
    let mut k = 0;
    for i in 1..lit.len() {
        while k > 0 && lit[i] != lit[k] {
            k = fail[k - 1];
        }
        if lit[i] == lit[k] {
            k += 1;
        }
        fail[i] = k;
    }
    fail
}

impl Walk for LitWalk<'_> {
    type State = usize;

    fn start(&self) -> usize {
        0
    }
    fn next(&self, s: usize, byte: u8) -> usize {
        let n = self.lit.len();
        if !self.suffix {
            return match s {
                LIT_DEAD => LIT_DEAD,
                s if s == n => n,
                s if self.lit[s] == byte => s + 1,
                _ => LIT_DEAD,
            };
        }
        // KMP: the state is the length of the longest suffix of the input that is a prefix
        // of the literal; a full match falls back to its longest border to keep going.
        let mut k = s;
        loop {
            if k < n && self.lit[k] == byte {
                return k + 1;
            }
            if k == 0 {
                return 0;
            }
            k = self.fail[k - 1];
        }
    }
    fn is_dead(&self, s: usize) -> bool {
        s == LIT_DEAD
    }
    fn is_unknown(&self, _: usize) -> bool {
        false
    }
    fn accepts_at_end(&self, s: usize) -> bool {
        s == self.lit.len()
    }
    fn class(&self, byte: u8) -> u16 {
        if self.in_lit[usize::from(byte)] {
            u16::from(byte) + 1
        } else {
            0
        }
    }
    fn class_count(&self) -> usize {
        257
    }
}

/// Is there a byte string both automata accept? Bounded breadth-first search; "true" when
/// unsure (see the module documentation).
fn product_nonempty<A: Walk, B: Walk>(a: &A, b: &B) -> bool {
    let alphabet = joint_alphabet(a, b);
    let start = (a.start(), b.start());
    let mut seen: HashSet<(A::State, B::State), BuildHasherDefault<PairHasher>> =
        HashSet::default();
    let mut queue = VecDeque::new();
    seen.insert(start);
    queue.push_back(start);
    while let Some((x, y)) = queue.pop_front() {
        if a.is_unknown(x) || b.is_unknown(y) {
            return true;
        }
        if a.accepts_at_end(x) && b.accepts_at_end(y) {
            return true;
        }
        for &byte in &alphabet {
            let pair = (a.next(x, byte), b.next(y, byte));
            if a.is_dead(pair.0) || b.is_dead(pair.1) || !seen.insert(pair) {
                continue;
            }
            if seen.len() > OVERLAP_STATE_BUDGET {
                return true;
            }
            queue.push_back(pair);
        }
    }
    false
}

/// One representative byte per distinct pair of classes (a bitmap of class pairs: at most
/// 257 x 257 bits).
fn joint_alphabet<A: Walk, B: Walk>(a: &A, b: &B) -> Vec<u8> {
    let width = b.class_count();
    let mut seen = vec![0u64; (a.class_count() * width).div_ceil(64)];
    (0..=255u8)
        .filter(|&byte| {
            let bit = usize::from(a.class(byte)) * width + usize::from(b.class(byte));
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            match seen.get_mut(word) {
                Some(w) if *w & mask != 0 => false,
                Some(w) => {
                    *w |= mask;
                    true
                }
                None => true,
            }
        })
        .collect()
}

/// A multiplicative hasher for small integer pairs: the visited set is internal, its keys
/// are automaton state numbers (no attacker-chosen data), and SipHash dominated the search.
#[derive(Default)]
struct PairHasher(u64);

impl PairHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.add(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmp_walk_accepts_exactly_keys_ending_with_the_suffix() {
        let lit = b"abab";
        let walk = LitWalk::suffix(lit);
        for key in [
            "abab", "aabab", "ababab", "abba", "", "ab", "xxabab", "ababa",
        ] {
            let end = key.bytes().fold(walk.start(), |s, b| walk.next(s, b));
            assert_eq!(walk.accepts_at_end(end), key.ends_with("abab"), "{key}");
        }
    }

    #[test]
    fn prefix_walk() {
        let walk = LitWalk::prefix(b"ab");
        for key in ["ab", "abc", "a", "ba", ""] {
            let end = key.bytes().fold(walk.start(), |s, b| walk.next(s, b));
            assert_eq!(walk.accepts_at_end(end), key.starts_with("ab"), "{key}");
        }
    }
}
