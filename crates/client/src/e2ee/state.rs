//! The device state file: everything a device must keep to read its messages after a
//! restart (the Olm account, Olm sessions, pinned identities, channel keyrings and roster
//! chains), encrypted at rest and written atomically.
//!
//! Format (all of it one file):
//!
//! ```text
//! "HST1" | kdf u8 (0: a 32-byte key file, 1: Argon2id of a passphrase) | salt[16]
//!        | nonce[24] | XChaCha20-Poly1305(key, ad = "HST1" | kdf | salt, JSON)
//! ```
//!
//! The container is herald-crypto's [`StateSealer`] (the same bytes the TypeScript and
//! Python SDKs write): the Argon2id parameters are the `argon2` crate's defaults (19 MiB,
//! 2 passes, 1 lane, OWASP's recommendation), the key is derived once when the file is
//! opened, and each write draws a fresh nonce. A write goes to `<file>.tmp`, is fsynced, renamed over the file,
//! and the directory is fsynced, so a crash leaves either the old or the new state, never
//! a torn one. The JSON inside holds the vodozemac pickles encrypted once more under the
//! same key (herald-crypto's own pickle format).

use super::E2eeError;
use herald_crypto::{CryptoError, IdentityKeys, SignedCommit, StateSealer, StateSecret};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where the state file's key comes from.
#[derive(Clone)]
pub enum StateKey {
    /// A passphrase, stretched with Argon2id (salt kept in the file).
    Passphrase(Zeroizing<String>),
    /// 32 random bytes (e.g. read from a key file with [`StateKey::from_key_file`]).
    Key(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateKey::Passphrase(_) => f.write_str("StateKey::Passphrase(..)"),
            StateKey::Key(_) => f.write_str("StateKey::Key(..)"),
        }
    }
}

impl StateKey {
    /// A passphrase key.
    pub fn passphrase(p: impl Into<String>) -> StateKey {
        StateKey::Passphrase(Zeroizing::new(p.into()))
    }

    /// Reads a key file: exactly 32 raw bytes, or 64 hex digits (surrounding whitespace
    /// ignored).
    pub fn from_key_file(path: &Path) -> Result<StateKey, E2eeError> {
        let bytes = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| E2eeError::State(format!("cannot read key file {path:?}: {e}")))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() == 32 {
            key.copy_from_slice(&bytes);
            return Ok(StateKey::Key(key));
        }
        let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
        if text.len() == 64 && hex::decode_to_slice(text, key.as_mut()).is_ok() {
            return Ok(StateKey::Key(key));
        }
        Err(E2eeError::State(format!("key file {path:?} must hold 32 bytes or 64 hex digits")))
    }

    fn secret(&self) -> StateSecret<'_> {
        match self {
            StateKey::Passphrase(p) => StateSecret::Passphrase(p.as_str()),
            StateKey::Key(k) => StateSecret::Key(k),
        }
    }
}

/// A pinned peer device: whose it is, its identity and the self-signature that proves it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PinnedDevice {
    pub user: String,
    pub identity: IdentityKeys,
    #[serde(with = "sig64")]
    pub identity_signature: [u8; 64],
    /// Pinned after an out-of-band check of its fingerprint (`verify_device`), not only on
    /// first sight.
    #[serde(default)]
    pub verified: bool,
}

/// One encrypted channel as this device holds it: the verified roster chain (kept as its
/// commits and admins; rebuilt and verified again on load) and the epoch keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ChannelState {
    pub admins: Vec<IdentityKeys>,
    pub commits: Vec<SignedCommit>,
    /// Epoch → base64 of the 32-byte key.
    pub keys: BTreeMap<u64, String>,
}

/// The whole persisted state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub user: String,
    pub device_id: String,
    /// herald-crypto's `hdev1.` pickle of the account.
    pub device: String,
    /// Peer device → `hses1.` pickles of the sessions with it, newest last.
    pub sessions: BTreeMap<String, Vec<String>>,
    pub pins: BTreeMap<String, PinnedDevice>,
    pub channels: BTreeMap<String, ChannelState>,
    /// Ids of the direct messages already handled (decrypted or refused), newest last:
    /// a redelivery before the ack reached the server is not handled twice.
    pub handled_dms: VecDeque<String>,
}

