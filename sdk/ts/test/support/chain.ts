/** Builds valid, chained log events for tests that play the server. */
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
