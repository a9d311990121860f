/**
 * `@herald-chat/client/node`: the app backend's half of PROTOCOL.md §9, for Node (it uses
 * `node:crypto`, so it is a separate entry the browser bundle never pulls in).
 *
 * - {@link authorizePrivateChannel}: the `auth` a client passes to `channel.join` of a
 *   `private-…` channel, after the backend decided that this user may join. The same formula
 *   as the server and `herald_client::auth::sign_channel`.
 * - {@link verifyWebhook}: whether a webhook body carries the app secret's signature.
 *
 * The key is the app secret as `herald secret show` prints it (its text as UTF-8 bytes; trim
 * the newline of a file yourself). Nothing here logs or keeps the secret.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export { isPrivateChannel, PRIVATE_PREFIX } from "./auth.js";

type Bytes = string | Uint8Array;

function hmac(secret: Bytes, parts: Bytes[]): Buffer {
  const m = createHmac("sha256", typeof secret === "string" ? Buffer.from(secret, "utf8") : secret);
  for (const p of parts) m.update(typeof p === "string" ? Buffer.from(p, "utf8") : p);
  return m.digest();
}

/** `lowercase hex(HMAC-SHA256(secret, socketId ":" channelName))` (`socketId` is the client's `conn_id`). */
export function authorizePrivateChannel(args: { secret: Bytes; socketId: string; channelName: string }): string {
  if (typeof args.socketId !== "string" || args.socketId === "") throw new TypeError("socketId: the client's conn_id is required");
  if (typeof args.channelName !== "string" || args.channelName === "") throw new TypeError("channelName is required");
  return hmac(args.secret, [args.socketId, ":", args.channelName]).toString("hex");
}

/** The `X-Herald-Signature` header value of a body: `sha256=<hex HMAC-SHA256(secret, body)>`. */
export function webhookSignature(secret: Bytes, body: Bytes): string {
  return `sha256=${hmac(secret, [body]).toString("hex")}`;
}

/**
 * Whether `signature` (the `X-Herald-Signature` header) is the secret's HMAC-SHA256 of `body`,
 * compared in constant time. Check the raw body bytes, before parsing them. A missing header,
 * one without `sha256=`, or hex of the wrong length is `false`.
 */
export function verifyWebhook(args: { secret: Bytes; body: Bytes; signature: string | null | undefined }): boolean {
  const sig = args.signature?.trim();
  if (!sig?.startsWith("sha256=")) return false;
  const hex = sig.slice("sha256=".length);
  if (hex.length !== 64 || !/^[0-9a-fA-F]+$/.test(hex)) return false;
  const expected = hmac(args.secret, [args.body]);
  return timingSafeEqual(expected, Buffer.from(hex, "hex"));
}
