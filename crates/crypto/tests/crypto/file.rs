use herald_crypto::{CryptoError, FileManifest, FileParams, decrypt_file, encrypt_file};
use rand::RngCore;

use crate::common::rng;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng(seed).fill_bytes(&mut v);
    v
}

fn small() -> FileParams {
    FileParams { chunk_size: 1000, ..FileParams::default() }
}

fn all(shards: &[Vec<u8>]) -> Vec<Option<&[u8]>> {
    shards.iter().map(|s| Some(s.as_slice())).collect()
}

#[test]
fn round_trip_sizes() {
    let mut r = rng(50);
    for len in [0usize, 1, 15, 16, 999, 1000, 1001, 4000, 7777] {
        let d = data(len, len as u64);
        let f = encrypt_file(&mut r, "f.bin", "application/octet-stream", &d, &small()).unwrap();
        assert_eq!(f.shards.len(), 6);
        assert_eq!(f.manifest.shard_hashes.len(), 6);
        assert_eq!(decrypt_file(&f.manifest, &all(&f.shards)).unwrap(), d, "len {len}");
        // Manifest JSON round trip.
        let m = FileManifest::from_json(&f.manifest.to_json()).unwrap();
        assert_eq!(m, f.manifest);
        assert_eq!(decrypt_file(&m, &all(&f.shards)).unwrap(), d);
    }
}

#[test]
fn any_m_losses_recover_and_m_plus_one_do_not() {
    let mut r = rng(51);
    let d = data(10_000, 1);
    let f = encrypt_file(&mut r, "f", "t", &d, &small()).unwrap();
    let n = 6;
    for a in 0..n {
        for b in a..n {
            // Lose a and b (a == b: a single loss).
            let mut s = all(&f.shards);
            s[a] = None;
            s[b] = None;
            assert_eq!(decrypt_file(&f.manifest, &s).unwrap(), d, "lost {a},{b}");
            for c in (b + 1)..n {
                if a == b {
                    continue;
                }
                let mut s = all(&f.shards);
                s[a] = None;
                s[b] = None;
                s[c] = None;
                assert!(matches!(
                    decrypt_file(&f.manifest, &s),
                    Err(CryptoError::NotEnoughShards { have: 3, need: 4 })
                ));
            }
        }
    }
}

#[test]
fn corrupted_shards_count_as_missing() {
    let mut r = rng(52);
    let d = data(5_000, 2);
    let f = encrypt_file(&mut r, "f", "t", &d, &small()).unwrap();
    let mut bad = f.shards.clone();
    bad[0][3] ^= 1;
    bad[4][0] ^= 0x80;
    assert_eq!(decrypt_file(&f.manifest, &all(&bad)).unwrap(), d);
    bad[5].pop(); // wrong length
    assert!(matches!(
        decrypt_file(&f.manifest, &all(&bad)),
        Err(CryptoError::NotEnoughShards { have: 3, .. })
    ));
    // Every single-byte flip of every shard is either repaired or refused.
    for i in 0..6 {
        for j in (0..f.shards[i].len()).step_by(97) {
            let mut s = f.shards.clone();
            s[i][j] ^= 1;
            assert_eq!(decrypt_file(&f.manifest, &all(&s)).unwrap(), d);
        }
    }
}

#[test]
fn reordered_or_truncated_content_is_refused() {
    let mut r = rng(53);
    let d = data(8_000, 3);
    let f = encrypt_file(&mut r, "f", "t", &d, &small()).unwrap();
    // Swap two data shards and their hashes: the hashes pass, the chunk
    // nonces (index) do not.
    let mut m = f.manifest.clone();
    m.shard_hashes.swap(0, 1);
    let mut s = f.shards.clone();
    s.swap(0, 1);
    assert!(matches!(decrypt_file(&m, &all(&s)), Err(CryptoError::Decrypt { .. })));
}

#[test]
fn tampered_manifest_fields_are_typed_errors() {
    let mut r = rng(54);
    let d = data(3_000, 4);
    let f = encrypt_file(&mut r, "f", "t", &d, &small()).unwrap();
    let s = all(&f.shards);
    let base = f.manifest.clone();
    let mut cases: Vec<FileManifest> = Vec::new();
    let mut m = base.clone();
    m.v = 2;
    cases.push(m);
    for delta in [1u64, 16, 1000, 2000] {
        let mut m = base.clone();
        m.size ^= delta;
        cases.push(m);
    }
    let mut m = base.clone();
    m.size = u64::MAX;
    cases.push(m);
    for cs in [0u32, 999, 1001, 500, u32::MAX] {
        let mut m = base.clone();
        m.chunk_size = cs;
        cases.push(m);
    }
    for k in [0u16, 3, 5, u16::MAX] {
        let mut m = base.clone();
        m.k = k;
        cases.push(m);
    }
    for mm in [0u16, 1, 3, u16::MAX] {
        let mut m = base.clone();
        m.m = mm;
        cases.push(m);
    }
    for ss in [0u64, base.shard_size - 2, base.shard_size + 2, u64::MAX] {
        let mut m = base.clone();
        m.shard_size = ss;
        cases.push(m);
    }
    let mut m = base.clone();
    m.shard_hashes.pop();
    cases.push(m);
    let mut m = base.clone();
    m.shard_hashes[0] = "zz".into();
    cases.push(m);
    for (i, c) in cases.iter().enumerate() {
        assert!(decrypt_file(c, &s).is_err(), "tampered manifest {i} accepted");
    }
    // Flipping every byte of the key, or enough hashes to leave < k shards.
    let json = base.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let key = v["key"].as_str().unwrap().to_owned();
    let raw = crate::common::b64d(&key);
    for flipped in crate::common::flips(&raw) {
        let j = json.replace(&key, &crate::common::b64e(&flipped));
        let m = FileManifest::from_json(&j).unwrap();
        assert!(matches!(decrypt_file(&m, &s), Err(CryptoError::Decrypt { .. })));
    }
    let mut m = base.clone();
    for h in m.shard_hashes.iter_mut().take(3) {
        let mut b = h.clone().into_bytes();
        b[0] = if b[0] == b'0' { b'1' } else { b'0' };
        *h = String::from_utf8(b).unwrap();
    }
    assert!(matches!(decrypt_file(&m, &s), Err(CryptoError::NotEnoughShards { .. })));
    // Wrong number of shard slots.
    assert!(decrypt_file(&base, &s[..5]).is_err());
    assert!(FileManifest::from_json("{").is_err());
}

#[test]
fn configurable_shard_counts() {
    let mut r = rng(55);
    let d = data(20_000, 5);
    for (k, m) in [(1usize, 1usize), (2, 3), (10, 4)] {
        let p = FileParams { data_shards: k, parity_shards: m, chunk_size: 4096 };
        let f = encrypt_file(&mut r, "f", "t", &d, &p).unwrap();
        assert_eq!(f.shards.len(), k + m);
        let mut s = all(&f.shards);
        for slot in s.iter_mut().take(m) {
            *slot = None;
        }
        assert_eq!(decrypt_file(&f.manifest, &s).unwrap(), d);
    }
    let bad = FileParams { data_shards: 0, ..FileParams::default() };
    assert!(matches!(encrypt_file(&mut r, "f", "t", &d, &bad), Err(CryptoError::FileParams(_))));
    let bad = FileParams { parity_shards: 0, ..FileParams::default() };
    assert!(encrypt_file(&mut r, "f", "t", &d, &bad).is_err());
    let bad = FileParams { chunk_size: 0, ..FileParams::default() };
    assert!(encrypt_file(&mut r, "f", "t", &d, &bad).is_err());
}