mod sig64 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(s, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

/// An opened state file: its path and derived key, and the lock that keeps a second process
/// from using the same device (two writers would overwrite each other's ratchet states, and
/// the DMs those states decrypt would be lost).
pub(crate) struct StateFile {
    path: PathBuf,
    sealer: StateSealer,
    _lock: std::fs::File,
}

/// Takes `<file>.lock` exclusively (released when the process exits or the file closes).
fn lock(path: &Path) -> Result<std::fs::File, E2eeError> {
    let lock_path = path.with_extension("lock");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| E2eeError::State(format!("cannot open {lock_path:?}: {e}")))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(E2eeError::State(format!(
            "{path:?} is in use by another process: one device, one process at a time"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(E2eeError::State(format!("cannot lock {lock_path:?}: {e}")))
        }
    }
}

impl StateFile {
    /// Opens `path` and decrypts it; `Ok(None)` state when the file does not exist yet.
    pub(crate) fn open(path: &Path, key: &StateKey) -> Result<(StateFile, Option<Persisted>), E2eeError> {
        let lock = lock(path)?;
        match std::fs::read(path) {
            Ok(raw) => {
                let (sealer, plain) = StateSealer::open(&raw, key.secret()).map_err(|e| match e {
                    CryptoError::Mismatch { expected, found, .. } => {
                        E2eeError::State(format!("{path:?} is encrypted with a {expected}, not a {found}"))
                    }
                    CryptoError::Decrypt { .. } => E2eeError::State(format!(
                        "cannot decrypt {path:?}: wrong passphrase or key, or the file was altered"
                    )),
                    CryptoError::Malformed { what: "state passphrase", reason } => {
                        E2eeError::State(format!("argon2id: {reason}"))
                    }
                    _ => E2eeError::State(format!("{path:?} is not a Herald device state file")),
                })?;
                let state: Persisted = serde_json::from_slice(&plain)
                    .map_err(|e| E2eeError::State(format!("unreadable state in {path:?}: {e}")))?;
                Ok((StateFile { path: path.to_owned(), sealer, _lock: lock }, Some(state)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let sealer = StateSealer::create(&mut rand::rngs::OsRng, key.secret())
                    .map_err(|e| E2eeError::State(format!("cannot derive the state key: {e}")))?;
                Ok((StateFile { path: path.to_owned(), sealer, _lock: lock }, None))
            }
            Err(e) => Err(E2eeError::State(format!("cannot read {path:?}: {e}"))),
        }
    }

    /// The 32-byte key, also used for herald-crypto's pickles inside the file.
    pub(crate) fn key(&self) -> &[u8; 32] {
        self.sealer.key()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Encrypts and writes `state` atomically (temp file, fsync, rename, fsync of the
    /// directory).
    pub(crate) fn save(&self, state: &Persisted) -> Result<(), E2eeError> {
        let json = Zeroizing::new(
            serde_json::to_vec(state).map_err(|e| E2eeError::State(format!("cannot encode state: {e}")))?,
        );
        let out = self
            .sealer
            .seal(&mut rand::rngs::OsRng, &json)
            .map_err(|e| E2eeError::State(format!("cannot encrypt state: {e}")))?;
        let tmp = self.path.with_extension("tmp");
        let io = |e: std::io::Error| E2eeError::State(format!("cannot write {:?}: {e}", self.path));
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(&out).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_and_refuses_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ada.state");
        let (file, none) = StateFile::open(&path, &StateKey::passphrase("correct horse")).unwrap();
        assert!(none.is_none());
        let state = Persisted { user: "ada".into(), device_id: "ada-1".into(), ..Persisted::default() };
        file.save(&state).unwrap();
        let busy = StateFile::open(&path, &StateKey::passphrase("correct horse")).err().unwrap();
        assert!(busy.to_string().contains("in use by another process"), "{busy}");
        drop(file);
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(5).any(|w| w == b"ada-1"), "state is not in the clear");
        let (_, back) = StateFile::open(&path, &StateKey::passphrase("correct horse")).unwrap();
        assert_eq!(back.unwrap().device_id, "ada-1");
        let err = StateFile::open(&path, &StateKey::passphrase("wrong")).err().unwrap();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        let err = StateFile::open(&path, &StateKey::Key(Zeroizing::new([7; 32]))).err().unwrap();
        assert!(err.to_string().contains("passphrase"), "{err}");
    }
}
