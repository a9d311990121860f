//! Device identity: the local [`Device`], its public [`IdentityKeys`], the
//! signed [`KeyBundle`] it publishes, and [`PinnedDevices`], the set of peer
//! identities a client has verified and pinned.
//!
//! A device has three long-term keys:
//!
//! * an Ed25519 signing key (vodozemac's fingerprint key) that signs
//!   everything else: its other keys, one-time keys, channel messages, key
//!   envelopes and roster commits;
//! * a Curve25519 identity key (vodozemac's), used in Olm's triple
//!   Diffie-Hellman;
//! * an X25519 envelope key (ours, drawn from the caller's RNG), the HPKE
//!   recipient key for [`crate::KeyEnvelope`]s.
//!
//! Signed messages (see `encoding::Transcript` for the framing):
//!
//! * identity: `T("herald/identity/v1") | device_id | ed25519 | curve25519 | envelope`
//! * one-time / fallback key: `T("herald/one-time-key/v1") | device_id | ed25519 | key_id | key | u8 fallback`

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use vodozemac::olm::{Account, AccountPickle};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{Transcript, b64_array, b64_decode, b64_encode, check_id};
use crate::{CryptoError, Result};

/// How many inbound Olm session ids a device remembers to reject replayed
/// pre-key messages (relevant for the fallback key, which is not consumed).
const INBOUND_SEEN_MAX: usize = 1024;

/// The public identity of one device, as pinned by its peers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityKeys {
    /// Opaque device id (1..=255 bytes), assigned by the application.
    pub device_id: String,
    /// Ed25519 signing key.
    #[serde(with = "b64_array")]
    pub ed25519: [u8; 32],
    /// Curve25519 Olm identity key.
    #[serde(with = "b64_array")]
    pub curve25519: [u8; 32],
    /// X25519 HPKE recipient key for key envelopes.
    #[serde(with = "b64_array")]
    pub envelope: [u8; 32],
}

impl fmt::Debug for IdentityKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeys")
            .field("device_id", &self.device_id)
            .field("ed25519", &b64_encode(&self.ed25519))
            .finish_non_exhaustive()
    }
}

impl IdentityKeys {
    /// The bytes the identity self-signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        Transcript::new("herald/identity/v1")
            .str(&self.device_id)
            .bytes(&self.ed25519)
            .bytes(&self.curve25519)
            .bytes(&self.envelope)
            .finish()
    }

    /// Checks the id and that no key is weak or of low order.
    pub fn check(&self) -> Result<()> {
        check_id("device id", &self.device_id)?;
        check_ed25519("device ed25519", &self.ed25519)?;
        check_x25519("device curve25519", &self.curve25519)?;
        check_x25519("device envelope", &self.envelope)?;
        if self.curve25519 == self.envelope {
            return Err(CryptoError::malformed("identity keys", "curve25519 and envelope keys are equal"));
        }
        Ok(())
    }
}

/// A one-time or fallback Curve25519 key signed by its device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKey {
    /// vodozemac key id (base64), unique per device.
    pub key_id: String,
    /// The Curve25519 public key.
    #[serde(with = "b64_array")]
    pub key: [u8; 32],
    /// Whether this is the device's fallback key (reusable) rather than a
    /// one-time key.
    #[serde(default)]
    pub fallback: bool,
    /// Ed25519 signature by the owning device.
    #[serde(with = "b64_array")]
    pub signature: [u8; 64],
}

impl SignedKey {
    /// The bytes a one-time or fallback key signature covers.
    pub fn signing_bytes(owner: &IdentityKeys, key_id: &str, key: &[u8; 32], fallback: bool) -> Vec<u8> {
        Transcript::new("herald/one-time-key/v1")
            .str(&owner.device_id)
            .bytes(&owner.ed25519)
            .str(key_id)
            .bytes(key)
            .u8(u8::from(fallback))
            .finish()
    }

    /// Verifies this key was signed by `owner` and is not of low order.
    pub fn verify(&self, owner: &IdentityKeys) -> Result<()> {
        check_id("one-time key id", &self.key_id)?;
        check_x25519("one-time", &self.key)?;
        let msg = Self::signing_bytes(owner, &self.key_id, &self.key, self.fallback);
        verify_sig("one-time key", &owner.ed25519, &msg, &self.signature)
    }
}

