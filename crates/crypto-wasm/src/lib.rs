//! `herald-crypto` for TypeScript: wasm-bindgen bindings over the Rust implementation itself,
//! so browser and Rust clients are byte-compatible by construction. No logic of its own: each
//! function converts its arguments, calls `herald-crypto`, and converts the result; errors
//! become JavaScript `Error`s with `herald-crypto`'s message. Randomness is the platform's
//! `crypto.getRandomValues` (getrandom's `js` backend). It never logs.
//!
//! Built by `scripts/build-wasm` into `sdk/ts/src/wasm` (the generated `.wasm` and glue are
//! committed so the SDK builds without the wasm target).

use herald_crypto::{
    Device, EpochCommit, EpochKey, EpochKeyring, FileManifest, FileParams, IdentityKeys, KeyBundle,
    KeyEnvelope, OlmMessage, OlmSession, PickleKey, PinnedDevices, RosterChain, SealedMessage, SignedCommit,
    SignedKey, StateSealer, StateSecret, decrypt_file, encrypt_file, seal_message,
};
use rand_core::OsRng;
use wasm_bindgen::prelude::*;

fn json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, JsError> {
    serde_json::from_str(text).map_err(|e| JsError::new(&format!("malformed {what}: {e}")))
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, JsError> {
    serde_json::to_string(v).map_err(|e| JsError::new(&e.to_string()))
}

fn pickle_key(bytes: &[u8]) -> Result<PickleKey, JsError> {
    Ok(PickleKey::from_bytes(key32(bytes, "pickle key")?))
}

fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32], JsError> {
    bytes.try_into().map_err(|_| JsError::new(&format!("{what} must be 32 bytes, got {}", bytes.len())))
}

/// A device: its identity keys and its one-time keys (PROTOCOL.md §7).
#[wasm_bindgen]
pub struct WasmDevice(Device);

impl std::fmt::Debug for WasmDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmDevice").field("device_id", &self.0.device_id()).finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl WasmDevice {
    /// A new device with fresh keys.
    #[wasm_bindgen(constructor)]
    pub fn new(device_id: &str) -> Result<WasmDevice, JsError> {
        Ok(WasmDevice(Device::new(&mut OsRng, device_id)?))
    }

    #[wasm_bindgen(js_name = deviceId)]
    pub fn device_id(&self) -> String {
        self.0.device_id().to_owned()
    }

    /// The public identity (JSON, as `herald-crypto` serializes `IdentityKeys`).
    #[wasm_bindgen(js_name = identityKeys)]
    pub fn identity_keys(&self) -> Result<String, JsError> {
        Ok(serde_json::to_string(&self.0.identity_keys())?)
    }

    /// A signed key bundle with `one_time_keys` new one-time keys (JSON), for `PUT /v1/keys/devices/{id}`.
    #[wasm_bindgen(js_name = publishBundle)]
    pub fn publish_bundle(&mut self, one_time_keys: usize) -> Result<String, JsError> {
        Ok(serde_json::to_string(&self.0.publish_bundle(one_time_keys))?)
    }

    /// The device's secret state, encrypted under a 32-byte key.
    pub fn pickle(&self, key: &[u8]) -> Result<String, JsError> {
        Ok(self.0.pickle(&mut OsRng, &PickleKey::from_bytes(key32(key, "pickle key")?)))
    }

    #[wasm_bindgen(js_name = fromPickle)]
    pub fn from_pickle(pickled: &str, key: &[u8]) -> Result<WasmDevice, JsError> {
        Ok(WasmDevice(Device::from_pickle(pickled, &PickleKey::from_bytes(key32(key, "pickle key")?))?))
    }

    /// An Ed25519 signature by this device over `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).to_vec()
    }

    /// An outbound Olm session with `peer` (JSON `IdentityKeys`, pinned by the caller) from
    /// a key claimed for it (JSON `SignedKey`); the key's signature by `peer` is checked.
    #[wasm_bindgen(js_name = createOutboundSession)]
    pub fn create_outbound_session(&self, peer: &str, claimed: &str) -> Result<WasmOlmSession, JsError> {
        let peer: IdentityKeys = json(peer, "identity keys")?;
        let claimed: SignedKey = json(claimed, "claimed key")?;
        Ok(WasmOlmSession(self.0.create_outbound_session(&peer, &claimed)?))
    }

    /// An inbound Olm session from `peer`'s pre-key message (JSON `OlmMessage`), with the
    /// plaintext. Consumes the one-time key (pickle the device afterwards).
    #[wasm_bindgen(js_name = createInboundSession)]
    pub fn create_inbound_session(&mut self, peer: &str, message: &str) -> Result<InboundSession, JsError> {
        let peer: IdentityKeys = json(peer, "identity keys")?;
        let message: OlmMessage = json(message, "olm message")?;
        let (session, plaintext) = self.0.create_inbound_session(&peer, &message)?;
        Ok(InboundSession { session: Some(WasmOlmSession(session)), plaintext })
    }

    /// Signs an unsigned commit (JSON `EpochCommit`): the JSON `SignedCommit`.
    #[wasm_bindgen(js_name = signCommit)]
    pub fn sign_commit(&self, commit: &str) -> Result<String, JsError> {
        let commit: EpochCommit = json(commit, "commit")?;
        to_json(&commit.sign(&self.0))
    }

    /// Seals the 32-byte epoch `key` of `channel` to `recipient` (JSON `IdentityKeys`): the
    /// JSON `KeyEnvelope`.
    #[wasm_bindgen(js_name = sealEpochKey)]
    pub fn seal_epoch_key(
        &self,
        channel: &str,
        epoch: u64,
        key: &[u8],
        recipient: &str,
    ) -> Result<String, JsError> {
        let recipient: IdentityKeys = json(recipient, "identity keys")?;
        let key = EpochKey::from_bytes(key32(key, "epoch key")?);
        to_json(&herald_crypto::seal_epoch_key(&mut OsRng, &self.0, channel, epoch, &key, &recipient)?)
    }

    /// Opens an envelope (JSON `KeyEnvelope`) sealed to this device by `sender` (JSON
    /// `IdentityKeys`, pinned), checking its signature: the 32-byte epoch key.
    #[wasm_bindgen(js_name = openEnvelope)]
    pub fn open_envelope(&self, envelope: &str, sender: &str) -> Result<Vec<u8>, JsError> {
        let envelope: KeyEnvelope = json(envelope, "key envelope")?;
        let sender: IdentityKeys = json(sender, "identity keys")?;
        Ok(envelope.open(&self.0, &sender)?.as_bytes().to_vec())
    }
}

