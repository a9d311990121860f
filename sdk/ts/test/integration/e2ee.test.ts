/**
 * End-to-end encryption in the TypeScript SDK against a real `herald serve`: device
 * registration and one-time key top-up, DMs TS↔TS to an offline device through the inbox,
 * redelivery handled once, state persisted (file, HST1) and reopened, identity changes and
 * swapped one-time keys refused, encrypted channels with two TS members (sealed on the wire,
 * verified, removal rotates the key), unopenable messages surfaced, encrypted files.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { Herald } from "../../src/index.js";
import { e2ee, MemoryStateStore, FileStateStore, IndexedDbStateStore, webCryptoStateKey, IdentityChangedError, EncryptedSpace, type E2eeOptions } from "../../src/e2ee/index.js";
import { FakeIdbFactory } from "../support/e2ee-fake-idb.js";
import { E2eeSuite, Inbox, dmPush, type DmItem, type MsgBox } from "../support/e2ee.js";
import type { DecryptedMessage } from "../../src/e2ee/index.js";

const suite = new E2eeSuite("herald-ts-e2ee-");

async function connect(user: string, opts: E2eeOptions, extra: { fetch?: typeof fetch } = {}): Promise<Herald> {
  const c = await Herald.connect({ url: suite.server.url, token: suite.server.token(user), e2ee: e2ee(opts), ...extra });
  suite.clients.push(c);
  return c;
}

const key32 = (n: number) => new Uint8Array(32).fill(n);

async function devices(c: Herald, user: string) {
  return c.e2ee!.listDevices(user);
}

test("a device registers with 50 one-time keys and is declared on connect", async () => {
  const store = new MemoryStateStore();
  const c = await connect("reg", { store, secret: { key: key32(1) }, deviceId: "reg-1" });
  assert.equal(c.e2ee!.deviceId, "reg-1");
  const [d] = await devices(c, "reg");
  assert.equal(d?.device_id, "reg-1");
  assert.equal(d?.one_time_keys, 50);
  assert.match(c.e2ee!.fingerprint(), /^([0-9a-f]{4} ){15}[0-9a-f]{4}$/);
  // The stored state is an HST1 container, not JSON in the clear.
  const raw = store.bytes!;
  assert.equal(new TextDecoder().decode(raw.slice(0, 4)), "HST1");
  assert.equal(raw[4], 0, "kdf byte 0: a raw key");
  assert.ok(!new TextDecoder().decode(raw).includes("reg-1"));
});

test("DMs TS→TS reach an offline device through the inbox; ack after save; redelivery skipped", async () => {
  const bobStore = new MemoryStateStore();
  const bobOpts = { store: bobStore, secret: { passphrase: "bob's passphrase" }, deviceId: "bob-1" };
  const bob = await connect("bob", bobOpts);
  bob.close();
  await bob.e2ee!.close();
  const alice = await connect("alice", { store: new MemoryStateStore(), secret: { key: key32(2) }, deviceId: "alice-1" });
  // Bob is offline: the copies wait in his inbox.
  const ids = await alice.message.send("user:bob", "hello offline bob");
  assert.equal(ids.length, 1);
  const second = await alice.message.send("user:bob", new Uint8Array([0, 1, 2, 255]));
  assert.equal(second.length, 1);

  const savesBefore = bobStore.saves;
  const bob2 = await connect("bob", bobOpts);
  const box = new Inbox<DmItem>();
  bob2.message.onDirect(dmPush(box));
  const first = await box.next((x) => x.dm?.text === "hello offline bob", 15_000, "first DM");
  assert.equal(first.dm?.from, "alice");
  assert.equal(first.dm?.from_device, "alice-1");
  const bin = await box.next((x) => x.dm?.payload.length === 4, 15_000, "binary DM");
  assert.deepEqual([...bin.dm!.payload], [0, 1, 2, 255]);
  assert.ok(bobStore.saves > savesBefore, "the state was stored before the ack");
  // Each was acknowledged before it was handed over: the inbox is empty.
  assert.deepEqual(await bob2.e2ee!.fetchInbox(), []);
  // A live DM, and a reply the other way.
  const aliceBox = new Inbox<DmItem>();
  alice.message.onDirect(dmPush(aliceBox));
  await alice.message.send("user:bob", "live one");
  await box.next((x) => x.dm?.text === "live one", 15_000, "live DM");
  await bob2.message.send("user:alice", "hi alice");
  const back = await aliceBox.next((x) => x.dm?.text === "hi alice", 15_000, "reply");
  assert.equal(back.dm?.from, "bob");
  // A redelivered id (as after a lost ack) is not handled twice: DMs are handled in order, so
  // once the next one arrives the redelivery was seen and skipped.
  const before = box.items.length;
  bob2.connection.emitLocal("dm", { event: "dm", id: first.dm!.id, from: "alice", from_device: "alice-1", body: "{}", ts: "" });
  await alice.message.send("user:bob", "after the redelivery");
  await box.next((x) => x.dm?.text === "after the redelivery", 15_000, "DM after the redelivery");
  assert.equal(box.items.length, before + 1, "the redelivered DM was skipped");
  assert.equal(box.items.filter((x) => x.failure).length, 0);
});

test("state in a file survives a restart; a second process is refused; wrong passphrase refused", async () => {
  const path = join(suite.dir, "carol.state");
  const store = await FileStateStore.open(path);
  const opts = { store, secret: { passphrase: "carol pass" }, deviceId: "carol-1" };
  const carol = await connect("carol", opts);
  const dave = await connect("dave", { store: new MemoryStateStore(), secret: { key: key32(3) }, deviceId: "dave-1" });
  await dave.message.send("user:carol", "before restart");
  const box = new Inbox<DmItem>();
  const off = carol.message.onDirect(dmPush(box));
  await box.next((x) => x.dm?.text === "before restart", 15_000, "DM before restart");
  off();
  await assert.rejects(FileStateStore.open(path), /already open in this process/);
  carol.close();
  await carol.e2ee!.close();
  assert.ok(!existsSync(`${path}.lock`), "the lock is released");
  const raw = readFileSync(path);
  assert.equal(statSync(path).mode & 0o777, 0o600, "only the owner reads the state");
  assert.ok(!existsSync(`${path}.tmp`), "the temporary file was renamed over the state");
  assert.equal(raw.subarray(0, 4).toString(), "HST1");
  assert.equal(raw[4], 1, "kdf byte 1: Argon2id of a passphrase");
  await assert.rejects(
    Herald.connect({ url: suite.server.url, token: suite.server.token("carol"), e2ee: e2ee({ store: new MemoryStateStore(new Uint8Array(raw)), secret: { passphrase: "wrong" } }) }),
    /wrong passphrase or key/,
  );
  await assert.rejects(
    Herald.connect({ url: suite.server.url, token: suite.server.token("carol"), e2ee: e2ee({ store: new MemoryStateStore(new Uint8Array(raw)), secret: { key: key32(1) } }) }),
    /passphrase/,
  );
  // The same device comes back with its Olm session: the next DM (not a pre-key one) decrypts.
  const carol2 = await connect("carol", { ...opts, store: await FileStateStore.open(path) });
  assert.equal(carol2.e2ee!.deviceId, "carol-1");
  const box2 = new Inbox<DmItem>();
  carol2.message.onDirect(dmPush(box2));
  await dave.message.send("user:carol", "after restart");
  const got = await box2.next((x) => x.dm !== undefined || x.failure !== undefined, 15_000, "DM after restart");
  assert.equal(got.dm?.text, "after restart", JSON.stringify(got.failure));
  assert.ok(!box2.items.some((x) => x.dm?.text === "before restart"), "a handled DM is not delivered again");
});

test("a pinned device whose keys change is refused; a one-time key swapped by the server is refused", async () => {
  const eve = await connect("erin", { store: new MemoryStateStore(), secret: { key: key32(4) }, deviceId: "erin-1" });
  let tamper: "none" | "identity" | "otk" = "none";
  const evil: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    const url = String(input);
    if (tamper === "identity" && url.includes("/v1/keys/users/erin")) {
      const body = (await res.json()) as { devices: Array<{ identity: { device_id: string; ed25519: string } }> };
      const other = (await eve.e2ee!.listDevices("frank"))[0]!;
      for (const d of body.devices) d.identity = { ...other.identity, device_id: d.identity.device_id };
      return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
    }
    if (tamper === "otk" && url.endsWith("/v1/keys/claim")) {
      const body = (await res.json()) as { claimed: Array<{ key: { key: string } }> };
      for (const c of body.claimed) c.key.key = c.key.key.startsWith("A") ? `B${c.key.key.slice(1)}` : `A${c.key.key.slice(1)}`;
      return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
    }
    return res;
  };
  const frank = await connect("frank", { store: new MemoryStateStore(), secret: { key: key32(5) }, deviceId: "frank-1" }, { fetch: evil });
  tamper = "otk";
  await assert.rejects(frank.message.send("user:erin", "x"), /signature|one-time/i);
  tamper = "none";
  assert.equal((await frank.message.send("user:erin", "pinned now")).length, 1);
  tamper = "identity";
  await assert.rejects(frank.message.send("user:erin", "y"), (e: unknown) => e instanceof IdentityChangedError);
  tamper = "none";
});

test("an encrypted channel with two TS members: sealed on the wire, opened, removal rotates", async () => {
  const ada = await connect("ada", { store: new MemoryStateStore(), secret: { key: key32(6) }, deviceId: "ada-1" });
  const grace = await connect("grace", { store: new MemoryStateStore(), secret: { key: key32(7) }, deviceId: "grace-1" });
  const ch = await ada.space.createChannel("e2ee-plans", { encrypted: true, members: ["grace"] });
  assert.ok(ch instanceof EncryptedSpace);
  assert.equal(ch.epoch, 0);
  assert.deepEqual(ch.roster().map((m) => m.user).sort(), ["ada", "grace"]);

  const gch = await grace.space.encrypted(ch.id);
  const box: MsgBox = new Inbox<DecryptedMessage>();
  gch.onMessage((m) => box.push(m));
  const sent = await ch.sendMessage("the secret plan");
  assert.ok(sent.content.startsWith("hm1."), "the server holds the sealed form");
  assert.equal(sent.epoch, 0);
  const got = await box.next((m) => m.id === sent.id, 15_000, "live message");
  assert.equal(got.text, "the secret plan");
  assert.equal(got.device, "ada-1");
  assert.equal(got.unopenable, undefined);

  // The plain view shows only ciphertext.
  const raw = await grace.space.get(ch.id).then((s) => s.history({ limit: 10 }));
  assert.ok(raw.messages.every((m) => m.content.startsWith("hm1.") && !m.content.includes("secret")));

  await gch.sendMessage("grace agrees");
  const hist = await ch.history({ limit: 10 });
  assert.deepEqual(hist.messages.map((m) => m.text).sort(), ["grace agrees", "the secret plan"]);

  // A message the server attributes to the wrong author is surfaced, not shown.
  const forged = await ch.open({ ...sent, author: "grace" });
  assert.equal(forged.unopenable?.reason, "author_mismatch");
  const garbage = await ch.open({ ...sent, content: "hm1.AAAA" });
  assert.equal(garbage.unopenable?.reason, "malformed");

  // Removing Grace: a remove commit and a fresh key she does not get.
  await ch.removeMember("grace");
  assert.equal(ch.epoch, 1);
  assert.deepEqual(ch.roster().map((m) => m.user), ["ada"]);
  const after = await ch.sendMessage("after grace left");
  assert.equal(after.epoch, 1);
  const opened = await gch.open(after);
  assert.equal(opened.unopenable?.reason, "no_key", JSON.stringify(opened.unopenable));
  // Ada can still read everything.
  const all = await ch.history({ limit: 10 });
  assert.ok(all.messages.some((m) => m.text === "after grace left"));
});

test("adding a member seals every earlier key to them; encrypted files round-trip with shards lost", async () => {
  const hal = await connect("hal", { store: new MemoryStateStore(), secret: { key: key32(8) }, deviceId: "hal-1" });
  // Ivy's blob downloads go through a fetch that loses the shards listed in `lost` (a 404, as
  // for a blob directory gone) or alters those in `altered`.
  const lost = new Set<string>();
  const altered = new Set<string>();
  const flaky: typeof fetch = async (input, init) => {
    const url = String(input);
    const hash = /\/blobs\/([0-9a-f]{64})$/.exec(url)?.[1];
    if (hash && lost.has(hash)) return new Response(JSON.stringify({ error: { code: "not_found", message: "gone" } }), { status: 404, headers: { "content-type": "application/json" } });
    const res = await fetch(input, init);
    if (hash && altered.has(hash)) {
      const b = new Uint8Array(await res.arrayBuffer());
      b[0] = (b[0] ?? 0) ^ 1;
      return new Response(b, { status: 200, headers: { "content-type": "application/octet-stream" } });
    }
    return res;
  };
  const ivy = await connect("ivy", { store: new MemoryStateStore(), secret: { key: key32(9) }, deviceId: "ivy-1" }, { fetch: flaky });
  const ch = await hal.space.createChannel("e2ee-files", { encrypted: true });
  await ch.sendMessage("before ivy");
  await ch.addMember("ivy");
  assert.equal(ch.epoch, 1);
  const data = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7) % 256);
  const progress: Array<[number, number]> = [];
  const { message, manifest } = await ch.putFile(data, { name: "photo.bin", type: "application/octet-stream", onProgress: (sent, total) => progress.push([sent, total]) });
  assert.equal(message.type, "herald.file");
  // Progress: after each of the 6 shards (no XMLHttpRequest in Node), rising to the total, which
  // is more than the file (parity shards).
  assert.equal(progress.length, 6);
  const total = progress[0]![1];
  assert.ok(total > data.length, `${total} shard bytes for ${data.length} file bytes`);
  assert.ok(progress.every(([s, t], i) => t === total && s > (progress[i - 1]?.[0] ?? 0)), JSON.stringify(progress));
  assert.equal(progress[5]![0], total);
  assert.equal(manifest.k, 4);
  assert.equal(manifest.shard_hashes.length, 6);

  const ich = await ivy.space.encrypted(ch.id);
  const hist = await ich.history({ limit: 10 });
  assert.ok(hist.messages.some((m) => m.text === "before ivy"), "an earlier epoch opens for the new member");
  const fileMsg = hist.messages.find((m) => m.id === message.id)!;
  const m2 = EncryptedSpace.fileOf(fileMsg)!;
  assert.equal(m2.name, "photo.bin");
  assert.deepEqual(await ich.getFile(m2), data);
  // Any 4 of 6: one shard lost and one altered still rebuild; a third gone does not.
  lost.add(m2.shard_hashes[0]!);
  altered.add(m2.shard_hashes[3]!);
  assert.deepEqual(await ich.getFile(m2), data);
  lost.add(m2.shard_hashes[5]!);
  await assert.rejects(ich.getFile(m2), /cannot be rebuilt/);
});

test("a DM reaches every device of the peer and the sender's other devices", async () => {
  const kim1 = await connect("kim", { store: new MemoryStateStore(), secret: { key: key32(10) }, deviceId: "kim-phone" });
  const kim2 = await connect("kim", { store: new MemoryStateStore(), secret: { key: key32(11) }, deviceId: "kim-laptop" });
  const leo = await connect("leo", { store: new MemoryStateStore(), secret: { key: key32(12) }, deviceId: "leo-1" });
  const [b1, b2, bl] = [new Inbox<DmItem>(), new Inbox<DmItem>(), new Inbox<DmItem>()];
  kim1.message.onDirect(dmPush(b1));
  kim2.message.onDirect(dmPush(b2));
  leo.message.onDirect(dmPush(bl));
  assert.equal((await leo.message.send("user:kim", "to both of kim's")).length, 2);
  await b1.next((x) => x.dm?.text === "to both of kim's", 15_000, "kim-phone copy");
  await b2.next((x) => x.dm?.text === "to both of kim's", 15_000, "kim-laptop copy");
  // Kim's phone answers: Leo gets it, and so does Kim's laptop (her other device).
  assert.equal((await kim1.message.send("user:leo", "from kim's phone")).length, 2);
  await bl.next((x) => x.dm?.text === "from kim's phone", 15_000, "leo's copy");
  const mine = await b2.next((x) => x.dm?.text === "from kim's phone", 15_000, "kim-laptop's own copy");
  assert.equal(mine.dm?.from_device, "kim-phone");
  assert.ok(!b1.items.some((x) => x.dm?.text === "from kim's phone"), "not to the sending device itself");
});

test("the browser stores (over an in-memory IndexedDB): a WebCrypto-wrapped key and the sealed state survive a reload", async () => {
  const factory = new FakeIdbFactory() as unknown as IDBFactory;
  const key = await webCryptoStateKey("mia", { factory });
  assert.equal(key.length, 32);
  // The wrapping key is non-extractable; the same key comes back on the next "page load".
  const stored = (factory as unknown as FakeIdbFactory).dbs.get("herald-e2ee")?.get("state")?.get("key:mia") as { wrapper: CryptoKey; wrapped: Uint8Array };
  assert.equal(stored.wrapper.extractable, false);
  await assert.rejects(globalThis.crypto.subtle.exportKey("raw", stored.wrapper));
  assert.notDeepEqual(stored.wrapped.slice(0, 32), key);
  assert.deepEqual(await webCryptoStateKey("mia", { factory }), key);
  const nia = await connect("nia", { store: new MemoryStateStore(), secret: { key: key32(13) }, deviceId: "nia-1" });
  const mia = await connect("mia", { store: await IndexedDbStateStore.open("mia", { factory }), secret: { key }, deviceId: "mia-1" });
  await nia.message.send("user:mia", "into indexeddb");
  const box = new Inbox<DmItem>();
  const off = mia.message.onDirect(dmPush(box));
  await box.next((x) => x.dm?.text === "into indexeddb", 15_000, "DM");
  off();
  mia.close();
  await mia.e2ee!.close();
  const raw = await (await IndexedDbStateStore.open("mia", { factory })).load();
  assert.equal(new TextDecoder().decode(raw!.slice(0, 4)), "HST1");
  // Reload: the same device with its session (the next DM is not a pre-key one).
  const again = await connect("mia", { store: await IndexedDbStateStore.open("mia", { factory }), secret: { key: await webCryptoStateKey("mia", { factory }) } });
  assert.equal(again.e2ee!.deviceId, "mia-1");
  const box2 = new Inbox<DmItem>();
  again.message.onDirect(dmPush(box2));
  await nia.message.send("user:mia", "after reload");
  const got = await box2.next((x) => x.dm !== undefined || x.failure !== undefined, 15_000, "DM after reload");
  assert.equal(got.dm?.text, "after reload", JSON.stringify(got.failure));
});

test("one-time keys are topped up once fewer than the minimum are left", async () => {
  const otk = await connect("otto", { store: new MemoryStateStore(), secret: { key: key32(14) }, deviceId: "otto-1", oneTimeKeys: 4, minOneTimeKeys: 3 });
  assert.equal((await otk.e2ee!.listDevices("otto"))[0]?.one_time_keys, 4);
  const box = new Inbox<DmItem>();
  otk.message.onDirect(dmPush(box));
  const senders = await Promise.all(["pia", "quin"].map((u, i) => connect(u, { store: new MemoryStateStore(), secret: { key: key32(20 + i) }, deviceId: `${u}-1` })));
  for (const s of senders) await s.message.send("user:otto", `from ${s.e2ee!.user}`);
  await box.next((x) => x.dm?.text === "from quin", 15_000, "second DM");
  // Two keys claimed (2 left < 3): the device uploads new ones up to 4 after its inbound session.
  const deadline = Date.now() + 10_000;
  let left = -1;
  while (Date.now() < deadline) {
    // Each check is a request to the server, awaited; the top-up runs after the DM was handed over.
    left = (await otk.e2ee!.listDevices("otto"))[0]?.one_time_keys ?? -1;
    if (left === 4) break;
  }
  assert.equal(left, 4);
});
