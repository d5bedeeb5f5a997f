/**
 * Rust `regex` syntax → JavaScript `RegExp` (with the `u` flag), for matching the server's
 * regex invalidation patterns against local keys.
 *
 * The server compiles patterns with Rust's regex engine; JavaScript's dialect differs in
 * places that matter (Unicode `\w`/`\d`/`\s`/`\b`, inline flags, class set operations, `\p`
 * names, which characters may be escaped). This module parses the Rust syntax and emits an
 * equivalent JavaScript source, construct by construct:
 *
 * - `.` never matches `\n` (any character with `s`); `^`/`$` are text anchors (line anchors
 *   with `m`); `\A`, `\z`.
 * - `\d` = `\p{Nd}`, `\s` = `\p{White_Space}`, `\w` = Alphabetic + M + Nd + Pc + Join_Control
 *   (ASCII versions under `(?-u)`); `\b`, `\B`, `\b{start}`, `\b{end}`, `\b{start-half}`,
 *   `\b{end-half}`, `\<`, `\>` as look-arounds over that word class.
 * - Classes: ranges, escapes, `[:alpha:]` ASCII classes (and `[:^alpha:]`), nested classes,
 *   `&&`, `--`, `~~`, a leading `]` as a literal.
 * - `\p{..}`/`\P{..}`/`\pL`, with `sc=`, `scx=`, `gc=` and bare script names (as
 *   Script_Extensions); names are tried as written, then Title_Cased, then UPPER-cased.
 * - Flags `(?imsxuUR)`, `(?flags:...)`, `(?-flags)`: `m`, `s`, `x`, `u` are applied where they
 *   are in force. `i` cannot be scoped in a JavaScript `RegExp` of Node 20, so when `i` is in
 *   force anywhere the whole pattern is case-insensitive: a superset of the Rust key set,
 *   which over-invalidates but never misses. `U` (swap greed) changes no whole-key match.
 * - Groups (capturing or named) become non-capturing: only whether the whole key matches
 *   matters.
 *
 * Whatever cannot be translated throws, and the caller treats the pattern as one it cannot
 * compile (a cache manager then clears its cache: the safe answer).
 */

interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
  x: boolean;
  u: boolean;
}

/** Unicode `\w` of Rust's regex crate, as the body of a JavaScript `u` class. */
const WORD_BODY = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}";
const MAX_CP = 0x10ffff;

type Range = readonly [number, number];

const ASCII_DIGIT: Range[] = [[0x30, 0x39]];
const ASCII_WORD: Range[] = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
];
const ASCII_SPACE: Range[] = [
  [0x09, 0x0d],
  [0x20, 0x20],
];

const POSIX: Record<string, Range[]> = {
  alnum: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  alpha: [
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  ascii: [[0x00, 0x7f]],
  blank: [
    [0x09, 0x09],
    [0x20, 0x20],
  ],
  cntrl: [
    [0x00, 0x1f],
    [0x7f, 0x7f],
  ],
  digit: ASCII_DIGIT,
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [
    [0x21, 0x2f],
    [0x3a, 0x40],
    [0x5b, 0x60],
    [0x7b, 0x7e],
  ],
  space: ASCII_SPACE,
  upper: [[0x41, 0x5a]],
  word: ASCII_WORD,
  xdigit: [
    [0x30, 0x39],
    [0x41, 0x46],
    [0x61, 0x66],
  ],
};

function cpEscape(cp: number): string {
  const isAlnum = (cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a);
  return isAlnum ? String.fromCodePoint(cp) : `\\u{${cp.toString(16)}}`;
}

function rangesBody(ranges: readonly Range[]): string {
  return ranges.map(([lo, hi]) => (lo === hi ? cpEscape(lo) : `${cpEscape(lo)}-${cpEscape(hi)}`)).join("");
}

/** Complement of sorted, disjoint ranges over all code points. */
function complement(ranges: readonly Range[]): Range[] {
  const out: Range[] = [];
  let next = 0;
  for (const [lo, hi] of ranges) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= MAX_CP) out.push([next, MAX_CP]);
  return out;
}

/** A class member: a fragment valid inside a positive JS class, or a one-character expression. */
type Piece = { simple: string } | { expr: string };

