export {
  CacheClient,
  type CacheClientOptions,
  type ClientEvents,
  type EntryView,
  type InvalidateEvent,
  type Logger,
  type Status,
  type Subscription,
  type TrackOptions,
} from "./client.js";
export { type CacheEntry, type LocalCache, LruCache, type LruCacheOptions } from "./cache.js";
export { FillGuard, type FillToken } from "./fill.js";
export {
  type Pattern,
  PatternCache,
  PatternError,
  type PatternType,
  PATTERN_TYPES,
  inferPatternType,
  isPatternType,
  parseEventPattern,
  parsePattern,
} from "./pattern.js";
export { translateRustRegex } from "./regex.js";
export {
  ClosedError,
  ConnectError,
  InvalidatorError,
  NotConnectedError,
  ServerError,
  TimeoutError,
} from "./errors.js";
export type { WebSocketConstructor, WebSocketFactory, WebSocketLike } from "./transport.js";
