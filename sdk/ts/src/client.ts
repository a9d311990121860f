/**
 * The connection driver: a WebSocket around the pure {@link Session}, with reconnect and
 * backoff, resume, keepalive, token refresh (`auth.refresh`), request timeouts, REST for
 * blobs, and the event listeners behind `client.realtime`.
 */
import {
  ClosedError,
  HeraldError,
  TimeoutError,
  UnauthorizedError,
  type ServerError,
  errorFromDetail,
  ProtocolError,
  type ChainError,
} from "./errors.js";
import { parseServerFrame, type ServerFrame, type UnknownEvent } from "./frames.js";
import type { PrivateChannelOptions } from "./auth.js";
import { Session, type ConnectOk, type Output } from "./session.js";
import { jwtExpMs, refreshDelayMs } from "./token.js";

/** The part of the WebSocket API the SDK uses (browsers, Node ≥ 22, Node 20 with `--experimental-websocket`, `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string | ArrayBufferLike | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  binaryType?: string;
}
export type WebSocketCtor = new (url: string) => WebSocketLike;

export type TokenProvider = () => string | Promise<string>;

export interface ConnectOptions extends PrivateChannelOptions {
  /** The server: `http(s)://host:port` or `ws(s)://host:port` (`/v1/ws` is added). */
  url: string;
  /** A JWT (PROTOCOL.md §2). Give this or `tokenProvider`. */
  token?: string;
  /** Called for a token at every (re)connect and before the current one expires. */
  tokenProvider?: TokenProvider;
  /** The WebSocket implementation; `globalThis.WebSocket` by default. */
  WebSocket?: WebSocketCtor;
  /** `fetch` for REST; `globalThis.fetch` by default. */
  fetch?: typeof fetch;
  /** How long a request may wait for its reply (default 15 s). */
  requestTimeoutMs?: number;
  /** Keepalive: a `ping` after this much quiet (default 20 s); no reply within it reconnects. */
  pingIntervalMs?: number;
  /** Reconnect backoff: first delay and cap (defaults 200 ms and 10 s), with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Reconnect after a drop (default true). */
  reconnect?: boolean;
  /** Extra fields of `connect` (e.g. `device`, §7). */
  connectFields?: Record<string, unknown>;
}

/** Events of the client itself, besides the server's (PROTOCOL.md §4). */
export interface ClientEvents {
  connected: ConnectOk;
  disconnected: { reason: string; code?: number };
  reconnecting: { attempt: number; delayMs: number };
  chain_error: ChainError;
  error: HeraldError;
  closed: { error?: HeraldError };
}

