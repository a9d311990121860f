/**
 * The compact log events of §B (no `hash`, `content_hash` only on tombstones, a `message`'s
 * message without `seq`/`author`/`ts`): verified through the chain's links and delivered with
 * every field, exactly as their full form; the full form of older servers still verifies.
 */
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { ChainError } from "../../src/errors.js";
import { Session } from "../../src/session.js";
import type { UnknownEvent } from "../../src/frames.js";
import { Herald, type MessageEvent } from "../../src/index.js";
import { chainVectors, compact, eventOfVector, FakeLog } from "../support/chain.js";
import { FakeSocket } from "../support/fake-socket.js";

type Ev = Record<string, unknown>;

beforeEach(() => FakeSocket.reset());

const vectors = chainVectors.entries;
/** The vectors' chain as full events (an older server) and as compact ones. */
const full: Ev[] = vectors.map(eventOfVector);
const wire: Ev[] = full.map(compact);

/** Feeds events to a session as text frames; what it delivered and the chain errors. */
function feed(session: Session, events: Ev[]): { events: UnknownEvent[]; errors: ChainError[] } {
  const delivered: UnknownEvent[] = [];
  const errors: ChainError[] = [];
  for (const e of events) {
    for (const o of session.handleText(JSON.stringify(e))) {
      if (o.type === "event") delivered.push(o.event);
      else if (o.type === "chain_error") errors.push(o.error);
    }
  }
  return { events: delivered, errors };
}

function at(list: Ev[], i: number): Ev {
  const e = list[i];
  assert.ok(e, `no event ${i}`);
  return e;
}

function withMessage(e: Ev, fields: Ev): Ev {
  return { ...e, message: { ...(e.message as Ev), ...fields } };
}

const isChainError = (kind: string, seq: number) => (e: ChainError | undefined) => e instanceof ChainError && e.kind === kind && e.seq === seq;

test("the compact form leaves out hash, content_hash and the message's seq/author/ts", () => {
  assert.equal(wire.length, 7);
  for (const w of wire) {
    assert.equal("hash" in w, false);
    assert.equal("content_hash" in w, false);
    assert.equal(typeof w.salt, "string");
  }
  const messages = wire.filter((w) => w.event === "message");
  assert.equal(messages.length, 2);
  for (const m of messages) assert.deepEqual(Object.keys(m.message as Ev).filter((k) => ["seq", "author", "ts"].includes(k)), []);
});

test("compact events verify and are delivered exactly as their full form", () => {
  const fromCompact = feed(new Session(false), wire);
  assert.deepEqual(fromCompact.errors, []);
  assert.deepEqual(fromCompact.events, full);
  const fromFull = feed(new Session(false), full);
  assert.deepEqual(fromFull.errors, []);
  assert.deepEqual(fromFull.events, full);
  // A server mid-upgrade: full and compact events in one chain.
  const mixed = feed(new Session(false), [...full.slice(0, 3), ...wire.slice(3)]);
  assert.deepEqual(mixed.errors, []);
  assert.deepEqual(mixed.events, full);
});

test("the verifier's head is the computed hash, and duplicates are told by it", () => {
  const session = new Session(false);
  feed(session, wire.slice(0, 3));
  assert.deepEqual(session.verifier.head(chainVectors.channel), { seq: 3, hash: at(full, 2).hash });
  // The head again: dropped. The head with other content (so another hash): refused.
  assert.deepEqual(feed(session, [at(wire, 2)]), { events: [], errors: [] });
  const other = feed(session, [withMessage(at(wire, 2), { content: "Hello everyone" })]);
  assert.deepEqual(other.events, []);
  assert.ok(isChainError("hash_mismatch", 3)(other.errors[0]));
});

test("a present hash or content_hash (an older server) must equal the computed one", () => {
  const session = new Session(false);
  feed(session, wire.slice(0, 2));
  const tampered = withMessage(at(full, 2), { content: "Hello everyone" });
  // Full form: the content no longer gives its content_hash.
  assert.ok(isChainError("content_mismatch", 3)(feed(session, [tampered]).errors[0]));
  // Without content_hash but with hash: the hash of the fields differs.
  const { content_hash: _ch, ...withHashOnly } = tampered;
  assert.ok(isChainError("hash_mismatch", 3)(feed(session, [withHashOnly]).errors[0]));
  // A hash that is another entry's.
  assert.ok(isChainError("hash_mismatch", 3)(feed(session, [{ ...at(wire, 2), hash: at(full, 3).hash }]).errors[0]));
  // Nothing got through; the genuine entry still links.
  const genuine = feed(session, [at(wire, 2)]);
  assert.deepEqual(genuine, { events: [at(full, 2)], errors: [] });
});

