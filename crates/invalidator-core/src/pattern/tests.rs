//! SPEC "Patterns", sentence by sentence, and property tests against reference matchers.

use std::collections::BTreeSet;

use proptest::prelude::*;
use regex_automata::{Anchored, Input, meta};

use super::*;

fn p(source: &str) -> Pattern {
    Pattern::parse(source, None, &PatternLimits::default()).unwrap()
}

fn px(source: &str, kind: PatternType) -> Pattern {
    Pattern::parse(source, Some(kind), &PatternLimits::default()).unwrap()
}

fn err(source: &str, kind: Option<PatternType>) -> PatternError {
    Pattern::parse(source, kind, &PatternLimits::default()).unwrap_err()
}

// ---- The table -------------------------------------------------------------------------

#[test]
fn row_exact() {
    let pat = p("user:123");
    assert_eq!(pat.kind(), PatternType::Exact);
    assert!(pat.is_match("user:123"));
    assert!(!pat.is_match("user:1234"));
    assert!(!pat.is_match("user:12"));
    assert_eq!(pat.literal(), Some("user:123"));
    assert_eq!(pat.regex_source(), None);
}

#[test]
fn row_prefix_includes_the_empty_rest() {
    let pat = p("user:123:*");
    assert_eq!(pat.kind(), PatternType::Prefix);
    assert!(pat.is_match("user:123:"));
    assert!(pat.is_match("user:123:profile"));
    assert!(!pat.is_match("user:123"));
    assert!(!pat.is_match("xuser:123:a"));
    assert_eq!(pat.literal(), Some("user:123:"));
}

#[test]
fn row_suffix() {
    let pat = p("*:profile");
    assert_eq!(pat.kind(), PatternType::Suffix);
    assert!(pat.is_match("user:1:profile"));
    assert!(pat.is_match(":profile"));
    assert!(!pat.is_match("user:1:profile2"));
    assert_eq!(pat.literal(), Some(":profile"));
    assert_eq!(pat.literal_prefix(), "");
}

#[test]
fn row_glob() {
    let star = p("user:*:profile");
    assert_eq!(star.kind(), PatternType::Glob);
    assert!(star.is_match("user:123:profile"));
    assert!(star.is_match("user::profile"));
    assert!(star.is_match("user:a:b:profile"));
    assert!(!star.is_match("user:123:profile:x"));
    assert!(!star.is_match("admin:123:profile"));
    let quest = p("user:?23");
    assert_eq!(quest.kind(), PatternType::Glob);
    assert!(quest.is_match("user:123"));
    assert!(quest.is_match("user:é23"));
    assert!(!quest.is_match("user:23"));
    assert!(!quest.is_match("user:1123"));
    assert!(quest.regex_source().is_some());
    assert_eq!(quest.literal(), None);
}

#[test]
fn row_regex() {
    let pat = px("user:[0-9]+:(profile|settings)", PatternType::Regex);
    assert_eq!(pat.kind(), PatternType::Regex);
    assert!(pat.is_match("user:42:profile"));
    assert!(pat.is_match("user:42:settings"));
    assert!(!pat.is_match("user::profile"));
    assert!(!pat.is_match("user:42:profiles"));
    assert!(!pat.is_match("xuser:42:profile"));
    assert_eq!(pat.literal_prefix(), "user:");
}

#[test]
fn regex_is_never_inferred() {
    assert_eq!(p("user:[0-9]+").kind(), PatternType::Exact);
    assert_eq!(p("a.b").kind(), PatternType::Exact);
    assert!(p("a.b").is_match("a.b"));
    assert!(!p("a.b").is_match("axb"));
}

// ---- The paragraph under the table -----------------------------------------------------

#[test]
fn explicit_type_always_wins() {
    let exact = px("a*b", PatternType::Exact);
    assert!(exact.is_match("a*b"));
    assert!(!exact.is_match("axb"));
    assert_eq!(exact.literal(), Some("a*b"));
    let glob = px("user:1", PatternType::Glob);
    assert_eq!(glob.kind(), PatternType::Glob);
    assert_eq!(glob.effective_kind(), PatternType::Exact);
    assert!(glob.is_match("user:1"));
    let glob_prefix = px("user:*", PatternType::Glob);
    assert_eq!(
        (glob_prefix.kind(), glob_prefix.effective_kind()),
        (PatternType::Glob, PatternType::Prefix)
    );
    assert!(glob_prefix.is_match("user:x"));
    let regex = px("user:1", PatternType::Regex);
    assert!(regex.is_match("user:1"));
}

