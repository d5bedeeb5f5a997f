//! Glob and regex automata: one anchored dense DFA per pattern (regex-automata).
//!
//! Design:
//! - The regex is compiled from an HIR that already carries `^` and `$`, with
//!   `MatchKind::All` (every NFA thread is kept, so `a|ab` still matches `ab`: leftmost-first
//!   would prune `ab` once `a` matched) and an anchored start state only.
//! - Whole-key semantics: walk every byte of the key, then take the end-of-input transition
//!   and ask whether that state is a match state. A match state reached mid-key means
//!   nothing (dense DFAs report matches one transition late, and `$` needs the end anyway).
//! - Size: the Thompson NFA is bounded by `max_regex_bytes` (over it: [`PatternError::TooBig`],
//!   e.g. `\w{500}`). The dense DFA and the determinizer's scratch space are bounded by the
//!   same figure; when the dense DFA does not fit (an exponential blow-up such as
//!   `(a|b)*a(a|b){30}`, or Unicode classes repeated: `\w{20}`), the pattern is still accepted
//!   and served by the second tier below, since its NFA is small.
//! - Second tier, a [`meta::Regex`] over the same HIR (its NFAs bounded by
//!   [`META_NFA_FACTOR`] x the limit): it answers `is_match` when there is no dense DFA, and
//!   whenever a dense walk reaches a quit state (Unicode `\b`/`\B`, which a DFA cannot decide
//!   on non-ASCII bytes). For fst search without a dense DFA, a lazy [`hybrid::dfa::DFA`]
//!   walks the fst with a per-search cache of at most [`LAZY_CACHE_BYTES`] and gives up
//!   ("don't know": verify each candidate) rather than clear it.
//!
//! Cost: building is O(DFA size) after parsing (tens of microseconds for a typical glob, a few
//! milliseconds for Unicode classes; a dense build that overflows costs up to ~10 ms before
//! the second tier takes over). Matching on the dense DFA is one table lookup per key byte
//! plus one for end of input, no allocation; the second tier costs what `meta::Regex` costs.

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, Input, MatchKind, hybrid, meta};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, Look};

use super::PatternError;

/// A compiled glob or regex.
pub(crate) struct Compiled {
    /// The dense DFA, when it fits in `max_regex_bytes`.
    dense: Option<Dense>,
    /// Only without a dense DFA: a lazy DFA for fst walks.
    lazy: Option<hybrid::dfa::DFA>,
    /// Decides what a dense walk cannot: every key when there is no dense DFA, keys reaching
    /// a quit state (Unicode word boundaries) otherwise.
    fallback: Option<meta::Regex>,
}

/// An anchored dense DFA and its start state.
pub(crate) struct Dense {
    pub(crate) dfa: dense::DFA<Vec<u32>>,
    pub(crate) start: StateID,
}

/// The dense DFA's dead state (id 0 by construction in regex-automata).
const DEAD: StateID = StateID::ZERO;

/// The regex-syntax parser for user regexes: Rust `regex` syntax and semantics (Unicode on,
/// patterns must match valid UTF-8 only).
fn user_parser() -> regex_syntax::Parser {
    regex_syntax::ParserBuilder::new().build()
}

/// The parser for our own glob translations and for [`super::Pattern::regex_source`]: the
/// same syntax, but byte-level classes such as `(?-u:[\x80-\xBF])` are allowed.
pub(crate) fn byte_parser() -> regex_syntax::Parser {
    regex_syntax::ParserBuilder::new().utf8(false).build()
}

/// Parse a user regex; the error carries the parser's own message and position.
pub(crate) fn parse_user_regex(source: &str) -> Result<Hir, PatternError> {
    user_parser()
        .parse(source)
        .map_err(|e| PatternError::Invalid(syntax_message(&e)))
}

/// Parse an anchored regex we generated ourselves (glob translation).
pub(crate) fn parse_generated(source: &str) -> Result<Hir, PatternError> {
    byte_parser()
        .parse(source)
        .map_err(|e| PatternError::Invalid(syntax_message(&e)))
}

/// One-line form of a regex-syntax error (its `Display` draws a multi-line caret diagram).
fn syntax_message(err: &regex_syntax::Error) -> String {
    match err {
        regex_syntax::Error::Parse(e) => {
            format!(
                "regex parse error at byte {}: {}",
                e.span().start.offset,
                e.kind()
            )
        }
        regex_syntax::Error::Translate(e) => {
            format!(
                "regex parse error at byte {}: {}",
                e.span().start.offset,
                e.kind()
            )
        }
        other => other.to_string().replace('\n', " "),
    }
}

