/**
 * End-to-end encryption in the TypeScript SDK (docs/protocol.md §L and §O): a device
 * registered with the server, direct messages over Olm with the offline inbox, and the
 * state behind encrypted channels ({@link ./channel.ts}). Every byte of crypto is
 * herald-crypto's, through its WebAssembly build; the protocol logic follows the Rust SDK
 * (`herald_client::e2ee`) step for step, so the two interoperate.
 *
 * What this layer never does: accept changed identity keys for a pinned device, deliver a
 * DM or message it could not verify as if it were fine (it is surfaced with its reason),
 * acknowledge a DM before the state that decrypted it is stored, or keep the state anywhere
 * but sealed in its store.
 */
import type { Connection } from "../client.js";
import { HeraldError } from "../errors.js";
import {
  WasmDevice,
  WasmKeyring,
  WasmOlmSession,
  WasmPins,
  WasmRosterChain,
} from "../wasm/herald_crypto_wasm.js";
import { StateFile, type IdentityKeys, type Persisted, type PersistedPin, type SignedCommit, type StateSecret } from "./state.js";
import type { StateStore } from "./store.js";
import type { Space } from "../index.js";
import { ChannelKeys, EncryptedSpace } from "./channel.js";

export const DEFAULT_ONE_TIME_KEYS = 50;
const HANDLED_DMS_MAX = 10_000;

/** How to open (or create) the device. */
export interface E2eeOptions {
  /** Where the sealed state lives: `FileStateStore` (Node), `IndexedDbStateStore` (browsers), `MemoryStateStore`. */
  store: StateStore;
  /** The state's key: `{passphrase}` (Argon2id) or `{key}` (32 bytes, e.g. from `webCryptoStateKey()`). */
  secret: StateSecret;
  /** The id of a new device (a random `d-<16 hex>` without it); ignored when the state exists. */
  deviceId?: string;
  /** One-time keys uploaded at registration and at each top-up (default 50). */
  oneTimeKeys?: number;
  /** Top up when the server lists fewer than this many left (default 25). */
  minOneTimeKeys?: number;
  /** Called with what was ignored and why (an envelope from outside the roster, a failed top-up). Never secrets. */
  onWarning?: (message: string) => void;
}

/** A pinned device showed other keys (or another owner): refused. */
export class IdentityChangedError extends HeraldError {
  constructor(
    readonly user: string,
    readonly device: string,
  ) {
    super("identity_changed", `identity of device ${JSON.stringify(device)} of ${JSON.stringify(user)} changed since it was pinned: refused (possible attack)`);
  }
}

/** A device is unknown to the server (or revoked), or not the named user's. */
export class UnknownDeviceError extends HeraldError {
  constructor(
    readonly user: string,
    readonly device: string,
  ) {
    super("unknown_device", `unknown device ${JSON.stringify(device)} of ${JSON.stringify(user)}`);
  }
}

/** A fingerprint given to `verifyDevice` is not the device's. */
export class FingerprintMismatchError extends HeraldError {
  constructor(user: string, device: string, expected: string, found: string) {
    super("fingerprint_mismatch", `fingerprint of device ${JSON.stringify(device)} of ${JSON.stringify(user)} does not match: expected ${expected}, the server shows ${found}`);
  }
}

/** A failed E2EE operation that is not the server's (a missing roster, no key yet, a crypto failure). */
export class E2eeError extends HeraldError {
  constructor(message: string, code = "e2ee") {
    super(code, message);
  }
}

/** Reading a DM failed for a reason that may pass (network, storage): it stays in the inbox. */
class TransientDmError extends E2eeError {
  constructor(message: string) {
    super(message, "e2ee_transient");
  }
}

/** One device as `GET /v1/keys/users/{user}` lists it. */
export interface DeviceInfo {
  device_id: string;
  identity: IdentityKeys;
  identity_signature: string;
  fallback_key?: unknown;
  one_time_keys: number;
  user?: string;
}

/** A decrypted direct message. */
export interface DirectMessage {
  id: string;
  /** The sending user (the owner of `from_device`, checked against its pin). */
  from: string;
  from_device: string;
  payload: Uint8Array;
  /** The payload as UTF-8 text (lossy). */
  text: string;
  ts: string;
}

/** A direct message that cannot be read, with why. Never dropped silently. */
export interface DirectMessageFailure {
  id: string;
  from: string;
  from_device: string;
  reason: string;
}

