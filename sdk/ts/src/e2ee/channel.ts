/**
 * Encrypted channels (docs/protocol.md §I, §L, §O): the roster chain (signed commits), epoch
 * keys sealed to every member device and keeper device (HPKE envelopes), sealed messages
 * opened and checked (roster membership at the epoch, author, signature, the log's hash
 * chain), and encrypted erasure-coded files. The same steps as the Rust SDK's
 * `EncryptedChannel`, so TypeScript and Rust members share one channel.
 */
import { ChainVerifier, type EntryKind } from "../chain.js";
import { HeraldError, StaleEpochError } from "../errors.js";
import { parseTsMs, type Channel, type Message, type MessageEditedEvent, type MessageEvent } from "../frames.js";
import type { Space } from "../index.js";
import { randomId } from "../client.js";
import {
  WasmKeyring,
  WasmRosterChain,
  commitHash,
  decryptFile,
  encryptFile,
  generateEpochKey,
  genesisCommit,
  sealedInfo,
} from "../wasm/herald_crypto_wasm.js";
import { E2ee, E2eeError, identityJson } from "./e2ee.js";
import type { IdentityKeys, RosterMember, SignedCommit } from "./state.js";

/** The roster entry of a keeper user: `keeper/<user>` (`/` cannot occur in a user id). */
export const KEEPER_PREFIX = "keeper/";
/** The message `type` of a sealed file manifest. */
export const FILE_TYPE = "herald.file";

const enc = (p: string) => encodeURIComponent(p);
const ZERO_HASH = "0".repeat(64);
/** How many messages an `EncryptedSpace` remembers (id → the message), so a live edit is opened against its message's author. */
const SEEN_MAX = 2_000;

/** Why a message cannot be opened (the Rust SDK's `UnopenableReason`). */
export type UnopenableReason = "malformed" | "no_key" | "not_member" | "author_mismatch" | "bad_signature" | "identity";

/**
 * A message of an encrypted channel: opened (`text`, `plaintext`) or not (`unopenable`). An
 * edited message (history, or a live edit from `onMessageEdited`) has `edited_at`, and its
 * `content`, `text`, `sealed`, `device` and `epoch` are those of the newest content.
 */
export interface DecryptedMessage extends Message {
  /** The sealed `hm1.` string the server holds (`content` is the decrypted text, or "" when unopenable). */
  sealed: string;
  /** The device that sealed it (when it parsed). */
  device?: string;
  /** The plaintext (absent when unopenable). */
  plaintext?: Uint8Array;
  /** The plaintext as UTF-8 text (absent when unopenable). */
  text?: string;
  /** Why it could not be opened; never delivered as if it were fine. */
  unopenable?: { reason: UnopenableReason; detail: string };
}

/** The manifest of an encrypted file (herald-crypto's `FileManifest` JSON; holds the file key). */
export interface FileManifest {
  v: number;
  name: string;
  type: string;
  size: number;
  chunk_size: number;
  k: number;
  m: number;
  shard_size: number;
  shard_hashes: string[];
  key: string;
}

function ownerUser(member: string): string {
  return member.startsWith(KEEPER_PREFIX) ? member.slice(KEEPER_PREFIX.length) : member;
}

function isStale(e: unknown): boolean {
  return e instanceof StaleEpochError || (e instanceof HeraldError && e.code === "stale_epoch");
}

function msg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

type Reason = { kind: "create" | "rotate" } | { kind: "add" | "remove"; users: string[] };

/** The channel operations behind `EncryptedSpace`, on the device's live state. */
export class ChannelKeys {
  constructor(private readonly e2ee: E2ee) {}

  /** The keeper devices (`GET /v1/keys/keepers`), pinned, as roster members `keeper/<user>`. */
  async keeperMembers(): Promise<RosterMember[]> {
    const v = await this.e2ee.restJson("GET", "/v1/keys/keepers");
    const byUser = new Map<string, Array<{ device_id: string; identity: IdentityKeys; identity_signature: string; one_time_keys: number; user?: string }>>();
    for (const d of (Array.isArray(v.devices) ? v.devices : []) as Array<{ device_id: string; identity: IdentityKeys; identity_signature: string; one_time_keys: number; user?: string }>) {
      if (!d.user) continue;
      const list = byUser.get(d.user) ?? [];
      list.push(d);
      byUser.set(d.user, list);
    }
    const out: RosterMember[] = [];
    for (const user of [...byUser.keys()].sort()) {
      const ids = await this.e2ee.pinAll(user, byUser.get(user) ?? []);
      out.push({ user: `${KEEPER_PREFIX}${user}`, devices: ids.map((i) => i.device_id) });
    }
    return out;
  }

