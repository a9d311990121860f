//! End-to-end encryption in the SDK (PROTOCOL.md §7, formats in `crates/crypto/README.md`):
//! a device registered with the server, direct messages over Olm with the server's offline
//! inbox, encrypted channels whose epoch keys travel in HPKE envelopes under a signed roster
//! chain, encrypted erasure-coded files, and the keeper that hands keys to new members.
//!
//! Everything secret stays here: the server sees bundles, ciphertexts, envelopes and signed
//! commits only. What this layer must never do: accept a changed identity key for a pinned
//! device, deliver a message it could not verify as if it were fine (an unopenable message
//! or DM is surfaced with its reason), ack a DM before its session state is on disk, or
//! write the state file anywhere but atomically and encrypted.
//!
//! ```no_run
//! use herald_client::e2ee::{E2ee, E2eeConfig, StateKey};
//! # async fn demo() -> Result<(), herald_client::e2ee::E2eeError> {
//! let cfg = E2eeConfig::new("ada.state", StateKey::passphrase("…")).device_id("ada-laptop");
//! let ada = E2ee::connect("http://127.0.0.1:7700", "<jwt>", Default::default(), cfg).await?;
//! ada.send_dm("grace", b"hello").await?;
//! let channel = ada.channels().create_encrypted("secret-plans").await?;
//! channel.send("hi").await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `state`: the encrypted, atomically written device state file ([`StateKey`]).
//! - `dm`: [`E2ee::send_dm`] and the [`DmStream`] of decrypted direct messages.
//! - `channel`: [`EncryptedChannel`]: sealed messages, roster commits, envelopes, files.
//! - `keeper`: [`Keeper`], the service device that admits new members.

mod channel;
mod dm;
mod keeper;
mod state;

pub use channel::{
    EncryptedChannel, EncryptedChannels, EncryptedEdits, EncryptedMessages, FILE_TYPE, FileRef, Opened,
    OpenedMessage, Unopenable, UnopenableReason,
};
pub use dm::{Dm, DmFailure, DmStream};
pub use keeper::{Keeper, KeeperAction, KeeperConfig};
pub use state::StateKey;

use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::rest::{Rest, segment};
use herald_crypto::{
    CryptoError, Device, EpochKey, EpochKeyring, IdentityKeys, KeyBundle, OlmSession, PickleKey,
    PinnedDevices, RosterChain,
};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use state::{ChannelState, Persisted, PinnedDevice, StateFile};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many one-time keys a device keeps on the server: uploaded at registration and topped
/// up when fewer than [`E2eeConfig::min_one_time_keys`] are left.
pub const DEFAULT_ONE_TIME_KEYS: usize = 50;

/// How many handled DM ids the state remembers (to ignore a redelivery).
const HANDLED_DMS_MAX: usize = 10_000;

/// Why an E2EE operation failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eeError {
    /// The server or the connection failed (see [`ClientError`]).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A cryptographic check failed: a bad signature, a key that does not verify, a
    /// message that does not decrypt.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// A device pinned earlier now shows other identity keys: refused. If the change is
    /// expected (the device was reset), remove the pin by verifying the new fingerprint
    /// with [`E2ee::verify_device`] after checking it out of band.
    #[error(
        "identity of device {device:?} of {user:?} changed since it was pinned: refused (possible attack)"
    )]
    IdentityChanged { user: String, device: String },
    /// A fingerprint given to [`E2ee::verify_device`] does not match the device's key.
    #[error(
        "fingerprint of device {device:?} of {user:?} does not match: expected {expected}, the server shows {found}"
    )]
    FingerprintMismatch { user: String, device: String, expected: String, found: String },
    /// A device is unknown to the server (or revoked), or is not the named user's.
    #[error("unknown device {device:?} of {user:?}")]
    UnknownDevice { user: String, device: String },
    /// The state file cannot be read, decrypted or written.
    #[error("device state: {0}")]
    State(String),
    /// A channel is not encrypted, or its roster or keys do not allow the operation.
    #[error("{0}")]
    Channel(String),
    /// A channel message cannot be opened (boxed: it is the largest variant).
    #[error("unopenable message: {0}")]
    Unopenable(Box<Unopenable>),
    /// The server answered something unreadable.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl From<Unopenable> for E2eeError {
    fn from(u: Unopenable) -> E2eeError {
        E2eeError::Unopenable(Box::new(u))
    }
}

