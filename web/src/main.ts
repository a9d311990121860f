/**
 * Herald's chat app: sign in with a token (or, on a server started with `--dev`, with a name),
 * channels with unread counts, history with infinite scroll, send/edit/delete/reply/react,
 * typing, read receipts, presence per channel (rooms), files with a progress bar, a banner
 * while reconnecting; end-to-end encrypted channels, files and direct messages (see "E2EE"
 * below). Everything goes through the SDK.
 */
import "./style.css";
import { Herald, HeraldError, type ChannelSummary, type DecryptedMessage, type EncryptedSpace, type Message, type Room, type Space } from "@herald-chat/client";
import type { DirectMessage, DirectMessageFailure, FileManifest } from "@herald-chat/client/e2ee";

const TOKEN_KEY = "herald.token";
const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "👀", "🚀"];
const PAGE = 40;

type Reaction = { reaction_id: string; emoji: string; user: string };
interface Msg extends Message {
  reactions: Reaction[];
  /** An encrypted file: its manifest (holds the file key), from the opened message. */
  manifest?: FileManifest;
  /** Why a message of an encrypted channel could not be decrypted. */
  unopenable?: string;
}
interface Chan {
  summary: ChannelSummary;
  space: Space | undefined;
  messages: Msg[];
  loaded: boolean;
  hasMore: boolean;
  loading: boolean;
  unread: number;
  typing: Map<string, ReturnType<typeof setTimeout>>;
  /** user → seq of the newest message they marked read. */
  readers: Map<string, number>;
  names: Map<string, string>;
  /** From the channel's REST lookup (`channel.list` does not say); undefined until known. */
  encrypted: boolean | undefined;
  /** The encrypted handle (on the E2EE connection), made when the channel is first opened. */
  es: EncryptedSpace | undefined;
  /** Set while this device holds no key for the channel's head epoch. */
  waitingForKeys: boolean;
  memberCount?: number;
}

const app = document.getElementById("app") as HTMLElement;
let client: Herald | undefined;
const chans = new Map<string, Chan>();
let active: string | undefined;
let replyTo: Msg | undefined;
let editing: Msg | undefined;
let me = "";

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | ((e: Event) => void)> = {},
  ...children: Array<Node | string | null | undefined | false>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === "function") el.addEventListener(k.slice(2), v as EventListener);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false) el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function initials(name: string): string {
  const parts = name.split(/[\s._@-]+/).filter(Boolean);
  return ((parts[0]?.[0] ?? "?") + (parts[1]?.[0] ?? "")).toUpperCase();
}

function hue(s: string): number {
  let x = 0;
  for (const ch of s) x = (x * 31 + ch.charCodeAt(0)) % 360;
  return x;
}

