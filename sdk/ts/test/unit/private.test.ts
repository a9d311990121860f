/**
 * The backend helpers of `@herald-chat/client/node` against digests computed independently
 * (`openssl dgst -sha256 -hmac`; the first two are also the Python SDK's vectors), and the
 * client's auth endpoint / authorizer flow against a fake socket and a fake fetch: the POST's
 * shape, a re-signature when the connection changed while the backend signed.
 */
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { authorizePrivateChannel, verifyWebhook, webhookSignature, isPrivateChannel } from "../../src/node.js";
import { Herald, ForbiddenError } from "../../src/index.js";
import { BinarySocket } from "../support/rooms-fake-socket.js";

const SECRET = "s3cret-app";
// printf '%s' 'conn-1:private-ops' | openssl dgst -sha256 -hmac 's3cret-app'
const CHANNEL_SIG = "f9395d36d3204d2ce40b446d8388461b3d66e384f2d7de7308b270d398fe625d";
// printf '%s' '0190f0a1-7c2e-7d3f-9a4b-5c6d7e8f9012:private-ada-notes' | openssl dgst -sha256 -hmac 'ünïcode-secret-✓'
const UNICODE_SIG = "2e612a8c1c47b76f303dc8c5cef3a3a7c7b83847188ba052e19adfab2365d9ec";
const BODY = '{"id":"w1","event":"message"}';
// printf '%s' '{"id":"w1","event":"message"}' | openssl dgst -sha256 -hmac 's3cret-app'
const BODY_SIG = "2d060a3df10e9e0d959babd523bd65321b41d5b7a0297fe6d6ee304acf9c69d8";

test("authorizePrivateChannel is hex(HMAC-SHA256(secret, conn_id ':' channel)), the Rust formula", () => {
  assert.equal(authorizePrivateChannel({ secret: SECRET, socketId: "conn-1", channelName: "private-ops" }), CHANNEL_SIG);
  assert.equal(authorizePrivateChannel({ secret: Buffer.from(SECRET), socketId: "conn-1", channelName: "private-ops" }), CHANNEL_SIG);
  assert.equal(
    authorizePrivateChannel({ secret: "ünïcode-secret-✓", socketId: "0190f0a1-7c2e-7d3f-9a4b-5c6d7e8f9012", channelName: "private-ada-notes" }),
    UNICODE_SIG,
    "the key is the secret's UTF-8 bytes",
  );
  assert.notEqual(authorizePrivateChannel({ secret: SECRET, socketId: "conn-2", channelName: "private-ops" }), CHANNEL_SIG);
  assert.notEqual(authorizePrivateChannel({ secret: SECRET, socketId: "conn-1", channelName: "private-dev" }), CHANNEL_SIG);
  assert.throws(() => authorizePrivateChannel({ secret: SECRET, socketId: "", channelName: "private-ops" }), TypeError);
  assert.ok(isPrivateChannel("private-ops"));
  assert.ok(!isPrivateChannel("ops"));
});

test("verifyWebhook accepts the signature of the exact body and refuses everything else", () => {
  const header = `sha256=${BODY_SIG}`;
  assert.equal(webhookSignature(SECRET, BODY), header);
  assert.ok(verifyWebhook({ secret: SECRET, body: BODY, signature: header }));
  assert.ok(verifyWebhook({ secret: SECRET, body: Buffer.from(BODY), signature: header }));
  assert.ok(verifyWebhook({ secret: SECRET, body: BODY, signature: `sha256=${BODY_SIG.toUpperCase()}` }), "hex in either case, as the Rust check");
  assert.ok(!verifyWebhook({ secret: SECRET, body: `${BODY} `, signature: header }));
  assert.ok(!verifyWebhook({ secret: "other", body: BODY, signature: header }));
  assert.ok(!verifyWebhook({ secret: SECRET, body: BODY, signature: BODY_SIG }), "without sha256=");
  assert.ok(!verifyWebhook({ secret: SECRET, body: BODY, signature: `sha256=${BODY_SIG.slice(0, 62)}` }));
  assert.ok(!verifyWebhook({ secret: SECRET, body: BODY, signature: `sha256=${"z".repeat(64)}` }));
  assert.ok(!verifyWebhook({ secret: SECRET, body: BODY, signature: null }));
  assert.ok(!verifyWebhook({ secret: SECRET, body: BODY, signature: "" }));
});