/// What a device publishes: identity keys, a batch of one-time keys and a
/// fallback key, all signed by the device's Ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBundle {
    /// The device's identity keys.
    pub identity: IdentityKeys,
    /// Self-signature over the identity keys.
    #[serde(with = "b64_array")]
    pub identity_signature: [u8; 64],
    /// Fresh one-time keys.
    pub one_time_keys: Vec<SignedKey>,
    /// The current fallback key, if one was generated.
    pub fallback_key: Option<SignedKey>,
}

impl KeyBundle {
    /// Verifies every signature, rejects weak or low-order keys and keys that
    /// appear twice in the bundle.
    pub fn verify(&self) -> Result<()> {
        self.identity.check()?;
        verify_sig(
            "identity keys",
            &self.identity.ed25519,
            &self.identity.signing_bytes(),
            &self.identity_signature,
        )?;
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        seen.insert(self.identity.curve25519);
        seen.insert(self.identity.envelope);
        let mut ids = HashSet::new();
        for k in &self.one_time_keys {
            if k.fallback {
                return Err(CryptoError::malformed("key bundle", "fallback key listed as one-time key"));
            }
            k.verify(&self.identity)?;
            if !seen.insert(k.key) || !ids.insert(k.key_id.as_str()) {
                return Err(CryptoError::malformed("key bundle", "duplicate key"));
            }
        }
        if let Some(k) = &self.fallback_key {
            if !k.fallback {
                return Err(CryptoError::malformed("key bundle", "fallback key not flagged as fallback"));
            }
            k.verify(&self.identity)?;
            // (vodozemac numbers fallback keys separately, so only the key
            // itself must be unique.)
            if !seen.insert(k.key) {
                return Err(CryptoError::malformed("key bundle", "duplicate key"));
            }
        }
        Ok(())
    }

    /// All X25519/Curve25519 public keys in the bundle (for reuse checks).
    fn public_keys(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        [self.identity.ed25519, self.identity.curve25519, self.identity.envelope]
            .into_iter()
            .chain(self.one_time_keys.iter().map(|k| k.key))
            .chain(self.fallback_key.iter().map(|k| k.key))
    }
}

/// Peer identities this client verified and pinned (trust on first use or
/// after out-of-band verification). Rejects a device id re-pinned to other
/// keys, and any public key claimed by two devices.
#[derive(Clone, Debug, Default)]
pub struct PinnedDevices {
    devices: BTreeMap<String, IdentityKeys>,
    owners: HashMap<[u8; 32], String>,
}

impl PinnedDevices {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `bundle` and pins its identity. Pinning the same identity
    /// again is a no-op (new one-time keys are checked for reuse).
    pub fn pin(&mut self, bundle: &KeyBundle) -> Result<&IdentityKeys> {
        bundle.verify()?;
        let id = &bundle.identity.device_id;
        if let Some(existing) = self.devices.get(id)
            && existing != &bundle.identity
        {
            return Err(CryptoError::PinMismatch { device: id.clone() });
        }
        for key in bundle.public_keys() {
            if let Some(owner) = self.owners.get(&key)
                && owner != id
            {
                return Err(CryptoError::KeyReuse { first: owner.clone(), second: id.clone() });
            }
        }
        for key in bundle.public_keys() {
            self.owners.insert(key, id.clone());
        }
        let entry = self.devices.entry(id.clone()).or_insert_with(|| bundle.identity.clone());
        Ok(entry)
    }

    /// The pinned identity of `device_id`.
    pub fn get(&self, device_id: &str) -> Result<&IdentityKeys> {
        self.devices.get(device_id).ok_or_else(|| CryptoError::UnknownDevice { device: device_id.to_owned() })
    }

    /// Number of pinned devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Pinned identities in device-id order.
    pub fn iter(&self) -> impl Iterator<Item = &IdentityKeys> {
        self.devices.values()
    }
}

/// A 32-byte key under which accounts and sessions are pickled at rest.
pub struct PickleKey(Zeroizing<[u8; 32]>);

impl PickleKey {
    /// Wraps caller-supplied key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PickleKey(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(k.as_mut());
        PickleKey(k)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PickleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickleKey(..)")
    }
}

