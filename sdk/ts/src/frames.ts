/**
 * Wire types of PROTOCOL.md §4 (in the protocol's own snake_case field names), frame parsing,
 * the binary frame layout of §1, and the mapping of log events to chain entries. Pure.
 */
import type { EntryHashes, EntryKind, WireEntry } from "./chain.js";
import type { ErrorDetail } from "./errors.js";

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface User {
  id: string;
  name?: string;
  kind?: "human" | "agent" | "service";
}

export interface Channel {
  id: string;
  name: string | null;
  title: string | null;
  encrypted: boolean;
  policy: "open" | "invite";
  created_by: string;
  created_at: string;
  last_seq: number;
}

/** One entry of `channel.list`. */
export interface ChannelSummary {
  id: string;
  name: string | null;
  title: string | null;
  unread: number;
  last_seq: number;
  [extra: string]: unknown;
}

export interface ReplySnapshot {
  id: string;
  author: string;
  content: string | null;
  edited: boolean;
}

export interface ReactionView {
  reaction_id: string;
  emoji: string;
  user: string;
}

export interface Message {
  id: string;
  seq: number;
  author: string;
  type: string;
  content: string;
  reply_to?: ReplySnapshot;
  client_id?: string;
  ts: string;
  edited_at?: string;
  reactions?: ReactionView[];
  epoch?: number;
}

export interface HistoryPage {
  messages: Message[];
  has_more: boolean;
}

/**
 * Fields every event that is a log entry carries (§4, and `salt`/`content_hash`, §B), as the
 * SDK delivers it: complete even when the server sent the compact form ({@link WireLogEvent}).
 */
export interface EntryMeta {
  channel: string;
  seq: number;
  hash: string;
  prev_hash: string;
  ts: string;
  author: string;
  salt?: string;
  content_hash: string;
}

export interface MessageEvent extends EntryMeta {
  event: "message";
  message: Message;
}
export interface MessageEditedEvent extends EntryMeta {
  event: "message_edited";
  message_id: string;
  content: string;
  edited_at: string;
  epoch?: number;
}
export interface MessageDeletedEvent extends EntryMeta {
  event: "message_deleted";
  message_id: string;
}
export interface ReactionEvent extends EntryMeta {
  event: "reaction";
  reaction_id: string;
  message_id: string;
  emoji: string;
}
export interface ReactionDeletedEvent extends EntryMeta {
  event: "reaction_deleted";
  reaction_id: string;
  message_id?: string;
}
export interface MemberJoinedEvent extends EntryMeta {
  event: "member_joined";
  user: string;
  name?: string;
  by: string;
}
export interface MemberLeftEvent extends EntryMeta {
  event: "member_left";
  user: string;
  name?: string;
  by: string;
}
export interface ChannelCreatedEvent extends EntryMeta {
  event: "channel_created";
  name?: string | null;
  title?: string | null;
}
export interface KeyRotatedEvent extends EntryMeta {
  event: "key_rotated";
  epoch?: number;
  commit_hash?: string;
  content?: string;
  ref?: string;
}
export interface ChannelDeletedEvent {
  event: "channel_deleted";
  channel: string;
  name?: string | null;
  title?: string | null;
}
export interface MessageReadEvent {
  event: "message_read";
  channel: string;
  user: string;
  message_id: string;
}
export interface TypingEvent {
  event: "typing";
  channel: string;
  user: string;
  is_typing: boolean;
}
export interface EphemeralEvent {
  event: "ephemeral";
  channel: string;
  from: string;
  subject: string;
  data: Json;
}
export interface PublicationEvent {
  event: "publication";
  subject: string;
  from: string;
  data: Json;
}
export interface ResumeTruncatedEvent {
  event: "resume_truncated";
  channel: string;
  from_seq: number;
}

/** A log event: carries `seq` and is verified against the channel's chain. */
export type LogEvent =
  | MessageEvent
  | MessageEditedEvent
  | MessageDeletedEvent
  | ReactionEvent
  | ReactionDeletedEvent
  | MemberJoinedEvent
  | MemberLeftEvent
  | ChannelCreatedEvent
  | KeyRotatedEvent;

/** Any server push. Events this SDK does not know are passed on as {@link UnknownEvent}. */
export type ServerEvent =
  | LogEvent
  | ChannelDeletedEvent
  | MessageReadEvent
  | TypingEvent
  | EphemeralEvent
  | PublicationEvent
  | ResumeTruncatedEvent;

export interface UnknownEvent {
  event: string;
  [k: string]: unknown;
}

export type EventName = ServerEvent["event"];

const LOG_EVENTS: ReadonlySet<string> = new Set<string>([
  "message",
  "message_edited",
  "message_deleted",
  "reaction",
  "reaction_deleted",
  "member_joined",
  "member_left",
  "channel_created",
  "key_rotated",
]);

export function isLogEvent(e: { event: string }): e is LogEvent {
  return LOG_EVENTS.has(e.event);
}

/** The message fields a compact `message` event leaves out: they are the entry's own. */
type EntryOwned = "seq" | "author" | "ts";

/** One log event as the server may send it (§B), before {@link completeLogEvent}. */
type Wire<E> = E extends MessageEvent
  ? Omit<E, "hash" | "content_hash" | "message"> & {
      hash?: string;
      content_hash?: string;
      message: Omit<Message, EntryOwned> & Partial<Pick<Message, EntryOwned>>;
    }
  : Omit<E, "hash" | "content_hash"> & { hash?: string; content_hash?: string };