interface RawDm {
  id: string;
  from: string;
  from_device: string;
  body: string;
  ts?: string;
}

interface Pin {
  user: string;
  identity: IdentityKeys;
  /** base64url, as the key directory sends it. */
  signature: string;
  verified: boolean;
}

export interface LiveChannel {
  admins: IdentityKeys[];
  chain: WasmRosterChain;
  keyring: WasmKeyring;
  commits: Map<number, SignedCommit>;
}

function b64ToHex(s: string): string {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const bin = globalThis.atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, "="));
  let out = "";
  for (let i = 0; i < bin.length; i++) out += bin.charCodeAt(i).toString(16).padStart(2, "0");
  return out;
}

function hexToB64(hex: string): string {
  let bin = "";
  for (let i = 0; i < hex.length; i += 2) bin += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  return globalThis.btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return globalThis.btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function unb64(s: string): Uint8Array {
  const b64s = s.replace(/-/g, "+").replace(/_/g, "/");
  const bin = globalThis.atob(b64s.padEnd(Math.ceil(b64s.length / 4) * 4, "="));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function sameIdentity(a: IdentityKeys, b: IdentityKeys): boolean {
  return a.device_id === b.device_id && a.ed25519 === b.ed25519 && a.curve25519 === b.curve25519 && a.envelope === b.envelope;
}

/** The identity as herald-crypto reads it (only its four fields). */
export function identityJson(i: IdentityKeys): string {
  return JSON.stringify({ device_id: i.device_id, ed25519: i.ed25519, curve25519: i.curve25519, envelope: i.envelope });
}

/** The fingerprint users compare out of band: the device's Ed25519 key in hex, in groups of 4. */
export function fingerprint(identity: IdentityKeys): string {
  return (b64ToHex(identity.ed25519).match(/.{1,4}/g) ?? []).join(" ");
}

/** The `sub` of a JWT (not verified: the server does). */
export function jwtSub(token: string): string | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const json = JSON.parse(new TextDecoder().decode(unb64(part))) as { sub?: unknown };
    return typeof json.sub === "string" ? json.sub : undefined;
  } catch {
    return undefined;
  }
}

function randomHex(n: number): string {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(n));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const enc = (p: string) => encodeURIComponent(p);

function bundleOf(pin: Pin): string {
  return JSON.stringify({ identity: JSON.parse(identityJson(pin.identity)) as unknown, identity_signature: pin.signature, one_time_keys: [], fallback_key: null });
}

/** The E2EE device of a client: see the module docs. Made by `Herald.connect({..., e2ee})`. */
export class E2ee {
  readonly user: string;
  device: WasmDevice;
  readonly sessions = new Map<string, WasmOlmSession[]>();
  private pins = new Map<string, Pin>();
  private pinned = new WasmPins();
  readonly channels = new Map<string, LiveChannel>();
  private handledDms: string[] = [];
  private conn!: Connection;
  private readonly oneTimeKeys: number;
  private readonly minOneTimeKeys: number;

  private constructor(
    private readonly file: StateFile,
    user: string,
    device: WasmDevice,
    private readonly opts: E2eeOptions,
  ) {
    this.user = user;
    this.device = device;
    this.oneTimeKeys = opts.oneTimeKeys ?? DEFAULT_ONE_TIME_KEYS;
    this.minOneTimeKeys = opts.minOneTimeKeys ?? Math.floor(this.oneTimeKeys / 2);
  }

  /**
   * Opens the device state (a new device on first use, saved before its keys are published),
   * then registers it (`PUT /v1/keys/devices/{id}`) or tops up its one-time keys. Called by
   * `Herald.connect` before the socket opens, which then declares the device.
   */
  static async open(conn: Connection, token: string, opts: E2eeOptions): Promise<E2ee> {
    // The WebAssembly is loaded by `e2ee()` (./index.ts), which calls this.
    const user = jwtSub(token);
    if (!user) throw new E2eeError("the token names no user (sub)");
    const { file, state } = await StateFile.open(opts.store, opts.secret);
    let e: E2ee;
    if (state) {
      if (state.user !== user) throw new E2eeError(`the device state belongs to user ${JSON.stringify(state.user)}, the token is ${JSON.stringify(user)}'s`, "e2ee_state");
      e = E2ee.load(file, state, opts);
    } else {
      const device = new WasmDevice(opts.deviceId ?? `d-${randomHex(8)}`);
      e = new E2ee(file, user, device, opts);
      // On disk before the keys are published: the private halves must not be lost.
      await e.save();
    }
    e.conn = conn;
    await e.replenish(true);
    return e;
  }

