//! Channel messages under per-epoch keys.
//!
//! Each epoch of a channel has an [`EpochKey`]: 32 fresh random bytes, never
//! derived from the previous epoch's key, so a member removed at epoch `n`
//! learns nothing about epoch `n + 1`. A message is encrypted once with
//! XChaCha20-Poly1305 under the epoch key and signed by the sender device's
//! Ed25519 key, so members who share the epoch key still cannot forge each
//! other's messages.
//!
//! # Sealed message format (version 1)
//!
//! The `content` string of the protocol is
//!
//! ```text
//! "hm1." base64url_nopad(
//!     epoch       u64 big-endian          8 bytes
//!     sender_len  u8 (1..=255)            1 byte
//!     sender      UTF-8 device id         sender_len bytes
//!     nonce       XChaCha20 nonce        24 bytes (random)
//!     ciphertext  XChaCha20-Poly1305     plaintext_len + 16 bytes
//!     signature   Ed25519                64 bytes (the last 64 bytes)
//! )
//! ```
//!
//! The channel id is not carried (the protocol already says where the
//! message was posted) but is bound by both the AEAD and the signature:
//!
//! * `ad = T("herald/channel-message/v1") | channel | u64 epoch | sender`
//! * `signature = Ed25519(sender, ad | nonce | ciphertext)`
//!
//! where `T(..) | x` is the length-prefixed transcript described in the crate
//! docs. Opening verifies the signature against the sender's pinned identity
//! first, then the AEAD.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::encoding::{Transcript, b64_decode, b64_encode, check_id};
use crate::identity::{Device, IdentityKeys, PinnedDevices, verify_sig};
use crate::{CryptoError, Result};

/// Prefix of the version-1 sealed message string.
pub const SEALED_PREFIX: &str = "hm1.";

/// The symmetric key of one channel epoch.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct EpochKey([u8; 32]);

impl EpochKey {
    /// 32 fresh random bytes.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        EpochKey(k)
    }

    /// Wraps raw key bytes (e.g. from an opened envelope or storage).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EpochKey(bytes)
    }

    /// The raw key bytes, for storing at rest. Handle with care.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochKey(..)")
    }
}

/// The epoch keys a client holds for one channel.
#[derive(Clone, Debug)]
pub struct EpochKeyring {
    channel: String,
    keys: BTreeMap<u64, EpochKey>,
}

impl EpochKeyring {
    /// An empty keyring for `channel`.
    pub fn new(channel: impl Into<String>) -> Result<Self> {
        let channel = channel.into();
        check_id("channel id", &channel)?;
        Ok(EpochKeyring { channel, keys: BTreeMap::new() })
    }

    /// The channel id.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Stores the key of `epoch`. Refuses to replace a different key for an
    /// epoch already held.
    pub fn insert(&mut self, epoch: u64, key: EpochKey) -> Result<()> {
        if let Some(existing) = self.keys.get(&epoch) {
            if existing != &key {
                return Err(CryptoError::mismatch(
                    "epoch key",
                    format!("the key already held for epoch {epoch}"),
                    "a different key",
                ));
            }
            return Ok(());
        }
        self.keys.insert(epoch, key);
        Ok(())
    }

    /// The key of `epoch`.
    pub fn get(&self, epoch: u64) -> Result<&EpochKey> {
        self.keys
            .get(&epoch)
            .ok_or_else(|| CryptoError::UnknownEpoch { channel: self.channel.clone(), epoch })
    }

    /// The newest epoch and its key.
    pub fn current(&self) -> Option<(u64, &EpochKey)> {
        self.keys.iter().next_back().map(|(e, k)| (*e, k))
    }

    /// All held epochs with their keys, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &EpochKey)> {
        self.keys.iter().map(|(e, k)| (*e, k))
    }
}

/// A parsed (not yet verified) sealed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedMessage {
    epoch: u64,
    sender: String,
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
    signature: [u8; 64],
}

/// A verified and decrypted channel message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedMessage {
    /// The epoch it was sealed under.
    pub epoch: u64,
    /// The sender device id (its signature was verified).
    pub sender: String,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

fn associated_data(channel: &str, epoch: u64, sender: &str) -> Vec<u8> {
    Transcript::new("herald/channel-message/v1").str(channel).u64(epoch).str(sender).finish()
}

fn signed_bytes(ad: &[u8], nonce: &[u8; 24], ciphertext: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ad.len() + 24 + ciphertext.len());
    m.extend_from_slice(ad);
    m.extend_from_slice(nonce);
    m.extend_from_slice(ciphertext);
    m
}

