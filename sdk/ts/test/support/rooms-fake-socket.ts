/** A WebSocket double that also takes and sends binary frames (§1), for the room unit tests. */
import { Opened, SocketDouble } from "./fake-socket.js";
import { encodeBinaryFrame, parseBinaryFrame } from "../../src/frames.js";

export interface Sent {
  frame: Record<string, unknown>;
  bytes?: Uint8Array;
}

export class BinarySocket extends SocketDouble<Sent> {
  private static opened = new Opened<BinarySocket>();

  static get all(): BinarySocket[] {
    return BinarySocket.opened.all;
  }

  constructor(url: string) {
    super(url);
    BinarySocket.opened.add(this);
  }

  static reset(): void {
    BinarySocket.opened.reset();
  }

  static next(count: number): Promise<BinarySocket> {
    return BinarySocket.opened.next(count);
  }

  protected parse(data: string | ArrayBufferLike | Uint8Array): Sent {
    if (typeof data === "string") return { frame: JSON.parse(data) as Record<string, unknown> };
    const parsed = parseBinaryFrame(data instanceof Uint8Array ? data : new Uint8Array(data));
    if (!parsed) throw new Error("unreadable binary frame sent");
    return { frame: parsed.header, bytes: parsed.bytes.slice() };
  }

  /** Frames sent with this op, oldest first. */
  frames(op: string): Sent[] {
    return this.sent.filter((s) => s.frame.op === op);
  }

  /** Resolves with the `n`th frame (0-based) sent with `op`, waiting for it. */
  frame(op: string, n = 0, timeoutMs = 2000): Promise<Sent> {
    return this.waitSent(
      () => this.frames(op)[n],
      timeoutMs,
      () => `no ${op} frame #${n}; sent: ${JSON.stringify(this.sent.map((s) => s.frame))}`,
    );
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
}
