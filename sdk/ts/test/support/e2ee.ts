/** Helpers of the E2EE tests: the suites' shared lifecycle, a collector that awaits items with a timeout (no sleeps). */
import { before, after } from "node:test";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Herald } from "../../src/index.js";
import type { DirectMessage, DirectMessageFailure, DecryptedMessage } from "../../src/e2ee/index.js";
import { HeraldServer } from "./server.js";

/**
 * What the E2EE integration suites share: one real `herald serve` and a scratch directory for
 * the suite, and the clients and child processes its tests open, all closed when it ends.
 * Construct it at the top level of a test file (it registers the `before`/`after` hooks).
 */
export class E2eeSuite {
  server!: HeraldServer;
  dir!: string;
  readonly clients: Herald[] = [];
  readonly children: ChildProcess[] = [];

  constructor(prefix: string) {
    before(async () => {
      this.server = await HeraldServer.start();
      this.dir = mkdtempSync(join(tmpdir(), prefix));
    });
    after(async () => {
      for (const c of this.clients) {
        c.close();
        await c.e2ee?.close();
      }
      for (const ch of this.children) if (ch.exitCode === null && ch.signalCode === null) ch.kill("SIGKILL");
      await this.server?.dispose();
      if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    });
  }
}

/** Collects items pushed by a callback; `next(pred, ms)` resolves with the first match or rejects after `ms`. */
export class Inbox<T> {
  readonly items: T[] = [];
  private waiters: Array<{ pred: (t: T) => boolean; resolve: (t: T) => void }> = [];

  push = (t: T): void => {
    this.items.push(t);
    for (const w of [...this.waiters]) {
      if (w.pred(t)) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(t);
      }
    }
  };

  next(pred: (t: T) => boolean, ms = 15_000, what = "item"): Promise<T> {
    const seen = this.items.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x.resolve !== done);
        reject(new Error(`no ${what} within ${ms} ms (have ${JSON.stringify(this.items.map(summary))})`));
      }, ms);
      const done = (t: T) => {
        clearTimeout(timer);
        resolve(t);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }
}

function summary(x: unknown): unknown {
  if (x && typeof x === "object" && "text" in x) return (x as { text?: string }).text;
  return x;
}

export type DmItem = { dm?: DirectMessage; failure?: DirectMessageFailure };
export const dmPush = (box: Inbox<DmItem>) => (dm: DirectMessage | undefined, failure: DirectMessageFailure | undefined) => box.push({ ...(dm ? { dm } : {}), ...(failure ? { failure } : {}) });
export type MsgBox = Inbox<DecryptedMessage>;
