/**
 * Rooms against a fake socket: the stream credit logic (the writer sends only within credit,
 * keeps a credit that came before the `stream.open` reply, waits for more; the reader grants
 * half its window as it is consumed, not as chunks arrive), binary frames in and out, the
 * presence rules of §J (an update of an unknown participant is an addition, a removal of one
 * is nothing, events before the `room.enter` reply apply after its list), and what a
 * disconnect does (requests fail, the room is entered again, the differences are emitted).
 */
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { Herald, DisconnectedError, CHUNK_BYTES, type Participant, type RoomMessage } from "../../src/index.js";
import { BinarySocket, type Sent } from "../support/rooms-fake-socket.js";

beforeEach(() => BinarySocket.reset());

const CH = "0190f000-0000-7000-8000-000000000001";
const opts = { url: "http://127.0.0.1:1", token: "t0", WebSocket: BinarySocket, backoff: { initialMs: 5, maxMs: 20 }, requestTimeoutMs: 2000 };

async function handshake(n: number): Promise<BinarySocket> {
  const s = await BinarySocket.next(n);
  s.open();
  s.reply(await s.frame("connect"), { conn_id: `conn${n}`, user: { id: "ada" } });
  s.reply(await s.frame("channel.list"), { channels: [{ id: CH, name: "lab", title: null, unread: 0, last_seq: 1 }] });
  return s;
}

async function connected(): Promise<{ client: Herald; s: BinarySocket }> {
  const p = Herald.connect(opts);
  const s = await handshake(0);
  return { client: await p, s };
}

const P = (id: string, user = id, attributes = {}): Participant => ({ participant_id: id, user, kind: "human", attributes });

async function entered(client: Herald, s: BinarySocket, others: Participant[] = [], n = 0): Promise<Sent> {
  const room = client.room(CH);
  const done = room.enter({ a: 1 });
  const f = await s.frame("room.enter", n);
  s.reply(f, { participant_id: "me", participants: [P("me", "ada"), ...others] });
  await done;
  return f;
}

/** Lets queued promise callbacks run. */
const tick = () => new Promise<void>((r) => setImmediate(r));

test("room request ids are far above the session's and their replies never reach it", async () => {
  const { client, s } = await connected();
  const f = await entered(client, s);
  assert.ok(Number(f.frame.id) >= 2 ** 40);
  assert.equal(f.frame.channel, CH);
  assert.deepEqual(f.frame.attributes, { a: 1 });
  // The session still works alongside.
  const ping = client.ping();
  s.reply(await s.frame("ping"), {});
  assert.deepEqual(await ping, {});
  client.close();
});

test("a room name is resolved to the channel id that events carry", async () => {
  const { client, s } = await connected();
  const room = client.room("lab");
  const done = room.enter({});
  const list = await s.frame("channel.list", 1);
  s.reply(list, { channels: [{ id: CH, name: "lab", title: null, unread: 0, last_seq: 1 }] });
  const f = await s.frame("room.enter");
  assert.equal(f.frame.channel, CH);
  s.reply(f, { participant_id: "me", participants: [P("me")] });
  await done;
  const added = room.waitFor("participant_added");
  s.push({ event: "participant_added", channel: CH, participant: P("p2", "grace") });
  assert.equal((await added).user, "grace");
  client.close();
});

test("stream writer: a credit before the open reply is kept, writes stay within credit in chunks of at most 64 KiB, and wait for more", async () => {
  const { client, s } = await connected();
  await entered(client, s, [P("p2", "grace")]);
  const room = client.room(CH);
  const opening = room.messaging.createStream("p2", { name: "x" });
  const open = await s.frame("stream.open");
  assert.equal(open.frame.to, "p2");
  assert.deepEqual(open.frame.header, { name: "x" });
  // The server announces the reader's credit before it answers stream.open.
  s.push({ event: "stream_credit", stream_id: "st1", bytes: 100_000 });
  s.reply(open, { stream_id: "st1" });
  const w = await opening;
  const data = new Uint8Array(250_000).map((_, i) => i % 251);
  let done = false;
  const writing = w.write(data).then(() => (done = true));
  // 100,000 bytes of credit: one 64 KiB chunk and one of the rest.
  const c0 = await s.frame("stream.chunk", 0);
  const c1 = await s.frame("stream.chunk", 1);
  assert.equal(c0.bytes?.length, CHUNK_BYTES);
  assert.equal(c1.bytes?.length, 100_000 - CHUNK_BYTES);
  s.reply(c0);
  s.reply(c1);
  await tick();
  assert.equal(s.frames("stream.chunk").length, 2, "no chunk beyond the credit");
  assert.equal(w.credit, 0);
  assert.equal(done, false);
  // More credit: the writer continues.
  s.push({ event: "stream_credit", stream_id: "st1", bytes: 200_000 });
  const c2 = await s.frame("stream.chunk", 2);
  const c3 = await s.frame("stream.chunk", 3);
  const c4 = await s.frame("stream.chunk", 4);
  for (const c of [c2, c3, c4]) s.reply(c);
  await writing;
  const sent = s.frames("stream.chunk").map((c) => c.bytes as Uint8Array);
  assert.equal(sent.reduce((n, b) => n + b.length, 0), data.length);
  assert.deepEqual(Buffer.concat(sent), Buffer.from(data));
  assert.equal(w.bytesSent, data.length);
  assert.equal(w.credit, 300_000 - data.length);
  assert.ok(w.creditWaits >= 1);
  for (const c of s.frames("stream.chunk")) assert.equal(c.frame.stream_id, "st1");
  const closing = w.close();
  s.reply(await s.frame("stream.close"));
  await closing;
  client.close();
});

