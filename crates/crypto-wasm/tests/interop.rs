//! Cross-implementation fixtures for the TypeScript SDK: a message sealed and a file encrypted
//! by native Rust `herald-crypto`, which `sdk/ts/test/unit/crypto.test.ts` opens through the
//! WebAssembly build. The fixture is checked here against the native code on every run (so a
//! format change that breaks it fails in Rust first); `HERALD_UPDATE_FIXTURES=1` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_crypto::{
    Device, EpochKey, FileManifest, FileParams, SealedMessage, decrypt_file, encrypt_file, seal_message,
};
use rand_core::OsRng;
use std::path::PathBuf;

const CHANNEL: &str = "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f11";
const TEXT: &str = "hello from Rust 🦀";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sdk/ts/test/fixtures/crypto-rust.json")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn rust_made_fixture_for_the_typescript_sdk_opens_natively() {
    if std::env::var("HERALD_UPDATE_FIXTURES").as_deref() == Ok("1") {
        let device = Device::new(&mut OsRng, "rust-device").unwrap();
        let key = EpochKey::generate(&mut OsRng);
        let sealed = seal_message(&mut OsRng, &device, CHANNEL, 3, &key, TEXT.as_bytes()).unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let params = FileParams { data_shards: 4, parity_shards: 2, ..FileParams::default() };
        let file = encrypt_file(&mut OsRng, "data.bin", "application/octet-stream", &data, &params).unwrap();
        let json = serde_json::json!({
            "channel": CHANNEL,
            "epoch": 3,
            "key": hex(key.as_bytes()),
            "identity": device.identity_keys(),
            "sealed": sealed,
            "plaintext": TEXT,
            "file": {
                "manifest": file.manifest.to_json(),
                "shards": file.shards.iter().map(|s| hex(s)).collect::<Vec<_>>(),
                "sha_hint": "bytes are (i * 31) % 251 for i in 0..20000",
            },
        });
        std::fs::write(fixture(), serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
    }
    let text = std::fs::read_to_string(fixture()).expect("sdk/ts/test/fixtures/crypto-rust.json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let key = EpochKey::from_bytes(unhex(v["key"].as_str().unwrap()).try_into().unwrap());
    let identity = serde_json::from_value(v["identity"].clone()).unwrap();
    let sealed = SealedMessage::parse(v["sealed"].as_str().unwrap()).unwrap();
    assert_eq!(sealed.epoch(), 3);
    assert_eq!(sealed.sender(), "rust-device");
    let opened = sealed.open(CHANNEL, &key, &identity).unwrap();
    assert_eq!(String::from_utf8(opened).unwrap(), TEXT);

    let manifest = FileManifest::from_json(v["file"]["manifest"].as_str().unwrap()).unwrap();
    let mut shards: Vec<Option<Vec<u8>>> =
        v["file"]["shards"].as_array().unwrap().iter().map(|s| Some(unhex(s.as_str().unwrap()))).collect();
    shards[0] = None;
    shards[5] = None;
    let data = decrypt_file(&manifest, &shards).unwrap();
    assert_eq!(data, (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
}
