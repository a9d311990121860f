/**
 * Private channels (PROTOCOL.md §9, docs §K/§P) against a real `herald serve` and a tiny Node
 * backend that signs with `authorizePrivateChannel` (the app secret from `herald secret
 * show`): the right signature joins; a wrong, missing, another connection's or another
 * channel's signature is forbidden; after a reconnect the new conn_id is signed.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ForbiddenError, Herald } from "../../src/index.js";
import { authorizePrivateChannel } from "../../src/node.js";
import { HeraldServer } from "../support/server.js";
import { appSecret, tokenOf } from "../support/rooms-helpers.js";

let server: HeraldServer;
let secret = "";
let backend: Server;
let authUrl = "";
/** Every request the backend signed: `user socket_id channel_name`. */
const signed: string[] = [];
const clients: Herald[] = [];

/**
 * The app's backend, in the shape of examples/auth-backend: the user its session layer put in
 * `X-User` may join `private-<user>-…` channels only.
 */
function startBackend(): Promise<void> {
  backend = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const user = req.headers["x-user"];
      let body: { socket_id?: unknown; channel_name?: unknown };
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof body;
      } catch {
        res.writeHead(400).end();
        return;
      }
      if (req.method !== "POST" || req.url !== "/realtime/auth" || typeof user !== "string" || typeof body.socket_id !== "string" || typeof body.channel_name !== "string") {
        res.writeHead(400).end();
        return;
      }
      if (!body.channel_name.startsWith(`private-${user}-`)) {
        res.writeHead(403, { "content-type": "application/json" }).end(JSON.stringify({ error: "not yours" }));
        return;
      }
      signed.push(`${user} ${body.socket_id} ${body.channel_name}`);
      const auth = authorizePrivateChannel({ secret, socketId: body.socket_id, channelName: body.channel_name });
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ auth }));
    });
  });
  return new Promise((resolve) => {
    backend.listen(0, "127.0.0.1", () => {
      authUrl = `http://127.0.0.1:${(backend.address() as AddressInfo).port}/realtime/auth`;
      resolve();
    });
  });
}

async function connect(sub: string, extra: Partial<Parameters<typeof Herald.connect>[0]> = {}): Promise<Herald> {
  const c = await Herald.connect({ url: server.url, token: tokenOf(server, sub), backoff: { initialMs: 50, maxMs: 500 }, ...extra });
  clients.push(c);
  return c;
}

before(async () => {
  server = await HeraldServer.start();
  secret = appSecret(server);
  assert.match(secret, /^[0-9a-f]{64}$/);
  await startBackend();
});

after(async () => {
  for (const c of clients) c.close();
  await new Promise((r) => backend?.close(r));
  await server?.dispose();
});

const isForbidden = (e: unknown) => e instanceof ForbiddenError;

test("the right signature from the backend (authEndpoint) joins; the channel works", async () => {
  const ada = await connect("ada", { authEndpoint: authUrl, authHeaders: { "x-user": "ada" } });
  const space = await ada.space.joinChannel("private-ada-notes");
  assert.equal(space.name, "private-ada-notes");
  assert.equal(space.channel.policy, "invite", "the first signed join creates it invite-only");
  assert.deepEqual(signed.at(-1), `ada ${ada.me?.conn_id} private-ada-notes`);
  const m = await space.sendMessage("only for those the backend let in");
  assert.equal(m.author, "ada");
  assert.ok((await ada.space.listChannels()).some((c) => c.id === space.id));
});

test("the backend refusing is ForbiddenError, and the server never saw a join", async () => {
  const ada = await connect("ada", { authEndpoint: authUrl, authHeaders: { "x-user": "ada" } });
  await assert.rejects(ada.space.joinChannel("private-grace-diary"), (e: unknown) => isForbidden(e) && /HTTP 403/.test((e as Error).message));
  assert.ok(!(await ada.space.directory()).some((c) => c.name === "private-grace-diary"));
});

test("a wrong, missing, another connection's or another channel's signature is forbidden", async () => {
  const grace = await connect("grace");
  const name = "private-grace-wrong";
  // Missing: no authEndpoint, no authorizer: the join goes without `auth`.
  await assert.rejects(grace.space.joinChannel(name), isForbidden);
  // Wrong: 64 hex digits of nothing, and the right formula under another key.
  await assert.rejects(grace.space.joinPrivate(name, "0".repeat(64)), isForbidden);
  await assert.rejects(grace.space.joinPrivate(name, authorizePrivateChannel({ secret: "not the app secret", socketId: String(grace.me?.conn_id), channelName: name })), isForbidden);
  // Not even hex.
  await assert.rejects(grace.space.joinPrivate(name, "not-hex"), isForbidden);
  // Another connection's: signed for Ada's conn_id.
  const ada = await connect("ada");
  await assert.rejects(grace.space.joinPrivate(name, authorizePrivateChannel({ secret, socketId: String(ada.me?.conn_id), channelName: name })), isForbidden);
  // Another channel's.
  await assert.rejects(grace.space.joinPrivate(name, authorizePrivateChannel({ secret, socketId: String(grace.me?.conn_id), channelName: "private-grace-other" })), isForbidden);
  // An authorizer answering garbage is forbidden by the server too.
  const g2 = await connect("grace", { authorizer: () => "ff".repeat(32) });
  await assert.rejects(g2.space.joinChannel(name), isForbidden);
  // And the right one, computed here, joins.
  const ok = await grace.space.joinPrivate(name, authorizePrivateChannel({ secret, socketId: String(grace.me?.conn_id), channelName: name }));
  assert.equal(ok.name, name);
  // Creating one with channel.create is refused to everyone.
  await assert.rejects(grace.space.createChannel("private-grace-created"), isForbidden);
});

test("after a reconnect the new conn_id is signed; membership stays", async () => {
  const ada = await connect("ada", { authEndpoint: authUrl, authHeaders: { "x-user": "ada" } });
  const first = await ada.space.joinChannel("private-ada-first");
  const before = ada.me?.conn_id;
  const back = ada.realtime.waitFor("connected", () => true, 15_000);
  ada.connection.dropConnection();
  await back;
  const now = ada.me?.conn_id;
  assert.ok(now && now !== before, "a new connection id");
  // Membership is stored: the first channel is still there, no rejoin needed.
  assert.ok((await ada.space.listChannels()).some((c) => c.id === first.id));
  const second = await ada.space.joinChannel("private-ada-second");
  assert.equal(second.name, "private-ada-second");
  assert.equal(signed.at(-1), `ada ${now} private-ada-second`);
});

test("a connection lost while the backend signs: signed again for the new connection, and joined", async () => {
  let dropOnce = true;
  const asked: string[] = [];
  const holder: { c?: Herald } = {};
  const ada = await connect("ada", {
    authorizer: async ({ socketId, channelName }) => {
      asked.push(socketId);
      if (dropOnce) {
        dropOnce = false;
        holder.c?.connection.dropConnection();
      }
      return authorizePrivateChannel({ secret, socketId, channelName });
    },
  });
  holder.c = ada;
  const space = await ada.space.joinChannel("private-ada-race");
  assert.equal(space.name, "private-ada-race");
  assert.equal(asked.length, 2);
  assert.notEqual(asked[0], asked[1]);
  assert.equal(asked[1], ada.me?.conn_id);
});
