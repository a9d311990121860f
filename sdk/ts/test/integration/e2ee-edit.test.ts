/**
 * Edits in an encrypted channel against a real `herald serve`: Ada edits her message, sealed
 * as a send is; Bob sees the edit live, opened; history shows the new plaintext with
 * `edited_at` (checked against the log's newest edit entry) while the server holds only the
 * sealed form; Bob cannot edit Ada's message (`NotAuthorError`); an edit whose content was
 * sealed by another member's device does not open; an edit made while this device's head
 * epoch is behind (a keeper rotated) is sealed again with the new head after `stale_epoch`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { Herald, NotAuthorError, type MessageEditedEvent, type KeyRotatedEvent } from "../../src/index.js";
import { e2ee, MemoryStateStore, EncryptedSpace, type DecryptedMessage } from "../../src/e2ee/index.js";
import { heraldBin } from "../support/server.js";
import { E2eeSuite, Inbox } from "../support/e2ee.js";

const PASS = "correct horse battery staple";
const suite = new E2eeSuite("herald-ts-edit-");

async function connect(user: string, deviceId: string): Promise<Herald> {
  const c = await Herald.connect({ url: suite.server.url, token: suite.server.token(user), e2ee: e2ee({ store: new MemoryStateStore(), secret: { passphrase: PASS }, deviceId }) });
  suite.clients.push(c);
  return c;
}

/** The server's stored messages of `channel`, read over REST with `user`'s token. */
async function stored(user: string, channel: string): Promise<Array<{ id: string; content: string; edited_at?: string; epoch?: number }>> {
  const res = await fetch(`${suite.server.url}/v1/channels/${channel}/messages?limit=50`, { headers: { authorization: `Bearer ${suite.server.token(user)}` } });
  assert.equal(res.status, 200);
  return ((await res.json()) as { messages: Array<{ id: string; content: string; edited_at?: string; epoch?: number }> }).messages;
}

test("Ada edits her encrypted message: Bob sees it live and opened, history has it, the server holds it sealed", async () => {
  const ada = await connect("ada", "ada-1");
  const bob = await connect("bob", "bob-1");
  const ch = (await ada.space.createChannel("e2ee-edits", { encrypted: true, members: ["bob"] })) as EncryptedSpace;
  const bch = await bob.space.encrypted(ch.id);
  const messages = new Inbox<DecryptedMessage>();
  const edits = new Inbox<DecryptedMessage>();
  bch.onMessage((m) => messages.push(m));
  const rawEdits: MessageEditedEvent[] = [];
  bch.onMessageEdited((m, e) => {
    rawEdits.push(e);
    edits.push(m);
  });

  const sent = await ch.sendMessage("the first draft of the plan");
  await messages.next((m) => m.id === sent.id, 15_000, "Bob gets the message");

  const edited = await ch.edit(sent.id, "the final plan: meet at noon");
  assert.equal(edited.id, sent.id);
  assert.ok(edited.content.startsWith("hm1."), "the edit's reply holds the sealed form");
  assert.ok(edited.edited_at, "the edit's reply has edited_at");
  assert.equal(edited.epoch, 0);

  // Bob, live: the edit opened against Ada's message (its seq and type, remembered).
  const got = await edits.next((m) => m.id === sent.id, 15_000, "Bob gets the edit");
  assert.equal(got.unopenable, undefined, JSON.stringify(got.unopenable));
  assert.equal(got.text, "the final plan: meet at noon");
  assert.equal(got.content, "the final plan: meet at noon");
  assert.equal(got.author, "ada");
  assert.equal(got.device, "ada-1");
  assert.equal(got.seq, sent.seq);
  assert.equal(got.type, sent.type);
  assert.ok(got.edited_at);
  assert.equal(got.sealed, edited.content);
  assert.ok(rawEdits.every((e) => e.content.startsWith("hm1.") && !e.content.includes("noon")), "the event carries the sealed form only");

  // History, both sides: the new plaintext with edited_at (checked against the log's edit entry).
  for (const who of [ch, bch]) {
    const hist = await who.history({ limit: 10 });
    const m = hist.messages.find((x) => x.id === sent.id);
    assert.ok(m, "the edited message is in the history");
    assert.equal(m.unopenable, undefined, JSON.stringify(m.unopenable));
    assert.equal(m.text, "the final plan: meet at noon");
    assert.ok(m.edited_at);
    assert.equal(m.epoch, 0);
  }

  // A server presenting the original sealed content as the edited message's current one (a
  // replay Ada's signature would not catch) is refused: it is not the log's newest edit.
  const realHistory = ch.plain.history.bind(ch.plain);
  ch.plain.history = async (o) => {
    const p = await realHistory(o);
    return { ...p, messages: p.messages.map((m) => (m.id === sent.id ? { ...m, content: sent.content } : m)) };
  };
  await assert.rejects(ch.history({ limit: 10 }), /differs from its verified log entry/);
  ch.plain.history = realHistory;

  // What the server holds (REST history with Ada's token): sealed, no plaintext old or new.
  const raw = (await stored("ada", ch.id)).find((m) => m.id === sent.id);
  assert.ok(raw);
  assert.equal(raw.content, edited.content);
  assert.ok(raw.content.startsWith("hm1."));
  for (const plain of ["final plan", "noon", "first draft"]) assert.ok(!raw.content.includes(plain), `no plaintext ${plain}`);
  assert.ok(raw.edited_at);

  // Bob cannot edit Ada's message: the typed error, and nothing changed.
  await assert.rejects(bch.edit(sent.id, "bob rewrites history"), (err: unknown) => err instanceof NotAuthorError && err.code === "not_author");
  const after = (await stored("ada", ch.id)).find((m) => m.id === sent.id);
  assert.equal(after?.content, edited.content);

  // A bytes edit opens to those bytes.
  const bytes = Uint8Array.from([0, 1, 2, 250, 255]);
  await ch.edit(sent.id, bytes);
  const gotBytes = await edits.next((m) => m.id === sent.id && m.plaintext?.length === 5, 15_000, "Bob gets the bytes edit");
  assert.deepEqual(gotBytes.plaintext, bytes);

  // An edit whose content another member's device sealed does not open: Bob's own sealed
  // text presented as an edit of Ada's message (a server cannot make Ada's device sign it).
  const bobs = await bch.sendMessage("bob's own words");
  const forged: MessageEditedEvent = { ...rawEdits[0]!, content: bobs.content, epoch: bobs.epoch ?? 0 };
  const asAda = await ch.openEdit(forged);
  assert.equal(asAda.unopenable?.reason, "author_mismatch", JSON.stringify(asAda.unopenable));
  assert.equal(asAda.content, "");
  assert.equal(asAda.text, undefined);
  // Even if the event names Bob as the editor: the edited message is Ada's (Bob's handle saw it).
  const claimsBob = await bch.openEdit({ ...forged, author: "bob" });
  assert.equal(claimsBob.unopenable?.reason, "author_mismatch", JSON.stringify(claimsBob.unopenable));
  // And with the message given explicitly, on a handle that never saw it.
  const fresh = await ada.space.encrypted(ch.id);
  const withOriginal = await fresh.openEdit({ ...forged, author: "bob" }, sent);
  assert.equal(withOriginal.unopenable?.reason, "author_mismatch", JSON.stringify(withOriginal.unopenable));
  // Garbage as an edit: malformed, never shown as text.
  const garbage = await ch.openEdit({ ...forged, content: "hm1.AAAA" });
  assert.equal(garbage.unopenable?.reason, "malformed");
});

