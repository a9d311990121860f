//! Webhooks (PROTOCOL.md §9): every channel event an app wants, POSTed as JSON
//! `{id, app, event, channel, seq?, ts, data}` to each `--webhook` URL, signed
//! `X-Herald-Signature: sha256=<hex HMAC-SHA256(app secret, body)>`.
//!
//! # Guarantees, and how
//!
//! - **At least once, durable across restarts.** The channel log is the outbox: per (webhook,
//!   channel) the store keeps the highest `seq` delivered ([`HookStore`]), advanced only after
//!   a 2xx. Whatever a crash interrupts (between the commit and the POST, or between the POST
//!   and the cursor) is read again from the log and sent again, with the same `id`
//!   (`<channel>:<seq>`, or `<channel>:deleted`), so a receiver can drop repeats.
//!   `channel_deleted`, which leaves no log, is recorded by the deleting transaction itself.
//! - **In `seq` order per channel; channels independent.** One task at a time delivers a
//!   channel, event after event; a failing POST is retried with exponential backoff
//!   (`--webhook-retry-ms` doubling up to `--webhook-max-backoff-ms`) and holds back the later
//!   events of its channel only: up to `--webhook-concurrency` channels proceed meanwhile.
//! - **Several nodes.** Every node runs a dispatcher; a lease row per (webhook, channel) in the
//!   store lets one node at a time deliver a channel, renewed while it works. A node that
//!   dies leaves its lease to expire ([`LEASE_MS`]), then another node takes over from the
//!   durable cursor.
//!
//! - **Room presence** (`participant_added/updated/removed`), which keeps no log, goes through
//!   the store's presence outbox: the node hosting the participant writes each change
//!   ([`herald_engine::presence_outbox`]), each webhook delivers a room's rows in outbox order
//!   (one task per room, under a lease `presence:<channel>`) and acknowledges each; the first
//!   webhook's sweep prunes rows every webhook acknowledged. Ids are
//!   `<channel>:<participant>:added|updated:<k>|removed`.
//!
//! Work is found two ways: the broker's envelopes (every node sees every commit) mark a
//! channel at once, and a sweep every [`SWEEP`] asks the store for channels behind their
//! cursor (after a restart, for events another node committed, or that a lost lease left).
//! Nothing here logs a body, a secret or content: only URLs, channel ids, `seq`s and statuses.

use crate::metrics::BackendFigure;
use herald_engine::broker::{BrokerSubscriber, Envelope};
use herald_engine::events::event_of;
use herald_engine::{AppSecrets, Engine};
use herald_proto::frames::Event;
use herald_store::hooks::{DeletedChannel, HookStore};
use herald_store::{DynStore, StoredEntry};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The events a webhook may receive; all of them unless `--webhook-events` lists fewer.
pub const EVENTS: [&str; 10] = [
    "message",
    "message_edited",
    "message_deleted",
    "member_joined",
    "member_left",
    "channel_created",
    "channel_deleted",
    "participant_added",
    "participant_updated",
    "participant_removed",
];

/// The room presence events among [`EVENTS`].
pub const PRESENCE_EVENTS: [&str; 3] = ["participant_added", "participant_updated", "participant_removed"];

/// The lease name of a room's presence deliveries (distinct from its channel's log deliveries,
/// which proceed independently).
fn presence_lease(channel: &str) -> String {
    format!("presence:{channel}")
}

/// How long a node holds a channel's delivery lease without renewing it.
pub const LEASE_MS: i64 = 30_000;

/// How often the store is swept for channels behind their cursor.
pub const SWEEP: Duration = Duration::from_secs(2);

/// Log entries read per page.
const PAGE: u32 = 100;

/// What the dispatcher is configured with (from `ServeConfig`).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub events: HashSet<String>,
    pub retry: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    /// This node's name in the lease rows.
    pub node: String,
    /// Presence events queued toward the outbox at most (`--webhook-presence-queue`).
    pub presence_queue: usize,
}

impl WebhookConfig {
    /// The presence events wanted (none: presence is not recorded).
    pub fn presence_events(&self) -> HashSet<String> {
        PRESENCE_EVENTS.iter().filter(|e| self.events.contains(**e)).map(|e| (*e).to_owned()).collect()
    }

