//! The single error type of the crate.
//!
//! Every failure on untrusted input is reported as a [`CryptoError`]; no
//! function panics on malformed, truncated or tampered data. Error messages
//! name the object and the check that failed but never contain key material
//! or plaintext.

use thiserror::Error;

/// Everything that can go wrong while building, verifying or opening the
/// sealed forms of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Input could not be parsed (bad prefix, base64, JSON, lengths, ...).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which object was being parsed.
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// An Ed25519 signature did not verify.
    #[error("bad signature on {what}")]
    BadSignature {
        /// Which object carried the signature.
        what: &'static str,
    },
    /// A public key is of low order, the identity, or not a valid point.
    #[error("weak or invalid {what} public key")]
    WeakKey {
        /// Which key.
        what: &'static str,
    },
    /// The same public key is published by two different devices.
    #[error("public key reused by devices {first:?} and {second:?}")]
    KeyReuse {
        /// The device that owned the key first.
        first: String,
        /// The device that tried to reuse it.
        second: String,
    },
    /// A device id is already pinned to different identity keys.
    #[error("device {device:?} is already pinned to different identity keys")]
    PinMismatch {
        /// The device id.
        device: String,
    },
    /// A device the operation needs has not been pinned.
    #[error("unknown device {device:?}")]
    UnknownDevice {
        /// The device id.
        device: String,
    },
    /// No key is known for the epoch a message or envelope refers to.
    #[error("no key for channel {channel:?} epoch {epoch}")]
    UnknownEpoch {
        /// The channel id.
        channel: String,
        /// The epoch.
        epoch: u64,
    },
    /// An object refers to another channel, epoch, sender or recipient than
    /// the one expected.
    #[error("{what} mismatch: expected {expected:?}, found {found:?}")]
    Mismatch {
        /// Which field.
        what: &'static str,
        /// The expected value.
        expected: String,
        /// The value found.
        found: String,
    },
    /// AEAD decryption failed (wrong key, tampered ciphertext or associated
    /// data).
    #[error("decryption of {what} failed")]
    Decrypt {
        /// Which object.
        what: &'static str,
    },
    /// Olm session creation failed.
    #[error("olm session creation failed: {0}")]
    OlmSession(#[from] vodozemac::olm::SessionCreationError),
    /// Olm decryption failed; the session is unchanged.
    #[error("olm decryption failed: {0}")]
    OlmDecrypt(#[from] vodozemac::olm::DecryptionError),
    /// A message that was already accepted was presented again.
    #[error("replayed {what}")]
    Replay {
        /// Which object.
        what: &'static str,
    },
    /// A pickle could not be decrypted or decoded.
    #[error("cannot restore {what} pickle: {reason}")]
    Pickle {
        /// What was pickled.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// HPKE setup, seal or open failed.
    #[error("hpke {context} failed: {reason}")]
    Hpke {
        /// Which step.
        context: &'static str,
        /// The library's message.
        reason: String,
    },
    /// A roster commit does not extend the verified chain.
    #[error("roster commit for epoch {epoch} rejected: {reason}")]
    Roster {
        /// The epoch of the rejected commit.
        epoch: u64,
        /// Why.
        reason: String,
    },
    /// A commit is signed by a device that is not a pinned admin.
    #[error("commit signer {signer:?} is not a pinned channel admin")]
    UnauthorizedSigner {
        /// The claimed signer.
        signer: String,
    },
    /// File parameters or a manifest are out of range.
    #[error("invalid file parameters: {0}")]
    FileParams(String),
    /// Fewer than `k` shards survived hash checking.
    #[error("not enough intact shards: have {have}, need {need}")]
    NotEnoughShards {
        /// Intact shards available.
        have: usize,
        /// Shards required (`k`).
        need: usize,
    },
    /// Reed-Solomon encoding or decoding failed.
    #[error("erasure coding failed: {0}")]
    Erasure(String),
}

impl CryptoError {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed { what, reason: reason.into() }
    }

    pub(crate) fn mismatch(
        what: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self::Mismatch { what, expected: expected.into(), found: found.into() }
    }
}