/** `herald keeper` as `user` with the keeper grant; resolves once it says it is ready. */
async function keeper(user: string): Promise<ChildProcess> {
  const env: NodeJS.ProcessEnv = { ...process.env, HERALD_URL: suite.server.url, HERALD_TOKEN: suite.server.token(user, { grants: ["keeper"] }), HERALD_STATE_PASSPHRASE: PASS, NO_COLOR: "1" };
  delete env.HERALD_STATE_PASSPHRASE_FILE;
  delete env.HERALD_STATE_KEY_FILE;
  delete env.HERALD_STATE;
  const child = spawn(heraldBin(), ["keeper", "--state", join(suite.dir, `${user}.state`)], { env, stdio: ["ignore", "pipe", "pipe"] });
  suite.children.push(child);
  const lines = new Inbox<string>();
  for (const stream of [child.stdout, child.stderr]) {
    let buf = "";
    stream?.on("data", (chunk: Buffer) => {
      buf += chunk.toString("utf8");
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
  }
  await lines.next((l) => l.includes("keeper device") && l.includes("ready"), 30_000, "keeper ready");
  return child;
}

test("an edit made with a stale head epoch is sealed again with the new head (stale_epoch, sync, reseal)", async () => {
  const k = await keeper("keeper");
  const cy = await connect("cy", "cy-1");
  const dee = await connect("dee", "dee-1");
  const ch = (await cy.space.createChannel("e2ee-edit-stale", { encrypted: true, members: ["dee"] })) as EncryptedSpace;
  const sent = await ch.sendMessage("written at epoch 0");
  assert.equal(sent.epoch, 0);
  assert.ok(ch.roster().some((m) => m.user === "keeper/keeper"), "the keeper is in the genesis");

  // Dee registers a second device: the keeper rotates (a new epoch sealed to every device),
  // which Cy's device has not synced.
  const rotated = new Promise<KeyRotatedEvent>((resolve) => {
    const off = cy.realtime.on("keyRotated", (e) => {
      if (e.channel === ch.id && (e.epoch ?? 0) >= 1) {
        off();
        resolve(e);
      }
    });
  });
  await connect("dee", "dee-2");
  await Promise.race([rotated, new Promise((_, reject) => setTimeout(() => reject(new Error("no key rotation within 30 s")), 30_000).unref())]);
  assert.equal(ch.epoch, 0, "Cy's device is behind the server's head");

  const edited = await ch.edit(sent.id, "rewritten after the rotation");
  assert.equal(edited.epoch, 1, "sealed again with the new head");
  assert.equal(ch.epoch, 1);

  const dch = await dee.space.encrypted(ch.id);
  const hist = await dch.history({ limit: 10 });
  const m = hist.messages.find((x) => x.id === sent.id);
  assert.equal(m?.unopenable, undefined, JSON.stringify(m?.unopenable));
  assert.equal(m?.text, "rewritten after the rotation");
  assert.equal(m?.epoch, 1);

  const exited = new Promise((r) => k.once("exit", r));
  k.kill("SIGTERM");
  await exited;
});