#[test]
fn explicit_prefix_or_suffix_without_its_star_is_the_text_itself() {
    let pre = px("user:", PatternType::Prefix);
    assert!(pre.is_match("user:1") && pre.is_match("user:") && !pre.is_match("use"));
    let pre_star = px("user:*", PatternType::Prefix);
    assert_eq!(pre_star.literal(), Some("user:"));
    let suf = px(":profile", PatternType::Suffix);
    assert!(suf.is_match("a:profile") && !suf.is_match("a:profil"));
    let suf_star = px("*:profile", PatternType::Suffix);
    assert_eq!(suf_star.literal(), Some(":profile"));
}

#[test]
fn lone_star_is_a_prefix_matching_every_key() {
    let all = p("*");
    assert_eq!(all.kind(), PatternType::Prefix);
    assert_eq!(all.literal(), Some(""));
    for key in ["", "a", "user:1", "é"] {
        assert!(all.is_match(key));
    }
}

#[test]
fn escaped_wildcards_are_literal_characters() {
    let pat = p(r"user:\*");
    assert_eq!(pat.kind(), PatternType::Exact);
    assert!(pat.is_match("user:*"));
    assert!(!pat.is_match("user:x"));
    assert!(!pat.is_match(r"user:\*"));
    let q = p(r"what\?");
    assert!(q.is_match("what?") && !q.is_match("whatx"));
    // In a glob, escaped wildcards match that character alone.
    let glob = p(r"a\*b*");
    assert_eq!(glob.kind(), PatternType::Prefix);
    assert!(glob.is_match("a*bzz") && !glob.is_match("axbzz"));
    let glob2 = p(r"*\?x?");
    assert_eq!(glob2.kind(), PatternType::Glob);
    assert!(glob2.is_match("zz?xé") && !glob2.is_match("zzaxé"));
    let backslash = p(r"a\\*");
    assert_eq!(backslash.literal(), Some("a\\"));
    // On the wire the escaped exact key is the key itself, with an explicit type.
    assert_eq!(
        (pat.canonical(), pat.kind()),
        ("user:*", PatternType::Exact)
    );
    assert_eq!(
        (glob.canonical(), glob.kind()),
        ("a*b*", PatternType::Prefix)
    );
}

#[test]
fn question_mark_is_one_scalar_value_not_a_byte() {
    let pat = p("a?b");
    assert!(pat.is_match("aéb"));
    assert!(pat.is_match("a€b"));
    assert!(pat.is_match("a😀b"));
    assert!(pat.is_match("axb"));
    assert!(!pat.is_match("ab"));
    assert!(!pat.is_match("aééb"));
    let two = p("??");
    assert!(two.is_match("éé") && two.is_match("ab") && !two.is_match("é") && !two.is_match("abc"));
}

#[test]
fn regex_is_implicitly_anchored_and_accepts_anchors() {
    let pat = px("b", PatternType::Regex);
    assert!(pat.is_match("b") && !pat.is_match("abc") && !pat.is_match("ab"));
    let anchored = px("^a.c$", PatternType::Regex);
    assert!(anchored.is_match("abc") && anchored.is_match("aéc") && !anchored.is_match("xabc"));
    let start_only = px("^ab", PatternType::Regex);
    assert!(start_only.is_match("ab") && !start_only.is_match("abc"));
    // Leftmost-first would stop at `a`; the whole key `ab` must still match.
    let alt = px("a|ab", PatternType::Regex);
    assert!(alt.is_match("ab") && alt.is_match("a") && !alt.is_match("abb"));
    assert_eq!(alt.regex_source(), Some("^(?:a|ab)$"));
}

#[test]
fn regex_unicode_semantics() {
    let word = px(r"\w+", PatternType::Regex);
    assert!(word.is_match("héllo") && !word.is_match("a b"));
    let ci = px("(?i)user:é", PatternType::Regex);
    assert!(ci.is_match("USER:É"));
    let wb = px(r"a\b.*", PatternType::Regex);
    assert!(wb.is_match("a é") && !wb.is_match("aé") && wb.is_match("a"));
}

