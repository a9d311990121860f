/** A WebSocket double that also takes and sends binary frames (§1), for the room unit tests. */
import type { WebSocketLike } from "../../src/client.js";
import { encodeBinaryFrame, parseBinaryFrame } from "../../src/frames.js";

export interface Sent {
  frame: Record<string, unknown>;
  bytes?: Uint8Array;
}

export class BinarySocket implements WebSocketLike {
  static all: BinarySocket[] = [];
  private static waiters: Array<(s: BinarySocket) => void> = [];
  readyState = 0;
  sent: Sent[] = [];
  private sentWaiters: Array<() => void> = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  binaryType = "blob";

  constructor(readonly url: string) {
    BinarySocket.all.push(this);
    const w = BinarySocket.waiters;
    BinarySocket.waiters = [];
    queueMicrotask(() => w.forEach((f) => f(this)));
  }

  static reset(): void {
    BinarySocket.all = [];
    BinarySocket.waiters = [];
  }

  static next(count: number): Promise<BinarySocket> {
    const existing = BinarySocket.all[count];
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve) => BinarySocket.waiters.push(resolve));
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  send(data: string | ArrayBufferLike | Uint8Array): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    if (typeof data === "string") this.sent.push({ frame: JSON.parse(data) as Record<string, unknown> });
    else {
      const parsed = parseBinaryFrame(data instanceof Uint8Array ? data : new Uint8Array(data));
      if (!parsed) throw new Error("unreadable binary frame sent");
      this.sent.push({ frame: parsed.header, bytes: parsed.bytes.slice() });
    }
    const w = this.sentWaiters;
    this.sentWaiters = [];
    w.forEach((f) => f());
  }

  /** Frames sent with this op, oldest first. */
  frames(op: string): Sent[] {
    return this.sent.filter((s) => s.frame.op === op);
  }

  /** Resolves with the `n`th frame (0-based) sent with `op`, waiting for it. */
  async frame(op: string, n = 0, timeoutMs = 2000): Promise<Sent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames(op)[n];
      if (f) return f;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${op} frame #${n}; sent: ${JSON.stringify(this.sent.map((s) => s.frame))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.sentWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  push(obj: unknown): void {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }

  pushBinary(header: Record<string, unknown>, bytes: Uint8Array): void {
    const f = encodeBinaryFrame(header, bytes);
    this.onmessage?.({ data: f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength) });
  }

  reply(s: Sent, ok: Record<string, unknown> = {}): void {
    this.push({ id: s.frame.id, ok });
  }

  fail(s: Sent, code: string, message = code): void {
    this.push({ id: s.frame.id, error: { code, message } });
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }

  drop(code = 1006, reason = ""): void {
    this.close(code, reason);
  }
}
