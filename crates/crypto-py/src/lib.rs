//! Python bindings of `herald-crypto` (PyO3), importable as `herald_crypto`.
//!
//! Thin wrappers and nothing else: every byte is produced by `herald-crypto` itself, so a
//! message sealed in Python opens in Rust (and the browser) and the other way round, by
//! construction. What this crate must never do: hold logic of its own, log or format a
//! secret, or be a dependency of the server.
//!
//! Built with maturin (`crates/crypto-py/pyproject.toml`); `[lib] test = false`, because a
//! Python extension is linked by the interpreter that imports it, not into a Rust test
//! binary: its tests are `sdk/python/tests/test_crypto.py`, against the vector that
//! `crates/crypto/tests/interop_vector.rs` checks on the Rust side.

use herald_crypto::channel::{EpochKey, SealedMessage};
use herald_crypto::identity::{IdentityKeys, KeyBundle, PickleKey, SignedKey};
use herald_crypto::roster::{CommitReason, EpochCommit, Member, SignedCommit};
use herald_crypto::state::{StateSealer as RustStateSealer, StateSecret};
use herald_crypto::{FileManifest, FileParams, KeyEnvelope, OlmMessage};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rand_core::{CryptoRng, OsRng, RngCore};

pyo3::create_exception!(
    herald_crypto,
    CryptoError,
    PyException,
    "A herald-crypto operation failed: a malformed input, a bad signature or a failed decryption."
);
pyo3::create_exception!(
    herald_crypto,
    DecryptError,
    CryptoError,
    "A decryption failed: a wrong key, or the bytes were altered."
);
pyo3::create_exception!(
    herald_crypto,
    MismatchError,
    CryptoError,
    "Two things that must agree do not (another key kind, sender, channel, session)."
);

fn err(e: herald_crypto::CryptoError) -> PyErr {
    match e {
        herald_crypto::CryptoError::Decrypt { .. } => DecryptError::new_err(e.to_string()),
        herald_crypto::CryptoError::Mismatch { .. } => MismatchError::new_err(e.to_string()),
        _ => CryptoError::new_err(e.to_string()),
    }
}

/// Parses the JSON form of a herald-crypto type (a macro, so this crate needs no direct
/// serde dependency).
macro_rules! from_json {
    ($what:expr, $json:expr) => {
        serde_json::from_str($json).map_err(|e| CryptoError::new_err(format!("unreadable {}: {e}", $what)))
    };
}

/// The JSON form of a herald-crypto type.
macro_rules! to_json {
    ($what:expr, $v:expr) => {
        serde_json::to_string($v).map_err(|e| CryptoError::new_err(format!("cannot encode {}: {e}", $what)))
    };
}

fn key32(what: &str, bytes: &[u8]) -> PyResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| CryptoError::new_err(format!("{what} must be 32 bytes, got {}", bytes.len())))
}

/// Randomness for `seal_message`: the caller's bytes first (a test that must reproduce a
/// vector names the nonce), the operating system's after them.
struct Prefixed<'a> {
    bytes: &'a [u8],
}

impl RngCore for Prefixed<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_be_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_be_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let n = dest.len().min(self.bytes.len());
        let (given, rest) = self.bytes.split_at(n);
        dest[..n].copy_from_slice(given);
        self.bytes = rest;
        OsRng.fill_bytes(&mut dest[n..]);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Prefixed<'_> {}

/// The local device: its identity keys and the secrets behind them. Persist it with
/// `pickle(key)` (encrypted under a 32-byte key the application keeps), never in clear.
#[pyclass(module = "herald_crypto._native")]
struct Device {
    inner: herald_crypto::Device,
}

#[pymethods]
impl Device {
    /// A device with fresh keys (the operating system's randomness).
    #[staticmethod]
    fn generate(device_id: &str) -> PyResult<Device> {
        Ok(Device { inner: herald_crypto::Device::new(&mut OsRng, device_id).map_err(err)? })
    }

    /// Restores a device from `pickle()` output under the same 32-byte key.
    #[staticmethod]
    fn from_pickle(pickled: &str, key: &[u8]) -> PyResult<Device> {
        let key = PickleKey::from_bytes(key32("pickle key", key)?);
        Ok(Device { inner: herald_crypto::Device::from_pickle(pickled, &key).map_err(err)? })
    }