#[test]
fn regex_with_trailing_comment_stays_anchored() {
    let pat = px("(?x) a b # trailing comment", PatternType::Regex);
    assert!(pat.is_match("ab") && !pat.is_match("abc"));
    let source = pat.regex_source().unwrap();
    let re = meta::Builder::new()
        .syntax(syntax_config())
        .build(source)
        .unwrap();
    assert!(re.is_match("ab") && !re.is_match("xab") && !re.is_match("abx"));
}

#[test]
fn regex_source_compiles_with_the_documented_config() {
    for (src, kind, yes, no) in [
        ("user:*:p?", None, "user:1:pé", "user:1:pxx"),
        ("a|ab", Some(PatternType::Regex), "ab", "abc"),
        ("*x*", None, "éxé", "éé"),
    ] {
        let pat = Pattern::parse(src, kind, &PatternLimits::default()).unwrap();
        let re = meta::Builder::new()
            .syntax(syntax_config())
            .build(pat.regex_source().unwrap())
            .unwrap();
        assert!(re.is_match(yes), "{src} {yes}");
        assert!(!re.is_match(no), "{src} {no}");
    }
}

#[test]
fn bad_regex_is_invalid_with_the_compiler_message() {
    match err("user:(", Some(PatternType::Regex)) {
        PatternError::Invalid(msg) => {
            assert!(msg.contains("unclosed group"), "{msg}");
            assert!(!msg.contains('\n'));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err("a{2,1}", Some(PatternType::Regex)),
        PatternError::Invalid(_)
    ));
    assert!(matches!(
        err(r"(?-u:\xFF)", Some(PatternType::Regex)),
        PatternError::Invalid(_)
    ));
    assert!(!err("(", Some(PatternType::Regex)).is_validation());
}

#[test]
fn huge_regexes_are_too_big() {
    for huge in [
        r"\w{500}",
        r"[a-z]{1000}{100}",
        r"(\w+\s+){50}\w",
        "(?:a{1000}){1000}",
    ] {
        match err(huge, Some(PatternType::Regex)) {
            PatternError::TooBig { limit, message } => {
                assert_eq!(limit, 1 << 20);
                assert!(!message.is_empty());
            }
            PatternError::Invalid(msg) => panic!("{huge}: Invalid({msg})"),
            other => panic!("{huge}: {other:?}"),
        }
    }
    // A repeated star collapses to a tiny DFA: big to write, small to run, so it is accepted.
    let collapsing = px("(a|b|c)*{1000}", PatternType::Regex);
    assert!(collapsing.is_match("abcabc") && !collapsing.is_match("abd"));
    assert!(collapsing.memory_usage() < 64 << 10);
    // An exponential DFA over a small NFA is matched by the lazy DFA instead of refused.
    let exponential = px("(a|b|c)*a(a|b|c){30}", PatternType::Regex);
    let key = format!("ccca{}", "b".repeat(30));
    assert!(exponential.is_match(&key) && !exponential.is_match(&key[..key.len() - 1]));
    let small = PatternLimits {
        max_pattern_bytes: 1024,
        max_regex_bytes: 64,
    };
    let e = Pattern::parse("*a?????????", None, &small).unwrap_err();
    assert!(matches!(e, PatternError::TooBig { .. }), "{e:?}");
}

#[test]
fn dense_too_big_falls_back_to_a_lazy_dfa() {
    let pat = px(r"s:\w{32}", PatternType::Regex);
    let key = format!("s:{}", "é".repeat(31) + "a");
    assert!(pat.is_match(&key));
    assert!(!pat.is_match(&format!("s:{}", "a".repeat(31))));
    assert!(!pat.is_match(&format!("s:{}-", "a".repeat(31))));
    let keys: BTreeSet<String> = [
        key.clone(),
        "s:x".into(),
        format!("s:{}", "b".repeat(32)),
        "t:1".into(),
    ]
    .into_iter()
    .collect();
    let (f, r) = sets(&keys);
    assert_eq!(pat.fst_search(&f, &r, None).count, 2);
    assert!(pat.may_overlap(&p("s:*")));
    assert_eq!(pat.dense_dfa_bytes(), None);
    assert!(p("a*b").dense_dfa_bytes().is_some_and(|b| b > 0));
    assert_eq!(p("a*").dense_dfa_bytes(), None);
    assert!(!pat.may_overlap(&p("t:*")), "decided by literal prefixes");
    let glob = with_lazy(|| p("a*b?c"));
    assert!(glob.is_match("axxbéc") && !glob.is_match("abc"));
    assert!(glob.may_overlap(&p("a*")));
}

