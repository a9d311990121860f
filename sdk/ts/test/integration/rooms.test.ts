/**
 * Rooms (PROTOCOL.md §8, docs §J/§P) through the SDK against a real `herald serve`: human,
 * agent and service participants; direct messages with a 1 MiB attachment; broadcasts; leave
 * and disconnect; a stream of several MiB to a slow reader, paced by credit; a room past the
 * list limit; re-entry after a reconnect; and a Rust participant (`herald room join`, the Rust
 * SDK) exchanging messages and streams with a TypeScript one.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ForbiddenError,
  Herald,
  PayloadTooLargeError,
  DisconnectedError,
  type Participant,
  type Room,
  type RoomMessage,
} from "../../src/index.js";
import { HeraldServer } from "../support/server.js";
import { JsonLines, random, sha256, tokenOf } from "../support/rooms-helpers.js";

const MAX_ATTACHMENT = 2 * 1024 * 1024;
let server: HeraldServer;
let ada: Herald; // human
let bot: Herald; // agent
let svc: Herald; // service
let channelId = "";
const clients: Herald[] = [];

async function connect(sub: string, kind: "human" | "agent" | "service", name?: string): Promise<Herald> {
  const c = await Herald.connect({ url: server.url, token: tokenOf(server, sub, kind, name), backoff: { initialMs: 50, maxMs: 500 } });
  clients.push(c);
  return c;
}

/** Resolves once `got` has a message for which `pred` holds (already, or when it comes). */
async function arrived(room: Room, got: RoomMessage[], pred: (m: RoomMessage) => boolean): Promise<void> {
  if (got.some(pred)) return;
  await room.waitFor("message", pred);
}

/** Collects a room's messages in order. */
function inbox(room: Room): RoomMessage[] {
  const got: RoomMessage[] = [];
  room.on("message", (m) => got.push(m));
  return got;
}

before(async () => {
  server = await HeraldServer.start({ args: ["--max-attachment-bytes", String(MAX_ATTACHMENT)] });
  ada = await connect("ada", "human", "Ada");
  bot = await connect("bot", "agent", "Bot");
  svc = await connect("svc", "service", "Svc");
  const lab = await ada.space.createChannel("lab");
  channelId = lab.id;
  await bot.space.joinChannel("lab");
  await svc.space.joinChannel("lab");
});

after(async () => {
  for (const c of clients) c.close();
  await server?.dispose();
});

test("human, agent and service participants see each other, with attributes and updates", async () => {
  const ar = ada.room("lab");
  const br = bot.room(channelId);
  const sr = svc.room("lab");
  assert.equal(ada.room("lab"), ar, "the same handle for the same reference");

  const aEntered = await ar.enter({ role: "lead" });
  assert.equal(typeof aEntered.participant_id, "string");
  assert.equal(ar.channelId, channelId, "a name is resolved to the channel id events carry");
  assert.ok(aEntered.participants?.some((p) => p.participant_id === aEntered.participant_id && p.user === "ada" && p.kind === "human"));

  const adaSeesBot = ar.waitFor("participant_added", (p) => p.user === "bot");
  const bEntered = await br.enter({ role: "helper" });
  const botP = await adaSeesBot;
  assert.equal(botP.kind, "agent");
  assert.deepEqual(botP.attributes, { role: "helper" });
  assert.equal(botP.name, "Bot");
  // The bot's own reply lists Ada.
  assert.ok(bEntered.participants?.some((p) => p.user === "ada" && p.kind === "human"));
  assert.deepEqual(br.remoteParticipants.map((p) => p.user), ["ada"]);

  const adaSeesSvc = ar.waitFor("participant_added", (p) => p.user === "svc");
  const botSeesSvc = br.waitFor("participant_added", (p) => p.user === "svc");
  await sr.enter({});
  assert.equal((await adaSeesSvc).kind, "service");
  assert.equal((await botSeesSvc).kind, "service");
  assert.deepEqual(new Set(ar.remoteParticipants.map((p) => `${p.user}:${p.kind}`)), new Set(["bot:agent", "svc:service"]));
  assert.deepEqual(new Set(sr.remoteParticipants.map((p) => `${p.user}:${p.kind}`)), new Set(["ada:human", "bot:agent"]));
  assert.equal(ar.presenceCount, 3);
  assert.ok(ar.listComplete);

  // An update reaches the others as participant_updated.
  const upd = ar.waitFor("participant_updated", (p) => p.user === "bot" && p.attributes.status === "busy");
  await br.update({ role: "helper", status: "busy" });
  await upd;
  assert.equal(ar.remoteParticipants.find((p) => p.user === "bot")?.attributes.status, "busy");

  // The full list, paged (two per page).
  const all = await svc.room("lab").participants(2);
  assert.deepEqual(all.map((p) => p.user).sort(), ["ada", "bot", "svc"]);
  const page = await sr.participantsPage({ limit: 2 });
  assert.equal(page.participants.length, 2);
  assert.equal(page.has_more, true);
});