    /// The device's state encrypted under a 32-byte key (`hdev1.`).
    fn pickle(&self, key: &[u8]) -> PyResult<String> {
        let key = PickleKey::from_bytes(key32("pickle key", key)?);
        Ok(self.inner.pickle(&mut OsRng, &key))
    }

    #[getter]
    fn device_id(&self) -> String {
        self.inner.device_id().to_owned()
    }

    /// The public identity (JSON: device_id, ed25519, curve25519, envelope), as peers pin it.
    fn identity_keys_json(&self) -> PyResult<String> {
        to_json!("identity keys", &self.inner.identity_keys())
    }

    /// Signs `message` with the device's Ed25519 key (raw: callers frame their messages).
    fn sign<'py>(&self, py: Python<'py>, message: &[u8]) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.sign(message))
    }

    /// Generates up to `one_time_keys` one-time keys and a fallback key, signs them, marks
    /// them published and returns the `KeyBundle` JSON to upload. Persist the device before
    /// uploading: it now holds the private halves.
    fn publish_bundle(&mut self, one_time_keys: usize) -> PyResult<String> {
        to_json!("key bundle", &self.inner.publish_bundle(one_time_keys))
    }

    /// An Olm session with `peer` (identity JSON, already pinned) from a one-time or
    /// fallback key claimed from the server (`SignedKey` JSON), whose signature is verified.
    fn create_outbound_session(
        &self,
        peer_identity_json: &str,
        claimed_key_json: &str,
    ) -> PyResult<OlmSession> {
        let peer: IdentityKeys = from_json!("identity keys", peer_identity_json)?;
        let claimed: SignedKey = from_json!("claimed key", claimed_key_json)?;
        Ok(OlmSession { inner: self.inner.create_outbound_session(&peer, &claimed).map_err(err)? })
    }

    /// A session from `peer`'s first (pre-key) message (`OlmMessage` JSON), with its
    /// plaintext. Consumes the one-time key; the device is unchanged on error.
    fn create_inbound_session<'py>(
        &mut self,
        py: Python<'py>,
        peer_identity_json: &str,
        message_json: &str,
    ) -> PyResult<(OlmSession, Bound<'py, PyBytes>)> {
        let peer: IdentityKeys = from_json!("identity keys", peer_identity_json)?;
        let msg: OlmMessage = from_json!("olm message", message_json)?;
        let (session, plain) = self.inner.create_inbound_session(&peer, &msg).map_err(err)?;
        Ok((OlmSession { inner: session }, PyBytes::new(py, &plain)))
    }

    fn __repr__(&self) -> String {
        format!("Device(device_id={:?})", self.inner.device_id())
    }
}

/// An Olm session with one peer device.
#[pyclass(module = "herald_crypto._native")]
struct OlmSession {
    inner: herald_crypto::OlmSession,
}

#[pymethods]
impl OlmSession {
    #[getter]
    fn session_id(&self) -> String {
        self.inner.session_id()
    }

    #[getter]
    fn peer_device(&self) -> String {
        self.inner.peer_device().to_owned()
    }

    /// Whether the peer answered (after which no more pre-key messages are sent).
    fn has_received_message(&self) -> bool {
        self.inner.has_received_message()
    }

    /// Encrypts one message: `OlmMessage` JSON (`{"pre_key": bool, "body": base64url}`).
    fn encrypt(&mut self, plaintext: &[u8]) -> PyResult<String> {
        to_json!("olm message", &self.inner.encrypt(plaintext))
    }

    /// Decrypts one `OlmMessage` JSON. On error the session is unchanged.
    fn decrypt<'py>(&mut self, py: Python<'py>, message_json: &str) -> PyResult<Bound<'py, PyBytes>> {
        let msg: OlmMessage = from_json!("olm message", message_json)?;
        Ok(PyBytes::new(py, &self.inner.decrypt(&msg).map_err(err)?))
    }

    /// Whether `message_json` is a pre-key message of this session.
    fn matches(&self, message_json: &str) -> PyResult<bool> {
        let msg: OlmMessage = from_json!("olm message", message_json)?;
        Ok(self.inner.matches(&msg))
    }

    /// The session encrypted under a 32-byte key (`hses1.`).
    fn pickle(&self, key: &[u8]) -> PyResult<String> {
        let key = PickleKey::from_bytes(key32("pickle key", key)?);
        Ok(self.inner.pickle(&mut OsRng, &key))
    }

    #[staticmethod]
    fn from_pickle(pickled: &str, key: &[u8]) -> PyResult<OlmSession> {
        let key = PickleKey::from_bytes(key32("pickle key", key)?);
        Ok(OlmSession { inner: herald_crypto::OlmSession::from_pickle(pickled, &key).map_err(err)? })
    }

    fn __repr__(&self) -> String {
        format!("OlmSession(peer_device={:?})", self.inner.peer_device())
    }
}