function time(ts: string): string {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function chanLabel(c: ChannelSummary): string {
  return c.name ?? c.title ?? "untitled";
}

// ---------------------------------------------------------------- sign in

async function devAvailable(): Promise<boolean> {
  try {
    const r = await fetch("/dev/status");
    return r.ok;
  } catch {
    return false;
  }
}

async function showSignIn(error?: string): Promise<void> {
  const dev = await devAvailable();
  const tokenInput = h("textarea", { id: "token", placeholder: "eyJhbGciOi…", rows: "4", spellcheck: "false" });
  const err = h("p", { class: "error", id: "signin-error" }, error ?? "");
  const submit = async (token: string) => {
    err.textContent = "";
    try {
      await start(token.trim());
    } catch (e) {
      err.textContent = e instanceof HeraldError ? `${e.code}: ${e.message}` : String(e);
    }
  };
  const devName = h("input", { id: "dev-user", placeholder: "ada", autocomplete: "off" });
  const devForm = dev
    ? h(
        "form",
        {
          class: "dev",
          onsubmit: async (e: Event) => {
            e.preventDefault();
            const sub = devName.value.trim();
            if (!sub) return;
            const r = await fetch(`/dev/token?sub=${encodeURIComponent(sub)}&name=${encodeURIComponent(sub[0]?.toUpperCase() + sub.slice(1))}`, { method: "POST" });
            const body = (await r.json()) as { token?: string; error?: { message: string } };
            if (body.token) await submit(body.token);
            else err.textContent = body.error?.message ?? "could not mint a token";
          },
        },
        h("label", { for: "dev-user" }, "Development server: sign in as"),
        h("div", { class: "row" }, devName, h("button", { type: "submit", id: "dev-signin" }, "Continue")),
      )
    : null;
  app.replaceChildren(
    h(
      "main",
      { class: "signin" },
      h(
        "div",
        { class: "card" },
        h("div", { class: "logo" }, "H"),
        h("h1", {}, "Sign in to Herald"),
        h("p", { class: "muted" }, "Paste a token minted with ", h("code", {}, "herald token --sub <you>"), "."),
        h(
          "form",
          {
            onsubmit: (e: Event) => {
              e.preventDefault();
              void submit(tokenInput.value);
            },
          },
          tokenInput,
          h("button", { type: "submit", id: "signin" }, "Sign in"),
        ),
        devForm ? h("div", { class: "divider" }, h("span", {}, "or")) : null,
        devForm,
        err,
      ),
    ),
  );
  (dev ? devName : tokenInput).focus();
}

// ---------------------------------------------------------------- app shell

const els = {
  banner: h("div", { class: "banner", id: "banner", hidden: true }),
  list: h("nav", { class: "channels", id: "channels" }),
  header: h("header", { class: "chan-header" }),
  scroller: h("div", { class: "messages", id: "messages" }),
  typing: h("div", { class: "typing", id: "typing" }),
  context: h("div", { class: "context", hidden: true }),
  composer: h("textarea", { id: "composer", rows: "1", placeholder: "Message", disabled: true }) as HTMLTextAreaElement,
  newChan: h("input", { id: "new-channel", placeholder: "Create or join a channel…", autocomplete: "off" }) as HTMLInputElement,
  newEncrypted: h("input", { id: "new-encrypted", type: "checkbox" }) as HTMLInputElement,
  dmList: h("nav", { class: "channels", id: "dms" }),
  newDm: h("input", { id: "new-dm", placeholder: "Message a user id…", autocomplete: "off" }) as HTMLInputElement,
  file: h("input", { id: "file-input", type: "file", multiple: true, hidden: true }) as HTMLInputElement,
  attach: h("button", { class: "ghost attach", id: "attach", title: "Attach files", onclick: () => els.file.click() }, "📎"),
  upload: h("div", { class: "upload", id: "upload", hidden: true }),
  uploadLabel: h("span", { id: "upload-label" }),
  uploadBar: h("progress", { id: "upload-progress", max: "100", value: "0" }) as HTMLProgressElement,
  online: h("div", { class: "online", id: "online" }),
  onlineTitle: h("div", { class: "section", id: "online-title" }, "Online"),
};

// ---------------------------------------------------------------- files

/** The content of a `file` message: the blob and what to show for it. */
interface FileRef {
  blob_id: string;
  name: string;
  size: number;
  mime: string;
}

function parseFile(m: Msg): FileRef | undefined {
  if (m.manifest) return { blob_id: m.manifest.shard_hashes.join(","), name: m.manifest.name, size: m.manifest.size, mime: m.manifest.type };
  if (m.type !== "file") return undefined;
  try {
    const f = JSON.parse(m.content) as Partial<FileRef>;
    if (typeof f.blob_id === "string" && typeof f.name === "string") {
      return { blob_id: f.blob_id, name: f.name, size: Number(f.size ?? 0), mime: String(f.mime ?? "") };
    }
  } catch {
    // Not a file reference after all: shown as text.
  }
  return undefined;
}

/** The manifest a `herald.file` message of an encrypted channel carries (sealed with it). */
function manifestOf(m: DecryptedMessage): FileManifest | undefined {
  if (m.type !== "herald.file" || m.text === undefined) return undefined;
  try {
    const f = (JSON.parse(m.text) as { manifest?: FileManifest }).manifest;
    return f && Array.isArray(f.shard_hashes) && typeof f.name === "string" ? f : undefined;
  } catch {
    return undefined;
  }
}

/** Object URLs of fetched files: plain blobs by id, encrypted files by their shards, decrypted in the page. */
const blobUrls = new Map<string, Promise<string>>();
function blobUrl(c: Chan, m: Msg, f: FileRef): Promise<string> {
  let p = blobUrls.get(f.blob_id);
  if (!p) {
    const manifest = m.manifest;
    const bytes: Promise<Uint8Array> = manifest ? encOf(c).then((es) => es.getFile(manifest)) : spaceOf(c).then((s) => s.getFile(f.blob_id));
    p = bytes.then((b) => URL.createObjectURL(new Blob([b as unknown as BlobPart], { type: f.mime || "application/octet-stream" })));
    blobUrls.set(f.blob_id, p);
    p.catch(() => blobUrls.delete(f.blob_id));
  }
  return p;
}

function size(n: number): string {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function renderFile(c: Chan, m: Msg, f: FileRef): HTMLElement {
  if (f.mime.startsWith("image/")) {
    const img = h("img", { class: "preview", alt: f.name, title: `${f.name} · ${size(f.size)}` });
    blobUrl(c, m, f).then(
      (url) => {
        img.src = url;
      },
      (e: unknown) => {
        img.replaceWith(h("span", { class: "undecryptable" }, `${f.name}: ${e instanceof Error ? e.message : String(e)}`));
      },
    );
    return img;
  }
  return h(
    "a",
    {
      class: "file",
      href: "#",
      onclick: async (e: Event) => {
        e.preventDefault();
        try {
          const a = h("a", { href: await blobUrl(c, m, f), download: f.name });
          a.click();
        } catch (err) {
          toast(`${f.name}: ${err instanceof Error ? err.message : String(err)}`);
        }
      },
    },
    h("span", { class: "file-icon" }, "📄"),
    h("span", {}, h("strong", {}, f.name), h("span", { class: "muted" }, ` · ${size(f.size)}`)),
  );
}

function showProgress(label: string, sent: number, total: number): void {
  els.upload.hidden = false;
  const pct = Math.round((sent / Math.max(1, total)) * 100);
  els.uploadLabel.textContent = `${label} ${pct}%`;
  els.uploadBar.value = pct;
}

/**
 * Uploads files to the open channel: a plain channel stores each as one blob and sends a
 * `file` message with its id; an encrypted one has the SDK encrypt it and erasure-code it
 * into 4 + 2 shards (any 4 rebuild it), and the manifest with the file key travels sealed.
 */
async function uploadFiles(files: FileList | File[]): Promise<void> {
  const c = active ? chans.get(active) : undefined;
  if (!c) {
    if (activeDm) toast("Files cannot be sent in direct messages yet: share them in an encrypted channel.");
    return;
  }
  for (const file of Array.from(files)) {
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      if (await isEncrypted(c)) {
        const es = await encOf(c);
        showProgress(`Encrypting and uploading ${file.name}…`, 0, 1);
        await es.putFile(bytes, {
          name: file.name,
          type: file.type || "application/octet-stream",
          onProgress: (sent, total) => showProgress(`Encrypting and uploading ${file.name}…`, sent, total),
        });
      } else {
        const space = await spaceOf(c);
        showProgress(`Uploading ${file.name}…`, 0, 1);
        const { blob_id } = await space.putFile(bytes, { onProgress: (sent, total) => showProgress(`Uploading ${file.name}…`, sent, total) });
        const ref: FileRef = { blob_id, name: file.name, size: bytes.length, mime: file.type };
        await space.sendMessage(JSON.stringify(ref), { type: "file" });
      }
    } catch (e) {
      toast(e instanceof HeraldError ? `${file.name}: ${e.message}` : String(e));
    }
  }
  els.upload.hidden = true;
}

// ---------------------------------------------------------------- E2EE

/**
 * End-to-end encryption, loaded on first use: the SDK's E2EE code and herald-crypto's
 * WebAssembly are fetched (assets/e2ee.js, assets/herald_crypto.wasm) only when this user
 * first opens or creates an encrypted channel or a DM, or at sign-in once this browser holds
 * a device for them (so DMs that came while they were away arrive). The device then runs on a
 * second connection that declares it (PROTOCOL.md §7); the plain connection keeps carrying
 * everything else. Its state (Olm account and sessions, pins, channel keys) lives in
 * IndexedDB sealed under a random key that is itself stored only wrapped by a non-extractable
 * WebCrypto key (`webCryptoStateKey`), so a reload keeps the device and its keys, and a copy of
 * the IndexedDB data opens nowhere else.
 *
 * Keys for an encrypted channel: its creator's app admits (seals every epoch key to) a member
 * when they join and whenever a member's app asks with the `herald.e2ee.keys_request` signal,
 * sent when it holds no key for the head epoch. Without a keeper (`herald keeper`) the
 * creator must be online for that.
 */
let secure: Herald | undefined;
let securing: Promise<Herald> | undefined;
let token = "";
const DEVICE_KEY = (user: string) => `herald.device.${user}`;
const KEYS_REQUEST = "herald.e2ee.keys_request";

/**
 * One page at a time per device: two tabs writing one state would each roll the Olm ratchets
 * back for the other. A Web Lock named after the user is held for the page's life; a second
 * tab waits for it (told why) and takes the device over when the first one closes.
 */
function deviceLock(user: string): Promise<void> {
  const locks = (navigator as Navigator & { locks?: LockManager }).locks;
  if (!locks) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const told = setTimeout(() => toast("End-to-end encryption is open in another tab of this browser: it starts here once that tab is closed."), 2000);
    locks
      .request(`herald-device:${user}`, () => {
        clearTimeout(told);
        resolve();
        // Held until this page goes away.
        return new Promise<void>(() => undefined);
      })
      .catch((e: unknown) => {
        clearTimeout(told);
        reject(e instanceof Error ? e : new Error(String(e)));
      });
  });
}

function secureClient(): Promise<Herald> {
  if (secure) return Promise.resolve(secure);
  securing ??= (async () => {
    await deviceLock(me);
    const m = await import("@herald-chat/client/e2ee");
    const slot = `user:${me}`;
    const [store, key] = await Promise.all([m.IndexedDbStateStore.open(slot), m.webCryptoStateKey(slot)]);
    const c = await Herald.connect({
      url: location.origin,
      token,
      reconnect: true,
      e2ee: m.e2ee({ store, secret: { key }, onWarning: (w) => console.warn(`e2ee: ${w}`) }),
    });
    secure = c;
    localStorage.setItem(DEVICE_KEY(me), c.e2ee?.deviceId ?? "");
    const device = document.getElementById("device");
    if (device) {
      device.textContent = `🔒 device ${c.e2ee?.deviceId ?? ""}`;
      device.title = `This browser's device. Fingerprint: ${c.e2ee?.fingerprint() ?? ""}`;
    }
    await loadDmArchive();
    c.message.onDirect((dm, failure) => onDirect(dm, failure));
    return c;
  })();
  securing.catch((e: unknown) => {
    securing = undefined;
    toast(`End-to-end encryption is unavailable: ${e instanceof Error ? e.message : String(e)}`);
  });
  return securing;
}