/// Longest literal every match of `hir` starts with: the longest common prefix of the
/// extracted prefix literals, cut back to a character boundary ("" if extraction gives up).
/// Sound because a finite extracted sequence contains a prefix of every match.
pub(crate) fn regex_literal_prefix(hir: &Hir) -> String {
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    let Some(bytes) = seq.longest_common_prefix() else {
        return String::new();
    };
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    };
    valid.to_string()
}

/// Longest literal every match of `hir` ends with, the mirror of [`regex_literal_prefix`]
/// (cut forward to a character boundary).
pub(crate) fn regex_literal_suffix(hir: &Hir) -> String {
    let seq = Extractor::new().kind(ExtractKind::Suffix).extract(hir);
    let Some(bytes) = seq.longest_common_suffix() else {
        return String::new();
    };
    // A UTF-8 sequence is at most 4 bytes: some start within the first 4 bytes is valid.
    (0..bytes.len().min(4))
        .find_map(|skip| std::str::from_utf8(&bytes[skip..]).ok())
        .unwrap_or("")
        .to_string()
}

/// `^(?:hir)$` as an HIR.
pub(crate) fn anchor(hir: Hir) -> Hir {
    Hir::concat(vec![Hir::look(Look::Start), hir, Hir::look(Look::End)])
}

/// The anchored regex text for a user regex: `^(?:source)$` when that text parses back to the
/// same HIR (the usual case), else the HIR's own printed form (e.g. an `(?x)` comment at the
/// end would swallow our closing parenthesis).
pub(crate) fn anchored_source(source: &str, anchored: &Hir) -> String {
    let wrapped = format!("^(?:{source})$");
    match byte_parser().parse(&wrapped) {
        Ok(hir) if &hir == anchored => wrapped,
        _ => anchored.to_string(),
    }
}

impl Compiled {
    /// Build the automata for an anchored HIR, every stage bounded by `limit` bytes.
    pub(crate) fn new(anchored: &Hir, limit: usize) -> Result<Compiled, PatternError> {
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .nfa_size_limit(Some(limit))
                    .which_captures(WhichCaptures::None),
            )
            .build_from_hir(anchored)
            .map_err(|e| nfa_error(&e, limit))?;
        let dense = if force_lazy() {
            None
        } else {
            build_dense(&nfa, limit)?
        };
        let lazy = match dense {
            Some(_) => None,
            None => Some(build_lazy(nfa)?),
        };
        let needs_regex =
            dense.is_none() || anchored.properties().look_set().contains_word_unicode();
        let fallback = if needs_regex {
            // meta builds a forward and a reverse NFA, larger than the one checked above:
            // allow it a few times the limit rather than refuse a pattern that already fits.
            let config = meta::Config::new()
                .which_captures(WhichCaptures::Implicit)
                .nfa_size_limit(Some(limit.saturating_mul(META_NFA_FACTOR)));
            let regex = meta::Builder::new()
                .configure(config)
                .build_from_hir(anchored)
                .map_err(|e| meta_error(&e, limit))?;
            Some(regex)
        } else {
            None
        };
        Ok(Compiled {
            dense,
            lazy,
            fallback,
        })
    }

    /// The dense DFA, unless it did not fit in the limit.
    pub(crate) fn dense(&self) -> Option<&Dense> {
        self.dense.as_ref()
    }

    /// The lazy DFA that stands in for a dense DFA too big to build.
    pub(crate) fn lazy(&self) -> Option<&hybrid::dfa::DFA> {
        self.lazy.as_ref()
    }

    /// Whether a DFA walk can end in "don't know" (Unicode word boundary, lazy DFA out of
    /// cache): callers walking the automata themselves (fst search) must then verify each
    /// candidate with [`Compiled::is_match`].
    pub(crate) fn needs_verify(&self) -> bool {
        self.fallback.is_some()
    }

    /// Whole-key match (see the module documentation).
    pub(crate) fn is_match(&self, key: &[u8]) -> bool {
        let Some(dense) = &self.dense else {
            return self.fallback_match(key);
        };
        let mut state = dense.start;
        for &byte in key {
            state = dense.dfa.next_state(state, byte);
            if dense.dfa.is_special_state(state) {
                if dense.dfa.is_dead_state(state) {
                    return false;
                }
                if dense.dfa.is_quit_state(state) {
                    return self.fallback_match(key);
                }
            }
        }
        dense.accepts_at_end(state)
    }

    fn fallback_match(&self, key: &[u8]) -> bool {
        match &self.fallback {
            Some(regex) => regex.is_match(Input::new(key).anchored(Anchored::Yes)),
            // A fallback is built whenever a walk can need one (no dense DFA, or quit bytes);
            // answering "match" would over-invalidate, never miss.
            None => true,
        }
    }

    /// Heap bytes held (for the cache's byte budget).
    pub(crate) fn memory_usage(&self) -> usize {
        self.dense.as_ref().map_or(0, |d| d.dfa.memory_usage())
            + self.lazy.as_ref().map_or(0, hybrid::dfa::DFA::memory_usage)
            + self.fallback.as_ref().map_or(0, meta::Regex::memory_usage)
    }
}