/// Verifies a `KeyBundle` (JSON): every signature, no weak or repeated key.
#[pyfunction]
fn verify_bundle(bundle_json: &str) -> PyResult<()> {
    let b: KeyBundle = from_json!("key bundle", bundle_json)?;
    b.verify().map_err(err)
}

/// Peer identities pinned and checked: a device id re-pinned to other keys, or a key claimed
/// by two devices, is refused.
#[pyclass(module = "herald_crypto._native")]
struct PinnedDevices {
    inner: herald_crypto::PinnedDevices,
}

#[pymethods]
impl PinnedDevices {
    #[new]
    fn new() -> PinnedDevices {
        PinnedDevices { inner: herald_crypto::PinnedDevices::new() }
    }

    /// Verifies `bundle_json` and pins its identity; returns the pinned identity JSON.
    fn pin(&mut self, bundle_json: &str) -> PyResult<String> {
        let b: KeyBundle = from_json!("key bundle", bundle_json)?;
        let id = self.inner.pin(&b).map_err(err)?;
        to_json!("identity keys", id)
    }

    /// The pinned identity JSON of `device_id`.
    fn get(&self, device_id: &str) -> PyResult<String> {
        to_json!("identity keys", self.inner.get(device_id).map_err(err)?)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// The epoch keys of one channel: a different key for an epoch already held is refused.
#[pyclass(module = "herald_crypto._native")]
struct EpochKeyring {
    inner: herald_crypto::EpochKeyring,
}

#[pymethods]
impl EpochKeyring {
    #[new]
    fn new(channel: &str) -> PyResult<EpochKeyring> {
        Ok(EpochKeyring { inner: herald_crypto::EpochKeyring::new(channel).map_err(err)? })
    }

    #[getter]
    fn channel(&self) -> String {
        self.inner.channel().to_owned()
    }

    fn insert(&mut self, epoch: u64, key: &[u8]) -> PyResult<()> {
        self.inner.insert(epoch, EpochKey::from_bytes(key32("epoch key", key)?)).map_err(err)
    }

    /// The key of `epoch` (raises if not held).
    fn get<'py>(&self, py: Python<'py>, epoch: u64) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.inner.get(epoch).map_err(err)?.as_bytes()))
    }

    fn contains(&self, epoch: u64) -> bool {
        self.inner.get(epoch).is_ok()
    }

    /// The held epochs, ascending.
    fn epochs(&self) -> Vec<u64> {
        self.inner.iter().map(|(e, _)| e).collect()
    }

    /// Seals `plaintext` with the key of `epoch`, signed by `sender`: the `hm1.` string.
    fn seal(&self, sender: &Device, epoch: u64, plaintext: &[u8]) -> PyResult<String> {
        let key = self.inner.get(epoch).map_err(err)?;
        herald_crypto::seal_message(&mut OsRng, &sender.inner, self.inner.channel(), epoch, key, plaintext)
            .map_err(err)
    }

    /// Verifies a sealed message of this channel against the sender's identity JSON and
    /// decrypts it with the key of its epoch.
    fn open<'py>(
        &self,
        py: Python<'py>,
        sealed: &str,
        sender_identity_json: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let sender: IdentityKeys = from_json!("identity keys", sender_identity_json)?;
        let m = SealedMessage::parse(sealed).map_err(err)?;
        let key = self.inner.get(m.epoch()).map_err(err)?;
        Ok(PyBytes::new(py, &m.open(self.inner.channel(), key, &sender).map_err(err)?))
    }
}