async function isEncrypted(c: Chan): Promise<boolean> {
  if (c.encrypted === undefined) c.encrypted = (await spaceOf(c)).channel.encrypted === true;
  return c.encrypted;
}

const opening = new Map<string, Promise<EncryptedSpace>>();
/** The encrypted handle of `c`, its live messages decrypted into `c.messages`. */
function encOf(c: Chan): Promise<EncryptedSpace> {
  if (c.es) return Promise.resolve(c.es);
  let p = opening.get(c.summary.id);
  if (!p) {
    p = (async () => {
      const sc = await secureClient();
      const es = await sc.space.encrypted(c.summary.id);
      es.onMessage((m) => onSealedMessage(c, m));
      es.onMessageEdited((m) => onSealedEdit(c, m));
      c.es = es;
      admitMissing(c, es);
      return es;
    })();
    opening.set(c.summary.id, p);
    p.catch(() => opening.delete(c.summary.id));
  }
  return p;
}

function toMsg(m: DecryptedMessage): Msg {
  // The plaintext bytes and the sealed form are not kept: the text is what is shown.
  const { unopenable, plaintext: _p, sealed: _s, ...rest } = m;
  const out: Msg = { ...rest, reactions: m.reactions ?? [] };
  if (unopenable) out.unopenable = `${unopenable.reason}: ${unopenable.detail}`;
  const manifest = manifestOf(m);
  if (manifest) out.manifest = manifest;
  return out;
}

function onSealedMessage(c: Chan, m: DecryptedMessage): void {
  if (!c.loaded || c.messages.some((x) => x.id === m.id)) return;
  c.messages.push(toMsg(m));
  if (c.summary.id === active) {
    const stick = nearBottom() || m.author === me;
    renderMessages(c);
    if (stick) scrollToBottom();
    markRead(c);
  }
}

/** A live edit of an encrypted channel's message, opened by the SDK against its author (or why not). */
function onSealedEdit(c: Chan, m: DecryptedMessage): void {
  const i = c.messages.findIndex((x) => x.id === m.id);
  const old = c.messages[i];
  if (!old) return;
  // What the edit does not carry (the message's place, type, reply, reactions) stays the message's.
  const opened = toMsg(m);
  const next: Msg = { ...old, content: opened.content, edited_at: opened.edited_at, reactions: old.reactions };
  if (opened.epoch !== undefined) next.epoch = opened.epoch;
  if (opened.unopenable) next.unopenable = opened.unopenable;
  else delete next.unopenable;
  c.messages[i] = next;
  if (c.summary.id === active) {
    const stick = nearBottom();
    renderMessages(c);
    if (stick) scrollToBottom();
  }
}

/** Without the head epoch's key, asks the creator's app for it and reloads the history once it is here. */
function checkKeys(c: Chan, es: EncryptedSpace): void {
  const head = es.epoch;
  if (head !== undefined && es.keyEpochs().includes(head)) {
    c.waitingForKeys = false;
    return;
  }
  if (c.waitingForKeys) return;
  c.waitingForKeys = true;
  spaceOf(c)
    .then((s) => s.sendEphemeral(KEYS_REQUEST, { device: secure?.e2ee?.deviceId ?? "" }))
    .catch(() => undefined);
  if (c.summary.id === active) renderHeader(c);
  es.waitForKeys(undefined, 10 * 60_000).then(
    () => {
      c.waitingForKeys = false;
      c.loaded = false;
      if (c.summary.id === active) void open(c.summary.id);
    },
    () => {
      c.waitingForKeys = false;
      if (c.summary.id === active) renderHeader(c);
    },
  );
}

/**
 * The creator's side, when the channel is opened here: members who joined while this app was
 * away (their requests are signals, not stored) and are not in the roster yet are admitted.
 */
function admitMissing(c: Chan, es: EncryptedSpace): void {
  void spaceOf(c)
    .then(async (s) => {
      if (s.channel.created_by !== me) return;
      const inRoster = new Set(es.roster().map((r) => r.user));
      for (const m of await s.members()) if (!inRoster.has(m.user)) admit(c, m.user);
    })
    .catch(() => undefined);
}

/** The creator's side: seal every key of `c` to `user`'s current devices (idempotent). */
const admitting = new Map<string, Promise<void>>();
function admit(c: Chan, user: string): void {
  if (user === me) return;
  const key = c.summary.id;
  const prev = admitting.get(key) ?? Promise.resolve();
  const next = prev
    .then(async () => {
      if (!(await isEncrypted(c)) || (await spaceOf(c)).channel.created_by !== me) return;
      await (await encOf(c)).admitMember(user);
    })
    .catch((e: unknown) => console.warn(`e2ee: cannot admit ${user}: ${e instanceof Error ? e.message : String(e)}`));
  admitting.set(key, next);
}

// ---------------------------------------------------------------- direct messages

/**
 * Direct messages are E2EE only (Olm, one copy per device, PROTOCOL.md §7): the server keeps
 * them in each device's inbox until that device has read them, then erases them. So the app
 * keeps the conversations itself, in IndexedDB, encrypted (AES-GCM) under a non-extractable
 * WebCrypto key of this browser: never as plaintext on disk. A copy sent by this user from
 * another of their devices names no recipient, so it is filed under their own name.
 */
interface DmLine {
  id: string;
  from: string;
  text: string;
  ts: string;
  failed?: string;
}
const dms = new Map<string, DmLine[]>();
const dmUnread = new Map<string, number>();
let activeDm: string | undefined;

function idbRequest<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

async function archiveDb(): Promise<IDBDatabase> {
  const r = indexedDB.open("herald-web", 1);
  r.onupgradeneeded = () => {
    if (!r.result.objectStoreNames.contains("dms")) r.result.createObjectStore("dms");
  };
  return idbRequest(r);
}

let archiveKey: CryptoKey | undefined;
async function dmKey(db: IDBDatabase): Promise<CryptoKey> {
  if (archiveKey) return archiveKey;
  const stored = await idbRequest(db.transaction("dms").objectStore("dms").get(`key:${me}`));
  if (stored instanceof CryptoKey) return (archiveKey = stored);
  const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
  await idbRequest(db.transaction("dms", "readwrite").objectStore("dms").put(key, `key:${me}`));
  return (archiveKey = key);
}