test("a direct message with a 1 MiB attachment arrives byte-identical at the addressee only", async () => {
  const ar = ada.room("lab");
  const br = bot.room(channelId);
  const sr = svc.room("lab");
  const botGot = inbox(br);
  const svcGot = inbox(sr);
  const adaGot = inbox(ar);
  const to = ar.remoteParticipants.find((p) => p.user === "bot") as Participant;
  const bytes = random(1024 * 1024);

  const fileCame = br.waitFor("message", (m) => m.type === "file");
  await ar.messaging.sendMessage(to, "file", { name: "weights.bin", sha256: sha256(bytes) }, bytes);
  const m = await fileCame;
  assert.equal(m.from.user, "ada");
  assert.equal(m.from.kind, "human");
  assert.equal(m.channel, channelId);
  assert.deepEqual(m.message, { name: "weights.bin", sha256: sha256(bytes) });
  assert.ok(m.attachment, "the attachment came");
  assert.equal(m.attachment.length, bytes.length);
  assert.equal(sha256(m.attachment), sha256(bytes));
  assert.deepEqual(Buffer.from(m.attachment), Buffer.from(bytes));

  // A broadcast Ada sends next reaches Svc; the direct message never did (one sender's room
  // frames reach a participant in order, so it would have come first).
  const svcBroadcast = sr.waitFor("message", (x) => x.type === "marker");
  await ar.messaging.broadcastMessage("marker", { n: 1 });
  await svcBroadcast;
  assert.deepEqual(svcGot.map((x) => x.type), ["marker"]);
  await arrived(br, botGot, (x) => x.type === "marker");
  assert.deepEqual(botGot.map((x) => x.type), ["file", "marker"]);
  assert.deepEqual(adaGot, [], "the sender gets neither");

  // A direct message without bytes is a text frame: no attachment.
  const plain = br.waitFor("message", (x) => x.type === "chat");
  await ar.messaging.sendMessage(to.participant_id, "chat", { text: "Hey!" });
  assert.equal((await plain).attachment, undefined);
});

test("broadcast reaches every other participant and not the sender", async () => {
  const ar = ada.room("lab");
  const br = bot.room(channelId);
  const sr = svc.room("lab");
  const adaGot = inbox(ar);
  const botGot = inbox(br);
  const svcGot = inbox(sr);
  const att = random(4096);
  const atBot = br.waitFor("message", (m) => m.type === "news");
  const atSvc = sr.waitFor("message", (m) => m.type === "news");
  await ar.messaging.broadcastMessage("news", { text: "standup in 5" }, att);
  for (const m of [await atBot, await atSvc]) {
    assert.equal(m.from.user, "ada");
    assert.deepEqual(m.message, { text: "standup in 5" });
    assert.equal(sha256(m.attachment ?? new Uint8Array()), sha256(att));
  }
  // Bot broadcasts next: it is the first thing Ada receives, so Ada never got her own.
  const atAda = ar.waitFor("message", (m) => m.type === "reply");
  await br.messaging.broadcastMessage("reply", { text: "ok" });
  await atAda;
  assert.deepEqual(adaGot.map((m) => `${m.from.user}:${m.type}`), ["bot:reply"]);
  assert.deepEqual(botGot.map((m) => m.type), ["news"]);
  await arrived(sr, svcGot, (m) => m.type === "reply");
  assert.deepEqual(svcGot.map((m) => m.type), ["news", "reply"]);
});

