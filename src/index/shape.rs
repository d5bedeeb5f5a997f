//! What the indexes need to know about a [`Pattern`]: which class its matcher is in, its
//! literal text (exact key, prefix or suffix), the literal every key it matches starts with,
//! and, for globs and regexes, a regex source for the multi-pattern DFA.
//!
//! This is the only file of the index that looks at a pattern's insides; the pattern engine
//! owns parsing, escapes and inference, and these functions only read its answers. The class
//! is the *effective* one: a glob such as `user:*` sent with an explicit `glob` type has the
//! key set of a prefix and is indexed as one.

use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::pattern::{Pattern, PatternType};

/// The class of a pattern's matcher, with its literal for the three literal classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape<'a> {
    /// Exactly this key.
    Exact(&'a str),
    /// Every key starting with this text (the text itself included).
    Prefix(&'a str),
    /// Every key ending with this text.
    Suffix(&'a str),
    /// A glob or a regex: matched by automaton.
    Auto,
}

pub(crate) fn shape(p: &Pattern) -> Shape<'_> {
    match (p.effective_kind(), p.effective_literal()) {
        (PatternType::Exact, Some(l)) => Shape::Exact(l),
        (PatternType::Prefix, Some(l)) => Shape::Prefix(l),
        (PatternType::Suffix, Some(l)) => Shape::Suffix(l),
        _ => Shape::Auto,
    }
}

/// A regex source for a glob or regex pattern, matching exactly its keys when run anchored,
/// and whether that source is byte-level (valid on every key even when compiled with Unicode
/// off: the pattern engine writes globs with explicit byte classes) or a user regex (Unicode
/// semantics; see `automata.rs` for when a byte DFA may stand in for it).
pub(crate) fn regex_source(p: &Pattern) -> Option<(&str, bool)> {
    let source = p.regex_source()?;
    Some((source, p.kind() == PatternType::Glob))
}

/// Text every key matched by `p` starts with (possibly empty).
pub(crate) fn literal_prefix(p: &Pattern) -> &str {
    p.literal_prefix()
}

/// Bytes every key matched by `p` ends with (possibly empty): the literal of an exact key or
/// a suffix; for a glob or regex the longest common suffix of the literals regex-syntax
/// extracts from its regex source ("" when extraction gives up). Sound because a finite
/// extracted suffix sequence holds a suffix of every match. Costs a parse: call it once per
/// pattern, not per key.
pub(crate) fn literal_suffix(p: &Pattern) -> Vec<u8> {
    match shape(p) {
        Shape::Exact(literal) | Shape::Suffix(literal) => literal.as_bytes().to_vec(),
        Shape::Prefix(_) => Vec::new(),
        Shape::Auto => {
            let Some(source) = p.regex_source() else {
                return Vec::new();
            };
            let parser = regex_syntax::ParserBuilder::new()
                .utf8(false)
                .build()
                .parse(source);
            let Ok(hir) = parser else { return Vec::new() };
            let seq = Extractor::new().kind(ExtractKind::Suffix).extract(&hir);
            seq.longest_common_suffix()
                .map(<[u8]>::to_vec)
                .unwrap_or_default()
        }
    }
}

/// Whether two literal prefixes (or, with `suffix`, literal suffixes) allow a common key: one
/// must extend the other.
pub(crate) fn comparable(a: &[u8], b: &[u8], suffix: bool) -> bool {
    if suffix {
        a.ends_with(b) || b.ends_with(a)
    } else {
        a.starts_with(b) || b.starts_with(a)
    }
}
