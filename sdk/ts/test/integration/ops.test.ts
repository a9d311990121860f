/** Every op of PROTOCOL.md §4 (and blobs, §6) through the SDK against a real `herald serve`. */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  Herald,
  ChannelNotFoundError,
  ForbiddenError,
  InvalidNameError,
  NameTakenError,
  NotAuthorError,
  PayloadTooLargeError,
  UnauthorizedError,
  Space,
  type MessageEvent,
} from "../../src/index.js";
import { HeraldServer } from "../support/server.js";

let server: HeraldServer;
let ada: Herald;
let grace: Herald;

before(async () => {
  server = await HeraldServer.start({ args: ["--max-content-bytes", "4096"] });
  ada = await Herald.connect({ url: server.url, token: server.token("ada", { name: "Ada" }) });
  grace = await Herald.connect({ url: server.url, token: server.token("grace", { name: "Grace" }) });
});

after(async () => {
  ada?.close();
  grace?.close();
  await server?.dispose();
});

test("connect answers who we are; ping", async () => {
  assert.equal(ada.me?.user.id, "ada");
  assert.equal(ada.me?.user.name, "Ada");
  assert.equal(typeof ada.me?.conn_id, "string");
  assert.deepEqual(await ada.ping(), {});
});

test("a bad token is UnauthorizedError", async () => {
  await assert.rejects(Herald.connect({ url: server.url, token: "not.a.jwt", reconnect: false }), (e: unknown) => e instanceof UnauthorizedError);
});

test("channels: create, join, list with unread, directory, errors", async () => {
  const space = await ada.space.createChannel({ name: "ops-general", title: "General" });
  assert.equal(space.name, "ops-general");
  assert.equal(space.channel.title, "General");
  // A second create of one's own name is a harmless join.
  const again = await ada.space.createChannel("ops-general");
  assert.equal(again.id, space.id);
  await assert.rejects(grace.space.createChannel("ops-general"), (e: unknown) => e instanceof NameTakenError);
  await assert.rejects(grace.space.createChannel("Bad Name!"), (e: unknown) => e instanceof InvalidNameError);
  await assert.rejects(grace.space.joinChannel("ops-nowhere"), (e: unknown) => e instanceof ChannelNotFoundError);

  const dir = await grace.space.directory();
  assert.ok(dir.some((c) => c.name === "ops-general" && c.id === space.id));
  const joined = grace.realtime.waitFor("memberJoined", (e) => e.channel === space.id && e.user === "grace");
  const gs = await grace.space.joinChannel("ops-general");
  assert.equal(gs.id, space.id);
  assert.equal((await joined).by, "grace");

  await space.sendMessage("one");
  await space.sendMessage("two");
  const list = await grace.space.listChannels();
  const entry = list.find((c) => c.id === space.id);
  assert.equal(entry?.unread, 2);
  assert.ok((entry?.last_seq ?? 0) >= 4);

  // Invite-only: Grace cannot join until Ada adds her.
  const priv = await ada.space.createChannel({ name: "ops-invite", policy: "invite" });
  await assert.rejects(grace.space.joinChannel("ops-invite"), (e: unknown) => e instanceof ForbiddenError);
  await priv.addMember("grace");
  assert.ok((await grace.space.listChannels()).some((c) => c.id === priv.id));
  await priv.removeMember("grace");
  assert.ok(!(await grace.space.listChannels()).some((c) => c.id === priv.id));

  // Leave and delete.
  const left = ada.realtime.waitFor("memberLeft", (e) => e.channel === space.id && e.user === "grace");
  await gs.leave();
  await left;
  const deleted = ada.realtime.waitFor("channelDeleted", (e) => e.channel === priv.id);
  await priv.delete();
  await deleted;
  await assert.rejects(priv.sendMessage("gone"), (e: unknown) => e instanceof ChannelNotFoundError || e instanceof ForbiddenError);
});

test("messages: send (sender included), reply, edit, delete, idempotent client_id, history", async () => {
  const a = await ada.space.createChannel("ops-msgs");
  const g = await grace.space.joinChannel("ops-msgs");
  const seen = grace.realtime.waitFor("message", (e) => e.channel === a.id && e.message.content === "hello");
  const own = ada.realtime.waitFor("message", (e) => e.channel === a.id && e.message.content === "hello");
  const m = await a.sendMessage("hello");
  assert.equal((await seen).message.id, m.id);
  assert.equal((await own).message.id, m.id);

  const replied = ada.realtime.waitFor("reply", (e) => e.message.reply_to?.id === m.id);
  const r = await g.reply(m.id, "hi Ada");
  assert.equal((await replied).message.id, r.id);
  assert.equal(r.reply_to?.author, "ada");

  const edited = grace.realtime.waitFor("messageEdited", (e) => e.message_id === m.id);
  const e = await a.editMessage(m.id, "hello, edited");
  assert.equal(e.content, "hello, edited");
  assert.equal((await edited).content, "hello, edited");
  await assert.rejects(g.editMessage(m.id, "mine now"), (err: unknown) => err instanceof NotAuthorError);
  await assert.rejects(g.deleteMessage(m.id), (err: unknown) => err instanceof NotAuthorError);

  const first = await a.sendMessage("once", { clientId: "ops-idem-1" });
  const second = await a.sendMessage("once", { clientId: "ops-idem-1" });
  assert.equal(second.id, first.id);

  await assert.rejects(a.sendMessage("x".repeat(5000)), (err: unknown) => err instanceof PayloadTooLargeError);

  const del = grace.realtime.waitFor("messageDeleted", (ev) => ev.message_id === r.id);
  await g.deleteMessage(r.id);
  await del;

  const page = await a.history({ limit: 50 });
  const contents = page.messages.map((x) => x.content);
  assert.deepEqual(contents, ["once", "hello, edited"]);
  assert.equal(page.messages[1]?.edited_at !== undefined, true);
  assert.equal(page.has_more, false);
  // Pages: one at a time, newest first, then older with `before`.
  const p1 = await a.history({ limit: 1 });
  assert.equal(p1.has_more, true);
  const p2 = await a.history({ limit: 1, before: p1.messages[0]?.seq ?? 0 });
  assert.equal(p2.messages[0]?.id, m.id);
});

