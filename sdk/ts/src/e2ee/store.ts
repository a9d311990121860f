/**
 * Where a device's sealed state (the `HST1` container, docs/protocol.md §L and §O) is kept.
 * The bytes are already encrypted by herald-crypto's `StateSealer`; a store only keeps them,
 * and must replace them atomically (a crash leaves the old or the new state, never a torn one).
 *
 * - `FileStateStore` (`./node-store.ts`, Node only): Node, one file (written to `<file>.tmp`, fsynced, renamed, the
 *   directory fsynced; mode 0600), with `<file>.lock` (a pid file) held while the client runs
 *   so a second Node process cannot use the same device. It does not exclude a Rust process
 *   (whose lock is an OS lock on the file with the extension `.lock`): one SDK per state file.
 * - {@link IndexedDbStateStore}: browsers, one IndexedDB record (one transaction per save).
 * - {@link MemoryStateStore}: tests, and anywhere neither exists.
 *
 * {@link webCryptoStateKey} gives browsers a state key without a passphrase: 32 random bytes
 * wrapped (AES-GCM) under a non-extractable WebCrypto key that never leaves the browser's key
 * store; the unwrapped bytes are the `HST1` container's raw key.
 */

/** Keeps the sealed state bytes. */
export interface StateStore {
  /** The bytes last saved, or `undefined` when there are none yet. */
  load(): Promise<Uint8Array | undefined>;
  /** Replaces the bytes atomically. */
  save(bytes: Uint8Array): Promise<void>;
  /** Releases what the store holds (a lock). */
  close?(): Promise<void>;
}

/** In memory only: for tests, or a device that lives as long as the page. */
export class MemoryStateStore implements StateStore {
  bytes: Uint8Array | undefined;
  saves = 0;
  constructor(initial?: Uint8Array) {
    this.bytes = initial;
  }
  async load(): Promise<Uint8Array | undefined> {
    return this.bytes ? new Uint8Array(this.bytes) : undefined;
  }
  async save(bytes: Uint8Array): Promise<void> {
    this.bytes = new Uint8Array(bytes);
    this.saves += 1;
  }
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

function openDb(factory: IDBFactory, name: string): Promise<IDBDatabase> {
  const r = factory.open(name, 1);
  r.onupgradeneeded = () => {
    if (!r.result.objectStoreNames.contains("state")) r.result.createObjectStore("state");
  };
  return request(r);
}

async function idbGet(db: IDBDatabase, key: string): Promise<unknown> {
  return request(db.transaction("state", "readonly").objectStore("state").get(key));
}

async function idbPut(db: IDBDatabase, key: string, value: unknown): Promise<void> {
  const tx = db.transaction("state", "readwrite");
  tx.objectStore("state").put(value, key);
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB write failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB write aborted"));
  });
}

/** The sealed state in IndexedDB (database `herald-e2ee` by default, one record per device slot). */
export class IndexedDbStateStore implements StateStore {
  private constructor(
    private readonly db: IDBDatabase,
    private readonly slot: string,
  ) {}

  /** Opens the store; `factory` defaults to `globalThis.indexedDB`. */
  static async open(slot = "default", opts: { database?: string; factory?: IDBFactory } = {}): Promise<IndexedDbStateStore> {
    const factory = opts.factory ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    if (!factory) throw new Error("no IndexedDB here: give a StateStore (FileStateStore in Node, MemoryStateStore in tests)");
    return new IndexedDbStateStore(await openDb(factory, opts.database ?? "herald-e2ee"), slot);
  }

  async load(): Promise<Uint8Array | undefined> {
    const v = await idbGet(this.db, `state:${this.slot}`);
    return v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : undefined;
  }

  async save(bytes: Uint8Array): Promise<void> {
    await idbPut(this.db, `state:${this.slot}`, new Uint8Array(bytes));
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

/**
 * A 32-byte state key for the `HST1` container (raw-key kind) that is only ever stored
 * wrapped: AES-GCM under a non-extractable WebCrypto key kept in IndexedDB (the browser keeps
 * it; script can use it but never read it). Made on first use. A copy of the IndexedDB data
 * alone does not open the state outside this browser profile.
 */
export async function webCryptoStateKey(slot = "default", opts: { database?: string; factory?: IDBFactory } = {}): Promise<Uint8Array> {
  const factory = opts.factory ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  const subtle = globalThis.crypto?.subtle;
  if (!factory || !subtle) throw new Error("webCryptoStateKey needs IndexedDB and WebCrypto (a browser, in a secure context)");
  const db = await openDb(factory, opts.database ?? "herald-e2ee");
  try {
    const stored = (await idbGet(db, `key:${slot}`)) as { wrapper: CryptoKey; iv: Uint8Array; wrapped: Uint8Array } | undefined;
    if (stored) {
      const raw = await subtle.decrypt({ name: "AES-GCM", iv: stored.iv as unknown as BufferSource }, stored.wrapper, stored.wrapped as unknown as BufferSource);
      return new Uint8Array(raw);
    }
    const wrapper = await subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
    const key = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
    const wrapped = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv }, wrapper, key));
    await idbPut(db, `key:${slot}`, { wrapper, iv, wrapped });
    return key;
  } finally {
    db.close();
  }
}