/// The result of [`WasmDevice::create_inbound_session`].
#[wasm_bindgen]
pub struct InboundSession {
    session: Option<WasmOlmSession>,
    plaintext: Vec<u8>,
}

impl std::fmt::Debug for InboundSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSession").finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl InboundSession {
    /// The decrypted first message.
    #[wasm_bindgen(getter)]
    pub fn plaintext(&self) -> Vec<u8> {
        self.plaintext.clone()
    }

    /// The new session (once: a second call fails).
    #[wasm_bindgen(js_name = takeSession)]
    pub fn take_session(&mut self) -> Result<WasmOlmSession, JsError> {
        self.session.take().ok_or_else(|| JsError::new("the session was taken already"))
    }
}

/// An Olm session with one peer device (herald-crypto's `OlmSession`).
#[wasm_bindgen]
pub struct WasmOlmSession(OlmSession);

impl std::fmt::Debug for WasmOlmSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[wasm_bindgen]
impl WasmOlmSession {
    #[wasm_bindgen(js_name = sessionId)]
    pub fn session_id(&self) -> String {
        self.0.session_id()
    }

    #[wasm_bindgen(js_name = peerDevice)]
    pub fn peer_device(&self) -> String {
        self.0.peer_device().to_owned()
    }

    #[wasm_bindgen(js_name = hasReceivedMessage)]
    pub fn has_received_message(&self) -> bool {
        self.0.has_received_message()
    }