  private static load(file: StateFile, p: Persisted, opts: E2eeOptions): E2ee {
    const key = file.pickleKey();
    const e = new E2ee(file, p.user, WasmDevice.fromPickle(p.device, key), opts);
    for (const [peer, pickles] of Object.entries(p.sessions ?? {})) {
      e.sessions.set(peer, pickles.map((s) => WasmOlmSession.fromPickle(s, key)));
    }
    for (const [id, pp] of Object.entries(p.pins ?? {})) {
      const pin: Pin = { user: pp.user, identity: pp.identity, signature: hexToB64(pp.identity_signature), verified: pp.verified === true };
      e.pinned.pin(bundleOf(pin));
      e.pins.set(id, pin);
    }
    for (const [id, c] of Object.entries(p.channels ?? {})) {
      const [genesis, ...rest] = c.commits;
      if (!genesis) continue;
      const chain = new WasmRosterChain(JSON.stringify(c.admins), JSON.stringify(genesis));
      const commits = new Map<number, SignedCommit>([[0, genesis]]);
      for (const sc of rest) {
        chain.apply(JSON.stringify(sc));
        commits.set(sc.commit.epoch, sc);
      }
      const keyring = new WasmKeyring(id);
      for (const [epoch, k] of Object.entries(c.keys)) keyring.insert(BigInt(epoch), unb64(k));
      e.channels.set(id, { admins: c.admins, chain, keyring, commits });
    }
    e.handledDms = [...(p.handled_dms ?? [])];
    key.fill(0);
    return e;
  }

  get deviceId(): string {
    return this.device.deviceId();
  }

  /** This device's public identity. */
  identity(): IdentityKeys {
    return JSON.parse(this.device.identityKeys()) as IdentityKeys;
  }

  /** This device's fingerprint (hex Ed25519 key in groups of 4). */
  fingerprint(): string {
    return fingerprint(this.identity());
  }

  warn(message: string): void {
    this.opts.onWarning?.(message);
  }

  /**
   * The encrypted handle of `plain`: with `create`, posts the genesis (the caller's, those
   * members' and the keepers' devices; a channel that has a roster already is synced);
   * with `sync`, fetches its roster and keys (a missing roster is no error: a keeper or the
   * creator may post it later).
   */
  async encryptedSpace(plain: Space, opts: { create?: string[]; sync?: boolean } = {}): Promise<EncryptedSpace> {
    const space = new EncryptedSpace(this, plain);
    if (opts.create) {
      if ((await new ChannelKeys(this).createGenesis(plain.id, opts.create)) === "existed") await space.sync();
    } else if (opts.sync) {
      try {
        await space.sync();
      } catch (e) {
        if (!(e instanceof E2eeError)) throw e;
      }
    }
    return space;
  }

  /** @internal */
  attach(conn: Connection): void {
    this.conn = conn;
  }

  /** @internal */
  get connection(): Connection {
    return this.conn;
  }

  /** Seals the live state and stores it (writes land in call order). */
  save(): Promise<void> {
    const key = this.file.pickleKey();
    const channels: Persisted["channels"] = {};
    for (const [id, c] of this.channels) {
      const keys: Record<string, string> = {};
      for (const epoch of c.keyring.epochs()) keys[String(epoch)] = b64(c.keyring.get(epoch));
      const commits = [...c.commits.entries()].sort((a, b) => a[0] - b[0]).map(([, sc]) => sc);
      channels[id] = { admins: c.admins, commits, keys };
    }
    const pins: Record<string, PersistedPin> = {};
    for (const [id, p] of this.pins) pins[id] = { user: p.user, identity: p.identity, identity_signature: b64ToHex(p.signature), verified: p.verified };
    const sessions: Record<string, string[]> = {};
    for (const [peer, ss] of this.sessions) sessions[peer] = ss.map((s) => s.pickle(key));
    const state: Persisted = {
      user: this.user,
      device_id: this.deviceId,
      device: this.device.pickle(key),
      sessions,
      pins,
      channels,
      handled_dms: this.handledDms,
    };
    key.fill(0);
    return this.file.save(state);
  }

  /** Waits for pending writes and releases the store (its lock). */
  async close(): Promise<void> {
    await this.file.close();
  }

