//! Tokens, scopes, key-prefix restrictions and rate limits (SPEC "Auth").
//!
//! OWNER: lead. `Principal` is what every handler (HTTP and WebSocket) receives after
//! authentication; it answers "may this caller touch this key / pattern".

use crate::pattern::Pattern;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Invalidate,
    Subscribe,
    AuditRead,
    Metrics,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "invalidate" => Some(Scope::Invalidate),
            "subscribe" => Some(Scope::Subscribe),
            "audit:read" => Some(Scope::AuditRead),
            "metrics" => Some(Scope::Metrics),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Invalidate => "invalidate",
            Scope::Subscribe => "subscribe",
            Scope::AuditRead => "audit:read",
            Scope::Metrics => "metrics",
        }
    }
}

/// An authenticated caller (or the anonymous caller of open mode).
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token name; `None` in open mode.
    pub name: Option<String>,
    pub scopes: Vec<Scope>,
    /// Allowed key prefixes; `None` means every key.
    pub prefixes: Option<Vec<String>>,
}

impl Principal {
    /// The caller of a server with no tokens configured: every scope, every key.
    pub fn open() -> Principal {
        Principal {
            name: None,
            scopes: vec![
                Scope::Invalidate,
                Scope::Subscribe,
                Scope::AuditRead,
                Scope::Metrics,
            ],
            prefixes: None,
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// May this caller invalidate / receive `key`?
    pub fn allows_key(&self, key: &str) -> bool {
        match &self.prefixes {
            None => true,
            Some(ps) => ps.iter().any(|p| key.starts_with(p.as_str())),
        }
    }

    /// May this caller use `pattern`? Only if every key it can match lies inside one allowed
    /// prefix (a suffix or an unanchored regex cannot be proven so and is refused).
    pub fn allows_pattern(&self, pattern: &Pattern) -> bool {
        match &self.prefixes {
            None => true,
            Some(ps) => ps.iter().any(|p| pattern.confined_to(p)),
        }
    }
}

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{RateLimit, TokenConfig};
use crate::error::{ApiError, ErrorCode};

/// A token bucket: `burst` tokens, refilled at `per_second`.
struct Bucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(limit: RateLimit) -> Bucket {
        Bucket {
            limit,
            state: Mutex::new((limit.burst, Instant::now())),
        }
    }

    /// Take one token, or say how many whole seconds until one is available.
    fn take(&self) -> Result<(), u64> {
        let mut st = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(st.1).as_secs_f64() * self.limit.per_second;
        st.0 = (st.0 + refill).min(self.limit.burst);
        st.1 = now;
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - st.0) / self.limit.per_second.max(1e-9);
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

struct TokenEntry {
    sha256: [u8; 32],
    principal: Arc<Principal>,
    bucket: Option<Bucket>,
}

/// The configured tokens. Empty means open mode.
pub struct Authenticator {
    tokens: Vec<TokenEntry>,
    open: Arc<Principal>,
}

/// Why a token config was refused.
#[derive(Debug, thiserror::Error)]
#[error("token {name:?}: {reason}")]
pub struct TokenConfigError {
    pub name: String,
    pub reason: String,
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

impl Authenticator {
    pub fn new(tokens: &[TokenConfig]) -> Result<Authenticator, TokenConfigError> {
        let err = |t: &TokenConfig, reason: String| TokenConfigError {
            name: t.name.clone(),
            reason,
        };
        let mut entries = Vec::with_capacity(tokens.len());
        for t in tokens {
            let sha256 = match (&t.token_sha256, &t.token) {
                (Some(h), _) => parse_hex32(h)
                    .ok_or_else(|| err(t, "token_sha256 must be 64 hex digits".into()))?,
                (None, Some(plain)) => Sha256::digest(plain.as_bytes()).into(),
                (None, None) => return Err(err(t, "needs `token` or `token_sha256`".into())),
            };
            let mut scopes = Vec::new();
            for s in &t.scopes {
                scopes.push(Scope::parse(s).ok_or_else(|| {
                    err(
                        t,
                        format!("unknown scope {s:?} (invalidate, subscribe, audit:read, metrics)"),
                    )
                })?);
            }
            if let Some(rl) = t.rate_limit
                && (rl.per_second <= 0.0 || rl.burst < 1.0)
            {
                return Err(err(
                    t,
                    "rate_limit needs per_second > 0 and burst >= 1".into(),
                ));
            }
            let principal = Principal {
                name: Some(t.name.clone()),
                scopes,
                prefixes: t.prefixes.clone(),
            };
            entries.push(TokenEntry {
                sha256,
                principal: Arc::new(principal),
                bucket: t.rate_limit.map(Bucket::new),
            });
        }
        Ok(Authenticator {
            tokens: entries,
            open: Arc::new(Principal::open()),
        })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Authenticate a presented secret (None: no credentials) for `scope`.
    ///
    /// The secret is hashed and compared with every configured hash in constant time, so
    /// neither the secret nor which token matched leaks through timing.
    pub fn authenticate(
        &self,
        secret: Option<&str>,
        scope: Scope,
    ) -> Result<Arc<Principal>, ApiError> {
        if self.is_open() {
            return Ok(self.open.clone());
        }
        let Some(secret) = secret else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing bearer token",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut found: Option<&TokenEntry> = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let Some(entry) = found else {
            return Err(ApiError::new(ErrorCode::Unauthorized, "invalid token"));
        };
        if !entry.principal.has_scope(scope) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("token lacks the `{}` scope", scope.as_str()),
            ));
        }
        if let Some(bucket) = &entry.bucket
            && let Err(wait) = bucket.take()
        {
            return Err(ApiError {
                retry_after: Some(wait),
                ..ApiError::new(ErrorCode::RateLimited, "rate limit exceeded for this token")
            });
        }
        Ok(entry.principal.clone())
    }
}

