/**
 * herald-crypto through its WebAssembly build: files and sealed messages round-trip, tampering
 * fails, and what native Rust made (test/fixtures/crypto-rust.json, checked by
 * crates/crypto-wasm/tests/interop.rs) opens here byte for byte.
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Device, decryptFile, encryptFile, generateEpochKey, loadCrypto, openMessage, sealMessage, sealedInfo } from "../../src/crypto.js";

const fixture = JSON.parse(readFileSync(new URL("../../../test/fixtures/crypto-rust.json", import.meta.url), "utf8")) as {
  channel: string;
  epoch: number;
  key: string;
  identity: object;
  sealed: string;
  plaintext: string;
  file: { manifest: string; shards: string[] };
};
const unhex = (s: string) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const CHANNEL = "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f22";

before(async () => {
  await loadCrypto();
});

test("a message sealed by native Rust opens in TypeScript", () => {
  assert.deepEqual(sealedInfo(fixture.sealed), { epoch: 3, sender: "rust-device" });
  const opened = openMessage(fixture.sealed, fixture.channel, unhex(fixture.key), fixture.identity);
  assert.equal(new TextDecoder().decode(opened), fixture.plaintext);
  // The wrong channel or key is refused.
  assert.throws(() => openMessage(fixture.sealed, CHANNEL, unhex(fixture.key), fixture.identity));
  assert.throws(() => openMessage(fixture.sealed, fixture.channel, generateEpochKey(), fixture.identity));
});

test("a file encrypted by native Rust decrypts with two shards missing", () => {
  const shards: Array<Uint8Array | null> = fixture.file.shards.map(unhex);
  shards[1] = null;
  shards[4] = null;
  const data = decryptFile(fixture.file.manifest, shards);
  assert.equal(data.length, 20_000);
  assert.ok(data.every((b, i) => b === (i * 31) % 251));
});

test("seal and open in TypeScript; a device survives its pickle", () => {
  const ada = new Device("ada-laptop");
  const key = generateEpochKey();
  assert.equal(key.length, 32);
  const sealed = sealMessage(ada, CHANNEL, 0, key, "secret plans");
  assert.ok(sealed.startsWith("hm1."));
  const identity = ada.identityKeys();
  assert.equal(new TextDecoder().decode(openMessage(sealed, CHANNEL, key, identity)), "secret plans");
  const pickleKey = new Uint8Array(32).fill(7);
  const again = Device.fromPickle(ada.pickle(pickleKey), pickleKey);
  assert.equal(again.identityKeys(), identity);
  assert.throws(() => Device.fromPickle(ada.pickle(pickleKey), new Uint8Array(32).fill(8)));
  const bundle = JSON.parse(ada.publishBundle(5)) as Record<string, unknown>;
  assert.ok(bundle && typeof bundle === "object");
  // Another device's identity does not verify Ada's signature.
  const eve = new Device("eve-phone");
  assert.throws(() => openMessage(sealed, CHANNEL, key, eve.identityKeys()));
});

test("files: any k of k+m shards recover the bytes; fewer fail", () => {
  const data = new Uint8Array(150_000).map((_, i) => (i * 13) % 256);
  const { manifest, shards } = encryptFile("photo.jpg", "image/jpeg", data, 4, 2);
  assert.equal(shards.length, 6);
  assert.ok(!JSON.stringify(shards.map((s) => Array.from(s.slice(0, 16)))).includes(JSON.stringify(Array.from(data.slice(0, 16)))));
  assert.deepEqual(decryptFile(manifest, [null, shards[1], shards[2], null, shards[4], shards[5]]), data);
  assert.throws(() => decryptFile(manifest, [null, null, shards[2], null, shards[4], shards[5]]));
});

test("the shared channel-message vector (crates/crypto/tests/vectors) opens, and its pickled device loads", () => {
  const v = JSON.parse(
    readFileSync(new URL("../../../../../crates/crypto/tests/vectors/channel-message-v1.json", import.meta.url), "utf8"),
  ) as { channel: string; device_id: string; device_pickle: string; pickle_key: string; epoch: number; epoch_key: string; identity_keys: object; plaintext: string; sealed: string };
  assert.deepEqual(sealedInfo(v.sealed), { epoch: v.epoch, sender: v.device_id });
  assert.equal(new TextDecoder().decode(openMessage(v.sealed, v.channel, unhex(v.epoch_key), v.identity_keys)), v.plaintext);
  const device = Device.fromPickle(v.device_pickle, unhex(v.pickle_key));
  assert.equal(device.deviceId(), v.device_id);
  assert.deepEqual(JSON.parse(device.identityKeys()), v.identity_keys);
});
