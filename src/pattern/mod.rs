//! Pattern parsing, type inference and compiled matchers (SPEC "Patterns").
//!
//! OWNER: pattern helper. This file currently holds the public API the rest of the crate codes
//! against; the implementation fills it in without changing the signatures.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
    pub max_pattern_bytes: usize,
    pub max_regex_bytes: usize,
}

impl Default for PatternLimits {
    fn default() -> Self {
        PatternLimits { max_pattern_bytes: 1024, max_regex_bytes: 1 << 20 }
    }
}

/// Why a pattern was refused. Maps to 400 `invalid_pattern` (or `validation_failed` for
/// empty / too long).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern must not be empty")]
    Empty,
    #[error("pattern is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("pattern contains an ASCII control character")]
    ControlChar,
    #[error("invalid pattern: {0}")]
    Invalid(String),
    #[error("pattern exceeds the compiled size limit of {limit} bytes: {message}")]
    TooBig { limit: usize, message: String },
}

/// A parsed and compiled pattern. Immutable and cheap to share (`Arc`).
#[derive(Debug)]
pub struct Pattern {
    source: String,
    kind: PatternType,
}

impl Pattern {
    /// Parse `source`, infer its type unless `explicit` is given, and compile it.
    pub fn parse(
        source: &str,
        explicit: Option<PatternType>,
        limits: &PatternLimits,
    ) -> Result<Pattern, PatternError> {
        let _ = limits;
        Ok(Pattern { source: source.to_string(), kind: explicit.unwrap_or(PatternType::Exact) })
    }

    /// The pattern as the client wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn kind(&self) -> PatternType {
        self.kind
    }

    /// Whether `key` is in this pattern's key set (whole-key semantics).
    pub fn is_match(&self, key: &str) -> bool {
        key == self.source
    }

    /// True only if every key this pattern can match starts with `prefix`.
    pub fn confined_to(&self, prefix: &str) -> bool {
        self.source.starts_with(prefix)
    }

    /// False only when no key can match both patterns (exact, prefix and suffix against each
    /// other are decided exactly; glob and regex may answer true when unsure).
    pub fn may_overlap(&self, other: &Pattern) -> bool {
        let _ = other;
        true
    }
}

/// Bounded LRU of compiled patterns, keyed by (source, explicit type).
pub struct PatternCache {
    limits: PatternLimits,
}

/// Counters of the compiled-pattern cache.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub size: u64,
}

impl PatternCache {
    pub fn new(capacity: usize, limits: PatternLimits) -> PatternCache {
        let _ = capacity;
        PatternCache { limits }
    }

    pub fn get(&self, source: &str, explicit: Option<PatternType>) -> Result<Arc<Pattern>, PatternError> {
        Pattern::parse(source, explicit, &self.limits).map(Arc::new)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats::default()
    }
}
