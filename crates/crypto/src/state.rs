//! The sealed container of a device's state at rest (`HST1`): the same bytes whichever SDK
//! (Rust, TypeScript through wasm, Python through PyO3) writes or reads them, so a state file
//! is one format everywhere. What goes inside (the SDK's JSON) and where the bytes are kept
//! (a file, IndexedDB) is the caller's; this module does no I/O.
//!
//! ```text
//! "HST1" | kdf u8 (0: a raw 32-byte key, 1: Argon2id of a passphrase) | salt[16]
//!        | nonce[24] | XChaCha20-Poly1305(key, ad = "HST1" | kdf | salt, plaintext)
//! ```
//!
//! The Argon2id parameters are the `argon2` crate's defaults (19 MiB, 2 passes, 1 lane,
//! OWASP's recommendation). The key is derived once, when a [`StateSealer`] is made; every
//! [`StateSealer::seal`] draws a fresh nonce. The derived key is also what the SDKs pickle
//! the Olm account and sessions under ([`crate::PickleKey`]).

use crate::{CryptoError, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"HST1";
const HEADER: usize = 4 + 1 + 16;
const NONCE: usize = 24;
const TAG: usize = 16;

/// Where the container's key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKdf {
    /// A raw 32-byte key (a key file, a key kept by the platform).
    Raw,
    /// Argon2id of a passphrase, with the salt kept in the container.
    Argon2id,
}

impl StateKdf {
    fn byte(self) -> u8 {
        match self {
            StateKdf::Raw => 0,
            StateKdf::Argon2id => 1,
        }
    }

    fn from_byte(b: u8) -> Option<StateKdf> {
        match b {
            0 => Some(StateKdf::Raw),
            1 => Some(StateKdf::Argon2id),
            _ => None,
        }
    }

    /// What a user calls it, for error messages: "key file" or "passphrase".
    pub fn name(self) -> &'static str {
        match self {
            StateKdf::Raw => "key file",
            StateKdf::Argon2id => "passphrase",
        }
    }
}

/// The secret a container is opened or created with.
#[derive(Clone, Copy)]
pub enum StateSecret<'a> {
    /// A passphrase, stretched with Argon2id.
    Passphrase(&'a str),
    /// A 32-byte key, used as is.
    Key(&'a [u8; 32]),
}

impl std::fmt::Debug for StateSecret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateSecret::Passphrase(_) => "StateSecret::Passphrase(..)",
            StateSecret::Key(_) => "StateSecret::Key(..)",
        })
    }
}

impl StateSecret<'_> {
    /// The kind of key derivation this secret uses.
    pub fn kdf(&self) -> StateKdf {
        match self {
            StateSecret::Passphrase(_) => StateKdf::Argon2id,
            StateSecret::Key(_) => StateKdf::Raw,
        }
    }

    fn derive(&self, salt: &[u8; 16]) -> Result<Zeroizing<[u8; 32]>> {
        let mut out = Zeroizing::new([0u8; 32]);
        match self {
            StateSecret::Key(k) => out.copy_from_slice(&k[..]),
            StateSecret::Passphrase(p) => argon2::Argon2::default()
                .hash_password_into(p.as_bytes(), salt, out.as_mut())
                .map_err(|e| CryptoError::malformed("state passphrase", e.to_string()))?,
        }
        Ok(out)
    }
}

/// A derived state key with its salt: seals new versions of the state and is the key the
/// pickles inside are made under.
pub struct StateSealer {
    kdf: StateKdf,
    salt: [u8; 16],
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for StateSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSealer").field("kdf", &self.kdf).finish_non_exhaustive()
    }
}

impl StateSealer {
    /// A sealer for a new container: a fresh salt from `rng`, the key derived from `secret`.
    pub fn create<R: CryptoRng + RngCore>(rng: &mut R, secret: StateSecret<'_>) -> Result<StateSealer> {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let key = secret.derive(&salt)?;
        Ok(StateSealer { kdf: secret.kdf(), salt, key })
    }

