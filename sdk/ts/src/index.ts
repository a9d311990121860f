/**
 * `@herald-chat/client`: the TypeScript SDK of Herald (PROTOCOL.md). One connection per
 * client, reconnect and resume with no gap and no duplicate, chain verification of every
 * log entry, typed errors, and one namespace per concept:
 *
 * - `client.space`: channels (`createChannel`, `joinChannel`, `listChannels`, `createSpace`),
 *   each a {@link Space} handle with messages, edits, reactions, receipts, typing, ephemeral
 *   signals and files;
 * - `client.message`: pub/sub subjects (`subscribe`, `publish`);
 * - `client.realtime`: every event (`on(name, cb)` returns an unsubscribe function).
 */
import { Connection, randomId, type ConnectOptions } from "./client.js";
import { HeraldError } from "./errors.js";
import type {
  Channel,
  ChannelSummary,
  EphemeralEvent,
  HistoryPage,
  Json,
  Message,
  MessageDeletedEvent,
  MessageEditedEvent,
  MessageEvent,
  MessageReadEvent,
  PublicationEvent,
  ReactionDeletedEvent,
  ReactionEvent,
  TypingEvent,
  MemberJoinedEvent,
  MemberLeftEvent,
  ChannelCreatedEvent,
  ChannelDeletedEvent,
  ResumeTruncatedEvent,
  KeyRotatedEvent,
} from "./frames.js";
import type { ConnectOk } from "./session.js";
import { RoomDriver, type Room, type RoomOptions } from "./rooms.js";
import { isPrivateChannel, joinPrivateChannel } from "./auth.js";
import type { ChainError } from "./errors.js";
// End-to-end encryption (docs/protocol.md §O): types only here, so an app that does not
// encrypt never bundles the WebAssembly; the device comes from `@herald-chat/client/e2ee`.
import type { E2ee, DirectMessage, DirectMessageFailure } from "./e2ee/e2ee.js";
import type { EncryptedSpace } from "./e2ee/channel.js";
export type { E2ee, DirectMessage, DirectMessageFailure } from "./e2ee/e2ee.js";
export type { EncryptedSpace, DecryptedMessage } from "./e2ee/channel.js";

/** What `e2ee(options)` of `@herald-chat/client/e2ee` gives `Herald.connect`: opens the device. */
export interface E2eeProvider {
  open(conn: Connection, token: string): Promise<E2ee>;
}

export * from "./errors.js";
export * from "./frames.js";
export { ChainVerifier, contentHash, entryHash, verifyEntry, type EntryFields, type EntryHashes, type EntryKind, type Verdict, type Verified, type WireEntry } from "./chain.js";
export { Session, type Output, type ConnectOk } from "./session.js";
export { endpoints, type ConnectOptions, type WebSocketLike, type WebSocketCtor, type TokenProvider } from "./client.js";
export { jwtExpMs, refreshDelayMs } from "./token.js";
export {
  Room,
  RoomMessaging,
  StreamWriter,
  StreamReader,
  IncomingStream,
  CHUNK_BYTES,
  DEFAULT_STREAM_CREDIT,
  type Participant,
  type Attributes,
  type EnterResult,
  type RoomMessage,
  type RoomEvents,
  type RoomEventName,
  type RoomOptions,
} from "./rooms.js";
export {
  isPrivateChannel,
  PRIVATE_PREFIX,
  type PrivateChannelOptions,
  type ChannelAuthorizer,
  type ChannelAuthRequest,
  type AuthHeaders,
} from "./auth.js";

/** Every event `client.realtime.on` knows, by its camelCase name, with its payload. */
export interface RealtimeEvents {
  message: MessageEvent;
  /** A `message` that replies to another (`message.reply_to` set). */
  reply: MessageEvent;
  messageEdited: MessageEditedEvent;
  messageDeleted: MessageDeletedEvent;
  reaction: ReactionEvent;
  reactionDeleted: ReactionDeletedEvent;
  messageRead: MessageReadEvent;
  typing: TypingEvent;
  ephemeral: EphemeralEvent;
  memberJoined: MemberJoinedEvent;
  memberLeft: MemberLeftEvent;
  channelCreated: ChannelCreatedEvent;
  channelDeleted: ChannelDeletedEvent;
  keyRotated: KeyRotatedEvent;
  publication: PublicationEvent;
  resumeTruncated: ResumeTruncatedEvent;
  connected: ConnectOk;
  disconnected: { reason: string; code?: number };
  reconnecting: { attempt: number; delayMs: number; reason: string };
  chainError: ChainError;
  error: HeraldError;
  closed: { error?: HeraldError };
}
export type RealtimeEventName = keyof RealtimeEvents;