test("limits and rules: an attachment over the limit, a send before entering, an unknown participant", async () => {
  const ar = ada.room("lab");
  await assert.rejects(ar.messaging.broadcastMessage("big", {}, new Uint8Array(MAX_ATTACHMENT + 1)), (e: unknown) => e instanceof PayloadTooLargeError);
  // The limit itself is allowed.
  const br = bot.room(channelId);
  const got = br.waitFor("message", (m) => m.type === "max");
  await ar.messaging.broadcastMessage("max", {}, new Uint8Array(MAX_ATTACHMENT));
  assert.equal((await got).attachment?.length, MAX_ATTACHMENT);

  const grace = await connect("grace", "human");
  await grace.space.joinChannel("lab");
  await assert.rejects(grace.room("lab").messaging.broadcastMessage("x", {}), (e: unknown) => e instanceof ForbiddenError, "not entered");
  // messaging.enable() enters (with no attributes), after which sends go through.
  const hello = ar.waitFor("message", (m) => m.type === "hello" && m.from.user === "grace");
  await grace.room("lab").messaging.enable();
  assert.ok(grace.room("lab").entered);
  await grace.room("lab").messaging.broadcastMessage("hello", {});
  await hello;
  await assert.rejects(ar.messaging.sendMessage("no-such-participant", "x", {}), (e: unknown) => (e as { code?: string }).code === "not_found");
  // Not a member: entering is forbidden and never joins.
  const other = await connect("mallory", "human");
  await assert.rejects(other.room(channelId).enter({}), (e: unknown) => e instanceof ForbiddenError);
  grace.close();
  other.close();
});

test("leave and disconnect give participant_removed", async () => {
  const ar = ada.room("lab");
  const sr = svc.room("lab");
  const svcP = ar.remoteParticipants.find((p) => p.user === "svc") as Participant;
  const removed = ar.waitFor("participant_removed", (p) => p.participant_id === svcP.participant_id);
  await sr.leave();
  assert.equal((await removed).user, "svc");
  assert.ok(!ar.remoteParticipants.some((p) => p.user === "svc"));
  assert.equal(sr.entered, false);

  // A participant whose connection ends is removed too.
  const temp = await connect("tmp", "agent");
  await temp.space.joinChannel("lab");
  const added = ar.waitFor("participant_added", (p) => p.user === "tmp");
  await temp.room("lab").enter({});
  const tmpP = await added;
  const gone = ar.waitFor("participant_removed", (p) => p.participant_id === tmpP.participant_id);
  temp.close();
  await gone;
  assert.ok(!ar.remoteParticipants.some((p) => p.user === "tmp"));
});

test("a stream of 8 MiB to a slow reader: bytes identical, the writer paced by credit", async () => {
  const ar = ada.room("lab");
  const br = bot.room(channelId);
  const data = random(8 * 1024 * 1024);
  const window = 256 * 1024;
  const botP = ar.remoteParticipants.find((p) => p.user === "bot") as Participant;

  let violations = 0;
  let reads = 0;
  let writer: import("../../src/index.js").StreamWriter | undefined;
  const received = new Promise<{ bytes: Uint8Array; header: unknown; from: string; maxBuffered: number }>((resolve, reject) => {
    const off = br.on("stream", (req) => {
      off();
      void (async () => {
        const reader = await req.accept({ credit: window });
        const parts: Uint8Array[] = [];
        let maxBuffered = 0;
        for await (const chunk of reader) {
          parts.push(chunk);
          reads += 1;
          maxBuffered = Math.max(maxBuffered, reader.buffered);
          // The writer can never be more than the window ahead of what was consumed.
          if (writer && writer.bytesSent > reader.bytesConsumed + window) violations += 1;
          // A deliberately slow reader: 1 ms per chunk, so the writer has to wait for credit.
          if (reads % 2 === 0) await new Promise((r) => setTimeout(r, 1));
        }
        resolve({ bytes: Buffer.concat(parts), header: req.header, from: req.from.user, maxBuffered });
      })().catch(reject);
    });
  });

  const t0 = performance.now();
  writer = await ar.messaging.createStream(botP, { name: "model.bin", size: data.length });
  // Written in uneven pieces, bigger than the window.
  for (let at = 0; at < data.length; at += 700_001) await writer.write(data.subarray(at, at + 700_001));
  await writer.close();
  const got = await received;
  const ms = performance.now() - t0;
  assert.equal(got.from, "ada");
  assert.deepEqual(got.header, { name: "model.bin", size: data.length });
  assert.equal(got.bytes.length, data.length);
  assert.equal(sha256(got.bytes), sha256(data));
  assert.equal(writer.bytesSent, data.length);
  assert.equal(violations, 0, "the writer stayed within the reader's credit");
  assert.ok(writer.creditWaits > 10, `the writer waited for credit (${writer.creditWaits} times)`);
  assert.ok(got.maxBuffered <= window, `the reader buffered at most the window (${got.maxBuffered})`);
  console.log(`# stream 8 MiB, window 256 KiB, slow reader: ${ms.toFixed(0)} ms (${(data.length / 1048576 / (ms / 1000)).toFixed(1)} MiB/s), ${writer.creditWaits} credit waits`);
});