interface PendingCall {
  resolve(v: Record<string, unknown>): void;
  reject(e: HeraldError): void;
  abandoned?: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

type Listener = (payload: never) => void;

/**
 * Takes frames before the session does (rooms.ts: room replies, room events and every binary
 * frame, which the session never sees).
 */
export interface FrameHook {
  /** A parsed text frame; true when the hook took it. */
  frame(frame: ServerFrame): boolean;
  /** A binary frame (PROTOCOL.md §1). */
  binary(bytes: Uint8Array): void;
}

const OPEN = 1;

/** Normalizes a server URL to its HTTP base and WebSocket address. */
export function endpoints(url: string): { http: string; ws: string } {
  const u = new URL(url);
  const secure = u.protocol === "https:" || u.protocol === "wss:";
  let path = u.pathname.replace(/\/+$/, "");
  if (path.endsWith("/v1/ws")) path = path.slice(0, -"/v1/ws".length);
  const host = u.host;
  return {
    http: `${secure ? "https" : "http"}://${host}${path}`,
    ws: `${secure ? "wss" : "ws"}://${host}${path}/v1/ws`,
  };
}

/** A random id for `client_id` (works outside secure contexts too). */
export function randomId(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export class Connection {
  readonly session = new Session<PendingCall>();
  readonly http: string;
  private readonly wsUrl: string;
  private readonly Ws: WebSocketCtor;
  private readonly fetchFn: typeof fetch;
  private socket: WebSocketLike | undefined;
  private token: string | undefined;
  private listeners = new Map<string, Set<Listener>>();
  private attempt = 0;
  private closed = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private lastHeard = 0;
  private firstConnect: { resolve(): void; reject(e: HeraldError): void } | undefined;
  /** The `connect` reply of the current connection. */
  info: ConnectOk | undefined;

  constructor(readonly opts: ConnectOptions) {
    const e = endpoints(opts.url);
    this.http = e.http;
    this.wsUrl = e.ws;
    const Ws = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ws) {
      throw new HeraldError(
        "no_websocket",
        "no WebSocket implementation: pass `WebSocket` (e.g. from the `ws` package), or run Node ≥ 22 (Node 20: --experimental-websocket)",
      );
    }
    this.Ws = Ws;
    const f = opts.fetch ?? globalThis.fetch;
    this.fetchFn = f ? f.bind(globalThis) : (() => Promise.reject(new HeraldError("no_fetch", "no fetch"))) as typeof fetch;
    if (!opts.token && !opts.tokenProvider) throw new HeraldError("bad_request", "give `token` or `tokenProvider`");
    this.token = opts.token;
  }

  /** Opens the first connection; resolves once `connect` is answered. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.firstConnect = { resolve, reject };
      void this.open();
    });
  }

  get connected(): boolean {
    return this.session.ready;
  }

  get currentToken(): string | undefined {
    return this.token;
  }

  on(event: string, cb: (payload: never) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(cb);
    return () => {
      set.delete(cb);
    };
  }

  private emit(event: string, payload: unknown): void {
    for (const name of [event, "*"]) {
      const set = this.listeners.get(name);
      if (!set) continue;
      for (const cb of [...set]) {
        try {
          (cb as (p: unknown) => void)(payload);
        } catch (e) {
          // A listener's bug must not break the connection; report it where it can be seen.
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    }
  }

  private async freshToken(): Promise<string> {
    if (this.opts.tokenProvider) {
      this.token = await this.opts.tokenProvider();
    }
    if (!this.token) throw new UnauthorizedError({ code: "unauthorized", message: "no token" });
    return this.token;
  }

  private async open(): Promise<void> {
    if (this.closed) return;
    let token: string;
    try {
      // A provider is asked at every reconnect (the old token may have expired meanwhile).
      const reuse = this.token !== undefined && (!this.opts.tokenProvider || this.info === undefined);
      token = reuse && this.token !== undefined ? this.token : await this.freshToken();
    } catch (e) {
      this.scheduleReconnect(e instanceof HeraldError ? e : new HeraldError("token", String(e)));
      return;
    }
    if (this.closed) return;
    let ws: WebSocketLike;
    try {
      ws = new this.Ws(this.wsUrl);
    } catch (e) {
      this.scheduleReconnect(new HeraldError("connect", String(e)));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    ws.onopen = () => {
      if (this.socket !== ws) return;
      this.lastHeard = Date.now();
      ws.send(this.session.connect(token, this.opts.connectFields ?? {}));
    };
    ws.onmessage = (ev) => {
      if (this.socket !== ws) return;
      this.lastHeard = Date.now();
      if (typeof ev.data === "string") {
        const frame = parseServerFrame(ev.data);
        if (frame && this.hooks.some((h) => h.frame(frame))) return;
        this.apply(this.session.handleFrame(frame));
      } else {
        const bytes = ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : ArrayBuffer.isView(ev.data) ? new Uint8Array(ev.data.buffer, ev.data.byteOffset, ev.data.byteLength) : undefined;
        if (bytes) for (const h of this.hooks) h.binary(bytes);
      }
    };
    ws.onerror = () => {
      // Followed by `close`, where the reconnect is decided.
    };
    ws.onclose = (ev) => {
      if (this.socket !== ws) return;
      this.socket = undefined;
      this.stopTimers();
      const reason = ev.reason || `closed with code ${ev.code}`;
      this.apply(this.session.disconnected(reason), ev.code);
      if (this.closed) return;
      if (ev.code === 4401 && !this.opts.tokenProvider && this.info !== undefined) {
        // The token expired or was refused and nothing can mint another: stop.
        this.fail(new UnauthorizedError({ code: "unauthorized", message: reason }));
        return;
      }
      this.scheduleReconnect(new HeraldError("disconnected", reason));
    };
  }

  private scheduleReconnect(why: HeraldError): void {
    if (this.closed) return;
    if (this.opts.reconnect === false) {
      this.fail(why);
      return;
    }
    const initial = this.opts.backoff?.initialMs ?? 200;
    const max = this.opts.backoff?.maxMs ?? 10_000;
    const base = Math.min(max, initial * 2 ** Math.min(this.attempt, 20));
    const delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
    this.attempt += 1;
    this.emit("reconnecting", { attempt: this.attempt, delayMs, reason: why.message });
    this.reconnectTimer = setTimeout(() => void this.open(), delayMs);
  }

  private fail(error: HeraldError): void {
    if (this.firstConnect) {
      this.firstConnect.reject(error);
      this.firstConnect = undefined;
    }
    this.shutdown(error);
  }

  private apply(outs: Output<PendingCall>[], closeCode?: number): void {
    for (const o of outs) {
      switch (o.type) {
        case "send":
          if (this.socket && this.socket.readyState === OPEN) this.socket.send(o.text);
          break;
        case "reply":
          if (o.waiter.timer !== undefined) clearTimeout(o.waiter.timer);
          if (o.error) o.waiter.reject(o.error);
          else o.waiter.resolve(o.ok ?? {});
          break;
        case "event":
          if (o.event.event === "error") {
            this.emit("error", errorFromDetail({ code: String(o.event.code), message: String(o.event.message) }));
          } else {
            this.emit(o.event.event, o.event);
          }
          break;
        case "chain_error":
          this.emit("chain_error", o.error);
          break;
        case "connected":
          this.info = o.ok;
          this.attempt = 0;
          this.armPing();
          this.armRefresh();
          this.emit("connected", o.ok);
          if (this.firstConnect) {
            this.firstConnect.resolve();
            this.firstConnect = undefined;
          }
          break;
        case "rejected":
          this.onRejected(o.error);
          break;
        case "disconnected":
          this.emit("disconnected", { reason: o.reason, code: closeCode });
          break;
      }
    }
  }

  private onRejected(error: ServerError): void {
    // The server closes the socket after this reply (4401 / 4429).
    if (error.code === "unauthorized" && !this.opts.tokenProvider) {
      this.fail(error);
      return;
    }
    if (this.firstConnect && error.code === "unauthorized" && this.attempt >= 3) {
      this.fail(error);
      return;
    }
    this.emit("error", error);
  }

  private stopTimers(): void {
    if (this.pingTimer !== undefined) clearTimeout(this.pingTimer);
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    this.pingTimer = undefined;
    this.refreshTimer = undefined;
  }

  /** Keepalive: after `pingIntervalMs` of silence send `ping`; no answer within as long, reconnect. */
  private armPing(): void {
    const interval = this.opts.pingIntervalMs ?? 20_000;
    if (this.pingTimer !== undefined) clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => {
      const ws = this.socket;
      if (!ws || !this.session.ready) return;
      const quiet = Date.now() - this.lastHeard;
      if (quiet < interval) {
        this.armPing();
        return;
      }
      this.request("ping", {}, interval).then(
        () => this.armPing(),
        () => {
          if (this.socket === ws) ws.close(4000, "no reply to ping");
        },
      );
    }, interval);
  }

