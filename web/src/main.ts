/**
 * Herald's chat app: sign in with a token (or, on a server started with `--dev`, with a name),
 * channels with unread counts, history with infinite scroll, send/edit/delete/reply/react,
 * typing, read receipts, presence per channel (rooms), a banner while reconnecting. Everything
 * goes through the SDK.
 */
import "./style.css";
import { Herald, HeraldError, type ChannelSummary, type Message, type Room, type Space } from "@herald-chat/client";

const TOKEN_KEY = "herald.token";
const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "👀", "🚀"];
const PAGE = 40;

type Reaction = { reaction_id: string; emoji: string; user: string };
interface Msg extends Message {
  reactions: Reaction[];
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
  file: h("input", { id: "file-input", type: "file", multiple: true, hidden: true }) as HTMLInputElement,
  upload: h("div", { class: "upload", id: "upload", hidden: true }),
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

function parseFile(m: Message): FileRef | undefined {
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

const blobUrls = new Map<string, Promise<string>>();
function blobUrl(c: Chan, f: FileRef): Promise<string> {
  let p = blobUrls.get(f.blob_id);
  if (!p) {
    p = spaceOf(c)
      .then((s) => s.getFile(f.blob_id))
      .then((bytes) => URL.createObjectURL(new Blob([bytes as unknown as BlobPart], { type: f.mime || "application/octet-stream" })));
    blobUrls.set(f.blob_id, p);
    p.catch(() => blobUrls.delete(f.blob_id));
  }
  return p;
}

function size(n: number): string {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function renderFile(c: Chan, f: FileRef): HTMLElement {
  if (f.mime.startsWith("image/")) {
    const img = h("img", { class: "preview", alt: f.name, title: `${f.name} · ${size(f.size)}` });
    void blobUrl(c, f).then((url) => {
      img.src = url;
    });
    return img;
  }
  return h(
    "a",
    {
      class: "file",
      href: "#",
      onclick: async (e: Event) => {
        e.preventDefault();
        const a = h("a", { href: await blobUrl(c, f), download: f.name });
        a.click();
      },
    },
    h("span", { class: "file-icon" }, "📄"),
    h("span", {}, h("strong", {}, f.name), h("span", { class: "muted" }, ` · ${size(f.size)}`)),
  );
}

async function uploadFiles(files: FileList | File[]): Promise<void> {
  const c = active ? chans.get(active) : undefined;
  if (!c) return;
  const space = await spaceOf(c);
  for (const file of Array.from(files)) {
    els.upload.hidden = false;
    els.upload.textContent = `Uploading ${file.name}…`;
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const { blob_id } = await space.putFile(bytes, {
        onProgress: (sent, total) => {
          els.upload.textContent = `Uploading ${file.name}… ${Math.round((sent / Math.max(1, total)) * 100)}%`;
        },
      });
      const ref: FileRef = { blob_id, name: file.name, size: bytes.length, mime: file.type };
      await space.sendMessage(JSON.stringify(ref), { type: "file" });
    } catch (e) {
      toast(e instanceof HeraldError ? `${file.name}: ${e.message}` : String(e));
    }
  }
  els.upload.hidden = true;
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

async function start(token: string): Promise<void> {
  const c = await Herald.connect({ url: location.origin, token, reconnect: true });
  localStorage.setItem(TOKEN_KEY, token);
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
        ),
        h("div", { class: "section" }, "Channels"),
        els.list,
        els.onlineTitle,
        els.online,
        h(
          "div",
          { class: "me" },
          h("div", { class: "avatar", style: `--h:${hue(me)}` }, initials(name)),
          h("div", { class: "who" }, h("strong", { id: "me-name" }, name), h("span", { class: "muted" }, `@${me}`)),
          h(
            "button",
            {
              class: "ghost",
              title: "Sign out",
              onclick: () => {
                localStorage.removeItem(TOKEN_KEY);
                client?.close();
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
          els.upload,
          h(
            "div",
            { class: "box" },
            h("button", { class: "ghost attach", id: "attach", title: "Attach files", onclick: () => els.file.click() }, "📎"),
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
      });
    }
  }
  for (const id of [...chans.keys()]) if (!list.some((s) => s.id === id)) chans.delete(id);
  renderList();
  syncRooms();
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
  let space: Space;
  try {
    space = await client.space.joinChannel(name);
  } catch (e) {
    if (e instanceof HeraldError && e.code === "channel_not_found") space = await client.space.createChannel(name);
    else {
      toast(e instanceof HeraldError ? e.message : String(e));
      return;
    }
  }
  await refreshChannels();
  const c = chans.get(space.id);
  if (c) c.space = space;
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
  replyTo = undefined;
  editing = undefined;
  renderContext();
  c.unread = 0;
  renderList();
  const space = await spaceOf(c);
  const members = await space.members().catch(() => []);
  for (const m of members) {
    c.names.set(m.user, m.name ?? m.user);
    if (m.user !== me) c.readers.set(m.user, m.last_read);
  }
  els.header.replaceChildren(
    h("h2", {}, h("span", { class: "hash" }, "#"), chanLabel(c.summary)),
    h("span", { class: "muted", id: "member-count" }, `${members.length} member${members.length === 1 ? "" : "s"}`),
    h("span", { class: "online-count", id: "online-count" }),
  );
  renderOnline();
  els.composer.disabled = false;
  els.composer.placeholder = `Message #${chanLabel(c.summary)}`;
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

async function loadOlder(): Promise<void> {
  const c = active ? chans.get(active) : undefined;
  if (!c || c.loading || !c.hasMore) return;
  c.loading = true;
  try {
    const space = await spaceOf(c);
    const oldest = c.messages[0];
    const page = await space.history(oldest ? { limit: PAGE, before: oldest.seq } : { limit: PAGE });
    const older = page.messages
      .map((m) => ({ ...m, reactions: m.reactions ?? [] }))
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

function renderMessages(c: Chan): void {
  const nodes: Node[] = [];
  if (c.hasMore) nodes.push(h("div", { class: "loading muted" }, c.loading ? "Loading…" : "Scroll up for older messages"));
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
    mine && m.type !== "file" ? h("button", { class: "ghost", title: "Edit", "data-action": "edit", onclick: () => startEdit(m) }, "✎") : null,
    mine ? h("button", { class: "ghost danger", title: "Delete", "data-action": "delete", onclick: () => void remove(c, m) }, "🗑") : null,
  );
  return h(
    "article",
    { class: `msg${grouped ? " grouped" : ""}${mine ? " mine" : ""}`, "data-id": m.id, "data-seq": String(m.seq) },
    grouped ? h("div", { class: "gutter muted" }, time(m.ts)) : h("div", { class: "avatar", style: `--h:${hue(m.author)}` }, initials(name)),
    h(
      "div",
      { class: "body" },
      m.reply_to
        ? h("div", { class: "quote" }, h("strong", {}, c.names.get(m.reply_to.author) ?? m.reply_to.author), " ", m.reply_to.content ?? h("em", {}, "deleted message"))
        : null,
      grouped ? null : h("div", { class: "meta" }, h("strong", { class: "author" }, name), h("span", { class: "muted" }, time(m.ts))),
      (() => {
        const f = parseFile(m);
        return f
          ? h("div", { class: "content attachment" }, renderFile(c, f))
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
  const c = active ? chans.get(active) : undefined;
  const text = els.composer.value.trim();
  if (!c || !text) return;
  const space = await spaceOf(c);
  els.composer.value = "";
  autosize();
  const target = editing;
  const parent = replyTo;
  cancelContext();
  typingSent = false;
  try {
    if (target) await space.editMessage(target.id, text);
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
    if (ch.loaded && !ch.messages.some((m) => m.id === e.message.id) && e.message.content !== "") {
      ch.messages.push({ ...e.message, reactions: [] });
    }
    const timer = ch.typing.get(e.message.author);
    if (timer) {
      clearTimeout(timer);
      ch.typing.delete(e.message.author);
      renderTyping();
    }
    if (e.channel === active) {
      const stick = nearBottom() || e.message.author === me;
      renderMessages(ch);
      if (stick) scrollToBottom();
      markRead(ch);
    } else if (e.message.author !== me) {
      ch.unread += 1;
      renderList();
    }
  });
  c.realtime.on("messageEdited", (e) => {
    const m = chans.get(e.channel)?.messages.find((x) => x.id === e.message_id);
    if (m) {
      m.content = e.content;
      m.edited_at = e.edited_at;
    }
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
    else if (e.name) ch.names.set(e.user, e.name);
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
    const mine = c?.messages.filter((m) => m.author === me && m.type !== "file").pop();
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