/// A fresh 32-byte channel epoch key.
#[pyfunction]
fn generate_epoch_key(py: Python<'_>) -> Bound<'_, PyBytes> {
    let key = EpochKey::generate(&mut OsRng);
    PyBytes::new(py, key.as_bytes())
}

/// Seals `plaintext` for `channel` at `epoch` under the 32-byte epoch `key`, signed by
/// `sender`: the `hm1.` string of a channel message. `nonce` (24 bytes) is for tests that
/// reproduce a vector only: a nonce must never be used twice under one key.
#[pyfunction]
#[pyo3(signature = (sender, channel, epoch, key, plaintext, *, nonce = None))]
fn seal_message(
    sender: &Device,
    channel: &str,
    epoch: u64,
    key: &[u8],
    plaintext: &[u8],
    nonce: Option<&[u8]>,
) -> PyResult<String> {
    let key = EpochKey::from_bytes(key32("epoch key", key)?);
    if let Some(n) = nonce
        && n.len() != 24
    {
        return Err(CryptoError::new_err(format!("nonce must be 24 bytes, got {}", n.len())));
    }
    let mut rng = Prefixed { bytes: nonce.unwrap_or_default() };
    herald_crypto::channel::seal_message(&mut rng, &sender.inner, channel, epoch, &key, plaintext)
        .map_err(err)
}

/// The `(epoch, sender device id)` a sealed message claims, read without verifying.
#[pyfunction]
fn sealed_header(sealed: &str) -> PyResult<(u64, String)> {
    let m = SealedMessage::parse(sealed).map_err(err)?;
    Ok((m.epoch(), m.sender().to_owned()))
}

/// Verifies a sealed channel message against the sender's pinned identity (JSON as
/// `identity_keys_json` gives it) and decrypts it with the 32-byte epoch key.
#[pyfunction]
fn open_message<'py>(
    py: Python<'py>,
    sealed: &str,
    channel: &str,
    key: &[u8],
    sender_identity_json: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let key = EpochKey::from_bytes(key32("epoch key", key)?);
    let sender: IdentityKeys = from_json!("identity keys", sender_identity_json)?;
    let m = SealedMessage::parse(sealed).map_err(err)?;
    let plaintext = m.open(channel, &key, &sender).map_err(err)?;
    Ok(PyBytes::new(py, &plaintext))
}

/// Seals the 32-byte epoch `key` of `channel`/`epoch` to `recipient` (identity JSON) with
/// HPKE, signed by `sender`: the `KeyEnvelope` JSON.
#[pyfunction]
fn seal_epoch_key(
    sender: &Device,
    channel: &str,
    epoch: u64,
    key: &[u8],
    recipient_identity_json: &str,
) -> PyResult<String> {
    let key = EpochKey::from_bytes(key32("epoch key", key)?);
    let recipient: IdentityKeys = from_json!("identity keys", recipient_identity_json)?;
    let env = herald_crypto::seal_epoch_key(&mut OsRng, &sender.inner, channel, epoch, &key, &recipient)
        .map_err(err)?;
    to_json!("key envelope", &env)
}

/// Verifies a `KeyEnvelope` (JSON) was signed by `sender` (identity JSON).
#[pyfunction]
fn verify_envelope(envelope_json: &str, sender_identity_json: &str) -> PyResult<()> {
    let env: KeyEnvelope = from_json!("key envelope", envelope_json)?;
    let sender: IdentityKeys = from_json!("identity keys", sender_identity_json)?;
    env.verify(&sender).map_err(err)
}

/// Verifies and opens a `KeyEnvelope` (JSON) sealed to `recipient` by `sender` (identity
/// JSON): the 32-byte epoch key.
#[pyfunction]
fn open_envelope<'py>(
    py: Python<'py>,
    envelope_json: &str,
    recipient: &Device,
    sender_identity_json: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let env: KeyEnvelope = from_json!("key envelope", envelope_json)?;
    let sender: IdentityKeys = from_json!("identity keys", sender_identity_json)?;
    let key = env.open(&recipient.inner, &sender).map_err(err)?;
    Ok(PyBytes::new(py, key.as_bytes()))
}

/// The unsigned genesis `EpochCommit` (JSON) of `channel` with `members` (JSON list of
/// `{user, devices}`).
#[pyfunction]
fn genesis_commit(channel: &str, members_json: &str) -> PyResult<String> {
    let members: Vec<Member> = from_json!("members", members_json)?;
    to_json!("commit", &EpochCommit::genesis(channel, members))
}

/// Signs an `EpochCommit` (JSON) with `signer`: the `SignedCommit` JSON.
#[pyfunction]
fn sign_commit(commit_json: &str, signer: &Device) -> PyResult<String> {
    let commit: EpochCommit = from_json!("commit", commit_json)?;
    to_json!("signed commit", &commit.sign(&signer.inner))
}