    /// Whether any presence event is wanted.
    pub fn wants_presence(&self) -> bool {
        PRESENCE_EVENTS.iter().any(|e| self.events.contains(*e))
    }
}

impl WebhookConfig {
    /// Checks the URLs (http or https) and the event names.
    pub fn from_serve(c: &crate::config::ServeConfig, node: String) -> anyhow::Result<WebhookConfig> {
        for u in &c.webhooks {
            let url = reqwest::Url::parse(u).map_err(|e| anyhow::anyhow!("--webhook {u:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                anyhow::bail!("--webhook {u:?}: only http:// and https:// URLs");
            }
        }
        let events: HashSet<String> = if c.webhook_events.is_empty() {
            EVENTS.iter().map(|e| e.to_string()).collect()
        } else {
            let mut set = HashSet::new();
            for e in &c.webhook_events {
                let e = e.trim();
                if !EVENTS.contains(&e) {
                    anyhow::bail!("--webhook-events: unknown event {e:?} (known: {})", EVENTS.join(", "));
                }
                set.insert(e.to_owned());
            }
            set
        };
        Ok(WebhookConfig {
            urls: c.webhooks.clone(),
            events,
            retry: Duration::from_millis(c.webhook_retry_ms.max(1)),
            max_backoff: Duration::from_millis(c.webhook_max_backoff_ms.max(c.webhook_retry_ms).max(1)),
            timeout: Duration::from_secs(c.webhook_timeout_secs.max(1)),
            concurrency: c.webhook_concurrency.max(1),
            node,
            presence_queue: c.webhook_presence_queue.max(1),
        })
    }
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// The running dispatcher: one task per webhook, and its channel tasks.
pub struct Webhooks {
    hooks: Vec<Arc<Hook>>,
    recorder: Option<Arc<herald_engine::presence_outbox::PresenceRecorder>>,
    stats: Arc<WebhookStats>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("hooks", &self.hooks.len()).finish_non_exhaustive()
    }
}

/// One webhook URL's state on this node.
struct Hook {
    url: String,
    store: DynStore,
    secrets: AppSecrets,
    http: reqwest::Client,
    config: Arc<WebhookConfig>,
    stats: Arc<WebhookStats>,
    state: Mutex<HookState>,
    wake: Notify,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

#[derive(Default)]
struct HookState {
    /// Channels with new events (channel → app), not yet handed to a task.
    dirty: BTreeMap<String, String>,
    /// Channels a task is delivering → whether new events arrived meanwhile.
    running: HashMap<String, bool>,
    /// A channel was deleted: look at the outbox of deleted channels.
    deleted_dirty: bool,
    deleted_running: bool,
    /// Channel → events known to wait (head − cursor), for `herald_webhook_pending`.
    pending: HashMap<String, u64>,
    /// Rooms with presence events to deliver (channel → app), not yet handed to a task.
    presence_dirty: BTreeMap<String, String>,
    /// Rooms a presence task is delivering → whether new events arrived meanwhile.
    presence_running: HashMap<String, bool>,
}

impl HookState {
    fn mark_presence(&mut self, app: &str, channel: &str) {
        if let Some(again) = self.presence_running.get_mut(channel) {
            *again = true;
        } else {
            self.presence_dirty.insert(channel.to_owned(), app.to_owned());
        }
    }
}

/// Marks channels as they commit, on every node (a [`BrokerSubscriber`]).
struct Watcher(Vec<Arc<Hook>>);

impl BrokerSubscriber for Watcher {
    fn receive(&self, envelope: &Envelope) {
        let Envelope::Channel(ev) = envelope else { return };
        if ev.seq.is_none() && !ev.deleted {
            return;
        }
        for h in &self.0 {
            {
                let mut st = h.state.lock();
                if ev.deleted {
                    st.deleted_dirty = true;
                } else if let Some(again) = st.running.get_mut(&ev.channel) {
                    *again = true;
                    continue;
                } else {
                    st.dirty.insert(ev.channel.clone(), ev.app.clone());
                }
            }
            h.wake.notify_one();
        }
    }
}

impl Webhooks {
    /// Starts a dispatcher per URL over the engine's store and broker. Fails if the store
    /// keeps no webhook state.
    pub fn start(
        engine: &Arc<Engine>,
        config: WebhookConfig,
        secrets: AppSecrets,
    ) -> anyhow::Result<Webhooks> {
        let store = engine.store().clone();
        if store.hooks().is_none() {
            anyhow::bail!("this store keeps no webhook state: webhooks need SQLite or PostgreSQL");
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTP client: {e}"))?;
        let config = Arc::new(config);
        let stats = Arc::new(WebhookStats::default());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let hooks: Vec<Arc<Hook>> = config
            .urls
            .iter()
            .map(|url| {
                Arc::new(Hook {
                    url: url.clone(),
                    store: store.clone(),
                    secrets: secrets.clone(),
                    http: http.clone(),
                    config: config.clone(),
                    stats: stats.clone(),
                    state: Mutex::new(HookState::default()),
                    wake: Notify::new(),
                    slots: Arc::new(Semaphore::new(config.concurrency)),
                    stop: stop.clone(),
                    tasks: tasks.clone(),
                })
            })
            .collect();
        engine.broker().subscribe(Arc::new(Watcher(hooks.clone())));
        let presence = config.presence_events();
        if !presence.is_empty() {
            let marked = hooks.clone();
            let on_written: herald_engine::presence_outbox::OnWritten = Box::new(move |rooms| {
                for h in &marked {
                    {
                        let mut st = h.state.lock();
                        for (app, channel) in rooms {
                            st.mark_presence(app, channel);
                        }
                    }
                    h.wake.notify_one();
                }
            });
            // The participants' node is the broker's id in a deployment of several nodes (as
            // other nodes name it when it dies), else this node's webhook name.
            let broker = engine.broker().clone();
            let node = broker.node_id().unwrap_or_else(|| config.node.clone());
            let recorder = herald_engine::presence_outbox::PresenceRecorder::start(
                store.clone(),
                Arc::new(herald_engine::SystemClock),
                node,
                presence,
                config.presence_queue,
                on_written,
            );
            engine.rooms().record_presence(recorder.clone());
            // Removals of participants that a node killed (this one's previous run among them)
            // left present.
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = recorder.close_dead_nodes(broker.as_ref()) => {}
                }
            });
        }
        let recorder = engine.rooms().presence_recorder().cloned();
        for h in &hooks {
            tracing::info!(url = h.url, node = config.node, "webhook delivery started");
            tasks.spawn(h.clone().run());
        }
        Ok(Webhooks { hooks, recorder, stats, stop, tasks })
    }