    /// Opens a container: the sealer to write its next versions with, and the plaintext.
    ///
    /// Fails with [`CryptoError::Malformed`] for bytes that are not an `HST1` container,
    /// [`CryptoError::Mismatch`] when it was made with the other kind of secret (a passphrase
    /// for a key file or the other way round), and [`CryptoError::Decrypt`] for a wrong
    /// secret or altered bytes (the two cannot be told apart).
    pub fn open(raw: &[u8], secret: StateSecret<'_>) -> Result<(StateSealer, Zeroizing<Vec<u8>>)> {
        if raw.len() < HEADER + NONCE + TAG || &raw[..4] != MAGIC {
            return Err(CryptoError::malformed("device state", "not a Herald device state (HST1)"));
        }
        let kdf = StateKdf::from_byte(raw[4])
            .ok_or_else(|| CryptoError::malformed("device state", format!("unknown key kind {}", raw[4])))?;
        if kdf != secret.kdf() {
            return Err(CryptoError::mismatch("device state key kind", kdf.name(), secret.kdf().name()));
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&raw[5..HEADER]);
        let key = secret.derive(&salt)?;
        let aead = XChaCha20Poly1305::new(key.as_ref().into());
        let nonce = XNonce::from_slice(&raw[HEADER..HEADER + NONCE]);
        let plain = aead
            .decrypt(nonce, Payload { msg: &raw[HEADER + NONCE..], aad: &raw[..HEADER] })
            .map_err(|_| CryptoError::Decrypt { what: "device state" })?;
        Ok((StateSealer { kdf, salt, key }, Zeroizing::new(plain)))
    }

    /// Seals `plaintext` into a new container under this sealer's key and salt.
    pub fn seal<R: CryptoRng + RngCore>(&self, rng: &mut R, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER + NONCE + plaintext.len() + TAG);
        out.extend_from_slice(MAGIC);
        out.push(self.kdf.byte());
        out.extend_from_slice(&self.salt);
        let mut nonce = [0u8; NONCE];
        rng.fill_bytes(&mut nonce);
        let aead = XChaCha20Poly1305::new(self.key.as_ref().into());
        let ct = aead
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &out[..HEADER] })
            .map_err(|_| CryptoError::Decrypt { what: "device state (sealing)" })?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The derived 32-byte key (the SDKs pickle the Olm account and sessions under it).
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// How the key was derived.
    pub fn kdf(&self) -> StateKdf {
        self.kdf
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn a_container_opens_with_its_secret_only() {
        let sealer = StateSealer::create(&mut OsRng, StateSecret::Passphrase("correct horse")).unwrap();
        let sealed = sealer.seal(&mut OsRng, b"{\"user\":\"ada\"}").unwrap();
        let (again, plain) = StateSealer::open(&sealed, StateSecret::Passphrase("correct horse")).unwrap();
        assert_eq!(&plain[..], b"{\"user\":\"ada\"}");
        assert_eq!(again.key(), sealer.key());
        assert!(matches!(
            StateSealer::open(&sealed, StateSecret::Passphrase("wrong")),
            Err(CryptoError::Decrypt { .. })
        ));
        assert!(matches!(
            StateSealer::open(&sealed, StateSecret::Key(&[7; 32])),
            Err(CryptoError::Mismatch { .. })
        ));
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(StateSealer::open(&altered, StateSecret::Passphrase("correct horse")).is_err());
        assert!(matches!(
            StateSealer::open(b"HST1", StateSecret::Key(&[7; 32])),
            Err(CryptoError::Malformed { .. })
        ));
    }

    #[test]
    fn a_raw_key_is_used_as_is_and_each_seal_draws_a_new_nonce() {
        let key = [9u8; 32];
        let sealer = StateSealer::create(&mut OsRng, StateSecret::Key(&key)).unwrap();
        assert_eq!(sealer.key(), &key);
        let a = sealer.seal(&mut OsRng, b"x").unwrap();
        let b = sealer.seal(&mut OsRng, b"x").unwrap();
        assert_ne!(a, b);
        assert_eq!(&a[..HEADER], &b[..HEADER]);
        assert_eq!(&StateSealer::open(&b, StateSecret::Key(&key)).unwrap().1[..], b"x");
    }
}