#[test]
fn input_rules() {
    assert_eq!(err("", None), PatternError::Empty);
    assert_eq!(err("", Some(PatternType::Regex)), PatternError::Empty);
    let long = "a".repeat(1025);
    assert_eq!(
        err(&long, None),
        PatternError::TooLong {
            len: 1025,
            max: 1024
        }
    );
    assert!(Pattern::parse(&"a".repeat(1024), None, &PatternLimits::default()).is_ok());
    assert_eq!(err("a\tb", None), PatternError::ControlChar);
    assert_eq!(
        err("a\u{0}", Some(PatternType::Exact)),
        PatternError::ControlChar
    );
    assert!(err("", None).is_validation() && err("a\tb", None).is_validation());
}

// ---- confined_to, literal_prefix, may_overlap -----------------------------------------

#[test]
fn confined_to_per_type() {
    assert!(p("orders:1").confined_to("orders:"));
    assert!(!p("order").confined_to("orders:"));
    assert!(p("orders:*").confined_to("orders:"));
    assert!(p("orders:1*").confined_to("orders:"));
    assert!(!p("orders*").confined_to("orders:"));
    assert!(!p("*:orders").confined_to("orders:"));
    assert!(p("*:orders").confined_to(""));
    assert!(p("orders:*:x").confined_to("orders:"));
    assert!(!p("orders?:*").confined_to("orders:"));
    assert!(!p("*").confined_to("orders:"));
    let re = |s: &str| px(s, PatternType::Regex);
    assert!(re("orders:[0-9]+").confined_to("orders:"));
    assert!(re("^orders:(a|b)").confined_to("orders:"));
    assert!(re("orders:a|orders:b").confined_to("orders:"));
    assert!(!re("orders:a|other").confined_to("orders:"));
    assert!(!re(".*orders:").confined_to("orders:"));
    assert!(!re("(?i)orders:").confined_to("orders:"));
    assert!(re("(?i)orders:").confined_to(""));
}

#[test]
fn literal_prefix_is_cut_at_a_char_boundary() {
    let re = px("(é|è)x", PatternType::Regex);
    assert_eq!(re.literal_prefix(), "");
    assert_eq!(px("abé+", PatternType::Regex).literal_prefix(), "abé");
    assert_eq!(p("ab?c*").literal_prefix(), "ab");
}

#[test]
fn literal_suffix_per_type() {
    assert_eq!(p("a*:pé").literal_suffix(), ":pé");
    assert_eq!(p("*:x").literal_suffix(), ":x");
    assert_eq!(p("x:*").literal_suffix(), "");
    assert_eq!(p("x:1").literal_suffix(), "x:1");
    assert_eq!(px("(a|b)xyz", PatternType::Regex).literal_suffix(), "xyz");
    assert_eq!(px("(aé|bé)", PatternType::Regex).literal_suffix(), "é");
    // U+00E9 and U+01E9 share only their last byte: cut forward to a boundary.
    assert_eq!(px("(é|ǩ)", PatternType::Regex).literal_suffix(), "");
}

#[test]
fn may_overlap_literal_types_are_exact() {
    assert!(p("user:1").may_overlap(&p("user:*")));
    assert!(!p("user:1").may_overlap(&p("order:*")));
    assert!(p("user:*").may_overlap(&p("user:1:*")));
    assert!(!p("user:*").may_overlap(&p("order:*")));
    assert!(p("*:a").may_overlap(&p("*x:a")));
    assert!(!p("*:a").may_overlap(&p("*:b")));
    assert!(p("user:*").may_overlap(&p("*:profile")));
    assert!(p("user:1").may_overlap(&p("user:1")));
    assert!(!p("user:1").may_overlap(&p("user:2")));
}

#[test]
fn may_overlap_with_automata() {
    let re = |s: &str| px(s, PatternType::Regex);
    assert!(!re("user:[0-9]+").may_overlap(&p("user:a*")));
    assert!(re("user:[0-9]+").may_overlap(&p("user:1*")));
    assert!(!re("user:[0-9]+").may_overlap(&p("*:x")));
    assert!(re("user:[0-9]+").may_overlap(&p("*9")));
    assert!(!p("a*b").may_overlap(&p("b*a")));
    assert!(p("a*b").may_overlap(&p("*b*")));
    assert!(!re("[a-c]+").may_overlap(&re("[d-f]+")));
    assert!(re("[a-c]+x").may_overlap(&re("c+[x-z]")));
    assert!(!p("?").may_overlap(&p("??")));
    assert!(re(r"a\b.*").may_overlap(&p("a*")));
}