  async memberIdentities(members: RosterMember[]): Promise<IdentityKeys[]> {
    const out: IdentityKeys[] = [];
    for (const m of members) for (const d of m.devices) out.push(await this.e2ee.peer(ownerUser(m.user), d));
    return out;
  }

  /** `key` sealed to every device of `to` but this one: `[device id, envelope JSON]`. */
  sealTo(channel: string, epoch: number, key: Uint8Array, to: IdentityKeys[]): Array<[string, unknown]> {
    const me = this.e2ee.deviceId;
    const out: Array<[string, unknown]> = [];
    for (const r of to) {
      if (r.device_id === me) continue;
      out.push([r.device_id, JSON.parse(this.e2ee.device.sealEpochKey(channel, BigInt(epoch), key, identityJson(r))) as unknown]);
    }
    return out;
  }

  /** Creates the genesis of a new encrypted channel: the caller's, `members`' and the keepers' devices. */
  async createGenesis(id: string, members: string[]): Promise<"created" | "existed"> {
    const e = this.e2ee;
    const me = e.user;
    const roster: RosterMember[] = [{ user: me, devices: (await e.userDevices(me)).map((i) => i.device_id) }];
    for (const m of members) {
      if (m === me) continue;
      roster.push({ user: m, devices: (await e.userDevices(m)).map((i) => i.device_id) });
    }
    roster.push(...(await this.keeperMembers()));
    const identities = await this.memberIdentities(roster);
    const genesis = JSON.parse(e.device.signCommit(genesisCommit(id, JSON.stringify(roster)))) as SignedCommit;
    const admins: IdentityKeys[] = [e.identity()];
    for (const m of roster) {
      if (m.user.startsWith(KEEPER_PREFIX)) admins.push(...identities.filter((i) => m.devices.includes(i.device_id)));
    }
    const key = generateEpochKey();
    const envelopes = this.sealTo(id, 0, key, identities).map(([device_id, envelope]) => ({ device_id, envelope }));
    const genesisJson = JSON.stringify(genesis);
    try {
      await e.restJson("POST", `/v1/channels/${enc(id)}/commits`, {
        epoch: 0,
        prev_commit_hash: ZERO_HASH,
        commit_hash: commitHash(genesisJson),
        commit: genesis,
        envelopes,
      });
    } catch (err) {
      // The channel has a roster already (a second create of one's own name): sync it instead.
      if (isStale(err)) return "existed";
      throw err;
    }
    const chain = new WasmRosterChain(JSON.stringify(admins), genesisJson);
    const keyring = new WasmKeyring(id);
    keyring.insert(0n, key);
    key.fill(0);
    e.channels.set(id, { admins, chain, keyring, commits: new Map([[0, genesis]]) });
    await e.save();
    return "created";
  }

  /**
   * Signs and posts the commit of the next epoch with `members`, a fresh key sealed to every
   * device in it. `false` when another commit won the race (`stale_epoch`).
   */
  async postCommit(channel: string, members: RosterMember[], reason: Reason): Promise<boolean> {
    const e = this.e2ee;
    const identities = await this.memberIdentities(members);
    const c = e.channels.get(channel);
    if (!c) throw new E2eeError(`channel ${channel} has no roster here`);
    const signed = JSON.parse(e.device.signCommit(c.chain.nextCommit(JSON.stringify(members), JSON.stringify(reason)))) as SignedCommit;
    const signedJson = JSON.stringify(signed);
    const epoch = signed.commit.epoch;
    // Dry run: a commit this chain would refuse (this device is no admin) must not become the head.
    try {
      c.chain.checkNext(signedJson);
    } catch (err) {
      throw new E2eeError(`this device cannot commit to channel ${channel}: ${msg(err)}`);
    }
    const key = generateEpochKey();
    const envelopes = this.sealTo(channel, epoch, key, identities).map(([device_id, envelope]) => ({ device_id, envelope }));
    try {
      await e.restJson("POST", `/v1/channels/${enc(channel)}/commits`, {
        epoch,
        prev_commit_hash: signed.commit.prev_commit_hash,
        commit_hash: commitHash(signedJson),
        commit: signed,
        envelopes,
      });
    } catch (err) {
      if (isStale(err)) return false;
      throw err;
    }
    if (Number(c.chain.epoch) + 1 === epoch) {
      c.chain.apply(signedJson);
      c.commits.set(epoch, signed);
    }
    c.keyring.insert(BigInt(epoch), key);
    key.fill(0);
    await e.save();
    return true;
  }

