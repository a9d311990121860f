/**
 * The device state as persisted: the same JSON as the Rust SDK's state file
 * (`herald_client::e2ee` `Persisted`), inside herald-crypto's `HST1` container (docs §L, §O),
 * so one format serves every SDK.
 */
import { WasmStateSealer } from "../wasm/herald_crypto_wasm.js";
import type { StateStore } from "./store.js";

/** Public identity keys of a device (herald-crypto's `IdentityKeys` JSON). */
export interface IdentityKeys {
  device_id: string;
  ed25519: string;
  curve25519: string;
  envelope: string;
}

/** A roster member (`keeper/<user>` for a keeper). */
export interface RosterMember {
  user: string;
  devices: string[];
}

/** A signed roster commit (herald-crypto's `SignedCommit` JSON). */
export interface SignedCommit {
  commit: {
    channel: string;
    epoch: number;
    prev_commit_hash: string;
    members: RosterMember[];
    reason: { kind: "create" | "rotate" } | { kind: "add" | "remove"; users: string[] };
  };
  signer: string;
  signature: string;
}

export interface PersistedPin {
  user: string;
  identity: IdentityKeys;
  /** Hex of the 64-byte self-signature (as the Rust state file keeps it). */
  identity_signature: string;
  verified?: boolean;
}

export interface PersistedChannel {
  admins: IdentityKeys[];
  commits: SignedCommit[];
  /** Epoch (decimal) → base64url of the 32-byte key. */
  keys: Record<string, string>;
}

export interface Persisted {
  user: string;
  device_id: string;
  /** herald-crypto's `hdev1.` pickle of the account. */
  device: string;
  /** Peer device → `hses1.` pickles, newest last. */
  sessions: Record<string, string[]>;
  pins: Record<string, PersistedPin>;
  channels: Record<string, PersistedChannel>;
  /** Ids of DMs already handled, newest last. */
  handled_dms: string[];
}

/** The key of the state: a passphrase (Argon2id, salt in the container) or 32 raw bytes. */
export type StateSecret = { passphrase: string } | { key: Uint8Array };

/** An opened state: its sealer (key derived once) and store; saves are written in call order. */
export class StateFile {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    readonly store: StateStore,
    private readonly sealer: WasmStateSealer,
  ) {}

  /** Opens the store's container, or prepares a new one when the store is empty. */
  static async open(store: StateStore, secret: StateSecret): Promise<{ file: StateFile; state: Persisted | undefined }> {
    const raw = await store.load();
    const pass = "passphrase" in secret ? secret.passphrase : undefined;
    const key = "key" in secret ? secret.key : undefined;
    if (raw === undefined) {
      return { file: new StateFile(store, WasmStateSealer.create(pass, key)), state: undefined };
    }
    let opened;
    try {
      opened = WasmStateSealer.open(raw, pass, key);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (/decrypt/i.test(msg)) throw new Error("cannot decrypt the device state: wrong passphrase or key, or it was altered");
      throw new Error(`device state: ${msg}`);
    }
    const sealer = opened.takeSealer();
    const plain = opened.plaintext;
    opened.free();
    let state: Persisted;
    try {
      state = JSON.parse(new TextDecoder().decode(plain)) as Persisted;
    } catch (e) {
      throw new Error(`unreadable device state: ${String(e)}`);
    } finally {
      plain.fill(0);
    }
    return { file: new StateFile(store, sealer), state };
  }

  /** The 32-byte key the pickles inside are made under. */
  pickleKey(): Uint8Array {
    return this.sealer.key();
  }

  /**
   * Seals `state` now and writes it after every earlier save: an older state never lands
   * over a newer one. Resolves once this version is stored.
   */
  save(state: Persisted): Promise<void> {
    if (this.closing) return Promise.reject(new Error("the device state is closed"));
    const plain = new TextEncoder().encode(JSON.stringify(state));
    const sealed = this.sealer.seal(plain);
    plain.fill(0);
    const next = this.writing.then(() => this.store.save(sealed));
    // A failed write must not block the ones after it; the caller sees the failure.
    this.writing = next.catch(() => undefined);
    return next;
  }

  private closing: Promise<void> | undefined;

  /** Waits for pending writes, releases the store and forgets the key; once (later calls share it). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.writing;
      await this.store.close?.();
      this.sealer.free();
    })();
    return this.closing;
  }
}