  async restJson(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const res = await this.conn.rest(method, path, body);
    if (res.status === 204) return {};
    return (await res.json()) as Record<string, unknown>;
  }

  /** `GET /v1/keys/users/{user}`: the user's current devices, unverified. */
  async listDevices(user: string): Promise<DeviceInfo[]> {
    const v = await this.restJson("GET", `/v1/keys/users/${enc(user)}`);
    if (!Array.isArray(v.devices)) throw new E2eeError("unreadable device list", "protocol");
    return v.devices as DeviceInfo[];
  }

  /** `DELETE /v1/keys/devices/{id}`: revokes one of the user's devices. */
  async revokeDevice(deviceId: string): Promise<void> {
    await this.conn.rest("DELETE", `/v1/keys/devices/${enc(deviceId)}`);
  }

  /** Whether `device` is pinned (`undefined`: not), and whether it was verified out of band. */
  pinStatus(device: string): boolean | undefined {
    return this.pins.get(device)?.verified;
  }

  /**
   * Checks `fingerprintHex` against the key the server lists for `device` of `user` and pins
   * it as verified; a changed key is accepted only this way (the user checked it out of band).
   */
  async verifyDevice(user: string, device: string, fingerprintHex: string): Promise<void> {
    const want = fingerprintHex.replace(/\s+/g, "").toLowerCase();
    const info = (await this.listDevices(user)).find((d) => d.device_id === device);
    if (!info) throw new UnknownDeviceError(user, device);
    const found = b64ToHex(info.identity.ed25519);
    if (found !== want) throw new FingerprintMismatchError(user, device, want, found);
    const pin: Pin = { user, identity: info.identity, signature: info.identity_signature, verified: true };
    const old = this.pins.get(device);
    const changed = old !== undefined && !sameIdentity(old.identity, info.identity);
    if (changed) {
      const pinned = new WasmPins();
      for (const [id, p] of this.pins) if (id !== device) pinned.pin(bundleOf(p));
      pinned.pin(bundleOf(pin));
      this.pinned.free();
      this.pinned = pinned;
      for (const s of this.sessions.get(device) ?? []) s.free();
      this.sessions.delete(device);
    } else {
      this.pinned.pin(bundleOf(pin));
    }
    this.pins.set(device, pin);
    await this.save();
  }

  /** The pinned identity of `device` of `user`: pinned on first sight, refused when it changed. */
  async peer(user: string, device: string): Promise<IdentityKeys> {
    const p = this.pins.get(device);
    if (p) {
      if (p.user !== user) throw new UnknownDeviceError(user, device);
      return p.identity;
    }
    await this.userDevices(user);
    const q = this.pins.get(device);
    if (q && q.user === user) return q.identity;
    throw new UnknownDeviceError(user, device);
  }

  /** The current devices of `user`, each checked against its pin (new ones pinned). */
  async userDevices(user: string): Promise<IdentityKeys[]> {
    return this.pinAll(user, await this.listDevices(user));
  }

  async pinAll(user: string, devices: DeviceInfo[]): Promise<IdentityKeys[]> {
    const out: IdentityKeys[] = [];
    let dirty = false;
    for (const d of devices) {
      const p = this.pins.get(d.device_id);
      if (p) {
        if (!sameIdentity(p.identity, d.identity) || p.user !== user) throw new IdentityChangedError(user, d.device_id);
      } else {
        if (d.identity?.device_id !== d.device_id) throw new E2eeError(`device ${JSON.stringify(d.device_id)} listed with the keys of another device`, "protocol");
        const pin: Pin = { user, identity: d.identity, signature: d.identity_signature, verified: false };
        // Verifies the self-signature and refuses a key already pinned for another device.
        this.pinned.pin(bundleOf(pin));
        this.pins.set(d.device_id, pin);
        dirty = true;
      }
      out.push(d.identity);
    }
    if (dirty) await this.save();
    return out;
  }

  /** Tops up this device's one-time keys when fewer than `minOneTimeKeys` are left. */
  async replenishOneTimeKeys(): Promise<void> {
    await this.replenish(false);
  }

