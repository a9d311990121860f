// Browser end to end: Ada and Grace in two Chromium contexts against a real `herald serve --dev`:
// sign in, create/join, chat, reply, edit, react, delete, typing, receipts, presence (online,
// away, gone), reload keeps history, a server restart loses and doubles nothing. Screenshots of the main screens go to docs/screenshots.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { browserSuite } from "./server.mjs";
import { gradientPng } from "./png.mjs";

const suite = browserSuite(chromium);
const shots = suite.shots;
const T = 15_000;

async function signIn(name, { shot } = {}) {
  const context = await suite.browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await context.newPage();
  page.on("dialog", (d) => void d.accept());
  await page.goto(suite.server.url);
  await page.waitForSelector("#dev-user", { timeout: T });
  if (shot) await page.screenshot({ path: `${shots}/signin.png` });
  await page.fill("#dev-user", name);
  await page.click("#dev-signin");
  await page.waitForSelector("#me-name", { timeout: T });
  return page;
}

const messages = (page) => page.$$eval("#messages article.msg .content", (els) => els.map((e) => e.firstChild?.textContent ?? ""));

async function send(page, text) {
  await page.fill("#composer", text);
  await page.press("#composer", "Enter");
}

function msg(page, text) {
  return page.locator("#messages article.msg", { has: page.locator(".content", { hasText: text }) });
}

