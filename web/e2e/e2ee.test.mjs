// Browser end to end, encrypted: Ada and Grace in two Chromium contexts against a real
// `herald serve --dev`. Ada creates an end-to-end encrypted channel (the E2EE code and the wasm
// are fetched only then); Grace joins and gets the keys from Ada's app; they write both ways;
// the server's copy is ciphertext; Ada edits a message and Grace sees the new text, still
// sealed on the server; an encrypted image shows inline on Grace's side; a message
// that cannot be decrypted is shown as such; Grace reloads and still reads everything (her
// device lives in IndexedDB); a DM sent while Grace is offline reaches her when she is back;
// a member who joins while the creator is away is admitted when the creator's app returns; a
// second tab of one user waits for the device rather than sharing it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { browserSuite } from "./server.mjs";
import { gradientPng } from "./png.mjs";

const suite = browserSuite(chromium);
const shots = suite.shots;
const T = 20_000;

/** Every URL the pages of `context` requested, for the lazy-loading checks. */
function recordRequests(context) {
  const urls = [];
  context.on("request", (r) => urls.push(new URL(r.url()).pathname));
  return urls;
}

/** Everything any page printed to its console: checked for plaintext at the end. */
const consoleLines = [];

async function signIn(name) {
  const context = await suite.browser.newContext({ viewport: { width: 1180, height: 760 } });
  const requests = recordRequests(context);
  context.on("console", (m) => consoleLines.push(m.text()));
  const page = await context.newPage();
  page.on("dialog", (d) => void d.accept());
  await page.goto(suite.server.url);
  await page.waitForSelector("#dev-user", { timeout: T });
  await page.fill("#dev-user", name);
  await page.click("#dev-signin");
  await page.waitForSelector("#me-name", { timeout: T });
  return { page, requests };
}

async function send(page, text) {
  await page.fill("#composer", text);
  await page.press("#composer", "Enter");
}

function msg(page, text) {
  return page.locator("#messages article.msg", { has: page.locator(".content", { hasText: text }) });
}

const texts = (page) => page.$$eval("#messages article.msg .content", (els) => els.map((e) => e.textContent ?? ""));

async function rest(user, path, init = {}) {
  const t = await fetch(`${suite.server.url}/dev/token?sub=${user}`, { method: "POST" }).then((r) => r.json());
  const res = await fetch(`${suite.server.url}${path}`, { ...init, headers: { authorization: `Bearer ${t.token}`, "content-type": "application/json", ...(init.headers ?? {}) } });
  const body = await res.json();
  assert.ok(res.ok, `${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const imageLoaded = (page, name) =>
  page.waitForFunction((n) => {
    const i = document.querySelector(`#messages img.preview[alt="${n}"]`);
    return i instanceof HTMLImageElement && i.complete && i.naturalWidth === 320 && i.src.startsWith("blob:");
  }, name, { timeout: T });

