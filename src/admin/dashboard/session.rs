//! Dashboard sessions: a server-side store in this process's memory, keyed by the SHA-256 of a
//! random 256-bit session id that only the browser's HttpOnly cookie holds.
//!
//! Why server-side rather than a signed or encrypted cookie: signing out must end the session on
//! the server (a copied cookie is dead after logout), and the credential behind the session (the
//! admin token, or the tenant's API key, re-checked on every request so a revoked key ends its
//! session at once) stays in the server's memory and never reaches the browser in any form. The
//! cost: sessions are per instance and do not survive a restart (the user signs in again); behind
//! a load balancer over several instances the dashboard needs sticky sessions.
//!
//! Each session has a CSRF token, random and separate from the id, that the page reads from
//! `/dashboard/api/session` and sends as `X-CSRF-Token` on every state-changing request; the
//! extractors compare it in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "x402_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session ends this long after sign-in, whatever its use.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// At most this many live sessions per instance; the oldest is dropped past it (sign-ins are
/// rate limited per IP like every management request, but memory must stay bounded regardless).
const MAX_SESSIONS: usize = 10_000;

/// Who a session belongs to.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Signed in with `admin.token`.
    Operator,
    /// Signed in with an API key of `tenant`: the key itself, authenticated again on each request.
    Tenant { tenant: String, key: Secret },
}

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub expires_at: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The live sessions of this instance.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie only) and the session.
    pub fn create(&self, principal: Principal) -> (String, Session) {
        let id = random_token();
        let session = Session {
            principal,
            csrf: random_token(),
            expires_at: Instant::now() + LIFETIME,
        };
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires_at > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        map.insert(hash(&id), session.clone());
        (id, session)
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        let key = hash(id);
        match map.get(&key) {
            Some(s) if s.expires_at > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with this id (signing out).
    pub fn remove(&self, id: &str) -> bool {
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&hash(id)).is_some()
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value for a new session: HttpOnly (no script reads it), SameSite=Strict (no
/// other site's page or link sends it; the dashboard is a single page that fetches its own data,
/// so Strict costs nothing), Path=/ (it authenticates the API under /api too), Secure when the
/// browser reached us over TLS (a TLS-terminating proxy in front says so with
/// `X-Forwarded-Proto: https`; the admin listener itself speaks plain HTTP, and a Secure cookie
/// would never come back over it), and a Max-Age matching the server-side lifetime.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the browser reached us over TLS (through a proxy that terminated it).
pub fn over_tls(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn sessions_are_found_by_id_and_end_on_removal() {
        let s = Sessions::default();
        let (id, session) = s.create(Principal::Operator);
        assert_eq!(id.len(), 43);
        assert_ne!(id, session.csrf);
        assert!(s.get(&id).is_some());
        assert!(s.get("nope").is_none());
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(s.remove(&id));
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_with_its_attributes() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("a=1; x402_session=abc ; b=2"),
        );
        assert_eq!(cookie_id(&h), Some("abc"));
        let c = set_cookie("abc", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&h));
    }
}
