//! Validation, escapes and type inference: from the text a client sent to a [`Shape`].
//!
//! Nothing here compiles an automaton; it only decides *what* the pattern means (SPEC
//! "Patterns"). Cost: one pass over the source, O(len) time and memory.
//!
//! Escape rules (one tokenizer for inference and globs, so the two can never disagree):
//! `\*`, `\?` and `\\` are the literal characters `*`, `?` and `\`. A backslash before any
//! other character, or at the very end, is itself a literal backslash, so keys such as
//! `C:\dir` need no escaping.
//!
//! Explicit literal types take the text verbatim: an explicit `exact` key `user:\*` is the
//! seven characters as written, because with no wildcard in play nothing needs escaping. An
//! explicit `prefix` drops one trailing `*` and an explicit `suffix` one leading `*` (SPEC: the
//! text without its `*` is the prefix or suffix itself). An explicit `glob` goes through the
//! tokenizer, and an explicit `regex` is Rust regex syntax.

use super::{PatternError, PatternLimits, PatternType};

/// One glob token after escapes are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Lit(char),
    /// `*`: any run of characters, the empty run included.
    Star,
    /// `?`: exactly one Unicode scalar value.
    Quest,
}

/// What a pattern means, before compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Glob(Vec<Token>),
    /// Rust regex syntax, the source itself.
    Regex,
}

/// SPEC's input rules shared by every type: not empty, not over the byte limit, no ASCII
/// control characters (they cannot appear in a key, so a pattern holding one is a mistake).
pub(crate) fn validate(source: &str, limits: &PatternLimits) -> Result<(), PatternError> {
    if source.is_empty() {
        return Err(PatternError::Empty);
    }
    if source.len() > limits.max_pattern_bytes {
        return Err(PatternError::TooLong {
            len: source.len(),
            max: limits.max_pattern_bytes,
        });
    }
    if source.bytes().any(|b| b.is_ascii_control()) {
        return Err(PatternError::ControlChar);
    }
    Ok(())
}

/// Resolve escapes: see the module documentation for the rules.
pub(crate) fn tokenize(source: &str) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' => Token::Star,
            '?' => Token::Quest,
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    chars.next();
                    Token::Lit(next)
                }
                _ => Token::Lit('\\'),
            },
            other => Token::Lit(other),
        };
        tokens.push(token);
    }
    tokens
}

/// Decide the type (unless `explicit` says it) and the shape of `source`.
pub(crate) fn infer(source: &str, explicit: Option<PatternType>) -> (PatternType, Shape) {
    match explicit {
        Some(PatternType::Exact) => (PatternType::Exact, Shape::Exact(source.to_string())),
        Some(PatternType::Prefix) => {
            let text = source.strip_suffix('*').unwrap_or(source);
            (PatternType::Prefix, Shape::Prefix(text.to_string()))
        }
        Some(PatternType::Suffix) => {
            let text = source.strip_prefix('*').unwrap_or(source);
            (PatternType::Suffix, Shape::Suffix(text.to_string()))
        }
        Some(PatternType::Glob) => (PatternType::Glob, Shape::Glob(tokenize(source))),
        Some(PatternType::Regex) => (PatternType::Regex, Shape::Regex),
        None => infer_from_tokens(tokenize(source)),
    }
}

/// SPEC's inference table, on tokens (so escaped wildcards never count).
fn infer_from_tokens(tokens: Vec<Token>) -> (PatternType, Shape) {
    let stars = tokens.iter().filter(|t| **t == Token::Star).count();
    let quests = tokens.iter().filter(|t| **t == Token::Quest).count();
    match (stars, quests) {
        (0, 0) => (PatternType::Exact, Shape::Exact(literal_text(&tokens))),
        // The end is tested first so that a lone `*` is a prefix matching everything.
        (1, 0) if tokens.last() == Some(&Token::Star) => {
            let text = literal_text(&tokens[..tokens.len() - 1]);
            (PatternType::Prefix, Shape::Prefix(text))
        }
        (1, 0) if tokens.first() == Some(&Token::Star) => (
            PatternType::Suffix,
            Shape::Suffix(literal_text(&tokens[1..])),
        ),
        _ => (PatternType::Glob, Shape::Glob(tokens)),
    }
}

