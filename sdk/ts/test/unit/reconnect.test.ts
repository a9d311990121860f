/**
 * The client against a fake socket: reconnect with resume points, duplicates of a replay
 * dropped, sends with a client_id resent (others failed), resubscribe, refusals and chain errors.
 */
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { Herald, ChannelNotFoundError, DisconnectedError, UnauthorizedError, ChainError, type MessageEvent } from "../../src/index.js";
import { FakeSocket } from "../support/fake-socket.js";
import { FakeLog } from "../support/chain.js";

beforeEach(() => FakeSocket.reset());

const opts = {
  url: "http://127.0.0.1:1",
  token: "t0",
  WebSocket: FakeSocket,
  backoff: { initialMs: 5, maxMs: 20 },
  requestTimeoutMs: 2000,
};

/** Connects a client through socket number `n`, answering `connect` and the seeding `channel.list`. */
async function handshake(n: number, channels: Array<{ id: string; last_seq: number }> = []) {
  const s = await FakeSocket.next(n);
  s.open();
  const c = await s.frame("connect");
  s.reply(c, { conn_id: `conn${n}`, user: { id: "ada" } });
  const list = await s.frame("channel.list");
  s.reply(list, { channels: channels.map((x) => ({ ...x, name: null, title: null, unread: 0 })) });
  return { s, connect: c };
}

test("resume points: seeded from channel.list for quiet channels, then the verified head", async () => {
  const clientP = Herald.connect(opts);
  const { s } = await handshake(0, [{ id: "quiet", last_seq: 7 }, { id: "busy", last_seq: 0 }]);
  const client = await clientP;
  const busy = new FakeLog("busy");
  const got: string[] = [];
  client.realtime.on("message", (e: MessageEvent) => got.push(e.message.content));
  s.push(busy.created());
  s.push(busy.message("one"));
  const two = busy.message("two");
  s.push(two);
  s.drop(1012, "restarting");
  const { s: s2, connect } = await handshake(1);
  assert.deepEqual(connect.resume, { quiet: 7, busy: 3 });
  assert.equal(connect.token, "t0");
  // A duplicate of the head (3) is dropped, 4 is delivered.
  s2.push(two);
  s2.push(busy.message("three"));
  assert.deepEqual(got, ["one", "two", "three"]);
  client.close();
});

test("a replayed entry at or below the head is dropped; a tampered one is a ChainError", async () => {
  const clientP = Herald.connect(opts);
  const { s } = await handshake(0);
  const client = await clientP;
  const log = new FakeLog("c");
  const first = log.created();
  const m1 = log.message("hi");
  const got: number[] = [];
  const errors: ChainError[] = [];
  client.realtime.on("message", (e: MessageEvent) => got.push(e.seq));
  client.realtime.on("chainError", (e) => errors.push(e));
  s.push(first);
  s.push(m1);
  s.push(m1);
  assert.deepEqual(got, [2]);
  const m2 = log.message("real");
  s.push({ ...m2, message: { ...m2.message, content: "forged" } });
  assert.equal(got.length, 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]?.kind, "content_mismatch");
  client.close();
});

test("on a drop, a send with client_id is resent after the reconnect and answered once; others fail", async () => {
  const clientP = Herald.connect(opts);
  const { s } = await handshake(0, [{ id: "c", last_seq: 1 }]);
  const client = await clientP;
  const space = await (async () => {
    const p = client.space.joinChannel("general");
    const j = await s.frame("channel.join");
    s.reply(j, { channel: { id: "c", name: "general", title: null, encrypted: false, policy: "open", created_by: "ada", created_at: "", last_seq: 1 } });
    return p;
  })();
  const sendP = space.sendMessage("survives");
  const historyP = space.history({ limit: 10 });
  const send = await s.frame("message.send");
  await s.frame("history");
  assert.equal(typeof send.client_id, "string");
  s.drop(1006);
  await assert.rejects(historyP, (e: unknown) => e instanceof DisconnectedError);
  const { s: s2 } = await handshake(1);
  const resent = await s2.frame("message.send");
  assert.equal(resent.client_id, send.client_id);
  assert.equal(resent.content, "survives");
  s2.reply(resent, { message: { id: "m", seq: 2, author: "ada", type: "chat.text", content: "survives", ts: "" } });
  const m = await sendP;
  assert.equal(m.id, "m");
  client.close();
});

test("pipelined requests are matched by id, errors are typed", async () => {
  const clientP = Herald.connect(opts);
  const { s } = await handshake(0);
  const client = await clientP;
  const a = client.space.joinChannel("nope");
  const b = client.ping();
  const join = await s.frame("channel.join");
  const ping = await s.frame("ping");
  s.reply(ping, {});
  s.push({ id: join.id, error: { code: "channel_not_found", message: "no channel nope" } });
  await b;
  await assert.rejects(a, (e: unknown) => e instanceof ChannelNotFoundError && e.message === "no channel nope");
  client.close();
});

test("subscriptions are renewed after a reconnect", async () => {
  const clientP = Herald.connect(opts);
  const { s } = await handshake(0);
  const client = await clientP;
  const got: unknown[] = [];
  const subP = client.message.subscribe("cursors", (d) => got.push(d));
  s.reply(await s.frame("subscribe"));
  await subP;
  s.drop(1006);
  const { s: s2 } = await handshake(1);
  const again = await s2.frame("subscribe");
  assert.equal(again.subject, "cursors");
  s2.reply(again);
  s2.push({ event: "publication", subject: "cursors", from: "grace", data: { x: 1 } });
  s2.push({ event: "publication", subject: "other", from: "grace", data: { x: 2 } });
  assert.deepEqual(got, [{ x: 1 }]);
  client.close();
});

test("a refused token rejects connect with UnauthorizedError and does not retry", async () => {
  const clientP = Herald.connect(opts);
  const s = await FakeSocket.next(0);
  s.open();
  const c = await s.frame("connect");
  s.push({ id: c.id, error: { code: "unauthorized", message: "token expired" } });
  await assert.rejects(clientP, (e: unknown) => e instanceof UnauthorizedError);
  assert.equal(FakeSocket.all.length, 1);
});

test("with a tokenProvider, every reconnect asks for a fresh token", async () => {
  let n = 0;
  const clientP = Herald.connect({ ...opts, token: undefined, tokenProvider: () => `tok${++n}` });
  const { connect } = await handshake(0);
  const client = await clientP;
  assert.equal(connect.token, "tok1");
  FakeSocket.all[0]?.drop(4401, "token expired");
  const { connect: c2 } = await handshake(1);
  assert.equal(c2.token, "tok2");
  const r = client.refreshToken();
  const s = FakeSocket.all[1];
  assert.ok(s);
  const f = await s.frame("auth.refresh");
  assert.equal(f.token, "tok3");
  s.reply(f, { expires_at: "2030-01-01T00:00:00.000Z" });
  assert.equal((await r).expires_at, "2030-01-01T00:00:00.000Z");
  client.close();
});

test("keepalive: a ping without an answer drops the socket and reconnects", async () => {
  const clientP = Herald.connect({ ...opts, pingIntervalMs: 30 });
  const { s } = await handshake(0);
  const client = await clientP;
  const reconnecting = client.realtime.waitFor("reconnecting", () => true, 2000);
  await s.frame("ping");
  // No pong: the client gives up on this socket.
  await reconnecting;
  await handshake(1);
  client.close();
});