/** The result of an escape. */
type Escaped =
  | { char: number }
  | { piece: Piece }
  /** A zero-width assertion (outside classes only). */
  | { assert: string };

function piecesToExpr(pieces: readonly Piece[], negated: boolean): string {
  let simple = "";
  const exprs: string[] = [];
  for (const p of pieces) {
    if ("simple" in p) simple += p.simple;
    else exprs.push(p.expr);
  }
  if (exprs.length === 0) return negated ? `[^${simple}]` : `[${simple}]`;
  const parts = simple ? [`[${simple}]`, ...exprs] : exprs;
  const positive = `(?:${parts.join("|")})`;
  return negated ? `(?!${positive})[\\s\\S]` : positive;
}

const propertyCache = new Map<string, string | null>();

function titleCase(s: string): string {
  return s
    .split(/[\s_-]+/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1).toLowerCase())
    .join("_");
}

function acceptsProperty(body: string): boolean {
  try {
    new RegExp(`\\p{${body}}`, "u");
    return true;
  } catch {
    return false;
  }
}

/** The body of a JS `\p{...}` for a Rust property query, or throws. */
function resolveProperty(raw: string): string {
  const cached = propertyCache.get(raw);
  if (cached !== undefined) {
    if (cached === null) throw new Error(`Unicode property not found: ${raw}`);
    return cached;
  }
  const candidates: string[] = [];
  const sep = raw.search(/[=:]/);
  if (sep >= 0) {
    const name = raw.slice(0, sep).replace(/[\s_-]/g, "").toLowerCase();
    const value = raw.slice(sep + 1).trim();
    const canonical: Record<string, string> = {
      gc: "General_Category",
      generalcategory: "General_Category",
      sc: "Script",
      script: "Script",
      scx: "Script_Extensions",
      scriptextensions: "Script_Extensions",
    };
    const prop = canonical[name];
    if (prop) for (const v of [value, titleCase(value), value.toUpperCase()]) candidates.push(`${prop}=${v}`);
  } else {
    const name = raw.trim();
    const forms = [name, titleCase(name), name.toUpperCase()];
    candidates.push(...forms, ...forms.map((f) => `Script_Extensions=${f}`));
  }
  const found = candidates.find(acceptsProperty) ?? null;
  propertyCache.set(raw, found);
  if (found === null) throw new Error(`Unicode property not found: ${raw}`);
  return found;
}

class Translator {
  private readonly chars: string[];
  private pos = 0;
  /** `i` was in force somewhere. */
  anyCaseInsensitive = false;

  constructor(source: string) {
    this.chars = Array.from(source);
  }

  private peek(offset = 0): string | undefined {
    return this.chars[this.pos + offset];
  }

  private eof(): boolean {
    return this.pos >= this.chars.length;
  }

  private lookingAt(s: string): boolean {
    const parts = Array.from(s);
    return parts.every((c, k) => this.chars[this.pos + k] === c);
  }

  private fail(message: string): never {
    throw new Error(`regex parse error at character ${this.pos}: ${message}`);
  }

  /** Verbose mode: skip white space and `#` comments. */
  private skipSpace(flags: Flags): void {
    if (!flags.x) return;
    for (;;) {
      const c = this.peek();
      if (c !== undefined && /\s/u.test(c)) this.pos++;
      else if (c === "#") {
        while (!this.eof() && this.peek() !== "\n") this.pos++;
      } else return;
    }
  }

  translate(): { source: string; flags: string } {
    const flags: Flags = { i: false, m: false, s: false, x: false, u: true };
    const body = this.alternation(flags, 0);
    if (!this.eof()) this.fail("unopened group");
    return { source: body, flags: this.anyCaseInsensitive ? "iu" : "u" };
  }