async function loadDmArchive(): Promise<void> {
  try {
    const db = await archiveDb();
    try {
      const key = await dmKey(db);
      const rec = (await idbRequest(db.transaction("dms").objectStore("dms").get(`dms:${me}`))) as { iv: Uint8Array; data: ArrayBuffer } | undefined;
      if (!rec) return;
      const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: rec.iv as unknown as BufferSource }, key, rec.data);
      const saved = JSON.parse(new TextDecoder().decode(plain)) as Record<string, DmLine[]>;
      for (const [peer, lines] of Object.entries(saved)) {
        const have = dms.get(peer) ?? [];
        dms.set(peer, [...lines, ...have.filter((l) => !lines.some((x) => x.id === l.id))]);
      }
    } finally {
      db.close();
    }
  } catch (e) {
    toast(`Earlier direct messages cannot be read: ${e instanceof Error ? e.message : String(e)}`);
  }
  renderDmList();
}

let archiveWrites: Promise<void> = Promise.resolve();
function saveDmArchive(): void {
  const snapshot = JSON.stringify(Object.fromEntries(dms));
  archiveWrites = archiveWrites
    .then(async () => {
      const db = await archiveDb();
      try {
        const key = await dmKey(db);
        const iv = crypto.getRandomValues(new Uint8Array(12));
        const data = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, new TextEncoder().encode(snapshot));
        await idbRequest(db.transaction("dms", "readwrite").objectStore("dms").put({ iv, data }, `dms:${me}`));
      } finally {
        db.close();
      }
    })
    .catch((e: unknown) => console.warn(`direct messages not archived: ${e instanceof Error ? e.message : String(e)}`));
}

function addDm(peer: string, line: DmLine): void {
  const lines = dms.get(peer) ?? [];
  if (lines.some((l) => l.id === line.id)) return;
  lines.push(line);
  dms.set(peer, lines);
  saveDmArchive();
  if (activeDm === peer) {
    renderDm(peer);
    scrollToBottom();
  } else if (line.from !== me) dmUnread.set(peer, (dmUnread.get(peer) ?? 0) + 1);
  renderDmList();
}

function onDirect(dm: DirectMessage | undefined, failure: DirectMessageFailure | undefined): void {
  if (dm) addDm(dm.from, { id: dm.id, from: dm.from, text: dm.text, ts: dm.ts || new Date().toISOString() });
  else if (failure) addDm(failure.from, { id: failure.id, from: failure.from, text: "", ts: new Date().toISOString(), failed: failure.reason });
}

/** A user's display name, as a channel shared with them knows it. */
function displayName(user: string): string {
  if (user === me) return myName;
  for (const c of chans.values()) {
    const n = c.names.get(user);
    if (n) return n;
  }
  return user;
}

function renderDmList(): void {
  const peers = [...dms.keys()].sort();
  els.dmList.replaceChildren(
    ...peers.map((peer) => {
      const unread = dmUnread.get(peer) ?? 0;
      return h(
        "a",
        {
          href: "#",
          class: `chan dm${peer === activeDm ? " active" : ""}${unread > 0 ? " has-unread" : ""}`,
          "data-dm": peer,
          title: "End-to-end encrypted direct messages",
          onclick: (e: Event) => {
            e.preventDefault();
            void openDm(peer);
          },
        },
        h("span", { class: "hash lock" }, "🔒"),
        h("span", { class: "label" }, peer === me ? `${myName} (your other devices)` : displayName(peer)),
        unread > 0 ? h("span", { class: "badge" }, String(unread)) : null,
      );
    }),
  );
}

async function openDm(peer: string): Promise<void> {
  if (!peer) return;
  active = undefined;
  activeDm = peer;
  replyTo = undefined;
  editing = undefined;
  renderContext();
  dmUnread.delete(peer);
  if (!dms.has(peer)) dms.set(peer, []);
  renderList();
  renderDmList();
  els.header.replaceChildren(
    h("h2", {}, h("span", { class: "hash" }, "@"), peer === me ? `${myName} (your other devices)` : displayName(peer)),
    h("span", { class: "e2ee-badge", id: "e2ee-badge", title: "Olm sessions between devices; the server stores ciphertext only" }, "🔒 End-to-end encrypted"),
  );
  els.onlineTitle.textContent = "Online";
  els.online.replaceChildren();
  els.composer.disabled = true;
  els.composer.placeholder = `Message @${peer}`;
  // DMs carry text only.
  els.attach.hidden = true;
  renderDm(peer);
  try {
    await secureClient();
  } catch {
    return;
  }
  if (activeDm !== peer) return;
  els.composer.disabled = false;
  els.composer.focus();
}

function renderDm(peer: string): void {
  const lines = dms.get(peer) ?? [];
  const nodes: Node[] = [h("div", { class: "start muted" }, `Direct messages with ${displayName(peer)} (${peer}), end-to-end encrypted. Kept in this browser only.`)];
  let prev: DmLine | undefined;
  for (const l of lines) {
    const grouped = prev && prev.from === l.from && Date.parse(l.ts) - Date.parse(prev.ts) < 5 * 60_000;
    nodes.push(
      h(
        "article",
        { class: `msg${grouped ? " grouped" : ""}${l.from === me ? " mine" : ""}`, "data-id": l.id },
        grouped ? h("div", { class: "gutter muted" }, time(l.ts)) : h("div", { class: "avatar", style: `--h:${hue(l.from)}` }, initials(l.from)),
        h(
          "div",
          { class: "body" },
          grouped ? null : h("div", { class: "meta" }, h("strong", { class: "author" }, displayName(l.from)), h("span", { class: "muted" }, time(l.ts))),
          l.failed
            ? h("div", { class: "content undecryptable", title: l.failed }, "🔒 This message could not be decrypted")
            : h("div", { class: "content" }, l.text),
        ),
      ),
    );
    prev = l;
  }
  els.scroller.replaceChildren(...nodes);
}

async function sendDm(peer: string, text: string): Promise<void> {
  const sc = await secureClient();
  const ids = await sc.message.send(`user:${peer}`, text);
  addDm(peer, { id: ids[0] ?? `local-${Date.now()}`, from: me, text, ts: new Date().toISOString() });
}

// ---------------------------------------------------------------- presence

/**
 * Who is online, per channel: the app enters the room (PROTOCOL.md §8) of every channel it is
 * a member of, with `{status: "active" | "away"}` (away while the tab is hidden); the sidebar
 * lists the participants of the open channel, one line per user. The SDK enters the rooms
 * again after a reconnect; a closed tab leaves them (its connection ends).
 */
const rooms = new Map<string, { room: Room; off: Array<() => void> }>();
let myName = "";

function status(): "active" | "away" {
  return document.hidden ? "away" : "active";
}

function syncRooms(): void {
  const c = client;
  if (!c) return;
  for (const id of chans.keys()) {
    if (rooms.has(id)) continue;
    const room = c.room(id);
    const rerender = () => {
      if (id === active) renderOnline();
    };
    const off = [
      room.on("participant_added", rerender),
      room.on("participant_updated", rerender),
      room.on("participant_removed", rerender),
      room.on("presence_count", rerender),
      room.on("entered", rerender),
      room.on("disconnected", rerender),
    ];
    rooms.set(id, { room, off });
    room.enter({ status: status() }).catch(() => {
      // Not a member any more (or offline: the next refresh enters again).
      off.forEach((f) => f());
      rooms.delete(id);
    });
  }
  for (const [id, r] of rooms) {
    if (chans.has(id)) continue;
    r.off.forEach((f) => f());
    rooms.delete(id);
    r.room.leave().catch(() => undefined);
  }
}

