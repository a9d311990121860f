/**
 * Rooms (PROTOCOL.md §8, docs/protocol.md §J and §P), in the shape of the Rust SDK's
 * `room.rs`: `client.room(channel)` is a channel used as a room of participants: presence
 * (`enter`, `update`, `leave`, `participants()`), typed JSON messages to one participant or to
 * all others with an optional binary attachment (a binary frame, §1), and streams whose
 * writer waits for the reader's credit.
 *
 * Room requests bypass the session (no resend: a participant lives as long as one
 * connection). Their ids start at 2^40, far above the session's, so a reply is sorted out by
 * its id; room events by their name. A request made while offline fails at once with
 * `DisconnectedError`; when the connection drops, requests in flight fail the same way,
 * streams end with it, and every room emits `disconnected`. A room that was entered is
 * entered again after the reconnect (with the same attributes; `reenter: false` turns it
 * off), and the differences to the list it had are emitted as `participant_*` events.
 */
import type { Connection, FrameHook } from "./client.js";
import { DisconnectedError, errorFromDetail, HeraldError, NotFoundError, ProtocolError, TimeoutError } from "./errors.js";
import { encodeBinaryFrame, parseBinaryFrame, type ChannelSummary, type Json, type ServerFrame } from "./frames.js";

/** Room request ids start here (2^40): the session's never get there. */
export const FIRST_ROOM_ID = 2 ** 40;
/** Largest chunk a {@link StreamWriter} sends in one frame. */
export const CHUNK_BYTES = 64 * 1024;
/** The credit window of `accept()` when none is given (1 MiB, the server's default too). */
export const DEFAULT_STREAM_CREDIT = 1 << 20;
/** How long `createStream` waits for the reader (the server gives up after 30 s). */
const STREAM_OPEN_WAIT_MS = 35_000;
/** Stream events that came before their stream was known (a writer's first credit may precede the `stream.open` reply): at most this many streams, this many events each. */
const EARLY_STREAMS = 256;
const EARLY_EVENTS = 4096;

export const ROOM_EVENTS: ReadonlySet<string> = new Set([
  "participant_added",
  "participant_updated",
  "participant_removed",
  "presence_count",
  "room_message",
  "stream_request",
  "stream_chunk",
  "stream_credit",
  "stream_closed",
  "stream_aborted",
]);

export type Attributes = { [k: string]: Json };

/** One participant: a connection that entered the room. `kind` is its token's. */
export interface Participant {
  participant_id: string;
  user: string;
  name?: string;
  kind: "human" | "agent" | "service";
  attributes: Attributes;
}

/** `room.enter`'s answer: the list (the caller included), or only the count past the server's list limit. */
export interface EnterResult {
  participant_id: string;
  /** The room's channel id (absent from a server that predates it). */
  channel?: string;
  participants?: Participant[];
  count?: number;
}

/** A room message received: typed JSON and, when sent with one, the attachment's bytes. */
export interface RoomMessage {
  channel: string;
  from: Participant;
  type: string;
  message: Json;
  attachment?: Uint8Array;
}

export interface RoomEvents {
  message: RoomMessage;
  participant_added: Participant;
  participant_updated: Participant;
  participant_removed: Participant;
  /** The number of participants (the caller included) in a room past the server's list limit. */
  presence_count: number;
  /** Someone opens a stream to this participant: `accept()` or `reject()` it. */
  stream: IncomingStream;
  /** Entered (again, after a reconnect, too). */
  entered: EnterResult;
  /** The connection dropped: the participant is gone until the room is entered again. */
  disconnected: { reason: string };
  /** Entering again after a reconnect failed. */
  error: HeraldError;
}
export type RoomEventName = keyof RoomEvents;

type AnyEvent = { event: string; [k: string]: unknown };

interface Pending {
  resolve(ok: Record<string, unknown>): void;
  reject(e: HeraldError): void;
  timer: ReturnType<typeof setTimeout>;
}