  private alternation(flags: Flags, depth: number): string {
    const alts: string[] = [];
    let items: string[] = [];
    for (;;) {
      this.skipSpace(flags);
      if (this.eof()) break;
      const c = this.peek()!;
      if (c === "|") {
        this.pos++;
        alts.push(items.join(""));
        items = [];
        continue;
      }
      if (c === ")") {
        if (depth === 0) this.fail("unopened group");
        break;
      }
      if (c === "*" || c === "+" || c === "?" || c === "{") {
        if (items.length === 0) this.fail("repetition operator missing expression");
        const q = this.quantifier(flags);
        items[items.length - 1] = `(?:${items[items.length - 1]})${q}`;
        continue;
      }
      if (c === "(") {
        const item = this.group(flags, depth);
        if (item !== null) items.push(item);
        continue;
      }
      items.push(this.atom(flags));
    }
    alts.push(items.join(""));
    return alts.join("|");
  }

  private quantifier(flags: Flags): string {
    const c = this.chars[this.pos++]!;
    let q: string;
    if (c === "{") {
      const readNum = (): string => {
        this.skipSpace(flags);
        let digits = "";
        while (!this.eof() && /[0-9]/.test(this.peek()!)) digits += this.chars[this.pos++];
        this.skipSpace(flags);
        return digits;
      };
      const min = readNum();
      let max: string | undefined = min;
      if (this.peek() === ",") {
        this.pos++;
        max = readNum();
      }
      if (this.peek() !== "}") this.fail("unclosed counted repetition");
      this.pos++;
      if (min === "" && (max === "" || max === undefined)) this.fail("invalid counted repetition");
      const lo = min === "" ? "0" : min;
      if (max !== "" && Number(max) < Number(lo)) this.fail("invalid counted repetition range");
      q = max === min ? `{${lo}}` : max === "" ? `{${lo},}` : `{${lo},${max}}`;
    } else {
      q = c;
    }
    if (this.peek() === "?") {
      // Lazy: the same whole-key match.
      this.pos++;
    }
    return q;
  }

  /** `(` ... `)`; null for a flag-only group `(?i)`, which changes `flags` in place. */
  private group(flags: Flags, depth: number): string | null {
    this.pos++; // (
    let inner: Flags = { ...flags };
    if (this.peek() === "?") {
      this.pos++;
      if (this.lookingAt("P<") || this.lookingAt("<")) {
        if (this.peek() === "P") this.pos++;
        this.pos++; // <
        if (this.peek() === "=" || this.peek() === "!") this.fail("look-around is not supported");
        let name = "";
        while (!this.eof() && this.peek() !== ">") name += this.chars[this.pos++];
        if (this.eof() || name === "") this.fail("invalid capture group name");
        this.pos++; // >
      } else {
        let negate = false;
        let any = false;
        const target: Flags = { ...flags };
        for (;;) {
          const c = this.peek();
          if (c === undefined) this.fail("unclosed group");
          if (c === ")" || c === ":") break;
          this.pos++;
          if (c === "-") {
            if (negate) this.fail("repeated negation in flags");
            negate = true;
            continue;
          }
          any = true;
          switch (c) {
            case "i":
            case "m":
            case "s":
            case "x":
            case "u":
              target[c] = !negate;
              break;
            case "U":
            case "R":
              break;
            default:
              this.fail(`unrecognized flag ${c}`);
          }
        }
        if (!any) this.fail("empty flag group");
        if (target.i) this.anyCaseInsensitive = true;
        if (this.peek() === ")") {
          this.pos++;
          Object.assign(flags, target);
          return null;
        }
        this.pos++; // :
        inner = target;
      }
    }
    if (inner.i) this.anyCaseInsensitive = true;
    const body = this.alternation(inner, depth + 1);
    if (this.peek() !== ")") this.fail("unclosed group");
    this.pos++;
    return `(?:${body})`;
  }

  private atom(flags: Flags): string {
    if (flags.i) this.anyCaseInsensitive = true;
    const c = this.chars[this.pos]!;
    switch (c) {
      case ".":
        this.pos++;
        return flags.s ? "[\\s\\S]" : "[^\\n]";
      case "^":
        this.pos++;
        return flags.m ? "(?:^|(?<=\\n))" : "^";
      case "$":
        this.pos++;
        return flags.m ? "(?:$|(?=\\n))" : "$";
      case "[":
        this.pos++;
        return this.charClass(flags);
      case "\\": {
        const e = this.escape(flags, false);
        if ("char" in e) return cpEscape(e.char);
        if ("assert" in e) return e.assert;
        return piecesToExpr([e.piece], false);
      }
      default:
        this.pos++;
        return cpEscape(c.codePointAt(0)!);
    }
  }

