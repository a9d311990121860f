//! Direct (one-to-one) messages: the Olm Double Ratchet from `vodozemac`.
//!
//! Alice claims one of Bob's one-time keys (or his fallback key) from the
//! server, verifies its signature against Bob's pinned [`IdentityKeys`], and
//! calls [`Device::create_outbound_session`]. Her messages are pre-key
//! messages until Bob answers; Bob turns the first one into a session with
//! [`Device::create_inbound_session`], which consumes the one-time key.
//!
//! Within vodozemac's bounds (up to 2000 skipped messages per chain, 40
//! stored skipped keys, 5 receiving chains) out-of-order messages decrypt. A
//! replayed message fails because its message key was consumed; a replayed
//! pre-key message fails because the one-time key is gone or (for the
//! fallback key) the session id was already seen. A failed decryption never
//! changes the session.
//!
//! Wire form: [`OlmMessage`] `{ "pre_key": bool, "body": base64url }` where
//! `body` is vodozemac's protobuf-style message bytes.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{Session, SessionConfig, SessionPickle};
use zeroize::Zeroizing;

use crate::encoding::{b64_array, b64_vec, check_id};
use crate::identity::{Device, IdentityKeys, PickleKey, SignedKey, open_pickle, seal_pickle};
use crate::{CryptoError, Result};

/// One Olm message on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OlmMessage {
    /// `true` for a pre-key message (type 0), `false` for a normal one (1).
    pub pre_key: bool,
    /// vodozemac message bytes.
    #[serde(with = "b64_vec")]
    pub body: Vec<u8>,
}

impl OlmMessage {
    fn to_vodozemac(&self) -> Result<vodozemac::olm::OlmMessage> {
        vodozemac::olm::OlmMessage::from_parts(usize::from(!self.pre_key), &self.body)
            .map_err(|e| CryptoError::malformed("olm message", e.to_string()))
    }

    fn from_vodozemac(m: &vodozemac::olm::OlmMessage) -> Self {
        let (kind, body) = m.to_parts();
        OlmMessage { pre_key: kind == 0, body }
    }
}

/// An Olm session with one peer device.
pub struct OlmSession {
    peer: String,
    peer_curve25519: [u8; 32],
    session: Session,
}

impl fmt::Debug for OlmSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OlmSession")
            .field("peer", &self.peer)
            .field("session_id", &self.session.session_id())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SessionPickleEnvelope {
    peer: String,
    #[serde(with = "b64_array")]
    peer_curve25519: [u8; 32],
    session: String,
}

const SESSION_PICKLE_PREFIX: &str = "hses1.";

impl OlmSession {
    /// The session id (shared by both ends).
    pub fn session_id(&self) -> String {
        self.session.session_id()
    }

    /// The peer's device id.
    pub fn peer_device(&self) -> &str {
        &self.peer
    }

    /// Whether the session has received a message from the peer (after
    /// which it stops sending pre-key messages).
    pub fn has_received_message(&self) -> bool {
        self.session.has_received_message()
    }

    /// Encrypts one message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> OlmMessage {
        OlmMessage::from_vodozemac(&self.session.encrypt(plaintext))
    }

    /// Decrypts one message. On error the session is unchanged.
    pub fn decrypt(&mut self, message: &OlmMessage) -> Result<Vec<u8>> {
        let m = message.to_vodozemac()?;
        if let vodozemac::olm::OlmMessage::PreKey(p) = &m
            && p.session_id() != self.session.session_id()
        {
            return Err(CryptoError::mismatch("olm session id", self.session.session_id(), p.session_id()));
        }
        Ok(self.session.decrypt(&m)?)
    }

    /// Whether `message` is a pre-key message that belongs to this session
    /// (so it should be decrypted here rather than start a new session).
    pub fn matches(&self, message: &OlmMessage) -> bool {
        match message.to_vodozemac() {
            Ok(vodozemac::olm::OlmMessage::PreKey(p)) => p.session_id() == self.session.session_id(),
            _ => false,
        }
    }

    /// Serializes the session under `key`: `hses1.` + base64url of
    /// `nonce[24] | XChaCha20-Poly1305(JSON { peer, peer_curve25519,
    /// session: vodozemac encrypted SessionPickle })`.
    pub fn pickle<R: CryptoRng + RngCore>(&self, rng: &mut R, key: &PickleKey) -> String {
        let p = SessionPickleEnvelope {
            peer: self.peer.clone(),
            peer_curve25519: self.peer_curve25519,
            session: self.session.pickle().encrypt(key.bytes()),
        };
        let json = Zeroizing::new(serde_json::to_vec(&p).unwrap_or_default());
        seal_pickle(rng, key, "session", SESSION_PICKLE_PREFIX, &json)
    }

    /// Restores a session pickled with [`OlmSession::pickle`].
    pub fn from_pickle(pickled: &str, key: &PickleKey) -> Result<Self> {
        let json = open_pickle("session", SESSION_PICKLE_PREFIX, pickled, key)?;
        let p: SessionPickleEnvelope = serde_json::from_slice(&json)
            .map_err(|e| CryptoError::Pickle { what: "session", reason: e.to_string() })?;
        check_id("peer device id", &p.peer)?;
        let sp = SessionPickle::from_encrypted(&p.session, key.bytes())
            .map_err(|e| CryptoError::Pickle { what: "session", reason: e.to_string() })?;
        Ok(OlmSession { peer: p.peer, peer_curve25519: p.peer_curve25519, session: Session::from_pickle(sp) })
    }
}

impl Device {
    /// Starts a session with `peer` (already pinned) from a one-time or
    /// fallback key claimed from the server. Verifies the key's signature
    /// first, so a server cannot substitute its own key.
    pub fn create_outbound_session(&self, peer: &IdentityKeys, claimed: &SignedKey) -> Result<OlmSession> {
        peer.check()?;
        claimed.verify(peer)?;
        let session = self.account.create_outbound_session(
            SessionConfig::version_2(),
            Curve25519PublicKey::from_bytes(peer.curve25519),
            Curve25519PublicKey::from_bytes(claimed.key),
        );
        Ok(OlmSession { peer: peer.device_id.clone(), peer_curve25519: peer.curve25519, session })
    }

    /// Creates a session from the first (pre-key) message of `peer`,
    /// returning it with the decrypted plaintext. Consumes the one-time key;
    /// rejects a pre-key message whose session was already created here.
    /// On error the device is unchanged.
    pub fn create_inbound_session(
        &mut self,
        peer: &IdentityKeys,
        message: &OlmMessage,
    ) -> Result<(OlmSession, Vec<u8>)> {
        peer.check()?;
        let m = message.to_vodozemac()?;
        let vodozemac::olm::OlmMessage::PreKey(pre) = m else {
            return Err(CryptoError::malformed(
                "olm message",
                "a session can only be created from a pre-key message",
            ));
        };
        let session_id = pre.session_id();
        if self.inbound_seen.contains(&session_id) {
            return Err(CryptoError::Replay { what: "pre-key message" });
        }
        let result =
            self.account.create_inbound_session(Curve25519PublicKey::from_bytes(peer.curve25519), &pre)?;
        self.remember_inbound(session_id)?;
        Ok((
            OlmSession {
                peer: peer.device_id.clone(),
                peer_curve25519: peer.curve25519,
                session: result.session,
            },
            result.plaintext,
        ))
    }
}