// ---- fst -------------------------------------------------------------------------------

fn sets(keys: &BTreeSet<String>) -> (::fst::Set<Vec<u8>>, ::fst::Set<Vec<u8>>) {
    let forward = ::fst::Set::from_iter(keys.iter()).unwrap();
    let mut rev: Vec<Vec<u8>> = keys.iter().map(|k| k.bytes().rev().collect()).collect();
    rev.sort();
    rev.dedup();
    let reversed = ::fst::Set::from_iter(rev).unwrap();
    (forward, reversed)
}

#[test]
fn fst_search_per_type() {
    let keys: BTreeSet<String> = [
        "user:1:profile",
        "user:1:settings",
        "user:2:profile",
        "order:9",
        "user:10",
        "é:profile",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let (f, r) = sets(&keys);
    assert_eq!(
        p("user:1:profile").fst_matches(&f, &r, None),
        vec!["user:1:profile"]
    );
    assert!(p("user:3").fst_matches(&f, &r, None).is_empty());
    // Byte order: '0' (0x30) sorts before ':' (0x3A).
    assert_eq!(
        p("user:1*").fst_matches(&f, &r, None),
        vec!["user:10", "user:1:profile", "user:1:settings"]
    );
    assert_eq!(
        p("*:profile").fst_matches(&f, &r, None),
        vec!["user:1:profile", "user:2:profile", "é:profile"]
    );
    assert_eq!(
        p("user:?:*").fst_matches(&f, &r, Some(2)),
        vec!["user:1:profile", "user:1:settings"]
    );
    let all = p("user:?:*").fst_search(&f, &r, Some(2));
    assert_eq!(all.count, 3);
    assert_eq!(p("*").fst_count(&f, &r), 6);
    assert_eq!(px("*", PatternType::Suffix).fst_count(&f, &r), 6);
    let re = px("user:[0-9]+", PatternType::Regex);
    assert_eq!(re.fst_matches(&f, &r, None), vec!["user:10"]);
    // No literal prefix, a literal suffix: resolved from the reversed set, then verified.
    let leading = p("*?:profile");
    assert_eq!(
        leading.fst_matches(&f, &r, None),
        vec!["user:1:profile", "user:2:profile", "é:profile"]
    );
    assert_eq!(
        p("*1?profile").fst_matches(&f, &r, None),
        vec!["user:1:profile"]
    );
}

// ---- Property tests ----------------------------------------------------------------------

/// Naive glob matcher on Unicode scalars (the reference).
fn glob_reference(tokens: &[parse::Token], key: &[char]) -> bool {
    use parse::Token;
    match tokens.split_first() {
        None => key.is_empty(),
        Some((Token::Lit(c), rest)) => key.first() == Some(c) && glob_reference(rest, &key[1..]),
        Some((Token::Quest, rest)) => !key.is_empty() && glob_reference(rest, &key[1..]),
        Some((Token::Star, rest)) => (0..=key.len()).any(|i| glob_reference(rest, &key[i..])),
    }
}

/// Reference for any pattern: the table applied by hand.
fn reference_match(source: &str, explicit: Option<PatternType>, key: &str) -> bool {
    let (_, shape) = parse::infer(source, explicit);
    match shape {
        parse::Shape::Exact(s) => key == s,
        parse::Shape::Prefix(s) => key.starts_with(&s),
        parse::Shape::Suffix(s) => key.ends_with(&s),
        parse::Shape::Glob(tokens) => glob_reference(&tokens, &key.chars().collect::<Vec<_>>()),
        parse::Shape::Regex => meta::Regex::new(&format!("^(?:{source})$"))
            .map(|re| re.is_match(Input::new(key).anchored(Anchored::Yes)))
            .unwrap_or(false),
    }
}

fn key_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('b'), Just(':'), Just('é')],
        0..7,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn glob_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => prop_oneof![Just("a"), Just("b"), Just(":"), Just("é")],
            2 => Just("*"),
            2 => Just("?"),
            1 => prop_oneof![Just(r"\*"), Just(r"\?"), Just(r"\\"), Just("\\")],
        ],
        1..6,
    )
    .prop_map(|parts| parts.concat())
}

