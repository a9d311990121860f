//! `herald-crypto` for TypeScript: wasm-bindgen bindings over the Rust implementation itself,
//! so browser and Rust clients are byte-compatible by construction. No logic of its own: each
//! function converts its arguments, calls `herald-crypto`, and converts the result; errors
//! become JavaScript `Error`s with `herald-crypto`'s message. Randomness is the platform's
//! `crypto.getRandomValues` (getrandom's `js` backend). It never logs.
//!
//! Built by `scripts/build-wasm` into `sdk/ts/src/wasm` (the generated `.wasm` and glue are
//! committed so the SDK builds without the wasm target).

use herald_crypto::{
    Device, EpochKey, FileManifest, FileParams, IdentityKeys, PickleKey, SealedMessage, decrypt_file,
    encrypt_file, seal_message,
};
use rand_core::OsRng;
use wasm_bindgen::prelude::*;

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