test("a compact event whose prev_hash is not the head is a broken link", () => {
  const session = new Session(false);
  feed(session, wire.slice(0, 2));
  const got = feed(session, [{ ...at(wire, 2), prev_hash: "ab".repeat(32) }]);
  assert.deepEqual(got.events, []);
  assert.equal(got.errors.length, 1);
  assert.ok(isChainError("broken_link", 3)(got.errors[0]));
  assert.deepEqual(session.verifier.head(chainVectors.channel)?.seq, 2);
});

test("tampered content in a compact event breaks the link of the next entry", () => {
  const session = new Session(false);
  feed(session, wire.slice(0, 2));
  // Without a hash to compare, the tampered entry itself cannot be caught: its computed hash
  // (the head now) is not the one the server chained on.
  const tampered = feed(session, [withMessage(at(wire, 2), { content: "Hello everyone" })]);
  assert.deepEqual(tampered.errors, []);
  assert.equal(tampered.events.length, 1);
  const forgedHash = tampered.events[0]?.hash;
  assert.notEqual(forgedHash, at(full, 2).hash);
  assert.deepEqual(session.verifier.head(chainVectors.channel), { seq: 3, hash: forgedHash });
  // The next entry links to the genuine hash: refused.
  const next = feed(session, [at(wire, 3)]);
  assert.deepEqual(next.events, []);
  assert.equal(next.errors.length, 1);
  assert.ok(isChainError("broken_link", 4)(next.errors[0]));
});

test("a compact tombstone (no salt, content_hash present) verifies and links", () => {
  const { salt: _salt, ...tombFull } = withMessage(at(full, 2), { content: "" });
  const tomb = compact(tombFull);
  assert.equal(tomb.content_hash, vectors[2]?.content_hash);
  assert.equal("hash" in tomb, false);
  const got = feed(new Session(false), [at(wire, 0), at(wire, 1), tomb, at(wire, 3)]);
  assert.deepEqual(got.errors, []);
  assert.deepEqual(got.events, [at(full, 0), at(full, 1), tombFull, at(full, 3)]);
});

test("an event with neither salt nor content_hash is malformed", () => {
  const { salt: _salt, ...noSalt } = at(wire, 2);
  const session = new Session(false);
  const got = feed(session, [at(wire, 0), at(wire, 1), noSalt]);
  assert.equal(got.events.length, 2);
  assert.equal(got.errors.length, 1);
  assert.ok(isChainError("malformed", 3)(got.errors[0]));
  assert.match(got.errors[0]?.message ?? "", /neither salt nor content_hash/);
});

test("message fields an older server sent are kept as they came; absent ones are the entry's", () => {
  const log = new FakeLog("c");
  const created = log.created();
  const m = log.message("hi", "grace");
  // `ts` in another spelling of the same instant: kept, not replaced by the entry's.
  const sent = { ...compact(m), message: { ...(compact(m).message as Ev), ts: m.ts.replace("Z", "+00:00") } };
  const got = feed(new Session(false), [compact(created), sent]);
  assert.deepEqual(got.errors, []);
  const message = got.events[1]?.message as Ev;
  assert.deepEqual(message, { ...m.message, ts: m.ts.replace("Z", "+00:00") });
  assert.equal(got.events[1]?.hash, m.hash);
});

test("a client delivers compact events complete to its listeners", async () => {
  const clientP = Herald.connect({ url: "http://127.0.0.1:1", token: "t0", WebSocket: FakeSocket, requestTimeoutMs: 2000 });
  const s = await FakeSocket.next(0);
  s.open();
  s.reply(await s.frame("connect"), { conn_id: "conn0", user: { id: "ada" } });
  s.reply(await s.frame("channel.list"), { channels: [] });
  const client = await clientP;
  const errors: ChainError[] = [];
  client.realtime.on("chainError", (e) => errors.push(e));
  const message = client.realtime.waitFor("message", (e: MessageEvent) => e.seq === 4, 2000);
  for (const w of wire.slice(0, 4)) s.push(w);
  const e = await message;
  assert.deepEqual(errors, []);
  assert.deepEqual(e, full[3]);
  assert.equal(e.message.author, "grace");
  assert.equal(e.message.seq, 4);
  assert.equal(e.hash, vectors[3]?.hash);
  client.close();
});