test("stream writer: the reader closing or aborting fails the waiting write; a chunk refused fails it too", async () => {
  const { client, s } = await connected();
  await entered(client, s, [P("p2")]);
  const m = client.room(CH).messaging;
  const o = m.createStream("p2");
  s.reply(await s.frame("stream.open"), { stream_id: "st2" });
  const w = await o;
  const waiting = w.write(new Uint8Array(10));
  await tick();
  s.push({ event: "stream_aborted", stream_id: "st2", reason: "the reader left" });
  await assert.rejects(waiting, (e: unknown) => (e as { code?: string }).code === "not_found" && String((e as Error).message).includes("the reader left"));

  const o2 = m.createStream("p2");
  const open2 = await s.frame("stream.open", 1);
  s.reply(open2, { stream_id: "st3" });
  const w2 = await o2;
  s.push({ event: "stream_credit", stream_id: "st3", bytes: 10 });
  const writing = w2.write(new Uint8Array(10));
  s.fail(await s.frame("stream.chunk"), "rate_limited");
  await assert.rejects(writing, (e: unknown) => (e as { code?: string }).code === "rate_limited");
  client.close();
});

test("stream reader: chunks in order, credit granted as they are consumed (half the window at a time), not as they arrive", async () => {
  const { client, s } = await connected();
  await entered(client, s);
  const room = client.room(CH);
  const req = room.waitFor("stream");
  s.push({ event: "stream_request", stream_id: "r1", channel: CH, from: P("p2", "grace"), header: { name: "f" } });
  const incoming = await req;
  assert.equal(incoming.from.user, "grace");
  assert.deepEqual(incoming.header, { name: "f" });
  const accepting = incoming.accept({ credit: 100 });
  const acc = await s.frame("stream.accept");
  assert.deepEqual({ stream_id: acc.frame.stream_id, credit: acc.frame.credit }, { stream_id: "r1", credit: 100 });
  // A chunk that comes before the accept reply is kept.
  s.pushBinary({ event: "stream_chunk", stream_id: "r1" }, new Uint8Array(30).fill(1));
  s.reply(acc);
  const reader = await accepting;
  for (const fill of [2, 3, 4]) s.pushBinary({ event: "stream_chunk", stream_id: "r1" }, new Uint8Array(30).fill(fill));
  await tick();
  assert.equal(s.frames("stream.credit").length, 0, "nothing is granted for chunks not read");
  assert.equal(reader.buffered, 120);
  assert.deepEqual([...(await reader.read() ?? [])].slice(0, 1), [1]);
  assert.equal(s.frames("stream.credit").length, 0, "30 of 100 consumed: below half the window");
  await reader.read();
  const grant = await s.frame("stream.credit");
  assert.deepEqual({ stream_id: grant.frame.stream_id, bytes: grant.frame.bytes }, { stream_id: "r1", bytes: 60 });
  s.reply(grant);
  s.push({ event: "stream_closed", stream_id: "r1" });
  const rest: number[] = [];
  for await (const c of reader) rest.push(c[0] ?? -1);
  assert.deepEqual(rest, [3, 4]);
  assert.equal(reader.bytesConsumed, 120);
  client.close();
});

test("a stream request with no stream listener is rejected at once", async () => {
  const { client, s } = await connected();
  await entered(client, s);
  s.push({ event: "stream_request", stream_id: "r9", channel: CH, from: P("p2"), header: {} });
  const rej = await s.frame("stream.reject");
  assert.equal(rej.frame.stream_id, "r9");
  client.close();
});

