/** Helpers of the room and private-channel tests: tokens with a `kind`, bytes, JSON-line children. */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { heraldBin, type HeraldServer } from "./server.js";

/** A token of `sub` with a participant kind (`herald token --kind`). */
export function tokenOf(server: HeraldServer, sub: string, kind: "human" | "agent" | "service" = "human", name?: string): string {
  const args = ["token", "--data", server.data, "--sub", sub, "--kind", kind, "--ttl", "1h"];
  if (name) args.push("--name", name);
  const env = { ...process.env };
  delete env.HERALD_DATA;
  return execFileSync(heraldBin(), args, { env, encoding: "utf8" }).trim();
}

/** The app secret of the server's data directory (`herald secret show`). */
export function appSecret(server: HeraldServer): string {
  const env = { ...process.env };
  delete env.HERALD_DATA;
  delete env.HERALD_APP_SECRET;
  delete env.HERALD_APP_SECRET_FILE;
  return execFileSync(heraldBin(), ["secret", "show", "--data", server.data], { env, encoding: "utf8" }).trim();
}

export function random(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

export function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

/** A child process printing JSON lines, awaited line by line. */
export class JsonLines {
  readonly lines: Array<Record<string, unknown>> = [];
  private waiters: Array<() => void> = [];
  stderr = "";
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    let buf = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      buf += chunk.toString("utf8");
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.lines.push({ unparsed: line });
        }
        const w = this.waiters;
        this.waiters = [];
        w.forEach((f) => f());
      }
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
    });
    this.exited = new Promise((res) => child.once("exit", (code) => {
      const w = this.waiters;
      this.waiters = [];
      w.forEach((f) => f());
      res(code);
    }));
  }

  static spawn(args: string[], env: Record<string, string> = {}): JsonLines {
    const e: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1", ...env };
    delete e.HERALD_DATA;
    return new JsonLines(spawn(heraldBin(), args, { env: e, stdio: ["ignore", "pipe", "pipe"] }));
  }

  /** The first line for which `pred` holds, waiting up to `timeoutMs`. */
  async line(pred: (l: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find(pred);
      if (found) return found;
      if (this.child.exitCode !== null) throw new Error(`herald exited (${this.child.exitCode}) without the line; stderr: ${this.stderr.slice(-2000)}; lines: ${JSON.stringify(this.lines).slice(0, 2000)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no such line within ${timeoutMs} ms; stderr: ${this.stderr.slice(-2000)}; lines: ${JSON.stringify(this.lines).slice(0, 2000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}
