//! Glob and regex automata: one anchored dense DFA per pattern (regex-automata).
//!
//! Design:
//! - The regex is compiled from an HIR that already carries `^` and `$`, with
//!   `MatchKind::All` (every NFA thread is kept, so `a|ab` still matches `ab`: leftmost-first
//!   would prune `ab` once `a` matched) and an anchored start state only.
//! - Whole-key semantics: walk every byte of the key, then take the end-of-input transition
//!   and ask whether that state is a match state. A match state reached mid-key means
//!   nothing (dense DFAs report matches one transition late, and `$` needs the end anyway).
//! - Size: the Thompson NFA, the determinizer's scratch space and the final DFA are each
//!   bounded by `max_regex_bytes`; over it is [`PatternError::TooBig`]. There is no lazy-DFA
//!   fallback: a pattern whose DFA does not fit is refused, so matching is always a table
//!   walk with no per-thread cache.
//! - Unicode `\b`/`\B` cannot be decided by a DFA on non-ASCII bytes: the DFA is built with
//!   those bytes as "quit" bytes, and a [`meta::Regex`] over the same HIR answers whenever a
//!   walk reaches the quit state. This is the only case with a second engine.
//!
//! Cost: building is O(DFA size) after parsing (micro- to milliseconds); matching is one
//! table lookup per key byte plus one for end of input, no allocation.

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, Input, MatchKind, meta};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, Look};

use super::PatternError;

/// A compiled glob or regex.
pub(crate) struct Compiled {
    pub(crate) dfa: dense::DFA<Vec<u32>>,
    pub(crate) start: StateID,
    /// Present only when the DFA has quit bytes (Unicode word boundaries).
    fallback: Option<meta::Regex>,
}

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
    /// Build the DFA for an anchored HIR, every stage bounded by `limit` bytes.
    pub(crate) fn new(anchored: &Hir, limit: usize) -> Result<Compiled, PatternError> {
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .nfa_size_limit(Some(limit))
                    .which_captures(WhichCaptures::None),
            )
            .build_from_hir(anchored)
            .map_err(|e| nfa_error(&e, limit))?;
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .unicode_word_boundary(true)
                    .dfa_size_limit(Some(limit))
                    .determinize_size_limit(Some(limit)),
            )
            .build_from_nfa(&nfa)
            .map_err(|e| dfa_error(&e, limit))?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| PatternError::Invalid(format!("no anchored start state: {e}")))?;
        let fallback = if anchored.properties().look_set().contains_word_unicode() {
            let regex = meta::Builder::new()
                .configure(meta::Config::new().nfa_size_limit(Some(limit)))
                .build_from_hir(anchored)
                .map_err(|e| meta_error(&e, limit))?;
            Some(regex)
        } else {
            None
        };
        Ok(Compiled {
            dfa,
            start,
            fallback,
        })
    }

    /// Whole-key match (see the module documentation).
    pub(crate) fn is_match(&self, key: &[u8]) -> bool {
        let mut state = self.start;
        for &byte in key {
            state = self.dfa.next_state(state, byte);
            if self.dfa.is_special_state(state) {
                if self.dfa.is_dead_state(state) {
                    return false;
                }
                if self.dfa.is_quit_state(state) {
                    return self.fallback_match(key);
                }
            }
        }
        self.accepts_at_end(state)
    }

    /// Would the key read so far be a match if it ended here?
    #[inline]
    pub(crate) fn accepts_at_end(&self, state: StateID) -> bool {
        self.dfa.is_match_state(self.dfa.next_eoi_state(state))
    }

    /// Whether a walk can reach a state only the fallback engine can decide. Callers walking
    /// the DFA themselves (fst search, overlap) must then verify or answer conservatively.
    pub(crate) fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    fn fallback_match(&self, key: &[u8]) -> bool {
        match &self.fallback {
            Some(regex) => regex.is_match(Input::new(key).anchored(Anchored::Yes)),
            // Quit bytes are only configured for Unicode word boundaries, which always build a
            // fallback; answering "match" would over-invalidate, never miss.
            None => true,
        }
    }

    /// Heap bytes held (for the cache's byte budget).
    pub(crate) fn memory_usage(&self) -> usize {
        self.dfa.memory_usage() + self.fallback.as_ref().map_or(0, meta::Regex::memory_usage)
    }
}

// A dense DFA's own `Debug` prints every state: far too much for a log line.
impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("memory_usage", &self.memory_usage())
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

fn dfa_error(e: &dense::BuildError, limit: usize) -> PatternError {
    if e.is_size_limit_exceeded() {
        too_big(limit, e.to_string())
    } else {
        PatternError::Invalid(e.to_string())
    }
}

fn meta_error(e: &meta::BuildError, limit: usize) -> PatternError {
    match e.size_limit() {
        Some(_) => too_big(limit, e.to_string()),
        None => PatternError::Invalid(e.to_string()),
    }
}