  /** Fetches new commits (each verified to extend the chain) and this device's envelopes. */
  async sync(channel: string, createdBy: string): Promise<void> {
    const e = this.e2ee;
    const known = e.channels.get(channel);
    const head = known ? Number(known.chain.epoch) : undefined;
    const path = `/v1/channels/${enc(channel)}/commits${head !== undefined ? `?after=${head}` : ""}`;
    const v = await e.restJson("GET", path);
    if (!Array.isArray(v.commits)) throw new E2eeError("unreadable commits", "protocol");
    const rows = v.commits as Array<{ epoch: number; commit: SignedCommit }>;
    let i = 0;
    if (head === undefined) {
      const first = rows[i++];
      if (!first) throw new E2eeError(`channel ${channel} has no roster commit yet`, "e2ee_no_roster");
      const genesis = first.commit;
      if (genesis.commit.channel !== channel) throw new E2eeError(`channel ${channel}: the genesis commit is for channel ${JSON.stringify(genesis.commit.channel)}`);
      // The admins: the genesis signer (a device of the channel's creator, listed in its own
      // roster under a non-keeper user) and the keeper devices the creator listed.
      const signerOwner = genesis.commit.members.find((m) => m.devices.includes(genesis.signer) && !m.user.startsWith(KEEPER_PREFIX))?.user;
      if (signerOwner === undefined) throw new E2eeError(`channel ${channel}: the genesis signer is not in its roster`);
      if (createdBy && signerOwner !== createdBy) throw new E2eeError(`channel ${channel}: genesis signed by ${JSON.stringify(signerOwner)}, but ${JSON.stringify(createdBy)} created the channel`);
      const admins = [await e.peer(signerOwner, genesis.signer)];
      for (const m of genesis.commit.members) {
        if (!m.user.startsWith(KEEPER_PREFIX)) continue;
        for (const d of m.devices) admins.push(await e.peer(ownerUser(m.user), d));
      }
      const chain = new WasmRosterChain(JSON.stringify(admins), JSON.stringify(genesis));
      if (!e.channels.has(channel)) e.channels.set(channel, { admins, chain, keyring: new WasmKeyring(channel), commits: new Map([[0, genesis]]) });
    }
    const c = e.channels.get(channel);
    if (c) {
      for (; i < rows.length; i++) {
        const row = rows[i]!;
        if (row.epoch <= Number(c.chain.epoch)) continue;
        c.chain.apply(JSON.stringify(row.commit));
        c.commits.set(row.epoch, row.commit);
      }
    }
    await e.save();
    await this.fetchEnvelopes(channel);
  }

  private async fetchEnvelopes(channel: string): Promise<void> {
    const e = this.e2ee;
    const v = await e.restJson("GET", `/v1/channels/${enc(channel)}/envelopes?device=${enc(e.deviceId)}`);
    const rows = (Array.isArray(v.envelopes) ? v.envelopes : []) as Array<{ epoch: number; envelope: { epoch: number; sender: string } }>;
    let opened = false;
    for (const row of rows) {
      const c = e.channels.get(channel);
      if (!c) return;
      const env = row.envelope;
      if (c.keyring.has(BigInt(row.epoch)) || env?.epoch !== row.epoch) continue;
      if (!c.commits.has(row.epoch)) {
        e.warn(`channel ${channel}: envelope for epoch ${row.epoch} without a verified commit ignored`);
        continue;
      }
      // Who sealed it: a device of a verified roster (a member or a keeper).
      let owner: string | undefined;
      for (const [, sc] of [...c.commits.entries()].sort((a, b) => a[0] - b[0])) {
        const m = sc.commit.members.find((mm) => mm.devices.includes(env.sender));
        if (m) owner = ownerUser(m.user);
      }
      if (owner === undefined) {
        e.warn(`channel ${channel}: envelope of epoch ${row.epoch} from device ${JSON.stringify(env.sender)} outside the roster ignored`);
        continue;
      }
      let sender: IdentityKeys;
      try {
        sender = await e.peer(owner, env.sender);
      } catch (err) {
        e.warn(`channel ${channel}: envelope sender unknown, ignored: ${msg(err)}`);
        continue;
      }
      try {
        c.keyring.openEnvelopeInto(JSON.stringify(env), e.device, identityJson(sender));
        opened = true;
      } catch (err) {
        e.warn(`channel ${channel}: envelope of epoch ${row.epoch} does not open, ignored: ${msg(err)}`);
      }
    }
    if (opened) await e.save();
  }