    /// Encrypts `plaintext`: the JSON `OlmMessage` (a DM body).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<String, JsError> {
        to_json(&self.0.encrypt(plaintext))
    }

    /// Decrypts a JSON `OlmMessage`.
    pub fn decrypt(&mut self, message: &str) -> Result<Vec<u8>, JsError> {
        let message: OlmMessage = json(message, "olm message")?;
        Ok(self.0.decrypt(&message)?)
    }

    /// Whether a pre-key message (JSON `OlmMessage`) belongs to this session.
    pub fn matches(&self, message: &str) -> Result<bool, JsError> {
        let message: OlmMessage = json(message, "olm message")?;
        Ok(self.0.matches(&message))
    }

    /// The session's state, encrypted under a 32-byte key (`hses1.`).
    pub fn pickle(&self, key: &[u8]) -> Result<String, JsError> {
        Ok(self.0.pickle(&mut OsRng, &pickle_key(key)?))
    }

    #[wasm_bindgen(js_name = fromPickle)]
    pub fn from_pickle(pickled: &str, key: &[u8]) -> Result<WasmOlmSession, JsError> {
        Ok(WasmOlmSession(OlmSession::from_pickle(pickled, &pickle_key(key)?)?))
    }
}

/// Verifies every signature of a key bundle (JSON `KeyBundle`) and rejects weak keys.
#[wasm_bindgen(js_name = verifyBundle)]
pub fn verify_bundle(bundle: &str) -> Result<(), JsError> {
    let bundle: KeyBundle = json(bundle, "key bundle")?;
    Ok(bundle.verify()?)
}

/// Pinned device identities (herald-crypto's `PinnedDevices`): a device re-pinned to other
/// keys, or a key claimed by two devices, is refused.
#[wasm_bindgen]
#[derive(Debug, Default)]
pub struct WasmPins(PinnedDevices);

#[wasm_bindgen]
impl WasmPins {
    #[wasm_bindgen(constructor)]
    pub fn new() -> WasmPins {
        WasmPins(PinnedDevices::new())
    }

    /// Verifies a bundle (JSON `KeyBundle`; its one-time keys may be empty) and pins its
    /// identity: the pinned `IdentityKeys` (JSON).
    pub fn pin(&mut self, bundle: &str) -> Result<String, JsError> {
        let bundle: KeyBundle = json(bundle, "key bundle")?;
        to_json(self.0.pin(&bundle)?)
    }

    /// The pinned identity of `device_id` (JSON), or an error when it is not pinned.
    pub fn get(&self, device_id: &str) -> Result<String, JsError> {
        to_json(self.0.get(device_id)?)
    }

    #[wasm_bindgen(getter)]
    pub fn size(&self) -> usize {
        self.0.len()
    }
}

/// A channel's epoch keys (herald-crypto's `EpochKeyring`).
#[wasm_bindgen]
#[derive(Debug)]
pub struct WasmKeyring(EpochKeyring);

#[wasm_bindgen]
impl WasmKeyring {
    #[wasm_bindgen(constructor)]
    pub fn new(channel: &str) -> Result<WasmKeyring, JsError> {
        Ok(WasmKeyring(EpochKeyring::new(channel)?))
    }

    /// Adds the 32-byte key of `epoch` (the same key again is accepted, another is refused).
    pub fn insert(&mut self, epoch: u64, key: &[u8]) -> Result<(), JsError> {
        Ok(self.0.insert(epoch, EpochKey::from_bytes(key32(key, "epoch key")?))?)
    }

    /// The key of `epoch` (an error when it is not held).
    pub fn get(&self, epoch: u64) -> Result<Vec<u8>, JsError> {
        Ok(self.0.get(epoch)?.as_bytes().to_vec())
    }

    pub fn has(&self, epoch: u64) -> bool {
        self.0.get(epoch).is_ok()
    }

    /// The epochs held, ascending.
    pub fn epochs(&self) -> Vec<u64> {
        self.0.iter().map(|(e, _)| e).collect()
    }

    /// Seals `plaintext` with the key of `epoch`, signed by `sender`: the `hm1.` string.
    pub fn seal(&self, sender: &WasmDevice, epoch: u64, plaintext: &[u8]) -> Result<String, JsError> {
        let key = self.0.get(epoch)?;
        Ok(seal_message(&mut OsRng, &sender.0, self.0.channel(), epoch, key, plaintext)?)
    }

    /// Opens a sealed message with the key of its epoch, checking the signature of the sender
    /// (JSON `IdentityKeys`, pinned by the caller).
    pub fn open(&self, sealed: &str, sender_identity: &str) -> Result<Vec<u8>, JsError> {
        let s = SealedMessage::parse(sealed)?;
        let identity: IdentityKeys = json(sender_identity, "identity keys")?;
        let key = self.0.get(s.epoch())?;
        Ok(s.open(self.0.channel(), key, &identity)?)
    }

