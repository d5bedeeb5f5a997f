// The pattern matcher against the server's pattern table, escapes, inference and regexes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseEventPattern, parsePattern, inferPatternType, PatternError, PatternCache, translateRustRegex } from "../dist/index.js";

const p = (source, type) => parsePattern(source, type);
const yes = (pat, ...keys) => {
  for (const k of keys) assert.ok(pat.isMatch(k), `${pat.kind} ${JSON.stringify(pat.source)} should match ${JSON.stringify(k)}`);
};
const no = (pat, ...keys) => {
  for (const k of keys) assert.ok(!pat.isMatch(k), `${pat.kind} ${JSON.stringify(pat.source)} should not match ${JSON.stringify(k)}`);
};

test("table: exact matches that key only", () => {
  const pat = p("user:123");
  assert.equal(pat.kind, "exact");
  yes(pat, "user:123");
  no(pat, "user:1234", "user:12", "xuser:123", "");
});

test("table: prefix matches keys starting with it, the empty rest included", () => {
  const pat = p("user:123:*");
  assert.equal(pat.kind, "prefix");
  yes(pat, "user:123:", "user:123:profile", "user:123:a:b");
  no(pat, "user:123", "xuser:123:a", "user:12:3");
});

test("table: suffix matches keys ending with it", () => {
  const pat = p("*:profile");
  assert.equal(pat.kind, "suffix");
  yes(pat, "user:1:profile", ":profile");
  no(pat, "user:1:profile2", "profile");
});

test("table: glob with * and ?", () => {
  const star = p("user:*:profile");
  assert.equal(star.kind, "glob");
  yes(star, "user:123:profile", "user::profile", "user:a:b:profile");
  no(star, "user:123:profile:x", "admin:123:profile", "user:profile");
  const quest = p("user:?23");
  assert.equal(quest.kind, "glob");
  yes(quest, "user:123", "user:é23");
  no(quest, "user:23", "user:1123");
});

test("table: regex is anchored to the whole key", () => {
  const pat = p("user:[0-9]+:(profile|settings)", "regex");
  assert.equal(pat.kind, "regex");
  yes(pat, "user:42:profile", "user:42:settings");
  no(pat, "user::profile", "user:42:profiles", "xuser:42:profile", "user:42:profile\n");
});

test("inference: regex is never inferred", () => {
  assert.equal(inferPatternType("user:[0-9]+"), "exact");
  assert.equal(p("a.b").kind, "exact");
  yes(p("a.b"), "a.b");
  no(p("a.b"), "axb");
});

test("inference table", () => {
  const cases = {
    "user:123": "exact",
    "user:123:*": "prefix",
    "*:profile": "suffix",
    "*": "prefix",
    "user:*:profile": "glob",
    "user:?23": "glob",
    "user:*?": "glob",
    "**": "glob",
    "*a*": "glob",
    "?": "glob",
    "a?*": "glob",
    "user:\\*": "exact",
    "a\\?b": "exact",
    "\\**": "prefix",
    "*\\*": "suffix",
    "C:\\dir": "exact",
  };
  for (const [src, kind] of Object.entries(cases)) assert.equal(inferPatternType(src), kind, src);
});

test("explicit type always wins", () => {
  const exact = p("a*b", "exact");
  yes(exact, "a*b");
  no(exact, "axb", "ab");
  // An explicit exact takes the text verbatim: no escapes.
  yes(p("user:\\*", "exact"), "user:\\*");
  no(p("user:\\*", "exact"), "user:*");
  const globExact = p("user:1", "glob");
  assert.equal(globExact.kind, "glob");
  yes(globExact, "user:1");
  no(globExact, "user:12");
  yes(p("user:*", "glob"), "user:x", "user:");
  yes(p("user:1", "regex"), "user:1");
  no(p("user:1", "regex"), "user:12");
});

