/** WebSocket doubles: the test plays the server, frame by frame. */
import type { WebSocketLike } from "../../src/client.js";

/** The sockets one double class opened, and who waits for the next one. */
export class Opened<T> {
  all: T[] = [];
  private waiters: Array<(s: T) => void> = [];

  add(s: T): void {
    this.all.push(s);
    const w = this.waiters;
    this.waiters = [];
    queueMicrotask(() => w.forEach((f) => f(s)));
  }

  reset(): void {
    this.all = [];
    this.waiters = [];
  }

  /** The next socket the client opens (or the newest one if it already did, past `count`). */
  next(count: number): Promise<T> {
    const existing = this.all[count];
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** What both doubles share: the socket's state and handlers, what the client sent (as `S`),
 * waiting for a sent frame, and frames and closes from the "server". */
export abstract class SocketDouble<S> implements WebSocketLike {
  readyState = 0;
  sent: S[] = [];
  private sentWaiters: Array<() => void> = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  binaryType = "blob";

  constructor(readonly url: string) {}

  /** What the client sent, as the test reads it. */
  protected abstract parse(data: string | ArrayBufferLike | Uint8Array): S;

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  send(data: string | ArrayBufferLike | Uint8Array): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(this.parse(data));
    const w = this.sentWaiters;
    this.sentWaiters = [];
    w.forEach((f) => f());
  }

  /** Resolves with the first sent item `pick` finds, waiting for it up to `timeoutMs`. */
  protected async waitSent<T>(pick: () => T | undefined, timeoutMs: number, missing: () => string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = pick();
      if (f !== undefined) return f;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(missing());
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left + 1);
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

/** A JSON-only double. */
export class FakeSocket extends SocketDouble<Record<string, unknown>> {
  private static opened = new Opened<FakeSocket>();

  static get all(): FakeSocket[] {
    return FakeSocket.opened.all;
  }

  constructor(url: string) {
    super(url);
    FakeSocket.opened.add(this);
  }

  static reset(): void {
    FakeSocket.opened.reset();
  }

  /** The next socket the client opens (or the newest one if it already did, past `count`). */
  static next(count: number): Promise<FakeSocket> {
    return FakeSocket.opened.next(count);
  }

  protected parse(data: string | ArrayBufferLike | Uint8Array): Record<string, unknown> {
    return JSON.parse(String(data)) as Record<string, unknown>;
  }

  /** Resolves with the first frame sent with this `op` (waiting for it if need be). */
  frame(op: string, timeoutMs = 2000): Promise<Record<string, unknown>> {
    return this.waitSent(
      () => this.sent.find((x) => x.op === op),
      timeoutMs,
      () => `no ${op} frame sent; sent: ${JSON.stringify(this.sent)}`,
    );
  }

  /** Answers the request `f` with `ok`. */
  reply(f: Record<string, unknown>, ok: Record<string, unknown> = {}): void {
    this.push({ id: f.id, ok });
  }
}
