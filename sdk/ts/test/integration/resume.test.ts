/**
 * Resume across a server restart: every message posted while the client was away (in a busy
 * channel and in one that stayed quiet this session) arrives exactly once, in order, and a
 * send made while offline is delivered once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Herald, type MessageEvent } from "../../src/index.js";
import { HeraldServer } from "../support/server.js";

async function post(server: HeraldServer, token: string, channel: string, content: string): Promise<void> {
  const res = await fetch(`${server.url}/v1/channels/${channel}/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ content }),
  });
  assert.equal(res.status, 201, await res.text());
}

test("resume across a restart: no gap, no duplicate, quiet channels included", async () => {
  const server = await HeraldServer.start();
  const graceToken = server.token("grace");
  const adaToken = server.token("ada");
  try {
    // Set up before Ada's session: "quiet" will deliver nothing to her until the outage.
    const setup = await Herald.connect({ url: server.url, token: adaToken });
    const busy0 = await setup.space.createChannel("busy");
    const quiet0 = await setup.space.createChannel("quiet");
    setup.close();
    const g = await Herald.connect({ url: server.url, token: graceToken });
    await g.space.joinChannel("busy");
    await g.space.joinChannel("quiet");
    g.close();

    // Ada's session; a long first backoff keeps her away while the restarted server takes posts.
    const ada = await Herald.connect({ url: server.url, token: adaToken, backoff: { initialMs: 1500, maxMs: 3000 } });
    const got = new Map<string, string[]>();
    ada.realtime.on("message", (e: MessageEvent) => {
      const list = got.get(e.channel) ?? [];
      list.push(e.message.content);
      got.set(e.channel, list);
    });
    const chainErrors: unknown[] = [];
    ada.realtime.on("chainError", (e) => chainErrors.push(e));
    const busy = await ada.space.joinChannel("busy");
    const b3 = ada.realtime.waitFor("message", (e) => e.message.content === "b3");
    for (const c of ["b1", "b2", "b3"]) await post(server, graceToken, busy.id, c);
    await b3;

    const disconnected = ada.realtime.waitFor("disconnected");
    await server.restart();
    await disconnected;
    assert.equal(ada.connected, false);
    // Posted while Ada is away.
    for (const c of ["b4", "b5"]) await post(server, graceToken, busy0.id, c);
    for (const c of ["q1", "q2"]) await post(server, graceToken, quiet0.id, c);
    // Sent by Ada while offline: queued, sent once after the reconnect.
    const offlineSend = busy.sendMessage("ada-offline");

    await ada.realtime.waitFor("connected", () => true, 15_000);
    await offlineSend;
    // A post to each channel after the reconnect: once it is here, everything before it is.
    const lastQuiet = ada.realtime.waitFor("message", (e) => e.message.content === "q3");
    const lastBusy = ada.realtime.waitFor("message", (e) => e.message.content === "b6");
    await post(server, graceToken, quiet0.id, "q3");
    await post(server, graceToken, busy0.id, "b6");
    await Promise.all([lastQuiet, lastBusy]);

    // Exactly the log, in its order (ada-offline may land before or after b4/b5, depending on
    // when the reconnect won the race with the posts; never twice, never missing).
    const hist = await busy.history({ limit: 50 });
    const log = hist.messages.map((m) => m.content).reverse();
    assert.deepEqual([...log].sort(), ["ada-offline", "b1", "b2", "b3", "b4", "b5", "b6"]);
    assert.deepEqual(got.get(busy0.id), log);
    assert.deepEqual(got.get(quiet0.id), ["q1", "q2", "q3"]);
    assert.deepEqual(chainErrors, []);
    ada.close();
  } finally {
    await server.dispose();
  }
});
