//! Herald's HTTP and WebSocket front: the REST routes of PROTOCOL.md §6, the WebSocket gateway
//! of §4, token verification (§2), limits, `/healthz`, `/metrics`, and configuration.
//!
//! [`app`] builds the axum `Router` from an [`AppState`], so tests can drive it directly;
//! [`Node::open`] builds a node over the [`NodeBackends`] the binary picked (this crate names
//! no concrete store or broker) and [`serve`] runs it until SIGTERM, draining on the way out.
//!
//! This crate never sees plaintext of an encrypted channel (it does not depend on
//! `herald-crypto`) and never logs message content or tokens.
//!
//! # Layout
//!
//! - [`config`]: `ServeConfig`, flags / `HERALD_*` / TOML.
//! - [`auth`]: JWT verification and minting, the data directory's secret.
//! - [`app_secret`]: the app secrets of private channels and webhooks (§9).
//! - [`ws`]: the WebSocket gateway.
//! - [`rest`]: the REST handlers, each with its OpenAPI annotation.
//! - [`openapi`]: the OpenAPI 3.1 document of `GET /v1/openapi.json`, generated from them.
//! - [`limit`]: the per-user REST rate limit.
//! - [`error`]: `ApiError`, the one mapping to HTTP responses.
//! - [`metrics`]: Prometheus exposition.
//! - [`webhooks`]: the webhook dispatcher (§9): durable, ordered per channel, retried.
//! - [`tls`]: HTTPS/WSS with rustls when `--tls-cert`/`--tls-key` are given.
//! - [`web`]: the chat app (`web/dist`, embedded) at `/`, and `--dev`'s token page.

pub mod app_secret;
pub mod auth;
pub mod caps;
pub mod config;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod rest_keys;
pub mod rest_moderation;
pub mod tls;
pub mod web;
pub mod webhooks;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use config::{DurabilityMode, ServeConfig};
use herald_engine::{Backends, Broker, Engine, EngineConfig, SystemClock, UuidV7};
use herald_store::{DynBlobStore, DynStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, watch};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    verifier: auth::Verifier,
    config: ServeConfig,
    metrics: metrics::Metrics,
    rest_limiter: limit::RestLimiter,
    /// `GET /v1/openapi.json`, serialized once for this configuration.
    openapi_json: bytes::Bytes,
    shutdown: watch::Sender<bool>,
    live: AtomicUsize,
    all_gone: Notify,
    caps: caps::ConnCaps,
    /// The HS256 secret, kept only with `--dev` so `/dev/token` can mint tokens.
    dev_secret: std::sync::OnceLock<Vec<u8>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Counts a live WebSocket connection until dropped.
pub struct ConnGuard(AppState);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inner.all_gone.notify_waiters();
        }
    }
}

