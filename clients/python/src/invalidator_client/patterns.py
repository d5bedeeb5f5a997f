"""Pattern parsing, type inference and matching, as the invalidator server does it.

The rules (the server's contract, "Patterns"):

=========  ==================  ==========================================  =======================
type       written as          matches                                     inferred when absent
=========  ==================  ==========================================  =======================
exact      ``user:123``        that key only                               no ``*`` or ``?``
prefix     ``user:123:*``      keys starting with ``user:123:``            a single ``*`` at the end
suffix     ``*:profile``       keys ending with ``:profile``               a single ``*`` at the start
glob       ``user:*:profile``  ``*`` any run, ``?`` one character          any other ``*`` / ``?``
regex      ``user:[0-9]+``     the whole key (implicitly anchored)         never
=========  ==================  ==========================================  =======================

Details mirrored from the server:

* Escapes: ``\\*``, ``\\?`` and ``\\\\`` are the literal characters ``*``, ``?`` and ``\\``; a
  backslash before any other character (or at the end) is itself a literal backslash, so
  ``C:\\dir`` needs no escaping. Escaped wildcards never count for inference:
  ``user:\\*`` is the exact key ``user:*``.
* A lone ``*`` is a prefix pattern matching every key.
* An explicit ``exact``, ``prefix`` or ``suffix`` takes the text verbatim (no escapes), except
  that ``prefix`` drops one trailing ``*`` and ``suffix`` one leading ``*``.
* ``?`` matches one Unicode scalar value (one Python ``str`` character), not a byte.
* Regexes are Rust ``regex`` syntax. Python's :mod:`re` is close but not the same; this module
  translates the common differences (``\\z``, ``(?<name>...)``, ``\\x{...}``) and refuses, with
  :class:`PatternError`, any construct whose meaning would differ silently (nested classes and
  set operations, POSIX classes, ``\\<``, ``\\b{...}``, ...). A cache that cannot interpret an
  invalidation pattern must clear itself: dropping too much is safe, dropping too little is not.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

__all__ = [
    "PatternType",
    "PatternError",
    "Pattern",
    "compile_pattern",
    "infer_type",
    "event_matcher",
]


class PatternType(str, Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    GLOB = "glob"
    REGEX = "regex"

    @classmethod
    def parse(cls, value: "str | PatternType | None") -> "PatternType | None":
        if value is None or isinstance(value, PatternType):
            return value
        try:
            return cls(value)
        except ValueError:
            raise PatternError(
                f"unknown pattern_type {value!r} (expected exact, prefix, suffix, glob or regex)"
            ) from None


class PatternError(ValueError):
    """A pattern this client cannot interpret (or that is invalid)."""


# Glob tokens: a literal character is the 1-char string itself; wildcards are sentinels.
STAR = object()
QUEST = object()


def _tokenize(source: str) -> list:
    tokens: list = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "*":
            tokens.append(STAR)
        elif c == "?":
            tokens.append(QUEST)
        elif c == "\\" and i + 1 < n and source[i + 1] in "*?\\":
            tokens.append(source[i + 1])
            i += 1
        else:
            tokens.append(c)
        i += 1
    return tokens


def _literal(tokens: list) -> str:
    return "".join(t for t in tokens if isinstance(t, str))


def _infer_tokens(tokens: list) -> tuple[PatternType, str | list]:
    stars = sum(1 for t in tokens if t is STAR)
    quests = sum(1 for t in tokens if t is QUEST)
    if stars == 0 and quests == 0:
        return PatternType.EXACT, _literal(tokens)
    if stars == 1 and quests == 0:
        # The end first, so that a lone `*` is a prefix matching everything.
        if tokens[-1] is STAR:
            return PatternType.PREFIX, _literal(tokens[:-1])
        if tokens[0] is STAR:
            return PatternType.SUFFIX, _literal(tokens[1:])
    return PatternType.GLOB, tokens


def _collapse_stars(tokens: list) -> list:
    out: list = []
    for t in tokens:
        if t is STAR and out and out[-1] is STAR:
            continue
        out.append(t)
    return out


def _validate(source: str) -> None:
    if not isinstance(source, str):
        raise PatternError("a pattern must be a string")
    if source == "":
        raise PatternError("pattern must not be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in source):
        raise PatternError("pattern contains an ASCII control character")


def infer_type(source: str) -> PatternType:
    """The type the server infers for ``source`` when no ``pattern_type`` is given."""
    return _infer_tokens(_tokenize(source))[0]


# ---- Rust regex syntax -> Python re -------------------------------------------------------

_HEX_BRACED = re.compile(r"\{([0-9A-Fa-f]{1,8})\}")


def _rust_regex_to_python(source: str) -> str:
    """Translate the Rust-only spellings that have a Python equivalent; refuse the ones whose
    Python reading would differ silently."""
    out: list[str] = []
    i, n = 0, len(source)
    in_class = False
    while i < n:
        c = source[i]
        if c == "\\":
            if i + 1 >= n:
                raise PatternError("regex ends with a lone backslash")
            d = source[i + 1]
            if d == "z":
                out.append(r"\Z")
                i += 2
                continue
            if d in "xuU" and i + 2 < n and source[i + 2] == "{":
                m = _HEX_BRACED.match(source, i + 2)
                if not m:
                    raise PatternError(f"bad \\{d}{{...}} escape")
                cp = int(m.group(1), 16)
                if cp > 0x10FFFF:
                    raise PatternError("code point out of range")
                out.append(f"\\U{cp:08x}")
                i = m.end()
                continue
            if d in "<>":
                raise PatternError(f"word-boundary escape \\{d} is not supported here")
            if d == "b" and i + 2 < n and source[i + 2] == "{":
                raise PatternError("\\b{...} boundaries are not supported here")
            if d in "pP":
                raise PatternError("Unicode class escapes \\p / \\P are not supported here")
            out.append(source[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "[":
                # Rust: a nested class or a POSIX class ([[:alpha:]]); Python: a literal '['.
                raise PatternError("nested or POSIX character classes are not supported here")
            if c == "]":
                in_class = False
            elif source.startswith(("&&", "--", "~~"), i):
                raise PatternError("character class set operations are not supported here")
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and source[i] == "^":
                out.append("^")
                i += 1
            if i < n and source[i] == "]":  # a leading ']' is a literal in both
                out.append("]")
                i += 1
            continue
        if c == "(" and source.startswith("(?<", i) and not source.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        if c == "(" and source.startswith("(?", i):
            # Inline flags: Rust has i, m, s, U, u, x, R; Python lacks U, u and R.
            j = i + 2
            while j < n and (source[j].isalpha() or source[j] == "-"):
                j += 1
            flags = source[i + 2 : j]
            if j < n and source[j] in ":)" and any(f in flags for f in "UuR"):
                raise PatternError(f"regex flags {flags!r} are not supported here")
        out.append(c)
        i += 1
    return "".join(out)


def _compile_regex(source: str) -> re.Pattern:
    translated = _rust_regex_to_python(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return re.compile(translated)
        except (re.error, FutureWarning, DeprecationWarning, OverflowError) as e:
            raise PatternError(f"invalid regex {source!r}: {e}") from None


def _glob_regex(tokens: list) -> re.Pattern:
    parts = []
    for t in _collapse_stars(tokens):
        if t is STAR:
            parts.append(".*")
        elif t is QUEST:
            parts.append(".")
        else:
            parts.append(re.escape(t))
    return re.compile("".join(parts), re.DOTALL)


# ---- compiled patterns -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern. ``matches(key)`` is whole-key matching."""

    source: str
    kind: PatternType
    #: The matcher's own type: ``kind``, except that a glob equivalent to an exact, prefix or
    #: suffix pattern is matched as that.
    effective_kind: PatternType
    #: Exact key, prefix text or suffix text (for the effective kind); None for glob/regex.
    literal: str | None
    _regex: re.Pattern | None = field(default=None, repr=False, compare=False)

    def matches(self, key: str) -> bool:
        k = self.effective_kind
        if k is PatternType.EXACT:
            return key == self.literal
        if k is PatternType.PREFIX:
            return key.startswith(self.literal)  # type: ignore[arg-type]
        if k is PatternType.SUFFIX:
            return key.endswith(self.literal)  # type: ignore[arg-type]
        return self._regex.fullmatch(key) is not None  # type: ignore[union-attr]

    __call__ = matches


