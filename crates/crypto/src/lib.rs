//! # herald-crypto
//!
//! End-to-end encryption for Herald clients: device identities, one-to-one
//! Olm sessions, per-epoch channel keys, HPKE key envelopes, signed roster
//! commits and encrypted, erasure-coded files.
//!
//! This is a pure library. It must never:
//!
//! * perform I/O (no files, no sockets, no clocks): randomness is passed in as
//!   an `impl CryptoRng + RngCore`, and callers supply time when they need it;
//! * log, print or format secret material: secret types redact their `Debug`
//!   output and are zeroized on drop where practical;
//! * be a dependency of the server. The server stores and relays the opaque
//!   forms produced here (sealed message strings, key envelopes, commits,
//!   shards) and learns nothing else from them.
//!
//! One caveat on randomness: `vodozemac` draws the Olm identity, one-time and
//! ratchet keys from the operating system itself (its API takes no RNG).
//! Everything implemented in this crate (channel keys, nonces, HPKE
//! ephemerals, envelope keys, file keys, pickle nonces) uses the supplied RNG.
//!
//! # Wire formats
//!
//! The exact byte layouts are documented in the crate `README.md` and on the
//! types that produce them:
//!
//! * sealed channel message: a string `hm1.` + base64url (no padding) of
//!   `epoch u64 BE | sender_len u8 | sender | nonce[24] | ciphertext | sig[64]`
//!   (see [`channel`]);
//! * key envelope: JSON [`envelope::KeyEnvelope`];
//! * roster commit: JSON [`roster::SignedCommit`], signed over a canonical
//!   binary encoding ([`roster::EpochCommit::canonical_bytes`]);
//! * file manifest: JSON [`file::FileManifest`].
//!
//! All signatures and AEAD associated data use a domain-separated,
//! length-prefixed transcript (a UTF-8 domain label, then every field as
//! `u32 BE length | bytes`, integers as fixed-width big-endian), so that no
//! two different field tuples produce the same signed bytes.
//!
//! # Layout
//!
//! * [`error`]: the [`CryptoError`] enum every fallible function returns.
//! * [`identity`]: [`Device`] (the local keys), [`IdentityKeys`], signed
//!   [`KeyBundle`]s of one-time and fallback keys, [`PinnedDevices`].
//! * [`olm`]: [`OlmSession`] and [`OlmMessage`], the Double Ratchet for direct
//!   messages (vodozemac), created from a claimed one-time or fallback key.
//! * [`channel`]: [`EpochKey`], [`EpochKeyring`], sealing and opening channel
//!   messages (XChaCha20-Poly1305 + Ed25519).
//! * [`envelope`]: [`KeyEnvelope`], an epoch key sealed to one device with
//!   HPKE (RFC 9180, X25519-HKDF-SHA256 / HKDF-SHA256 / ChaCha20-Poly1305).
//! * [`roster`]: [`EpochCommit`], [`SignedCommit`] and the [`RosterChain`]
//!   verifier.
//! * [`state`]: [`StateSealer`], the sealed `HST1` container of a device's state at rest.
//! * [`file`](mod@file): chunked file encryption plus Reed-Solomon shards and the
//!   [`FileManifest`].
//! * `encoding` (private): base64 serde helpers and the signing transcript.

pub mod channel;
mod encoding;
pub mod envelope;
pub mod error;
pub mod file;
pub mod identity;
pub mod olm;
pub mod roster;
pub mod state;

pub use channel::{EpochKey, EpochKeyring, OpenedMessage, SealedMessage, open_message, seal_message};
pub use envelope::{KeyEnvelope, seal_epoch_key, seal_for_members, seal_keyring};
pub use error::CryptoError;
pub use file::{EncodedFile, FileKey, FileManifest, FileParams, decrypt_file, encrypt_file};
pub use identity::{Device, IdentityKeys, KeyBundle, PickleKey, PinnedDevices, SignedKey, verify_ed25519};
pub use olm::{OlmMessage, OlmSession};
pub use roster::{CommitReason, EpochCommit, Member, RosterChain, SignedCommit};
pub use state::{StateKdf, StateSealer, StateSecret};

/// Result alias used throughout the crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

/// Largest accepted device, user or channel identifier, in bytes.
pub const MAX_ID_LEN: usize = 255;
