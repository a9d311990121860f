/**
 * The pure core of a client connection (no sockets, no timers), after the Rust SDK's
 * `session.rs`: it takes frames in and requests from the user and yields {@link Output}s
 * (frames to write, replies for their callers, events to deliver). It matches replies to
 * requests by id, verifies every log event against the channel's chain, drops duplicates of a
 * replay, keeps the resume point of every channel (seeded from `channel.list` so a channel
 * that stayed quiet this session still resumes from its head), resubscribes after a reconnect,
 * and resends sends that carry a `client_id` (the server answers a repeated one with the
 * original message, so a resend never doubles).
 */
import { ChainVerifier, type Verified } from "./chain.js";
import {
  ChainError,
  DisconnectedError,
  errorFromDetail,
  HeraldError,
  type ServerError,
} from "./errors.js";
import {
  completeLogEvent,
  encodeRequest,
  entryOfEvent,
  isLogEvent,
  parseServerFrame,
  type Reply,
  type ServerFrame,
  type UnknownEvent,
  type User,
} from "./frames.js";

/** A caller waiting for a reply; `abandoned` once it gave up (timed out): never sent then. */
export interface Waiter {
  abandoned?: boolean;
}

export interface ConnectOk {
  conn_id: string;
  user: User;
  [k: string]: unknown;
}

export type Output<W> =
  | { type: "send"; text: string }
  | { type: "reply"; waiter: W; ok?: Record<string, unknown>; error?: HeraldError }
  | { type: "event"; event: UnknownEvent }
  | { type: "chain_error"; error: ChainError }
  | { type: "connected"; ok: ConnectOk }
  | { type: "rejected"; error: ServerError }
  | { type: "disconnected"; reason: string };

interface Pending<W> {
  op: string;
  fields: Record<string, unknown>;
  waiter: W | undefined;
}

type Phase = { kind: "offline" } | { kind: "connecting"; id: number } | { kind: "ready" };

export class Session<W extends Waiter = Waiter> {
  private nextId = 1;
  private phase: Phase = { kind: "offline" };
  private inFlight = new Map<number, Pending<W>>();
  private queued = new Map<number, Pending<W>>();
  readonly verifier = new ChainVerifier();
  /** Resume points of channels with no verified head yet (seeded from `last_seq`). */
  private cursors = new Map<string, number>();
  /** Local subscription counts per subject. */
  private subjects = new Map<string, number>();
  private seeding: number | undefined;

  /** @param seedOnConnect send `channel.list` right after every `connect` to seed resume points. */
  constructor(private readonly seedOnConnect = true) {}

  get ready(): boolean {
    return this.phase.kind === "ready";
  }

  /** Requests awaiting a reply or waiting to be sent. */
  get pending(): number {
    return this.inFlight.size + this.queued.size;
  }

  /** Whether the `channel.list` that seeds the resume points is still unanswered. */
  get isSeeding(): boolean {
    return this.seeding !== undefined;
  }

  /** Seeds the resume point of a channel unless it has one: a known point never moves. */
  seed(channel: string, seq: number): void {
    if (this.verifier.head(channel) || this.cursors.has(channel)) return;
    this.cursors.set(channel, seq);
  }

