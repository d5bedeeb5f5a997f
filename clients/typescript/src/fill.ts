/**
 * The fill guard: stops the stale-set race of a cache-aside client.
 *
 * The race: a client misses key K, reads K from the source of truth, and meanwhile K is
 * updated and invalidated; the client then stores the value it read, already stale, and keeps
 * it until the next invalidation. Like memcache leases (a fill token voided by a delete),
 * {@link FillGuard.begin} hands out a token, every invalidation covering K (by key, pattern,
 * tag or reset) voids the tokens of K, and {@link FillGuard.complete} stores only with a token
 * that is still valid. JavaScript runs one event handler at a time, so the validity check and
 * the store cannot interleave with an invalidation.
 *
 * Cost: one small map entry per fill in progress; a pattern invalidation scans the keys being
 * filled (few), not the cache.
 */

/** Permission to store one value for one key, valid until that key is invalidated. */
export interface FillToken {
  readonly key: string;
  /** Tags the value will carry (sent with the `track`). */
  readonly tags: readonly string[];
  /** @internal */
  readonly id: number;
}

export class FillGuard {
  private next = 0;
  private readonly inflight = new Map<string, Map<number, FillToken>>();

  /** Start filling `key`. Read the source of truth only after this returns. */
  begin(key: string, tags: readonly string[] = []): FillToken {
    const token: FillToken = Object.freeze({ key, tags: Object.freeze([...tags]), id: ++this.next });
    let ids = this.inflight.get(key);
    if (!ids) this.inflight.set(key, (ids = new Map()));
    ids.set(token.id, token);
    return token;
  }

  /** Whether `token` is still valid (nothing covering its key was invalidated since `begin`). */
  isValid(token: FillToken): boolean {
    return this.inflight.get(token.key)?.has(token.id) ?? false;
  }

  /** Run `store` only if `token` is still valid; the token is used up either way. */
  complete(token: FillToken, store: (key: string) => void): boolean {
    const valid = this.remove(token);
    if (valid) store(token.key);
    return valid;
  }

  /** Give a token up without storing (the load failed). */
  abandon(token: FillToken): void {
    this.remove(token);
  }

  private remove(token: FillToken): boolean {
    const ids = this.inflight.get(token.key);
    if (!ids || !ids.delete(token.id)) return false;
    if (ids.size === 0) this.inflight.delete(token.key);
    return true;
  }

  /** Void every fill of `key`. */
  voidKey(key: string): void {
    this.inflight.delete(key);
  }

  /** Void every fill whose key `matches`. */
  voidMatching(matches: (key: string) => boolean): void {
    for (const key of [...this.inflight.keys()]) if (matches(key)) this.inflight.delete(key);
  }

  /** Void every fill whose token carries one of `tags`. */
  voidTags(tags: ReadonlySet<string>): void {
    for (const [key, ids] of [...this.inflight]) {
      for (const [id, token] of [...ids]) if (token.tags.some((t) => tags.has(t))) ids.delete(id);
      if (ids.size === 0) this.inflight.delete(key);
    }
  }

  /** Void every fill (reset, or an event the client cannot interpret). */
  voidAll(): void {
    this.inflight.clear();
  }

  /** Keys being filled. */
  keys(): IterableIterator<string> {
    return this.inflight.keys();
  }

  isFilling(key: string): boolean {
    return this.inflight.has(key);
  }

  /** Fills in progress. */
  get size(): number {
    let n = 0;
    for (const ids of this.inflight.values()) n += ids.size;
    return n;
  }
}