  private async replenish(atStart: boolean): Promise<void> {
    const id = this.deviceId;
    const listed = (await this.listDevices(this.user)).find((d) => d.device_id === id);
    let count = 0;
    if (listed) {
      if (listed.one_time_keys >= this.minOneTimeKeys) return;
      count = listed.one_time_keys;
    } else if (!atStart) {
      throw new UnknownDeviceError(this.user, id);
    }
    const want = Math.max(1, this.oneTimeKeys - count);
    const bundle = JSON.parse(this.device.publishBundle(want)) as unknown;
    // Saved before the upload: the account now holds the private halves.
    await this.save();
    await this.restJson("PUT", `/v1/keys/devices/${enc(id)}`, { bundle });
  }

  // ---- direct messages ----

  /**
   * Encrypts `payload` to every current device of `user` and to this user's other devices
   * (Olm sessions from claimed one-time keys where there is none), and sends them in one
   * `dm.send` with a random `client_id`. Resolves with the ids of the copies.
   */
  async sendDm(user: string, payload: Uint8Array | string): Promise<string[]> {
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const me = this.user;
    const mine = this.deviceId;
    let targets: Array<[string, IdentityKeys]> = (await this.userDevices(user)).map((i) => [user, i]);
    if (user !== me) targets.push(...(await this.userDevices(me)).map((i): [string, IdentityKeys] => [me, i]));
    targets = targets.filter(([, i]) => i.device_id !== mine);
    if (targets.length === 0) throw new E2eeError(`${JSON.stringify(user)} has no device to send to`);
    await this.ensureSessions(targets);
    const to: Array<{ user: string; device_id: string; body: string }> = [];
    for (const [u, identity] of targets) {
      const ss = this.sessions.get(identity.device_id);
      const session = ss?.[ss.length - 1];
      if (!session) continue;
      to.push({ user: u, device_id: identity.device_id, body: session.encrypt(bytes) });
    }
    // The ratchets moved: stored before the ciphertexts leave.
    await this.save();
    if (to.length === 0) throw new E2eeError(`no session with any device of ${JSON.stringify(user)}`);
    const ok = await this.conn.request("dm.send", { to, client_id: randomHex(12) });
    return (ok.ids as string[] | undefined) ?? [];
  }

  private async ensureSessions(targets: Array<[string, IdentityKeys]>): Promise<void> {
    const missing = targets.filter(([, i]) => (this.sessions.get(i.device_id)?.length ?? 0) === 0).map(([u, i]) => ({ user: u, device_id: i.device_id }));
    if (missing.length === 0) return;
    const v = await this.restJson("POST", "/v1/keys/claim", { devices: missing });
    if (!Array.isArray(v.claimed)) throw new E2eeError("unreadable claim answer", "protocol");
    for (const c of v.claimed as Array<{ user: string; device_id: string; identity: IdentityKeys; key: unknown }>) {
      const pinned = targets.find(([u, i]) => u === c.user && i.device_id === c.device_id)?.[1];
      if (!pinned) continue;
      if (!c.identity || !sameIdentity(pinned, c.identity)) throw new IdentityChangedError(c.user, c.device_id);
      // Verifies the key's signature by the pinned device: a key swapped by the server fails here.
      const session = this.device.createOutboundSession(identityJson(pinned), JSON.stringify(c.key));
      const list = this.sessions.get(c.device_id) ?? [];
      list.push(session);
      this.sessions.set(c.device_id, list);
    }
    await this.save();
  }

  handled(id: string): boolean {
    return this.handledDms.includes(id);
  }

