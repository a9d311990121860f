//! Private helpers: base64 serde adapters, the signing transcript, id checks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{CryptoError, MAX_ID_LEN, Result};

/// Base64url without padding, the only base64 alphabet used by this crate.
pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64_decode(what: &'static str, s: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).map_err(|e| CryptoError::malformed(what, format!("base64: {e}")))
}

/// Serde adapter for fixed-size byte arrays as base64url strings.
pub(crate) mod b64_array {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64_encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let v = super::b64_decode("base64 field", &s).map_err(D::Error::custom)?;
        let len = v.len();
        v.try_into().map_err(|_| D::Error::custom(format!("expected {N} bytes, got {len}")))
    }
}

/// Serde adapter for byte vectors as base64url strings.
pub(crate) mod b64_vec {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64_encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::b64_decode("base64 field", &s).map_err(D::Error::custom)
    }
}

/// A domain-separated, length-prefixed byte transcript: what gets signed or
/// used as AEAD associated data.
///
/// Layout: `u32 BE len(domain) | domain`, then per field either
/// `u32 BE len | bytes` ([`Transcript::bytes`], [`Transcript::str`]) or a
/// fixed-width big-endian integer ([`Transcript::u64`], [`Transcript::u8`]).
#[derive(Clone)]
pub(crate) struct Transcript(Vec<u8>);

impl Transcript {
    pub(crate) fn new(domain: &str) -> Self {
        Transcript(Vec::with_capacity(128)).str(domain)
    }

    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        // Lengths above u32::MAX cannot occur for the objects signed here
        // (ids <= 255 bytes, keys, hashes); saturate rather than panic.
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    pub(crate) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Checks a device, user or channel identifier: 1..=255 bytes, no control
/// characters.
pub(crate) fn check_id(what: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(CryptoError::malformed(what, format!("length {} not in 1..={MAX_ID_LEN}", id.len())));
    }
    if id.chars().any(char::is_control) {
        return Err(CryptoError::malformed(what, "contains control characters"));
    }
    Ok(())
}