test("explicit prefix or suffix without its * is the text itself", () => {
  const pre = p("user:", "prefix");
  yes(pre, "user:1", "user:");
  no(pre, "use");
  yes(p("user:*", "prefix"), "user:", "user:9");
  no(p("user:*", "prefix"), "user");
  // Only one trailing star is dropped: the second is part of the prefix text.
  yes(p("a**", "prefix"), "a*", "a*x");
  no(p("a**", "prefix"), "ax");
  const suf = p(":profile", "suffix");
  yes(suf, "a:profile");
  no(suf, "a:profil");
  yes(p("*:profile", "suffix"), "x:profile");
  yes(p("*", "suffix"), "", "anything");
});

test("a lone * is a prefix matching every key", () => {
  const all = p("*");
  assert.equal(all.kind, "prefix");
  yes(all, "", "a", "user:1", "é");
});

test("escapes: user:\\* is the exact key user:*", () => {
  const pat = p("user:\\*");
  assert.equal(pat.kind, "exact");
  yes(pat, "user:*");
  no(pat, "user:x", "user:\\*", "user:");
  const q = p("what\\?");
  yes(q, "what?");
  no(q, "whatx");
  // In a glob, escaped wildcards match that character alone.
  const g = p("a\\*b*");
  assert.equal(g.kind, "prefix");
  yes(g, "a*bzz", "a*b");
  no(g, "axbzz");
  const g2 = p("*\\?x?");
  assert.equal(g2.kind, "glob");
  yes(g2, "zz?xé");
  no(g2, "zzaxé");
  // \\ is one backslash; a backslash before anything else is itself.
  const bs = p("a\\\\*");
  assert.equal(bs.kind, "prefix");
  yes(bs, "a\\", "a\\x");
  no(bs, "a", "ax");
  yes(p("C:\\dir"), "C:\\dir");
  yes(p("x\\"), "x\\");
  const g3 = p("a\\d*?");
  yes(g3, "a\\dzz", "a\\dz");
  no(g3, "a\\d", "adzz");
});

test("? is one Unicode scalar value, not a byte or a UTF-16 unit", () => {
  const pat = p("a?b");
  yes(pat, "aéb", "a€b", "a😀b", "axb");
  no(pat, "ab", "aééb", "a😀😀b");
  const two = p("??");
  yes(two, "éé", "ab", "😀😀", "a😀");
  no(two, "é", "abc", "😀");
  const regexDot = p("a.b", "regex");
  yes(regexDot, "a😀b");
  no(regexDot, "a😀😀b");
});

test("glob stars backtrack and never blow up", () => {
  const g = p("*a*a*a*a*a*b");
  yes(g, "aaaaab", "xaxaxaxaxab");
  no(g, "a".repeat(2000));
  const t0 = Date.now();
  no(g, "a".repeat(5000) + "c");
  assert.ok(Date.now() - t0 < 2000);
  yes(p("a*?b"), "axb", "axxxb");
  no(p("a*?b"), "ab");
});

test("regex: anchors, alternation and Rust semantics", () => {
  const b = p("b", "regex");
  yes(b, "b");
  no(b, "abc", "ab");
  const anchored = p("^a.c$", "regex");
  yes(anchored, "abc", "aéc");
  no(anchored, "xabc");
  const alt = p("a|ab", "regex");
  yes(alt, "ab", "a");
  no(alt, "abb");
  const word = p("\\w+", "regex");
  yes(word, "héllo", "日本", "a_1");
  no(word, "a b", "a-b");
  yes(p("\\d+", "regex"), "123", "١٢٣");
  const ci = p("(?i)user:é", "regex");
  yes(ci, "USER:É", "user:é");
  const wb = p("a\\b.*", "regex");
  yes(wb, "a é", "a");
  no(wb, "aé");
  const x = p("(?x) a b # trailing comment", "regex");
  yes(x, "ab");
  no(x, "abc", "a b");
  yes(p("(?P<id>[0-9]+):(?<k>x)", "regex"), "12:x");
  yes(p("\\x41\\u{1F600}\\x{e9}", "regex"), "A😀é");
  yes(p("a\\-b\\#c\\~d\\&e\\ f", "regex"), "a-b#c~d&e f");
  no(p("(?-u:\\w)+", "regex"), "é");
  yes(p("(?-u:\\w)+", "regex"), "abc");
  yes(p("(?s:.)", "regex"), "\n");
  no(p(".", "regex"), "\n");
  yes(p("a{2,3}", "regex"), "aa", "aaa");
  no(p("a{2,3}", "regex"), "a", "aaaa");
  yes(p("a{2}", "regex"), "aa");
  yes(p("a{2,}", "regex"), "aaaaa");
  yes(p("\\Aab\\z", "regex"), "ab");
});