impl Dense {
    /// Would the key read so far be a match if it ended here?
    #[inline]
    pub(crate) fn accepts_at_end(&self, state: StateID) -> bool {
        self.dfa.is_match_state(self.dfa.next_eoi_state(state))
    }
}

#[cfg(test)]
fn force_lazy() -> bool {
    tests::FORCE_LAZY.with(std::cell::Cell::get)
}

#[cfg(not(test))]
fn force_lazy() -> bool {
    false
}

/// How much larger than `max_regex_bytes` the fallback regex's NFAs may be.
const META_NFA_FACTOR: usize = 4;

/// Cache bound of the lazy DFA of one fst search (allocated per search, freed after it).
pub(crate) const LAZY_CACHE_BYTES: usize = 2 << 20;

/// The dense DFA, or None when it would exceed `limit` (the second tier serves the pattern).
fn build_dense(nfa: &thompson::NFA, limit: usize) -> Result<Option<Dense>, PatternError> {
    let built = dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .unicode_word_boundary(true)
                .dfa_size_limit(Some(limit))
                .determinize_size_limit(Some(limit)),
        )
        .build_from_nfa(nfa);
    let dfa = match built {
        Ok(dfa) => dfa,
        Err(e) if e.is_size_limit_exceeded() => return Ok(None),
        Err(e) => return Err(PatternError::Invalid(e.to_string())),
    };
    // An anchored start state exists by construction (`StartKind::Anchored`); the only other
    // failure is a quit byte in the look-behind, impossible at the start of a key.
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .unwrap_or(DEAD);
    Ok(Some(Dense { dfa, start }))
}

/// A lazy DFA that gives up (instead of clearing its cache) when the cache fills: state ids
/// held by an fst walk then stay valid, and the walk treats the rest as "don't know".
fn build_lazy(nfa: thompson::NFA) -> Result<hybrid::dfa::DFA, PatternError> {
    hybrid::dfa::Builder::new()
        .configure(
            hybrid::dfa::Config::new()
                .match_kind(MatchKind::All)
                .unicode_word_boundary(true)
                .cache_capacity(LAZY_CACHE_BYTES)
                .minimum_cache_clear_count(Some(0)),
        )
        .build_from_nfa(nfa)
        .map_err(|e| PatternError::Invalid(e.to_string()))
}

// A dense DFA's own `Debug` prints every state: far too much for a log line.
impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("memory_usage", &self.memory_usage())
            .field("dense", &self.dense.is_some())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

fn too_big(limit: usize, message: String) -> PatternError {
    PatternError::TooBig { limit, message }
}

fn nfa_error(e: &thompson::BuildError, limit: usize) -> PatternError {
    match e.size_limit() {
        Some(_) => too_big(limit, e.to_string()),
        None => PatternError::Invalid(e.to_string()),
    }
}

fn meta_error(e: &meta::BuildError, limit: usize) -> PatternError {
    match e.size_limit() {
        Some(_) => too_big(limit, e.to_string()),
        None => PatternError::Invalid(e.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    thread_local! {
        /// Tests set this to exercise the lazy-DFA path on small patterns.
        pub(crate) static FORCE_LAZY: Cell<bool> = const { Cell::new(false) };
    }
}
