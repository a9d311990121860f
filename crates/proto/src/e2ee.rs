//! The REST bodies of end-to-end encryption (PROTOCOL.md §7): the key directory, the DM
//! inbox, roster commits and key envelopes. Bundles, keys, commits and envelopes are JSON
//! objects in the formats of `crates/crypto/README.md`, opaque here (`Value`); the server
//! reads only the fields named in §7.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// An epoch as JSON numbers may spell it: `3` or `3.0` (JSON Schema's `integer` admits both,
/// so a client built from the OpenAPI document may send either); a fraction, a negative or a
/// number beyond `u64` is refused.
pub fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!("{n} is not a non-negative integer"))),
    }
}

/// [`lenient_u64`] for an optional field (`null` or absent: `None`).
pub fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "lenient_u64")] u64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// The fields of a key bundle the server reads (§7), for the OpenAPI document only: the
/// server takes the bundle as JSON and checks these itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BundleShape {
    /// The device's identity keys (`{device_id, ed25519, curve25519, envelope}`; a `device_id`
    /// here must be the path's).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub identity: Value,
    pub identity_signature: String,
    /// At most 1,000; absent or null: none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub one_time_keys: Option<Vec<KeyShape>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub fallback_key: Option<Value>,
}

/// A signed one-time key as the server reads it: its `key_id` (the rest is opaque).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyShape {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub key_id: String,
}

/// `PUT /v1/keys/devices/{device_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadDevice {
    /// The signed key bundle: `{identity, identity_signature, one_time_keys: [{key_id, …}],
    /// fallback_key}`.
    #[cfg_attr(feature = "openapi", schema(value_type = BundleShape))]
    pub bundle: Value,
}

/// Answer of `PUT /v1/keys/devices/{device_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceUploaded {
    pub device_id: String,
    /// One-time keys left to claim.
    pub one_time_keys: u64,
}

/// A registered device as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceInfo {
    pub user: String,
    pub device_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub identity: Value,
    /// The self-signature over the identity keys (base64).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub identity_signature: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub fallback_key: Option<Value>,
    /// One-time keys left to claim.
    pub one_time_keys: u64,
}

/// Answer of `GET /v1/keys/users/{user}` and `GET /v1/keys/keepers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// One device to claim a key of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimTarget {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::UserId))]
    pub user: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::DeviceId))]
    pub device_id: String,
}

/// `POST /v1/keys/claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimRequest {
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub devices: Vec<ClaimTarget>,
}

/// One claimed key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedKey {
    pub user: String,
    pub device_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub identity: Value,
    /// The self-signature over the identity keys (base64).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub identity_signature: Value,
    /// The signed key object of the bundle.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub key: Value,
    /// The fallback key (no one-time key was left); it is not consumed.
    pub fallback: bool,
}

/// Answer of `POST /v1/keys/claim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimOk {
    pub claimed: Vec<ClaimedKey>,
}

/// A direct message as the `dm` event and the inbox show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmView {
    pub id: String,
    pub from: String,
    pub from_device: String,
    pub body: String,
    pub ts: String,
}

/// Answer of `GET /v1/dm/inbox?device=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmInbox {
    pub dms: Vec<DmView>,
}

/// `POST /v1/dm/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmAckBody {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::DeviceId))]
    pub device: String,
    #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
    pub ids: Vec<String>,
}

/// An envelope posted with a commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitEnvelope {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::DeviceId))]
    pub device_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub envelope: Value,
}

/// `POST /v1/channels/{id}/commits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostCommit {
    #[serde(deserialize_with = "lenient_u64")]
    pub epoch: u64,
    /// 64 lowercase hex digits (64 zeros for epoch 0).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub prev_commit_hash: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub commit_hash: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub commit: Value,
    #[serde(default)]
    pub envelopes: Vec<CommitEnvelope>,
}

/// Answer of `POST /v1/channels/{id}/commits`: the new head and its `key_rotated` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitPosted {
    pub epoch: u64,
    pub commit_hash: String,
    /// The `seq` of the `key_rotated` entry.
    pub seq: u64,
}

/// A stored commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitView {
    pub epoch: u64,
    pub prev_commit_hash: String,
    pub commit_hash: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub commit: Value,
}

/// Answer of `GET /v1/channels/{id}/commits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitList {
    pub commits: Vec<CommitView>,
}

/// An envelope for an existing epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EpochEnvelope {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::DeviceId))]
    pub device_id: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub epoch: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub envelope: Value,
}

/// `POST /v1/channels/{id}/envelopes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostEnvelopes {
    #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
    pub envelopes: Vec<EpochEnvelope>,
}

/// One envelope of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvelopeView {
    pub epoch: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub envelope: Value,
}

/// Answer of `GET /v1/channels/{id}/envelopes?device=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvelopeList {
    pub envelopes: Vec<EnvelopeView>,
}