    /// The figures of `/metrics`.
    pub fn figures(&self) -> Vec<BackendFigure> {
        let pending: u64 = self.hooks.iter().map(|h| h.state.lock().pending.values().sum::<u64>()).sum();
        let mut figures = Vec::new();
        if let Some(r) = &self.recorder {
            figures.push(BackendFigure::gauge(
                "webhook_presence_queued",
                "Room presence writes queued toward the webhook outbox on this node (events, and which participants are present)",
                r.pending() as u64,
            ));
            figures.push(BackendFigure::counter(
                "webhook_presence_written",
                "Room presence events written to the webhook outbox by this node",
                r.stats.written.load(Ordering::Relaxed),
            ));
            figures.push(BackendFigure::counter(
                "webhook_presence_dropped",
                "Room presence events dropped: the queue toward the outbox was full",
                r.stats.dropped.load(Ordering::Relaxed),
            ));
        }
        figures.extend([
            BackendFigure::gauge(
                "webhook_pending",
                "Webhook events known to await delivery on this node (head minus cursor per channel)",
                pending,
            ),
            BackendFigure::counter(
                "webhook_delivered",
                "Webhook events delivered (answered 2xx)",
                self.stats.delivered.load(Ordering::Relaxed),
            ),
            BackendFigure::counter(
                "webhook_failed",
                "Webhook POSTs that failed (no answer, or not 2xx) and will be retried",
                self.stats.failed.load(Ordering::Relaxed),
            ),
        ]);
        figures
    }

    /// Stops every task: deliveries in flight are abandoned (their cursor is not advanced, so
    /// they are sent again after the next start).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Hook {
    fn hooks(&self) -> Result<&dyn HookStore, String> {
        self.store.hooks().ok_or_else(|| "the store keeps no webhook state".to_owned())
    }

