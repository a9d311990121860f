/** Builds valid, chained log events for tests that play the server. */
import { readFileSync } from "node:fs";
import { contentHash, entryHash, type EntryKind } from "../../src/chain.js";

let saltCounter = 0;
function salt(): string {
  saltCounter += 1;
  return saltCounter.toString(16).padStart(32, "0");
}

/** One channel's log as a fake server would emit it: `message(...)` returns the event object. */
export class FakeLog {
  seq = 0;
  head = "0".repeat(64);
  constructor(readonly channel: string) {}

  private meta(kind: EntryKind, author: string, ref: string, content: string) {
    const s = salt();
    const ts = new Date(1732000000000 + this.seq * 1000).toISOString();
    const ch = contentHash(s, content);
    this.seq += 1;
    const prev = this.head;
    const hash = entryHash({
      channel: this.channel,
      seq: this.seq,
      kind,
      author,
      ref,
      ts_ms: Date.parse(ts),
      content_hash: ch,
      prev_hash: prev,
    });
    this.head = hash;
    return { channel: this.channel, seq: this.seq, hash, prev_hash: prev, ts, author, salt: s, content_hash: ch };
  }

  created(author = "ada", name = "general") {
    return { event: "channel_created", ...this.meta("channel_created", author, "", name), name };
  }

  message(content: string, author = "ada", id = `m${this.seq + 1}`) {
    const meta = this.meta("message", author, "", content);
    return { event: "message", ...meta, message: { id, seq: meta.seq, author, type: "chat.text", content, ts: meta.ts } };
  }
}

/**
 * The compact form of a full log event, as a server that saves bytes sends it (§B): no
 * `hash`, `content_hash` only when there is no `salt` (a tombstone), and a `message` event's
 * message without the `seq`, `author` and `ts` that are the entry's own.
 */
export function compact(full: Record<string, unknown>): Record<string, unknown> {
  const { hash: _hash, content_hash, ...out } = full;
  if (out.salt === undefined) out.content_hash = content_hash;
  if (out.event === "message" && typeof out.message === "object" && out.message !== null) {
    const { seq: _seq, author: _author, ts: _ts, ...message } = out.message as Record<string, unknown>;
    out.message = message;
  }
  return out;
}

/** One entry of the shared chain vectors (test/fixtures/chain-v1.json, PROTOCOL.md §5). */
export interface ChainVector {
  seq: number;
  kind: EntryKind;
  author: string;
  ref: string;
  ts_ms: number;
  content: string;
  salt: string;
  content_hash: string;
  prev_hash: string;
  hash: string;
}

export const chainVectors = JSON.parse(
  readFileSync(new URL("../../../test/fixtures/chain-v1.json", import.meta.url), "utf8"),
) as { channel: string; entries: ChainVector[] };

/** The full event a server sends for one vector entry (the kinds the vectors hold). */
export function eventOfVector(v: ChainVector): Record<string, unknown> {
  const ts = new Date(v.ts_ms).toISOString();
  const meta = {
    channel: chainVectors.channel,
    seq: v.seq,
    hash: v.hash,
    prev_hash: v.prev_hash,
    ts,
    author: v.author,
    salt: v.salt,
    content_hash: v.content_hash,
  };
  switch (v.kind) {
    case "channel_created":
      return { event: v.kind, ...meta, name: v.content, title: null };
    case "member_joined":
      return { event: v.kind, ...meta, user: v.ref, by: v.author };
    case "message": {
      const reply = v.ref ? { reply_to: { id: v.ref, author: "ada", content: "earlier", edited: false } } : {};
      return {
        event: v.kind,
        ...meta,
        message: { id: `m${v.seq}`, seq: v.seq, author: v.author, type: "chat.text", content: v.content, ...reply, ts },
      };
    }
    case "reaction":
      return { event: v.kind, ...meta, reaction_id: `r${v.seq}`, message_id: v.ref, emoji: v.content };
    case "message_edited":
      return { event: v.kind, ...meta, message_id: v.ref, content: v.content, edited_at: ts };
    case "message_deleted":
      return { event: v.kind, ...meta, message_id: v.ref };
    default:
      throw new Error(`no event for a ${v.kind} vector`);
  }
}