    /// Opens an envelope (JSON `KeyEnvelope`) sealed to `recipient` by `sender` (JSON
    /// `IdentityKeys`) and adds its key.
    #[wasm_bindgen(js_name = openEnvelopeInto)]
    pub fn open_envelope_into(
        &mut self,
        envelope: &str,
        recipient: &WasmDevice,
        sender: &str,
    ) -> Result<(), JsError> {
        let envelope: KeyEnvelope = json(envelope, "key envelope")?;
        let sender: IdentityKeys = json(sender, "identity keys")?;
        Ok(envelope.open_into(&recipient.0, &sender, &mut self.0)?)
    }
}

/// Verifies a key envelope's signature (JSON `KeyEnvelope`) against its sender's pinned
/// identity (JSON `IdentityKeys`).
#[wasm_bindgen(js_name = verifyEnvelope)]
pub fn verify_envelope(envelope: &str, sender: &str) -> Result<(), JsError> {
    let envelope: KeyEnvelope = json(envelope, "key envelope")?;
    let sender: IdentityKeys = json(sender, "identity keys")?;
    Ok(envelope.verify(&sender)?)
}

/// The genesis commit of `channel` with `members` (JSON `[Member]`), unsigned (JSON `EpochCommit`).
#[wasm_bindgen(js_name = genesisCommit)]
pub fn genesis_commit(channel: &str, members: &str) -> Result<String, JsError> {
    let members = json(members, "members")?;
    to_json(&EpochCommit::genesis(channel, members))
}

/// The hash of a signed commit (JSON `SignedCommit`): 64 lowercase hex digits.
#[wasm_bindgen(js_name = commitHash)]
pub fn commit_hash(commit: &str) -> Result<String, JsError> {
    let commit: SignedCommit = json(commit, "signed commit")?;
    Ok(blake3_hex(&commit.hash()))
}

/// Verifies a signed commit's signature by `signer` (JSON `IdentityKeys`).
#[wasm_bindgen(js_name = verifyCommit)]
pub fn verify_commit(commit: &str, signer: &str) -> Result<(), JsError> {
    let commit: SignedCommit = json(commit, "signed commit")?;
    let signer: IdentityKeys = json(signer, "identity keys")?;
    Ok(commit.verify(&signer)?)
}