  private wordClass(flags: Flags): string {
    return flags.u ? `[${WORD_BODY}]` : `[${rangesBody(ASCII_WORD)}]`;
  }

  private perlClass(letter: string, flags: Flags): Piece {
    const lower = letter.toLowerCase();
    const negated = letter !== lower;
    if (flags.u) {
      if (lower === "w") return negated ? { expr: `(?![${WORD_BODY}])[\\s\\S]` } : { simple: WORD_BODY };
      const prop = lower === "d" ? "Nd" : "White_Space";
      return { simple: negated ? `\\P{${prop}}` : `\\p{${prop}}` };
    }
    const ranges = lower === "d" ? ASCII_DIGIT : lower === "w" ? ASCII_WORD : ASCII_SPACE;
    return { simple: rangesBody(negated ? complement(ranges) : ranges) };
  }

  private hex(letter: string): number {
    let digits = "";
    if (this.peek() === "{") {
      this.pos++;
      while (!this.eof() && this.peek() !== "}") digits += this.chars[this.pos++];
      if (this.eof()) this.fail("unclosed hex escape");
      this.pos++;
    } else {
      const n = letter === "x" ? 2 : letter === "u" ? 4 : 8;
      for (let k = 0; k < n; k++) {
        if (this.eof()) this.fail("incomplete hex escape");
        digits += this.chars[this.pos++];
      }
    }
    if (!/^[0-9a-fA-F]{1,8}$/.test(digits)) this.fail(`invalid hex escape ${digits}`);
    const cp = parseInt(digits, 16);
    if (cp > MAX_CP || (cp >= 0xd800 && cp <= 0xdfff)) this.fail("hex escape is not a Unicode scalar value");
    return cp;
  }

  /** At a backslash. */
  private escape(flags: Flags, inClass: boolean): Escaped {
    this.pos++;
    const c = this.chars[this.pos++];
    if (c === undefined) this.fail("incomplete escape sequence");
    switch (c) {
      case "d":
      case "D":
      case "w":
      case "W":
      case "s":
      case "S":
        return { piece: this.perlClass(c, flags) };
      case "p":
      case "P": {
        if (!flags.u) this.fail("Unicode classes are not allowed when Unicode mode is off");
        let name: string;
        if (this.peek() === "{") {
          this.pos++;
          name = "";
          while (!this.eof() && this.peek() !== "}") name += this.chars[this.pos++];
          if (this.eof()) this.fail("unclosed Unicode class");
          this.pos++;
        } else {
          name = this.chars[this.pos++] ?? this.fail("incomplete Unicode class");
        }
        let negated = c === "P";
        if (name.startsWith("^")) {
          negated = !negated;
          name = name.slice(1);
        }
        if (name.includes("!=")) {
          negated = !negated;
          name = name.replace("!=", "=");
        }
        let body: string;
        try {
          body = resolveProperty(name);
        } catch (e) {
          this.fail((e as Error).message);
        }
        return { piece: { simple: `\\${negated ? "P" : "p"}{${body}}` } };
      }
      case "x":
      case "u":
      case "U":
        return { char: this.hex(c) };
      case "t":
        return { char: 0x09 };
      case "n":
        return { char: 0x0a };
      case "r":
        return { char: 0x0d };
      case "f":
        return { char: 0x0c };
      case "v":
        return { char: 0x0b };
      case "a":
        return { char: 0x07 };
    }
    if (!inClass) {
      const w = this.wordClass(flags);
      const start = `(?<!${w})(?=${w})`;
      const end = `(?<=${w})(?!${w})`;
      switch (c) {
        case "A":
          return { assert: "^" };
        case "z":
          return { assert: "$" };
        case "<":
          return { assert: start };
        case ">":
          return { assert: end };
        case "B":
          return { assert: `(?:(?<=${w})(?=${w})|(?<!${w})(?!${w}))` };
        case "b": {
          if (this.peek() === "{") {
            const close = this.chars.indexOf("}", this.pos);
            if (close < 0) this.fail("unclosed word boundary");
            const kind = this.chars.slice(this.pos + 1, close).join("");
            const found: Record<string, string> = {
              start,
              end,
              "start-half": `(?<!${w})`,
              "end-half": `(?!${w})`,
            };
            const a = found[kind];
            if (a === undefined) this.fail(`unrecognized word boundary \\b{${kind}}`);
            this.pos = close + 1;
            return { assert: a };
          }
          return { assert: `(?:${start}|${end})` };
        }
      }
    }
    const cp = c.codePointAt(0)!;
    const isAsciiPunct = cp > 0x20 && cp < 0x7f && !/[0-9A-Za-z]/.test(c);
    if (isAsciiPunct || c === " ") return { char: cp };
    this.fail(`unrecognized escape sequence \\${c}`);
  }

