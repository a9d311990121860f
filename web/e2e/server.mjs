// A real `herald serve --dev` for the browser tests: port 0, a temporary data directory, the
// address read from its log line. The binary: HERALD_BIN, else ${CARGO_TARGET_DIR:-target}/debug/herald.
import { spawn } from "node:child_process";
import { before, after } from "node:test";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export function heraldBin() {
  if (process.env.HERALD_BIN) return process.env.HERALD_BIN;
  const bin = join(resolve(repo, process.env.CARGO_TARGET_DIR ?? "target"), "debug", "herald");
  if (!existsSync(bin)) throw new Error(`no herald binary at ${bin}: cargo build -p herald-cli, or set HERALD_BIN`);
  return bin;
}

export class HeraldServer {
  constructor(data) {
    this.data = data;
    this.addr = "";
  }

  static async start() {
    const s = new HeraldServer(mkdtempSync(join(tmpdir(), "herald-e2e-")));
    await s.spawn("127.0.0.1:0");
    return s;
  }

  get url() {
    return `http://${this.addr}`;
  }

  spawn(listen) {
    const env = { ...process.env, RUST_LOG: "info", NO_COLOR: "1" };
    delete env.HERALD_LISTEN;
    delete env.HERALD_DATA;
    const child = spawn(heraldBin(), ["serve", "--dev", "--listen", listen, "--data", this.data, "--durability", "relaxed"], {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    this.exited = new Promise((r) => child.once("exit", r));
    return new Promise((ok, fail) => {
      let buf = "";
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        fail(new Error(`herald serve reported no address: ${buf}`));
      }, 30_000);
      child.once("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`herald serve exited with ${code}: ${buf}`));
      });
      child.stderr.on("data", (chunk) => {
        if (this.addr) return;
        buf += chunk.toString();
        const m = /listen=(\S+)/.exec(buf.replace(/\x1b\[[0-9;]*m/g, ""));
        if (m) {
          this.addr = m[1];
          clearTimeout(timer);
          ok();
        }
      });
    });
  }

  async stop() {
    if (this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    await this.exited;
  }

  async startAgain() {
    const addr = this.addr;
    this.addr = "";
    await this.spawn(addr);
  }

  async dispose() {
    if (this.child.exitCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
    rmSync(this.data, { recursive: true, force: true });
  }
}

/**
 * What the browser suites share: a real server and a Chromium (Debian's, or `$CHROMIUM`),
 * started before the suite and closed after it, and where screenshots go: docs/screenshots
 * with UPDATE_SCREENSHOTS=1 (refreshing the committed ones), else a temporary directory, so a
 * test run changes no tracked file. Call it at the top level of a test file.
 */
export function browserSuite(chromium) {
  const suite = {
    server: undefined,
    browser: undefined,
    shots: process.env.UPDATE_SCREENSHOTS === "1"
      ? resolve(repo, "docs/screenshots")
      : mkdtempSync(join(tmpdir(), "herald-shots-")),
  };
  before(async () => {
    suite.server = await HeraldServer.start();
    suite.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-dev-shm-usage"],
    });
  });
  after(async () => {
    await suite.browser?.close();
    await suite.server?.dispose();
  });
  return suite;
}