test("room messages: an attachment sent as a binary frame, one received from a binary frame", async () => {
  const { client, s } = await connected();
  await entered(client, s, [P("p2", "grace")]);
  const room = client.room(CH);
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  const sending = room.messaging.sendMessage("p2", "file", { name: "a.bin" }, bytes);
  const f = await s.frame("room.send");
  assert.deepEqual({ to: f.frame.to, type: f.frame.type, message: f.frame.message, channel: f.frame.channel }, { to: "p2", type: "file", message: { name: "a.bin" }, channel: CH });
  assert.deepEqual([...(f.bytes ?? [])], [...bytes]);
  s.reply(f);
  await sending;
  const bc = room.messaging.broadcastMessage("chat", { text: "hi" });
  const b = await s.frame("room.broadcast");
  assert.equal(b.bytes, undefined, "no attachment: a text frame");
  s.reply(b);
  await bc;

  const got: RoomMessage[] = [];
  room.on("message", (m) => got.push(m));
  s.pushBinary({ event: "room_message", channel: CH, from: P("p2", "grace"), type: "file", message: { n: 1 } }, new Uint8Array([9, 8, 7]));
  s.push({ event: "room_message", channel: CH, from: P("p2", "grace"), type: "chat", message: { text: "yo" } });
  // Another channel's room message is not this room's.
  s.push({ event: "room_message", channel: "0190f000-0000-7000-8000-000000000002", from: P("p2"), type: "chat", message: {} });
  assert.equal(got.length, 2);
  assert.deepEqual([...(got[0]?.attachment ?? [])], [9, 8, 7]);
  assert.deepEqual(got[0]?.message, { n: 1 });
  assert.equal(got[1]?.attachment, undefined);
  client.close();
});

test("presence rules: update of an unknown participant adds it, removal of an unknown one is nothing, events before the enter reply follow its list", async () => {
  const { client, s } = await connected();
  const room = client.room(CH);
  const seen: string[] = [];
  room.on("participant_added", (p) => seen.push(`+${p.participant_id}`));
  room.on("participant_updated", (p) => seen.push(`~${p.participant_id}`));
  room.on("participant_removed", (p) => seen.push(`-${p.participant_id}`));
  const entering = room.enter({});
  const f = await s.frame("room.enter");
  // Before the reply: p3 enters, p2 (in the reply's list) leaves.
  s.push({ event: "participant_added", channel: CH, participant: P("p3") });
  s.push({ event: "participant_removed", channel: CH, participant: P("p2") });
  s.reply(f, { participant_id: "me", participants: [P("me"), P("p2")] });
  await entering;
  assert.deepEqual(room.remoteParticipants.map((p) => p.participant_id), ["p3"]);
  s.push({ event: "participant_updated", channel: CH, participant: P("p4", "p4", { x: 1 }) });
  s.push({ event: "participant_removed", channel: CH, participant: P("p9") });
  s.push({ event: "participant_updated", channel: CH, participant: P("p3", "p3", { y: 2 }) });
  // About ourselves: ignored.
  s.push({ event: "participant_updated", channel: CH, participant: P("me") });
  assert.deepEqual(seen, ["+p3", "-p2", "+p4", "~p3"]);
  assert.equal(room.presenceCount, 3);
  client.close();
});

test("offline: a room request fails at once; in flight when the socket drops it fails; the room is entered again with a diff", async () => {
  const { client, s } = await connected();
  await entered(client, s, [P("p2"), P("p3")]);
  const room = client.room(CH);
  const inFlight = room.messaging.broadcastMessage("x", {});
  await s.frame("room.broadcast");
  const events: string[] = [];
  room.on("disconnected", () => events.push("disconnected"));
  room.on("participant_added", (p) => events.push(`+${p.participant_id}`));
  room.on("participant_removed", (p) => events.push(`-${p.participant_id}`));
  room.on("participant_updated", (p) => events.push(`~${p.participant_id}`));
  s.drop(1012, "restarting");
  await assert.rejects(inFlight, (e: unknown) => e instanceof DisconnectedError);
  await tick();
  assert.equal(room.entered, false);
  await assert.rejects(room.messaging.broadcastMessage("y", {}), (e: unknown) => e instanceof DisconnectedError);
  const s2 = await handshake(1);
  const again = await s2.frame("room.enter");
  assert.deepEqual(again.frame.attributes, { a: 1 }, "the same attributes");
  s2.reply(again, { participant_id: "me2", participants: [P("me2"), P("p3", "p3", { z: 1 }), P("p5")] });
  await room.waitFor("entered");
  assert.equal(room.participantId, "me2");
  assert.deepEqual(events, ["disconnected", "-p2", "~p3", "+p5"]);
  // Left on purpose: not entered again after the next reconnect.
  const leaving = room.leave();
  s2.reply(await s2.frame("room.leave"));
  await leaving;
  s2.drop();
  const s3 = await handshake(2);
  await tick();
  await tick();
  assert.equal(s3.frames("room.enter").length, 0);
  client.close();
});