beforeEach(() => BinarySocket.reset());

async function handshake(n: number): Promise<BinarySocket> {
  const s = await BinarySocket.next(n);
  s.open();
  s.reply(await s.frame("connect"), { conn_id: `conn${n}`, user: { id: "ada" } });
  s.reply(await s.frame("channel.list"), { channels: [] });
  return s;
}

const CHANNEL = { id: "0190f000-0000-7000-8000-00000000000a", name: "private-ops", title: null, encrypted: false, policy: "invite", created_by: "ada", created_at: "2026-01-01T00:00:00.000Z", last_seq: 2 };

test("authEndpoint: POST {socket_id, channel_name} with the app's headers; its auth goes into channel.join", async () => {
  const posts: Array<{ url: string; init: RequestInit }> = [];
  const fetchFn = (async (url: string, init: RequestInit) => {
    posts.push({ url, init });
    return new Response(JSON.stringify({ auth: "a".repeat(64) }), { status: 200, headers: { "content-type": "application/json" } });
  }) as unknown as typeof fetch;
  const p = Herald.connect({ url: "http://127.0.0.1:1", token: "t", WebSocket: BinarySocket, fetch: fetchFn, authEndpoint: "http://app.example/realtime/auth", authHeaders: async () => ({ "x-user": "ada" }) });
  const s = await handshake(0);
  const client = await p;
  const joining = client.space.joinChannel("private-ops");
  const join = await s.frame("channel.join");
  assert.deepEqual({ channel: join.frame.channel, auth: join.frame.auth }, { channel: "private-ops", auth: "a".repeat(64) });
  s.reply(join, { channel: CHANNEL });
  assert.equal((await joining).id, CHANNEL.id);
  assert.equal(posts.length, 1);
  assert.equal(posts[0]?.url, "http://app.example/realtime/auth");
  assert.equal(posts[0]?.init.method, "POST");
  assert.deepEqual(JSON.parse(String(posts[0]?.init.body)), { socket_id: "conn0", channel_name: "private-ops" });
  const headers = posts[0]?.init.headers as Record<string, string>;
  assert.equal(headers["x-user"], "ada");
  assert.equal(headers["content-type"], "application/json");
  client.close();
});

test("a backend refusal is ForbiddenError and sends no join; a plain channel never asks the backend", async () => {
  let calls = 0;
  const fetchFn = (async () => {
    calls += 1;
    return new Response("no", { status: 403 });
  }) as unknown as typeof fetch;
  const p = Herald.connect({ url: "http://127.0.0.1:1", token: "t", WebSocket: BinarySocket, fetch: fetchFn, authEndpoint: "http://app.example/auth" });
  const s = await handshake(0);
  const client = await p;
  await assert.rejects(client.space.joinChannel("private-ops"), (e: unknown) => e instanceof ForbiddenError && /HTTP 403/.test(e.message));
  assert.equal(s.frames("channel.join").length, 0);
  const plain = client.space.joinChannel("ops");
  const j = await s.frame("channel.join");
  assert.equal(j.frame.auth, undefined);
  s.reply(j, { channel: { ...CHANNEL, name: "ops" } });
  await plain;
  assert.equal(calls, 1);
  client.close();
});

test("the connection changed while the backend signed: it is signed again for the new conn_id", async () => {
  const asked: string[] = [];
  let s0: BinarySocket | undefined;
  const p = Herald.connect({
    url: "http://127.0.0.1:1",
    token: "t",
    WebSocket: BinarySocket,
    backoff: { initialMs: 5, maxMs: 10 },
    authorizer: async ({ socketId, channelName }) => {
      asked.push(`${socketId}:${channelName}`);
      // The first time, the socket drops while the backend works.
      if (asked.length === 1) s0?.drop(1006, "network");
      return { auth: `sig-for-${socketId}` };
    },
  });
  s0 = await handshake(0);
  const client = await p;
  const joining = client.space.joinChannel("private-ops");
  const s1 = await handshake(1);
  const join = await s1.frame("channel.join");
  assert.equal(join.frame.auth, "sig-for-conn1");
  s1.reply(join, { channel: CHANNEL });
  await joining;
  assert.deepEqual(asked, ["conn0:private-ops", "conn1:private-ops"]);
  assert.equal(s0.frames("channel.join").length, 0, "the stale signature was never sent");
  client.close();
});