    async fn run(self: Arc<Self>) {
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = sweep.tick() => self.sweep().await,
            }
            self.launch();
        }
    }

    /// Marks every channel the store says is behind, the outbox of deleted channels, and the
    /// rooms with presence events not delivered; the first webhook also prunes the presence
    /// outbox of what every webhook has delivered.
    async fn sweep(&self) {
        let Ok(hooks) = self.hooks() else { return };
        if self.config.wants_presence() {
            match hooks.presence_backlog(&self.url, 10_000).await {
                Ok(rooms) => {
                    let mut st = self.state.lock();
                    for (app, channel) in rooms {
                        st.mark_presence(&app, &channel);
                    }
                }
                Err(e) => {
                    tracing::warn!(url = self.url, error = %e, "webhook sweep: cannot read the presence outbox")
                }
            }
            if self.config.urls.first() == Some(&self.url)
                && let Err(e) = hooks.prune_presence(&self.config.urls).await
            {
                tracing::warn!(error = %e, "webhook sweep: cannot prune the presence outbox");
            }
        }
        match hooks.hook_backlog(&self.url, 10_000).await {
            Ok(backlog) => {
                let mut st = self.state.lock();
                for b in backlog {
                    if let Some(again) = st.running.get_mut(&b.channel) {
                        *again = true;
                    } else {
                        st.pending.insert(b.channel.clone(), b.head.saturating_sub(b.delivered));
                        st.dirty.insert(b.channel, b.app);
                    }
                }
                st.deleted_dirty = true;
            }
            Err(e) => tracing::warn!(url = self.url, error = %e, "webhook sweep: cannot read the backlog"),
        }
    }

    /// Starts a task for each marked channel that has none.
    fn launch(self: &Arc<Self>) {
        let (channels, deleted, rooms) = {
            let mut st = self.state.lock();
            let channels: Vec<(String, String)> = std::mem::take(&mut st.dirty).into_iter().collect();
            for (c, _) in &channels {
                st.running.insert(c.clone(), false);
            }
            let deleted = st.deleted_dirty && !st.deleted_running;
            if deleted {
                st.deleted_dirty = false;
                st.deleted_running = true;
            }
            let rooms: Vec<(String, String)> = std::mem::take(&mut st.presence_dirty).into_iter().collect();
            for (c, _) in &rooms {
                st.presence_running.insert(c.clone(), false);
            }
            (channels, deleted, rooms)
        };
        for (channel, app) in rooms {
            let h = self.clone();
            self.tasks.spawn(async move { h.presence_task(channel, app).await });
        }
        for (channel, app) in channels {
            let h = self.clone();
            self.tasks.spawn(async move { h.channel_task(channel, app).await });
        }
        if deleted {
            let h = self.clone();
            self.tasks.spawn(async move { h.deleted_task().await });
        }
    }

    async fn channel_task(self: Arc<Self>, channel: String, app: String) {
        let Ok(_slot) = self.slots.clone().acquire_owned().await else { return };
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if let Err(e) = self.drain(&channel, &app).await {
                // The store failed: the next sweep finds the channel behind again.
                tracing::warn!(url = self.url, channel, error = %e, "webhook delivery paused");
            }
            let mut st = self.state.lock();
            match st.running.get_mut(&channel) {
                Some(again) if *again => *again = false,
                _ => {
                    st.running.remove(&channel);
                    return;
                }
            }
        }
    }

    async fn presence_task(self: Arc<Self>, channel: String, app: String) {
        let Ok(_slot) = self.slots.clone().acquire_owned().await else { return };
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if let Err(e) = self.drain_presence(&channel, &app).await {
                // The store failed: the next sweep finds the room's events again.
                tracing::warn!(url = self.url, channel, error = %e, "webhook presence delivery paused");
            }
            let mut st = self.state.lock();
            match st.presence_running.get_mut(&channel) {
                Some(again) if *again => *again = false,
                _ => {
                    st.presence_running.remove(&channel);
                    return;
                }
            }
        }
    }

    /// Delivers every presence event of the room `channel` this webhook has not acknowledged,
    /// in outbox order.
    async fn drain_presence(&self, channel: &str, app: &str) -> Result<(), String> {
        let hooks = self.hooks()?;
        let lease_name = presence_lease(channel);
        let Some(mut lease) = self.claim(&lease_name).await? else {
            // Another node delivers this room's presence; the sweep looks again later.
            return Ok(());
        };
        loop {
            let rows = hooks.hook_presence(&self.url, channel, PAGE).await.map_err(|e| e.to_string())?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in rows {
                let e = &row.event;
                if self.config.events.contains(&e.event) {
                    let data =
                        serde_json::from_str::<serde_json::Value>(&e.data).unwrap_or(serde_json::Value::Null);
                    let mut body = serde_json::Map::new();
                    body.insert("app".into(), e.app.clone().into());
                    body.insert("event".into(), e.event.clone().into());
                    body.insert("channel".into(), e.channel.clone().into());
                    body.insert("ts".into(), herald_proto::time::format_ms(e.ts_ms).into());
                    body.insert("data".into(), data);
                    let app = if e.app.is_empty() { app } else { e.app.as_str() };
                    match self.deliver_leased(app, &lease_name, &e.key, body, &mut lease).await {
                        Delivery::Done => {}
                        Delivery::Stopped | Delivery::LeaseLost => return Ok(()),
                    }
                }
                hooks.ack_hook_presence(&self.url, row.n).await.map_err(|e| e.to_string())?;
            }
        }
    }

    /// Takes or renews this node's lease of the channel.
    async fn claim(&self, channel: &str) -> Result<Option<i64>, String> {
        let now = now_ms();
        let until = now + LEASE_MS;
        let held = self
            .hooks()?
            .claim_hook(&self.url, channel, &self.config.node, now, until)
            .await
            .map_err(|e| e.to_string())?;
        Ok(held.then_some(until))
    }

    /// Delivers every event of `channel` past the cursor, in order.
    async fn drain(&self, channel: &str, app: &str) -> Result<(), String> {
        let hooks = self.hooks()?;
        let Some(mut lease) = self.claim(channel).await? else {
            // Another node delivers this channel; the sweep looks again later.
            self.state.lock().pending.remove(channel);
            return Ok(());
        };
        let mut cursor = hooks.hook_cursor(&self.url, channel).await.map_err(|e| e.to_string())?;
        loop {
            let (entries, _) = self.store.log(channel, cursor, PAGE).await.map_err(|e| e.to_string())?;
            let head = self.store.head_seq(channel).await.map_err(|e| e.to_string())?;
            if entries.is_empty() {
                self.state.lock().pending.remove(channel);
                return Ok(());
            }
            self.state.lock().pending.insert(channel.to_owned(), head.saturating_sub(cursor));
            for e in &entries {
                let (name, body) = log_body(app, e);
                if self.config.events.contains(&name) {
                    let id = format!("{channel}:{}", e.seq);
                    match self.deliver(app, channel, &id, body, &mut lease).await {
                        Delivery::Done => {}
                        Delivery::Stopped | Delivery::LeaseLost => return Ok(()),
                    }
                }
                hooks.set_hook_cursor(&self.url, channel, e.seq).await.map_err(|e| e.to_string())?;
                cursor = e.seq;
                if let Some(p) = self.state.lock().pending.get_mut(channel) {
                    *p = p.saturating_sub(1);
                }
            }
        }
    }

    /// Delivers `channel_deleted` of every deleted channel not yet acknowledged; a channel
    /// whose log events are still being delivered waits for the next sweep, so its
    /// `channel_deleted` comes after them.
    async fn deleted_task(self: Arc<Self>) {
        let r = async {
            let hooks = self.hooks()?;
            let list = hooks.hook_deleted(&self.url, 1000).await.map_err(|e| e.to_string())?;
            for d in list {
                if self.state.lock().running.contains_key(&d.channel) {
                    continue;
                }
                if self.config.events.contains("channel_deleted") {
                    let Some(mut lease) = self.claim(&d.channel).await? else { continue };
                    let id = format!("{}:deleted", d.channel);
                    match self.deliver(&d.app, &d.channel, &id, deleted_body(&d), &mut lease).await {
                        Delivery::Done => {}
                        Delivery::Stopped => return Ok(()),
                        Delivery::LeaseLost => continue,
                    }
                }
                hooks.ack_hook_deleted(&self.url, &d.channel).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        };
        if let Err(e) = r.await {
            tracing::warn!(url = self.url, error = %e, "webhook delivery of deleted channels paused");
        }
        self.state.lock().deleted_running = false;
    }

    /// POSTs one event until a 2xx, backing off between attempts, under the channel's lease.
    async fn deliver(
        &self,
        app: &str,
        channel: &str,
        id: &str,
        body: serde_json::Map<String, serde_json::Value>,
        lease: &mut i64,
    ) -> Delivery {
        self.deliver_leased(app, channel, id, body, lease).await
    }

    /// POSTs one event until a 2xx, backing off between attempts, renewing the lease named
    /// `channel` (a channel id, or a room's [`presence_lease`]).
    async fn deliver_leased(
        &self,
        app: &str,
        channel: &str,
        id: &str,
        mut body: serde_json::Map<String, serde_json::Value>,
        lease: &mut i64,
    ) -> Delivery {
        body.insert("id".into(), id.into());
        let bytes = match serde_json::to_vec(&body) {
            Ok(b) => b,
            // A map of JSON values always serializes.
            Err(_) => return Delivery::Done,
        };
        let signature = self.secrets.get(app).map(|s| herald_proto::private::sign_webhook(s, &bytes));
        if signature.is_none() {
            tracing::warn!(url = self.url, app, "no app secret for this app: webhook sent unsigned");
        }
        let mut wait = self.config.retry;
        loop {
            if self.stop.is_cancelled() {
                return Delivery::Stopped;
            }
            // Renew the lease when half of it is gone, so no other node starts on the channel.
            if *lease - now_ms() < LEASE_MS / 2 {
                match self.claim(channel).await {
                    Ok(Some(until)) => *lease = until,
                    Ok(None) => return Delivery::LeaseLost,
                    Err(e) => {
                        tracing::warn!(url = self.url, channel, error = %e, "webhook lease renewal failed")
                    }
                }
            }
            let mut req = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("x-herald-id", id)
                .body(bytes.clone());
            if let Some(s) = &signature {
                req = req.header("x-herald-signature", s);
            }
            let outcome = tokio::select! {
                _ = self.stop.cancelled() => return Delivery::Stopped,
                r = req.send() => r,
            };
            match outcome {
                Ok(resp) if resp.status().is_success() => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return Delivery::Done;
                }
                Ok(resp) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        url = self.url,
                        channel,
                        id,
                        status = resp.status().as_u16(),
                        retry_in_ms = wait.as_millis() as u64,
                        "webhook refused; retrying"
                    );
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = self.url, channel, id, error = %without_url(&e), retry_in_ms = wait.as_millis() as u64, "webhook unreachable; retrying");
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Delivery::Stopped,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(self.config.max_backoff);
        }
    }
}