/// How to open or create the device state.
#[derive(Debug, Clone)]
pub struct E2eeConfig {
    /// The state file (created on first use).
    pub state_path: PathBuf,
    /// Its key.
    pub key: StateKey,
    /// The device id for a new state file; a random one (`d-<16 hex>`) without it. Ignored
    /// when the file exists (it holds its device).
    pub device_id: Option<String>,
    /// One-time keys uploaded at registration and after each top-up.
    pub one_time_keys: usize,
    /// Top up when the server says fewer than this many are left.
    pub min_one_time_keys: usize,
}

impl E2eeConfig {
    /// A configuration with the default key counts.
    pub fn new(state_path: impl Into<PathBuf>, key: StateKey) -> E2eeConfig {
        E2eeConfig {
            state_path: state_path.into(),
            key,
            device_id: None,
            one_time_keys: DEFAULT_ONE_TIME_KEYS,
            min_one_time_keys: DEFAULT_ONE_TIME_KEYS / 2,
        }
    }

    /// Sets [`E2eeConfig::device_id`].
    pub fn device_id(mut self, id: impl Into<String>) -> E2eeConfig {
        self.device_id = Some(id.into());
        self
    }
}

/// One device of a user as the key directory lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceInfo {
    pub device_id: String,
    pub identity: IdentityKeys,
    #[serde(with = "sig_b64")]
    pub identity_signature: [u8; 64],
    #[serde(default)]
    pub fallback_key: Option<herald_crypto::SignedKey>,
    /// How many one-time keys are left on the server.
    #[serde(default)]
    pub one_time_keys: u64,
    /// The keeper's user (only in `GET /v1/keys/keepers`).
    #[serde(default)]
    pub user: Option<String>,
}

impl DeviceInfo {
    /// The fingerprint users compare out of band: the device's Ed25519 key in hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.identity)
    }
}

/// The fingerprint of an identity: lowercase hex of its Ed25519 key, in groups of 4.
pub fn fingerprint(identity: &IdentityKeys) -> String {
    let h = hex::encode(identity.ed25519);
    h.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

pub(crate) mod sig_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = String::deserialize(d)?;
        let v = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(D::Error::custom)?;
        v.try_into().map_err(|_| D::Error::custom("signature is not 64 bytes"))
    }
}

/// The device's live state: the decoded form of [`Persisted`].
pub(crate) struct Live {
    pub user: String,
    pub device: Device,
    pub sessions: HashMap<String, Vec<OlmSession>>,
    pub pins: BTreeMap<String, PinnedDevice>,
    /// The same pins, as herald-crypto checks them (a key claimed by two devices is refused).
    pub pinned: PinnedDevices,
    pub channels: HashMap<String, LiveChannel>,
    pub handled_dms: VecDeque<String>,
}

pub(crate) struct LiveChannel {
    pub admins: Vec<IdentityKeys>,
    pub chain: RosterChain,
    pub keyring: EpochKeyring,
    /// Every verified commit by epoch (the chain keeps only its head).
    pub commits: BTreeMap<u64, herald_crypto::SignedCommit>,
}

pub(crate) struct Shared {
    pub live: Mutex<Live>,
    pub file: StateFile,
    pub config: E2eeConfig,
}

/// A client with an E2EE device: see the module docs.
#[derive(Clone)]
pub struct E2ee {
    client: Client,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for E2ee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2ee").field("device", &self.device_id()).finish_non_exhaustive()
    }
}

