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

fn e2ee_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sdk/ts/test/fixtures/crypto-rust-e2ee.json")
}

/// The E2EE forms the TypeScript SDK must read as native Rust writes them: the HST1 state
/// container (raw key and passphrase), a key envelope, a roster chain with its commit hashes
/// and an Olm pre-key message, all opened by `sdk/ts/test/unit/e2ee-wasm.test.ts`.
#[test]
fn rust_made_e2ee_fixture_for_the_typescript_sdk_opens_natively() {
    use herald_crypto::{
        CommitReason, EpochCommit, IdentityKeys, KeyEnvelope, Member, OlmMessage, PickleKey, RosterChain,
        SignedCommit, StateSealer, StateSecret, seal_epoch_key,
    };
    const E2EE_CHANNEL: &str = "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f44";
    const STATE: &str = r#"{"user":"rust","device_id":"rust-recipient"}"#;
    let state_key = [7u8; 32];
    let pickle_key = [5u8; 32];
    if std::env::var("HERALD_UPDATE_FIXTURES").as_deref() == Ok("1") {
        let sender = Device::new(&mut OsRng, "rust-sender").unwrap();
        let mut recipient = Device::new(&mut OsRng, "rust-recipient").unwrap();
        let bundle = recipient.publish_bundle(1);
        let mut session = sender.create_outbound_session(&bundle.identity, &bundle.one_time_keys[0]).unwrap();
        let prekey = session.encrypt(b"olm from rust");
        let key = EpochKey::generate(&mut OsRng);
        let envelope =
            seal_epoch_key(&mut OsRng, &sender, E2EE_CHANNEL, 2, &key, &recipient.identity_keys()).unwrap();
        let both =
            Member { user: "rust".into(), devices: vec!["rust-sender".into(), "rust-recipient".into()] };
        let genesis = EpochCommit::genesis(E2EE_CHANNEL, vec![both.clone()]).sign(&sender);
        let mut chain = RosterChain::new(&[sender.identity_keys()], genesis.clone()).unwrap();
        let c1 = chain.next_commit(vec![both.clone()], CommitReason::Rotate).sign(&sender);
        chain.apply(&c1).unwrap();
        let c2 = chain
            .next_commit(
                vec![both, Member { user: "ts".into(), devices: vec!["ts-1".into()] }],
                CommitReason::Add { users: vec!["ts".into()] },
            )
            .sign(&sender);
        let commits = [genesis, c1, c2];
        let by_key = StateSealer::create(&mut OsRng, StateSecret::Key(&state_key)).unwrap();
        let by_pass = StateSealer::create(&mut OsRng, StateSecret::Passphrase("correct horse")).unwrap();
        let json = serde_json::json!({
            "state_key": hex(&state_key),
            "state_raw": hex(&by_key.seal(&mut OsRng, STATE.as_bytes()).unwrap()),
            "state_passphrase": "correct horse",
            "state_passphrase_raw": hex(&by_pass.seal(&mut OsRng, STATE.as_bytes()).unwrap()),
            "state_plaintext": STATE,
            "pickle_key": hex(&pickle_key),
            "recipient_pickle": recipient.pickle(&mut OsRng, &PickleKey::from_bytes(pickle_key)),
            "sender_identity": sender.identity_keys(),
            "channel": E2EE_CHANNEL,
            "envelope": envelope,
            "epoch_key": hex(key.as_bytes()),
            "admins": [sender.identity_keys()],
            "commits": commits,
            "commit_hashes": commits.iter().map(|c| hex(&c.hash())).collect::<Vec<_>>(),
            "olm_prekey": serde_json::to_string(&prekey).unwrap(),
            "olm_plaintext": "olm from rust",
        });
        std::fs::write(e2ee_fixture(), serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
    }
    let text = std::fs::read_to_string(e2ee_fixture()).expect("sdk/ts/test/fixtures/crypto-rust-e2ee.json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (_, plain) =
        StateSealer::open(&unhex(v["state_raw"].as_str().unwrap()), StateSecret::Key(&state_key)).unwrap();
    assert_eq!(&plain[..], STATE.as_bytes());
    let (_, plain) = StateSealer::open(
        &unhex(v["state_passphrase_raw"].as_str().unwrap()),
        StateSecret::Passphrase("correct horse"),
    )
    .unwrap();
    assert_eq!(&plain[..], STATE.as_bytes());
    let mut recipient =
        Device::from_pickle(v["recipient_pickle"].as_str().unwrap(), &PickleKey::from_bytes(pickle_key))
            .unwrap();
    let sender: IdentityKeys = serde_json::from_value(v["sender_identity"].clone()).unwrap();
    let envelope: KeyEnvelope = serde_json::from_value(v["envelope"].clone()).unwrap();
    assert_eq!(hex(envelope.open(&recipient, &sender).unwrap().as_bytes()), v["epoch_key"].as_str().unwrap());
    let commits: Vec<SignedCommit> = serde_json::from_value(v["commits"].clone()).unwrap();
    let mut chain = RosterChain::new(std::slice::from_ref(&sender), commits[0].clone()).unwrap();
    for c in &commits[1..] {
        chain.apply(c).unwrap();
    }
    let hashes: Vec<String> = commits.iter().map(|c| hex(&c.hash())).collect();
    assert_eq!(serde_json::to_value(hashes).unwrap(), v["commit_hashes"]);
    let prekey: OlmMessage = serde_json::from_str(v["olm_prekey"].as_str().unwrap()).unwrap();
    let (_, plain) = recipient.create_inbound_session(&sender, &prekey).unwrap();
    assert_eq!(plain, b"olm from rust");
}
