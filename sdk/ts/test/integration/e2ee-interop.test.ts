/**
 * Interop of the TypeScript SDK's E2EE with the Rust client, through the `herald` CLI as a
 * process (its `--state` commands run herald_client::e2ee): DMs both ways, encrypted channels
 * with a TS and a Rust member (created on either side, messages both ways), and a TS member
 * admitted by the Rust keeper (`herald keeper`) while the Rust creator is offline.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { Herald } from "../../src/index.js";
import { e2ee, FileStateStore, MemoryStateStore, type EncryptedSpace, type DecryptedMessage } from "../../src/e2ee/index.js";
import { heraldBin } from "../support/server.js";
import { E2eeSuite, Inbox, dmPush, type DmItem } from "../support/e2ee.js";

const PASS = "correct horse battery staple";
const suite = new E2eeSuite("herald-ts-interop-");

function env(user: string, grants: string[] = []): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, HERALD_URL: suite.server.url, HERALD_TOKEN: suite.server.token(user, { grants }), HERALD_STATE_PASSPHRASE: PASS, NO_COLOR: "1" };
  delete e.HERALD_STATE_PASSPHRASE_FILE;
  delete e.HERALD_STATE_KEY_FILE;
  delete e.HERALD_STATE;
  return e;
}

/** `herald <args> --state <user>.state` as `user`; resolves with stdout, rejects with stderr. */
function cli(user: string, args: string[], grants: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(heraldBin(), [...args, "--state", join(suite.dir, `${user}.state`)], { env: env(user, grants), timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`herald ${args.join(" ")} as ${user}: ${String(err)}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** A long-running `herald` command; its stdout and stderr lines (`stderr: …`) in an Inbox. */
function follow(user: string, args: string[], grants: string[] = []): { child: ChildProcess; lines: Inbox<string> } {
  const child = spawn(heraldBin(), [...args, "--state", join(suite.dir, `${user}.state`)], { env: env(user, grants), stdio: ["ignore", "pipe", "pipe"] });
  suite.children.push(child);
  const lines = new Inbox<string>();
  const pipe = (stream: NodeJS.ReadableStream | null, prefix: string) => {
    let buf = "";
    stream?.on("data", (chunk: Buffer) => {
      buf += chunk.toString("utf8");
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        lines.push(prefix + buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
  };
  pipe(child.stdout, "");
  pipe(child.stderr, "stderr: ");
  return { child, lines };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

async function ts(user: string, deviceId: string): Promise<Herald> {
  const c = await Herald.connect({ url: suite.server.url, token: suite.server.token(user), e2ee: e2ee({ store: new MemoryStateStore(), secret: { passphrase: PASS }, deviceId }) });
  suite.clients.push(c);
  return c;
}

test("DMs both ways between the Rust CLI and the TS SDK", async () => {
  const init = await cli("ada", ["device", "init", "--id", "ada-rust"]);
  assert.match(init, /^ada-rust\t[0-9a-f ]+\n$/);
  const grace = await ts("grace", "grace-ts");
  const box = new Inbox<DmItem>();
  grace.message.onDirect(dmPush(box));
  assert.match(await cli("ada", ["dm", "grace", "hello from rust"]), /sent to 1 devices/);
  const got = await box.next((x) => x.dm !== undefined || x.failure !== undefined, 20_000, "DM from Rust");
  assert.equal(got.dm?.text, "hello from rust", JSON.stringify(got.failure));
  assert.equal(got.dm?.from, "ada");
  assert.equal(got.dm?.from_device, "ada-rust");

  // TS → Rust: the Rust device is offline; `herald dm tail` reads its inbox first.
  await grace.message.send("user:ada", "hello from typescript");
  await grace.message.send("user:ada", "and a second one");
  const tail = follow("ada", ["dm", "tail"]);
  const line = await tail.lines.next((l) => l.includes("hello from typescript"), 20_000, "DM in herald dm tail");
  assert.match(line, /grace\/grace-ts: hello from typescript$/);
  await tail.lines.next((l) => l.includes("and a second one"), 20_000, "second DM");
  // Live, while the tail runs.
  await grace.message.send("user:ada", "live to rust");
  await tail.lines.next((l) => l.endsWith("grace/grace-ts: live to rust"), 20_000, "live DM");
  assert.ok(!tail.lines.items.some((l) => l.includes("cannot read")), tail.lines.items.join("\n"));
  await stop(tail.child);
  // And Rust again, on the established session (no pre-key message this time).
  await cli("ada", ["dm", "grace", "second from rust"]);
  const again = await box.next((x) => x.dm?.text === "second from rust" || x.failure !== undefined, 20_000, "second DM from Rust");
  assert.equal(again.dm?.text, "second from rust", JSON.stringify(again.failure));
});

test("an encrypted channel created in TS with a Rust member: messages both ways", async () => {
  await cli("bob", ["device", "init", "--id", "bob-rust"]);
  const carol = await ts("carol", "carol-ts");
  const ch = (await carol.space.createChannel("mixed-ts", { encrypted: true, members: ["bob"] })) as EncryptedSpace;
  const box = new Inbox<DecryptedMessage>();
  ch.onMessage((m) => box.push(m));
  await ch.sendMessage("sealed by typescript");
  const sent = await cli("bob", ["send", "mixed-ts", "sealed by rust"]);
  assert.match(sent, /^\S+\t#\d+\n$/);
  const got = await box.next((m) => m.author === "bob", 20_000, "message from Rust");
  assert.equal(got.text, "sealed by rust", JSON.stringify(got.unopenable));
  assert.equal(got.device, "bob-rust");
  const history = await cli("bob", ["history", "mixed-ts"]);
  const lines = history.trim().split("\n");
  assert.equal(lines.length, 2, history);
  assert.match(lines[0]!, /carol: sealed by typescript$/);
  assert.match(lines[1]!, /bob: sealed by rust$/);
  const hist = await ch.history({ limit: 10 });
  assert.deepEqual(hist.messages.map((m) => m.text).sort(), ["sealed by rust", "sealed by typescript"]);
  // A rotation signed in TS: the Rust member verifies the commit and opens the new epoch.
  await ch.rotate();
  assert.equal(ch.epoch, 1);
  const m = await ch.sendMessage("after a TS rotation");
  assert.equal(m.epoch, 1);
  const after = await cli("bob", ["history", "mixed-ts"]);
  assert.match(after, /carol: after a TS rotation\n$/);
});

test("an encrypted channel created by the Rust CLI with a TS member: messages both ways", async () => {
  const dan = await ts("dan", "dan-ts");
  await cli("erin", ["device", "init", "--id", "erin-rust"]);
  const id = (await cli("erin", ["channel", "create", "mixed-rust", "--encrypted", "--member", "dan"])).trim();
  assert.equal(id.length, 36);
  await cli("erin", ["send", "mixed-rust", "first from rust"]);
  const ch = await dan.space.encrypted(id);
  assert.equal(ch.epoch, 0);
  const hist = await ch.history({ limit: 10 });
  assert.equal(hist.messages.length, 1);
  assert.equal(hist.messages[0]?.text, "first from rust", JSON.stringify(hist.messages[0]?.unopenable));
  await ch.sendMessage("reply from typescript");
  const history = await cli("erin", ["history", "mixed-rust"]);
  assert.match(history, /erin: first from rust\n.*dan: reply from typescript\n$/);
});

test("a TS member is admitted by the Rust keeper while the Rust creator is offline", async () => {
  const keeper = follow("keeper", ["keeper"], ["keeper"]);
  await keeper.lines.next((l) => l.includes("keeper device") && l.includes("ready"), 30_000, "keeper ready");
  await cli("fay", ["device", "init", "--id", "fay-rust"]);
  const id = (await cli("fay", ["channel", "create", "kept", "--encrypted"])).trim();
  await cli("fay", ["send", "kept", "history one"]);
  await cli("fay", ["send", "kept", "history two"]);
  // Fay is offline (no process of hers runs). Gus joins from TypeScript.
  const gus = await ts("gus", "gus-ts");
  const ch = await gus.space.joinEncrypted("kept");
  assert.equal(ch.id, id);
  await keeper.lines.next((l) => l.startsWith("admitted gus"), 30_000, "keeper admits gus");
  await ch.waitForKeys(undefined, 20_000);
  assert.deepEqual(ch.roster().map((m) => m.user).sort(), ["fay", "gus", "keeper/keeper"]);
  const hist = await ch.history({ limit: 10 });
  assert.deepEqual(hist.messages.map((m) => m.text ?? `[${m.unopenable?.reason}]`).sort(), ["history one", "history two"]);
  await ch.sendMessage("gus was admitted");
  const history = await cli("fay", ["history", "kept"]);
  assert.match(history, /gus: gus was admitted\n$/);
  assert.ok(!keeper.lines.items.some((l) => l.startsWith("failed")), keeper.lines.items.join("\n"));
  await stop(keeper.child);
});

test("a state file written by the TS SDK is the Rust SDK's: the CLI opens it and speaks as that device", async () => {
  const path = join(suite.dir, "hank.state");
  const hank = await Herald.connect({ url: suite.server.url, token: suite.server.token("hank"), e2ee: e2ee({ store: await FileStateStore.open(path), secret: { passphrase: PASS }, deviceId: "hank-ts" }) });
  const fp = hank.e2ee!.fingerprint();
  const ivy = await ts("ivy", "ivy-ts");
  await hank.message.send("user:ivy", "from hank in typescript");
  hank.close();
  await hank.e2ee!.close();
  const list = await cli("hank", ["device", "list"]);
  // "pinned": sending a DM pinned one's own devices too, as the Rust SDK does.
  assert.equal(list, `hank-ts\t${fp}\tone_time_keys=50\tpinned\n`);
  // The Rust CLI continues the Olm session the TS SDK started (ratchet state from the file).
  const box = new Inbox<DmItem>();
  ivy.message.onDirect(dmPush(box));
  await cli("hank", ["dm", "ivy", "from hank in rust"]);
  await box.next((x) => x.dm?.text === "from hank in typescript", 20_000, "TS DM");
  const got = await box.next((x) => x.dm?.text === "from hank in rust" || x.failure !== undefined, 20_000, "Rust DM on the same device");
  assert.equal(got.dm?.from_device, "hank-ts", JSON.stringify(got.failure));
});