impl AppState {
    pub fn new(engine: Arc<Engine>, verifier: auth::Verifier, config: ServeConfig) -> AppState {
        let metrics = metrics::Metrics::new(engine.clone());
        let (shutdown, _) = watch::channel(false);
        let rest_limiter = limit::RestLimiter::new(config.rest_rate_per_sec, config.rest_rate_burst);
        let openapi_json = bytes::Bytes::from(openapi::document_json(&config));
        let caps = caps::ConnCaps::new(config.max_conns_per_user, config.max_conns_per_addr);
        AppState {
            inner: Arc::new(Inner {
                engine,
                verifier,
                config,
                metrics,
                rest_limiter,
                openapi_json,
                shutdown,
                live: AtomicUsize::new(0),
                all_gone: Notify::new(),
                caps,
                dev_secret: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    pub fn verifier(&self) -> &auth::Verifier {
        &self.inner.verifier
    }

    pub fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The per-user bucket every authenticated REST call draws from.
    pub fn rest_limiter(&self) -> &limit::RestLimiter {
        &self.inner.rest_limiter
    }

    /// The OpenAPI document this server serves.
    pub fn openapi_json(&self) -> &bytes::Bytes {
        &self.inner.openapi_json
    }

    pub fn caps(&self) -> &caps::ConnCaps {
        &self.inner.caps
    }

    /// Lets `/dev/token` mint tokens with `secret` (only used with `--dev`).
    pub fn set_dev_secret(&self, secret: Vec<u8>) {
        let _ = self.inner.dev_secret.set(secret);
    }

    /// The secret `/dev/token` signs with, when `--dev` gave it one.
    pub fn dev_secret(&self) -> Option<&[u8]> {
        self.inner.dev_secret.get().map(Vec::as_slice)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    fn track_connection(&self) -> ConnGuard {
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
    }

    /// Tells every WebSocket to close with 1012 and waits (up to `grace`) until they have.
    pub async fn drain(&self, grace: std::time::Duration) {
        // Stored even with no receiver: `send` keeps the old value when no connection is open,
        // and one that opens during the drain (the listener accepts until it ends) must see it.
        self.inner.shutdown.send_replace(true);
        let wait = async {
            loop {
                let notified = self.inner.all_gone.notified();
                if self.inner.live.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                open = self.inner.live.load(Ordering::Acquire),
                "connections still open after the grace period"
            );
        }
    }
}

/// Every HTTP route with its OpenAPI description. The router ([`app`]) and the document of
/// `GET /v1/openapi.json` ([`openapi::document`]) are both built from this one list, so the
/// document cannot describe a route that is not served, nor miss one that is. Each `routes!`
/// holds the handlers of one path.
pub fn api_routes(blob_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(rest::healthz))
        .routes(routes!(rest::metrics_text))
        .routes(routes!(rest::ws_upgrade))
        .routes(routes!(rest::openapi_json))
        .routes(routes!(rest::create_channel, rest::list_channels))
        .routes(routes!(rest::directory))
        .routes(routes!(rest::get_channel, rest::delete_channel))
        .routes(routes!(rest::join))
        .routes(routes!(rest::add_member))
        .routes(routes!(rest::remove_member))
        .routes(routes!(rest::send_message, rest::history))
        .routes(routes!(rest::edit_message, rest::delete_message))
        .routes(routes!(rest::log))
        .routes(routes!(rest::put_blob).layer(DefaultBodyLimit::max(blob_limit)))
        .routes(routes!(rest::get_blob))
        .routes(routes!(rest::publish))
        .routes(routes!(rest_moderation::disconnect_user))
        .routes(routes!(rest_moderation::kick))
        .routes(routes!(rest_moderation::ban))
        .routes(routes!(rest_moderation::unban))
        .routes(routes!(rest_keys::put_device, rest_keys::delete_device))
        .routes(routes!(rest_keys::user_devices))
        .routes(routes!(rest_keys::keepers))
        .routes(routes!(rest_keys::claim))
        .routes(routes!(rest_keys::dm_inbox))
        .routes(routes!(rest_keys::dm_ack))
        .routes(routes!(rest_keys::post_commit, rest_keys::commits))
        .routes(routes!(rest_keys::post_envelopes, rest_keys::envelopes))
}

/// The router: REST, WebSocket, health, metrics and the OpenAPI document.
pub fn app(state: AppState) -> Router {
    let frame_limit = state.config().max_frame_bytes;
    let blob_limit = state.config().max_blob_bytes;
    let (router, _doc) = api_routes(blob_limit).split_for_parts();
    let router = match (state.config().no_web, state.config().dev) {
        (true, false) => router,
        (true, true) => router.merge(web::dev_routes()),
        (false, false) => router.merge(web::app_routes()),
        (false, true) => router.merge(web::app_routes()).merge(web::dev_routes()),
    };
    router
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(DefaultBodyLimit::max(frame_limit))
        .with_state(state)
}

/// What a node runs on, picked by the binary (`herald serve` reads `--store` and `--broker`):
/// the store, opened with a [`BrokerSink`](herald_engine::BrokerSink) over `broker`, the blob
/// store, and the broker. This crate names no concrete backend.
pub struct NodeBackends {
    pub store: DynStore,
    pub blobs: DynBlobStore,
    pub broker: Arc<dyn Broker>,
}

impl std::fmt::Debug for NodeBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBackends").finish_non_exhaustive()
    }
}

/// A running node's parts: the engine over its backends, and the router state.
pub struct Node {
    pub state: AppState,
    /// Set when the node serves HTTPS/WSS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The webhook dispatcher, with `--webhook`.
    webhooks: Option<Arc<webhooks::Webhooks>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").finish_non_exhaustive()
    }
}

impl Node {
    /// Creates the data directory and its secret on first start (unless tokens are verified
    /// with `--jwt-public-key`), and builds the engine over `backends`.
    pub async fn open(config: ServeConfig, backends: NodeBackends) -> anyhow::Result<Node> {
        use anyhow::Context;
        std::fs::create_dir_all(&config.data)
            .with_context(|| format!("cannot create data directory {}", config.data.display()))?;
        // Checked before anything is opened, so a bad certificate fails the start at once.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        let mut dev_secret = None;
        let verifier = match &config.jwt_public_key {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                auth::Verifier::ed25519_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => {
                let secret = auth::resolve_secret(
                    config.secret.as_ref().map(|s| s.0.as_str()),
                    config.secret_file.as_deref(),
                    &config.data,
                )
                .with_context(|| {
                    format!(
                        "cannot read or create the token secret (data directory {})",
                        config.data.display()
                    )
                })?;
                let verifier = auth::Verifier::hs256(&secret);
                if config.dev {
                    dev_secret = Some(secret);
                }
                verifier
            }
        };
        let app_secrets = app_secret::resolve_all(
            config.app_secret.as_ref().map(|s| s.0.as_str()),
            config.app_secret_file.as_deref(),
            &config.data,
        )
        .with_context(|| {
            format!("cannot read or create the app secrets (data directory {})", config.data.display())
        })?;
        if config.dev && dev_secret.is_none() {
            anyhow::bail!(
                "--dev mints tokens with the HS256 secret: it cannot be used with --jwt-public-key"
            );
        }
        let engine_config = EngineConfig {
            app_secrets: app_secrets.clone(),
            max_content_bytes: config.max_content_bytes,
            history_page_max: config.history_page_max.max(1),
            replay_cap: config.replay_cap.max(1),
            max_subscriptions: config.max_subscriptions,
            max_blob_bytes: config.max_blob_bytes,
            queue_frames: config.queue_frames,
            // One largest room attachment must fit in a queue, or it would kick its addressee.
            queue_bytes: config
                .queue_bytes
                .max(config.max_attachment_bytes.saturating_add(config.max_frame_bytes)),
            rooms: herald_engine::RoomsConfig {
                presence_interval_ms: config.presence_interval_ms,
                presence_list_max: config.presence_list_max,
                max_attachment_bytes: config.max_attachment_bytes,
                max_message_bytes: config.max_content_bytes,
                ..herald_engine::RoomsConfig::default()
            },
            typing_interval_ms: config.typing_interval_ms,
            read_interval_ms: config.read_interval_ms,
            dm_ttl_ms: u64::try_from(config.dm_ttl.0.as_millis()).unwrap_or(u64::MAX),
            dm_inbox_max: config.dm_inbox_max,
            ..EngineConfig::default()
        };
        let NodeBackends { store, blobs, broker } = backends;
        let backends = Backends { store, blobs, broker, clock: Arc::new(SystemClock), ids: Arc::new(UuidV7) };
        let engine = Engine::start(backends, engine_config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the engine: {e}"))?;
        let webhooks = if config.webhooks.is_empty() {
            None
        } else {
            let node = match &config.node_id {
                Some(n) => n.clone(),
                None => webhook_node_id(&config.data)?,
            };
            let hooks_config = webhooks::WebhookConfig::from_serve(&config, node)?;
            Some(Arc::new(webhooks::Webhooks::start(&engine, hooks_config, app_secrets)?))
        };
        let state = AppState::new(engine, verifier, config);
        if let Some(w) = &webhooks {
            let w = w.clone();
            state.metrics().add_backend(Arc::new(move || w.figures()));
        }
        if let Some(secret) = dev_secret {
            tracing::warn!("--dev: /dev/token mints a token for any user who asks; never expose this server");
            state.set_dev_secret(secret);
        }
        Ok(Node { state, tls, webhooks })
    }

    /// Serves on `listener` until `stop` resolves, then drains: stops accepting, closes
    /// WebSockets with 1012, finishes commits in flight, and closes the store.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let grace = std::time::Duration::from_secs(state.config().shutdown_grace_secs);
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        // Expired DMs are erased periodically (§7, --dm-ttl); the task ends with `run`.
        let sweeper = AbortOnDrop(tokio::spawn(sweep_dms(state.clone())));
        let drain_state = state.clone();
        let signal = async move {
            stop.await;
            tracing::info!("shutting down: draining connections");
            drain_state.drain(grace).await;
            let _ = stopped_tx.send(());
        };
        match self.tls.clone() {
            Some(acceptor) => tls::serve(listener, acceptor, app(state.clone()), signal).await,
            None => {
                // The peer's address reaches the gateway (ConnectInfo), for the per-address cap.
                let service =
                    app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| no_delay(tcp));
                axum::serve(listener, service).with_graceful_shutdown(signal).await?
            }
        }
        let _ = stopped_rx.await;
        // The removals of the connections just closed go to the webhooks' presence outbox
        // before the store closes.
        if let Some(r) = state.engine().rooms().presence_recorder()
            && !r.flush(std::time::Duration::from_secs(5)).await
        {
            tracing::warn!(
                pending = r.pending(),
                "stopping with presence events not yet in the webhook outbox"
            );
        }
        if let Some(w) = &self.webhooks {
            w.stop().await;
        }
        drop(sweeper);
        state.engine().shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// This node's name in the webhook lease rows without `--node-id`: kept in the data
/// directory (`node-id`), so a restarted node takes its own leases back at once.
fn webhook_node_id(data: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = data.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => {
            let id = format!("node-{}", uuid_like());
            std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
    }
}

/// Aborts its task when dropped: a task owned by the scope that spawned it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Erases the DMs older than `--dm-ttl`, every tenth of it (at least every second, at most
/// every minute).
async fn sweep_dms(state: AppState) {
    let ttl = state.config().dm_ttl.0;
    let period = (ttl / 10).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.engine().expire_dms().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(erased = n, "expired direct messages erased"),
            Err(e) => tracing::warn!(error = %e, "could not erase expired direct messages"),
        }
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled, so a SIGTERM that arrives right after start-up still drains
/// instead of killing the process.
/// Turns Nagle's algorithm off on an accepted socket. A reply often follows its own event as a
/// second small write; with Nagle on, that write waits for the peer's delayed ACK (about 40 ms
/// on Linux), so every `message.send` took 40 ms to be answered on loopback.
pub(crate) fn no_delay(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
    }
}

/// `herald serve`: binds, serves `node` until SIGTERM, drains.
pub async fn serve(node: Node) -> anyhow::Result<()> {
    use anyhow::Context;
    let stop = shutdown_signal();
    let config = node.state.config().clone();
    let listen = config.listen;
    let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(listen),
        data = %config.data.display(),
        durability = ?config.durability,
        scheme,
        "herald serving"
    );
    tracing::info!("mint a token with: herald token --data {} --sub <user>", config.data.display());
    if config.durability == DurabilityMode::Relaxed {
        tracing::warn!("durability is RELAXED: acknowledged messages can be lost on power failure");
    }
    node.run(listener, stop).await
}
