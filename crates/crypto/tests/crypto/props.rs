//! Property tests: random plaintexts and random shard losses.

use herald_crypto::{
    CryptoError, EpochKey, EpochKeyring, FileParams, decrypt_file, encrypt_file, open_message, seal_message,
};
use proptest::prelude::*;

use crate::common::{device, pins, rng};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn channel_round_trip(plain in proptest::collection::vec(any::<u8>(), 0..2048), epoch in any::<u64>(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let (alice, ab) = device(&mut r, "alice");
        let p = pins(&[&ab]);
        let key = EpochKey::generate(&mut r);
        let mut ring = EpochKeyring::new("chan").unwrap();
        ring.insert(epoch, key.clone()).unwrap();
        let s = seal_message(&mut r, &alice, "chan", epoch, &key, &plain).unwrap();
        let m = open_message(&s, &ring, &p).unwrap();
        prop_assert_eq!(m.plaintext, plain);
        prop_assert_eq!(m.epoch, epoch);
    }

    #[test]
    fn file_survives_up_to_m_losses(
        plain in proptest::collection::vec(any::<u8>(), 0..6000),
        k in 1usize..6,
        m in 1usize..4,
        chunk in 64usize..2048,
        losses in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let params = FileParams { data_shards: k, parity_shards: m, chunk_size: chunk };
        let f = encrypt_file(&mut r, "p", "t", &plain, &params).unwrap();
        let mut shards: Vec<Option<Vec<u8>>> = f.shards.iter().cloned().map(Some).collect();
        for i in &losses {
            shards[i.index(k + m)] = None;
        }
        let lost = shards.iter().filter(|s| s.is_none()).count();
        let out = decrypt_file(&f.manifest, &shards);
        if lost <= m {
            prop_assert_eq!(out.unwrap(), plain);
        } else {
            let too_few = matches!(out, Err(CryptoError::NotEnoughShards { .. }));
            prop_assert!(too_few);
        }
    }
}