fn blake3_hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A verified roster chain (herald-crypto's `RosterChain`).
#[wasm_bindgen]
#[derive(Debug, Clone)]
pub struct WasmRosterChain(RosterChain);

#[wasm_bindgen]
impl WasmRosterChain {
    /// A chain from its genesis (JSON `SignedCommit`), trusting `admins` (JSON `[IdentityKeys]`)
    /// as the only signers.
    #[wasm_bindgen(constructor)]
    pub fn new(admins: &str, genesis: &str) -> Result<WasmRosterChain, JsError> {
        let admins: Vec<IdentityKeys> = json(admins, "admins")?;
        let genesis: SignedCommit = json(genesis, "genesis commit")?;
        Ok(WasmRosterChain(RosterChain::new(&admins, genesis)?))
    }

    /// Verifies `commit` (JSON `SignedCommit`) extends the chain and makes it the head; on
    /// error the chain is unchanged.
    pub fn apply(&mut self, commit: &str) -> Result<(), JsError> {
        let commit: SignedCommit = json(commit, "signed commit")?;
        Ok(self.0.apply(&commit)?)
    }

    /// Whether `commit` would be accepted, without applying it.
    #[wasm_bindgen(js_name = checkNext)]
    pub fn check_next(&self, commit: &str) -> Result<(), JsError> {
        let commit: SignedCommit = json(commit, "signed commit")?;
        Ok(self.0.clone().apply(&commit)?)
    }

    #[wasm_bindgen(getter)]
    pub fn epoch(&self) -> u64 {
        self.0.epoch()
    }

    #[wasm_bindgen(getter)]
    pub fn channel(&self) -> String {
        self.0.channel().to_owned()
    }

    /// The head commit (JSON `SignedCommit`).
    pub fn head(&self) -> Result<String, JsError> {
        to_json(self.0.head())
    }

    #[wasm_bindgen(js_name = headHash)]
    pub fn head_hash(&self) -> String {
        blake3_hex(&self.0.head_hash())
    }

    /// The members of the head epoch (JSON `[Member]`).
    pub fn members(&self) -> Result<String, JsError> {
        to_json(&self.0.members())
    }

    /// The members of `epoch` (JSON `[Member]`), or `undefined` when it was not verified.
    #[wasm_bindgen(js_name = membersAt)]
    pub fn members_at(&self, epoch: u64) -> Result<Option<String>, JsError> {
        self.0.members_at(epoch).map(to_json).transpose()
    }

    #[wasm_bindgen(js_name = isMemberDevice)]
    pub fn is_member_device(&self, epoch: u64, device: &str) -> bool {
        self.0.is_member_device(epoch, device)
    }

    /// The unsigned commit of the next epoch (JSON `EpochCommit`) with `members` (JSON
    /// `[Member]`) and `reason` (JSON `CommitReason`, e.g. `{"kind":"remove","users":["bob"]}`).
    #[wasm_bindgen(js_name = nextCommit)]
    pub fn next_commit(&self, members: &str, reason: &str) -> Result<String, JsError> {
        let members = json(members, "members")?;
        let reason = json(reason, "commit reason")?;
        to_json(&self.0.next_commit(members, reason))
    }

    #[wasm_bindgen(js_name = clone)]
    pub fn duplicate(&self) -> WasmRosterChain {
        self.clone()
    }
}

/// The sealed `HST1` container of a device's state (herald-crypto's `StateSealer`).
#[wasm_bindgen]
pub struct WasmStateSealer(StateSealer);

impl std::fmt::Debug for WasmStateSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn secret<'a>(
    passphrase: Option<&'a str>,
    key: Option<&[u8]>,
    buf: &'a mut [u8; 32],
) -> Result<StateSecret<'a>, JsError> {
    match (passphrase, key) {
        (Some(p), None) => Ok(StateSecret::Passphrase(p)),
        (None, Some(k)) => {
            *buf = key32(k, "state key")?;
            Ok(StateSecret::Key(buf))
        }
        _ => Err(JsError::new("give a passphrase or a 32-byte key, not both")),
    }
}

#[wasm_bindgen]
impl WasmStateSealer {
    /// A sealer for a new container, from a passphrase (Argon2id) or a 32-byte key.
    pub fn create(passphrase: Option<String>, key: Option<Vec<u8>>) -> Result<WasmStateSealer, JsError> {
        let mut buf = [0u8; 32];
        let s = secret(passphrase.as_deref(), key.as_deref(), &mut buf)?;
        let sealer = StateSealer::create(&mut OsRng, s);
        buf.fill(0);
        Ok(WasmStateSealer(sealer?))
    }

    /// Opens a container: the sealer (to seal new versions) and the plaintext, as
    /// [`OpenedState`]. Errors name the cause: not a container, the other kind of secret,
    /// or a wrong secret / altered bytes.
    pub fn open(
        raw: &[u8],
        passphrase: Option<String>,
        key: Option<Vec<u8>>,
    ) -> Result<OpenedState, JsError> {
        let mut buf = [0u8; 32];
        let s = secret(passphrase.as_deref(), key.as_deref(), &mut buf)?;
        let r = StateSealer::open(raw, s);
        buf.fill(0);
        let (sealer, plain) = r?;
        Ok(OpenedState { sealer: Some(WasmStateSealer(sealer)), plaintext: plain.to_vec() })
    }

    /// A new container of `plaintext` (fresh nonce, same salt and key).
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, JsError> {
        Ok(self.0.seal(&mut OsRng, plaintext)?)
    }

    /// The derived 32-byte key (the pickles inside the state are made under it).
    pub fn key(&self) -> Vec<u8> {
        self.0.key().to_vec()
    }

    /// "passphrase" or "key file".
    #[wasm_bindgen(getter)]
    pub fn kdf(&self) -> String {
        self.0.kdf().name().to_owned()
    }
}

/// The result of [`WasmStateSealer::open`].
#[wasm_bindgen]
pub struct OpenedState {
    sealer: Option<WasmStateSealer>,
    plaintext: Vec<u8>,
}