fn bundle_of(pin: &PinnedDevice) -> KeyBundle {
    KeyBundle {
        identity: pin.identity.clone(),
        identity_signature: pin.identity_signature,
        one_time_keys: Vec::new(),
        fallback_key: None,
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock cannot leave the state half-written on disk (saves
        // are atomic); the in-memory state is used as it is.
        match self.live.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn pickle_key(&self) -> PickleKey {
        PickleKey::from_bytes(*self.file.key())
    }

    /// Writes the live state to the file. Called with the lock held, so that two saves
    /// cannot interleave an older state over a newer one.
    pub(crate) fn save(&self, live: &Live) -> Result<(), E2eeError> {
        let key = self.pickle_key();
        let mut rng = rand::rngs::OsRng;
        let persisted = Persisted {
            user: live.user.clone(),
            device_id: live.device.device_id().to_owned(),
            device: live.device.pickle(&mut rng, &key),
            sessions: live
                .sessions
                .iter()
                .map(|(peer, ss)| (peer.clone(), ss.iter().map(|s| s.pickle(&mut rng, &key)).collect()))
                .collect(),
            pins: live.pins.clone(),
            channels: live
                .channels
                .iter()
                .map(|(id, c)| {
                    let mut commits = Vec::new();
                    for e in 0..=c.chain.epoch() {
                        if let Some(sc) = c.chain_commit(e) {
                            commits.push(sc);
                        }
                    }
                    let keys = c.keyring.iter().map(|(e, k)| (e, b64(k.as_bytes()))).collect();
                    (id.clone(), ChannelState { admins: c.admins.clone(), commits, keys })
                })
                .collect(),
            handled_dms: live.handled_dms.clone(),
        };
        self.file.save(&persisted)
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

impl LiveChannel {
    /// The verified commit of `epoch`, as kept beside the chain.
    fn chain_commit(&self, epoch: u64) -> Option<herald_crypto::SignedCommit> {
        self.commits.get(&epoch).cloned()
    }
}

fn load_live(p: Persisted, key: &PickleKey) -> Result<Live, E2eeError> {
    let device = Device::from_pickle(&p.device, key)?;
    let mut sessions = HashMap::new();
    for (peer, ss) in p.sessions {
        let mut v = Vec::new();
        for s in ss {
            v.push(OlmSession::from_pickle(&s, key)?);
        }
        sessions.insert(peer, v);
    }
    let mut pinned = PinnedDevices::new();
    for pin in p.pins.values() {
        pinned.pin(&bundle_of(pin))?;
    }
    let mut channels = HashMap::new();
    for (id, c) in p.channels {
        let mut commits = c.commits.into_iter();
        let Some(genesis) = commits.next() else { continue };
        let mut chain = RosterChain::new(&c.admins, genesis.clone())?;
        let mut by_epoch = BTreeMap::new();
        by_epoch.insert(0, genesis);
        for sc in commits {
            chain.apply(&sc)?;
            by_epoch.insert(sc.commit.epoch, sc);
        }
        let mut keyring = EpochKeyring::new(id.clone())?;
        for (epoch, k) in c.keys {
            let bytes: [u8; 32] = unb64(&k)
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| E2eeError::State(format!("bad key of epoch {epoch} in channel {id}")))?;
            keyring.insert(epoch, EpochKey::from_bytes(bytes))?;
        }
        channels.insert(id, LiveChannel { admins: c.admins, chain, keyring, commits: by_epoch });
    }
    Ok(Live { user: p.user, device, sessions, pins: p.pins, pinned, channels, handled_dms: p.handled_dms })
}

impl E2ee {
    /// Opens the device state (creating a device on first use), registers the device with
    /// the server (`PUT /v1/keys/devices/{id}`; topping up its one-time keys when few are
    /// left), then connects declaring it ([`ClientConfig::device`]).
    pub async fn connect(
        url: &str,
        token: &str,
        mut config: ClientConfig,
        e2ee: E2eeConfig,
    ) -> Result<E2ee, E2eeError> {
        let rest = Rest::standalone(url, token, &config)?;
        let (file, persisted) = StateFile::open(&e2ee.state_path, &e2ee.key)?;
        let key = PickleKey::from_bytes(*file.key());
        let user = crate::token::jwt_sub(token)
            .ok_or_else(|| E2eeError::Protocol("the token names no user (sub)".into()))?;
        let (live, fresh) = match persisted {
            Some(p) => {
                if p.user != user {
                    return Err(E2eeError::State(format!(
                        "{:?} belongs to user {:?}, the token is {user:?}'s",
                        e2ee.state_path, p.user
                    )));
                }
                (load_live(p, &key)?, false)
            }
            None => {
                let id = e2ee.device_id.clone().unwrap_or_else(|| {
                    use rand::RngCore;
                    let mut b = [0u8; 8];
                    rand::rngs::OsRng.fill_bytes(&mut b);
                    format!("d-{}", hex::encode(b))
                });
                let device = Device::new(&mut rand::rngs::OsRng, id)?;
                let live = Live {
                    user: user.clone(),
                    device,
                    sessions: HashMap::new(),
                    pins: BTreeMap::new(),
                    pinned: PinnedDevices::new(),
                    channels: HashMap::new(),
                    handled_dms: VecDeque::new(),
                };
                (live, true)
            }
        };
        let shared = Arc::new(Shared { live: Mutex::new(live), file, config: e2ee });
        if fresh {
            // On disk before the keys are published: a crash after the upload must not
            // lose the private halves of keys the server hands out.
            let live = shared.lock();
            shared.save(&live)?;
        }
        replenish(&shared, &rest, true).await?;
        config.device = Some(shared.lock().device.device_id().to_owned());
        if crate::token::jwt_has_grant(token, "keeper") {
            // A keeper hears of leaves in channels it is not a member of.
            config.keeper_events = true;
        }
        let client = Client::connect_with(url, token, config).await?;
        Ok(E2ee { client, shared })
    }

    /// The underlying client (plain channels, subjects, everything else).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This device's id.
    pub fn device_id(&self) -> String {
        self.shared.lock().device.device_id().to_owned()
    }

    /// The user this device belongs to.
    pub fn user(&self) -> String {
        self.shared.lock().user.clone()
    }

    /// This device's fingerprint (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.shared.lock().device.identity_keys())
    }

    /// The state file in use.
    pub fn state_path(&self) -> PathBuf {
        self.shared.file.path().to_owned()
    }

    pub(crate) fn rest(&self) -> &Rest {
        self.client.rest()
    }

    /// `GET /v1/keys/users/{user}`: the user's current devices, unverified.
    pub async fn list_devices(&self, user: &str) -> Result<Vec<DeviceInfo>, E2eeError> {
        list_devices(self.rest(), user).await
    }

    /// `DELETE /v1/keys/devices/{id}`: revokes one of the user's devices (this one too: its
    /// inbox and envelopes are erased; the state file is then useless).
    pub async fn revoke_device(&self, device_id: &str) -> Result<(), E2eeError> {
        self.rest().json(Method::DELETE, &format!("/v1/keys/devices/{}", segment(device_id)), None).await?;
        Ok(())
    }

    /// Checks `fingerprint` (as [`fingerprint`] prints it, spaces optional) against the key
    /// the server lists for `device` of `user`, and pins it as verified. A device pinned
    /// earlier with other keys is refused ([`E2eeError::IdentityChanged`]) unless the given
    /// fingerprint is the new key's: then the new key replaces the pin, since the user
    /// checked it out of band.
    pub async fn verify_device(
        &self,
        user: &str,
        device: &str,
        fingerprint_hex: &str,
    ) -> Result<(), E2eeError> {
        let want: String =
            fingerprint_hex.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase();
        let devices = list_devices(self.rest(), user).await?;
        let info = devices
            .into_iter()
            .find(|d| d.device_id == device)
            .ok_or_else(|| E2eeError::UnknownDevice { user: user.into(), device: device.into() })?;
        let found = hex::encode(info.identity.ed25519);
        if found != want {
            return Err(E2eeError::FingerprintMismatch {
                user: user.into(),
                device: device.into(),
                expected: want,
                found,
            });
        }
        let pin = PinnedDevice {
            user: user.to_owned(),
            identity: info.identity.clone(),
            identity_signature: info.identity_signature,
            verified: true,
        };
        let bundle = bundle_of(&pin);
        bundle.verify()?;
        let mut live = self.shared.lock();
        let changed = live.pins.get(device).is_some_and(|p| p.identity != info.identity);
        live.pins.insert(device.to_owned(), pin);
        if changed {
            // Rebuild the checker without the old key; sessions with the old key are void.
            let mut pinned = PinnedDevices::new();
            for p in live.pins.values() {
                pinned.pin(&bundle_of(p))?;
            }
            live.pinned = pinned;
            live.sessions.remove(device);
        } else {
            live.pinned.pin(&bundle)?;
        }
        self.shared.save(&live)
    }

    /// Whether `device` is pinned, and whether it was verified out of band.
    pub fn pin_status(&self, device: &str) -> Option<bool> {
        self.shared.lock().pins.get(device).map(|p| p.verified)
    }

    /// The pinned identity of `device` of `user`: pinned on first sight (trust on first
    /// use) from the key directory; refused when the directory shows other keys than the
    /// pin, or the device is another user's.
    pub(crate) async fn peer(&self, user: &str, device: &str) -> Result<IdentityKeys, E2eeError> {
        {
            let live = self.shared.lock();
            if let Some(p) = live.pins.get(device) {
                if p.user != user {
                    return Err(E2eeError::UnknownDevice { user: user.into(), device: device.into() });
                }
                return Ok(p.identity.clone());
            }
        }
        self.user_devices(user).await?;
        let live = self.shared.lock();
        match live.pins.get(device) {
            Some(p) if p.user == user => Ok(p.identity.clone()),
            _ => Err(E2eeError::UnknownDevice { user: user.into(), device: device.into() }),
        }
    }

    /// The current devices of `user`, each checked against its pin (new ones pinned).
    pub(crate) async fn user_devices(&self, user: &str) -> Result<Vec<IdentityKeys>, E2eeError> {
        let devices = list_devices(self.rest(), user).await?;
        self.pin_all(user, &devices)
    }

    pub(crate) fn pin_all(&self, user: &str, devices: &[DeviceInfo]) -> Result<Vec<IdentityKeys>, E2eeError> {
        let mut live = self.shared.lock();
        let mut out = Vec::new();
        let mut dirty = false;
        for d in devices {
            match live.pins.get(&d.device_id) {
                Some(p) if p.identity != d.identity || p.user != user => {
                    return Err(E2eeError::IdentityChanged {
                        user: user.into(),
                        device: d.device_id.clone(),
                    });
                }
                Some(_) => {}
                None if d.identity.device_id != d.device_id => {
                    return Err(E2eeError::Protocol(format!(
                        "device {:?} listed with the keys of device {:?}",
                        d.device_id, d.identity.device_id
                    )));
                }
                None => {
                    let pin = PinnedDevice {
                        user: user.to_owned(),
                        identity: d.identity.clone(),
                        identity_signature: d.identity_signature,
                        verified: false,
                    };
                    live.pinned.pin(&bundle_of(&pin))?;
                    live.pins.insert(d.device_id.clone(), pin);
                    dirty = true;
                }
            }
            out.push(d.identity.clone());
        }
        if dirty {
            self.shared.save(&live)?;
        }
        Ok(out)
    }

    /// Tops up this device's one-time keys on the server when fewer than
    /// [`E2eeConfig::min_one_time_keys`] are left.
    pub async fn replenish_one_time_keys(&self) -> Result<(), E2eeError> {
        replenish(&self.shared, self.rest(), false).await
    }

    /// Closes the connection.
    pub async fn close(&self) {
        self.client.close().await;
    }
}

pub(crate) async fn list_devices(rest: &Rest, user: &str) -> Result<Vec<DeviceInfo>, E2eeError> {
    #[derive(Deserialize)]
    struct Devices {
        devices: Vec<DeviceInfo>,
    }
    let v = rest.json(Method::GET, &format!("/v1/keys/users/{}", segment(user)), None).await?;
    let d: Devices =
        serde_json::from_value(v).map_err(|e| E2eeError::Protocol(format!("unreadable device list: {e}")))?;
    Ok(d.devices)
}

/// Registers the device (first time) or tops up its one-time keys.
async fn replenish(shared: &Shared, rest: &Rest, at_start: bool) -> Result<(), E2eeError> {
    let (user, id) = {
        let live = shared.lock();
        (live.user.clone(), live.device.device_id().to_owned())
    };
    let listed = list_devices(rest, &user).await?;
    let count = match listed.iter().find(|d| d.device_id == id) {
        Some(d) if (d.one_time_keys as usize) >= shared.config.min_one_time_keys => return Ok(()),
        Some(d) => d.one_time_keys as usize,
        None if !at_start => return Err(E2eeError::UnknownDevice { user, device: id }),
        None => 0,
    };
    let want = shared.config.one_time_keys.saturating_sub(count).max(1);
    let bundle = {
        let mut live = shared.lock();
        let b = live.device.publish_bundle(want);
        // Saved before the upload: the account now holds the private halves.
        shared.save(&live)?;
        b
    };
    let body = json!({ "bundle": bundle });
    rest.json(Method::PUT, &format!("/v1/keys/devices/{}", segment(&id)), Some(&body)).await?;
    Ok(())
}