function renderOnline(): void {
  const c = active ? chans.get(active) : undefined;
  const room = active ? rooms.get(active)?.room : undefined;
  const people = new Map<string, { name: string; status: string }>();
  if (room?.entered) {
    people.set(me, { name: myName, status: status() });
    for (const p of room.remoteParticipants) {
      const st = p.attributes.status === "away" ? "away" : "active";
      const prev = people.get(p.user);
      // One line per user: active on any of their connections wins.
      if (!prev || prev.status === "away") people.set(p.user, { name: p.name ?? c?.names.get(p.user) ?? p.user, status: p.user === me ? status() : st });
    }
  }
  const list = [...people.entries()].sort((a, b) => (a[0] === me ? -1 : b[0] === me ? 1 : a[1].name.localeCompare(b[1].name)));
  const count = room?.entered ? (room.listComplete ? people.size : room.presenceCount) : 0;
  els.onlineTitle.textContent = c ? `Online in #${chanLabel(c.summary)}` : "Online";
  const nodes: Node[] = list.map(([u, v]) =>
    h(
      "div",
      { class: `person ${v.status}`, "data-user": u, "data-status": v.status, title: v.status === "away" ? `${v.name} is away` : `${v.name} is here` },
      h("span", { class: "dot" }),
      h("span", {}, v.name),
      u === me ? h("span", { class: "muted" }, " (you)") : null,
    ),
  );
  if (room && !room.listComplete) nodes.push(h("div", { class: "person muted" }, `${room.presenceCount} in this room`));
  els.online.replaceChildren(...nodes);
  const badge = document.getElementById("online-count");
  if (badge) badge.textContent = count > 0 ? `${count} online` : "";
}

document.addEventListener("visibilitychange", () => {
  for (const { room } of rooms.values()) if (room.entered) room.update({ status: status() }).catch(() => undefined);
  renderOnline();
});

async function start(tok: string): Promise<void> {
  const c = await Herald.connect({ url: location.origin, token: tok, reconnect: true });
  localStorage.setItem(TOKEN_KEY, tok);
  token = tok;
  client = c;
  me = c.me?.user.id ?? "";
  const name = c.me?.user.name ?? me;
  myName = name;
  c.realtime.on("disconnected", () => showBanner("Reconnecting…"));
  c.realtime.on("reconnecting", (e) => showBanner(`Connection lost. Reconnecting (attempt ${e.attempt})…`));
  c.realtime.on("connected", () => hideBanner());
  c.realtime.on("closed", (e) => {
    if (e.error?.code === "unauthorized") {
      localStorage.removeItem(TOKEN_KEY);
      void showSignIn("Your session expired. Sign in again.");
    }
  });
  wireEvents(c);
  app.replaceChildren(
    els.banner,
    h(
      "div",
      { class: "shell" },
      h(
        "aside",
        { class: "sidebar" },
        h("div", { class: "brand" }, h("div", { class: "logo small" }, "H"), h("span", {}, "Herald")),
        h(
          "form",
          {
            class: "new",
            onsubmit: (e: Event) => {
              e.preventDefault();
              void createOrJoin(els.newChan.value.trim());
            },
          },
          els.newChan,
          h("label", { class: "toggle", for: "new-encrypted", title: "A new channel is end-to-end encrypted: the server stores ciphertext only" }, els.newEncrypted, "🔒 End-to-end encrypted"),
        ),
        h("div", { class: "section" }, "Channels"),
        els.list,
        h("div", { class: "section" }, "Direct messages"),
        h(
          "form",
          {
            class: "new",
            onsubmit: (e: Event) => {
              e.preventDefault();
              const peer = els.newDm.value.trim();
              els.newDm.value = "";
              void openDm(peer);
            },
          },
          els.newDm,
        ),
        els.dmList,
        els.onlineTitle,
        els.online,
        h(
          "div",
          { class: "me" },
          h("div", { class: "avatar", style: `--h:${hue(me)}` }, initials(name)),
          h("div", { class: "who" }, h("strong", { id: "me-name" }, name), h("span", { class: "muted" }, `@${me}`), h("span", { class: "muted device", id: "device" })),
          h(
            "button",
            {
              class: "ghost",
              title: "Sign out",
              onclick: () => {
                localStorage.removeItem(TOKEN_KEY);
                client?.close();
                secure?.close();
                location.reload();
              },
            },
            "⎋",
          ),
        ),
      ),
      h(
        "section",
        { class: "pane" },
        els.header,
        els.scroller,
        h(
          "footer",
          { class: "composer" },
          els.typing,
          els.context,
          (els.upload.replaceChildren(els.uploadLabel, els.uploadBar), els.upload),
          h(
            "div",
            { class: "box" },
            els.attach,
            els.file,
            els.composer,
            h("button", { id: "send", onclick: () => void submit() }, "Send"),
          ),
          h("div", { class: "hint muted" }, "Enter to send · Shift+Enter new line · ↑ edit your last message · Alt+↑/↓ switch channel · Ctrl+K find"),
        ),
      ),
    ),
  );
  els.file.addEventListener("change", () => {
    if (els.file.files) void uploadFiles(els.file.files).finally(() => (els.file.value = ""));
  });
  const pane = app.querySelector(".pane");
  pane?.addEventListener("dragover", (e) => e.preventDefault());
  pane?.addEventListener("drop", (e) => {
    const ev = e as DragEvent;
    ev.preventDefault();
    if (ev.dataTransfer?.files.length) void uploadFiles(ev.dataTransfer.files);
  });
  els.composer.addEventListener("paste", (e) => {
    const files = e.clipboardData?.files;
    if (files && files.length > 0) {
      e.preventDefault();
      void uploadFiles(files);
    }
  });
  els.scroller.addEventListener("scroll", () => {
    if (els.scroller.scrollTop < 120) void loadOlder();
  });
  // A device made here before: open it now, so DMs that came while away arrive.
  if (localStorage.getItem(DEVICE_KEY(me))) void secureClient().catch(() => undefined);
  await refreshChannels();
  const first = [...chans.keys()][0];
  if (first) await open(first);
  else renderEmpty();
}

function showBanner(text: string): void {
  els.banner.textContent = text;
  els.banner.hidden = false;
}

function hideBanner(): void {
  els.banner.hidden = true;
}

async function refreshChannels(): Promise<void> {
  if (!client) return;
  const list = await client.space.listChannels();
  for (const s of list) {
    const c = chans.get(s.id);
    if (c) {
      c.summary = s;
      if (s.id !== active) c.unread = s.unread;
    } else {
      chans.set(s.id, {
        summary: s,
        space: undefined,
        messages: [],
        loaded: false,
        hasMore: true,
        loading: false,
        unread: s.unread,
        typing: new Map(),
        readers: new Map(),
        names: new Map(),
        encrypted: undefined,
        es: undefined,
        waitingForKeys: false,
      });
    }
  }
  for (const id of [...chans.keys()]) if (!list.some((s) => s.id === id)) chans.delete(id);
  renderList();
  syncRooms();
  // `channel.list` does not say which channels are encrypted: the REST lookup does.
  const unknown = [...chans.values()].filter((c) => c.encrypted === undefined);
  await Promise.all(unknown.map((c) => isEncrypted(c).catch(() => false)));
  if (unknown.length > 0) renderList();
}

