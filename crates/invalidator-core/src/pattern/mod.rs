//! Pattern parsing, type inference and compiled matchers (SPEC "Patterns").
//!
//! A [`Pattern`] is built once (usually through the [`PatternCache`]) and then shared as
//! `Arc<Pattern>` by the HTTP layer, the subscription index and the fan-out. It is immutable.
//!
//! Files: `parse.rs` validates the text and decides its type and shape (escapes, inference,
//! explicit types); `compile.rs` turns globs and regexes into an anchored dense DFA each (with
//! a second tier for the rare pattern whose DFA would be too big); `fst.rs` resolves a pattern
//! against fst sets of tracked keys without scanning them all; `overlap.rs` decides whether two
//! patterns can match a common key; `cache.rs` is the bounded LRU of compiled patterns.
//!
//! Decisions where SPEC leaves room:
//! - Escapes: `\*`, `\?` and `\\` are literal characters; any other backslash is itself a
//!   literal (so `C:\dir` needs no escaping). An explicit `exact`, `prefix` or `suffix` takes
//!   the text verbatim (no escapes: with no wildcard nothing needs escaping), except that a
//!   `prefix` drops one trailing `*` and a `suffix` one leading `*`.
//! - Regex is Rust `regex` syntax with its Unicode semantics (`\w`, `.` and `?` in globs are
//!   about characters, not bytes), matched against the whole key.
//! - Refusals are cached like compiled patterns (see `cache.rs`).
//!
//! Invariants:
//! - Matching is whole-key: a key matches when the pattern's key set contains it, never when
//!   a part of it does.
//! - The *matcher* is the simplest one with the same key set: a glob such as `user:*` (given
//!   with an explicit `glob` type) is matched as a prefix, so string operations and fst ranges
//!   serve it. [`Pattern::kind`] still reports what the client asked for;
//!   [`Pattern::effective_kind`] reports the matcher.
//! - Exact, prefix and suffix never build an automaton: such a pattern costs its text. A glob
//!   or regex holds a dense DFA of at most `max_regex_bytes` (typically 2-4 KiB; Unicode
//!   classes such as `\w` cost 100 KiB-1 MiB), or the second tier.
//! - Every answer that cannot be decided exactly errs on the side of "may match"
//!   ([`Pattern::may_overlap`] true, [`Pattern::confined_to`] false): over-delivering an
//!   invalidation is allowed, missing one is not, and neither is letting a restricted token out
//!   of its prefixes.
//!
//! Costs (release build, this 2-core machine, `cargo bench --bench pattern`): see the
//! benchmark file; in short, `is_match` takes 2-5 ns for literal types and ~20 ns for a
//! 20-byte key on a DFA, a cache hit ~50 ns, compiling a glob ~50 us.

mod compile;
mod fst;
mod overlap;
mod parse;

use serde::{Deserialize, Serialize};

pub use self::fst::FstMatches;

use compile::Compiled;
use parse::Shape;

/// SPEC's five pattern types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    Exact,
    Prefix,
    Suffix,
    Glob,
    Regex,
}

impl PatternType {
    pub const ALL: [PatternType; 5] = [
        PatternType::Exact,
        PatternType::Prefix,
        PatternType::Suffix,
        PatternType::Glob,
        PatternType::Regex,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PatternType::Exact => "exact",
            PatternType::Prefix => "prefix",
            PatternType::Suffix => "suffix",
            PatternType::Glob => "glob",
            PatternType::Regex => "regex",
        }
    }

    pub fn parse(s: &str) -> Option<PatternType> {
        PatternType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Limits applied when compiling.
#[derive(Debug, Clone, Copy)]
pub struct PatternLimits {
    /// Longest accepted pattern text, bytes (SPEC: 1,024).
    pub max_pattern_bytes: usize,
    /// Bound of each compilation stage of a glob or regex (Thompson NFA, determinizer
    /// scratch space, final DFA), bytes.
    pub max_regex_bytes: usize,
}

impl Default for PatternLimits {
    fn default() -> Self {
        PatternLimits {
            max_pattern_bytes: 1024,
            max_regex_bytes: 1 << 20,
        }
    }
}

/// Why a pattern was refused. Maps to 400 `invalid_pattern` (or `validation_failed` for
/// empty / too long / control characters: see [`PatternError::is_validation`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern must not be empty")]
    Empty,
    #[error("pattern is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("pattern contains an ASCII control character")]
    ControlChar,
    /// The regex does not compile; the text is the compiler's message and position.
    #[error("invalid pattern: {0}")]
    Invalid(String),
    /// The compiled automaton would exceed `max_regex_bytes`; simplify the pattern (fewer
    /// counted repetitions, ASCII classes such as `(?-u:\w)` or `[0-9]` instead of Unicode ones).
    #[error("pattern exceeds the compiled size limit of {limit} bytes: {message}")]
    TooBig { limit: usize, message: String },
}