/// The bearer secret of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str, scopes: &[&str], prefixes: Option<&[&str]>) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            token_sha256: None,
            token: Some(secret.into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            prefixes: prefixes.map(|p| p.iter().map(|s| s.to_string()).collect()),
            rate_limit: None,
        }
    }

    #[test]
    fn open_mode_allows_everything() {
        let a = Authenticator::new(&[]).unwrap();
        assert!(a.authenticate(None, Scope::Invalidate).is_ok());
    }

    #[test]
    fn tokens_scopes_and_errors() {
        let mut hashed = token("h", "x", &["metrics"], None);
        hashed.token = None;
        hashed.token_sha256 = Some(hex::encode(Sha256::digest(b"hashed-secret")));
        let a = Authenticator::new(&[
            token("svc", "s3cret", &["invalidate"], Some(&["orders:"])),
            hashed,
        ])
        .unwrap();
        assert_eq!(
            a.authenticate(None, Scope::Invalidate).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            a.authenticate(Some("nope"), Scope::Invalidate)
                .unwrap_err()
                .code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            a.authenticate(Some("s3cret"), Scope::Metrics)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        let p = a.authenticate(Some("s3cret"), Scope::Invalidate).unwrap();
        assert!(p.allows_key("orders:1") && !p.allows_key("users:1"));
        assert!(
            a.authenticate(Some("hashed-secret"), Scope::Metrics)
                .is_ok()
        );
    }

    #[test]
    fn rate_limit() {
        let mut t = token("r", "k", &["invalidate"], None);
        t.rate_limit = Some(RateLimit {
            per_second: 1.0,
            burst: 2.0,
        });
        let a = Authenticator::new(&[t]).unwrap();
        assert!(a.authenticate(Some("k"), Scope::Invalidate).is_ok());
        assert!(a.authenticate(Some("k"), Scope::Invalidate).is_ok());
        let e = a.authenticate(Some("k"), Scope::Invalidate).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.retry_after.unwrap() >= 1);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
