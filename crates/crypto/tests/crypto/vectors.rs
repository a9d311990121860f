//! Standard test vectors, run through the same primitives the crate wires up.

use herald_crypto::verify_ed25519;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn h32(s: &str) -> [u8; 32] {
    h(s).try_into().unwrap()
}

#[test]
fn rfc8032_ed25519_tests_1_to_3() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];
    for (sk, pk, msg, sig) in cases {
        let signing = ed25519_dalek::SigningKey::from_bytes(&h32(sk));
        assert_eq!(signing.verifying_key().to_bytes(), h32(pk));
        use ed25519_dalek::Signer as _;
        let s = signing.sign(&h(msg)).to_bytes();
        assert_eq!(s.to_vec(), h(sig));
        // The crate's strict verifier accepts it and rejects a flipped bit.
        verify_ed25519(&h32(pk), &h(msg), &s).unwrap();
        let mut bad = s;
        bad[5] ^= 1;
        assert!(verify_ed25519(&h32(pk), &h(msg), &bad).is_err());
    }
}

#[test]
fn rfc7748_x25519() {
    // Section 5.2.
    let out = x25519_dalek::x25519(
        h32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
        h32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
    );
    assert_eq!(out, h32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"));
    let out = x25519_dalek::x25519(
        h32("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
        h32("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
    );
    assert_eq!(out, h32("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"));
    // Section 6.1 (Diffie-Hellman).
    let a = x25519_dalek::StaticSecret::from(h32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    let b = x25519_dalek::StaticSecret::from(h32(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    ));
    let pa = x25519_dalek::PublicKey::from(&a);
    let pb = x25519_dalek::PublicKey::from(&b);
    assert_eq!(pa.to_bytes(), h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
    assert_eq!(pb.to_bytes(), h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
    let shared = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(a.diffie_hellman(&pb).to_bytes(), shared);
    assert_eq!(b.diffie_hellman(&pa).to_bytes(), shared);
}

/// An "RNG" that replays fixed bytes: lets the hpke crate's encapsulation
/// (which draws `ikmE` from the RNG and runs DeriveKeyPair) reproduce the
/// RFC 9180 known answer.
struct Replay(Vec<u8>);

impl RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        unimplemented!()
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let n = dest.len();
        dest.copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Replay {}

#[test]
fn rfc9180_a2_base_x25519_sha256_chacha20poly1305() {
    // RFC 9180 Appendix A.2.1 (mode 0, KEM 0x0020, KDF 0x0001, AEAD 0x0003).
    let info = h("4f6465206f6e2061204772656369616e2055726e");
    let ikm_e = h("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b");
    let ikm_r = h("1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df");
    let (sk_r, pk_r) = X25519HkdfSha256::derive_keypair(&ikm_r);
    assert_eq!(
        pk_r.to_bytes().to_vec(),
        h("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
    );
    assert_eq!(
        sk_r.to_bytes().to_vec(),
        h("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
    );
    let pt = h("4265617574792069732074727574682c20747275746820626561757479");
    let aad = h("436f756e742d30");
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &pk_r,
        &info,
        &pt,
        &aad,
        &mut Replay(ikm_e),
    )
    .unwrap();
    assert_eq!(
        enc.to_bytes().to_vec(),
        h("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a")
    );
    assert_eq!(
        ct,
        h("1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28")
    );
    let enc2 = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&enc.to_bytes()).unwrap();
    let opened = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk_r,
        &enc2,
        &info,
        &ct,
        &aad,
    )
    .unwrap();
    assert_eq!(opened, pt);
}

#[test]
fn blake3_official_vectors() {
    // From BLAKE3's test_vectors.json: input is bytes 0, 1, 2, ... mod 251.
    assert_eq!(
        blake3::hash(b"").to_hex().as_str(),
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
    assert_eq!(
        blake3::hash(&[0u8]).to_hex().as_str(),
        "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"
    );
}