test("regex: classes, POSIX classes, set operations, Unicode properties", () => {
  yes(p("[]a]+", "regex"), "]a]");
  yes(p("[^]a]", "regex"), "b");
  no(p("[^]a]", "regex"), "]");
  yes(p("[a-c-]+", "regex"), "a-c");
  yes(p("[[:alpha:]]+[[:digit:]]", "regex"), "abc1");
  no(p("[[:alpha:]]", "regex"), "1");
  yes(p("[[:^alpha:]]", "regex"), "1", "é");
  no(p("[[:^alpha:]]", "regex"), "a");
  yes(p("[a-z&&[^aeiou]]+", "regex"), "bcd");
  no(p("[a-z&&[^aeiou]]+", "regex"), "bad");
  yes(p("[a-z--[aeiou]]", "regex"), "b");
  no(p("[a-z--[aeiou]]", "regex"), "a");
  yes(p("[a-c~~b-d]", "regex"), "a", "d");
  no(p("[a-c~~b-d]", "regex"), "b", "c");
  yes(p("[\\W\\d]", "regex"), "-", "5");
  no(p("[\\W\\d]", "regex"), "a");
  yes(p("[^\\W]", "regex"), "é");
  yes(p("\\p{Greek}+", "regex"), "αβγ");
  no(p("\\p{Greek}", "regex"), "a");
  yes(p("\\pL\\p{Lu}\\P{L}", "regex"), "aB1");
  yes(p("\\p{sc=Latin}", "regex"), "a");
  yes(p("\\p{Uppercase_Letter}", "regex"), "Q");
  yes(p("[\\p{L}\\d]+", "regex"), "a1é");
  yes(p("(?i)[a-c]", "regex"), "B");
  yes(p("(?m)^a$\\n^b$", "regex"), "a\nb");
});

test("a pattern that cannot be compiled is a PatternError", () => {
  for (const [src, type] of [
    ["(", "regex"],
    ["a)", "regex"],
    ["[a", "regex"],
    ["*a", "regex"],
    ["\\p{NoSuchProperty}", "regex"],
    ["(?=a)", "regex"],
    ["\\1", "regex"],
    ["", undefined],
    ["a\nb", undefined],
    ["x", "bogus"],
  ]) {
    assert.throws(() => p(src, type), PatternError, `${JSON.stringify(src)} ${type}`);
  }
});

test("the pattern cache returns the same compiled pattern and caches refusals", () => {
  const cache = new PatternCache(2);
  const a = cache.get("a:*");
  assert.equal(cache.get("a:*"), a);
  assert.notEqual(cache.get("a:*", "exact"), a);
  assert.throws(() => cache.get("(", "regex"), PatternError);
  assert.throws(() => cache.get("(", "regex"), PatternError);
});

test("translateRustRegex always emits a Unicode RegExp source", () => {
  const { source, flags } = translateRustRegex("(?i)a");
  assert.match(flags, /u/);
  assert.match(flags, /i/);
  assert.doesNotThrow(() => new RegExp(source, flags));
});

test("an event's pattern covers both readings when the type may have been inferred", () => {
  // The event says {pattern: "user:\\*", pattern_type: "exact"}: inferred, that is the key
  // user:*; given explicitly, the text user:\* verbatim. Both are dropped.
  const ev = parseEventPattern("user:\\*", "exact");
  yes(ev, "user:*", "user:\\*");
  no(ev, "user:x");
  const pre = parseEventPattern("a\\**", "prefix");
  yes(pre, "a*", "a*x", "a\\*x");
  no(pre, "ax");
  // The inferred type differs: only the explicit reading is possible.
  const exact = parseEventPattern("a*b", "exact");
  yes(exact, "a*b");
  no(exact, "axb");
  yes(parseEventPattern("user:?23", "glob"), "user:123");
  yes(parseEventPattern("user:*", null), "user:1");
});
