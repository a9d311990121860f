/**
 * The device state in a file (Node): see `StateStore` in `./store.ts`. Kept apart from the
 * browser stores so that a browser build never type-checks or bundles Node's modules.
 */
import type { StateStore } from "./store.js";

function isErrno(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && (e as { code?: unknown }).code === code;
}

/** A file (Node): atomic replace, mode 0600, and an exclusive `<file>.lock` while open. */
export class FileStateStore implements StateStore {
  private lockHeld = false;
  private constructor(readonly path: string) {}

  /**
   * Opens `path` and takes `<path>.lock` (created exclusively; a lock left by a process that
   * no longer runs is taken over). A lock held by a live process is refused: two writers would
   * overwrite each other's ratchet states and lose the DMs those states decrypt.
   */
  static async open(path: string): Promise<FileStateStore> {
    const s = new FileStateStore(path);
    await s.lock();
    return s;
  }

  private get lockPath(): string {
    return `${this.path}.lock`;
  }

  private async lock(): Promise<void> {
    const fs = await import("node:fs/promises");
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const h = await fs.open(this.lockPath, "wx", 0o600);
        await h.writeFile(String(process.pid));
        await h.close();
        this.lockHeld = true;
        return;
      } catch (e) {
        if (!isErrno(e, "EEXIST")) throw new Error(`cannot lock ${this.path}: ${String(e)}`);
      }
      let pid = NaN;
      try {
        pid = Number((await fs.readFile(this.lockPath, "utf8")).trim());
      } catch {
        // Removed meanwhile: try again.
      }
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new Error(`${this.path} is in use by another process (pid ${pid}): one device, one process at a time`);
      }
      if (pid === process.pid) {
        throw new Error(`${this.path} is already open in this process: one device, one client at a time`);
      }
      await fs.rm(this.lockPath, { force: true });
    }
    throw new Error(`cannot lock ${this.path}`);
  }

  async load(): Promise<Uint8Array | undefined> {
    const fs = await import("node:fs/promises");
    try {
      return new Uint8Array(await fs.readFile(this.path));
    } catch (e) {
      if (isErrno(e, "ENOENT")) return undefined;
      throw new Error(`cannot read ${this.path}: ${String(e)}`);
    }
  }

  async save(bytes: Uint8Array): Promise<void> {
    const fs = await import("node:fs/promises");
    const { dirname } = await import("node:path");
    const tmp = `${this.path}.tmp`;
    const h = await fs.open(tmp, "w", 0o600);
    try {
      await h.writeFile(bytes);
      await h.sync();
    } finally {
      await h.close();
    }
    await fs.rename(tmp, this.path);
    try {
      const d = await fs.open(dirname(this.path), "r");
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    } catch {
      // Some platforms cannot fsync a directory; the rename is still atomic.
    }
  }

  async close(): Promise<void> {
    if (!this.lockHeld) return;
    this.lockHeld = false;
    const fs = await import("node:fs/promises");
    await fs.rm(this.lockPath, { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return isErrno(e, "EPERM");
  }
}
