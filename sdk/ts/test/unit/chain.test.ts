import { test } from "node:test";
import assert from "node:assert/strict";
import { ChainVerifier, contentHash, entryHash, verifyEntry, type EntryFields } from "../../src/chain.js";
import { ChainError } from "../../src/errors.js";
import { entryOfEvent, type LogEvent } from "../../src/frames.js";
import { chainVectors as vectors, FakeLog, type ChainVector as Vector } from "../support/chain.js";

function fields(v: Vector): EntryFields {
  return { channel: vectors.channel, ...v };
}

test("chain-v1 vectors: every content_hash and hash is reproduced", () => {
  assert.equal(vectors.entries.length, 7);
  for (const v of vectors.entries) {
    assert.equal(contentHash(v.salt, v.content), v.content_hash, `content_hash of entry ${v.seq}`);
    assert.equal(entryHash(fields(v)), v.hash, `hash of entry ${v.seq}`);
  }
});

test("chain-v1 vectors: the verifier follows the whole chain", () => {
  const verifier = new ChainVerifier();
  for (const v of vectors.entries) assert.equal(verifier.check(fields(v)), "next");
  assert.equal(verifier.head(vectors.channel)?.seq, 7);
  // The head again is a duplicate, dropped.
  const last = vectors.entries[6];
  assert.ok(last);
  assert.equal(verifier.check(fields(last)), "duplicate");
});

test("verifyEntry computes what an entry leaves out: hash always, content_hash from salt and content", () => {
  for (const v of vectors.entries) {
    const { hash: _hash, content_hash: _ch, ...compact } = fields(v);
    assert.deepEqual(verifyEntry(compact), { hash: v.hash, content_hash: v.content_hash }, `entry ${v.seq}`);
  }
  const verifier = new ChainVerifier();
  for (const v of vectors.entries) {
    const { hash: _hash, ...noHash } = fields(v);
    assert.deepEqual(verifier.verify(noHash), { hash: v.hash, content_hash: v.content_hash, verdict: "next" });
  }
  const v = vectors.entries[2];
  assert.ok(v);
  const { content_hash: _ch, ...noContentHash } = fields(v);
  assert.throws(
    () => verifyEntry({ ...noContentHash, salt: undefined, content: undefined }),
    (err: unknown) => err instanceof ChainError && err.kind === "malformed",
  );
});

test("a tombstone (no salt, no content) still verifies through content_hash", () => {
  const v = vectors.entries[2];
  assert.ok(v);
  verifyEntry({ ...fields(v), content: undefined, salt: undefined });
});

test("tampering is a ChainError of the right kind", () => {
  const [a, b, c] = vectors.entries;
  assert.ok(a && b && c);
  const expectKind = (e: EntryFields, kind: string, verifier = new ChainVerifier()) =>
    assert.throws(() => verifier.check(e), (err: unknown) => err instanceof ChainError && err.kind === kind);
  expectKind({ ...fields(c), content: "Hello everyone" }, "content_mismatch");
  expectKind({ ...fields(c), author: "mallory" }, "hash_mismatch");
  expectKind({ ...fields(c), hash: "zz" }, "malformed");
  const v = new ChainVerifier();
  v.check(fields(a));
  expectKind(fields(c), "gap", v);
  const v2 = new ChainVerifier();
  v2.check(fields(a));
  v2.check(fields(b));
  v2.check(fields(c));
  // Entry 3 again with another hash at the head: refused, not dropped as a duplicate.
  expectKind({ ...fields(c), ts_ms: c.ts_ms + 1, hash: entryHash({ ...fields(c), ts_ms: c.ts_ms + 1 }) }, "hash_mismatch", v2);
});

test("a broken link: an entry whose prev_hash is not the head", () => {
  const log = new FakeLog("c1");
  const other = new FakeLog("c1");
  const v = new ChainVerifier();
  v.check(entryOfEvent(log.created() as LogEvent));
  other.created("grace", "x");
  const forged = other.message("hi") as LogEvent;
  assert.throws(() => v.check(entryOfEvent(forged)), (e: unknown) => e instanceof ChainError && e.kind === "broken_link");
});

test("entry 1 must have a zero prev_hash", () => {
  const a = vectors.entries[1];
  assert.ok(a);
  const e = { ...fields(a), seq: 1 };
  e.hash = entryHash(e);
  assert.throws(() => verifyEntry(e), (err: unknown) => err instanceof ChainError && err.kind === "bad_genesis");
});