impl PatternError {
    /// True for input-shape errors (SPEC: 400 `validation_failed`), false for patterns that do
    /// not compile (400 `invalid_pattern`).
    pub fn is_validation(&self) -> bool {
        matches!(
            self,
            PatternError::Empty | PatternError::TooLong { .. } | PatternError::ControlChar
        )
    }
}

/// How keys are tested: the simplest engine with the pattern's key set.
#[derive(Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Dfa(Box<Compiled>),
}

/// A parsed and compiled pattern. Immutable and cheap to share (`Arc`).
#[derive(Debug)]
pub struct Pattern {
    source: String,
    /// The text that, parsed with an explicit `kind`, means exactly this pattern.
    canonical: String,
    kind: PatternType,
    matcher: Matcher,
    /// For globs and regexes: the anchored regex that was compiled.
    regex_source: Option<String>,
    /// Longest literal every matching key starts with.
    literal_prefix: String,
    /// Longest literal every matching key ends with.
    literal_suffix: String,
}

impl Pattern {
    /// Parse `source`, infer its type unless `explicit` is given, and compile it.
    ///
    /// Cost: O(len) for exact/prefix/suffix; a glob or regex builds a dense DFA, bounded by
    /// `limits.max_regex_bytes` in memory (typically microseconds, at worst milliseconds).
    pub fn parse(
        source: &str,
        explicit: Option<PatternType>,
        limits: &PatternLimits,
    ) -> Result<Pattern, PatternError> {
        parse::validate(source, limits)?;
        let (kind, shape) = parse::infer(source, explicit);
        let canonical = match &shape {
            Shape::Exact(s) => s.clone(),
            Shape::Prefix(s) => format!("{s}*"),
            Shape::Suffix(s) => format!("*{s}"),
            // An explicit glob goes through the same tokenizer as inference; a regex is itself.
            Shape::Glob(_) | Shape::Regex => source.to_string(),
        };
        let (matcher, regex_source, literal_prefix, literal_suffix) = match shape {
            Shape::Exact(s) => (Matcher::Exact(s.clone()), None, s.clone(), s),
            Shape::Prefix(s) => (Matcher::Prefix(s.clone()), None, s, String::new()),
            Shape::Suffix(s) => (Matcher::Suffix(s.clone()), None, String::new(), s),
            Shape::Glob(tokens) => {
                let regex = parse::glob_to_regex(&tokens);
                let prefix = parse::glob_literal_prefix(&tokens);
                let suffix = parse::glob_literal_suffix(&tokens);
                let matcher = match parse::glob_as_literal(&tokens) {
                    Some(Shape::Exact(s)) => Matcher::Exact(s),
                    Some(Shape::Prefix(s)) => Matcher::Prefix(s),
                    Some(Shape::Suffix(s)) => Matcher::Suffix(s),
                    _ => {
                        let hir = compile::parse_generated(&regex)?;
                        Matcher::Dfa(Box::new(Compiled::new(&hir, limits.max_regex_bytes)?))
                    }
                };
                (matcher, Some(regex), prefix, suffix)
            }
            Shape::Regex => {
                let hir = compile::parse_user_regex(source)?;
                let prefix = compile::regex_literal_prefix(&hir);
                let suffix = compile::regex_literal_suffix(&hir);
                let anchored = compile::anchor(hir);
                let compiled = Compiled::new(&anchored, limits.max_regex_bytes)?;
                let regex = compile::anchored_source(source, &anchored);
                (
                    Matcher::Dfa(Box::new(compiled)),
                    Some(regex),
                    prefix,
                    suffix,
                )
            }
        };
        Ok(Pattern {
            source: source.to_string(),
            canonical,
            kind,
            matcher,
            regex_source,
            literal_prefix,
            literal_suffix,
        })
    }

    /// The pattern as the client wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The pattern in a form that means the same on every reader: parsing it with the
    /// explicit type [`Pattern::kind`] gives this very key set. This is what crosses the
    /// cluster bus and reaches WebSocket clients, so an inferred `user:\*` (the key `user:*`)
    /// travels as the exact key `user:*`, never as the seven characters `user:\*`.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The type the client asked for, or the inferred one.
    pub fn kind(&self) -> PatternType {
        self.kind
    }

    /// The type of the engine that matches keys: `kind()`, except that a glob whose key set is
    /// that of an exact, prefix or suffix pattern reports that simpler type.
    pub fn effective_kind(&self) -> PatternType {
        match &self.matcher {
            Matcher::Exact(_) => PatternType::Exact,
            Matcher::Prefix(_) => PatternType::Prefix,
            Matcher::Suffix(_) => PatternType::Suffix,
            Matcher::Dfa(_) => self.kind,
        }
    }

    /// The exact key, the prefix text or the suffix text; None for globs and regexes.
    pub fn literal(&self) -> Option<&str> {
        match self.kind {
            PatternType::Exact | PatternType::Prefix | PatternType::Suffix => {
                self.effective_literal()
            }
            PatternType::Glob | PatternType::Regex => None,
        }
    }