/// The characters of a run of tokens known to hold only literals (wildcards are skipped).
fn literal_text(tokens: &[Token]) -> String {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::Lit(c) => Some(*c),
            Token::Star | Token::Quest => None,
        })
        .collect()
}

/// Merge runs of `*` (same key set, smaller automaton).
pub(crate) fn collapse_stars(tokens: &[Token]) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    for &t in tokens {
        if t == Token::Star && out.last() == Some(&Token::Star) {
            continue;
        }
        out.push(t);
    }
    out
}

/// If a glob's key set is that of an exact, prefix or suffix pattern, that simpler shape:
/// those are matched by string operations and resolved by fst ranges instead of automata.
pub(crate) fn glob_as_literal(tokens: &[Token]) -> Option<Shape> {
    let tokens = collapse_stars(tokens);
    match infer_from_tokens(tokens) {
        (_, Shape::Glob(_)) | (_, Shape::Regex) => None,
        (_, shape) => Some(shape),
    }
}

/// The literal text before a glob's first wildcard: every key it matches starts with it.
pub(crate) fn glob_literal_prefix(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map_while(|t| match t {
            Token::Lit(c) => Some(*c),
            Token::Star | Token::Quest => None,
        })
        .collect()
}

/// The literal text after a glob's last wildcard: every key it matches ends with it.
pub(crate) fn glob_literal_suffix(tokens: &[Token]) -> String {
    let mut tail: Vec<char> = tokens
        .iter()
        .rev()
        .map_while(|t| match t {
            Token::Lit(c) => Some(*c),
            Token::Star | Token::Quest => None,
        })
        .collect();
    tail.reverse();
    tail.into_iter().collect()
}

/// `?` as a byte-level class: exactly one UTF-8 encoded scalar value. Keys are valid UTF-8,
/// so lead byte + the right number of continuation bytes is one scalar.
const ONE_SCALAR: &str =
    r"(?-u:[\x00-\x7F]|[\xC0-\xDF][\x80-\xBF]|[\xE0-\xEF][\x80-\xBF]{2}|[\xF0-\xF7][\x80-\xBF]{3})";

/// `*` as a byte-level class: any bytes. A run of bytes between scalar-aligned tokens of a
/// valid UTF-8 key is itself whole scalars, so this equals "any run of characters".
const ANY_RUN: &str = r"(?s-u:.)*";

