#![allow(clippy::unwrap_used, dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_crypto::{Device, KeyBundle, PinnedDevices};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn device(rng: &mut StdRng, id: &str) -> (Device, KeyBundle) {
    let mut d = Device::new(rng, id).unwrap();
    let b = d.publish_bundle(5);
    (d, b)
}

pub fn pins(bundles: &[&KeyBundle]) -> PinnedDevices {
    let mut p = PinnedDevices::new();
    for b in bundles {
        p.pin(b).unwrap();
    }
    p
}

pub fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

pub fn b64e(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Every variant of `bytes` with exactly one byte flipped.
pub fn flips(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..bytes.len()).map(move |i| {
        let mut v = bytes.to_vec();
        v[i] ^= 0x01;
        v
    })
}

/// Flips one character of a string (ASCII only), producing a different string.
pub fn flip_str(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let last = b.len() - 1;
    b[last] = if b[last] == b'x' { b'y' } else { b'x' };
    String::from_utf8(b).unwrap()
}
