/**
 * Private channels (PROTOCOL.md §9, docs/protocol.md §K and §P), the client half: joining a
 * `private-…` channel needs `auth = hex(HMAC-SHA256(app_secret, conn_id ":" channel_name))`,
 * which only the app's backend can compute. The client asks it, either through `authEndpoint`
 * (a POST of `{socket_id, channel_name}` answered `{auth}`, the seed's flow) or through an
 * `authorizer` callback, then sends `channel.join {channel, auth}`. The signature is bound to
 * the connection: when a reconnect changes the `conn_id` between signing and joining, it is
 * signed again for the new one. Browser-safe: no `node:` import (the backend half is
 * `@herald-chat/client/node`).
 */
import { DisconnectedError, ForbiddenError, HeraldError, TimeoutError } from "./errors.js";
import type { Channel } from "./frames.js";

/** What the backend is asked to sign. */
export interface ChannelAuthRequest {
  /** The `conn_id` of the current connection (Pusher's name for it). */
  socketId: string;
  channelName: string;
}

/** Returns the `auth` for a join, or `{auth}`; throw (or reject) to refuse. */
export type ChannelAuthorizer = (req: ChannelAuthRequest) => string | { auth: string } | Promise<string | { auth: string }>;

export type AuthHeaders = Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);

/** The connect options of private channels (part of `ConnectOptions`). */
export interface PrivateChannelOptions {
  /**
   * The app backend's auth URL (absolute in Node; a browser may give a path of its own
   * origin). The SDK POSTs JSON `{"socket_id": conn_id, "channel_name": name}` and expects
   * `200 {"auth": "<64 hex>"}`; any other status refuses the join (`ForbiddenError`).
   */
  authEndpoint?: string;
  /** Headers of that POST (the app's own session: a bearer token, a CSRF header…). */
  authHeaders?: AuthHeaders;
  /** `fetch`'s `credentials` for that POST (default `same-origin`, so cookies of the app's origin go along). */
  authCredentials?: RequestCredentials;
  /** Instead of `authEndpoint`: a function that returns the signature (wins when both are given). */
  authorizer?: ChannelAuthorizer;
}

export const PRIVATE_PREFIX = "private-";

/** Whether a channel name is that of a private channel (joined only with a signature). */
export function isPrivateChannel(name: string): boolean {
  return name.startsWith(PRIVATE_PREFIX);
}

/** The `auth` for `req` from the options' `authorizer` or `authEndpoint`; `undefined` when neither is set. */
export async function authorizeChannel(
  opts: PrivateChannelOptions,
  fetchFn: typeof fetch,
  req: ChannelAuthRequest,
): Promise<string | undefined> {
  if (opts.authorizer) {
    const got = await opts.authorizer(req);
    const auth = typeof got === "string" ? got : got?.auth;
    if (typeof auth !== "string") throw new HeraldError("bad_request", "the authorizer returned no `auth` string");
    return auth;
  }
  if (!opts.authEndpoint) return undefined;
  const extra = typeof opts.authHeaders === "function" ? await opts.authHeaders() : (opts.authHeaders ?? {});
  let res: Response;
  try {
    res = await fetchFn(opts.authEndpoint, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", ...extra },
      body: JSON.stringify({ socket_id: req.socketId, channel_name: req.channelName }),
      credentials: opts.authCredentials ?? "same-origin",
    });
  } catch (e) {
    throw new HeraldError("auth_endpoint", `auth endpoint ${opts.authEndpoint} unreachable: ${String(e)}`);
  }
  if (!res.ok) {
    throw new ForbiddenError({
      code: "forbidden",
      message: `auth endpoint refused ${req.channelName} (HTTP ${res.status})`,
    });
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    throw new HeraldError("auth_endpoint", `auth endpoint ${opts.authEndpoint} answered something that is not JSON`);
  }
  const auth = (body as { auth?: unknown } | null)?.auth;
  if (typeof auth !== "string") throw new HeraldError("auth_endpoint", `auth endpoint ${opts.authEndpoint} answered no "auth" string`);
  return auth;
}

/** What {@link joinPrivateChannel} needs of the connection. */
export interface PrivateJoinConn {
  readonly opts: PrivateChannelOptions & { fetch?: typeof fetch; requestTimeoutMs?: number };
  readonly info: { conn_id: string } | undefined;
  readonly connected: boolean;
  request(op: string, fields: Record<string, unknown>): Promise<Record<string, unknown>>;
  on(event: string, cb: (payload: never) => void): () => void;
}

function whenConnected(conn: PrivateJoinConn, timeoutMs: number): Promise<void> {
  if (conn.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new TimeoutError(`not connected within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = conn.on("connected", () => {
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

/**
 * Joins `name` with a signature for the current connection: from `auth` when given (it must
 * be for this `conn_id`), else from the authorizer or auth endpoint, signed again (up to three
 * times) when a reconnect changed the `conn_id` meanwhile. With neither, the join is sent
 * without `auth` and the server answers `forbidden`.
 */
export async function joinPrivateChannel(conn: PrivateJoinConn, name: string, auth?: string): Promise<Channel> {
  const fetchFn = (conn.opts.fetch ?? globalThis.fetch)?.bind(globalThis);
  const wait = conn.opts.requestTimeoutMs ?? 15_000;
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    await whenConnected(conn, wait);
    const connId = conn.info?.conn_id;
    if (!connId) continue;
    const signature = auth ?? (fetchFn ? await authorizeChannel(conn.opts, fetchFn, { socketId: connId, channelName: name }) : undefined);
    // Dropped or reconnected while the backend signed: that signature is for a dead connection.
    if (!conn.connected || conn.info?.conn_id !== connId) continue;
    const fields: Record<string, unknown> = { channel: name };
    if (signature !== undefined) fields.auth = signature;
    try {
      const ok = await conn.request("channel.join", fields);
      return ok.channel as Channel;
    } catch (e) {
      lastError = e;
      const reconnected = conn.info?.conn_id !== connId;
      // A given `auth` was for one connection: it cannot be signed again here.
      if (auth === undefined && (e instanceof DisconnectedError || (e instanceof ForbiddenError && reconnected))) continue;
      throw e;
    }
  }
  throw lastError instanceof Error ? lastError : new DisconnectedError("the connection kept changing while joining a private channel");
}
