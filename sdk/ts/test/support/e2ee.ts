/** Helpers of the E2EE tests: a collector that awaits items with a timeout (no sleeps). */
import type { DirectMessage, DirectMessageFailure, DecryptedMessage } from "../../src/e2ee/index.js";

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