/// The chain hash of a `SignedCommit` (JSON), 32 bytes.
#[pyfunction]
fn commit_hash<'py>(py: Python<'py>, signed_commit_json: &str) -> PyResult<Bound<'py, PyBytes>> {
    let sc: SignedCommit = from_json!("signed commit", signed_commit_json)?;
    Ok(PyBytes::new(py, &sc.hash()))
}

/// Verifies a `SignedCommit` (JSON) against its signer's identity JSON.
#[pyfunction]
fn verify_commit(signed_commit_json: &str, signer_identity_json: &str) -> PyResult<()> {
    let sc: SignedCommit = from_json!("signed commit", signed_commit_json)?;
    let signer: IdentityKeys = from_json!("identity keys", signer_identity_json)?;
    sc.verify(&signer).map_err(err)
}

/// The verified roster history of one channel: built from the admins (identity JSON list)
/// and the genesis; every next commit must extend it.
#[pyclass(module = "herald_crypto._native")]
#[derive(Clone)]
struct RosterChain {
    inner: herald_crypto::RosterChain,
}

#[pymethods]
impl RosterChain {
    #[new]
    fn new(admins_json: &str, genesis_json: &str) -> PyResult<RosterChain> {
        let admins: Vec<IdentityKeys> = from_json!("admins", admins_json)?;
        let genesis: SignedCommit = from_json!("signed commit", genesis_json)?;
        Ok(RosterChain { inner: herald_crypto::RosterChain::new(&admins, genesis).map_err(err)? })
    }

    /// Verifies that `signed_commit_json` extends the chain and makes it the head; the chain
    /// is unchanged on error.
    fn apply(&mut self, signed_commit_json: &str) -> PyResult<()> {
        let sc: SignedCommit = from_json!("signed commit", signed_commit_json)?;
        self.inner.apply(&sc).map_err(err)
    }

    /// A copy (for a dry run of `apply`).
    fn copy(&self) -> RosterChain {
        self.clone()
    }

    #[getter]
    fn channel(&self) -> String {
        self.inner.channel().to_owned()
    }

    #[getter]
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    fn head_hash<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.head_hash())
    }

    /// The head's members (JSON list of `{user, devices}`).
    fn members_json(&self) -> PyResult<String> {
        to_json!("members", &self.inner.members())
    }

    /// The members of a verified `epoch` (JSON), or None.
    fn members_at_json(&self, epoch: u64) -> PyResult<Option<String>> {
        self.inner.members_at(epoch).map(|m| to_json!("members", &m)).transpose()
    }

    fn is_member_device(&self, epoch: u64, device: &str) -> bool {
        self.inner.is_member_device(epoch, device)
    }

    /// The unsigned commit (JSON) of the next epoch with `members_json` and `reason_json`
    /// (`{"kind": "add", "users": [...]}`, `{"kind": "remove", ...}`, `{"kind": "rotate"}`).
    fn next_commit(&self, members_json: &str, reason_json: &str) -> PyResult<String> {
        let members: Vec<Member> = from_json!("members", members_json)?;
        let reason: CommitReason = from_json!("commit reason", reason_json)?;
        to_json!("commit", &self.inner.next_commit(members, reason))
    }
}

/// Encrypts `data` under a fresh file key and erasure-codes it into `data_shards` +
/// `parity_shards` shards: `(FileManifest JSON, shards)`. The manifest holds the key.
#[pyfunction]
#[pyo3(signature = (name, mime, data, *, data_shards = 4, parity_shards = 2, chunk_size = 65536))]
fn encrypt_file<'py>(
    py: Python<'py>,
    name: &str,
    mime: &str,
    data: &[u8],
    data_shards: usize,
    parity_shards: usize,
    chunk_size: usize,
) -> PyResult<(String, Vec<Bound<'py, PyBytes>>)> {
    let params = FileParams { data_shards, parity_shards, chunk_size };
    let enc = herald_crypto::encrypt_file(&mut OsRng, name, mime, data, &params).map_err(err)?;
    let shards = enc.shards.iter().map(|s| PyBytes::new(py, s)).collect();
    Ok((to_json!("file manifest", &enc.manifest)?, shards))
}

/// Rebuilds and decrypts a file from its manifest JSON and shards (None for a lost one).
#[pyfunction]
fn decrypt_file<'py>(
    py: Python<'py>,
    manifest_json: &str,
    shards: Vec<Option<Vec<u8>>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let manifest = FileManifest::from_json(manifest_json).map_err(err)?;
    Ok(PyBytes::new(py, &herald_crypto::decrypt_file(&manifest, &shards).map_err(err)?))
}