const WIRE_NAME: Record<RealtimeEventName, string> = {
  message: "message",
  reply: "message",
  messageEdited: "message_edited",
  messageDeleted: "message_deleted",
  reaction: "reaction",
  reactionDeleted: "reaction_deleted",
  messageRead: "message_read",
  typing: "typing",
  ephemeral: "ephemeral",
  memberJoined: "member_joined",
  memberLeft: "member_left",
  channelCreated: "channel_created",
  channelDeleted: "channel_deleted",
  keyRotated: "key_rotated",
  publication: "publication",
  resumeTruncated: "resume_truncated",
  connected: "connected",
  disconnected: "disconnected",
  reconnecting: "reconnecting",
  chainError: "chain_error",
  error: "error",
  closed: "closed",
};

/** `client.realtime`: listeners for every event, by camelCase name (or the wire's snake_case one). */
export class Realtime {
  constructor(private readonly conn: Connection) {}

  on<K extends RealtimeEventName>(event: K, cb: (e: RealtimeEvents[K]) => void): () => void;
  on(event: string, cb: (e: Record<string, unknown>) => void): () => void;
  on(event: string, cb: (e: never) => void): () => void {
    const wire = (WIRE_NAME as Record<string, string>)[event] ?? event;
    if (event === "reply") {
      return this.conn.on(wire, ((e: MessageEvent) => {
        if (e.message?.reply_to) (cb as (e: MessageEvent) => void)(e);
      }) as (p: never) => void);
    }
    return this.conn.on(wire, cb);
  }

