//! Key envelopes: an epoch key sealed to one recipient device with HPKE.
//!
//! HPKE (RFC 9180) in base mode with DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256 and ChaCha20-Poly1305 (suite `0x0020 / 0x0001 / 0x0003`),
//! to the recipient's pinned envelope key. Base mode does not authenticate
//! the sender, so the envelope is also signed with the sender device's
//! Ed25519 key: otherwise a server could seal a key of its own choosing to a
//! member and later read what that member sends.
//!
//! ```text
//! info      = T("herald/key-envelope/v1") | channel | u64 epoch | recipient | sender
//! aad       = "" (empty)
//! enc, ct   = HPKE.SealBase(pk = recipient.envelope, info, aad, epoch_key)   ct = 32 + 16 bytes
//! signature = Ed25519(sender, T("herald/key-envelope-sig/v1") | info | enc | ct)
//! ```
//!
//! The JSON form (what a server stores until the device fetches it):
//!
//! ```json
//! { "v": 1, "channel": "c", "epoch": 3, "sender": "devA", "recipient": "devB",
//!   "enc": "<base64url 32 bytes>", "ciphertext": "<base64url 48 bytes>",
//!   "signature": "<base64url 64 bytes>" }
//! ```

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::channel::{EpochKey, EpochKeyring};
use crate::encoding::{Transcript, b64_array, b64_vec, check_id};
use crate::identity::{Device, IdentityKeys, PinnedDevices, verify_sig};
use crate::roster::Member;
use crate::{CryptoError, Result};

type KemT = X25519HkdfSha256;

/// An epoch key sealed to one device. Serde-serializable for storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEnvelope {
    /// Format version, 1.
    pub v: u8,
    /// Channel id.
    pub channel: String,
    /// Epoch of the sealed key.
    pub epoch: u64,
    /// Device id of the sealer.
    pub sender: String,
    /// Device id of the recipient.
    pub recipient: String,
    /// HPKE encapsulated key.
    #[serde(with = "b64_array")]
    pub enc: [u8; 32],
    /// HPKE ciphertext of the 32-byte epoch key (48 bytes).
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
    /// Ed25519 signature of the sender.
    #[serde(with = "b64_array")]
    pub signature: [u8; 64],
}

fn info(channel: &str, epoch: u64, recipient: &str, sender: &str) -> Vec<u8> {
    Transcript::new("herald/key-envelope/v1").str(channel).u64(epoch).str(recipient).str(sender).finish()
}

fn signed_bytes(info: &[u8], enc: &[u8; 32], ct: &[u8]) -> Vec<u8> {
    Transcript::new("herald/key-envelope-sig/v1").bytes(info).bytes(enc).bytes(ct).finish()
}

fn hpke_err(context: &'static str) -> impl Fn(hpke::HpkeError) -> CryptoError {
    move |e| CryptoError::Hpke { context, reason: e.to_string() }
}

/// Seals `key` (channel `channel`, epoch `epoch`) from `sender` to the
/// pinned `recipient` device.
pub fn seal_epoch_key<R: CryptoRng + RngCore>(
    rng: &mut R,
    sender: &Device,
    channel: &str,
    epoch: u64,
    key: &EpochKey,
    recipient: &IdentityKeys,
) -> Result<KeyEnvelope> {
    check_id("channel id", channel)?;
    recipient.check()?;
    let pk =
        <KemT as hpke::Kem>::PublicKey::from_bytes(&recipient.envelope).map_err(hpke_err("recipient key"))?;
    let info = info(channel, epoch, &recipient.device_id, sender.device_id());
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, KemT, R>(
        &OpModeS::Base,
        &pk,
        &info,
        key.as_bytes(),
        b"",
        rng,
    )
    .map_err(hpke_err("seal"))?;
    let mut enc_bytes = [0u8; 32];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    let signature = sender.sign(&signed_bytes(&info, &enc_bytes, &ciphertext));
    Ok(KeyEnvelope {
        v: 1,
        channel: channel.to_owned(),
        epoch,
        sender: sender.device_id().to_owned(),
        recipient: recipient.device_id.clone(),
        enc: enc_bytes,
        ciphertext,
        signature,
    })
}