/** Whatever receives one stream's events (a writer or a reader). */
interface StreamEnd {
  handle(event: AnyEvent, bytes: Uint8Array | undefined): void;
  gone(error: HeraldError): void;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function streamGone(message: string): NotFoundError {
  return new NotFoundError({ code: "not_found", message });
}

/** The room part of a connection: one per {@link Connection}, a {@link FrameHook} on it. */
export class RoomDriver implements FrameHook {
  private static drivers = new WeakMap<Connection, RoomDriver>();
  private nextId = FIRST_ROOM_ID;
  private pending = new Map<number, Pending>();
  /** Rooms by channel id (known once resolved; a name and the id make two handles, both fed). */
  private byChannel = new Map<string, Set<Room>>();
  /** Handles by the reference they were made with. */
  private handles = new Map<string, Room>();
  private streams = new Map<string, StreamEnd>();
  private early = new Map<string, Array<{ event: AnyEvent; bytes: Uint8Array | undefined }>>();

  private constructor(readonly conn: Connection) {
    conn.addHook(this);
    conn.on("disconnected", ((e: { reason: string }) => this.disconnected(e.reason)) as (p: never) => void);
    conn.on("closed", (() => this.disconnected("the client is closed")) as (p: never) => void);
    conn.on("connected", (() => {
      for (const room of this.handles.values()) room.reconnected();
    }) as (p: never) => void);
  }

  /** The driver of a connection (made on first use). */
  static of(conn: Connection): RoomDriver {
    let d = RoomDriver.drivers.get(conn);
    if (!d) {
      d = new RoomDriver(conn);
      RoomDriver.drivers.set(conn, d);
    }
    return d;
  }

  /** The handle for a channel reference (the same object for the same string). */
  room(channel: string, opts: RoomOptions = {}): Room {
    let r = this.handles.get(channel);
    if (!r) {
      r = new Room(this, channel, opts);
      this.handles.set(channel, r);
      if (UUID.test(channel)) this.bind(r, channel.toLowerCase());
    }
    return r;
  }

  /** Records which channel id a handle stands for. */
  bind(room: Room, channelId: string): void {
    let set = this.byChannel.get(channelId);
    if (!set) this.byChannel.set(channelId, (set = new Set()));
    set.add(room);
  }

  get timeoutMs(): number {
    return this.conn.opts.requestTimeoutMs ?? 15_000;
  }