/**
 * A log event off the wire, in either form: the full one (every field of {@link LogEvent}) or
 * the compact one of §B, without `hash` (computed from the fields), without `content_hash`
 * unless `salt` is absent (a tombstone), and, on a `message` event, without the message's
 * `seq`, `author` and `ts` (the entry's). A full event is a `WireLogEvent` too.
 */
export type WireLogEvent = Wire<LogEvent>;

export interface Reply {
  id: number | null;
  ok?: Record<string, unknown>;
  error?: ErrorDetail;
}

export type ServerFrame = { kind: "reply"; reply: Reply } | { kind: "event"; event: UnknownEvent };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses one text frame from the server; `null` for anything unreadable. */
export function parseServerFrame(text: string): ServerFrame | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(v)) return null;
  if (typeof v.event === "string") return { kind: "event", event: v as UnknownEvent };
  if ("id" in v && ("ok" in v || "error" in v)) {
    const id = typeof v.id === "number" ? v.id : null;
    const reply: Reply = { id };
    if (isObject(v.ok)) reply.ok = v.ok;
    else if ("ok" in v) reply.ok = {};
    if (isObject(v.error) && typeof v.error.code === "string") {
      reply.error = {
        code: v.error.code,
        message: typeof v.error.message === "string" ? v.error.message : "",
        ...(typeof v.error.retry_after_ms === "number" ? { retry_after_ms: v.error.retry_after_ms } : {}),
      };
    }
    return { kind: "reply", reply };
  }
  return null;
}

/** A request frame: `{id, op, ...fields}`. */
export function encodeRequest(id: number, op: string, fields: Record<string, unknown>): string {
  return JSON.stringify({ id, op, ...fields });
}

/** `u32be(header length) ‖ header JSON ‖ bytes` (§1). */
export function encodeBinaryFrame(header: Record<string, unknown>, bytes: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(4 + h.length + bytes.length);
  new DataView(out.buffer).setUint32(0, h.length);
  out.set(h, 4);
  out.set(bytes, 4 + h.length);
  return out;
}

/** Splits a binary frame; `null` when the length is beyond the frame or the header is not an object. */
export function parseBinaryFrame(frame: Uint8Array): { header: Record<string, unknown>; bytes: Uint8Array } | null {
  if (frame.length < 4) return null;
  const len = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0);
  if (len > frame.length - 4) return null;
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(frame.subarray(4, 4 + len)));
  } catch {
    return null;
  }
  if (!isObject(header)) return null;
  return { header, bytes: frame.subarray(4 + len) };
}

/** `ts` (RFC 3339) in milliseconds since the epoch; `NaN` when unreadable. */
export function parseTsMs(ts: string): number {
  if (typeof ts !== "string" || !/^\d{4}-\d{2}-\d{2}T/.test(ts)) return NaN;
  return Date.parse(ts);
}

/**
 * The chain entry a log event stands for (§5, §B): what the verifier checks. `hash` and
 * `content_hash` are passed on as the event has them (absent on a compact event).
 */
export function entryOfEvent(e: WireLogEvent): WireEntry {
  let kind: EntryKind;
  let ref = "";
  let content = "";
  switch (e.event) {
    case "message":
      kind = "message";
      ref = e.message?.reply_to?.id ?? "";
      content = e.message?.content ?? "";
      break;
    case "message_edited":
      kind = "message_edited";
      ref = e.message_id;
      content = e.content;
      break;
    case "message_deleted":
      kind = "message_deleted";
      ref = e.message_id;
      break;
    case "reaction":
      kind = "reaction";
      ref = e.message_id;
      content = e.emoji;
      break;
    case "reaction_deleted":
      kind = "reaction_deleted";
      ref = e.reaction_id;
      break;
    case "member_joined":
    case "member_left":
      kind = e.event;
      ref = e.user;
      break;
    case "channel_created":
      kind = "channel_created";
      content = e.name ?? "";
      break;
    case "key_rotated":
      kind = "key_rotated";
      // The shared contract names the epoch as `ref`; a server that sends `ref` is followed.
      ref = typeof e.ref === "string" ? e.ref : "";
      content = e.content ?? e.commit_hash ?? "";
      break;
  }
  return {
    channel: e.channel,
    seq: e.seq,
    kind,
    author: e.author,
    ref,
    ts_ms: parseTsMs(e.ts),
    content: e.salt !== undefined ? content : undefined,
    salt: e.salt,
    content_hash: e.content_hash,
    prev_hash: e.prev_hash,
    hash: e.hash,
  };
}

/**
 * The event as the SDK delivers it, from the event off the wire and the hashes its entry
 * verified with ({@link ChainVerifier.verify}): `hash` and `content_hash` set to the verified
 * ones (equal to the event's own when it had them), and a `message` event's message given the
 * entry's `seq`, `author` and `ts` where it has none. Every other field is left as it came; the
 * event itself is not changed.
 */
export function completeLogEvent(e: WireLogEvent, verified: EntryHashes): LogEvent {
  const out = { ...e, hash: verified.hash, content_hash: verified.content_hash };
  if (out.event === "message" && isObject(out.message)) {
    const m = out.message;
    out.message = { ...m, seq: m.seq ?? out.seq, author: m.author ?? out.author, ts: m.ts ?? out.ts };
  }
  return out as LogEvent;
}
