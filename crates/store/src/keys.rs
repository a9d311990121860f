//! The end-to-end encryption state the server keeps (PROTOCOL.md §7), behind [`KeyStore`]:
//! device key bundles and their one-time keys, the offline DM inbox of every device, and the
//! key envelopes and roster commits of encrypted channels.
//!
//! Everything here is opaque to the server: bundles, keys, commits and envelopes are JSON
//! values the clients made, DM bodies are ciphertext strings. A backend stores and returns
//! them; it never logs them.
//!
//! A roster commit is appended to the channel log (`key_rotated`), so posting one is a
//! [`crate::Mutation::Rotate`] of the [`crate::Store`]; everything else is here.
//!
//! # Guarantees (every backend)
//!
//! - **Claims are atomic.** [`KeyStore::claim`] hands out each one-time key exactly once, even
//!   to concurrent claimers on several nodes; once none is left it returns the fallback key
//!   (not consumed).
//! - **A revoked device id is dead.** [`KeyStore::revoke_device`] erases the device's keys,
//!   inbox and envelopes; registering the id again is refused forever.
//! - **DM sends are all or nothing.** [`KeyStore::dm_send`] stores every copy durably or none
//!   (an unknown or revoked device, a full inbox), and a repeated `client_id` of the same
//!   sending device stores nothing and returns the first ids.
//! - **Erased means erased.** Acknowledged, expired and revoked inbox entries are deleted the
//!   way a hard delete of a message is (SQLite: `secure_delete` and a `TRUNCATE` checkpoint
//!   before answering; PostgreSQL: delete, then the debounced vacuum).

use crate::Result;
use async_trait::async_trait;
use serde_json::Value;

/// A one-time key of a bundle: its id (unique per device) and the signed key object.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeKey {
    pub key_id: String,
    pub key: Value,
}

/// A device's upload (`PUT /v1/keys/devices/{id}`), with the fields the server reads.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceUpload {
    pub app: String,
    pub user: String,
    pub device_id: String,
    /// Uploaded with a `keeper` token: listed by [`KeyStore::keepers`].
    pub keeper: bool,
    pub identity: Value,
    pub identity_signature: Value,
    pub one_time_keys: Vec<OneTimeKey>,
    pub fallback_key: Option<Value>,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The id was new.
    pub created: bool,
    /// One-time keys left after it.
    pub one_time_keys: u64,
}

/// A registered (not revoked) device as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub user: String,
    pub device_id: String,
    pub keeper: bool,
    pub identity: Value,
    pub identity_signature: Value,
    pub fallback_key: Option<Value>,
    /// One-time keys left.
    pub one_time_keys: u64,
}

/// Who owns a device id, and whether it is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOwner {
    pub user: String,
    pub revoked: bool,
    pub keeper: bool,
}

/// A claimed key of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub user: String,
    pub device_id: String,
    pub identity: Value,
    pub identity_signature: Value,
    pub key: Value,
    /// The fallback key (the one-time keys ran out).
    pub fallback: bool,
}

/// One stored direct message, in the inbox of `to_device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dm {
    pub id: String,
    pub to_user: String,
    pub to_device: String,
    pub from: String,
    pub from_device: String,
    pub body: String,
    pub ts_ms: i64,
}

/// A `dm.send`: one copy per device, all stored or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmSend {
    pub app: String,
    pub from: String,
    pub from_device: String,
    pub client_id: Option<String>,
    /// Each copy: its id (server-assigned), the addressee and the ciphertext.
    pub copies: Vec<Dm>,
    /// An inbox holding this many entries refuses more ([`crate::StoreError::InboxFull`]).
    pub inbox_max: u64,
}

/// What a `dm.send` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmSent {
    /// The ids of the copies, in the order of the request.
    pub ids: Vec<String>,
    /// A repeated `client_id`: nothing was stored, `ids` are the first send's.
    pub duplicate: bool,
}

/// A roster commit of an encrypted channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub epoch: u64,
    pub prev_commit_hash: String,
    pub commit_hash: String,
    pub commit: Value,
}

/// A key envelope for one device and epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeRow {
    pub device_id: String,
    pub epoch: u64,
    pub envelope: Value,
}

/// The `prev_commit_hash` of epoch 0: 64 zeros.
pub const ZERO_COMMIT_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The E2EE state store. See the module doc for the guarantees.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Registers or updates a device. Refused ([`crate::StoreError::Forbidden`]) when the id
    /// is owned by another user, revoked, or registered with a different identity. One-time
    /// keys whose `key_id` was ever uploaded for this device are ignored; the fallback key is
    /// replaced when given.
    async fn register_device(&self, d: DeviceUpload) -> Result<Registered>;

    /// The owner of a device id of `app`, revoked or not; `None` if never registered.
    async fn device_owner(&self, app: &str, device_id: &str) -> Result<Option<DeviceOwner>>;

    /// The devices of a user, revoked ones omitted, by id.
    async fn devices_of(&self, app: &str, user: &str) -> Result<Vec<DeviceRecord>>;

    /// The devices registered with a keeper token, by (user, id).
    async fn keepers(&self, app: &str) -> Result<Vec<DeviceRecord>>;

    /// Takes one one-time key of the device of `user` (atomically: never the same key twice),
    /// or its fallback key when none is left; `None` for an unknown, revoked or mismatched
    /// device, or one with no key at all.
    async fn claim(&self, app: &str, user: &str, device_id: &str) -> Result<Option<Claimed>>;

    /// Revokes a device of `user`: its keys, inbox and envelopes are erased, the id is dead.
    /// [`crate::StoreError::NotFound`] when unknown or already revoked,
    /// [`crate::StoreError::Forbidden`] when owned by someone else.
    async fn revoke_device(&self, app: &str, user: &str, device_id: &str) -> Result<()>;

    /// Stores every copy, or none: [`crate::StoreError::NotFound`] for an unknown or revoked
    /// device (or one not owned by the named user), [`crate::StoreError::InboxFull`] when an
    /// inbox already holds `inbox_max` entries.
    async fn dm_send(&self, s: DmSend) -> Result<DmSent>;

    /// The inbox of a device, oldest first.
    async fn dm_inbox(&self, app: &str, device_id: &str) -> Result<Vec<Dm>>;

    /// Erases those entries of the device's inbox (ids not in it are ignored); how many.
    async fn dm_ack(&self, app: &str, device_id: &str, ids: &[String]) -> Result<u64>;

    /// Erases every inbox entry older than `before_ms` (of every app); how many.
    async fn dm_expire(&self, before_ms: i64) -> Result<u64>;

    /// The commits of a channel with `epoch > after` (all for `None`), in epoch order.
    async fn commits(&self, channel_id: &str, after: Option<u64>) -> Result<Vec<Commit>>;

    /// Adds envelopes for existing epochs of a channel (a second one for an (epoch, device)
    /// replaces the first); [`crate::StoreError::NotFound`] (storing nothing) when an epoch has
    /// no commit.
    async fn put_envelopes(&self, channel_id: &str, envelopes: Vec<EnvelopeRow>) -> Result<()>;

    /// The envelopes of a channel for one device, in epoch order.
    async fn envelopes_for(&self, channel_id: &str, device_id: &str) -> Result<Vec<EnvelopeRow>>;
}