test("streams: a rejected stream is ForbiddenError, a participant without a stream listener refuses at once", async () => {
  const ar = ada.room("lab");
  const br = bot.room(channelId);
  const botP = ar.remoteParticipants.find((p) => p.user === "bot") as Participant;
  const off = br.on("stream", (req) => void req.reject());
  await assert.rejects(ar.messaging.createStream(botP, { n: 1 }), (e: unknown) => e instanceof ForbiddenError);
  off();
  const t0 = Date.now();
  await assert.rejects(ar.messaging.createStream(botP, { n: 2 }), (e: unknown) => e instanceof ForbiddenError);
  assert.ok(Date.now() - t0 < 5000, "refused without waiting for the server's 30 s");

  // The reader closing early ends the writer's next write.
  const offB = br.on("stream", (req) => {
    void req.accept({ credit: 64 * 1024 }).then(async (reader) => {
      await reader.read();
      await reader.close();
    });
  });
  const w = await ar.messaging.createStream(botP, {});
  await w.write(random(64 * 1024));
  await assert.rejects(async () => {
    for (let i = 0; i < 100; i++) await w.write(random(64 * 1024));
  }, (e: unknown) => (e as { code?: string }).code === "not_found");
  offB();
});

test("a room past the list limit reports presence_count and pages its participants", async () => {
  const big = await HeraldServer.start({ args: ["--presence-list-max", "2"] });
  const cs: Herald[] = [];
  try {
    for (const u of ["u1", "u2", "u3", "u4"]) {
      cs.push(await Herald.connect({ url: big.url, token: tokenOf(big, u, "human") }));
    }
    const [c1, c2, c3, c4] = cs as [Herald, Herald, Herald, Herald];
    await c1.space.createChannel("crowd");
    for (const c of [c2, c3, c4]) await c.space.joinChannel("crowd");
    const r1 = c1.room("crowd");
    await r1.enter({});
    await c2.room("crowd").enter({});
    const counted = r1.waitFor("presence_count", (n) => n === 4);
    await c3.room("crowd").enter({});
    const e4 = await c4.room("crowd").enter({});
    assert.equal(e4.participants, undefined);
    assert.equal(e4.count, 4);
    assert.equal(c4.room("crowd").presenceCount, 4);
    assert.equal(c4.room("crowd").listComplete, false);
    await counted;
    assert.equal(r1.presenceCount, 4);
    assert.equal(r1.listComplete, false);
    const all = await c4.room("crowd").participants(2);
    assert.deepEqual(all.map((p) => p.user).sort(), ["u1", "u2", "u3", "u4"]);
    // Back under the limit: one last count, then the list flows again.
    const back = r1.waitFor("presence_count", (n) => n === 2);
    await c3.room("crowd").leave();
    await c4.room("crowd").leave();
    await back;
    assert.equal(r1.presenceCount, 2);
  } finally {
    for (const c of cs) c.close();
    await big.dispose();
  }
});