/// Seals `plaintext` for `channel` at `epoch` under `key`, signed by
/// `sender`. Returns the `hm1.` string.
pub fn seal_message<R: CryptoRng + RngCore>(
    rng: &mut R,
    sender: &Device,
    channel: &str,
    epoch: u64,
    key: &EpochKey,
    plaintext: &[u8],
) -> Result<String> {
    check_id("channel id", channel)?;
    let sender_id = sender.device_id();
    let sender_len = u8::try_from(sender_id.len())
        .map_err(|_| CryptoError::malformed("device id", "longer than 255 bytes"))?;
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let ad = associated_data(channel, epoch, sender_id);
    let aead = XChaCha20Poly1305::new(key.as_bytes().into());
    let ciphertext = aead
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &ad })
        .map_err(|_| CryptoError::malformed("channel message", "plaintext too long"))?;
    let signature = sender.sign(&signed_bytes(&ad, &nonce, &ciphertext));
    let mut out = Vec::with_capacity(8 + 1 + sender_id.len() + 24 + ciphertext.len() + 64);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(sender_len);
    out.extend_from_slice(sender_id.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out.extend_from_slice(&signature);
    Ok(format!("{SEALED_PREFIX}{}", b64_encode(&out)))
}

impl SealedMessage {
    /// Parses an `hm1.` string without verifying anything.
    pub fn parse(sealed: &str) -> Result<Self> {
        const WHAT: &str = "sealed message";
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| CryptoError::malformed(WHAT, "missing hm1. prefix"))?;
        let raw = b64_decode(WHAT, body)?;
        let too_short = || CryptoError::malformed(WHAT, "truncated");
        let (epoch, rest) = raw.split_first_chunk::<8>().ok_or_else(too_short)?;
        let (&sender_len, rest) = rest.split_first().ok_or_else(too_short)?;
        let sender_len = usize::from(sender_len);
        if rest.len() < sender_len + 24 + 16 + 64 {
            return Err(too_short());
        }
        let (sender, rest) = rest.split_at(sender_len);
        let sender =
            std::str::from_utf8(sender).map_err(|_| CryptoError::malformed(WHAT, "sender is not UTF-8"))?;
        check_id("sender device id", sender)?;
        let (nonce, rest) = rest.split_first_chunk::<24>().ok_or_else(too_short)?;
        let (ciphertext, signature) = rest.split_last_chunk::<64>().ok_or_else(too_short)?;
        Ok(SealedMessage {
            epoch: u64::from_be_bytes(*epoch),
            sender: sender.to_owned(),
            nonce: *nonce,
            ciphertext: ciphertext.to_vec(),
            signature: *signature,
        })
    }

    /// The epoch the message claims.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sender device the message claims.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// Verifies the signature against `sender` (the pinned identity of
    /// [`SealedMessage::sender`]) and decrypts with `key`.
    pub fn open(&self, channel: &str, key: &EpochKey, sender: &IdentityKeys) -> Result<Vec<u8>> {
        if sender.device_id != self.sender {
            return Err(CryptoError::mismatch("sender", &sender.device_id, &self.sender));
        }
        let ad = associated_data(channel, self.epoch, &self.sender);
        verify_sig(
            "channel message",
            &sender.ed25519,
            &signed_bytes(&ad, &self.nonce, &self.ciphertext),
            &self.signature,
        )?;
        let aead = XChaCha20Poly1305::new(key.as_bytes().into());
        aead.decrypt(XNonce::from_slice(&self.nonce), Payload { msg: &self.ciphertext, aad: &ad })
            .map_err(|_| CryptoError::Decrypt { what: "channel message" })
    }
}

/// Parses, verifies and decrypts a sealed message using the channel's
/// keyring and the pinned sender identities.
///
/// Whether the sender was a member of the channel at that epoch is a roster
/// question: check it with [`crate::RosterChain::is_member_device`].
pub fn open_message(sealed: &str, keyring: &EpochKeyring, pins: &PinnedDevices) -> Result<OpenedMessage> {
    let msg = SealedMessage::parse(sealed)?;
    let key = keyring.get(msg.epoch)?;
    let sender = pins.get(&msg.sender)?;
    let plaintext = msg.open(keyring.channel(), key, sender)?;
    Ok(OpenedMessage { epoch: msg.epoch, sender: msg.sender, plaintext })
}
