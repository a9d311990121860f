//! Tokens that change while a client runs: a [`TokenProvider`] the user supplies, the current
//! token shared by the socket task and REST calls, and when to refresh it.
//!
//! The SDK never verifies a token (it has no key): it only reads the `exp` claim of the JWT's
//! payload to know when to ask the provider for the next one.

use crate::error::ClientError;
use base64::Engine as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a [`TokenProvider`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, ClientError>> + Send>>;

/// An async callback returning a fresh token, e.g. from the app's own backend.
///
/// With one in [`crate::ClientConfig::token_provider`], the client asks it for a token at
/// every connect attempt (the token given to `connect` is then used only if the provider
/// fails on the very first attempt), and again before the current token expires (at 80% of
/// its remaining lifetime), handing the new one to the server with `auth.refresh`; REST calls
/// always carry the newest token.
#[derive(Clone)]
pub struct TokenProvider(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenProvider {
    /// Wraps an async closure: `TokenProvider::new(|| async { Ok(fetch().await?) })`.
    pub fn new<F, Fut>(f: F) -> TokenProvider
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, ClientError>> + Send + 'static,
    {
        TokenProvider(Arc::new(move || Box::pin(f())))
    }

    /// Asks for a token.
    pub fn fetch(&self) -> TokenFuture {
        (self.0)()
    }
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// The token in use, shared by the socket task (which replaces it) and REST calls. A std
/// `Mutex` is right here: it is held only to clone or swap a string, never across an `.await`.
#[derive(Debug, Clone)]
pub(crate) struct CurrentToken(Arc<Mutex<String>>);

impl CurrentToken {
    pub(crate) fn new(token: String) -> CurrentToken {
        CurrentToken(Arc::new(Mutex::new(token)))
    }

    pub(crate) fn get(&self) -> String {
        match self.0.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set(&self, token: String) {
        match self.0.lock() {
            Ok(mut t) => *t = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }
}

/// The `exp` claim (seconds since the Unix epoch) of a JWT, read without verifying it.
pub fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: u64,
    }
    serde_json::from_slice::<Exp>(&bytes).ok().map(|c| c.exp)
}

/// The `sub` claim (the user id) of a JWT, read without verifying it (the server does).
pub fn jwt_sub(token: &str) -> Option<String> {
    jwt_claims(token)?.get("sub")?.as_str().map(str::to_owned)
}

/// Whether a JWT's `grants` claim lists `grant`, read without verifying it.
pub fn jwt_has_grant(token: &str, grant: &str) -> bool {
    jwt_claims(token)
        .and_then(|c| {
            c.get("grants").and_then(|g| g.as_array()).map(|g| g.iter().any(|x| x.as_str() == Some(grant)))
        })
        .unwrap_or(false)
}

fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How long to wait before refreshing a token that expires at `exp_ms`, at `now_ms` (both
/// milliseconds since the Unix epoch): 80% of the remaining lifetime, so a slow provider
/// or a reconnect still has a fifth of it to spare. At most a year, so an absurd `exp`
/// cannot overflow a timer.
pub fn refresh_delay(now_ms: u64, exp_ms: u64) -> Duration {
    const YEAR_MS: u64 = 366 * 24 * 3600 * 1000;
    Duration::from_millis((exp_ms.saturating_sub(now_ms) / 5).saturating_mul(4).min(YEAR_MS))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn jwt(payload: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"HS256"}"#), enc(payload))
    }

    #[test]
    fn exp_is_read_from_the_payload_without_verifying() {
        assert_eq!(jwt_exp(&jwt(r#"{"sub":"ada","exp":1732000000}"#)), Some(1_732_000_000));
        assert_eq!(jwt_exp(&jwt(r#"{"sub":"ada"}"#)), None);
        assert_eq!(jwt_exp("not a jwt"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
    }

    #[test]
    fn refresh_comes_at_four_fifths_of_the_remaining_lifetime() {
        assert_eq!(refresh_delay(1_000, 11_000), Duration::from_secs(8));
        assert_eq!(refresh_delay(11_000, 1_000), Duration::ZERO, "already expired: now");
        assert!(refresh_delay(0, u64::MAX) <= Duration::from_secs(366 * 24 * 3600));
    }
}