impl KeyEnvelope {
    /// Verifies the sender's signature against its pinned identity.
    pub fn verify(&self, sender: &IdentityKeys) -> Result<()> {
        if self.v != 1 {
            return Err(CryptoError::malformed("key envelope", format!("unsupported version {}", self.v)));
        }
        check_id("channel id", &self.channel)?;
        if sender.device_id != self.sender {
            return Err(CryptoError::mismatch("envelope sender", &sender.device_id, &self.sender));
        }
        let info = info(&self.channel, self.epoch, &self.recipient, &self.sender);
        verify_sig(
            "key envelope",
            &sender.ed25519,
            &signed_bytes(&info, &self.enc, &self.ciphertext),
            &self.signature,
        )
    }

    /// Verifies the envelope (sender signature, addressed to `recipient`)
    /// and opens it.
    pub fn open(&self, recipient: &Device, sender: &IdentityKeys) -> Result<EpochKey> {
        if self.recipient != recipient.device_id() {
            return Err(CryptoError::mismatch("envelope recipient", recipient.device_id(), &self.recipient));
        }
        self.verify(sender)?;
        let sk = <KemT as hpke::Kem>::PrivateKey::from_bytes(recipient.envelope_secret.as_ref())
            .map_err(hpke_err("recipient secret"))?;
        let enc = <KemT as hpke::Kem>::EncappedKey::from_bytes(&self.enc).map_err(hpke_err("enc"))?;
        let info = info(&self.channel, self.epoch, &self.recipient, &self.sender);
        let pt = Zeroizing::new(
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, KemT>(
                &OpModeR::Base,
                &sk,
                &enc,
                &info,
                &self.ciphertext,
                b"",
            )
            .map_err(|_| CryptoError::Decrypt { what: "key envelope" })?,
        );
        let bytes: [u8; 32] = pt
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::malformed("key envelope", "sealed key is not 32 bytes"))?;
        Ok(EpochKey::from_bytes(bytes))
    }

    /// Opens the envelope and stores the key in `keyring` (which must be for
    /// the envelope's channel).
    pub fn open_into(
        &self,
        recipient: &Device,
        sender: &IdentityKeys,
        keyring: &mut EpochKeyring,
    ) -> Result<()> {
        if keyring.channel() != self.channel {
            return Err(CryptoError::mismatch("envelope channel", keyring.channel(), &self.channel));
        }
        let key = self.open(recipient, sender)?;
        keyring.insert(self.epoch, key)
    }
}

/// Seals the current epoch key of `keyring` (and with `history`, every
/// earlier key it holds) to each of `recipients`, e.g. a new member's
/// devices.
pub fn seal_keyring<R: CryptoRng + RngCore>(
    rng: &mut R,
    sender: &Device,
    keyring: &EpochKeyring,
    recipients: &[IdentityKeys],
    history: bool,
) -> Result<Vec<KeyEnvelope>> {
    let Some((current, _)) = keyring.current() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (epoch, key) in keyring.iter() {
        if !history && epoch != current {
            continue;
        }
        for r in recipients {
            out.push(seal_epoch_key(rng, sender, keyring.channel(), epoch, key, r)?);
        }
    }
    Ok(out)
}

/// Seals one epoch's key to every device of `members` (as listed in the
/// epoch's verified commit) except the sender itself. Devices of users not
/// in `members` (e.g. just removed) get nothing. Every device must be
/// pinned.
pub fn seal_for_members<R: CryptoRng + RngCore>(
    rng: &mut R,
    sender: &Device,
    channel: &str,
    epoch: u64,
    key: &EpochKey,
    members: &[Member],
    pins: &PinnedDevices,
) -> Result<Vec<KeyEnvelope>> {
    let mut out = Vec::new();
    for m in members {
        for d in &m.devices {
            if d == sender.device_id() {
                continue;
            }
            out.push(seal_epoch_key(rng, sender, channel, epoch, key, pins.get(d)?)?);
        }
    }
    Ok(out)
}
