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
            scopes: vec![Scope::Invalidate, Scope::Subscribe, Scope::AuditRead, Scope::Metrics],
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
