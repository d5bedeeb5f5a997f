/**
 * Invalidation patterns, matched against local cache keys exactly as the server matches them.
 *
 * Types and inference (when `pattern_type` is absent or null):
 *
 * | type     | example            | matches                                   | inferred when              |
 * |----------|--------------------|-------------------------------------------|----------------------------|
 * | `exact`  | `user:123`         | that key only                             | no unescaped `*` or `?`    |
 * | `prefix` | `user:123:*`       | keys starting with `user:123:` (or equal) | one `*`, at the end        |
 * | `suffix` | `*:profile`        | keys ending with `:profile`               | one `*`, at the start      |
 * | `glob`   | `user:*:p`, `u:?3` | `*` any run, `?` one Unicode scalar value | any other use of `*`, `?`  |
 * | `regex`  | `user:[0-9]+`      | Rust regex syntax, anchored to the whole key | never inferred          |
 *
 * Escapes: `\*`, `\?` and `\\` are the literal characters; any other backslash is itself a
 * literal (`C:\dir` needs no escaping). Escaped wildcards do not count for inference, so
 * `user:\*` is the exact key `user:*`. A lone `*` is a prefix matching every key.
 *
 * An explicit type always wins: `exact`, `prefix` and `suffix` take the text verbatim (no
 * escapes), except that an explicit `prefix` drops one trailing `*` and an explicit `suffix`
 * one leading `*`. An explicit `glob` goes through the escape rules above; `regex` is Rust
 * regex syntax (translated to a JavaScript RegExp, see `regex.ts`).
 */

import { translateRustRegex } from "./regex.js";

export type PatternType = "exact" | "prefix" | "suffix" | "glob" | "regex";

export const PATTERN_TYPES: readonly PatternType[] = ["exact", "prefix", "suffix", "glob", "regex"];

export function isPatternType(s: unknown): s is PatternType {
  return typeof s === "string" && (PATTERN_TYPES as readonly string[]).includes(s);
}

/** A pattern that cannot be compiled (empty, control characters, a regex that does not parse). */
export class PatternError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PatternError";
  }
}

/** One glob token after escapes are resolved. */
type Token = { lit: string } | typeof STAR | typeof QUEST;
const STAR = Symbol("*");
const QUEST = Symbol("?");

/** Resolve escapes (see the module comment). Literals are whole code points. */
export function tokenizeGlob(source: string): Token[] {
  const chars = Array.from(source);
  const out: Token[] = [];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === "*") out.push(STAR);
    else if (c === "?") out.push(QUEST);
    else if (c === "\\") {
      const next = chars[i + 1];
      if (next === "*" || next === "?" || next === "\\") {
        out.push({ lit: next });
        i++;
      } else {
        out.push({ lit: "\\" });
      }
    } else out.push({ lit: c });
  }
  return out;
}

function literalText(tokens: readonly Token[]): string {
  let s = "";
  for (const t of tokens) if (typeof t === "object") s += t.lit;
  return s;
}

type Shape =
  | { kind: "exact"; text: string }
  | { kind: "prefix"; text: string }
  | { kind: "suffix"; text: string }
  | { kind: "glob"; tokens: Token[] }
  | { kind: "regex" };

function inferFromTokens(tokens: Token[]): Shape {
  let stars = 0;
  let quests = 0;
  for (const t of tokens) {
    if (t === STAR) stars++;
    else if (t === QUEST) quests++;
  }
  if (stars === 0 && quests === 0) return { kind: "exact", text: literalText(tokens) };
  if (stars === 1 && quests === 0) {
    // The end is tested first, so a lone `*` is a prefix matching everything.
    if (tokens[tokens.length - 1] === STAR) return { kind: "prefix", text: literalText(tokens.slice(0, -1)) };
    if (tokens[0] === STAR) return { kind: "suffix", text: literalText(tokens.slice(1)) };
  }
  return { kind: "glob", tokens };
}

/** The type the server would give `source` when no `pattern_type` is sent. */
export function inferPatternType(source: string): PatternType {
  return inferFromTokens(tokenizeGlob(source)).kind as PatternType;
}

function collapseStars(tokens: readonly Token[]): Token[] {
  const out: Token[] = [];
  for (const t of tokens) {
    if (t === STAR && out[out.length - 1] === STAR) continue;
    out.push(t);
  }
  return out;
}

/** Whole-key glob match over code points: `*` any run (greedy with backtracking to the last
 * star, O(len(key) x len(pattern)) at worst, never exponential), `?` exactly one code point. */
function globMatch(tokens: readonly Token[], key: string): boolean {
  const s = Array.from(key);
  const n = s.length;
  const m = tokens.length;
  let p = 0;
  let i = 0;
  let starP = -1;
  let starI = 0;
  while (i < n) {
    const t = tokens[p];
    if (p < m && t !== STAR && (t === QUEST || (t as { lit: string }).lit === s[i])) {
      p++;
      i++;
    } else if (p < m && t === STAR) {
      starP = p++;
      starI = i;
    } else if (starP >= 0) {
      p = starP + 1;
      i = ++starI;
    } else {
      return false;
    }
  }
  while (p < m && tokens[p] === STAR) p++;
  return p === m;
}