  /** Posts a remove commit for `user` unless the head roster already lacks them. */
  async rotateWithout(channel: string, createdBy: string, user: string): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      await this.sync(channel, createdBy);
      const c = this.e2ee.channels.get(channel);
      if (!c) return;
      const members = JSON.parse(c.chain.members()) as RosterMember[];
      if (!members.some((m) => m.user === user)) return;
      if (await this.postCommit(channel, members.filter((m) => m.user !== user), { kind: "remove", users: [user] })) return;
    }
    throw new E2eeError("removal commit lost the race 5 times");
  }

  /**
   * Makes the head roster list exactly `user`'s current devices (an `add` commit for a new
   * member, `rotate` for changed devices) and seals every epoch key held to them, so they
   * read the whole history: what a keeper does, for the channel's creator.
   */
  async admit(channel: string, createdBy: string, user: string): Promise<void> {
    const devices = [...new Set((await this.e2ee.userDevices(user)).map((i) => i.device_id))].sort();
    if (devices.length === 0) return;
    for (let attempt = 0; attempt < 5; attempt++) {
      await this.sync(channel, createdBy);
      const c = this.e2ee.channels.get(channel);
      if (!c) return;
      const members = JSON.parse(c.chain.members()) as RosterMember[];
      const current = members.find((m) => m.user === user);
      let next: RosterMember[];
      let reason: Reason;
      if (current) {
        if ([...new Set(current.devices)].sort().join("\n") === devices.join("\n")) break;
        next = members.map((m) => (m.user === user ? { user, devices } : m));
        reason = { kind: "rotate" };
      } else {
        next = [...members, { user, devices }];
        reason = { kind: "add", users: [user] };
      }
      if (await this.postCommit(channel, next, reason)) break;
    }
    // History: every key held, sealed to the user's devices (a second envelope replaces the first).
    const identities: IdentityKeys[] = [];
    for (const d of devices) identities.push(await this.e2ee.peer(user, d));
    const c = this.e2ee.channels.get(channel);
    if (!c) return;
    const envelopes: unknown[] = [];
    for (const epoch of c.keyring.epochs()) {
      const key = c.keyring.get(epoch);
      for (const [device_id, envelope] of this.sealTo(channel, Number(epoch), key, identities)) envelopes.push({ device_id, epoch: Number(epoch), envelope });
      key.fill(0);
    }
    for (let i = 0; i < envelopes.length; i += 200) {
      await this.e2ee.restJson("POST", `/v1/channels/${enc(channel)}/envelopes`, { envelopes: envelopes.slice(i, i + 200) });
    }
  }
}

/**
 * An encrypted channel: `sendMessage` seals, `onMessage` and `history` open and verify.
 * Reactions, receipts, typing and ephemeral signals stay plaintext metadata (`plain`).
 */
