/**
 * The channel log's hash chain (PROTOCOL.md §5): entry hashes and a verifier that follows
 * every channel a client sees. Pure: no I/O.
 */
import { blake3 } from "@noble/hashes/blake3.js";
import { ChainError } from "./errors.js";

export const ENTRY_KINDS = [
  "channel_created",
  "member_joined",
  "member_left",
  "message",
  "message_edited",
  "message_deleted",
  "reaction",
  "reaction_deleted",
  "key_rotated",
] as const;
export type EntryKind = (typeof ENTRY_KINDS)[number];

const ZERO_HASH = "0".repeat(64);
const DOMAIN = new TextEncoder().encode("herald.v1.entry");
const utf8 = new TextEncoder();

/** One log entry with every field; `content`/`salt` are absent on tombstones. */
export interface EntryFields {
  channel: string;
  seq: number;
  kind: EntryKind;
  author: string;
  ref: string;
  ts_ms: number;
  content?: string | undefined;
  salt?: string | undefined;
  content_hash: string;
  prev_hash: string;
  hash: string;
}

/**
 * One log entry as the verifier takes it: {@link EntryFields} where `hash` and `content_hash`
 * may be absent, as in the compact events of §B. The verifier computes them (`content_hash`
 * from `salt` and `content`), and checks them against the computed ones when present.
 */
export type WireEntry = Omit<EntryFields, "hash" | "content_hash"> & {
  content_hash?: string | undefined;
  hash?: string | undefined;
};

/** The hashes of an entry that verified, as computed from its fields (§5). */
export interface EntryHashes {
  hash: string;
  content_hash: string;
}

export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Lowercase hex of `len` bytes, or `null` when `s` is not that. */
export function fromHex(s: string, len: number): Uint8Array | null {
  if (typeof s !== "string" || s.length !== len * 2 || !/^[0-9a-f]*$/.test(s)) return null;
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function u64be(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

function lp(s: string): Uint8Array {
  const bytes = utf8.encode(s);
  return concat([u32be(bytes.length), bytes]);
}

/** `BLAKE3(salt ‖ content)` as lowercase hex. */
export function contentHash(saltHex: string, content: string): string {
  const salt = fromHex(saltHex, 16);
  if (!salt) throw new TypeError("salt must be 16 bytes of lowercase hex");
  return toHex(blake3(concat([salt, utf8.encode(content)])));
}

/** The entry hash of §5 from the previous hash and the entry's fields, as lowercase hex. */
export function entryHash(e: Omit<EntryFields, "hash" | "content" | "salt">): string {
  const prev = fromHex(e.prev_hash, 32);
  const ch = fromHex(e.content_hash, 32);
  if (!prev || !ch) throw new TypeError("prev_hash and content_hash must be 32 bytes of hex");
  return toHex(
    blake3(
      concat([
        DOMAIN,
        prev,
        u64be(e.seq),
        lp(e.kind),
        lp(e.channel),
        lp(e.author),
        lp(e.ref),
        u64be(e.ts_ms),
        ch,
      ]),
    ),
  );
}

/**
 * Checks one entry on its own and returns its hashes. `content_hash` is computed from `salt`
 * and `content` when they are there (a present `content_hash` must equal it), else taken as
 * given (a tombstone); an entry with neither is malformed. `hash` is computed from the fields
 * (a present one must equal it). An entry that came without `hash` is only as good as its
 * link: the next entry's `prev_hash` is what vouches for it.
 */
export function verifyEntry(e: WireEntry): EntryHashes {
  const bad = (field: string, why = `malformed field ${field}`) => new ChainError("malformed", e.channel, e.seq, why);
  if (!Number.isSafeInteger(e.seq) || e.seq < 1) throw bad("seq");
  if (!Number.isSafeInteger(e.ts_ms) || e.ts_ms < 0) throw bad("ts");
  if (!(ENTRY_KINDS as readonly string[]).includes(e.kind)) throw bad("kind");
  if (e.content_hash !== undefined && !fromHex(e.content_hash, 32)) throw bad("content_hash");
  if (!fromHex(e.prev_hash, 32)) throw bad("prev_hash");
  if (e.hash !== undefined && !fromHex(e.hash, 32)) throw bad("hash");
  let content_hash: string;
  if (e.salt !== undefined && e.salt !== null && e.content !== undefined) {
    if (!fromHex(e.salt, 16)) throw bad("salt");
    content_hash = contentHash(e.salt, e.content);
    if (e.content_hash !== undefined && e.content_hash !== content_hash) {
      throw new ChainError("content_mismatch", e.channel, e.seq, "content does not match its content_hash");
    }
  } else if (e.content_hash !== undefined) {
    content_hash = e.content_hash;
  } else {
    throw bad("content_hash", "neither salt nor content_hash");
  }
  const hash = entryHash({ ...e, content_hash });
  if (e.hash !== undefined && e.hash !== hash) {
    throw new ChainError("hash_mismatch", e.channel, e.seq, "hash does not match its fields");
  }
  if (e.seq === 1 && e.prev_hash !== ZERO_HASH) {
    throw new ChainError("bad_genesis", e.channel, e.seq, "entry 1 must have a zero prev_hash");
  }
  return { hash, content_hash };
}

/** What {@link ChainVerifier.check} concluded about an entry that verified. */
export type Verdict = "next" | "duplicate";

/** What {@link ChainVerifier.verify} returns: the verdict and the entry's hashes. */
export type Verified = EntryHashes & { verdict: Verdict };

/**
 * Follows the chain of every channel, entry by entry. The first entry seen of a channel is its
 * anchor (trusted on first use unless it is entry 1, whose `prev_hash` must be zero); every
 * later one must be the next `seq` and link to the previous hash. Entries at or below the head
 * are duplicates (the one at the head must carry the same hash).
 */
export class ChainVerifier {
  private heads = new Map<string, { seq: number; hash: string }>();

  head(channel: string): { seq: number; hash: string } | undefined {
    return this.heads.get(channel);
  }

  setHead(channel: string, seq: number, hash: string): void {
    this.heads.set(channel, { seq, hash });
  }

  forget(channel: string): void {
    this.heads.delete(channel);
  }

  /** Verifies `e` against itself and the channel's head; advances the head. Throws `ChainError`. */
  check(e: WireEntry): Verdict {
    return this.verify(e).verdict;
  }

  /**
   * {@link check}, also returning the entry's hashes (computed once): what fills in an event
   * that came without them. The head advances to the computed hash, so an entry that came
   * without `hash` is vouched for by the next one's `prev_hash`.
   */
  verify(e: WireEntry): Verified {
    const hashes = verifyEntry(e);
    const head = this.heads.get(e.channel);
    if (head) {
      if (e.seq <= head.seq) {
        if (e.seq === head.seq && hashes.hash !== head.hash) {
          throw new ChainError("hash_mismatch", e.channel, e.seq, "differs from the entry verified at this seq");
        }
        return { ...hashes, verdict: "duplicate" };
      }
      if (e.seq !== head.seq + 1) {
        throw new ChainError("gap", e.channel, e.seq, `expected entry ${head.seq + 1} next`);
      }
      if (e.prev_hash !== head.hash) {
        throw new ChainError("broken_link", e.channel, e.seq, `does not link to entry ${head.seq}`);
      }
    }
    this.heads.set(e.channel, { seq: e.seq, hash: hashes.hash });
    return { ...hashes, verdict: "next" };
  }
}
