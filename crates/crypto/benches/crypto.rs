//! `cargo bench -p herald-crypto`: Olm, channel seal+open, file encode/decode.
//! Kept short (small samples) so the whole run takes a few minutes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_crypto::{
    Device, EpochKey, EpochKeyring, FileParams, PinnedDevices, decrypt_file, encrypt_file, open_message,
    seal_message,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

fn olm(c: &mut Criterion) {
    let mut r = StdRng::seed_from_u64(1);
    let alice = Device::new(&mut r, "alice").unwrap();
    let mut bob = Device::new(&mut r, "bob").unwrap();
    let ab = alice.identity_keys();
    let bb = bob.publish_bundle(1);
    let mut a = alice.create_outbound_session(&bb.identity, &bb.one_time_keys[0]).unwrap();
    let (mut b, _) = bob.create_inbound_session(&ab, &a.encrypt(b"hello")).unwrap();
    a.decrypt(&b.encrypt(b"hi")).unwrap();
    let msg = vec![0x42u8; 100];
    let mut g = c.benchmark_group("olm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encrypt+decrypt 100B", |bench| {
        bench.iter(|| {
            let m = a.encrypt(&msg);
            b.decrypt(&m).unwrap()
        })
    });
    g.finish();
}

fn channel(c: &mut Criterion) {
    let mut r = StdRng::seed_from_u64(2);
    let mut alice = Device::new(&mut r, "alice").unwrap();
    let mut pins = PinnedDevices::new();
    pins.pin(&alice.publish_bundle(1)).unwrap();
    let key = EpochKey::generate(&mut r);
    let mut ring = EpochKeyring::new("general").unwrap();
    ring.insert(7, key.clone()).unwrap();
    let mut g = c.benchmark_group("channel");
    g.throughput(Throughput::Elements(1));
    for size in [100usize, 4096] {
        let msg = vec![0x42u8; size];
        g.bench_function(format!("seal+open {size}B"), |bench| {
            bench.iter(|| {
                let s = seal_message(&mut r, &alice, "general", 7, &key, &msg).unwrap();
                open_message(&s, &ring, &pins).unwrap()
            })
        });
    }
    g.finish();
}

fn file(c: &mut Criterion) {
    const SIZE: usize = 64 * 1024 * 1024;
    let mut r = StdRng::seed_from_u64(3);
    let mut data = vec![0u8; SIZE];
    r.fill_bytes(&mut data);
    let params = FileParams::default();
    let mut g = c.benchmark_group("file 64MiB 4+2");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("encrypt+encode", |bench| {
        bench.iter(|| encrypt_file(&mut r, "f", "t", &data, &params).unwrap())
    });
    let f = encrypt_file(&mut r, "f", "t", &data, &params).unwrap();
    let all: Vec<Option<&[u8]>> = f.shards.iter().map(|s| Some(s.as_slice())).collect();
    g.bench_function("decode+decrypt (all shards)", |bench| {
        bench.iter(|| decrypt_file(&f.manifest, &all).unwrap())
    });
    let mut lossy = all.clone();
    lossy[0] = None;
    lossy[1] = None;
    g.bench_function("decode+decrypt (2 data shards lost)", |bench| {
        bench.iter(|| decrypt_file(&f.manifest, &lossy).unwrap())
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = olm, channel, file
}
criterion_main!(benches);