test("Ada and Grace in an end-to-end encrypted channel and a DM, in the browser", async () => {
  mkdirSync(shots, { recursive: true });
  const { page: ada, requests: adaRequests } = await signIn("ada");
  // Signed in with plain channels only: no E2EE code and no WebAssembly fetched.
  assert.ok(!adaRequests.some((p) => p.endsWith(".wasm") || p.endsWith("/e2ee.js")), adaRequests.join("\n"));

  // Ada creates #secret with the toggle on: the lock in the list and the header.
  await ada.check("#new-encrypted");
  await ada.fill("#new-channel", "secret");
  await ada.press("#new-channel", "Enter");
  await ada.waitForSelector('#channels a.chan.active[data-channel="secret"] .lock', { timeout: T });
  await ada.locator("#e2ee-badge", { hasText: "End-to-end encrypted" }).waitFor({ timeout: T });
  assert.ok(adaRequests.includes("/assets/herald_crypto.wasm") && adaRequests.includes("/assets/e2ee.js"), "the wasm is fetched on first use");
  assert.match((await ada.textContent("#device")) ?? "", /device d-[0-9a-f]{16}/);
  await send(ada, "The launch code is 4-8-15-16-23-42");
  await msg(ada, "launch code").waitFor({ timeout: T });

  // Grace joins by name (no toggle: the channel says it is encrypted). Her app has no key,
  // asks for it; Ada's app, the creator's, seals every key to Grace's new device.
  const { page: grace0, requests: graceRequests } = await signIn("grace");
  let grace = grace0;
  assert.ok(!graceRequests.some((p) => p.endsWith(".wasm")), "nothing encrypted opened yet: no wasm");
  await grace.fill("#new-channel", "secret");
  await grace.press("#new-channel", "Enter");
  await grace.waitForSelector('#channels a.chan.active[data-channel="secret"] .lock', { timeout: T });
  await grace.locator("#e2ee-badge").waitFor({ timeout: T });
  await msg(grace, "launch code").waitFor({ timeout: T });
  assert.ok(graceRequests.includes("/assets/herald_crypto.wasm"));
  await send(grace, "Got it. Sealed both ways?");
  await msg(ada, "Sealed both ways?").waitFor({ timeout: T });
  await send(ada, "Both ways: the server only relays ciphertext.");
  await msg(grace, "only relays ciphertext").waitFor({ timeout: T });

  // What the server holds: sealed strings, never the plaintext.
  const { channel } = await rest("ada", "/v1/channels/secret");
  assert.equal(channel.encrypted, true);
  const stored = (await rest("ada", `/v1/channels/${channel.id}/messages?limit=50`)).messages;
  assert.equal(stored.length, 3);
  for (const m of stored) {
    assert.ok(m.content.startsWith("hm1."), `sealed: ${m.content.slice(0, 20)}`);
    for (const plain of ["launch code", "4-8-15", "Sealed both ways", "ciphertext"]) assert.ok(!m.content.includes(plain), `no plaintext in ${m.content.slice(0, 40)}…`);
  }

  // Ada edits her first message (the ✎ button): sealed again in her page, opened live in
  // Grace's, marked edited; the server's copy stays sealed.
  await msg(ada, "launch code").hover();
  await msg(ada, "launch code").locator('[data-action="edit"]').click();
  assert.equal(await ada.inputValue("#composer"), "The launch code is 4-8-15-16-23-42");
  await ada.fill("#composer", "The launch code changed: 7-7-7-1-9");
  await ada.press("#composer", "Enter");
  await msg(grace, "7-7-7-1-9").locator(".edited").waitFor({ timeout: T });
  await msg(ada, "7-7-7-1-9").locator(".edited").waitFor({ timeout: T });
  assert.ok(!(await texts(grace)).some((t) => t.includes("4-8-15")), "Grace's page shows the new text only");
  const afterEdit = (await rest("ada", `/v1/channels/${channel.id}/messages?limit=50`)).messages;
  const first = stored.reduce((a, b) => (a.seq < b.seq ? a : b));
  const editedStored = afterEdit.find((m) => m.id === first.id);
  assert.ok(editedStored.edited_at, "the server marks it edited");
  assert.ok(editedStored.content.startsWith("hm1."), `sealed: ${editedStored.content.slice(0, 20)}`);
  for (const plain of ["7-7-7", "changed", "launch code", "4-8-15"]) assert.ok(!editedStored.content.includes(plain), `no plaintext in ${editedStored.content.slice(0, 40)}…`);
  // Grace is offered no edit of Ada's message.
  await msg(grace, "7-7-7-1-9").hover();
  assert.equal(await msg(grace, "7-7-7-1-9").locator('[data-action="edit"]').count(), 0);

  // An encrypted image: encrypted and erasure-coded in Ada's page (with a progress bar),
  // decrypted in Grace's into an object URL and shown inline.
  await ada.evaluate(() => {
    const seen = [];
    window.__progress = seen;
    new MutationObserver(() => {
      const p = document.querySelector("#upload-progress");
      if (p instanceof HTMLProgressElement && !document.querySelector("#upload").hidden) seen.push(p.value);
    }).observe(document.querySelector("#upload"), { subtree: true, attributes: true, childList: true, characterData: true });
  });
  await ada.setInputFiles("#file-input", { name: "sunrise.png", mimeType: "image/png", buffer: gradientPng() });
  await imageLoaded(grace, "sunrise.png");
  await imageLoaded(ada, "sunrise.png");
  const progress = await ada.evaluate(() => window.__progress);
  assert.ok(progress.length > 0 && progress.includes(100), `progress bar values: ${JSON.stringify(progress)}`);
  const withFile = (await rest("grace", `/v1/channels/${channel.id}/messages?limit=50`)).messages;
  const file = withFile.find((m) => m.type === "herald.file");
  assert.ok(file && file.content.startsWith("hm1.") && !file.content.includes("sunrise"), "the manifest (name, key) is sealed");

  // A message the server (or a bad client) put in that no key opens: shown as such, not as garbage.
  const { commits } = await rest("ada", `/v1/channels/${channel.id}/commits`);
  const head = commits[commits.length - 1].epoch;
  await rest("ada", `/v1/channels/${channel.id}/messages`, { method: "POST", body: JSON.stringify({ content: "hm1.forged-not-sealed", epoch: head }) });
  const bad = grace.locator("#messages article.msg .content.undecryptable", { hasText: "could not be decrypted" });
  await bad.waitFor({ timeout: T });
  assert.ok(!(await texts(grace)).some((t) => t.includes("forged")));

  await grace.screenshot({ path: `${shots}/e2ee.png` });

  // Grace reloads: her device (IndexedDB, sealed under a non-extractable WebCrypto key) is
  // the same, so the history still opens, the image included.
  const device = await grace.textContent("#device");
  const before = await texts(grace);
  await grace.reload();
  await msg(grace, "only relays ciphertext").waitFor({ timeout: T });
  await imageLoaded(grace, "sunrise.png");
  assert.deepEqual(await texts(grace), before);
  await grace.waitForFunction((d) => document.querySelector("#device")?.textContent === d, device, { timeout: T });

  // A second tab of Grace's waits for the device (a Web Lock) instead of writing its state too.
  const second = await grace0.context().newPage();
  await second.goto(suite.server.url);
  await second.locator(".toast", { hasText: "open in another tab" }).waitFor({ timeout: T });
  assert.equal(await second.textContent("#device"), "");
  await second.close();

  // A DM while Grace is offline: her page closes (Ada sees her leave), Ada writes.
  await grace.close();
  await ada.locator('#online .person[data-user="grace"]').waitFor({ state: "detached", timeout: T });
  await ada.fill("#new-dm", "grace");
  await ada.press("#new-dm", "Enter");
  await ada.locator("#e2ee-badge", { hasText: "End-to-end encrypted" }).waitFor({ timeout: T });
  await ada.waitForSelector("#composer:not([disabled])", { timeout: T });
  await send(ada, "Psst: this one waited in your inbox.");
  await msg(ada, "waited in your inbox").waitFor({ timeout: T });

  // Grace comes back (same browser profile): the inbox is read, the DM is there, unread.
  grace = await grace0.context().newPage();
  await grace.goto(suite.server.url);
  await grace.locator('#dms a[data-dm="ada"] .badge', { hasText: "1" }).waitFor({ timeout: T });
  await grace.click('#dms a[data-dm="ada"]');
  await msg(grace, "waited in your inbox").waitFor({ timeout: T });
  await send(grace, "Read it. Replying live.");
  await msg(ada, "Replying live.").waitFor({ timeout: T });
  await ada.screenshot({ path: `${shots}/e2ee-dm.png` });
  // The server erased the acknowledged DM; Grace's copy is in her browser, encrypted, and survives a reload.
  await grace.reload();
  await grace.click('#dms a[data-dm="ada"]');
  await msg(grace, "waited in your inbox").waitFor({ timeout: T });
  await msg(grace, "Replying live.").waitFor({ timeout: T });

  // Lin joins while Ada, the creator, is away: no one can admit her, she waits; when Ada's app
  // comes back and opens #secret, it admits the member who is missing from the roster.
  const adaContext = ada.context();
  await ada.close();
  const { page: lin } = await signIn("lin");
  await lin.fill("#new-channel", "secret");
  await lin.press("#new-channel", "Enter");
  await lin.locator("#keys-wait").waitFor({ timeout: T });
  const back = await adaContext.newPage();
  await back.goto(suite.server.url);
  await msg(back, "launch code").waitFor({ timeout: T });
  await lin.locator("#keys-wait").waitFor({ state: "detached", timeout: T });
  await msg(lin, "launch code").waitFor({ timeout: T });
  await msg(lin, "only relays ciphertext").waitFor({ timeout: T });
  await send(lin, "Hello from Lin, admitted later.");
  await msg(back, "admitted later").waitFor({ timeout: T });

  // No page logged a plaintext of the channel or the DMs.
  for (const plain of ["4-8-15", "7-7-7-1-9", "Sealed both ways", "relays ciphertext", "waited in your inbox", "Replying live", "admitted later"]) {
    assert.ok(!consoleLines.some((l) => l.includes(plain)), `logged: ${consoleLines.find((l) => l.includes(plain))}`);
  }
});