  /** After `[`: a one-character JS expression. */
  private charClass(flags: Flags): string {
    let negated = false;
    if (this.peek() === "^") {
      this.pos++;
      negated = true;
    }
    let left = this.classUnion(flags, true);
    for (;;) {
      let op: string | undefined;
      for (const o of ["&&", "--", "~~"]) if (this.lookingAt(o)) op = o;
      if (op === undefined) break;
      this.pos += 2;
      const right = this.classUnion(flags, false);
      const a = piecesToExpr(left, false);
      const b = piecesToExpr(right, false);
      const expr =
        op === "&&" ? `(?=${a})${b}` : op === "--" ? `(?!${b})${a}` : `(?:(?!${b})${a}|(?!${a})${b})`;
      left = [{ expr }];
    }
    if (this.peek() !== "]") this.fail("unclosed character class");
    this.pos++;
    return piecesToExpr(left, negated);
  }

  private classUnion(flags: Flags, first: boolean): Piece[] {
    const pieces: Piece[] = [];
    let atStart = first;
    for (;;) {
      this.skipSpace(flags);
      const c = this.peek();
      if (c === undefined) this.fail("unclosed character class");
      if (c === "]" && !atStart) break;
      if (this.lookingAt("&&") || this.lookingAt("~~")) break;
      if (this.lookingAt("--") && pieces.length > 0) break;
      atStart = false;
      if (c === "[") {
        if (this.peek(1) === ":") {
          const close = this.chars.indexOf(":", this.pos + 2);
          const name = close > 0 && this.chars[close + 1] === "]" ? this.chars.slice(this.pos + 2, close).join("") : "";
          const negatedPosix = name.startsWith("^");
          const ranges = POSIX[negatedPosix ? name.slice(1) : name];
          if (ranges) {
            pieces.push({ simple: rangesBody(negatedPosix ? complement(ranges) : ranges) });
            this.pos = close + 2;
            continue;
          }
        }
        this.pos++;
        pieces.push({ expr: this.charClass(flags) });
        continue;
      }
      const lo = this.classAtom(flags);
      if ("piece" in lo) {
        pieces.push(lo.piece);
        continue;
      }
      this.skipSpace(flags);
      if (this.peek() === "-" && this.peek(1) !== "]" && this.peek(1) !== "-" && this.peek(1) !== undefined) {
        this.pos++;
        this.skipSpace(flags);
        const hi = this.classAtom(flags);
        if (!("char" in hi)) this.fail("invalid range boundary in character class");
        if (hi.char < lo.char) this.fail("invalid range in character class (start > end)");
        pieces.push({ simple: `${cpEscape(lo.char)}-${cpEscape(hi.char)}` });
      } else {
        pieces.push({ simple: cpEscape(lo.char) });
      }
    }
    return pieces;
  }

  private classAtom(flags: Flags): { char: number } | { piece: Piece } {
    if (this.peek() === "\\") {
      const e = this.escape(flags, true);
      if ("assert" in e) this.fail("assertion in a character class");
      return e;
    }
    const c = this.chars[this.pos++]!;
    return { char: c.codePointAt(0)! };
  }
}

/**
 * Translate a Rust regex to a JavaScript source and flags (always `u`, plus `i` when
 * case-insensitivity is in force anywhere). The result is meant to be anchored by the caller:
 * `new RegExp(`^(?:${source})$`, flags)`. Throws on syntax it cannot translate.
 */
export function translateRustRegex(source: string): { source: string; flags: string } {
  return new Translator(source).translate();
}