  /** Decrypts one DM, records it as handled and stores the state; throws with the reason. */
  async openDm(dm: RawDm): Promise<Uint8Array> {
    let identity: IdentityKeys;
    try {
      identity = await this.peer(dm.from, dm.from_device);
    } catch (e) {
      if (e instanceof IdentityChangedError || e instanceof UnknownDeviceError) throw e;
      // The key directory could not be read: try again later.
      throw new TransientDmError(`cannot check the sender: ${e instanceof Error ? e.message : String(e)}`);
    }
    let preKey = false;
    try {
      const m = JSON.parse(dm.body) as { pre_key?: unknown };
      preKey = m.pre_key === true;
    } catch {
      this.markHandled(dm.id);
      await this.save();
      throw new E2eeError("malformed olm message", "protocol");
    }
    let plain: Uint8Array | undefined;
    let failure: string | undefined;
    let created = false;
    const sessions = this.sessions.get(dm.from_device) ?? [];
    // Newest session first: the one the peer most likely used.
    for (let i = sessions.length - 1; i >= 0 && plain === undefined; i--) {
      const s = sessions[i]!;
      if (preKey && !s.matches(dm.body)) continue;
      try {
        plain = s.decrypt(dm.body);
      } catch {
        // Not this session.
      }
    }
    if (plain === undefined) {
      if (preKey) {
        try {
          const inbound = this.device.createInboundSession(identityJson(identity), dm.body);
          plain = inbound.plaintext;
          sessions.push(inbound.takeSession());
          inbound.free();
          this.sessions.set(dm.from_device, sessions);
          created = true;
        } catch (e) {
          failure = `crypto: ${e instanceof Error ? e.message : String(e)}`;
        }
      } else {
        failure = "no Olm session decrypts it (a message of a session this device does not have)";
      }
    }
    this.markHandled(dm.id);
    try {
      await this.save();
    } catch (e) {
      // Not acknowledged: the DM stays in the inbox until a state that read it is stored.
      throw new TransientDmError(`cannot store the device state: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (created) {
      // A one-time key was used up: top up if few are left; a failure must not lose the message.
      this.replenish(false).catch((e: unknown) => this.warn(`one-time key top-up failed: ${String(e)}`));
    }
    if (plain === undefined) throw new E2eeError(failure ?? "cannot decrypt");
    return plain;
  }

  private markHandled(id: string): void {
    this.handledDms.push(id);
    while (this.handledDms.length > HANDLED_DMS_MAX) this.handledDms.shift();
  }

  /** @internal Forget that `id` was handled (a network failure: it is retried). */
  unhandle(id: string): void {
    this.handledDms = this.handledDms.filter((h) => h !== id);
  }

  async fetchInbox(): Promise<RawDm[]> {
    const v = await this.restJson("GET", `/v1/dm/inbox?device=${enc(this.deviceId)}`);
    return Array.isArray(v.dms) ? (v.dms as RawDm[]) : [];
  }

  async ack(id: string): Promise<void> {
    await this.conn.request("dm.ack", { ids: [id] });
  }

  /**
   * Calls `cb` with every direct message of this device, decrypted (or with why it cannot
   * be): the server inbox first (what arrived while offline, oldest first), then live `dm`
   * events, one at a time in order. Each is acknowledged only after the state that decrypted
   * it is stored; a redelivered id is acknowledged again and skipped. One that cannot be
   * decrypted is reported and acknowledged (it never will decrypt), except after a network
   * failure, when it stays in the inbox. Returns the function that stops listening.
   */
  onDm(cb: (dm: DirectMessage | undefined, failure: DirectMessageFailure | undefined) => void): () => void {
    let stopped = false;
    const queue: RawDm[] = [];
    let running = false;
    let inboxFetched = false;
    const pump = async (): Promise<void> => {
      if (running) return;
      running = true;
      try {
        if (!inboxFetched) {
          try {
            const inbox = await this.fetchInbox();
            queue.unshift(...inbox);
            inboxFetched = true;
          } catch (e) {
            this.warn(`cannot fetch the DM inbox: ${String(e)}`);
          }
        }
        while (!stopped && queue.length > 0) {
          const dm = queue.shift()!;
          if (this.handled(dm.id)) {
            // Already read (the ack may have been lost): ack again, skip.
            await this.ack(dm.id).catch(() => undefined);
            continue;
          }
          let payload: Uint8Array | undefined;
          let reason: string | undefined;
          let transient = false;
          try {
            payload = await this.openDm(dm);
          } catch (e) {
            reason = e instanceof Error ? e.message : String(e);
            transient = e instanceof TransientDmError;
          }
          if (transient) {
            this.unhandle(dm.id);
          } else {
            await this.ack(dm.id).catch((e: unknown) => this.warn(`dm.ack failed (the message is skipped if delivered again): ${String(e)}`));
          }
          if (stopped) return;
          if (payload !== undefined) {
            cb({ id: dm.id, from: dm.from, from_device: dm.from_device, payload, text: new TextDecoder().decode(payload), ts: dm.ts ?? "" }, undefined);
          } else {
            cb(undefined, { id: dm.id, from: dm.from, from_device: dm.from_device, reason: reason ?? "unknown" });
          }
        }
      } finally {
        running = false;
      }
      if (!stopped && queue.length > 0) void pump();
    };
    const off = this.conn.on("dm", ((e: RawDm) => {
      queue.push(e);
      void pump();
    }) as (p: never) => void);
    void pump();
    return () => {
      stopped = true;
      off();
    };
  }
}