    /// Like [`Pattern::literal`], for [`Pattern::effective_kind`]: also Some for a glob
    /// matched as an exact key, a prefix or a suffix.
    pub fn effective_literal(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Exact(s) | Matcher::Prefix(s) | Matcher::Suffix(s) => Some(s),
            Matcher::Dfa(_) => None,
        }
    }

    /// For globs and regexes: the anchored regex (`^...$`) that was compiled, in regex-syntax
    /// form. Compile it with [`syntax_config`] (byte-level classes allowed); a match of the
    /// whole key is then exactly this pattern's match. None for exact, prefix and suffix.
    pub fn regex_source(&self) -> Option<&str> {
        self.regex_source.as_deref()
    }

    /// Heap bytes of this pattern's dense DFA: None for exact, prefix and suffix matchers, and
    /// for a glob or regex whose dense DFA would exceed `max_regex_bytes` (it is matched by a
    /// second-tier engine instead). A multi-pattern DFA over [`Pattern::regex_source`] should
    /// leave the latter out: they would blow it up too.
    pub fn dense_dfa_bytes(&self) -> Option<usize> {
        match &self.matcher {
            Matcher::Dfa(c) => c.dense().map(|d| d.dfa.memory_usage()),
            Matcher::Exact(_) | Matcher::Prefix(_) | Matcher::Suffix(_) => None,
        }
    }

    /// Longest literal every matching key starts with ("" when there is none). Exact and
    /// prefix: the text; suffix: ""; glob: the text before the first wildcard; regex: the
    /// longest common prefix of regex-syntax's extracted prefix literals.
    pub fn literal_prefix(&self) -> &str {
        &self.literal_prefix
    }

    /// Longest literal every matching key ends with ("" when there is none). Exact and
    /// suffix: the text; prefix: ""; glob: the text after the last wildcard; regex: the
    /// longest common suffix of regex-syntax's extracted suffix literals.
    pub fn literal_suffix(&self) -> &str {
        &self.literal_suffix
    }

    /// Whether `key` is in this pattern's key set (whole-key semantics).
    ///
    /// Cost: a string comparison, or one DFA transition per byte. No allocation.
    pub fn is_match(&self, key: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(s) => key == s,
            Matcher::Prefix(s) => has_prefix(key, s),
            Matcher::Suffix(s) => has_suffix(key, s),
            Matcher::Dfa(c) => c.is_match(key.as_bytes()),
        }
    }

    /// True only if every key this pattern can match starts with `prefix`.
    ///
    /// Decided on [`Pattern::literal_prefix`], which is sound for every type (for a regex,
    /// every alternative found by literal extraction must start with it; when extraction gives
    /// up the literal prefix is "" and only `""` is confining).
    pub fn confined_to(&self, prefix: &str) -> bool {
        has_prefix(&self.literal_prefix, prefix)
    }

    /// False only when no key can match both patterns (exact, prefix and suffix against each
    /// other are decided exactly; glob and regex may answer true when unsure).
    ///
    /// Cost: string operations between literal types; otherwise a breadth-first search over
    /// pairs of automaton states, bounded by [`OVERLAP_STATE_BUDGET`] pairs (answering true
    /// when the budget runs out).
    pub fn may_overlap(&self, other: &Pattern) -> bool {
        overlap::may_overlap(self, other)
    }

    /// Approximate heap bytes held by this pattern (text, automaton, regex text).
    pub fn memory_usage(&self) -> usize {
        let matcher = match &self.matcher {
            Matcher::Exact(s) | Matcher::Prefix(s) | Matcher::Suffix(s) => s.len(),
            Matcher::Dfa(c) => c.memory_usage(),
        };
        self.source.len()
            + matcher
            + self.literal_prefix.len()
            + self.literal_suffix.len()
            + self.regex_source.as_ref().map_or(0, String::len)
    }
}

pub use overlap::OVERLAP_STATE_BUDGET;

/// `hay.starts_with(needle)`, the empty needle answered up front: the zero-length compare
/// measured 90-200 ns on this machine (against ~5 ns), and `*` / `""` literals are common.
#[inline]
pub(crate) fn has_prefix(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.as_bytes().starts_with(needle.as_bytes())
}

/// `hay.ends_with(needle)`, as [`has_prefix`].
#[inline]
pub(crate) fn has_suffix(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.as_bytes().ends_with(needle.as_bytes())
}

/// The regex-syntax configuration [`Pattern::regex_source`] is written for: Rust regex
/// syntax with Unicode on, but `utf8(false)` so that the byte-level classes of globs compile.
/// Keys are always valid UTF-8, so this never changes what a key matches.
pub fn syntax_config() -> regex_automata::util::syntax::Config {
    regex_automata::util::syntax::Config::new().utf8(false)
}

#[cfg(test)]
mod tests;
