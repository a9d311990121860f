//! The cross-language vector of a sealed channel message (`tests/vectors/channel-message-v1.json`):
//! a pickled device, an epoch key, a nonce, and the exact `hm1.` string herald-crypto seals
//! from them. This test holds the Rust side (the vector opens, and sealing again with the
//! same inputs gives the same bytes: Ed25519 signatures are deterministic); the Python
//! bindings' test (`sdk/python/tests/test_crypto.py`) holds the same vector, so the two
//! produce identical bytes. `HERALD_WRITE_VECTORS=1 cargo test -p herald-crypto --test
//! interop_vector` writes a new one (the Olm keys of a new device come from the OS, so a
//! rewrite changes every field derived from the device).
#![allow(clippy::unwrap_used)]

use herald_crypto::channel::{EpochKey, SealedMessage, seal_message};
use herald_crypto::identity::{Device, IdentityKeys, PickleKey};
use rand::rngs::OsRng;
use rand_core::{CryptoRng, RngCore};
use serde_json::{Value, json};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/channel-message-v1.json");

/// Hands out the given bytes, then zeros: the vector's nonce is the only randomness a seal
/// draws.
struct Given(Vec<u8>);

impl RngCore for Given {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_be_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_be_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest.iter_mut() {
            *d = if self.0.is_empty() { 0 } else { self.0.remove(0) };
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Given {}

fn hex32(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

fn write_vector() {
    let pickle_key = [0x42u8; 32];
    let device = Device::new(&mut OsRng, "ada-laptop").unwrap();
    let pickled = device.pickle(&mut OsRng, &PickleKey::from_bytes(pickle_key));
    let epoch_key = [0x07u8; 32];
    let nonce = [0x09u8; 24];
    let channel = "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f11";
    let plaintext = "Hello from Rust 👋";
    let sealed = seal_message(
        &mut Given(nonce.to_vec()),
        &device,
        channel,
        3,
        &EpochKey::from_bytes(epoch_key),
        plaintext.as_bytes(),
    )
    .unwrap();
    let vector = json!({
        "description": "A channel message sealed by herald-crypto (crates/crypto/src/channel.rs): \
            the device is `device_pickle` under `pickle_key`, the only randomness of the seal \
            is `nonce`. Every implementation must open `sealed` and seal the same bytes.",
        "pickle_key": hex::encode(pickle_key),
        "device_pickle": pickled,
        "device_id": "ada-laptop",
        "identity_keys": device.identity_keys(),
        "channel": channel,
        "epoch": 3,
        "epoch_key": hex::encode(epoch_key),
        "nonce": hex::encode(nonce),
        "plaintext": plaintext,
        "sealed": sealed,
    });
    std::fs::write(PATH, serde_json::to_string_pretty(&vector).unwrap() + "\n").unwrap();
}

#[test]
fn the_channel_message_vector_opens_and_reseals_to_the_same_bytes() {
    if std::env::var_os("HERALD_WRITE_VECTORS").is_some() {
        write_vector();
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let key = PickleKey::from_bytes(hex32(&v["pickle_key"]));
    let device = Device::from_pickle(v["device_pickle"].as_str().unwrap(), &key).unwrap();
    assert_eq!(device.device_id(), v["device_id"].as_str().unwrap());
    let identity: IdentityKeys = serde_json::from_value(v["identity_keys"].clone()).unwrap();
    assert!(device.identity_keys() == identity, "the pickle restores the published identity");

    let channel = v["channel"].as_str().unwrap();
    let epoch = v["epoch"].as_u64().unwrap();
    let epoch_key = EpochKey::from_bytes(hex32(&v["epoch_key"]));
    let sealed = v["sealed"].as_str().unwrap();
    let opened = SealedMessage::parse(sealed).unwrap().open(channel, &epoch_key, &identity).unwrap();
    assert_eq!(opened, v["plaintext"].as_str().unwrap().as_bytes());

    let nonce = hex::decode(v["nonce"].as_str().unwrap()).unwrap();
    let again = seal_message(&mut Given(nonce), &device, channel, epoch, &epoch_key, &opened).unwrap();
    assert_eq!(again, sealed, "same device, key, nonce and text: the same bytes");
}