  /** Token refresh: at 80% of the token's remaining lifetime, ask the provider and send `auth.refresh`. */
  private armRefresh(): void {
    if (!this.opts.tokenProvider || !this.token) return;
    const exp = jwtExpMs(this.token);
    if (exp === undefined) return;
    const delay = refreshDelayMs(Date.now(), exp);
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    // setTimeout overflows past 2^31 - 1 ms (about 24.8 days).
    this.refreshTimer = setTimeout(() => {
      this.refresh().catch((e: unknown) => {
        this.emit("error", e instanceof HeraldError ? e : new HeraldError("refresh", String(e)));
        // Retry closer to the expiry; past it the server closes with 4401 and we reconnect.
        this.refreshTimer = setTimeout(() => this.armRefresh(), 1000);
      });
    }, Math.min(delay, 2 ** 31 - 1));
  }

  /** Refreshes the connection's token now (also done by itself before expiry with a `tokenProvider`). */
  async refresh(token?: string): Promise<{ expires_at: string }> {
    const next = token ?? (await this.freshToken());
    const ok = await this.request("auth.refresh", { token: next });
    this.token = next;
    this.armRefresh();
    return ok as { expires_at: string };
  }

  /** Sends one request; resolves with its `ok`, rejects with a typed error. Pipelined. */
  request(op: string, fields: Record<string, unknown>, timeoutMs?: number): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new ClosedError());
    return new Promise((resolve, reject) => {
      const waiter: PendingCall = { resolve, reject };
      const ms = timeoutMs ?? this.opts.requestTimeoutMs ?? 15_000;
      waiter.timer = setTimeout(() => {
        waiter.abandoned = true;
        reject(new TimeoutError(`${op}: no reply within ${ms} ms`));
      }, ms);
      this.apply(this.session.request(op, fields, waiter));
    });
  }

  subscribe(subject: string): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new ClosedError());
    return new Promise((resolve, reject) => {
      const waiter: PendingCall = { resolve, reject };
      const ms = this.opts.requestTimeoutMs ?? 15_000;
      waiter.timer = setTimeout(() => {
        waiter.abandoned = true;
        reject(new TimeoutError(`subscribe: no reply within ${ms} ms`));
      }, ms);
      this.apply(this.session.subscribe(subject, waiter));
    });
  }

  unsubscribe(subject: string): void {
    this.apply(this.session.unsubscribe(subject));
  }

  /** A REST call (JSON unless `body` is bytes); throws typed errors. */
  async rest(method: string, path: string, body?: unknown, raw = false): Promise<Response> {
    const token = this.token ?? (await this.freshToken());
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    let payload: BodyInit | undefined;
    if (body instanceof Uint8Array) {
      headers["content-type"] = "application/octet-stream";
      payload = body as unknown as BodyInit;
    } else if (body !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const res = await this.fetchFn(`${this.http}${path}`, { method, headers, body: payload ?? null });
    if (!res.ok) {
      let detail = { code: "internal", message: `HTTP ${res.status}` };
      try {
        const j = (await res.json()) as { error?: { code?: string; message?: string; retry_after_ms?: number } };
        if (j.error?.code) detail = { code: j.error.code, message: j.error.message ?? "", ...(j.error.retry_after_ms !== undefined ? { retry_after_ms: j.error.retry_after_ms } : {}) };
      } catch {
        // Not the error shape (a proxy?): keep the status.
      }
      throw errorFromDetail(detail);
    }
    if (!raw && res.headers.get("content-type")?.includes("json") === false) {
      throw new ProtocolError(`${method} ${path}: expected JSON`);
    }
    return res;
  }

  /** A REST upload through XMLHttpRequest, for its upload progress events (browsers only). */
  async restWithProgress(
    method: string,
    path: string,
    bytes: Uint8Array,
    onProgress: (sent: number, total: number) => void,
  ): Promise<unknown> {
    const token = this.token ?? (await this.freshToken());
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, `${this.http}${path}`);
      xhr.setRequestHeader("authorization", `Bearer ${token}`);
      xhr.setRequestHeader("content-type", "application/octet-stream");
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.total || bytes.length);
      xhr.onerror = () => reject(new HeraldError("network", `${method} ${path}: network error`));
      xhr.onload = () => {
        let body: unknown;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          body = undefined;
        }
        if (xhr.status >= 200 && xhr.status < 300) {
          onProgress(bytes.length, bytes.length);
          resolve(body);
          return;
        }
        const e = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
        reject(errorFromDetail({ code: e?.code ?? "internal", message: e?.message ?? `HTTP ${xhr.status}` }));
      };
      xhr.send(bytes as unknown as XMLHttpRequestBodyInit);
    });
  }

  /** Closes the socket and stops reconnecting; every waiting call is rejected with `ClosedError`. */
  close(): void {
    this.shutdown(new ClosedError());
  }

  /** Drops the current socket (as a network failure would) and reconnects: for tests and "retry now". */
  dropConnection(): void {
    this.socket?.close(4000, "dropped by the client");
  }

  private shutdown(error: HeraldError): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.stopTimers();
    const ws = this.socket;
    this.socket = undefined;
    if (ws) {
      try {
        ws.close(1000, "client closed");
      } catch {
        // Already closing.
      }
    }
    this.apply(this.session.shutdown(() => (error instanceof ClosedError ? error : new ClosedError(error.message))));
    this.emit("closed", { error });
  }

  private hooks: FrameHook[] = [];

  /** Adds a {@link FrameHook} (rooms.ts); it sees every frame before the session. */
  addHook(hook: FrameHook): void {
    this.hooks.push(hook);
  }

  /** Writes a raw frame if the connection is up (connected and answered); false otherwise. */
  sendFrame(data: string | Uint8Array): boolean {
    if (!this.socket || this.socket.readyState !== OPEN || !this.session.ready) return false;
    this.socket.send(data);
    return true;
  }

  /** Emits a synthetic event to local listeners (e.g. history pages feed no events). */
  emitLocal(event: string, payload: unknown): void {
    this.emit(event, payload);
  }
}

export type { UnknownEvent };