impl std::fmt::Debug for OpenedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedState").finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl OpenedState {
    #[wasm_bindgen(getter)]
    pub fn plaintext(&self) -> Vec<u8> {
        self.plaintext.clone()
    }

    #[wasm_bindgen(js_name = takeSealer)]
    pub fn take_sealer(&mut self) -> Result<WasmStateSealer, JsError> {
        self.sealer.take().ok_or_else(|| JsError::new("the sealer was taken already"))
    }
}

/// A fresh 32-byte channel epoch key.
#[wasm_bindgen(js_name = generateEpochKey)]
pub fn generate_epoch_key() -> Vec<u8> {
    EpochKey::generate(&mut OsRng).as_bytes().to_vec()
}

/// Seals `plaintext` for `channel` at `epoch` under `key`, signed by `sender`: the `hm1.` string.
#[wasm_bindgen(js_name = sealMessage)]
pub fn seal(
    sender: &WasmDevice,
    channel: &str,
    epoch: u64,
    key: &[u8],
    plaintext: &[u8],
) -> Result<String, JsError> {
    let key = EpochKey::from_bytes(key32(key, "epoch key")?);
    Ok(seal_message(&mut OsRng, &sender.0, channel, epoch, &key, plaintext)?)
}

/// The epoch and sender device of a sealed message, before opening it: `{"epoch", "sender"}`.
#[wasm_bindgen(js_name = sealedInfo)]
pub fn sealed_info(sealed: &str) -> Result<String, JsError> {
    let s = SealedMessage::parse(sealed)?;
    Ok(serde_json::json!({ "epoch": s.epoch(), "sender": s.sender() }).to_string())
}

/// Opens a sealed message of `channel` with the epoch `key`, checking the signature of the
/// sender whose identity (JSON `IdentityKeys`) the caller pinned.
#[wasm_bindgen(js_name = openMessage)]
pub fn open(sealed: &str, channel: &str, key: &[u8], sender_identity: &str) -> Result<Vec<u8>, JsError> {
    let s = SealedMessage::parse(sealed)?;
    let identity: IdentityKeys = serde_json::from_str(sender_identity)?;
    let key = EpochKey::from_bytes(key32(key, "epoch key")?);
    Ok(s.open(channel, &key, &identity)?)
}

/// An encrypted, erasure-coded file: its manifest (JSON; it holds the key, so it travels only
/// inside sealed messages) and its shards (channel blobs).
#[wasm_bindgen]
#[derive(Debug)]
pub struct EncryptedFile {
    manifest: String,
    shards: Vec<Vec<u8>>,
}

#[wasm_bindgen]
impl EncryptedFile {
    #[wasm_bindgen(getter)]
    pub fn manifest(&self) -> String {
        self.manifest.clone()
    }

    #[wasm_bindgen(getter, js_name = shardCount)]
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Shard `index` (data shards first, then parity).
    pub fn shard(&self, index: usize) -> Result<Vec<u8>, JsError> {
        self.shards.get(index).cloned().ok_or_else(|| JsError::new(&format!("no shard {index}")))
    }
}

/// Encrypts `data` under a fresh key into `data_shards + parity_shards` shards (any
/// `data_shards` of them recover it).
#[wasm_bindgen(js_name = encryptFile)]
pub fn encrypt(
    name: &str,
    mime: &str,
    data: &[u8],
    data_shards: usize,
    parity_shards: usize,
) -> Result<EncryptedFile, JsError> {
    let params = FileParams { data_shards, parity_shards, ..FileParams::default() };
    let f = encrypt_file(&mut OsRng, name, mime, data, &params)?;
    Ok(EncryptedFile { manifest: f.manifest.to_json(), shards: f.shards })
}

/// Decrypts a file from its manifest and shards; a missing shard is `null`/`undefined`.
#[wasm_bindgen(js_name = decryptFile)]
pub fn decrypt(manifest: &str, shards: Vec<JsValue>) -> Result<Vec<u8>, JsError> {
    let manifest = FileManifest::from_json(manifest)?;
    let shards: Vec<Option<Vec<u8>>> =
        shards
            .iter()
            .map(|v| {
                if v.is_null() || v.is_undefined() { None } else { Some(js_sys::Uint8Array::new(v).to_vec()) }
            })
            .collect();
    Ok(decrypt_file(&manifest, &shards)?)
}