test("reactions, read receipts, typing, ephemeral", async () => {
  const a = await ada.space.createChannel("ops-signals");
  const g = await grace.space.joinChannel("ops-signals");
  const m = await a.sendMessage("react to me");

  const reacted = ada.realtime.waitFor("reaction", (e) => e.message_id === m.id);
  const rid = await g.react(m.id, "🎉");
  const ev = await reacted;
  assert.equal(ev.reaction_id, rid);
  assert.equal(ev.emoji, "🎉");
  await assert.rejects(a.unreact(rid), (e: unknown) => e instanceof NotAuthorError);
  const unreacted = ada.realtime.waitFor("reactionDeleted", (e) => e.reaction_id === rid);
  await g.unreact(rid);
  await unreacted;
  const h = await a.history({ limit: 5 });
  assert.deepEqual(h.messages[0]?.reactions, []);

  const read = ada.realtime.waitFor("messageRead", (e) => e.channel === a.id && e.user === "grace");
  await g.markRead(m.id);
  assert.equal((await read).message_id, m.id);
  const members = await a.members();
  assert.ok(members.find((x) => x.user === "grace")?.last_read ?? 0 > 0);

  const typing = ada.realtime.waitFor("typing", (e) => e.channel === a.id);
  const typingEvents: string[] = [];
  const offTyping = g.onTyping((e) => typingEvents.push(e.user));
  await g.typing(true);
  const t = await typing;
  assert.deepEqual([t.user, t.is_typing], ["grace", true]);

  const eph = ada.realtime.waitFor("ephemeral", (e) => e.channel === a.id);
  await g.sendEphemeral("cursor", { x: 3, y: 4 });
  const e = await eph;
  assert.deepEqual([e.from, e.subject, e.data], ["grace", "cursor", { x: 3, y: 4 }]);
  offTyping();
  // Typing goes to members but the sender.
  assert.deepEqual(typingEvents, []);
});

test("pub/sub: subscribe, publish, unsubscribe; inboxes are private", async () => {
  const got: unknown[] = [];
  const off = await grace.message.subscribe("ops-cursor", (d) => got.push(d));
  const pub = grace.realtime.waitFor("publication", (e) => e.subject === "ops-cursor");
  await ada.message.publish("ops-cursor", { x: 1 });
  assert.equal((await pub).from, "ada");
  assert.deepEqual(got, [{ x: 1 }]);
  off();
  // After the unsubscribe is processed (a ping behind it on the same connection), nothing arrives.
  await grace.ping();
  await ada.message.publish("ops-cursor", { x: 2 });
  await ada.ping();
  await grace.ping();
  assert.deepEqual(got, [{ x: 1 }]);
  await assert.rejects(grace.message.subscribe("user:ada", () => {}), (e: unknown) => e instanceof ForbiddenError);
});

test("files: putFile and getFile round-trip bytes; non-members are refused", async () => {
  const a = await ada.space.createChannel("ops-files");
  const bytes = new Uint8Array(100_000).map((_, i) => (i * 7) % 251);
  const { blob_id, size } = await a.putFile(bytes);
  assert.equal(size, bytes.length);
  assert.match(blob_id, /^[0-9a-f]{64}$/);
  assert.deepEqual(await a.getFile(blob_id), bytes);
  // Grace holds a handle on Ada's channel without being a member.
  const asGrace = new Space(grace.connection, a.channel);
  await assert.rejects(asGrace.getFile(blob_id), (e: unknown) => e instanceof ForbiddenError || e instanceof ChannelNotFoundError);
});

test("pipelining: many sends without waiting arrive in order", async () => {
  const a = await ada.space.createChannel("ops-pipe");
  const seqs: number[] = [];
  const off = a.onMessage((m) => seqs.push(m.seq));
  const sent = await Promise.all(Array.from({ length: 50 }, (_, i) => a.sendMessage(`n${i}`)));
  assert.deepEqual(
    sent.map((m) => m.content),
    Array.from({ length: 50 }, (_, i) => `n${i}`),
  );
  const ordered = [...seqs].sort((x, y) => x - y);
  assert.deepEqual(seqs, ordered);
  assert.equal(seqs.length, 50);
  off();
});

test("events are what the client verified: every message event carries a chain link", async () => {
  const a = await ada.space.createChannel("ops-chain");
  const events: MessageEvent[] = [];
  const off = a.onMessage((_m, e) => events.push(e));
  await a.sendMessage("x");
  await a.sendMessage("y");
  off();
  assert.equal(events.length, 2);
  assert.equal(events[1]?.prev_hash, events[0]?.hash);
  assert.equal(ada.connection.session.verifier.head(a.id)?.hash, events[1]?.hash);
});