fn regex_strategy() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just(":".to_string()),
        Just("é".to_string()),
        Just(".".to_string()),
        Just("[aé]".to_string()),
        Just("[^:]".to_string()),
    ];
    atom.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(?:{a}|{b})")),
            inner.clone().prop_map(|a| format!("(?:{a})*")),
            inner.clone().prop_map(|a| format!("(?:{a})+")),
            inner.prop_map(|a| format!("(?:{a})?")),
        ]
    })
}

/// Any pattern: inferred globs/literals, explicit literal types, or a regex.
fn pattern_strategy() -> impl Strategy<Value = (String, Option<PatternType>)> {
    prop_oneof![
        3 => glob_strategy().prop_map(|g| (g, None)),
        1 => (glob_strategy(), prop_oneof![
            Just(PatternType::Exact), Just(PatternType::Prefix), Just(PatternType::Suffix), Just(PatternType::Glob)
        ]).prop_map(|(g, t)| (g, Some(t))),
        2 => regex_strategy().prop_map(|r| (r, Some(PatternType::Regex))),
    ]
}

/// Every key of length up to 4 over the test alphabet (341 keys).
fn universe() -> Vec<String> {
    let alphabet = ["a", "b", ":", "é"];
    let mut all = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for k in &frontier {
            for c in alphabet {
                next.push(format!("{k}{c}"));
            }
        }
        all.extend(next.iter().cloned());
        frontier = next;
    }
    all
}

/// Build with the lazy DFA standing in for the dense one, as for a pattern too big for it.
fn with_lazy<T>(f: impl FnOnce() -> T) -> T {
    compile::tests::FORCE_LAZY.with(|c| c.set(true));
    let out = f();
    compile::tests::FORCE_LAZY.with(|c| c.set(false));
    out
}