fn secret<'a>(passphrase: Option<&'a str>, key: Option<&'a [u8; 32]>) -> PyResult<StateSecret<'a>> {
    match (passphrase, key) {
        (Some(p), None) => Ok(StateSecret::Passphrase(p)),
        (None, Some(k)) => Ok(StateSecret::Key(k)),
        _ => Err(CryptoError::new_err("give exactly one of passphrase and key")),
    }
}

/// The sealed `HST1` container of a device state at rest (the Rust SDK's state file):
/// `"HST1" | kdf u8 | salt[16] | nonce[24] | XChaCha20-Poly1305`, the key a 32-byte key
/// file's or Argon2id of a passphrase.
#[pyclass(module = "herald_crypto._native")]
struct StateSealer {
    inner: RustStateSealer,
}

#[pymethods]
impl StateSealer {
    /// A sealer for a new state (fresh salt) under a passphrase or a 32-byte key.
    #[staticmethod]
    #[pyo3(signature = (*, passphrase = None, key = None))]
    fn create(passphrase: Option<&str>, key: Option<&[u8]>) -> PyResult<StateSealer> {
        let key = key.map(|k| key32("state key", k)).transpose()?;
        let inner = RustStateSealer::create(&mut OsRng, secret(passphrase, key.as_ref())?).map_err(err)?;
        Ok(StateSealer { inner })
    }

    /// Opens a sealed state: `(sealer, plaintext)`. A wrong secret or altered bytes raise
    /// `DecryptError`; the other key kind `MismatchError`.
    #[staticmethod]
    #[pyo3(signature = (raw, *, passphrase = None, key = None))]
    fn open<'py>(
        py: Python<'py>,
        raw: &[u8],
        passphrase: Option<&str>,
        key: Option<&[u8]>,
    ) -> PyResult<(StateSealer, Bound<'py, PyBytes>)> {
        let key = key.map(|k| key32("state key", k)).transpose()?;
        let (inner, plain) = RustStateSealer::open(raw, secret(passphrase, key.as_ref())?).map_err(err)?;
        Ok((StateSealer { inner }, PyBytes::new(py, &plain)))
    }

    /// Seals `plaintext` with a fresh nonce.
    fn seal<'py>(&self, py: Python<'py>, plaintext: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.inner.seal(&mut OsRng, plaintext).map_err(err)?))
    }

    /// The derived 32-byte key (also the pickle key of what the state holds).
    fn key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.key())
    }

    /// `"passphrase"` or `"key file"`.
    #[getter]
    fn kdf(&self) -> &'static str {
        self.inner.kdf().name()
    }

    fn __repr__(&self) -> String {
        format!("StateSealer(kdf={:?})", self.inner.kdf().name())
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CryptoError", m.py().get_type::<CryptoError>())?;
    m.add("DecryptError", m.py().get_type::<DecryptError>())?;
    m.add("MismatchError", m.py().get_type::<MismatchError>())?;
    m.add_class::<Device>()?;
    m.add_class::<OlmSession>()?;
    m.add_class::<PinnedDevices>()?;
    m.add_class::<EpochKeyring>()?;
    m.add_class::<RosterChain>()?;
    m.add_class::<StateSealer>()?;
    m.add_function(wrap_pyfunction!(verify_bundle, m)?)?;
    m.add_function(wrap_pyfunction!(generate_epoch_key, m)?)?;
    m.add_function(wrap_pyfunction!(seal_message, m)?)?;
    m.add_function(wrap_pyfunction!(sealed_header, m)?)?;
    m.add_function(wrap_pyfunction!(open_message, m)?)?;
    m.add_function(wrap_pyfunction!(seal_epoch_key, m)?)?;
    m.add_function(wrap_pyfunction!(verify_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(open_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(genesis_commit, m)?)?;
    m.add_function(wrap_pyfunction!(sign_commit, m)?)?;
    m.add_function(wrap_pyfunction!(commit_hash, m)?)?;
    m.add_function(wrap_pyfunction!(verify_commit, m)?)?;
    m.add_function(wrap_pyfunction!(encrypt_file, m)?)?;
    m.add_function(wrap_pyfunction!(decrypt_file, m)?)?;
    Ok(())
}
