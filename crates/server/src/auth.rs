//! Tokens (PROTOCOL.md §2): JWT verification on every REST call and every `connect`, minting
//! for `herald token`, and the data directory's secret.

use herald_engine::{Grants, Principal};
use herald_proto::UserId;
use herald_proto::model::{UserInfo, UserKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The claims Herald reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<String>>,
}

/// Why a token was refused. The text goes to the client; it names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// How tokens are verified.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl Verifier {
    /// HS256 with the app's shared secret.
    pub fn hs256(secret: &[u8]) -> Verifier {
        Verifier { key: DecodingKey::from_secret(secret), validation: validation(Algorithm::HS256) }
    }

    /// EdDSA (Ed25519) with a public key in PEM, for tokens minted elsewhere.
    pub fn ed25519_pem(pem: &[u8]) -> Result<Verifier, AuthError> {
        let key =
            DecodingKey::from_ed_pem(pem).map_err(|e| AuthError::Invalid(format!("public key: {e}")))?;
        Ok(Verifier { key, validation: validation(Algorithm::EdDSA) })
    }

    /// Verifies a token and turns its claims into a principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_with_exp(token).map(|(p, _)| p)
    }

    /// Verifies a token; also returns its `exp` (seconds since the Unix epoch), when the
    /// gateway closes a connection that has not refreshed it.
    pub fn verify_with_exp(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let exp = data.claims.exp;
        Ok((principal(data.claims)?, exp))
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 5;
    v.set_required_spec_claims(&["exp", "sub"]);
    v.validate_aud = false;
    v
}

/// Checks the claims' own rules (§2, §3).
pub fn principal(c: Claims) -> Result<Principal, AuthError> {
    let sub = UserId::parse(c.sub).map_err(|e| AuthError::Invalid(e.to_string()))?;
    let kind = match c.kind.as_deref() {
        None => UserKind::Human,
        Some(k) => UserKind::parse(k).ok_or_else(|| AuthError::Invalid(format!("unknown kind {k:?}")))?,
    };
    let app = c.app.unwrap_or_else(|| "default".to_owned());
    if app.is_empty() || app.len() > 128 {
        return Err(AuthError::Invalid("app must be 1-128 characters".into()));
    }
    if let Some(n) = &c.name
        && n.chars().count() > 256
    {
        return Err(AuthError::Invalid("name must be at most 256 characters".into()));
    }
    Ok(Principal {
        app,
        user: UserInfo { id: sub.into_string(), name: c.name, kind },
        grants: Grants::from_claim(c.grants.as_deref()),
    })
}

/// Signs claims with an HS256 secret.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The token secret, from the first of: `secret` (HERALD_SECRET), the file `secret_file`,
/// the data directory's `secret` (created on first use). `herald serve` and `herald token`
/// both resolve it here, so they always agree. Each is trimmed and must have at least 32
/// characters; the error names where it came from, never the secret.
pub fn resolve_secret(
    secret: Option<&str>,
    secret_file: Option<&Path>,
    data: &Path,
) -> std::io::Result<Vec<u8>> {
    match (secret, secret_file) {
        (Some(text), _) => secret_text(text, &"HERALD_SECRET"),
        (None, Some(path)) => read_secret_file(path),
        (None, None) => load_or_create_secret(data),
    }
}

/// A secret file in the format of the data directory's `secret` (text, trimmed, at least 32
/// characters): `--secret-file`, and `herald bench --token-secret-file`.
pub fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    secret_text(&text, &path.display())
}

/// The one check of a secret's text: trimmed, at least 32 characters. The error names where
/// it came from (`whence`), never the secret.
pub(crate) fn secret_text(text: &str, whence: &dyn std::fmt::Display) -> std::io::Result<Vec<u8>> {
    let text = text.trim();
    if text.len() < 32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the secret in {whence} is shorter than 32 characters"),
        ));
    }
    Ok(text.as_bytes().to_vec())
}

/// The path of the token secret inside a data directory.
pub fn secret_path(data: &Path) -> PathBuf {
    data.join("secret")
}

/// Reads the data directory's secret, generating it (32 random bytes, hex, mode 0600) on
/// first use. `herald serve` and `herald token` both call this, so they always agree.
pub fn load_or_create_secret(data: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::create_dir_all(data)?;
    load_or_create_secret_at(&secret_path(data))
}

/// Reads the secret file at `path`, generating it (32 random bytes, hex, mode 0600) if it does
/// not exist: the token secret and the app secrets (`crate::app_secret`) alike.
pub fn load_or_create_secret_at(path: &Path) -> std::io::Result<Vec<u8>> {
    let path = path.to_path_buf();
    match std::fs::read_to_string(&path) {
        Ok(s) => secret_text(&s, &path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
            let text = hex::encode(bytes);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            match opts.open(&path) {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()?;
                    Ok(text.into_bytes())
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec())
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "ada".into(),
            name: Some("Ada".into()),
            kind: None,
            exp,
            iat: None,
            app: None,
            grants: None,
        }
    }

    #[test]
    fn verifies_and_refuses() {
        let v = Verifier::hs256(b"0123456789abcdef0123456789abcdef");
        let good = mint_hs256(b"0123456789abcdef0123456789abcdef", &claims(now_secs() + 60)).unwrap();
        let p = v.verify(&good).unwrap();
        assert_eq!(p.user.id, "ada");
        assert_eq!(p.app, "default");
        assert!(p.grants.channels_create && !p.grants.server);
        let expired = mint_hs256(b"0123456789abcdef0123456789abcdef", &claims(now_secs() - 3600)).unwrap();
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let forged = mint_hs256(b"another secret another secret 00", &claims(now_secs() + 60)).unwrap();
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert!(matches!(v.verify("a.b.c"), Err(AuthError::Invalid(_))));
    }

    // A throwaway Ed25519 key pair, made for this test with `openssl genpkey -algorithm ed25519`.
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFVBRhQ5/ikrY5BNmH8gPhZWMT6YQ2/yGwefprEli9PW
-----END PRIVATE KEY-----
";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAtsgeTV1NIfS4LNCjj5WMHJ5rvJJhSN+n+cjk0jipx7U=
-----END PUBLIC KEY-----
";

    #[test]
    fn eddsa_tokens_minted_elsewhere_verify_with_the_public_key() {
        let key = jsonwebtoken::EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(now_secs() + 60), &key).unwrap();
        let v = Verifier::ed25519_pem(ED_PUBLIC.as_bytes()).unwrap();
        assert_eq!(v.verify(&token).unwrap().user.id, "ada");
        // An HS256 token is refused by an EdDSA verifier (no algorithm confusion)...
        let hs = mint_hs256(b"0123456789abcdef0123456789abcdef", &claims(now_secs() + 60)).unwrap();
        assert!(matches!(v.verify(&hs), Err(AuthError::Invalid(_))));
        // ...and an EdDSA token by an HS256 verifier.
        assert!(matches!(
            Verifier::hs256(b"0123456789abcdef0123456789abcdef").verify(&token),
            Err(AuthError::Invalid(_))
        ));
        assert!(Verifier::ed25519_pem(b"not a key").is_err());
    }

    #[test]
    fn secret_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(secret_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
