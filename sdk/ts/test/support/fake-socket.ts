/** A WebSocket double: the test plays the server, frame by frame. */
import type { WebSocketLike } from "../../src/client.js";

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  static waiters: Array<(s: FakeSocket) => void> = [];
  readyState = 0;
  sent: Array<Record<string, unknown>> = [];
  private sentWaiters: Array<() => void> = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  binaryType = "blob";

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
    const w = FakeSocket.waiters;
    FakeSocket.waiters = [];
    queueMicrotask(() => w.forEach((f) => f(this)));
  }

  static reset(): void {
    FakeSocket.all = [];
    FakeSocket.waiters = [];
  }

  /** The next socket the client opens (or the newest one if it already did, past `count`). */
  static next(count: number): Promise<FakeSocket> {
    const existing = FakeSocket.all[count];
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve) => FakeSocket.waiters.push(resolve));
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  send(data: string | ArrayBufferLike | Uint8Array): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(String(data)) as Record<string, unknown>);
    const w = this.sentWaiters;
    this.sentWaiters = [];
    w.forEach((f) => f());
  }

  /** Resolves with the first frame sent with this `op` (waiting for it if need be). */
  async frame(op: string, timeoutMs = 2000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.sent.find((x) => x.op === op);
      if (f) return f;
      if (Date.now() > deadline) throw new Error(`no ${op} frame sent; sent: ${JSON.stringify(this.sent)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, deadline - Date.now() + 1);
        this.sentWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** A frame from the "server". */
  push(obj: unknown): void {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }

  /** Answers the request `f` with `ok`. */
  reply(f: Record<string, unknown>, ok: Record<string, unknown> = {}): void {
    this.push({ id: f.id, ok });
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }

  /** The server side drops the connection. */
  drop(code = 1006, reason = ""): void {
    this.close(code, reason);
  }
}