  /** Resolves with the first event `event` for which `pred` holds; rejects after `timeoutMs`. */
  waitFor<K extends RealtimeEventName>(
    event: K,
    pred: (e: RealtimeEvents[K]) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<RealtimeEvents[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new HeraldError("timeout", `no ${event} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on(event, (e: RealtimeEvents[K]) => {
        if (!pred(e)) return;
        clearTimeout(timer);
        off();
        resolve(e);
      });
    });
  }
}

/** `client.message`: pub/sub subjects (never stored, §4). */
export class Messaging {
  constructor(
    private readonly conn: Connection,
    private readonly e2ee?: E2ee,
  ) {}

  /**
   * An end-to-end encrypted direct message to `"user:<id>"`: one Olm ciphertext per device of
   * the user and of one's own other devices, kept in the server's offline inbox until each
   * device acknowledges it (§O). Needs `Herald.connect({..., e2ee})`. Resolves with the copies' ids.
   */
  async send(to: string, payload: Uint8Array | string): Promise<string[]> {
    if (!this.e2ee) throw new HeraldError("e2ee_disabled", "direct messages need a device: connect with the `e2ee` option");
    if (!to.startsWith("user:") || to.length <= 5) throw new HeraldError("bad_request", `send to "user:<id>", not ${JSON.stringify(to)}`);
    return this.e2ee.sendDm(to.slice(5), payload);
  }

  /** Every direct message of this device, decrypted (inbox first), or with why it cannot be (`failure`). */
  onDirect(cb: (dm: DirectMessage | undefined, failure: DirectMessageFailure | undefined) => void): () => void {
    if (!this.e2ee) throw new HeraldError("e2ee_disabled", "direct messages need a device: connect with the `e2ee` option");
    return this.e2ee.onDm(cb);
  }

  /**
   * Subscribes to `subject` (resubscribed after every reconnect); `cb` gets each publication.
   * Resolves, once the server confirmed, with the function that unsubscribes.
   */
  async subscribe(subject: string, cb: (data: Json, e: PublicationEvent) => void): Promise<() => void> {
    const off = this.conn.on("publication", ((e: PublicationEvent) => {
      if (e.subject === subject) cb(e.data, e);
    }) as (p: never) => void);
    try {
      await this.conn.subscribe(subject);
    } catch (e) {
      off();
      this.conn.unsubscribe(subject);
      throw e;
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      off();
      this.conn.unsubscribe(subject);
    };
  }

  /** Publishes `data` (any JSON) to every subscriber of `subject`. */
  async publish(subject: string, data: Json): Promise<void> {
    await this.conn.request("publish", { subject, data });
  }
}

export interface CreateChannelOptions {
  name?: string;
  title?: string;
  members?: string[];
  policy?: "open" | "invite";
  encrypted?: boolean;
}

export interface SendOptions {
  type?: string;
  /** The id of the message this one replies to. */
  replyTo?: string;
  /** Idempotency key; a random one is made when absent so a resend after a reconnect never doubles. */
  clientId?: string;
}

export interface HistoryOptions {
  limit?: number;
  before?: number;
  after?: number;
  from?: string;
  to?: string;
}

export interface Member {
  user: string;
  name?: string | null;
  kind?: string;
  last_read: number;
}

/** One channel (a "space"): its messages, edits, reactions, receipts, typing, signals and files. */
export class Space {
  constructor(
    private readonly conn: Connection,
    public channel: Channel,
  ) {}

  get id(): string {
    return this.channel.id;
  }

  get name(): string | null {
    return this.channel.name;
  }

  private listen<T extends { channel: string }>(wire: string, cb: (e: T) => void): () => void {
    return this.conn.on(wire, ((e: T) => {
      if (e.channel === this.channel.id) cb(e);
    }) as (p: never) => void);
  }

  /** Sends a message (plain text, JSON text, anything as a string); resolves when durable. */
  async sendMessage(body: string, opts: SendOptions = {}): Promise<Message> {
    const fields: Record<string, unknown> = {
      channel: this.id,
      content: body,
      client_id: opts.clientId ?? randomId(),
    };
    if (opts.type) fields.type = opts.type;
    if (opts.replyTo) fields.reply_to = opts.replyTo;
    const ok = await this.conn.request("message.send", fields);
    return ok.message as Message;
  }

  /** Replies to `messageId`. */
  reply(messageId: string, body: string, opts: Omit<SendOptions, "replyTo"> = {}): Promise<Message> {
    return this.sendMessage(body, { ...opts, replyTo: messageId });
  }

  /** One page of history: newest first (or oldest first with `after`), edits applied, deletes absent. */
  async history(opts: HistoryOptions = {}): Promise<HistoryPage> {
    const ok = await this.conn.request("history", { channel: this.id, ...opts });
    return ok as unknown as HistoryPage;
  }

  async editMessage(messageId: string, content: string): Promise<Message> {
    const ok = await this.conn.request("message.edit", { channel: this.id, message_id: messageId, content });
    return ok.message as Message;
  }

  async deleteMessage(messageId: string): Promise<void> {
    await this.conn.request("message.delete", { channel: this.id, message_id: messageId });
  }

  /** Adds a reaction; resolves with its `reaction_id`. */
  async react(messageId: string, emoji: string): Promise<string> {
    const ok = await this.conn.request("reaction.add", { channel: this.id, message_id: messageId, emoji });
    return ok.reaction_id as string;
  }

  async unreact(reactionId: string): Promise<void> {
    await this.conn.request("reaction.remove", { channel: this.id, reaction_id: reactionId });
  }

  /** Marks everything up to `messageId` read (a receipt other members see). */
  async markRead(messageId: string): Promise<void> {
    await this.conn.request("read", { channel: this.id, message_id: messageId });
  }

  async typing(isTyping = true): Promise<void> {
    await this.conn.request("typing", { channel: this.id, is_typing: isTyping });
  }

  /** A signal to the other members, never stored. */
  async sendEphemeral(subject: string, data: Json): Promise<void> {
    await this.conn.request("ephemeral", { channel: this.id, subject, data });
  }

  async leave(): Promise<void> {
    await this.conn.request("channel.leave", { channel: this.id });
    this.conn.session.forgetChannel(this.id);
  }

  async addMember(user: string): Promise<void> {
    await this.conn.request("channel.add_member", { channel: this.id, user });
  }

  async removeMember(user: string): Promise<void> {
    await this.conn.request("channel.remove_member", { channel: this.id, user });
  }

  async delete(): Promise<void> {
    await this.conn.request("channel.delete", { channel: this.id });
  }

  /** The channel and its members with their read markers (REST `GET /v1/channels/{id}`). */
  async members(): Promise<Member[]> {
    const res = await this.conn.rest("GET", `/v1/channels/${encodeURIComponent(this.id)}`);
    const body = (await res.json()) as { channel: Channel; members: Member[] };
    this.channel = body.channel;
    return body.members;
  }

  /**
   * Stores bytes as a channel blob; resolves with its id (BLAKE3 hex) and size. `onProgress`
   * gets (sent, total) bytes where the platform reports upload progress (browsers).
   */
  async putFile(bytes: Uint8Array, opts: { onProgress?: (sent: number, total: number) => void } = {}): Promise<{ blob_id: string; size: number }> {
    const path = `/v1/channels/${encodeURIComponent(this.id)}/blobs`;
    if (opts.onProgress && typeof XMLHttpRequest !== "undefined") {
      const body = await this.conn.restWithProgress("PUT", path, bytes, opts.onProgress);
      return body as { blob_id: string; size: number };
    }
    const res = await this.conn.rest("PUT", path, bytes);
    opts.onProgress?.(bytes.length, bytes.length);
    return (await res.json()) as { blob_id: string; size: number };
  }

  /** Fetches a channel blob. */
  async getFile(blobId: string): Promise<Uint8Array> {
    const res = await this.conn.rest("GET", `/v1/channels/${encodeURIComponent(this.id)}/blobs/${encodeURIComponent(blobId)}`, undefined, true);
    return new Uint8Array(await res.arrayBuffer());
  }

  onMessage(cb: (m: Message, e: MessageEvent) => void): () => void {
    return this.listen<MessageEvent>("message", (e) => cb(e.message, e));
  }
  onMessageEdited(cb: (e: MessageEditedEvent) => void): () => void {
    return this.listen("message_edited", cb);
  }
  onMessageDeleted(cb: (e: MessageDeletedEvent) => void): () => void {
    return this.listen("message_deleted", cb);
  }
  onReaction(cb: (e: ReactionEvent) => void): () => void {
    return this.listen("reaction", cb);
  }
  onReactionDeleted(cb: (e: ReactionDeletedEvent) => void): () => void {
    return this.listen("reaction_deleted", cb);
  }
  onRead(cb: (e: MessageReadEvent) => void): () => void {
    return this.listen("message_read", cb);
  }
  onTyping(cb: (e: TypingEvent) => void): () => void {
    return this.listen("typing", cb);
  }
  onEphemeral(cb: (e: EphemeralEvent) => void): () => void {
    return this.listen("ephemeral", cb);
  }
  onMemberJoined(cb: (e: MemberJoinedEvent) => void): () => void {
    return this.listen("member_joined", cb);
  }
  onMemberLeft(cb: (e: MemberLeftEvent) => void): () => void {
    return this.listen("member_left", cb);
  }
}

/** `client.space`: creating, joining and listing channels. */
export class Spaces {
  constructor(
    private readonly conn: Connection,
    private readonly e2ee?: E2ee,
  ) {}

  /**
   * Creates a channel (a second create of one's own name is a harmless join). With
   * `{encrypted: true}` (needs the `e2ee` option) it is end-to-end encrypted: the genesis
   * roster commit is posted and an {@link EncryptedSpace} returned (§O).
   */
  createChannel(name: string, options: CreateChannelOptions & { encrypted: true }): Promise<EncryptedSpace>;
  createChannel(nameOrOptions: (CreateChannelOptions & { encrypted: true })): Promise<EncryptedSpace>;
  createChannel(nameOrOptions: string | CreateChannelOptions, options?: CreateChannelOptions): Promise<Space>;
  async createChannel(nameOrOptions: string | CreateChannelOptions, options: CreateChannelOptions = {}): Promise<Space | EncryptedSpace> {
    const opts = typeof nameOrOptions === "string" ? { ...options, name: nameOrOptions } : { ...nameOrOptions, ...options };
    if (opts.encrypted && !this.e2ee) throw new HeraldError("e2ee_disabled", "an encrypted channel needs a device: connect with the `e2ee` option");
    const ok = await this.conn.request("channel.create", { ...opts });
    const space = new Space(this.conn, ok.channel as Channel);
    if (opts.encrypted && this.e2ee) return this.e2ee.encryptedSpace(space, { create: opts.members ?? [] });
    return space;
  }

  /** An encrypted channel the caller is a member of (by id or name), its roster and keys synced when there. */
  async encrypted(idOrName: string): Promise<EncryptedSpace> {
    if (!this.e2ee) throw new HeraldError("e2ee_disabled", "an encrypted channel needs a device: connect with the `e2ee` option");
    const space = await this.get(idOrName);
    if (!space.channel.encrypted) throw new HeraldError("bad_request", `channel ${JSON.stringify(space.id)} is not encrypted`);
    return this.e2ee.encryptedSpace(space, { sync: true });
  }

  /** Joins an open encrypted channel; its keys may come later, from a keeper (`waitForKeys`). */
  async joinEncrypted(nameOrId: string): Promise<EncryptedSpace> {
    if (!this.e2ee) throw new HeraldError("e2ee_disabled", "an encrypted channel needs a device: connect with the `e2ee` option");
    const space = await this.joinChannel(nameOrId);
    return this.e2ee.encryptedSpace(space);
  }

  /** Creates an unnamed channel (a group or a DM room) with these members. */
  createSpace(opts: Omit<CreateChannelOptions, "name"> = {}): Promise<Space> {
    return this.createChannel(opts);
  }

  /**
   * Joins an open channel by name or id. A `private-…` name is joined with a signature from
   * the `authorizer` or `authEndpoint` of the connect options (see {@link joinPrivate}).
   */
  async joinChannel(nameOrId: string): Promise<Space> {
    if (isPrivateChannel(nameOrId)) return this.joinPrivate(nameOrId);
    const ok = await this.conn.request("channel.join", { channel: nameOrId });
    return new Space(this.conn, ok.channel as Channel);
  }

  /**
   * Joins a `private-…` channel by name: with `auth` when given (signed for `client.me.conn_id`),
   * else asking the `authorizer` / `authEndpoint` to sign the current `conn_id` (signed again
   * if a reconnect changes it meanwhile). Membership is stored: a reconnect needs no rejoin.
   */
  async joinPrivate(name: string, auth?: string): Promise<Space> {
    return new Space(this.conn, await joinPrivateChannel(this.conn, name, auth));
  }

  /** The caller's channels with unread counts and heads. */
  async listChannels(): Promise<ChannelSummary[]> {
    const ok = await this.conn.request("channel.list", {});
    return ok.channels as ChannelSummary[];
  }

  /** Every named channel of the app that the caller may join. */
  async directory(): Promise<Array<{ name: string; id: string }>> {
    const ok = await this.conn.request("channel.directory", {});
    return ok.channels as Array<{ name: string; id: string }>;
  }

  /** A handle on a channel the caller is a member of, by id or name (REST lookup). */
  async get(idOrName: string): Promise<Space> {
    const res = await this.conn.rest("GET", `/v1/channels/${encodeURIComponent(idOrName)}`);
    const body = (await res.json()) as { channel: Channel };
    return new Space(this.conn, body.channel);
  }
}

/** A Herald client: one connection, reconnecting by itself. */
export class Herald {
  readonly space: Spaces;
  readonly message: Messaging;
  readonly realtime: Realtime;

  private constructor(
    readonly connection: Connection,
    /** The end-to-end encryption device, with the `e2ee` option (§O). */
    readonly e2ee?: E2ee,
  ) {
    this.space = new Spaces(connection, e2ee);
    this.message = new Messaging(connection, e2ee);
    this.realtime = new Realtime(connection);
  }

  /**
   * Connects; resolves once the server answered `connect` (rejects with `UnauthorizedError` for
   * a bad token). With `e2ee` (`e2ee({store, secret})` of `@herald-chat/client/e2ee`), the
   * device state is opened (or created) and the device registered first, then declared on
   * every `connect`.
   */
  static async connect(opts: ConnectOptions & { e2ee?: E2eeProvider }): Promise<Herald> {
    if (!opts.e2ee) {
      const conn = new Connection(opts);
      const client = new Herald(conn);
      await conn.start();
      return client;
    }
    const probe = new Connection(opts);
    const token = opts.token ?? (await opts.tokenProvider?.()) ?? "";
    const e2ee = await opts.e2ee.open(probe, token);
    const conn = new Connection({ ...opts, token, connectFields: { ...(opts.connectFields ?? {}), device: e2ee.deviceId } });
    e2ee.attach(conn);
    const client = new Herald(conn, e2ee);
    try {
      await conn.start();
    } catch (err) {
      await e2ee.close();
      throw err;
    }
    return client;
  }

  /**
   * A channel (its id, its name, or a {@link Space}) used as a room of participants: presence,
   * messages with attachments, streams. The same handle for the same reference.
   */
  room(channel: string | { id: string }, opts: RoomOptions = {}): Room {
    return RoomDriver.of(this.connection).room(typeof channel === "string" ? channel : channel.id, opts);
  }

  /** Who this connection is: `{conn_id, user}` of the last `connect`. */
  get me(): ConnectOk | undefined {
    return this.connection.info;
  }

  get connected(): boolean {
    return this.connection.connected;
  }

  /** Any op of §4 by name, for what the namespaces do not cover. */
  request(op: string, fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.connection.request(op, fields);
  }

  ping(): Promise<Record<string, unknown>> {
    return this.connection.request("ping", {});
  }

  /** Sends `auth.refresh` with `token` (or one from the `tokenProvider`). */
  refreshToken(token?: string): Promise<{ expires_at: string }> {
    return this.connection.refresh(token);
  }

  close(): void {
    this.connection.close();
    // Pending state writes finish; the store's lock is released.
    void this.e2ee?.close();
  }
}

export default Herald;