  /** Sends a room request (a binary frame when `bytes` are given); resolves with its `ok`. */
  request(op: string, fields: Record<string, unknown>, bytes?: Uint8Array, timeoutMs = this.timeoutMs): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    const header = { id, op, ...fields };
    let frame: string | Uint8Array;
    try {
      frame = bytes !== undefined ? encodeBinaryFrame(header, bytes) : JSON.stringify(header);
    } catch (e) {
      return Promise.reject(new ProtocolError(`${op}: cannot encode the request: ${String(e)}`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TimeoutError(`${op}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      if (!this.conn.sendFrame(frame)) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new DisconnectedError("not connected: a room request is not queued (a participant lives as long as one connection)"));
      }
    });
  }

  /** Routes one stream's events to `end`, with what came for it already. */
  route(streamId: string, end: StreamEnd): void {
    this.streams.set(streamId, end);
    const early = this.early.get(streamId);
    this.early.delete(streamId);
    for (const e of early ?? []) {
      if (this.streams.get(streamId) !== end) break;
      this.dispatchStream(streamId, e.event, e.bytes);
    }
  }

  unroute(streamId: string): void {
    this.streams.delete(streamId);
    this.early.delete(streamId);
  }

  // FrameHook ------------------------------------------------------------------------------

  frame(frame: ServerFrame): boolean {
    if (frame.kind === "reply") {
      const id = frame.reply.id;
      if (id === null || id < FIRST_ROOM_ID) return false;
      const p = this.pending.get(id);
      if (!p) return true;
      this.pending.delete(id);
      clearTimeout(p.timer);
      if (frame.reply.error) p.reject(errorFromDetail(frame.reply.error));
      else p.resolve(frame.reply.ok ?? {});
      return true;
    }
    if (!ROOM_EVENTS.has(frame.event.event)) return false;
    this.dispatch(frame.event, undefined);
    return true;
  }

  binary(bytes: Uint8Array): void {
    const parsed = parseBinaryFrame(bytes);
    if (!parsed) return; // unreadable: nothing to route it to
    const header = parsed.header;
    if (typeof header.event === "string" && ROOM_EVENTS.has(header.event)) {
      this.dispatch(header as AnyEvent, parsed.bytes);
    } else if (typeof header.id === "number" && (header.ok !== undefined || header.error !== undefined)) {
      this.frame({ kind: "reply", reply: { id: header.id, ...(isObject(header.ok) ? { ok: header.ok } : {}), ...(isObject(header.error) ? { error: header.error as never } : {}) } });
    }
  }

  // ----------------------------------------------------------------------------------------

  private dispatch(event: AnyEvent, bytes: Uint8Array | undefined): void {
    if (typeof event.stream_id === "string" && event.event !== "stream_request") {
      this.dispatchStream(event.stream_id, event, bytes);
      return;
    }
    if (typeof event.channel !== "string") return;
    for (const room of this.byChannel.get(event.channel) ?? []) room.handle(event, bytes);
  }

  private dispatchStream(streamId: string, event: AnyEvent, bytes: Uint8Array | undefined): void {
    const end = this.streams.get(streamId);
    if (end) {
      if (event.event === "stream_closed" || event.event === "stream_aborted") this.streams.delete(streamId);
      end.handle(event, bytes);
      return;
    }
    let list = this.early.get(streamId);
    if (!list) {
      if (this.early.size >= EARLY_STREAMS) {
        // Forget the oldest unclaimed stream.
        const oldest = this.early.keys().next().value;
        if (oldest !== undefined) this.early.delete(oldest);
      }
      list = [];
      this.early.set(streamId, list);
    }
    if (list.length < EARLY_EVENTS) list.push({ event, bytes });
  }

  private disconnected(reason: string): void {
    const err = new DisconnectedError();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    const streams = [...this.streams.values()];
    this.streams.clear();
    this.early.clear();
    for (const s of streams) s.gone(err);
    for (const room of this.handles.values()) room.dropped(reason);
  }
}

export interface RoomOptions {
  /** Enter again after a reconnect when the room was entered (default true). */
  reenter?: boolean;
}

type Listener = (payload: never) => void;

/**
 * A channel used as a room, from `client.room(channel)` (a channel id or name; the caller
 * must be a member). Listen first (`on(...)`), then `enter()`.
 */
export class Room {
  /** The caller's participant id while entered. */
  participantId: string | undefined;
  /** The channel id, once known (an id given, or resolved from the name at `enter`). */
  channelId: string | undefined;
  readonly messaging: RoomMessaging;
  private attributes: Attributes | undefined;
  private remote = new Map<string, Participant>();
  private listeners = new Map<string, Set<Listener>>();
  /** Events that came while `room.enter` was unanswered: applied after its list. */
  private buffered: Array<{ event: AnyEvent; bytes: Uint8Array | undefined }> | undefined;
  /** The count of a room past the server's list limit; `undefined` while the list is complete. */
  private largeCount: number | undefined;
  private resyncing = false;
  /** Whether the caller wants to be in the room (kept through a reconnect). */
  private wanted = false;

  constructor(
    private readonly driver: RoomDriver,
    readonly channel: string,
    private readonly opts: RoomOptions = {},
  ) {
    if (UUID.test(channel)) this.channelId = channel.toLowerCase();
    this.messaging = new RoomMessaging(this, driver);
  }

  /** Whether the caller is a participant now. */
  get entered(): boolean {
    return this.participantId !== undefined;
  }

  /** The other participants (other connections of the same user included), in participant-id order. */
  get remoteParticipants(): Participant[] {
    return [...this.remote.values()].sort((a, b) => (a.participant_id < b.participant_id ? -1 : 1));
  }

  /**
   * How many participants the room has, the caller included: the list's size, or in a room
   * past the server's list limit the last `presence_count`.
   */
  get presenceCount(): number {
    return this.largeCount ?? this.remote.size + (this.entered ? 1 : 0);
  }

  /** Whether {@link remoteParticipants} is the whole room (false past the server's list limit: page with `participants()`). */
  get listComplete(): boolean {
    return this.largeCount === undefined;
  }

  /** Adds a listener; returns the function that removes it. */
  on<K extends RoomEventName>(event: K, cb: (e: RoomEvents[K]) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(cb as Listener);
    return () => {
      set.delete(cb as Listener);
    };
  }

  /** Resolves with the first `event` for which `pred` holds; rejects after `timeoutMs`. */
  waitFor<K extends RoomEventName>(event: K, pred: (e: RoomEvents[K]) => boolean = () => true, timeoutMs = 10_000): Promise<RoomEvents[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new TimeoutError(`no ${event} in room ${this.channel} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on(event, (e) => {
        if (!pred(e)) return;
        clearTimeout(timer);
        off();
        resolve(e);
      });
    });
  }

  private emit<K extends RoomEventName>(event: K, payload: RoomEvents[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const cb of [...set]) {
      try {
        (cb as (p: RoomEvents[K]) => void)(payload);
      } catch (e) {
        // A listener's bug must not break the room; report it where it can be seen.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  listenerCount(event: RoomEventName): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  /** The channel reference for requests, resolving a name to the id events carry. */
  private async target(): Promise<string> {
    if (this.channelId) return this.channelId;
    const ok = await this.driver.conn.request("channel.list", {});
    const list = Array.isArray(ok.channels) ? (ok.channels as ChannelSummary[]) : [];
    const found = list.find((c) => c.name === this.channel || c.id === this.channel);
    if (found) {
      this.channelId = found.id;
      this.driver.bind(this, found.id);
      return found.id;
    }
    // Not a channel of ours: the server names the error (`channel_not_found`, `forbidden`).
    return this.channel;
  }

  /**
   * Enters the room with `attributes` (a JSON object, at most 4 KiB serialized): resolves with
   * the caller's participant id and the participants (or their count past the server's list
   * limit). Entering again replaces the attributes.
   */
  enter(attributes: Attributes = {}): Promise<EnterResult> {
    return this.doEnter(attributes, false);
  }

  /** With `diff`, the reply's list is compared with the one held (after a reconnect) and the changes emitted. */
  private async doEnter(attributes: Attributes, diff: boolean): Promise<EnterResult> {
    const channel = await this.target();
    this.buffered = this.buffered ?? [];
    let ok: Record<string, unknown>;
    try {
      ok = await this.driver.request("room.enter", { channel, attributes });
    } catch (e) {
      this.buffered = undefined;
      throw e;
    }
    const result = ok as unknown as EnterResult;
    if (typeof result.participant_id !== "string") throw new ProtocolError("room.enter: no participant_id in the reply");
    this.participantId = result.participant_id;
    this.attributes = attributes;
    this.wanted = true;
    this.replaceList(result.participants, result.count, diff);
    const buffered = this.buffered ?? [];
    this.buffered = undefined;
    for (const b of buffered) this.apply(b.event, b.bytes);
    this.emit("entered", result);
    return result;
  }

  /** Replaces the caller's attributes (others get `participant_updated`). */
  async update(attributes: Attributes): Promise<void> {
    await this.driver.request("room.update", { channel: await this.target(), attributes });
    this.attributes = attributes;
  }

  /** Leaves the room (others get `participant_removed`); not entered again after a reconnect. */
  async leave(): Promise<void> {
    this.wanted = false;
    const channel = await this.target();
    if (!this.entered) return;
    await this.driver.request("room.leave", { channel });
    this.participantId = undefined;
    this.remote.clear();
    this.largeCount = undefined;
  }

  /** One page of participants after `after` (a participant id), in id order; `limit` 1–1,000 (default 100). */
  async participantsPage(opts: { after?: string; limit?: number } = {}): Promise<{ participants: Participant[]; has_more: boolean }> {
    const fields: Record<string, unknown> = { channel: await this.target() };
    if (opts.after !== undefined) fields.after = opts.after;
    if (opts.limit !== undefined) fields.limit = opts.limit;
    const ok = await this.driver.request("room.participants", fields);
    if (!Array.isArray(ok.participants)) throw new ProtocolError("room.participants: no participants in the reply");
    return { participants: ok.participants as Participant[], has_more: ok.has_more === true };
  }

  /**
   * Every participant (the caller included), paging through the list (`pageSize` per
   * request). While entered it also refreshes {@link remoteParticipants}.
   */
  async participants(pageSize = 1000): Promise<Participant[]> {
    const all: Participant[] = [];
    for (;;) {
      const after = all[all.length - 1]?.participant_id;
      const page = await this.participantsPage(after === undefined ? { limit: pageSize } : { after, limit: pageSize });
      all.push(...page.participants);
      if (!page.has_more || page.participants.length === 0) break;
    }
    if (this.entered) this.replaceList(all, this.largeCount, true);
    return all;
  }

  /** Sets the list from a full snapshot; with `diff`, emits what changed against the old one. */
  private replaceList(list: Participant[] | undefined, count: number | undefined, diff: boolean): void {
    if (list === undefined) {
      this.largeCount = count ?? this.largeCount;
      return;
    }
    const old = this.remote;
    this.remote = new Map();
    for (const p of list) if (p.participant_id !== this.participantId) this.remote.set(p.participant_id, p);
    if (count === undefined) this.largeCount = undefined;
    if (!diff) return;
    for (const [id, p] of old) if (!this.remote.has(id)) this.emit("participant_removed", p);
    for (const [id, p] of this.remote) {
      const was = old.get(id);
      if (!was) this.emit("participant_added", p);
      else if (JSON.stringify(was.attributes) !== JSON.stringify(p.attributes)) this.emit("participant_updated", p);
    }
  }

  /** An event of this room from the driver. */
  handle(event: AnyEvent, bytes: Uint8Array | undefined): void {
    if (this.buffered) {
      this.buffered.push({ event, bytes });
      return;
    }
    this.apply(event, bytes);
  }

  private apply(event: AnyEvent, bytes: Uint8Array | undefined): void {
    switch (event.event) {
      case "participant_added":
      case "participant_updated":
      case "participant_removed": {
        const p = event.participant as Participant | undefined;
        if (!p || typeof p.participant_id !== "string" || p.participant_id === this.participantId) return;
        if (this.largeCount !== undefined) {
          // Events flow again: the room is back under the list limit, and what changed past it
          // was never sent: take the whole list once.
          this.resync();
        }
        if (event.event === "participant_removed") {
          // A removal of someone never seen (coalescing folded the add away) is a no-op.
          if (this.remote.delete(p.participant_id)) this.emit("participant_removed", p);
          return;
        }
        const known = this.remote.has(p.participant_id);
        this.remote.set(p.participant_id, p);
        // An update of an unknown participant is an addition (§J).
        this.emit(known ? "participant_updated" : "participant_added", p);
        return;
      }
      case "presence_count":
        if (typeof event.count === "number") {
          this.largeCount = event.count;
          this.emit("presence_count", event.count);
        }
        return;
      case "room_message": {
        const from = event.from as Participant | undefined;
        if (!from || typeof event.type !== "string") return;
        const m: RoomMessage = { channel: String(event.channel), from, type: event.type, message: (event.message ?? null) as Json };
        if (bytes !== undefined) m.attachment = bytes;
        this.emit("message", m);
        return;
      }
      case "stream_request": {
        const from = event.from as Participant | undefined;
        if (typeof event.stream_id !== "string" || !from) return;
        const req = new IncomingStream(this.driver, event.stream_id, from, (event.header ?? null) as Json);
        if (this.listenerCount("stream") === 0) {
          // Nobody here takes streams: say so now rather than let the writer wait 30 s.
          void req.reject().catch(() => undefined);
          return;
        }
        this.emit("stream", req);
        return;
      }
    }
  }

  private resync(): void {
    if (this.resyncing) return;
    this.resyncing = true;
    this.participants()
      .then(() => {
        this.largeCount = undefined;
      })
      .catch(() => undefined)
      .finally(() => {
        this.resyncing = false;
      });
  }

  /** The connection dropped (driver). */
  dropped(reason: string): void {
    const was = this.entered;
    this.participantId = undefined;
    this.buffered = undefined;
    // The list is kept while the room will be entered again (the differences are emitted
    // then); otherwise nobody is known to be here any more.
    if (!this.wanted || this.opts.reenter === false) {
      this.wanted = false;
      this.remote.clear();
      this.largeCount = undefined;
    }
    if (was) this.emit("disconnected", { reason });
  }

  /** The connection is back (driver): enter again if the caller was in the room. */
  reconnected(): void {
    if (!this.wanted || this.opts.reenter === false) return;
    void this.doEnter(this.attributes ?? {}, true).then(
      () => undefined,
      (e: unknown) => {
        // Left the channel meanwhile, or the connection dropped again (then it is retried).
        if (!(e instanceof DisconnectedError)) this.wanted = false;
        this.emit("error", e instanceof HeraldError ? e : new HeraldError("room", String(e)));
      },
    );
  }

  /** The channel reference for requests (for {@link RoomMessaging}). */
  channelRef(): Promise<string> {
    return this.target();
  }
}

function participantId(to: string | Participant): string {
  return typeof to === "string" ? to : to.participant_id;
}

/** `room.messaging`: messages, attachments and streams between participants. */
export class RoomMessaging {
  constructor(
    private readonly room: Room,
    private readonly driver: RoomDriver,
  ) {}

  /** Makes the caller a participant (entering with no attributes unless it already is). */
  async enable(attributes?: Attributes): Promise<void> {
    if (!this.room.entered || attributes !== undefined) await this.room.enter(attributes ?? {});
  }

  get remoteParticipants(): Participant[] {
    return this.room.remoteParticipants;
  }

  on<K extends RoomEventName>(event: K, cb: (e: RoomEvents[K]) => void): () => void {
    return this.room.on(event, cb);
  }

  /** A message to one participant (`to`: its id or the participant), with an optional attachment (≤ the server's `--max-attachment-bytes`). */
  async sendMessage(to: string | Participant, type: string, message: Json, attachment?: Uint8Array): Promise<void> {
    const channel = await this.room.channelRef();
    await this.driver.request("room.send", { channel, to: participantId(to), type, message }, attachment);
  }

  /** A message to every other participant, with an optional attachment. */
  async broadcastMessage(type: string, message: Json, attachment?: Uint8Array): Promise<void> {
    const channel = await this.room.channelRef();
    await this.driver.request("room.broadcast", { channel, type, message }, attachment);
  }

  /**
   * Opens a stream to participant `to`: resolves with its writer once the reader accepts
   * (`ForbiddenError` if it rejects, `NotFoundError` if it is gone or does not answer in 30 s).
   */
  async createStream(to: string | Participant, header: Json = {}): Promise<StreamWriter> {
    const channel = await this.room.channelRef();
    const writer = new StreamWriter(this.driver);
    const ok = await this.driver.request("stream.open", { channel, to: participantId(to), header }, undefined, Math.max(this.driver.timeoutMs, STREAM_OPEN_WAIT_MS));
    if (typeof ok.stream_id !== "string") throw new ProtocolError("stream.open: no stream_id in the reply");
    writer.start(ok.stream_id);
    return writer;
  }
}

/** A `stream_request`: accept it for a {@link StreamReader}, or reject it. */
export class IncomingStream {
  private answered = false;
  constructor(
    private readonly driver: RoomDriver,
    readonly streamId: string,
    readonly from: Participant,
    readonly header: Json,
  ) {}

  /** Accepts with a credit window (default 1 MiB): the reader grants more as it is consumed. */
  async accept(opts: { credit?: number } = {}): Promise<StreamReader> {
    if (this.answered) throw new HeraldError("bad_request", "this stream request was answered already");
    this.answered = true;
    const window = Math.max(1, Math.floor(opts.credit ?? DEFAULT_STREAM_CREDIT));
    const reader = new StreamReader(this.driver, this.streamId, window);
    // Routed first, so no chunk can come before its reader exists.
    this.driver.route(this.streamId, reader);
    try {
      await this.driver.request("stream.accept", { stream_id: this.streamId, credit: window });
    } catch (e) {
      this.driver.unroute(this.streamId);
      throw e;
    }
    return reader;
  }

  /** Rejects: the writer's `createStream` fails with `ForbiddenError`. */
  async reject(): Promise<void> {
    if (this.answered) return;
    this.answered = true;
    await this.driver.request("stream.reject", { stream_id: this.streamId });
  }
}

/**
 * The writing side of a stream. `write` sends within the credit the reader granted (in
 * frames of at most {@link CHUNK_BYTES}) and waits for more, so a slow reader paces it.
 */
export class StreamWriter implements StreamEnd {
  streamId = "";
  private creditLeft = 0;
  private sent = 0;
  private waits = 0;
  private error: HeraldError | undefined;
  private wake: (() => void) | undefined;
  private closed = false;

  constructor(private readonly driver: RoomDriver) {}

  /** (internal) The stream is open: take its events. */
  start(streamId: string): void {
    this.streamId = streamId;
    this.driver.route(streamId, this);
  }

  /** Credit granted and not used yet. */
  get credit(): number {
    return this.creditLeft;
  }

  /** Payload bytes written so far. */
  get bytesSent(): number {
    return this.sent;
  }

  /** How many times a write had to wait for credit. */
  get creditWaits(): number {
    return this.waits;
  }

  handle(event: AnyEvent): void {
    if (event.event === "stream_credit" && typeof event.bytes === "number" && event.bytes > 0) {
      this.creditLeft += event.bytes;
    } else if (event.event === "stream_closed") {
      this.error ??= streamGone("the reader closed the stream");
    } else if (event.event === "stream_aborted") {
      this.error ??= streamGone(`stream aborted: ${String(event.reason ?? "")}`);
    }
    this.notify();
  }

  gone(error: HeraldError): void {
    this.error ??= error;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private waitForCredit(): Promise<void> {
    this.waits += 1;
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  /** Writes `chunk`, waiting for credit as needed; resolves once the server took every frame of it. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.closed) throw streamGone("the stream is closed");
    const replies: Array<Promise<unknown>> = [];
    let failed: HeraldError | undefined;
    let at = 0;
    while (at < chunk.length) {
      while (this.creditLeft === 0 && !this.error && !failed) await this.waitForCredit();
      if (this.error) throw this.error;
      if (failed) break;
      const n = Math.min(chunk.length - at, CHUNK_BYTES, this.creditLeft);
      const part = chunk.subarray(at, at + n);
      this.creditLeft -= n;
      this.sent += n;
      at += n;
      // Pipelined: the credit bounds what is in flight.
      replies.push(
        this.driver.request("stream.chunk", { stream_id: this.streamId }, part).catch((e: unknown) => {
          failed ??= e instanceof HeraldError ? e : new HeraldError("stream", String(e));
          this.notify();
        }),
      );
    }
    await Promise.all(replies);
    if (failed) throw failed;
  }

  /** Ends the stream: the reader's iteration ends after the last chunk. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.driver.unroute(this.streamId);
    if (this.error) throw this.error;
    await this.driver.request("stream.close", { stream_id: this.streamId });
  }
}

/**
 * The reading side of a stream: `for await (const chunk of reader)` yields the chunks in
 * order; every consumed chunk counts toward the next credit grant (half the window at a
 * time, like the Rust SDK's), so the writer runs at the reader's pace and at most the window
 * is ever buffered. Breaking out of the loop closes the stream.
 */
export class StreamReader implements StreamEnd, AsyncIterable<Uint8Array> {
  private queue: Uint8Array[] = [];
  private consumedSinceGrant = 0;
  private consumed = 0;
  private ended = false;
  private error: HeraldError | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly driver: RoomDriver,
    readonly streamId: string,
    readonly window: number,
  ) {}

  /** Payload bytes handed to the application so far. */
  get bytesConsumed(): number {
    return this.consumed;
  }

  /** Chunks received and not read yet (at most the window's worth). */
  get buffered(): number {
    return this.queue.reduce((n, c) => n + c.length, 0);
  }

  handle(event: AnyEvent, bytes: Uint8Array | undefined): void {
    if (event.event === "stream_chunk") {
      this.queue.push(bytes ?? new Uint8Array(0));
    } else if (event.event === "stream_closed") {
      this.ended = true;
    } else if (event.event === "stream_aborted") {
      this.error ??= streamGone(`stream aborted: ${String(event.reason ?? "")}`);
    }
    this.notify();
  }

  gone(error: HeraldError): void {
    this.error ??= error;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private grant(): void {
    if (this.consumedSinceGrant < this.window / 2) return;
    const bytes = this.consumedSinceGrant;
    this.consumedSinceGrant = 0;
    // In order with the connection's other frames; a failure shows as the stream ending.
    this.driver.request("stream.credit", { stream_id: this.streamId, bytes }).catch(() => undefined);
  }

  /** The next chunk, or `undefined` once the writer closed the stream. */
  async read(): Promise<Uint8Array | undefined> {
    for (;;) {
      const next = this.queue.shift();
      if (next !== undefined) {
        this.consumed += next.length;
        this.consumedSinceGrant += next.length;
        this.grant();
        return next;
      }
      if (this.error) throw this.error;
      if (this.ended) {
        this.driver.unroute(this.streamId);
        return undefined;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  /** Every remaining chunk, concatenated. */
  async readAll(): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let n = 0;
    for (let c = await this.read(); c !== undefined; c = await this.read()) {
      parts.push(c);
      n += c.length;
    }
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Stops reading: the writer's next write fails (`stream_closed`). */
  async close(): Promise<void> {
    if (this.ended || this.error) return;
    this.ended = true;
    this.queue = [];
    this.driver.unroute(this.streamId);
    await this.driver.request("stream.close", { stream_id: this.streamId });
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: async () => {
        const value = await this.read();
        return value === undefined ? { done: true, value: undefined } : { done: false, value };
      },
      return: async () => {
        await this.close().catch(() => undefined);
        return { done: true, value: undefined };
      },
    };
  }
}