function renderList(): void {
  const items = [...chans.values()].sort((a, b) => chanLabel(a.summary).localeCompare(chanLabel(b.summary)));
  els.list.replaceChildren(
    ...items.map((c) =>
      h(
        "a",
        {
          href: "#",
          class: `chan${c.summary.id === active ? " active" : ""}${c.unread > 0 ? " has-unread" : ""}`,
          "data-channel": chanLabel(c.summary),
          onclick: (e: Event) => {
            e.preventDefault();
            void open(c.summary.id);
          },
        },
        h("span", { class: "hash" }, "#"),
        h("span", { class: "label" }, chanLabel(c.summary)),
        c.encrypted ? h("span", { class: "lock", title: "End-to-end encrypted" }, "🔒") : null,
        c.unread > 0 ? h("span", { class: "badge" }, String(c.unread)) : null,
      ),
    ),
  );
}

function renderEmpty(): void {
  els.header.replaceChildren(h("h2", {}, "Welcome"));
  els.scroller.replaceChildren(
    h("div", { class: "empty" }, h("h3", {}, "No channels yet"), h("p", { class: "muted" }, "Type a name in the box on the left to create one, or the name of an existing one to join it.")),
  );
  els.composer.disabled = true;
}

async function createOrJoin(name: string): Promise<void> {
  if (!client || !name) return;
  els.newChan.value = "";
  const encrypted = els.newEncrypted.checked;
  let space: Space;
  try {
    space = await client.space.joinChannel(name);
  } catch (e) {
    try {
      if (!(e instanceof HeraldError && e.code === "channel_not_found")) throw e;
      if (encrypted) {
        // The genesis (roster and first key, sealed to this device) is posted by the SDK.
        const es = await (await secureClient()).space.createChannel(name, { encrypted: true });
        space = await client.space.get(es.id);
      } else space = await client.space.createChannel(name);
    } catch (err) {
      toast(err instanceof HeraldError ? err.message : String(err));
      return;
    }
  }
  els.newEncrypted.checked = false;
  await refreshChannels();
  const c = chans.get(space.id);
  if (c) {
    c.space = space;
    c.encrypted = space.channel.encrypted === true;
  }
  renderList();
  await open(space.id);
}

function toast(text: string): void {
  const t = h("div", { class: "toast" }, text);
  document.body.append(t);
  setTimeout(() => t.remove(), 4000);
}

// ---------------------------------------------------------------- a channel

async function spaceOf(c: Chan): Promise<Space> {
  if (!c.space) {
    if (!client) throw new Error("not signed in");
    c.space = await client.space.get(c.summary.id);
  }
  return c.space;
}

