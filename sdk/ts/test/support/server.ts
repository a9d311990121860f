/**
 * A real `herald serve` as a child process on port 0 with a temporary data directory, and
 * tokens minted by `herald token` for it. The binary: `HERALD_BIN`, else
 * `${CARGO_TARGET_DIR:-target}/debug/herald` of the repository.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// dist/test/support → the repository root.
const repo = resolve(here, "../../../../..");

export function heraldBin(): string {
  const fromEnv = process.env.HERALD_BIN;
  if (fromEnv) return fromEnv;
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
  const bin = join(resolve(repo, target), "debug", "herald");
  if (!existsSync(bin)) throw new Error(`no herald binary at ${bin}: build it (cargo build -p herald-cli) or set HERALD_BIN`);
  return bin;
}

export class HeraldServer {
  child!: ChildProcess;
  addr = "";
  private exited: Promise<number | null> = Promise.resolve(null);

  private constructor(
    readonly data: string,
    private readonly extraArgs: string[],
  ) {}

  static async start(opts: { data?: string; args?: string[]; listen?: string } = {}): Promise<HeraldServer> {
    const data = opts.data ?? mkdtempSync(join(tmpdir(), "herald-ts-"));
    const s = new HeraldServer(data, opts.args ?? []);
    await s.spawn(opts.listen ?? "127.0.0.1:0");
    return s;
  }

  get url(): string {
    return `http://${this.addr}`;
  }

  private spawn(listen: string): Promise<void> {
    const env: NodeJS.ProcessEnv = { ...process.env, RUST_LOG: "info", NO_COLOR: "1" };
    delete env.HERALD_LISTEN;
    delete env.HERALD_DATA;
    const child = spawn(heraldBin(), ["serve", "--listen", listen, "--data", this.data, "--durability", "relaxed", ...this.extraArgs], {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    this.exited = new Promise((res) => child.once("exit", (code) => res(code)));
    return new Promise((resolveStart, reject) => {
      let buf = "";
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`herald serve did not report its address: ${buf.slice(-2000)}`));
      }, 30_000);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`herald serve exited with ${code}: ${buf.slice(-2000)}`));
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        if (this.addr) return;
        buf += chunk.toString("utf8");
        // eslint-disable-next-line no-control-regex
        const clean = buf.replace(/\x1b\[[0-9;]*m/g, "");
        const m = /listen=(\S+)/.exec(clean);
        if (m?.[1]) {
          this.addr = m[1];
          clearTimeout(timer);
          resolveStart();
        }
      });
    });
  }

  token(sub: string, opts: { name?: string; ttl?: string; grants?: string[] } = {}): string {
    const args = ["token", "--data", this.data, "--sub", sub, "--ttl", opts.ttl ?? "1h"];
    if (opts.name) args.push("--name", opts.name);
    for (const g of opts.grants ?? []) args.push("--grant", g);
    const env = { ...process.env };
    delete env.HERALD_DATA;
    return execFileSync(heraldBin(), args, { env, encoding: "utf8" }).trim();
  }

  /** SIGTERM (drains, closes sockets with 1012), then waits for the exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    await this.exited;
  }

  /** Stops and starts again on the same address and data directory. */
  async restart(): Promise<void> {
    await this.stop();
    const addr = this.addr;
    this.addr = "";
    await this.spawn(addr);
  }

  async dispose(): Promise<void> {
    if (this.child.exitCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
    rmSync(this.data, { recursive: true, force: true });
  }
}