test("after a reconnect the room is entered again and the others see the new participant", async () => {
  const ar = ada.room("lab");
  const br = bot.room(channelId);
  const old = br.participantId;
  assert.ok(old);
  const dropped = br.waitFor("disconnected");
  const removed = ar.waitFor("participant_removed", (p) => p.participant_id === old);
  const reentered = br.waitFor("entered");
  const readded = ar.waitFor("participant_added", (p) => p.user === "bot");
  bot.connection.dropConnection();
  // While the socket is down a room request fails at once (it is never queued nor resent).
  await assert.rejects(br.messaging.broadcastMessage("lost", {}), (e: unknown) => e instanceof DisconnectedError);
  await dropped;
  await removed;
  const again = await reentered;
  const p = await readded;
  assert.notEqual(again.participant_id, old);
  assert.equal(p.participant_id, again.participant_id);
  assert.deepEqual(p.attributes, { role: "helper", status: "busy" }, "entered again with the latest attributes");
  assert.ok(br.remoteParticipants.some((x) => x.user === "ada"));
  // And it works as before.
  const msg = ar.waitFor("message", (m) => m.type === "back");
  await br.messaging.broadcastMessage("back", {});
  await msg;
});

test("a Rust participant (herald room join) and a TypeScript one: messages, attachments and streams both ways", async () => {
  const dir = mkdtempSync(join(tmpdir(), "herald-rooms-"));
  // Rusty must be a member before it enters.
  await ada.request("channel.add_member", { channel: channelId, user: "rusty" });
  const rust = JsonLines.spawn(["room", "join", "--room", "lab", "--kind", "agent", "--attributes", '{"lang":"rust"}', "--accept-streams", dir, "--url", server.url, "--token", tokenOf(server, "rusty", "agent", "Rusty")]);
  try {
    const ar = ada.room("lab");
    const seen = ar.waitFor("participant_added", (p) => p.user === "rusty");
    const entered = await rust.line((l) => l.event === "entered");
    const rp = await seen;
    assert.equal(rp.participant_id, entered.participant_id);
    assert.equal(rp.kind, "agent");
    assert.deepEqual(rp.attributes, { lang: "rust" });

    // TS → Rust: a direct message with an attachment.
    const att = random(300_000);
    await ar.messaging.sendMessage(rp, "chat", { text: "from TypeScript" }, att);
    const line = await rust.line((l) => l.event === "room_message" && (l.message as { text?: string }).text === "from TypeScript");
    assert.equal(line.attachment_bytes, att.length);
    assert.equal((line.from as Participant).user, "ada");

    // TS → Rust: a 3 MiB stream, saved by the Rust SDK's StreamReader into a file.
    const data = random(3 * 1024 * 1024 + 17);
    const w = await ar.messaging.createStream(rp, { name: "to-rust.bin" });
    await w.write(data);
    await w.close();
    const saved = await rust.line((l) => l.event === "stream_saved");
    assert.equal(saved.bytes, data.length);
    assert.equal(sha256(readFileSync(String(saved.path))), sha256(data));

    // Rust → TS: `herald room stream` (the Rust SDK's StreamWriter) to Ada.
    const file = join(dir, "from-rust.bin");
    const back = random(2 * 1024 * 1024 + 5);
    writeFileSync(file, back);
    const incoming = new Promise<Uint8Array>((resolve, reject) => {
      const off = ar.on("stream", (req) => {
        off();
        req.accept({ credit: 128 * 1024 }).then((r) => r.readAll()).then(resolve, reject);
      });
    });
    const sender = JsonLines.spawn(["room", "stream", "--room", "lab", "--to", String(ar.participantId), "--header", '{"from":"rust"}', file, "--url", server.url, "--token", tokenOf(server, "rusty", "agent")]);
    const got = await incoming;
    assert.equal(sha256(got), sha256(back));
    assert.equal((await sender.line((l) => typeof l.stream_id === "string")).bytes, back.length);
    await sender.exited;

    // Rust → TS: a broadcast with an attachment (`herald room messaging broadcast`).
    const small = join(dir, "note.txt");
    writeFileSync(small, "hello from rust");
    const note = ar.waitFor("message", (m) => m.type === "note");
    const b = JsonLines.spawn(["room", "messaging", "broadcast", "--room", "lab", "--type", "note", "--data", '{"n":7}', "--attachment", small, "--url", server.url, "--token", tokenOf(server, "rusty", "agent")]);
    const m = await note;
    assert.deepEqual(m.message, { n: 7 });
    assert.equal(Buffer.from(m.attachment ?? new Uint8Array()).toString("utf8"), "hello from rust");
    assert.equal(await b.exited, 0);
  } finally {
    await rust.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});