async function open(id: string): Promise<void> {
  const c = chans.get(id);
  if (!c) return;
  active = id;
  activeDm = undefined;
  els.attach.hidden = false;
  replyTo = undefined;
  editing = undefined;
  renderContext();
  c.unread = 0;
  renderList();
  renderDmList();
  const space = await spaceOf(c);
  const members = await space.members().catch(() => []);
  for (const m of members) {
    c.names.set(m.user, m.name ?? m.user);
    if (m.user !== me) c.readers.set(m.user, m.last_read);
  }
  c.memberCount = members.length;
  const encrypted = await isEncrypted(c);
  renderHeader(c);
  renderOnline();
  els.composer.disabled = encrypted;
  els.composer.placeholder = `Message #${chanLabel(c.summary)}`;
  if (encrypted) {
    // The E2EE code and the device load now, the first time they are needed.
    renderMessages(c, "Loading end-to-end encryption…");
    try {
      // Asks for the keys while this device has none (again after an earlier wait gave up).
      checkKeys(c, await encOf(c));
    } catch (e) {
      renderMessages(c, `End-to-end encryption is unavailable: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (active !== id) return;
    renderHeader(c);
    els.composer.disabled = false;
  }
  if (!c.loaded) {
    c.messages = [];
    c.hasMore = true;
    renderMessages(c);
    await loadOlder();
    c.loaded = true;
  } else renderMessages(c);
  scrollToBottom();
  markRead(c);
  els.composer.focus();
}

function renderHeader(c: Chan): void {
  const n = c.memberCount ?? 0;
  const parts: Array<Node | null> = [
    h("h2", {}, h("span", { class: "hash" }, "#"), chanLabel(c.summary)),
    c.encrypted
      ? h(
          "span",
          { class: "e2ee-badge", id: "e2ee-badge", title: "Messages and files are sealed in this browser; the server stores ciphertext only" },
          "🔒 End-to-end encrypted",
        )
      : null,
    c.waitingForKeys ? h("span", { class: "muted", id: "keys-wait" }, "Waiting for the channel's keys from its creator…") : null,
    h("span", { class: "muted", id: "member-count" }, `${n} member${n === 1 ? "" : "s"}`),
    h("span", { class: "online-count", id: "online-count" }),
  ];
  els.header.replaceChildren(...parts.filter((x): x is Node => x !== null));
  renderOnline();
}

async function loadOlder(): Promise<void> {
  const c = active ? chans.get(active) : undefined;
  if (!c || c.loading || !c.hasMore) return;
  c.loading = true;
  try {
    const oldest = c.messages[0];
    const opts = oldest ? { limit: PAGE, before: oldest.seq } : { limit: PAGE };
    // An encrypted channel's history: the log's hash chain verified, each message opened (or why not).
    const page: { messages: Msg[]; has_more: boolean } = (await isEncrypted(c))
      ? await (await encOf(c)).history(opts).then((p) => ({ messages: p.messages.map(toMsg), has_more: p.has_more }))
      : await (await spaceOf(c)).history(opts).then((p) => ({ messages: p.messages.map((m) => ({ ...m, reactions: m.reactions ?? [] })), has_more: p.has_more }));
    const older = page.messages
      .filter((m) => !c.messages.some((x) => x.id === m.id))
      .reverse();
    const before = els.scroller.scrollHeight - els.scroller.scrollTop;
    c.messages = [...older, ...c.messages];
    c.hasMore = page.has_more;
    if (c.summary.id === active) {
      renderMessages(c);
      els.scroller.scrollTop = els.scroller.scrollHeight - before;
    }
  } finally {
    c.loading = false;
  }
}

function scrollToBottom(): void {
  els.scroller.scrollTop = els.scroller.scrollHeight;
}

function nearBottom(): boolean {
  return els.scroller.scrollHeight - els.scroller.scrollTop - els.scroller.clientHeight < 80;
}

let readTimer: ReturnType<typeof setTimeout> | undefined;
const lastMarked = new Map<string, string>();
function markRead(c: Chan): void {
  if (readTimer) clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    const last = c.messages[c.messages.length - 1];
    if (!last || lastMarked.get(c.summary.id) === last.id || document.hidden) return;
    lastMarked.set(c.summary.id, last.id);
    c.space?.markRead(last.id).catch((e: unknown) => {
      // `read` is throttled per channel (rate_limited with retry_after_ms): send the newest
      // marker again once allowed.
      lastMarked.delete(c.summary.id);
      const wait = e instanceof HeraldError && "retryAfterMs" in e ? Number((e as { retryAfterMs?: number }).retryAfterMs ?? 300) : 1000;
      setTimeout(() => {
        if (active === c.summary.id) markRead(c);
      }, wait);
    });
  }, 300);
}

function renderMessages(c: Chan, status?: string): void {
  const nodes: Node[] = [];
  if (status) nodes.push(h("div", { class: "loading muted" }, status));
  else if (c.hasMore) nodes.push(h("div", { class: "loading muted" }, c.loading ? "Loading…" : "Scroll up for older messages"));
  else nodes.push(h("div", { class: "start muted" }, `This is the beginning of #${chanLabel(c.summary)}.`));
  // Readers shown under the newest message they have read.
  const seenAt = new Map<string, string[]>();
  for (const [user, seq] of c.readers) {
    let target: Msg | undefined;
    // Under the newest message of someone else that they have read: a receipt for one's own
    // message says nothing.
    for (const m of c.messages) if (m.seq <= seq && m.author !== user) target = m;
    if (target) seenAt.set(target.id, [...(seenAt.get(target.id) ?? []), c.names.get(user) ?? user]);
  }
  let prev: Msg | undefined;
  for (const m of c.messages) {
    const grouped = prev && prev.author === m.author && !m.reply_to && Date.parse(m.ts) - Date.parse(prev.ts) < 5 * 60_000;
    nodes.push(renderMessage(c, m, Boolean(grouped), seenAt.get(m.id)));
    prev = m;
  }
  els.scroller.replaceChildren(...nodes);
}

function renderMessage(c: Chan, m: Msg, grouped: boolean, seenBy: string[] | undefined): HTMLElement {
  const name = c.names.get(m.author) ?? m.author;
  const mine = m.author === me;
  const counts = new Map<string, Reaction[]>();
  for (const r of m.reactions) counts.set(r.emoji, [...(counts.get(r.emoji) ?? []), r]);
  const actions = h(
    "div",
    { class: "actions" },
    ...QUICK_EMOJI.slice(0, 3).map((e) => h("button", { class: "ghost", title: `React ${e}`, onclick: () => void toggleReaction(c, m, e) }, e)),
    h("button", { class: "ghost", title: "Reply", "data-action": "reply", onclick: () => startReply(m) }, "↩"),
    mine && editable(m) ? h("button", { class: "ghost", title: "Edit", "data-action": "edit", onclick: () => startEdit(m) }, "✎") : null,
    mine ? h("button", { class: "ghost danger", title: "Delete", "data-action": "delete", onclick: () => void remove(c, m) }, "🗑") : null,
  );
  return h(
    "article",
    { class: `msg${grouped ? " grouped" : ""}${mine ? " mine" : ""}`, "data-id": m.id, "data-seq": String(m.seq) },
    grouped ? h("div", { class: "gutter muted" }, time(m.ts)) : h("div", { class: "avatar", style: `--h:${hue(m.author)}` }, initials(name)),
    h(
      "div",
      { class: "body" },
      m.reply_to ? h("div", { class: "quote" }, h("strong", {}, c.names.get(m.reply_to.author) ?? m.reply_to.author), " ", quoteOf(c, m.reply_to)) : null,
      grouped ? null : h("div", { class: "meta" }, h("strong", { class: "author" }, name), h("span", { class: "muted" }, time(m.ts))),
      (() => {
        if (m.unopenable) {
          return h("div", { class: "content undecryptable", title: m.unopenable }, "🔒 This message could not be decrypted", h("span", { class: "muted" }, ` (${m.unopenable.split(":")[0]})`));
        }
        const f = parseFile(m);
        return f
          ? h("div", { class: "content attachment" }, renderFile(c, m, f))
          : h("div", { class: "content" }, m.content, m.edited_at ? h("span", { class: "edited muted" }, " (edited)") : null);
      })(),
      counts.size > 0
        ? h(
            "div",
            { class: "reactions" },
            ...[...counts].map(([emoji, rs]) =>
              h(
                "button",
                {
                  class: `chip${rs.some((r) => r.user === me) ? " me" : ""}`,
                  title: rs.map((r) => c.names.get(r.user) ?? r.user).join(", "),
                  onclick: () => void toggleReaction(c, m, emoji),
                },
                `${emoji} ${rs.length}`,
              ),
            ),
          )
        : null,
      seenBy ? h("div", { class: "seen muted" }, `Seen by ${seenBy.join(", ")}`) : null,
    ),
    actions,
  );
}

async function toggleReaction(c: Chan, m: Msg, emoji: string): Promise<void> {
  const space = await spaceOf(c);
  const mineR = m.reactions.find((r) => r.emoji === emoji && r.user === me);
  try {
    if (mineR) await space.unreact(mineR.reaction_id);
    else await space.react(m.id, emoji);
  } catch (e) {
    toast(e instanceof HeraldError ? e.message : String(e));
  }
}

async function remove(c: Chan, m: Msg): Promise<void> {
  if (!confirm("Delete this message for everyone?")) return;
  await (await spaceOf(c)).deleteMessage(m.id);
}

/** Text messages can be edited; in an encrypted channel the SDK seals the new text (`EncryptedSpace.edit`), so only ones that opened. */
function editable(m: Msg): boolean {
  return m.type !== "file" && m.manifest === undefined && m.unopenable === undefined;
}

/** What a reply quotes: in an encrypted channel the server's snapshot is ciphertext, so the opened message is used. */
function quoteOf(c: Chan, r: NonNullable<Message["reply_to"]>): Node | string {
  if (r.content === null) return h("em", {}, "deleted message");
  if (!c.encrypted) return r.content;
  const m = c.messages.find((x) => x.id === r.id);
  if (!m) return h("em", {}, "an encrypted message");
  if (m.unopenable) return h("em", {}, "a message that could not be decrypted");
  return parseFile(m)?.name ?? m.content;
}

function startReply(m: Msg): void {
  editing = undefined;
  replyTo = m;
  renderContext();
  els.composer.focus();
}

function startEdit(m: Msg): void {
  replyTo = undefined;
  editing = m;
  els.composer.value = m.content;
  renderContext();
  els.composer.focus();
}

function renderContext(): void {
  const cancel = h("button", { class: "ghost", title: "Cancel (Esc)", onclick: () => cancelContext() }, "✕");
  if (replyTo) {
    const what = parseFile(replyTo)?.name ?? replyTo.content.slice(0, 80);
    els.context.replaceChildren(h("span", {}, "Replying to ", h("strong", {}, replyTo.author), `: ${what}`), cancel);
    els.context.hidden = false;
  } else if (editing) {
    els.context.replaceChildren(h("span", {}, "Editing message"), cancel);
    els.context.hidden = false;
  } else els.context.hidden = true;
}

function cancelContext(): void {
  if (editing) els.composer.value = "";
  replyTo = undefined;
  editing = undefined;
  renderContext();
}

async function submit(): Promise<void> {
  const text = els.composer.value.trim();
  if (activeDm && text) {
    const peer = activeDm;
    els.composer.value = "";
    autosize();
    try {
      await sendDm(peer, text);
    } catch (e) {
      toast(e instanceof HeraldError ? e.message : String(e));
      els.composer.value = text;
    }
    return;
  }
  const c = active ? chans.get(active) : undefined;
  if (!c || !text) return;
  const es = (await isEncrypted(c)) ? await encOf(c) : undefined;
  const space = es ?? (await spaceOf(c));
  els.composer.value = "";
  autosize();
  const target = editing;
  const parent = replyTo;
  cancelContext();
  typingSent = false;
  try {
    if (target && es) await es.edit(target.id, text);
    else if (target) await (await spaceOf(c)).editMessage(target.id, text);
    else await space.sendMessage(text, parent ? { replyTo: parent.id } : {});
  } catch (e) {
    toast(e instanceof HeraldError ? `${e.message}` : String(e));
    els.composer.value = text;
  }
}

let typingSent = false;
let typingStop: ReturnType<typeof setTimeout> | undefined;
function onComposerInput(): void {
  autosize();
  const c = active ? chans.get(active) : undefined;
  if (!c?.space) return;
  if (!typingSent && els.composer.value.length > 0) {
    typingSent = true;
    c.space.typing(true).catch(() => undefined);
  }
  if (typingStop) clearTimeout(typingStop);
  const space = c.space;
  typingStop = setTimeout(() => {
    if (typingSent) space.typing(false).catch(() => undefined);
    typingSent = false;
  }, 3000);
}

function autosize(): void {
  els.composer.style.height = "auto";
  els.composer.style.height = `${Math.min(200, els.composer.scrollHeight)}px`;
}

function renderTyping(): void {
  const c = active ? chans.get(active) : undefined;
  const who = c ? [...c.typing.keys()].map((u) => c.names.get(u) ?? u) : [];
  els.typing.textContent =
    who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(", ")} and ${who[who.length - 1]} are typing…`;
}

// ---------------------------------------------------------------- live events

function wireEvents(c: Herald): void {
  const rerender = (id: string) => {
    const ch = chans.get(id);
    if (ch && id === active) {
      const stick = nearBottom();
      renderMessages(ch);
      if (stick) scrollToBottom();
    }
  };
  c.realtime.on("message", (e) => {
    const ch = chans.get(e.channel);
    if (!ch) {
      void refreshChannels();
      return;
    }
    // An encrypted channel's messages are opened by its EncryptedSpace (onSealedMessage).
    if (ch.loaded && !ch.encrypted && !ch.messages.some((m) => m.id === e.message.id) && e.message.content !== "") {
      ch.messages.push({ ...e.message, reactions: [] });
    }
    const timer = ch.typing.get(e.message.author);
    if (timer) {
      clearTimeout(timer);
      ch.typing.delete(e.message.author);
      renderTyping();
    }
    if (e.channel === active) {
      if (!ch.encrypted) {
        const stick = nearBottom() || e.message.author === me;
        renderMessages(ch);
        if (stick) scrollToBottom();
        markRead(ch);
      }
    } else if (e.message.author !== me) {
      ch.unread += 1;
      renderList();
    }
  });
  c.realtime.on("messageEdited", (e) => {
    const ch = chans.get(e.channel);
    const m = ch?.messages.find((x) => x.id === e.message_id);
    // An encrypted channel's edits are opened by its EncryptedSpace (onSealedEdit).
    if (!ch || !m || ch.encrypted || ch.es) return;
    m.content = e.content;
    m.edited_at = e.edited_at;
    rerender(e.channel);
  });
  c.realtime.on("messageDeleted", (e) => {
    const ch = chans.get(e.channel);
    if (ch) ch.messages = ch.messages.filter((m) => m.id !== e.message_id);
    rerender(e.channel);
  });
  c.realtime.on("reaction", (e) => {
    const m = chans.get(e.channel)?.messages.find((x) => x.id === e.message_id);
    if (m && !m.reactions.some((r) => r.reaction_id === e.reaction_id)) m.reactions.push({ reaction_id: e.reaction_id, emoji: e.emoji, user: e.author });
    rerender(e.channel);
  });
  c.realtime.on("reactionDeleted", (e) => {
    for (const m of chans.get(e.channel)?.messages ?? []) m.reactions = m.reactions.filter((r) => r.reaction_id !== e.reaction_id);
    rerender(e.channel);
  });
  c.realtime.on("messageRead", (e) => {
    const ch = chans.get(e.channel);
    if (!ch || e.user === me) return;
    const m = ch.messages.find((x) => x.id === e.message_id);
    if (m && (ch.readers.get(e.user) ?? 0) < m.seq) ch.readers.set(e.user, m.seq);
    rerender(e.channel);
  });
  c.realtime.on("typing", (e) => {
    const ch = chans.get(e.channel);
    if (!ch) return;
    const old = ch.typing.get(e.user);
    if (old) clearTimeout(old);
    if (e.is_typing) {
      ch.typing.set(
        e.user,
        setTimeout(() => {
          ch.typing.delete(e.user);
          renderTyping();
        }, 6000),
      );
    } else ch.typing.delete(e.user);
    renderTyping();
  });
  c.realtime.on("memberJoined", (e) => {
    const ch = chans.get(e.channel);
    if (!ch) void refreshChannels();
    else {
      if (e.name) ch.names.set(e.user, e.name);
      if (ch.encrypted && secure) admit(ch, e.user);
    }
  });
  c.realtime.on("ephemeral", (e) => {
    const ch = chans.get(e.channel);
    if (ch && e.subject === KEYS_REQUEST) admit(ch, e.from);
  });
  c.realtime.on("channelCreated", () => void refreshChannels());
  c.realtime.on("channelDeleted", (e) => {
    chans.delete(e.channel);
    if (active === e.channel) {
      active = undefined;
      const next = [...chans.keys()][0];
      if (next) void open(next);
      else renderEmpty();
    }
    renderList();
  });
  c.realtime.on("memberLeft", (e) => {
    if (e.user === me) {
      chans.delete(e.channel);
      renderList();
    }
  });
}

// ---------------------------------------------------------------- keyboard

els.composer.addEventListener("input", onComposerInput);
els.composer.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    void submit();
  } else if (e.key === "Escape") {
    cancelContext();
  } else if (e.key === "ArrowUp" && els.composer.value === "") {
    const c = active ? chans.get(active) : undefined;
    const mine = c ? c.messages.filter((m) => m.author === me && editable(m)).pop() : undefined;
    if (mine) {
      e.preventDefault();
      startEdit(mine);
    }
  }
});

document.addEventListener("keydown", (e) => {
  if (!client) return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
    e.preventDefault();
    els.newChan.focus();
    els.newChan.select();
  } else if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
    e.preventDefault();
    const ids = [...els.list.querySelectorAll<HTMLElement>("a.chan")].map((a) => a.dataset.channel);
    const labels = [...chans.values()];
    const cur = labels.find((c) => c.summary.id === active);
    const at = ids.indexOf(cur ? chanLabel(cur.summary) : undefined);
    const next = ids[(at + (e.key === "ArrowUp" ? -1 : 1) + ids.length) % ids.length];
    const target = labels.find((c) => chanLabel(c.summary) === next);
    if (target) void open(target.summary.id);
  } else if (e.key === "/" && document.activeElement === document.body) {
    e.preventDefault();
    els.composer.focus();
  }
});

document.addEventListener("visibilitychange", () => {
  const c = active ? chans.get(active) : undefined;
  if (c && !document.hidden) markRead(c);
});

// ---------------------------------------------------------------- boot

const saved = localStorage.getItem(TOKEN_KEY);
if (saved) {
  start(saved).catch(() => {
    localStorage.removeItem(TOKEN_KEY);
    void showSignIn("Your saved session is no longer valid. Sign in again.");
  });
} else void showSignIn();

// Exposed for the end-to-end tests and the curious.
(window as unknown as { herald: () => Herald | undefined }).herald = () => client;