  /** The `resume` map of the next `connect`: the verified head of every channel, else its seed. */
  resumePoints(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [c, seq] of this.cursors) out[c] = seq;
    for (const c of this.known) {
      const h = this.verifier.head(c);
      if (h) out[c] = h.seq;
    }
    return out;
  }

  /** Channels whose chain head is known. */
  private known = new Set<string>();

  /** The `connect` frame to send first on a new socket, with the resume points. */
  connect(token: string, extra: Record<string, unknown> = {}): string {
    const id = this.nextId++;
    this.phase = { kind: "connecting", id };
    const resume = this.resumePoints();
    const fields: Record<string, unknown> = { token, ...extra };
    if (Object.keys(resume).length > 0) fields.resume = resume;
    return encodeRequest(id, "connect", fields);
  }

  /** Queues or sends a request for a caller. */
  request(op: string, fields: Record<string, unknown>, waiter: W): Output<W>[] {
    const out: Output<W>[] = [];
    this.push({ op, fields, waiter }, out);
    return out;
  }

  /** Adds a local subscription; subscribes on the server now and after every reconnect. */
  subscribe(subject: string, waiter: W): Output<W>[] {
    this.subjects.set(subject, (this.subjects.get(subject) ?? 0) + 1);
    return this.request("subscribe", { subject }, waiter);
  }

  /** Removes a local subscription; unsubscribes on the server when it was the last. */
  unsubscribe(subject: string): Output<W>[] {
    const out: Output<W>[] = [];
    const n = this.subjects.get(subject);
    if (n === undefined) return out;
    if (n > 1) {
      this.subjects.set(subject, n - 1);
      return out;
    }
    this.subjects.delete(subject);
    if (this.ready) this.push({ op: "unsubscribe", fields: { subject }, waiter: undefined }, out);
    return out;
  }

  private push(p: Pending<W>, out: Output<W>[]): void {
    const id = this.nextId++;
    if (this.ready) this.send(id, p, out);
    else this.queued.set(id, p);
  }

  private send(id: number, p: Pending<W>, out: Output<W>[]): void {
    if (p.waiter?.abandoned) return;
    out.push({ type: "send", text: encodeRequest(id, p.op, p.fields) });
    this.inFlight.set(id, p);
  }

  /** Feeds one text frame from the server. */
  handleText(text: string): Output<W>[] {
    return this.handleFrame(parseServerFrame(text));
  }

  /** Feeds one parsed text frame (the driver parses once, so room frames can be taken first). */
  handleFrame(frame: ServerFrame | null): Output<W>[] {
    if (!frame) return [];
    return frame.kind === "reply" ? this.handleReply(frame.reply) : this.handleEvent(frame.event);
  }

  private handleReply(reply: Reply): Output<W>[] {
    const out: Output<W>[] = [];
    if (reply.id === null) {
      // A reply to a frame the server could not read: nothing to match it to.
      if (reply.error) out.push({ type: "event", event: { event: "error", ...reply.error } });
      return out;
    }
    if (this.phase.kind === "connecting" && this.phase.id === reply.id) {
      this.handleConnectReply(reply, out);
      return out;
    }
    const p = this.inFlight.get(reply.id);
    if (!p) return out;
    this.inFlight.delete(reply.id);
    if (this.seeding === reply.id) this.seeding = undefined;
    if (reply.ok && !reply.error) this.learn(p.op, reply.ok);
    if (p.waiter !== undefined) {
      if (reply.error) out.push({ type: "reply", waiter: p.waiter, error: errorFromDetail(reply.error) });
      else out.push({ type: "reply", waiter: p.waiter, ok: reply.ok ?? {} });
    }
    return out;
  }

  private learn(op: string, ok: Record<string, unknown>): void {
    if (op === "channel.list" && Array.isArray(ok.channels)) {
      for (const c of ok.channels as Array<{ id?: unknown; last_seq?: unknown }>) {
        if (typeof c.id === "string" && typeof c.last_seq === "number") this.seed(c.id, c.last_seq);
      }
    } else if (op === "channel.create" || op === "channel.join") {
      const c = ok.channel as { id?: unknown; last_seq?: unknown } | undefined;
      if (c && typeof c.id === "string" && typeof c.last_seq === "number") this.seed(c.id, c.last_seq);
    }
  }

  private handleConnectReply(reply: Reply, out: Output<W>[]): void {
    if (reply.error) {
      this.phase = { kind: "offline" };
      out.push({ type: "rejected", error: errorFromDetail(reply.error) });
      return;
    }
    const ok = reply.ok as Partial<ConnectOk> | undefined;
    if (!ok || typeof ok.conn_id !== "string") {
      this.phase = { kind: "offline" };
      out.push({
        type: "rejected",
        error: errorFromDetail({ code: "bad_request", message: "unreadable connect reply" }),
      });
      return;
    }
    this.phase = { kind: "ready" };
    out.push({ type: "connected", ok: ok as ConnectOk });
    if (this.seedOnConnect) {
      // First, so it is answered before anything the user queued.
      this.seeding = this.nextId;
      this.push({ op: "channel.list", fields: {}, waiter: undefined }, out);
    }
    const queuedSubjects = new Set<string>();
    for (const p of this.queued.values()) {
      if (p.op === "subscribe" && typeof p.fields.subject === "string") queuedSubjects.add(p.fields.subject);
    }
    for (const subject of this.subjects.keys()) {
      if (!queuedSubjects.has(subject)) this.push({ op: "subscribe", fields: { subject }, waiter: undefined }, out);
    }
    const queued = [...this.queued.entries()].sort((a, b) => a[0] - b[0]);
    this.queued.clear();
    for (const [id, p] of queued) this.send(id, p, out);
  }

  /**
   * Feeds one event: log events are verified and deduplicated, and delivered complete (the
   * compact form of §B gets its `hash`, `content_hash` and message fields filled in).
   */
  handleEvent(event: UnknownEvent): Output<W>[] {
    const out: Output<W>[] = [];
    if (event.event === "resume_truncated" && typeof event.channel === "string") {
      // Entries before `from_seq` will not come: re-anchor on the first replayed entry.
      this.verifier.forget(event.channel);
      this.known.delete(event.channel);
      this.cursors.delete(event.channel);
      out.push({ type: "event", event });
      return out;
    }
    if (isLogEvent(event)) {
      if (typeof event.channel !== "string" || typeof event.seq !== "number") {
        out.push({ type: "event", event: { event: "error", code: "protocol", message: "log event without channel or seq" } });
        return out;
      }
      let verified: Verified;
      try {
        verified = this.verifier.verify(entryOfEvent(event));
      } catch (e) {
        if (e instanceof ChainError) out.push({ type: "chain_error", error: e });
        else out.push({ type: "chain_error", error: new ChainError("malformed", String(event.channel), Number(event.seq), String(e)) });
        return out;
      }
      if (verified.verdict === "duplicate") return out;
      this.cursors.delete(event.channel);
      this.known.add(event.channel);
      out.push({ type: "event", event: completeLogEvent(event, verified) as unknown as UnknownEvent });
      return out;
    } else if (event.event === "channel_deleted" && typeof event.channel === "string") {
      this.forgetChannel(event.channel);
    }
    out.push({ type: "event", event });
    return out;
  }

  /** Forgets a channel's resume point (deleted or left). */
  forgetChannel(channel: string): void {
    this.verifier.forget(channel);
    this.known.delete(channel);
    this.cursors.delete(channel);
  }

  /**
   * The connection dropped: fails what was in flight with `DisconnectedError`, except sends
   * with a `client_id`, queued to be resent after the next `connect`.
   */
  disconnected(reason: string): Output<W>[] {
    const wasReady = this.ready;
    this.phase = { kind: "offline" };
    this.seeding = undefined;
    const out: Output<W>[] = [];
    const inFlight = [...this.inFlight.entries()].sort((a, b) => a[0] - b[0]);
    this.inFlight.clear();
    for (const [id, p] of inFlight) {
      const retryable = p.op === "message.send" && typeof p.fields.client_id === "string";
      if (retryable) this.queued.set(id, p);
      else if (p.waiter !== undefined) out.push({ type: "reply", waiter: p.waiter, error: new DisconnectedError() });
    }
    // Background requests (unsubscribes) queued while offline are moot.
    for (const [id, p] of this.queued) if (p.waiter === undefined) this.queued.delete(id);
    if (wasReady) out.push({ type: "disconnected", reason });
    return out;
  }

  /** The client stops for good: every waiting caller gets `error`. */
  shutdown(error: () => HeraldError): Output<W>[] {
    this.phase = { kind: "offline" };
    const all = [...this.inFlight.entries(), ...this.queued.entries()].sort((a, b) => a[0] - b[0]);
    this.inFlight.clear();
    this.queued.clear();
    const out: Output<W>[] = [];
    for (const [, p] of all) if (p.waiter !== undefined) out.push({ type: "reply", waiter: p.waiter, error: error() });
    return out;
  }
}