/// The anchored regex (for `syntax_config()`: `utf8(false)`) equivalent to a glob.
pub(crate) fn glob_to_regex(tokens: &[Token]) -> String {
    let mut out = String::with_capacity(tokens.len() * 2 + 2);
    out.push('^');
    let mut buf = [0u8; 4];
    for t in collapse_stars(tokens) {
        match t {
            Token::Lit(c) => regex_syntax::escape_into(c.encode_utf8(&mut buf), &mut out),
            Token::Star => out.push_str(ANY_RUN),
            Token::Quest => out.push_str(ONE_SCALAR),
        }
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inferred(s: &str) -> (PatternType, Shape) {
        infer(s, None)
    }

    #[test]
    fn escapes_resolve_only_star_question_backslash() {
        assert_eq!(tokenize(r"a\*"), vec![Token::Lit('a'), Token::Lit('*')]);
        assert_eq!(tokenize(r"\?\\"), vec![Token::Lit('?'), Token::Lit('\\')]);
        assert_eq!(tokenize(r"\d"), vec![Token::Lit('\\'), Token::Lit('d')]);
        assert_eq!(tokenize(r"x\"), vec![Token::Lit('x'), Token::Lit('\\')]);
        assert_eq!(tokenize(r"\\*"), vec![Token::Lit('\\'), Token::Star]);
    }

    #[test]
    fn inference_table() {
        assert_eq!(
            inferred("user:123"),
            (PatternType::Exact, Shape::Exact("user:123".into()))
        );
        assert_eq!(
            inferred("user:123:*"),
            (PatternType::Prefix, Shape::Prefix("user:123:".into()))
        );
        assert_eq!(
            inferred("*:profile"),
            (PatternType::Suffix, Shape::Suffix(":profile".into()))
        );
        assert_eq!(inferred("*").0, PatternType::Prefix);
        assert_eq!(inferred("*").1, Shape::Prefix(String::new()));
        assert_eq!(inferred("user:*:profile").0, PatternType::Glob);
        assert_eq!(inferred("user:?23").0, PatternType::Glob);
        assert_eq!(inferred("user:*?").0, PatternType::Glob);
        assert_eq!(inferred("**").0, PatternType::Glob);
        assert_eq!(inferred("*a*").0, PatternType::Glob);
        assert_eq!(inferred("?").0, PatternType::Glob);
        assert_eq!(inferred("a?*").0, PatternType::Glob);
    }

    #[test]
    fn escaped_wildcards_do_not_count_for_inference() {
        assert_eq!(
            inferred(r"user:\*"),
            (PatternType::Exact, Shape::Exact("user:*".into()))
        );
        assert_eq!(
            inferred(r"a\?b"),
            (PatternType::Exact, Shape::Exact("a?b".into()))
        );
        assert_eq!(
            inferred(r"\**"),
            (PatternType::Prefix, Shape::Prefix("*".into()))
        );
        assert_eq!(
            inferred(r"*\*"),
            (PatternType::Suffix, Shape::Suffix("*".into()))
        );
        assert_eq!(
            inferred(r"C:\dir"),
            (PatternType::Exact, Shape::Exact(r"C:\dir".into()))
        );
    }

    #[test]
    fn explicit_type_wins() {
        let exact = infer("a*b", Some(PatternType::Exact));
        assert_eq!(exact, (PatternType::Exact, Shape::Exact("a*b".into())));
        let verbatim = infer(r"user:\*", Some(PatternType::Exact));
        assert_eq!(verbatim.1, Shape::Exact(r"user:\*".into()));
        assert_eq!(
            infer("user:", Some(PatternType::Prefix)).1,
            Shape::Prefix("user:".into())
        );
        assert_eq!(
            infer("user:*", Some(PatternType::Prefix)).1,
            Shape::Prefix("user:".into())
        );
        assert_eq!(
            infer("a**", Some(PatternType::Prefix)).1,
            Shape::Prefix("a*".into())
        );
        assert_eq!(
            infer(":p", Some(PatternType::Suffix)).1,
            Shape::Suffix(":p".into())
        );
        assert_eq!(
            infer("*:p", Some(PatternType::Suffix)).1,
            Shape::Suffix(":p".into())
        );
        assert_eq!(
            infer("*", Some(PatternType::Suffix)).1,
            Shape::Suffix(String::new())
        );
        assert_eq!(infer("abc", Some(PatternType::Glob)).0, PatternType::Glob);
        assert_eq!(
            infer("abc", Some(PatternType::Regex)),
            (PatternType::Regex, Shape::Regex)
        );
    }

    #[test]
    fn validation() {
        let limits = PatternLimits {
            max_pattern_bytes: 4,
            max_regex_bytes: 1 << 20,
        };
        assert_eq!(validate("", &limits), Err(PatternError::Empty));
        assert_eq!(
            validate("abcde", &limits),
            Err(PatternError::TooLong { len: 5, max: 4 })
        );
        assert_eq!(validate("a\nb", &limits), Err(PatternError::ControlChar));
        assert_eq!(validate("a\u{7f}", &limits), Err(PatternError::ControlChar));
        assert_eq!(validate("é", &limits), Ok(()));
    }

    #[test]
    fn glob_helpers() {
        let t = tokenize("user:*:p?");
        assert_eq!(glob_literal_prefix(&t), "user:");
        assert_eq!(glob_literal_suffix(&tokenize("a*:pé")), ":pé");
        assert_eq!(glob_literal_suffix(&tokenize("a*")), "");
        assert_eq!(
            glob_as_literal(&tokenize("ab**")),
            Some(Shape::Prefix("ab".into()))
        );
        assert_eq!(
            glob_as_literal(&tokenize("**ab")),
            Some(Shape::Suffix("ab".into()))
        );
        assert_eq!(
            glob_as_literal(&tokenize("ab")),
            Some(Shape::Exact("ab".into()))
        );
        assert_eq!(glob_as_literal(&tokenize("a*b")), None);
        assert_eq!(glob_to_regex(&tokenize("a.**")), format!("^a\\.{ANY_RUN}$"));
    }
}
