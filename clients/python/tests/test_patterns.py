"""The pattern matcher against the server contract's table (no server needed)."""

import pytest

from invalidator_client import PatternError, PatternType, compile_pattern, event_matcher, infer_type

E, P, S, G, R = PatternType.EXACT, PatternType.PREFIX, PatternType.SUFFIX, PatternType.GLOB, PatternType.REGEX


@pytest.mark.parametrize(
    "pattern, kind",
    [
        ("user:123", E),
        ("user:123:*", P),
        ("*:profile", S),
        ("user:*:profile", G),
        ("user:?23", G),
        ("*", P),  # a lone * is a prefix matching everything
        ("**", G),
        ("*a*", G),
        ("?", G),
        ("a?*", G),
        ("user:*?", G),
        (r"user:\*", E),  # escaped wildcards do not count
        (r"a\?b", E),
        (r"\**", P),
        (r"*\*", S),
        (r"C:\dir", E),
    ],
)
def test_inference_table(pattern, kind):
    assert infer_type(pattern) is kind
    assert compile_pattern(pattern).kind is kind


# (pattern, pattern_type, matching keys, non-matching keys)
TABLE = [
    ("user:123", None, ["user:123"], ["user:1234", "user:12", "xuser:123", ""]),
    ("user:123:*", None, ["user:123:", "user:123:profile", "user:123:a:b"], ["user:123", "user:1234:x", "x:user:123:"]),
    ("*:profile", None, [":profile", "user:1:profile"], ["user:1:profile:x", "profile"]),
    ("user:*:profile", None, ["user::profile", "user:1:profile", "user:a:b:profile"], ["user:1:settings", "xuser:1:profile"]),
    ("user:?23", None, ["user:123", "user:a23", "user:é23", "user:😀23"], ["user:23", "user:1123", "user:123x"]),
    ("*", None, ["", "anything", "ü"], []),
    ("a*b*c", None, ["abc", "a-b-c", "aXbYc", "abbc"], ["ab", "acb", "abcd"]),
    ("??", None, ["ab", "éé", "😀x"], ["a", "abc"]),
    # Escapes: `user:\*` is the exact key `user:*`
    (r"user:\*", None, ["user:*"], ["user:", "user:1", r"user:\*", "user:**"]),
    (r"user:\?", None, ["user:?"], ["user:1", r"user:\?"]),
    (r"a\\b", None, ["a\\b"], ["a\\\\b"]),
    (r"\**", None, ["*", "*abc"], ["abc", r"\*"]),
    (r"*\*", None, ["*", "abc*"], ["abc"]),
    (r"a\*?", None, ["a*b", "a*é"], ["a*", "ab", "a*bc"]),
    (r"C:\dir", None, ["C:\\dir"], ["C:dir"]),
    (r"a\\*", None, ["a\\", "a\\xyz"], ["a", "ab"]),  # `\\` literal backslash, then a real `*`
    # Explicit types win
    ("a*b", "exact", ["a*b"], ["ab", "axb"]),
    (r"user:\*", "exact", [r"user:\*"], ["user:*"]),
    ("user:", "prefix", ["user:", "user:1"], ["use"]),
    ("user:*", "prefix", ["user:", "user:1"], ["use"]),
    ("a**", "prefix", ["a*", "a*b"], ["ab"]),
    (":p", "suffix", [":p", "x:p"], ["x:px"]),
    ("*:p", "suffix", [":p", "x:p"], ["x:px"]),
    ("*", "suffix", ["", "x"], []),
    ("abc", "glob", ["abc"], ["abcd"]),
    ("user:*", "glob", ["user:", "user:x"], ["use"]),
    # Regex: the whole key, implicitly anchored
    (r"user:[0-9]+:(profile|settings)", "regex", ["user:1:profile", "user:42:settings"], ["user:x:profile", "user:1:profiles", "xuser:1:profile", "user:1:"]),
    (r"^order:\d+$", "regex", ["order:1", "order:123"], ["order:", "order:1a"]),
    (r"a|ab", "regex", ["a", "ab"], ["abc", "b"]),
    (r"o:[0-9]+", "regex", ["o:12"], ["o:12x", "xo:12"]),
    (r"(?i)user:x", "regex", ["USER:X", "user:x"], ["user:y"]),
    (r"(?<id>[0-9]+):x", "regex", ["12:x"], ["a:x"]),  # Rust named group spelling
    (r"k:\x{e9}", "regex", ["k:é"], ["k:e"]),  # Rust braced hex escape
    (r"k:a\z", "regex", ["k:a"], ["k:ab"]),  # Rust \z
    (r"k:[a-c]+", "regex", ["k:abc"], ["k:abd"]),
    (r"k:.", "regex", ["k:é", "k:😀"], ["k:", "k:ab"]),
]


@pytest.mark.parametrize("pattern, ptype, yes, no", TABLE)
def test_matching_table(pattern, ptype, yes, no):
    p = compile_pattern(pattern, ptype)
    for key in yes:
        assert p.matches(key), f"{pattern!r} ({ptype}) should match {key!r}"
    for key in no:
        assert not p.matches(key), f"{pattern!r} ({ptype}) should not match {key!r}"


def test_question_mark_is_one_unicode_scalar_not_a_byte():
    p = compile_pattern("k:?")
    assert p.matches("k:é")  # 2 UTF-8 bytes
    assert p.matches("k:€")  # 3 bytes
    assert p.matches("k:😀")  # 4 bytes
    assert not p.matches("k:é!")
    assert not p.matches("k:")


def test_glob_equivalent_to_literal_types_uses_them():
    assert compile_pattern("ab**").effective_kind is P
    assert compile_pattern("**ab").effective_kind is S
    assert compile_pattern("abc", "glob").effective_kind is E
    assert compile_pattern("a*b").effective_kind is G


@pytest.mark.parametrize(
    "bad, ptype",
    [
        ("", None),
        ("a\nb", None),
        ("a\x7f", None),
        ("(", "regex"),
        ("[", "regex"),
        (r"\p{L}+", "regex"),  # Rust-only class: refused rather than misread
        ("[[:alpha:]]+", "regex"),  # POSIX class: Python would read it as a set
        ("[a-z&&[^aeiou]]", "regex"),  # class intersection
        (r"\<word\>", "regex"),
        (r"(?U)a+", "regex"),
        (r"(?-u:\w)", "regex"),
        ("abc", "tag"),  # unknown pattern_type
    ],
)
def test_refused_patterns(bad, ptype):
    with pytest.raises(PatternError):
        compile_pattern(bad, ptype)


def test_event_matcher_covers_both_readings_of_an_escaped_literal():
    # The server reports `user:\*` as pattern_type "exact" whether the publisher asked for
    # exact (the literal backslash) or let it be inferred (the key `user:*`): drop both.
    m = event_matcher(r"user:\*", "exact")
    assert m("user:*")
    assert m(r"user:\*")
    assert not m("user:1")
    m = event_matcher(r"\**", "prefix")
    assert m("*x") and m(r"\*x")
    assert not m("x")
    # Without backslashes there is one reading only.
    m = event_matcher("user:*", "prefix")
    assert m("user:1") and not m("use")
    m = event_matcher("a*b", "exact")
    assert m("a*b") and not m("axb")


def test_event_matcher_refuses_uninterpretable():
    with pytest.raises(PatternError):
        event_matcher(r"x:\p{Greek}", "regex")
    with pytest.raises(PatternError):
        event_matcher("x", "surrogate")


def test_compiled_patterns_are_cached():
    assert compile_pattern("cache:*:x") is compile_pattern("cache:*:x")