enum Delivery {
    Done,
    Stopped,
    LeaseLost,
}

/// reqwest's error text without the URL (which may carry credentials in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find(" for url (") {
        e.truncate(i);
    }
    e
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The body of a log event (without its `id`), and the event's name.
fn log_body(app: &str, e: &StoredEntry) -> (String, serde_json::Map<String, serde_json::Value>) {
    let data = event_of(e, None).to_full_json();
    let name = data.get("event").and_then(|v| v.as_str()).unwrap_or(e.kind.as_str()).to_owned();
    let mut body = serde_json::Map::new();
    body.insert("app".into(), app.into());
    body.insert("event".into(), name.clone().into());
    body.insert("channel".into(), e.channel_id.clone().into());
    body.insert("seq".into(), e.seq.into());
    body.insert("ts".into(), herald_proto::time::format_ms(e.ts_ms).into());
    body.insert("data".into(), data);
    (name, body)
}

fn deleted_body(d: &DeletedChannel) -> serde_json::Map<String, serde_json::Value> {
    let event =
        Event::ChannelDeleted { channel: d.channel.clone(), name: d.name.clone(), title: d.title.clone() };
    let mut body = serde_json::Map::new();
    body.insert("app".into(), d.app.clone().into());
    body.insert("event".into(), "channel_deleted".into());
    body.insert("channel".into(), d.channel.clone().into());
    body.insert("ts".into(), herald_proto::time::format_ms(d.ts_ms).into());
    body.insert("data".into(), serde_json::to_value(event).unwrap_or(serde_json::Value::Null));
    body
}
