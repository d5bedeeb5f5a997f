//! Patterns as the server uses them: the language itself lives in `invalidator-core`
//! (shared with the client library); the server adds the bounded cache of compiled patterns.

mod cache;

pub use self::cache::{CacheStats, DEFAULT_BYTE_BUDGET, PatternCache};
pub use invalidator_core::pattern::*;