def _build(source: str, explicit: PatternType | None) -> Pattern:
    _validate(source)
    if explicit is PatternType.EXACT:
        return Pattern(source, explicit, explicit, source)
    if explicit is PatternType.PREFIX:
        text = source[:-1] if source.endswith("*") else source
        return Pattern(source, explicit, explicit, text)
    if explicit is PatternType.SUFFIX:
        text = source[1:] if source.startswith("*") else source
        return Pattern(source, explicit, explicit, text)
    if explicit is PatternType.REGEX:
        return Pattern(source, explicit, explicit, None, _compile_regex(source))
    tokens = _tokenize(source)
    if explicit is PatternType.GLOB:
        kind = PatternType.GLOB
    else:
        kind, shape = _infer_tokens(tokens)
        if kind is not PatternType.GLOB:
            return Pattern(source, kind, kind, shape)  # type: ignore[arg-type]
    # A glob whose key set is that of a literal type is matched as that type.
    eff, shape = _infer_tokens(_collapse_stars(tokens))
    if eff is not PatternType.GLOB:
        return Pattern(source, kind, eff, shape)  # type: ignore[arg-type]
    return Pattern(source, kind, PatternType.GLOB, None, _glob_regex(tokens))


@functools.lru_cache(maxsize=1024)
def _cached(source: str, explicit: PatternType | None) -> Pattern:
    return _build(source, explicit)


def compile_pattern(source: str, pattern_type: "str | PatternType | None" = None) -> Pattern:
    """Parse ``source`` as the server does: ``pattern_type`` explicit, or inferred when None.

    Raises :class:`PatternError` for an empty pattern, a control character, an unknown type or
    a regex this client cannot interpret faithfully. Compiled patterns are cached (LRU)."""
    explicit = PatternType.parse(pattern_type)
    try:
        return _cached(source, explicit)
    except TypeError:  # unhashable source
        raise PatternError("a pattern must be a string") from None


def event_matcher(source: str, pattern_type: "str | None") -> Callable[[str], bool]:
    """A predicate covering every key an ``invalidate`` event's pattern may mean.

    An event carries the pattern as written plus its (explicit or inferred) type, but not
    whether the type was explicit. Where both readings give that type yet differ (backslashes
    in an exact, prefix or suffix pattern: ``user:\\*`` inferred is the key ``user:*``,
    explicit ``exact`` is the key ``user:\\*``), the predicate matches either: an extra drop is
    harmless, a missed one is not. Raises :class:`PatternError` when the pattern cannot be
    interpreted (the caller then clears its cache)."""
    kind = PatternType.parse(pattern_type)
    if kind is None:
        return compile_pattern(source).matches
    explicit = compile_pattern(source, kind)
    try:
        inferred = compile_pattern(source)
    except PatternError:
        inferred = None
    if inferred is None or inferred.kind is not kind or inferred == explicit:
        return explicit.matches
    if inferred.effective_kind == explicit.effective_kind and inferred.literal == explicit.literal:
        return explicit.matches
    a, b = explicit.matches, inferred.matches
    return lambda key: a(key) or b(key)