/// The local device: vodozemac account plus the HPKE envelope key.
pub struct Device {
    pub(crate) device_id: String,
    pub(crate) account: Account,
    pub(crate) envelope_secret: Zeroizing<[u8; 32]>,
    pub(crate) envelope_public: [u8; 32],
    pub(crate) inbound_seen: VecDeque<String>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct DevicePickle {
    device_id: String,
    account: String,
    #[serde(with = "b64_array")]
    envelope_secret: [u8; 32],
    inbound_seen: VecDeque<String>,
}

impl Drop for DevicePickle {
    fn drop(&mut self) {
        self.envelope_secret.zeroize();
        self.account.zeroize();
    }
}

impl Device {
    /// Creates a device with fresh keys. The Olm keys come from vodozemac's
    /// own OS randomness; the envelope key from `rng`.
    pub fn new<R: CryptoRng + RngCore>(rng: &mut R, device_id: impl Into<String>) -> Result<Self> {
        let device_id = device_id.into();
        check_id("device id", &device_id)?;
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret.as_mut());
        Ok(Self::assemble(device_id, Account::new(), secret, VecDeque::new()))
    }

    fn assemble(
        device_id: String,
        account: Account,
        envelope_secret: Zeroizing<[u8; 32]>,
        inbound_seen: VecDeque<String>,
    ) -> Self {
        let sk = x25519_dalek::StaticSecret::from(*envelope_secret);
        let envelope_public = x25519_dalek::PublicKey::from(&sk).to_bytes();
        Device { device_id, account, envelope_secret, envelope_public, inbound_seen }
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// This device's public identity keys.
    pub fn identity_keys(&self) -> IdentityKeys {
        IdentityKeys {
            device_id: self.device_id.clone(),
            ed25519: *self.account.ed25519_key().as_bytes(),
            curve25519: self.account.curve25519_key().to_bytes(),
            envelope: self.envelope_public,
        }
    }

    /// Signs `message` with the device's Ed25519 key (raw, no domain
    /// separation added: callers frame their own messages).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.account.sign(message).to_bytes()
    }

    /// Generates `one_time_keys` new one-time keys (capped at vodozemac's
    /// limit of 50 unpublished keys) and a new fallback key, signs them and
    /// marks them published.
    pub fn publish_bundle(&mut self, one_time_keys: usize) -> KeyBundle {
        let count = one_time_keys.min(self.account.max_number_of_one_time_keys());
        self.account.generate_one_time_keys(count);
        self.account.generate_fallback_key();
        let identity = self.identity_keys();
        let identity_signature = self.sign(&identity.signing_bytes());
        let mut otks: Vec<(String, [u8; 32])> =
            self.account.one_time_keys().into_iter().map(|(id, k)| (id.to_base64(), k.to_bytes())).collect();
        otks.sort();
        let sign_key = |(key_id, key): (String, [u8; 32]), fallback: bool| {
            let signature = self.sign(&SignedKey::signing_bytes(&identity, &key_id, &key, fallback));
            SignedKey { key_id, key, fallback, signature }
        };
        let one_time_keys = otks.into_iter().map(|k| sign_key(k, false)).collect();
        let fallback_key = self
            .account
            .fallback_key()
            .into_iter()
            .next()
            .map(|(id, k)| sign_key((id.to_base64(), k.to_bytes()), true));
        self.account.mark_keys_as_published();
        KeyBundle { identity, identity_signature, one_time_keys, fallback_key }
    }

    /// Serializes the device (vodozemac account pickle, envelope key, replay
    /// window) encrypted under `key`. Format: `hdev1.` + base64url of
    /// `nonce[24] | XChaCha20-Poly1305(JSON)`.
    pub fn pickle<R: CryptoRng + RngCore>(&self, rng: &mut R, key: &PickleKey) -> String {
        let p = DevicePickle {
            device_id: self.device_id.clone(),
            account: self.account.pickle().encrypt(key.bytes()),
            envelope_secret: *self.envelope_secret,
            inbound_seen: self.inbound_seen.clone(),
        };
        let json = Zeroizing::new(serde_json::to_vec(&p).unwrap_or_default());
        seal_pickle(rng, key, "device", DEVICE_PICKLE_PREFIX, &json)
    }

