/**
 * A minimal in-memory IndexedDB (only what `IndexedDbStateStore` and `webCryptoStateKey` use:
 * open with an upgrade, one object store, get/put in transactions). Node has no IndexedDB; this
 * runs the browser store's code paths in Node. Values are kept by reference, as structured
 * clone keeps a CryptoKey usable without exposing it.
 */
type Handler = (() => void) | null;

class FakeRequest<T> {
  result!: T;
  error: Error | null = null;
  onsuccess: Handler = null;
  onerror: Handler = null;
  onupgradeneeded: Handler = null;
}

class FakeTransaction {
  oncomplete: Handler = null;
  onerror: Handler = null;
  onabort: Handler = null;
  error: Error | null = null;
  constructor(private readonly db: FakeDb) {
    setTimeout(() => this.oncomplete?.(), 0);
  }
  objectStore(name: string) {
    const store = this.db.stores.get(name);
    if (!store) throw new Error(`no object store ${name}`);
    return {
      get: (key: string) => {
        const r = new FakeRequest<unknown>();
        setTimeout(() => {
          r.result = store.get(key);
          r.onsuccess?.();
        }, 0);
        return r;
      },
      put: (value: unknown, key: string) => {
        store.set(key, value instanceof Uint8Array ? new Uint8Array(value) : value);
        return new FakeRequest<unknown>();
      },
    };
  }
}

class FakeDb {
  readonly stores = new Map<string, Map<string, unknown>>();
  closed = false;
  get objectStoreNames() {
    return { contains: (n: string) => this.stores.has(n) };
  }
  createObjectStore(name: string) {
    this.stores.set(name, new Map());
  }
  transaction(_name: string, _mode: string) {
    if (this.closed) throw new Error("the database is closed");
    return new FakeTransaction(this);
  }
  close() {
    this.closed = true;
  }
}

export class FakeIdbFactory {
  readonly dbs = new Map<string, Map<string, Map<string, unknown>>>();
  open(name: string, _version: number) {
    const r = new FakeRequest<FakeDb>();
    setTimeout(() => {
      const db = new FakeDb();
      const existing = this.dbs.get(name);
      if (existing) for (const [k, v] of existing) db.stores.set(k, v);
      r.result = db;
      if (!existing) r.onupgradeneeded?.();
      this.dbs.set(name, db.stores);
      r.onsuccess?.();
    }, 0);
    return r;
  }
}