export class EncryptedSpace {
  private readonly keys: ChannelKeys;
  private readonly verifier = new ChainVerifier();
  /** Verified log: seq → message content (for history's check). */
  private readonly logContent = new Map<number, string | undefined>();
  /** Verified log: message id → the content of its newest `message_edited` entry (for history's check). */
  private readonly logEdits = new Map<string, string | undefined>();
  /** Messages seen (history, live), newest last: what a live edit is opened against. */
  private readonly seen = new Map<string, Message>();
  /** Live messages and edits are opened one at a time, in the order they came. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly e2ee: E2ee,
    /** The plain handle of the same channel (metadata ops). */
    readonly plain: Space,
  ) {
    this.keys = new ChannelKeys(e2ee);
  }

  get id(): string {
    return this.plain.id;
  }

  get name(): string | null {
    return this.plain.name;
  }

  get channel(): Channel {
    return this.plain.channel;
  }

  private get createdBy(): string {
    return this.plain.channel.created_by ?? "";
  }

  /** Fetches new roster commits (each verified) and this device's key envelopes. */
  sync(): Promise<void> {
    return this.keys.sync(this.id, this.createdBy);
  }

  /** The verified head epoch, if the roster is known here. */
  get epoch(): number | undefined {
    const c = this.e2ee.channels.get(this.id);
    return c ? Number(c.chain.epoch) : undefined;
  }

  /** The epochs whose key this device holds. */
  keyEpochs(): number[] {
    const c = this.e2ee.channels.get(this.id);
    return c ? Array.from(c.keyring.epochs(), Number) : [];
  }

  /** The members of the head epoch (keepers as `keeper/<id>`). */
  roster(): RosterMember[] {
    const c = this.e2ee.channels.get(this.id);
    return c ? (JSON.parse(c.chain.members()) as RosterMember[]) : [];
  }

  /**
   * Syncs until a key for `epoch` (the head's when absent) is here, or `timeoutMs` passes: for
   * a member who just joined, whose keys a keeper seals in the background. Wakes on every
   * event of the channel and at least every 200 ms (envelopes arrive without an event).
   */
  async waitForKeys(epoch?: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.sync();
      } catch (err) {
        if (!(err instanceof E2eeError)) throw err;
      }
      const c = this.e2ee.channels.get(this.id);
      if (c && c.keyring.has(BigInt(epoch ?? Number(c.chain.epoch)))) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new E2eeError(`no key for channel ${this.id} within ${timeoutMs} ms`, "e2ee_no_key");
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(200, left));
        const off = this.e2ee.connection.on("*", ((ev: { channel?: string }) => {
          if (ev?.channel === this.id) done();
        }) as (p: never) => void);
        function done(): void {
          clearTimeout(timer);
          off();
          resolve();
        }
      });
    }
  }

  /** Seals `body` with the head epoch's key and sends it (`message.send` with `epoch`); on `stale_epoch` syncs and seals again. */
  sendMessage(body: string | Uint8Array, opts: { type?: string; replyTo?: string; clientId?: string } = {}): Promise<Message> {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    return this.sendSealed(bytes, opts);
  }

  private sendSealed(plaintext: Uint8Array, opts: { type?: string; replyTo?: string; clientId?: string }): Promise<Message> {
    const clientId = opts.clientId ?? randomId();
    return this.sealAndRequest(plaintext, "message.send", (content, epoch) => {
      const fields: Record<string, unknown> = { channel: this.id, content, client_id: clientId, epoch };
      if (opts.type) fields.type = opts.type;
      if (opts.replyTo) fields.reply_to = opts.replyTo;
      return fields;
    });
  }

  /**
   * Replaces the content of this user's message `messageId` (`message.edit` with `epoch`),
   * sealed exactly as a send is: this device, the channel, the head epoch and its key; on
   * `stale_epoch` syncs and seals again. Another user's message is refused by the server
   * (`NotAuthorError`, code `not_author`). Resolves with the server's message (its `content`
   * is the sealed form).
   */
  edit(messageId: string, body: string | Uint8Array): Promise<Message> {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    return this.sealAndRequest(bytes, "message.edit", (content, epoch) => ({ channel: this.id, message_id: messageId, content, epoch }));
  }

  /** `edit`, under the name `Space` gives it. */
  editMessage(messageId: string, body: string | Uint8Array): Promise<Message> {
    return this.edit(messageId, body);
  }

  /** Seals `plaintext` with the head epoch and sends `op` with the fields `build` makes; on `stale_epoch` syncs and seals again (5 tries). */
  private async sealAndRequest(plaintext: Uint8Array, op: "message.send" | "message.edit", build: (content: string, epoch: number) => Record<string, unknown>): Promise<Message> {
    let synced = false;
    for (let attempt = 0; attempt < 5; attempt++) {
      const c = this.e2ee.channels.get(this.id);
      const epoch = c ? c.chain.epoch : undefined;
      if (!c || epoch === undefined || !c.keyring.has(epoch)) {
        if (synced) throw new E2eeError(`no key for the head epoch of channel ${this.id} (not sealed to this device yet)`, "e2ee_no_key");
        await this.sync();
        synced = true;
        continue;
      }
      const content = c.keyring.seal(this.e2ee.device, epoch, plaintext);
      try {
        const ok = await this.e2ee.connection.request(op, build(content, Number(epoch)));
        return ok.message as Message;
      } catch (err) {
        if (!isStale(err)) throw err;
        await this.sync();
        synced = true;
      }
    }
    throw new E2eeError(`channel ${this.id}: the epoch kept changing; gave up after 5 tries`);
  }

  /**
   * Opens one message: the sealed form parses; the epoch's commit and key are here (else one
   * sync, then `no_key`); the sealing device is in that epoch's roster (`not_member`); its
   * roster user is the author (`author_mismatch`); its signature against its pin and the
   * AEAD (`bad_signature`). An edited message (with `edited_at`, as history gives it) is
   * opened the same way: its content is the newest, sealed by a device of its author.
   */
  async open(m: Message): Promise<DecryptedMessage> {
    const fail = (reason: UnopenableReason, detail: string, device?: string): DecryptedMessage => ({
      ...m,
      content: "",
      sealed: m.content,
      ...(device !== undefined ? { device } : {}),
      unopenable: { reason, detail },
    });
    let info: { epoch: number; sender: string };
    try {
      info = JSON.parse(sealedInfo(m.content)) as { epoch: number; sender: string };
    } catch (err) {
      return fail("malformed", `not a sealed message: ${msg(err)}`);
    }
    const { epoch, sender } = info;
    let c = this.e2ee.channels.get(this.id);
    if (!c || !c.keyring.has(BigInt(epoch)) || !c.commits.has(epoch)) {
      try {
        await this.sync();
      } catch {
        // Reported below as no_key.
      }
      c = this.e2ee.channels.get(this.id);
    }
    const membersJson = c?.chain.membersAt(BigInt(epoch));
    if (!c || membersJson === undefined) return fail("no_key", `no key for epoch ${epoch} (not sealed to this device)`, sender);
    const member = (JSON.parse(membersJson) as RosterMember[]).find((mm) => mm.devices.includes(sender));
    if (!member) return fail("not_member", `sender device ${JSON.stringify(sender)} is not a member at epoch ${epoch}`, sender);
    if (!c.keyring.has(BigInt(epoch))) return fail("no_key", `no key for epoch ${epoch} (not sealed to this device)`, sender);
    if (ownerUser(member.user) !== m.author) {
      return fail("author_mismatch", `sealed by device ${JSON.stringify(sender)} of ${JSON.stringify(member.user)}, but the server names ${JSON.stringify(m.author)} as its author`, sender);
    }
    let identity: IdentityKeys;
    try {
      identity = await this.e2ee.peer(ownerUser(member.user), sender);
    } catch (err) {
      return fail("identity", `sender identity: ${msg(err)}`, sender);
    }
    let plaintext: Uint8Array;
    try {
      plaintext = c.keyring.open(m.content, identityJson(identity));
    } catch (err) {
      return fail("bad_signature", `bad signature or ciphertext: ${msg(err)}`, sender);
    }
    const text = new TextDecoder().decode(plaintext);
    return { ...m, content: text, sealed: m.content, device: sender, epoch, plaintext, text };
  }

  /** Verifies the log's hash chain from entry 1 (or the last verified entry) to its head. */
  private async verifyLog(): Promise<void> {
    let after = this.verifier.head(this.id)?.seq ?? 0;
    for (;;) {
      const res = await this.e2ee.connection.rest("GET", `/v1/channels/${enc(this.id)}/log?after=${after}&limit=500`);
      const page = (await res.json()) as { entries: Array<{ seq: number; kind: EntryKind; author: string; ref?: string; ts: string; content?: string; salt?: string; content_hash: string; prev_hash: string; hash: string }>; has_more: boolean };
      for (const en of page.entries) {
        this.verifier.check({ channel: this.id, seq: en.seq, kind: en.kind, author: en.author, ref: en.ref ?? "", ts_ms: parseTsMs(en.ts), content: en.content, salt: en.salt, content_hash: en.content_hash, prev_hash: en.prev_hash, hash: en.hash });
        if (en.kind === "message") this.logContent.set(en.seq, en.content);
        if (en.kind === "message_edited" && en.ref) this.logEdits.set(en.ref, en.content);
        after = en.seq;
      }
      if (!page.has_more || page.entries.length === 0) break;
    }
  }

  /**
   * One page of history (the options of `Space.history`), each message opened or with why
   * not. The log's hash chain is verified first (a broken link throws `ChainError`), and a
   * message whose content differs from its verified log entry (for an edited message: its
   * newest `message_edited` entry) is refused.
   */
  async history(opts: { limit?: number; before?: number; after?: number } = {}): Promise<{ messages: DecryptedMessage[]; has_more: boolean }> {
    await this.verifyLog();
    const page = await this.plain.history(opts);
    let differs = page.messages.filter((m) => !this.matchesLog(m));
    if (differs.length > 0) {
      // An edit may have been committed between the log read and the page: read the log again.
      await this.verifyLog();
      differs = differs.filter((m) => !this.matchesLog(m));
    }
    const bad = differs[0];
    if (bad) throw new E2eeError(`message at seq ${bad.seq} differs from its verified log entry`, "protocol");
    const messages: DecryptedMessage[] = [];
    for (const m of page.messages) {
      this.remember(m);
      messages.push(await this.open(m));
    }
    return { messages, has_more: page.has_more };
  }

  /** Whether `m`'s content is that of its verified log entry (true when the log has not reached it). */
  private matchesLog(m: Message): boolean {
    if (m.edited_at === undefined) {
      const logged = this.logContent.get(m.seq);
      return !this.logContent.has(m.seq) || logged === undefined || logged === m.content;
    }
    const edited = this.logEdits.get(m.id);
    return !this.logEdits.has(m.id) || edited === undefined || edited === m.content;
  }

  private remember(m: Message): void {
    this.seen.delete(m.id);
    this.seen.set(m.id, m);
    if (this.seen.size > SEEN_MAX) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
  }

  /** Runs `task` after the ones before it; one that throws (a callback's error) is reported to `onWarning` and does not stop the next. */
  private enqueue(task: () => Promise<void>): void {
    this.queue = this.queue.then(task).catch((err: unknown) => this.e2ee.warn(`channel ${this.id}: a message callback failed: ${msg(err)}`));
  }

  /** Calls `cb` with every new message of the channel, opened (or why not), in order. */
  onMessage(cb: (m: DecryptedMessage, e: MessageEvent) => void): () => void {
    return this.plain.onMessage((m, e) => {
      this.remember(m);
      this.enqueue(async () => cb(await this.open(m), e));
    });
  }

  /**
   * Opens a `message_edited` event: the message with its new content, checked as `open`
   * checks a message, against the author of the edited message (`original`, else the message
   * as this handle last saw it in `history` or live, else the event's `author`). Without a
   * known message, `seq` and `ts` are the edit entry's and `type` is "".
   */
  openEdit(e: MessageEditedEvent, original?: Message): Promise<DecryptedMessage> {
    const known = original ?? this.seen.get(e.message_id);
    const base: Message = known ?? { id: e.message_id, seq: e.seq, author: e.author, type: "", content: "", ts: e.ts };
    const { epoch: _stale, ...rest } = base;
    return this.open({ ...rest, content: e.content, edited_at: e.edited_at, ...(e.epoch !== undefined ? { epoch: e.epoch } : {}) });
  }

  /**
   * Calls `cb` with every live edit of a message of the channel, opened (`openEdit`) or with
   * why not, in order with the messages of `onMessage`.
   */
  onMessageEdited(cb: (m: DecryptedMessage, e: MessageEditedEvent) => void): () => void {
    // Messages are remembered as they come, so an edit is opened against its message's author.
    const offMessages = this.plain.onMessage((m) => this.remember(m));
    const offEdits = this.plain.onMessageEdited((e) => {
      this.enqueue(async () => {
        const opened = await this.openEdit(e);
        const known = this.seen.get(e.message_id);
        if (known) this.remember({ ...known, content: e.content, edited_at: e.edited_at, ...(e.epoch !== undefined ? { epoch: e.epoch } : {}) });
        cb(opened, e);
      });
    });
    return () => {
      offMessages();
      offEdits();
    };
  }

  /** Adds `user` (`channel.add_member`) and admits them: a signed `add` commit and every held key sealed to their devices. */
  async addMember(user: string): Promise<void> {
    await this.plain.addMember(user);
    await this.keys.admit(this.id, this.createdBy, user);
  }

  /** Admits `user` as a keeper does (for the creator, in channels without a keeper). */
  admitMember(user: string): Promise<void> {
    return this.keys.admit(this.id, this.createdBy, user);
  }

  /** Removes `user` and rotates: a `remove` commit, a fresh key for the remaining devices and keepers. */
  async removeMember(user: string): Promise<void> {
    await this.plain.removeMember(user);
    await this.keys.rotateWithout(this.id, this.createdBy, user);
  }

  /** A new epoch with the same members and a fresh key. */
  async rotate(): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      await this.sync();
      if (await this.keys.postCommit(this.id, this.roster(), { kind: "rotate" })) return;
    }
    throw new E2eeError("rotation lost the race 5 times");
  }

  /**
   * Encrypts `bytes`, erasure-codes them into 4 data + 2 parity shards, uploads each as a blob
   * (`?shard=i`, checking the stored id against the manifest), and sends the manifest (with
   * the file key) sealed as a message of type `herald.file`. `onProgress` gets (sent, total)
   * bytes of the shards (which together are larger than the file: parity and tags): byte by
   * byte where the platform reports upload progress (browsers), else after each shard.
   */
  async putFile(
    bytes: Uint8Array,
    opts: { name?: string; type?: string; dataShards?: number; parityShards?: number; onProgress?: (sent: number, total: number) => void } = {},
  ): Promise<{ message: Message; manifest: FileManifest }> {
    const f = encryptFile(opts.name ?? "file", opts.type ?? "application/octet-stream", bytes, opts.dataShards ?? 4, opts.parityShards ?? 2);
    let manifest: FileManifest;
    try {
      manifest = JSON.parse(f.manifest) as FileManifest;
      const shards = Array.from({ length: f.shardCount }, (_, i) => f.shard(i));
      const total = shards.reduce((n, s) => n + s.length, 0);
      let done = 0;
      const onProgress = opts.onProgress;
      for (let i = 0; i < shards.length; i++) {
        const shard = shards[i]!;
        const path = `/v1/channels/${enc(this.id)}/blobs?shard=${i}`;
        let r: { blob_id?: string };
        if (onProgress && typeof XMLHttpRequest !== "undefined") {
          const base = done;
          r = ((await this.e2ee.connection.restWithProgress("PUT", path, shard, (sent) => onProgress(base + Math.min(sent, shard.length), total))) ?? {}) as { blob_id?: string };
        } else {
          r = (await (await this.e2ee.connection.rest("PUT", path, shard)).json()) as { blob_id?: string };
        }
        if (r.blob_id !== manifest.shard_hashes[i]) throw new E2eeError(`the server stored shard ${i} under another id`, "protocol");
        done += shard.length;
        onProgress?.(done, total);
      }
    } finally {
      f.free();
    }
    const message = await this.sendSealed(new TextEncoder().encode(JSON.stringify({ manifest })), { type: FILE_TYPE });
    return { message, manifest };
  }

  /** The manifest a `herald.file` message carries, or `undefined`. */
  static fileOf(m: DecryptedMessage): FileManifest | undefined {
    if (m.type !== FILE_TYPE || m.text === undefined) return undefined;
    try {
      return (JSON.parse(m.text) as { manifest?: FileManifest }).manifest;
    } catch {
      return undefined;
    }
  }

  /** Downloads the shards of `manifest` and rebuilds the file from any `k` intact ones. */
  async getFile(manifest: FileManifest): Promise<Uint8Array> {
    const shards: Array<Uint8Array | null> = [];
    let present = 0;
    for (const h of manifest.shard_hashes) {
      try {
        const res = await this.e2ee.connection.rest("GET", `/v1/channels/${enc(this.id)}/blobs/${enc(h)}`, undefined, true);
        shards.push(new Uint8Array(await res.arrayBuffer()));
        present += 1;
      } catch (err) {
        if (err instanceof HeraldError && err.code === "not_found") shards.push(null);
        else throw err;
      }
    }
    try {
      // herald-crypto treats a shard with the wrong length or hash as missing.
      return decryptFile(JSON.stringify(manifest), shards);
    } catch (err) {
      throw new E2eeError(`file ${JSON.stringify(manifest.name)} cannot be rebuilt (${present} of ${manifest.shard_hashes.length} shards fetched, ${manifest.k} intact needed): ${msg(err)}`);
    }
  }

  // Plaintext metadata, as on a plain channel.
  react(messageId: string, emoji: string): Promise<string> {
    return this.plain.react(messageId, emoji);
  }
  markRead(messageId: string): Promise<void> {
    return this.plain.markRead(messageId);
  }
  typing(isTyping = true): Promise<void> {
    return this.plain.typing(isTyping);
  }
  leave(): Promise<void> {
    return this.plain.leave();
  }
}
