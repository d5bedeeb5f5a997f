/** The local cache as the client sees it, and the default bounded LRU. */

/** One cached value. */
export interface CacheEntry<V> {
  value: V;
  /** When it was stored (ms since the epoch, from the client's clock). */
  storedAt: number;
  /** Set by a soft invalidation: the entry is stale since then (served up to `maxStaleMs`). */
  staleSince?: number;
  /** Tags (surrogate keys) the entry was tracked with. */
  tags?: readonly string[];
}

/**
 * Storage for the client's entries. The client does all the invalidation logic (keys,
 * patterns, tags, soft marks) through these few operations, so any map-like store fits.
 */
export interface LocalCache<V> {
  /** The entry, counting as a use (for LRU-like policies). */
  get(key: string): CacheEntry<V> | undefined;
  /** The entry, without counting as a use. */
  peek(key: string): CacheEntry<V> | undefined;
  set(key: string, entry: CacheEntry<V>): void;
  delete(key: string): boolean;
  has(key: string): boolean;
  /** Every key (a snapshot or a live iterator; the client copies it before deleting). */
  keys(): Iterable<string>;
  clear(): void;
  readonly size: number;
}

export interface LruCacheOptions<V> {
  /** Most entries kept (default 10,000); the least recently used goes first. */
  maxEntries?: number;
  /** Called for each entry dropped to make room (not for deletes or clears). */
  onEvict?: (key: string, entry: CacheEntry<V>) => void;
}

/** A bounded LRU on a `Map` (insertion order = recency order). */
export class LruCache<V> implements LocalCache<V> {
  private readonly map = new Map<string, CacheEntry<V>>();
  readonly maxEntries: number;
  /** Called for each entry dropped to make room. */
  onEvict: ((key: string, entry: CacheEntry<V>) => void) | undefined;

  constructor(opts: LruCacheOptions<V> = {}) {
    const max = opts.maxEntries ?? 10_000;
    if (!Number.isInteger(max) || max < 1) throw new RangeError("maxEntries must be a positive integer");
    this.maxEntries = max;
    this.onEvict = opts.onEvict;
  }

  get(key: string): CacheEntry<V> | undefined {
    const e = this.map.get(key);
    if (e !== undefined) {
      this.map.delete(key);
      this.map.set(key, e);
    }
    return e;
  }

  peek(key: string): CacheEntry<V> | undefined {
    return this.map.get(key);
  }

  set(key: string, entry: CacheEntry<V>): void {
    this.map.delete(key);
    this.map.set(key, entry);
    while (this.map.size > this.maxEntries) {
      const [oldest, e] = this.map.entries().next().value as [string, CacheEntry<V>];
      this.map.delete(oldest);
      this.onEvict?.(oldest, e);
    }
  }

  delete(key: string): boolean {
    return this.map.delete(key);
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  keys(): IterableIterator<string> {
    return this.map.keys();
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}