fn parse_any(source: &str, explicit: Option<PatternType>) -> Pattern {
    Pattern::parse(source, explicit, &PatternLimits::default()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// What crosses the wire (`canonical` with the explicit `kind`) means the same pattern on
    /// the receiving side, escapes and wildcard-looking literal keys included.
    #[test]
    fn canonical_form_reparses_to_the_same_key_set(
        (source, explicit) in pattern_strategy(),
        keys in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just('a'), Just('*'), Just('?'), Just('\\'), Just(':'), Just('é')], 0..6)
                .prop_map(|cs| cs.into_iter().collect::<String>()),
            1..30,
        ),
    ) {
        let pat = parse_any(&source, explicit);
        let again = Pattern::parse(pat.canonical(), Some(pat.kind()), &PatternLimits::default())
            .expect("the canonical form parses");
        prop_assert_eq!(again.kind(), pat.kind());
        prop_assert_eq!(again.canonical(), pat.canonical());
        for key in keys {
            prop_assert_eq!(again.is_match(&key), pat.is_match(&key), "{} {:?} -> {} on {}", source, explicit, pat.canonical(), key);
        }
    }

    #[test]
    fn matches_the_reference((source, explicit) in pattern_strategy(), keys in proptest::collection::vec(key_strategy(), 1..20)) {
        let pat = parse_any(&source, explicit);
        for key in keys {
            prop_assert_eq!(pat.is_match(&key), reference_match(&source, explicit, &key), "{} {:?} {}", source, explicit, key);
        }
    }

    #[test]
    fn matches_the_reference_on_the_universe((source, explicit) in pattern_strategy()) {
        let pat = parse_any(&source, explicit);
        for key in universe() {
            prop_assert_eq!(pat.is_match(&key), reference_match(&source, explicit, &key), "{} {:?} {}", source, explicit, key);
        }
    }

    #[test]
    fn may_overlap_is_never_wrongly_false(a in pattern_strategy(), b in pattern_strategy()) {
        let (pa, pb) = (parse_any(&a.0, a.1), parse_any(&b.0, b.1));
        if !pa.may_overlap(&pb) {
            for key in universe() {
                prop_assert!(!(pa.is_match(&key) && pb.is_match(&key)), "{:?} {:?} both match {}", a, b, key);
            }
        }
        prop_assert_eq!(pa.may_overlap(&pb), pb.may_overlap(&pa));
    }

    #[test]
    fn may_overlap_is_exact_between_literal_types(
        a in "[ab:é]{0,2}", b in "[ab:é]{0,2}",
        ta in prop_oneof![Just(PatternType::Exact), Just(PatternType::Prefix), Just(PatternType::Suffix)],
        tb in prop_oneof![Just(PatternType::Exact), Just(PatternType::Prefix), Just(PatternType::Suffix)],
    ) {
        prop_assume!(!a.is_empty() && !b.is_empty());
        let (pa, pb) = (px(&a, ta), px(&b, tb));
        let witness = universe().into_iter().any(|k| pa.is_match(&k) && pb.is_match(&k));
        prop_assert_eq!(pa.may_overlap(&pb), witness, "{} {:?} / {} {:?}", a, ta, b, tb);
    }

    #[test]
    fn confined_to_is_sound((source, explicit) in pattern_strategy(), prefix in "[ab:é]{0,3}") {
        let pat = parse_any(&source, explicit);
        if pat.confined_to(&prefix) {
            for key in universe() {
                prop_assert!(!pat.is_match(&key) || key.starts_with(&prefix), "{} matches {}", source, key);
            }
        }
        for key in universe() {
            prop_assert!(!pat.is_match(&key) || key.starts_with(pat.literal_prefix()));
            prop_assert!(!pat.is_match(&key) || key.ends_with(pat.literal_suffix()));
        }
    }

    #[test]
    fn lazy_dfa_matches_the_reference((source, explicit) in pattern_strategy(), keys in proptest::collection::btree_set(key_strategy(), 0..40)) {
        let pat = with_lazy(|| parse_any(&source, explicit));
        let (f, r) = sets(&keys);
        let expected: Vec<String> = keys.iter().filter(|k| reference_match(&source, explicit, k)).cloned().collect();
        for key in &keys {
            prop_assert_eq!(pat.is_match(key), expected.contains(key), "{} {:?} {}", source, explicit, key);
        }
        prop_assert_eq!(pat.fst_matches(&f, &r, None), expected);
    }

    #[test]
    fn fst_matches_equal_a_linear_scan(
        (source, explicit) in pattern_strategy(),
        keys in proptest::collection::btree_set(key_strategy(), 0..60),
        limit in proptest::option::of(0usize..5),
    ) {
        let pat = parse_any(&source, explicit);
        let (f, r) = sets(&keys);
        let expected: Vec<String> = keys.iter().filter(|k| pat.is_match(k)).cloned().collect();
        let found = pat.fst_search(&f, &r, limit);
        prop_assert_eq!(found.count, expected.len() as u64);
        let capped: Vec<String> = expected.iter().take(limit.unwrap_or(usize::MAX)).cloned().collect();
        prop_assert_eq!(&found.keys, &capped);
        prop_assert_eq!(pat.fst_matches(&f, &r, limit), capped);
        prop_assert_eq!(pat.fst_count(&f, &r), expected.len() as u64);
    }
}

#[test]
#[ignore = "prints sizes for the documentation"]
fn print_sizes() {
    for (s, t) in [
        ("user:*:profile", None),
        ("user:?23", None),
        (r"user:\w+", Some(PatternType::Regex)),
        (r"user:[0-9]+:(profile|settings)", Some(PatternType::Regex)),
        (r".*", Some(PatternType::Regex)),
        (r"\w{20}", Some(PatternType::Regex)),
        (r"user:\w{6}:settings", Some(PatternType::Regex)),
        (r"user:\w{10}", Some(PatternType::Regex)),
        (r"\w{50}", Some(PatternType::Regex)),
        (r"[^:]+:\w+:\d{1,10}", Some(PatternType::Regex)),
        (r"(?i)user:[a-zé]+", Some(PatternType::Regex)),
        (r".{100}", Some(PatternType::Regex)),
        (r"[a-z]{1000}", Some(PatternType::Regex)),
        (r"*a??????????", None),
        (r"*a?????????????", None),
    ] {
        let start = std::time::Instant::now();
        match Pattern::parse(s, t, &PatternLimits::default()) {
            Ok(pat) => println!("{s}: {} bytes, {:?}", pat.memory_usage(), start.elapsed()),
            Err(e) => println!("{s}: {e}, {:?}", start.elapsed()),
        }
    }
}