/** A parsed pattern: immutable, cheap to keep in a cache. */
export interface Pattern {
  /** The text as written. */
  readonly source: string;
  /** The type asked for, or the inferred one. */
  readonly kind: PatternType;
  /** Whole-key match. */
  isMatch(key: string): boolean;
}

function validate(source: string): void {
  if (source.length === 0) throw new PatternError("pattern must not be empty");
  for (let i = 0; i < source.length; i++) {
    const c = source.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) throw new PatternError("pattern contains an ASCII control character");
  }
}

function literalMatcher(shape: Shape): ((key: string) => boolean) | undefined {
  switch (shape.kind) {
    case "exact": {
      const t = shape.text;
      return (k) => k === t;
    }
    case "prefix": {
      const t = shape.text;
      return t === "" ? () => true : (k) => k.startsWith(t);
    }
    case "suffix": {
      const t = shape.text;
      return t === "" ? () => true : (k) => k.endsWith(t);
    }
    default:
      return undefined;
  }
}

/**
 * Parse `source` (inferring its type unless `explicit` is given) and compile a matcher.
 * Throws {@link PatternError} when the pattern cannot be compiled; a cache manager that
 * receives such a pattern must clear its cache, since it cannot tell what the event covers.
 */
export function parsePattern(source: string, explicit?: PatternType | null): Pattern {
  validate(source);
  if (explicit != null && !isPatternType(explicit)) {
    throw new PatternError(`unknown pattern_type ${JSON.stringify(explicit)}`);
  }
  let shape: Shape;
  switch (explicit) {
    case "exact":
      shape = { kind: "exact", text: source };
      break;
    case "prefix":
      shape = { kind: "prefix", text: source.endsWith("*") ? source.slice(0, -1) : source };
      break;
    case "suffix":
      shape = { kind: "suffix", text: source.startsWith("*") ? source.slice(1) : source };
      break;
    case "glob":
      shape = { kind: "glob", tokens: tokenizeGlob(source) };
      break;
    case "regex":
      shape = { kind: "regex" };
      break;
    default:
      shape = inferFromTokens(tokenizeGlob(source));
  }
  const kind = shape.kind as PatternType;
  let isMatch: (key: string) => boolean;
  if (shape.kind === "glob") {
    // A glob whose key set is that of a literal shape is matched by string operations.
    const tokens = collapseStars(shape.tokens);
    const simple = inferFromTokens(tokens);
    isMatch = literalMatcher(simple) ?? ((k) => globMatch(tokens, k));
  } else if (shape.kind === "regex") {
    let re: RegExp;
    try {
      const { source: body, flags } = translateRustRegex(source);
      re = new RegExp(`^(?:${body})$`, flags);
    } catch (e) {
      throw new PatternError(`invalid pattern: ${(e as Error).message}`);
    }
    isMatch = (k) => re.test(k);
  } else {
    isMatch = literalMatcher(shape)!;
  }
  return Object.freeze({ source, kind, isMatch });
}

/** A small bounded cache of compiled patterns (refusals included), most recently used last. */
export class PatternCache {
  private readonly map = new Map<string, Pattern | PatternError>();
  constructor(private readonly capacity = 256) {}

  /**
   * The compiled pattern; throws {@link PatternError} like {@link parsePattern}. With
   * `forEvent`, compiled by {@link parseEventPattern}.
   */
  get(source: string, explicit?: PatternType | null, forEvent = false): Pattern {
    const id = `${forEvent ? "e" : ""}${explicit ?? ""}\u0000${source}`;
    let hit = this.map.get(id);
    if (hit !== undefined) {
      this.map.delete(id);
    } else {
      try {
        hit = forEvent ? parseEventPattern(source, explicit) : parsePattern(source, explicit);
      } catch (e) {
        if (!(e instanceof PatternError)) throw e;
        hit = e;
      }
      if (this.map.size >= this.capacity) {
        const oldest = this.map.keys().next().value;
        if (oldest !== undefined) this.map.delete(oldest);
      }
    }
    this.map.set(id, hit);
    if (hit instanceof PatternError) throw hit;
    return hit;
  }
}

/**
 * The pattern of an `invalidate` event, as a matcher that covers every key the server could
 * have meant.
 *
 * An event carries the pattern as the publisher wrote it and the type the server settled on,
 * but not whether that type was given or inferred, and the two readings differ for
 * `exact`/`prefix`/`suffix` text with backslashes: inferred, `user:\*` is the key `user:*`;
 * given as `exact`, it is the text `user:\*` verbatim. When both readings are possible (the
 * inferred type equals the event's type), this matches the union of the two, over-invalidating
 * rather than keeping a stale entry. Globs and regexes have one reading.
 */
export function parseEventPattern(source: string, type?: PatternType | null): Pattern {
  const given = parsePattern(source, type);
  if (type == null || type === "glob" || type === "regex" || !source.includes("\\")) return given;
  if (inferPatternType(source) !== type) return given;
  const inferred = parsePattern(source);
  return Object.freeze({
    source,
    kind: given.kind,
    isMatch: (key: string) => given.isMatch(key) || inferred.isMatch(key),
  });
}
