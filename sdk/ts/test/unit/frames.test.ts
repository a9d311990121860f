import { test } from "node:test";
import assert from "node:assert/strict";
import {
  encodeBinaryFrame,
  encodeRequest,
  entryOfEvent,
  parseBinaryFrame,
  parseServerFrame,
  parseTsMs,
  type LogEvent,
} from "../../src/frames.js";
import {
  ChannelNotFoundError,
  errorFromDetail,
  NotAuthorError,
  RateLimitedError,
  ServerError,
  StaleEpochError,
} from "../../src/errors.js";
import { endpoints } from "../../src/client.js";
import { jwtExpMs, refreshDelayMs } from "../../src/token.js";

test("requests are {id, op, ...fields}", () => {
  assert.deepEqual(JSON.parse(encodeRequest(3, "message.send", { channel: "c", content: "hi" })), {
    id: 3,
    op: "message.send",
    channel: "c",
    content: "hi",
  });
});

test("replies, errors and events are told apart; garbage is null", () => {
  assert.deepEqual(parseServerFrame('{"id":1,"ok":{"conn_id":"x"}}'), { kind: "reply", reply: { id: 1, ok: { conn_id: "x" } } });
  const err = parseServerFrame('{"id":2,"error":{"code":"rate_limited","message":"slow down","retry_after_ms":40}}');
  assert.deepEqual(err, {
    kind: "reply",
    reply: { id: 2, error: { code: "rate_limited", message: "slow down", retry_after_ms: 40 } },
  });
  assert.deepEqual(parseServerFrame('{"id":null,"error":{"code":"bad_request","message":"?"}}'), {
    kind: "reply",
    reply: { id: null, error: { code: "bad_request", message: "?" } },
  });
  const ev = parseServerFrame('{"event":"typing","channel":"c","user":"ada","is_typing":true}');
  assert.equal(ev?.kind, "event");
  for (const bad of ["", "nope", "[]", "42", '{"hello":1}', "null"]) assert.equal(parseServerFrame(bad), null, bad);
});

test("error codes map to typed errors", () => {
  const e = errorFromDetail({ code: "channel_not_found", message: "no such channel" });
  assert.ok(e instanceof ChannelNotFoundError && e instanceof ServerError);
  assert.equal(e.code, "channel_not_found");
  assert.ok(errorFromDetail({ code: "not_author", message: "" }) instanceof NotAuthorError);
  assert.ok(errorFromDetail({ code: "stale_epoch", message: "" }) instanceof StaleEpochError);
  const r = errorFromDetail({ code: "rate_limited", message: "", retry_after_ms: 12 });
  assert.ok(r instanceof RateLimitedError);
  assert.equal(r.retryAfterMs, 12);
  const unknown = errorFromDetail({ code: "brand_new", message: "x" });
  assert.equal(unknown.constructor, ServerError);
});

test("binary frames round-trip and refuse lengths beyond the frame", () => {
  const f = encodeBinaryFrame({ id: 1, op: "room.send" }, new Uint8Array([1, 2, 3]));
  const p = parseBinaryFrame(f);
  assert.deepEqual(p?.header, { id: 1, op: "room.send" });
  assert.deepEqual([...(p?.bytes ?? [])], [1, 2, 3]);
  const bad = new Uint8Array(f);
  new DataView(bad.buffer).setUint32(0, 1_000_000);
  assert.equal(parseBinaryFrame(bad), null);
  assert.equal(parseBinaryFrame(encodeBinaryFrame({}, new Uint8Array()).subarray(0, 3)), null);
  const notObject = new Uint8Array([0, 0, 0, 2, 0x5b, 0x5d]);
  assert.equal(parseBinaryFrame(notObject), null);
});

test("log events map to chain entries (ref and content per kind)", () => {
  const meta = { channel: "c", seq: 2, hash: "h", prev_hash: "p", ts: "2026-01-01T00:00:00.123Z", author: "ada", salt: "s", content_hash: "ch" };
  const reply = entryOfEvent({
    event: "message",
    ...meta,
    message: { id: "m", seq: 2, author: "ada", type: "chat.text", content: "yo", reply_to: { id: "m0", author: "g", content: "x", edited: false }, ts: meta.ts },
  } as LogEvent);
  assert.equal(reply.ref, "m0");
  assert.equal(reply.content, "yo");
  assert.equal(reply.ts_ms, Date.UTC(2026, 0, 1, 0, 0, 0, 123));
  const reaction = entryOfEvent({ event: "reaction", ...meta, reaction_id: "r", message_id: "m", emoji: "👍" } as LogEvent);
  assert.deepEqual([reaction.kind, reaction.ref, reaction.content], ["reaction", "m", "👍"]);
  const rd = entryOfEvent({ event: "reaction_deleted", ...meta, reaction_id: "r", message_id: "m" } as LogEvent);
  assert.deepEqual([rd.ref, rd.content], ["r", ""]);
  const joined = entryOfEvent({ event: "member_joined", ...meta, user: "grace", by: "ada" } as LogEvent);
  assert.equal(joined.ref, "grace");
  const { salt: _salt, ...tomb } = meta;
  const tombstone = entryOfEvent({ event: "message", ...tomb, message: { id: "m", seq: 2, author: "ada", type: "chat.text", content: "", ts: meta.ts } } as LogEvent);
  assert.equal(tombstone.content, undefined);
  assert.ok(Number.isNaN(parseTsMs("yesterday")));
});

test("endpoints: http and ws forms of one server", () => {
  assert.deepEqual(endpoints("http://127.0.0.1:7700"), { http: "http://127.0.0.1:7700", ws: "ws://127.0.0.1:7700/v1/ws" });
  assert.deepEqual(endpoints("wss://chat.example/v1/ws"), { http: "https://chat.example", ws: "wss://chat.example/v1/ws" });
  assert.deepEqual(endpoints("https://x.example/herald/"), { http: "https://x.example/herald", ws: "wss://x.example/herald/v1/ws" });
});

test("token exp is read without verifying, refresh at 80% of what is left", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "ada", exp: 2_000_000_000 })).toString("base64url");
  assert.equal(jwtExpMs(`x.${payload}.y`), 2_000_000_000_000);
  assert.equal(jwtExpMs("garbage"), undefined);
  assert.equal(refreshDelayMs(0, 100_000), 80_000);
  assert.equal(refreshDelayMs(10, 0), 1000);
});