test("Ada and Grace chat in the browser, through a server restart", async () => {
  mkdirSync(shots, { recursive: true });
  const ada = await signIn("ada", { shot: true });
  await ada.fill("#new-channel", "general");
  await ada.press("#new-channel", "Enter");
  await ada.waitForSelector('#channels a.chan.active[data-channel="general"]', { timeout: T });
  await send(ada, "Hello Grace! Welcome to Herald.");
  await msg(ada, "Hello Grace!").waitFor({ timeout: T });

  const grace = await signIn("grace");
  await grace.fill("#new-channel", "general");
  await grace.press("#new-channel", "Enter");
  await msg(grace, "Hello Grace!").waitFor({ timeout: T });
  // Presence (the rooms of §8): each sees the other online in #general, and the count.
  await ada.locator('#online .person[data-user="grace"]').waitFor({ timeout: T });
  await grace.locator('#online .person[data-user="ada"][data-status="active"]').waitFor({ timeout: T });
  await grace.waitForFunction(() => document.querySelector("#online-count")?.textContent === "2 online", null, { timeout: T });
  // Ada's tab goes to the background: Grace sees her away, then back.
  const setHidden = (hidden) => {
    Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  };
  await ada.evaluate(setHidden, true);
  await grace.locator('#online .person[data-user="ada"][data-status="away"]').waitFor({ timeout: T });
  await ada.evaluate(setHidden, false);
  await grace.locator('#online .person[data-user="ada"][data-status="active"]').waitFor({ timeout: T });

  // A second channel with an unread count on Grace's side.
  await ada.fill("#new-channel", "random");
  await ada.press("#new-channel", "Enter");
  await ada.waitForSelector('#channels a.chan.active[data-channel="random"]', { timeout: T });
  await ada.click('#channels a[data-channel="general"]');
  await ada.waitForSelector('#channels a.chan.active[data-channel="general"]', { timeout: T });
  await grace.fill("#new-channel", "random");
  await grace.press("#new-channel", "Enter");
  await grace.waitForSelector('#channels a.chan.active[data-channel="random"]', { timeout: T });
  // Alt+↑ goes back to #general (the channel above), keyboard only.
  await grace.keyboard.press("Alt+ArrowUp");
  await grace.waitForSelector('#channels a.chan.active[data-channel="general"]', { timeout: T });

  // Typing: Grace types, Ada sees it.
  await grace.fill("#composer", "Hi Ada");
  await grace.type("#composer", "!");
  await ada.waitForFunction(() => document.querySelector("#typing")?.textContent?.includes("Grace is typing"), null, { timeout: T });
  await grace.press("#composer", "Enter");
  await msg(ada, "Hi Ada!").waitFor({ timeout: T });
  await ada.waitForFunction(() => document.querySelector("#typing")?.textContent === "", null, { timeout: T });

  // Reply: Grace replies to Ada's first message.
  await msg(grace, "Hello Grace!").hover();
  await msg(grace, "Hello Grace!").locator('[data-action="reply"]').click();
  await send(grace, "Glad to be here. The history is verified, right?");
  await ada.locator("#messages article.msg .quote", { hasText: "Hello Grace!" }).waitFor({ timeout: T });

  // React: Ada reacts to Grace's reply; Grace sees the count.
  await msg(ada, "history is verified").hover();
  await msg(ada, "history is verified").locator('button[title="React 👍"]').click();
  await msg(grace, "history is verified").locator(".chip", { hasText: "👍 1" }).waitFor({ timeout: T });
  await msg(grace, "history is verified").locator(".chip", { hasText: "👍" }).click();
  await msg(ada, "history is verified").locator(".chip", { hasText: "👍 2" }).waitFor({ timeout: T });

  // Edit: Ada's last message via ↑ in the empty composer.
  await send(ada, "Every entry is hash-chained and checked by the SDK.");
  await msg(grace, "hash-chained").waitFor({ timeout: T });
  await ada.click("#composer");
  await ada.press("#composer", "ArrowUp");
  await ada.fill("#composer", "Every entry is hash-chained (BLAKE3) and checked by the SDK.");
  await ada.press("#composer", "Enter");
  await msg(grace, "(BLAKE3)").locator(".edited").waitFor({ timeout: T });

  // Delete: Ada posts a typo and deletes it.
  await send(ada, "typo mesage");
  await msg(grace, "typo mesage").waitFor({ timeout: T });
  await msg(ada, "typo mesage").hover();
  await msg(ada, "typo mesage").locator('[data-action="delete"]').click();
  await msg(grace, "typo mesage").waitFor({ state: "detached", timeout: T });

  // Receipts: Grace has the channel open, so Ada sees "Seen by Grace" under her newest message.
  await ada.locator("#messages .seen", { hasText: "Seen by Grace" }).waitFor({ timeout: T });

  // Unread: a message in #random shows a badge for Grace, who is looking at #general.
  await ada.click('#channels a[data-channel="random"]');
  await ada.waitForSelector('#channels a.chan.active[data-channel="random"]', { timeout: T });
  await send(ada, "Anyone up for lunch?");
  await msg(ada, "lunch").waitFor({ timeout: T });
  await grace.locator('#channels a[data-channel="random"] .badge', { hasText: "1" }).waitFor({ timeout: T });
  await ada.click('#channels a[data-channel="general"]');
  await ada.waitForSelector('#channels a.chan.active[data-channel="general"]', { timeout: T });

  // A file: Ada uploads an image, Grace sees it inline (the bytes fetched from the blob store).
  await ada.setInputFiles("#file-input", { name: "sunrise.png", mimeType: "image/png", buffer: gradientPng() });
  const img = grace.locator('#messages img.preview[alt="sunrise.png"]');
  await img.waitFor({ timeout: T });
  await grace.waitForFunction(() => {
    const i = document.querySelector('#messages img.preview[alt="sunrise.png"]');
    return i instanceof HTMLImageElement && i.complete && i.naturalWidth === 320;
  }, null, { timeout: T });
  await ada.waitForFunction(() => {
    const i = document.querySelector('#messages img.preview[alt="sunrise.png"]');
    return i instanceof HTMLImageElement && i.complete && i.naturalWidth === 320;
  }, null, { timeout: T });

  await ada.screenshot({ path: `${shots}/chat.png` });
  await grace.screenshot({ path: `${shots}/chat-grace.png` });

  // Reload keeps history (the token stays in the browser).
  const before = await messages(grace);
  await grace.reload();
  await msg(grace, "(BLAKE3)").waitFor({ timeout: T });
  assert.deepEqual(await messages(grace), before);

  // A server restart: the banner shows, a message sent meanwhile is delivered once, nothing lost.
  await suite.server.stop();
  await ada.waitForSelector("#banner:not([hidden])", { timeout: T });
  await grace.waitForSelector("#banner:not([hidden])", { timeout: T });
  await ada.screenshot({ path: `${shots}/reconnecting.png` });
  await send(ada, "Sent while the server was down");
  await suite.server.startAgain();
  await ada.waitForSelector("#banner[hidden]", { state: "attached", timeout: 30_000 });
  await grace.waitForSelector("#banner[hidden]", { state: "attached", timeout: 30_000 });
  await msg(grace, "Sent while the server was down").waitFor({ timeout: T });
  // Presence survives the restart: the SDK entered the rooms again on both sides.
  await grace.locator('#online .person[data-user="ada"]').waitFor({ timeout: T });
  await ada.locator('#online .person[data-user="grace"]').waitFor({ timeout: T });
  await send(grace, "Back online");
  await msg(ada, "Back online").waitFor({ timeout: T });

  const expected = [
    "Hello Grace! Welcome to Herald.",
    "Hi Ada!",
    "Glad to be here. The history is verified, right?",
    "Every entry is hash-chained (BLAKE3) and checked by the SDK.",
    "", // the image
    "Sent while the server was down",
    "Back online",
  ];
  assert.deepEqual(await messages(ada), expected);
  assert.deepEqual(await messages(grace), expected);
  // Grace's view after a reload matches too (from the server's history).
  await grace.reload();
  await msg(grace, "Back online").waitFor({ timeout: T });
  assert.deepEqual(await messages(grace), expected);
  // The unread count survives the reload (it is the server's), and opening the channel clears it.
  await grace.locator('#channels a[data-channel="random"] .badge', { hasText: "1" }).waitFor({ timeout: T });
  await grace.click('#channels a[data-channel="random"]');
  await msg(grace, "lunch").waitFor({ timeout: T });
  await grace.locator('#channels a[data-channel="random"] .badge').waitFor({ state: "detached", timeout: T });

  // Ada is online in #random too; when she closes her tab, Grace sees her gone.
  await grace.locator('#online .person[data-user="ada"]').waitFor({ timeout: T });
  await grace.waitForFunction(() => document.querySelector("#online-title")?.textContent === "Online in #random", null, { timeout: T });
  await ada.context().close();
  await grace.locator('#online .person[data-user="ada"]').waitFor({ state: "detached", timeout: T });
  await grace.waitForFunction(() => document.querySelector("#online-count")?.textContent === "1 online", null, { timeout: T });
  assert.deepEqual(await grace.$$eval("#online .person", (els) => els.map((e) => e.getAttribute("data-user"))), ["grace"]);
});
