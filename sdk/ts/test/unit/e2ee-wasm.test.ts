/**
 * The E2EE bindings of crates/crypto-wasm: Olm sessions, pins and bundles, envelopes, roster
 * chains and the HST1 state container, round-tripped in TypeScript and, for what native Rust
 * made (test/fixtures/crypto-rust-e2ee.json, checked by crates/crypto-wasm/tests/interop.rs),
 * opened byte for byte.
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { loadCrypto } from "../../src/crypto.js";
import {
  WasmDevice,
  WasmKeyring,
  WasmOlmSession,
  WasmPins,
  WasmRosterChain,
  WasmStateSealer,
  commitHash,
  generateEpochKey,
  genesisCommit,
  verifyBundle,
  verifyCommit,
  verifyEnvelope,
} from "../../src/wasm/herald_crypto_wasm.js";

const CHANNEL = "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f33";

before(async () => {
  await loadCrypto();
});

function bundle(d: WasmDevice, n: number): { identity: { device_id: string }; identity_signature: string; one_time_keys: Array<{ key: string }>; fallback_key: unknown } {
  return JSON.parse(d.publishBundle(n)) as never;
}

test("Olm: a session from a claimed one-time key, both directions, survives pickling", () => {
  const ada = new WasmDevice("ada-1");
  const bob = new WasmDevice("bob-1");
  const b = bundle(bob, 3);
  verifyBundle(JSON.stringify(b));
  const out = ada.createOutboundSession(bob.identityKeys(), JSON.stringify(b.one_time_keys[0]));
  const first = out.encrypt(new TextEncoder().encode("hi bob"));
  assert.equal((JSON.parse(first) as { pre_key: boolean }).pre_key, true);
  const inbound = bob.createInboundSession(ada.identityKeys(), first);
  assert.equal(new TextDecoder().decode(inbound.plaintext), "hi bob");
  const bobSession = inbound.takeSession();
  assert.throws(() => inbound.takeSession(), /taken already/);
  // The same pre-key message again is a replay.
  assert.throws(() => bob.createInboundSession(ada.identityKeys(), first));
  const reply = bobSession.encrypt(new TextEncoder().encode("hi ada"));
  assert.equal(new TextDecoder().decode(out.decrypt(reply)), "hi ada");
  const k = new Uint8Array(32).fill(9);
  const again = WasmOlmSession.fromPickle(out.pickle(k), k);
  assert.equal(again.sessionId(), out.sessionId());
  assert.equal(again.peerDevice(), "bob-1");
  const third = bobSession.encrypt(new TextEncoder().encode("after pickle"));
  assert.equal(new TextDecoder().decode(again.decrypt(third)), "after pickle");
  assert.throws(() => WasmOlmSession.fromPickle(out.pickle(k), new Uint8Array(32)));
});

test("a one-time key not signed by its device is refused; bundles verify; pins refuse a changed identity", () => {
  const ada = new WasmDevice("ada-1");
  const bob = new WasmDevice("bob-1");
  const eve = new WasmDevice("eve-1");
  const eveKey = bundle(eve, 1).one_time_keys[0];
  assert.throws(() => ada.createOutboundSession(bob.identityKeys(), JSON.stringify(eveKey)), /signature/i);
  const b = bundle(bob, 1);
  const forged = { ...b, identity: JSON.parse(eve.identityKeys()) as unknown };
  assert.throws(() => verifyBundle(JSON.stringify(forged)));
  const pins = new WasmPins();
  const noKeys = (x: ReturnType<typeof bundle>) => JSON.stringify({ ...x, one_time_keys: [], fallback_key: null });
  pins.pin(noKeys(b));
  assert.equal(pins.size, 1);
  assert.equal(JSON.parse(pins.get("bob-1")).device_id, "bob-1");
  // Same id, other keys: refused.
  const bob2 = new WasmDevice("bob-1");
  assert.throws(() => pins.pin(noKeys(bundle(bob2, 1))));
  assert.throws(() => pins.get("nobody"));
});

test("envelopes: sealed to a device, opened with the sender's pin, refused otherwise", () => {
  const ada = new WasmDevice("ada-1");
  const bob = new WasmDevice("bob-1");
  const eve = new WasmDevice("eve-1");
  const key = generateEpochKey();
  const env = ada.sealEpochKey(CHANNEL, 4n, key, bob.identityKeys());
  const parsed = JSON.parse(env) as { recipient: string; epoch: number; sender: string };
  assert.deepEqual([parsed.recipient, parsed.epoch, parsed.sender], ["bob-1", 4, "ada-1"]);
  verifyEnvelope(env, ada.identityKeys());
  assert.throws(() => verifyEnvelope(env, eve.identityKeys()));
  assert.deepEqual(bob.openEnvelope(env, ada.identityKeys()), key);
  assert.throws(() => eve.openEnvelope(env, ada.identityKeys()));
  const ring = new WasmKeyring(CHANNEL);
  ring.openEnvelopeInto(env, bob, ada.identityKeys());
  assert.deepEqual([...ring.epochs()], [4n]);
  assert.ok(ring.has(4n) && !ring.has(3n));
  const sealed = ring.seal(bob, 4n, new TextEncoder().encode("in epoch 4"));
  assert.equal(new TextDecoder().decode(ring.open(sealed, bob.identityKeys())), "in epoch 4");
  assert.throws(() => ring.open(sealed, ada.identityKeys()));
  assert.throws(() => ring.insert(4n, generateEpochKey()), /different key/);
});

test("roster chain: genesis, admin-signed commits only, the hash chain, members at each epoch", () => {
  const ada = new WasmDevice("ada-1");
  const bob = new WasmDevice("bob-1");
  const members = [
    { user: "ada", devices: ["ada-1"] },
    { user: "bob", devices: ["bob-1"] },
  ];
  const genesis = ada.signCommit(genesisCommit(CHANNEL, JSON.stringify(members)));
  verifyCommit(genesis, ada.identityKeys());
  assert.throws(() => verifyCommit(genesis, bob.identityKeys()));
  assert.match(commitHash(genesis), /^[0-9a-f]{64}$/);
  const chain = new WasmRosterChain(JSON.stringify([JSON.parse(ada.identityKeys())]), genesis);
  assert.equal(chain.epoch, 0n);
  assert.equal(chain.headHash(), commitHash(genesis));
  const next = ada.signCommit(chain.nextCommit(JSON.stringify([members[0]]), JSON.stringify({ kind: "remove", users: ["bob"] })));
  // A commit signed by a non-admin is refused; so is one that does not link.
  const byBob = bob.signCommit(chain.nextCommit(JSON.stringify([members[1]]), JSON.stringify({ kind: "remove", users: ["ada"] })));
  assert.throws(() => chain.checkNext(byBob));
  const tampered = JSON.parse(next) as { commit: { prev_commit_hash: string } };
  tampered.commit.prev_commit_hash = "0".repeat(64);
  assert.throws(() => chain.apply(JSON.stringify(tampered)));
  chain.checkNext(next);
  assert.equal(chain.epoch, 0n, "checkNext does not apply");
  chain.apply(next);
  assert.equal(chain.epoch, 1n);
  assert.deepEqual(JSON.parse(chain.members()), [members[0]]);
  assert.deepEqual(JSON.parse(chain.membersAt(0n)!), members);
  assert.equal(chain.membersAt(5n), undefined);
  assert.ok(chain.isMemberDevice(0n, "bob-1") && !chain.isMemberDevice(1n, "bob-1"));
  assert.throws(() => chain.apply(next), /epoch/);
});

test("HST1 state container: passphrase and raw key, wrong secret and kind refused", () => {
  const plain = new TextEncoder().encode('{"user":"ada"}');
  const s = WasmStateSealer.create("a passphrase", undefined);
  assert.equal(s.kdf, "passphrase");
  const raw = s.seal(plain);
  assert.equal(new TextDecoder().decode(raw.slice(0, 4)), "HST1");
  assert.equal(raw[4], 1);
  const opened = WasmStateSealer.open(raw, "a passphrase", undefined);
  assert.deepEqual(opened.plaintext, plain);
  assert.deepEqual(opened.takeSealer().key(), s.key());
  assert.throws(() => WasmStateSealer.open(raw, "wrong", undefined), /decrypt/i);
  assert.throws(() => WasmStateSealer.open(raw, undefined, new Uint8Array(32)), /passphrase/);
  const k = WasmStateSealer.create(undefined, new Uint8Array(32).fill(3));
  const raw2 = k.seal(plain);
  assert.equal(raw2[4], 0);
  assert.deepEqual(k.key(), new Uint8Array(32).fill(3));
  assert.deepEqual(WasmStateSealer.open(raw2, undefined, new Uint8Array(32).fill(3)).plaintext, plain);
  raw2[raw2.length - 1]! ^= 1;
  assert.throws(() => WasmStateSealer.open(raw2, undefined, new Uint8Array(32).fill(3)));
  assert.throws(() => WasmStateSealer.open(new Uint8Array(10), "x", undefined), /HST1/);
  assert.throws(() => WasmStateSealer.create("x", new Uint8Array(32)), /not both/);
});

interface RustFixture {
  state_key: string;
  state_raw: string;
  state_plaintext: string;
  state_passphrase: string;
  state_passphrase_raw: string;
  recipient_pickle: string;
  pickle_key: string;
  sender_identity: { device_id: string };
  channel: string;
  envelope: unknown;
  epoch_key: string;
  admins: unknown[];
  commits: unknown[];
  commit_hashes: string[];
  olm_prekey: string;
  olm_plaintext: string;
}

const unhex = (s: string) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

test("what native Rust made opens here: HST1 (key and passphrase), envelope, commits and their hashes, an Olm pre-key message", () => {
  const f = JSON.parse(readFileSync(new URL("../../../test/fixtures/crypto-rust-e2ee.json", import.meta.url), "utf8")) as RustFixture;
  const byKey = WasmStateSealer.open(unhex(f.state_raw), undefined, unhex(f.state_key));
  assert.equal(new TextDecoder().decode(byKey.plaintext), f.state_plaintext);
  const byPass = WasmStateSealer.open(unhex(f.state_passphrase_raw), f.state_passphrase, undefined);
  assert.equal(new TextDecoder().decode(byPass.plaintext), f.state_plaintext);
  const recipient = WasmDevice.fromPickle(f.recipient_pickle, unhex(f.pickle_key));
  assert.equal(hex(recipient.openEnvelope(JSON.stringify(f.envelope), JSON.stringify(f.sender_identity))), f.epoch_key);
  const chain = new WasmRosterChain(JSON.stringify(f.admins), JSON.stringify(f.commits[0]));
  for (const c of f.commits.slice(1)) chain.apply(JSON.stringify(c));
  assert.equal(Number(chain.epoch), f.commits.length - 1);
  assert.deepEqual(f.commits.map((c) => commitHash(JSON.stringify(c))), f.commit_hashes);
  const inbound = recipient.createInboundSession(JSON.stringify(f.sender_identity), f.olm_prekey);
  assert.equal(new TextDecoder().decode(inbound.plaintext), f.olm_plaintext);
});