    /// Restores a device pickled with [`Device::pickle`].
    pub fn from_pickle(pickled: &str, key: &PickleKey) -> Result<Self> {
        let json = open_pickle("device", DEVICE_PICKLE_PREFIX, pickled, key)?;
        let p: DevicePickle = serde_json::from_slice(&json)
            .map_err(|e| CryptoError::Pickle { what: "device", reason: e.to_string() })?;
        check_id("device id", &p.device_id)?;
        let account = AccountPickle::from_encrypted(&p.account, key.bytes())
            .map_err(|e| CryptoError::Pickle { what: "account", reason: e.to_string() })?;
        Ok(Self::assemble(
            p.device_id.clone(),
            Account::from_pickle(account),
            Zeroizing::new(p.envelope_secret),
            p.inbound_seen.clone(),
        ))
    }

    pub(crate) fn remember_inbound(&mut self, session_id: String) -> Result<()> {
        if self.inbound_seen.contains(&session_id) {
            return Err(CryptoError::Replay { what: "pre-key message" });
        }
        if self.inbound_seen.len() >= INBOUND_SEEN_MAX {
            self.inbound_seen.pop_front();
        }
        self.inbound_seen.push_back(session_id);
        Ok(())
    }
}

const DEVICE_PICKLE_PREFIX: &str = "hdev1.";

/// Encrypts a pickle: `prefix` + base64url(`nonce[24] | ciphertext`), AD
/// `T("herald/pickle/v1") | kind`.
pub(crate) fn seal_pickle<R: CryptoRng + RngCore>(
    rng: &mut R,
    key: &PickleKey,
    kind: &str,
    prefix: &str,
    plaintext: &[u8],
) -> String {
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let aead = XChaCha20Poly1305::new(key.bytes().into());
    let ad = Transcript::new("herald/pickle/v1").str(kind).finish();
    // Encryption with a valid key and in-memory buffer cannot fail.
    let ct =
        aead.encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &ad }).unwrap_or_default();
    let mut out = Vec::with_capacity(24 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    format!("{prefix}{}", b64_encode(&out))
}

pub(crate) fn open_pickle(
    kind: &'static str,
    prefix: &str,
    pickled: &str,
    key: &PickleKey,
) -> Result<Zeroizing<Vec<u8>>> {
    let body = pickled
        .strip_prefix(prefix)
        .ok_or_else(|| CryptoError::Pickle { what: kind, reason: format!("missing {prefix} prefix") })?;
    let raw = b64_decode("pickle", body)?;
    if raw.len() < 24 + 16 {
        return Err(CryptoError::Pickle { what: kind, reason: "too short".into() });
    }
    let (nonce, ct) = raw.split_at(24);
    let aead = XChaCha20Poly1305::new(key.bytes().into());
    let ad = Transcript::new("herald/pickle/v1").str(kind).finish();
    aead.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &ad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt { what: kind })
}

/// Verifies an Ed25519 signature strictly (RFC 8032 with canonical `S`,
/// rejecting small-order public keys and `R`).
pub fn verify_ed25519(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<()> {
    verify_sig("message", public, message, signature)
}

pub(crate) fn verify_sig(
    what: &'static str,
    public: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<()> {
    let vk = check_ed25519("signer ed25519", public)?;
    vk.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| CryptoError::BadSignature { what })
}

fn check_ed25519(what: &'static str, key: &[u8; 32]) -> Result<VerifyingKey> {
    let vk = VerifyingKey::from_bytes(key).map_err(|_| CryptoError::WeakKey { what })?;
    if vk.is_weak() {
        return Err(CryptoError::WeakKey { what });
    }
    Ok(vk)
}

/// Rejects X25519 public keys of small order: multiplying by any clamped
/// scalar (a multiple of the cofactor) yields the all-zero output exactly for
/// those points.
pub(crate) fn check_x25519(what: &'static str, key: &[u8; 32]) -> Result<()> {
    const PROBE: [u8; 32] = [0x5a; 32];
    if x25519_dalek::x25519(PROBE, *key) == [0u8; 32] {
        return Err(CryptoError::WeakKey { what });
    }
    Ok(())
}
