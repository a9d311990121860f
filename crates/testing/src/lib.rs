//! Test fixtures, never a runtime dependency: [`TestServer`], a real Herald server on
//! `127.0.0.1:0` with a temporary data directory, over the embedded backends (SQLite and the
//! in-process broker), for the tests of the server, the SDK and the CLI. It speaks over real
//! sockets exactly like `herald serve`.

pub mod webhook;
pub use webhook::WebhookReceiver;

use herald_cli::backends::open_embedded;
use herald_server::auth::{Claims, mint_hs256, now_secs};
use herald_server::config::{DurabilityMode, ServeConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running inside the test process.
pub struct TestServer {
    addr: SocketAddr,
    config: ServeConfig,
    secret: Vec<u8>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    // Keeps the data directory alive (and removes it at the end) when the server owns it.
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts a server with default limits on a fresh temporary data directory.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting `tweak` adjust the config (limits, durability …).
    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut config = ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: dir.path().to_path_buf(),
            durability: DurabilityMode::Fsync,
            shutdown_grace_secs: 2,
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let mut s = Self::launch(config).await;
        s._dir = Some(dir);
        s
    }

    async fn launch(mut config: ServeConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .unwrap_or_else(|e| panic!("bind {}: {e}", config.listen));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        config.listen = addr;
        let secret = herald_server::auth::load_or_create_secret(&config.data)
            .unwrap_or_else(|e| panic!("secret: {e}"));
        let node = open_embedded(config.clone()).await.unwrap_or_else(|e| panic!("open node: {e:#}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(listener, async move {
            let _ = stopped.await;
        }));
        TestServer { addr, config, secret, stop: Some(stop), task: Some(task), _dir: None }
    }

    /// `http://127.0.0.1:PORT` (`https://` when the config has a TLS certificate).
    pub fn url(&self) -> String {
        let scheme = if self.config.tls_cert.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/v1/ws` (`wss://` with TLS).
    pub fn ws_url(&self) -> String {
        let scheme = if self.config.tls_cert.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/v1/ws", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data
    }

    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    /// A valid token for `sub` (ordinary grants, one hour).
    pub fn token(&self, sub: &str) -> String {
        self.token_with(sub, None, 3600)
    }

    /// A token with explicit grants and lifetime in seconds (negative: already expired).
    pub fn token_with(&self, sub: &str, grants: Option<Vec<String>>, ttl_secs: i64) -> String {
        let exp = (now_secs() as i64 + ttl_secs).max(1) as u64;
        let claims = Claims {
            sub: sub.to_owned(),
            name: Some(format!("{sub} (test)")),
            kind: None,
            exp,
            iat: Some(now_secs()),
            app: None,
            grants,
        };
        mint_hs256(&self.secret, &claims).unwrap_or_else(|e| panic!("mint: {e}"))
    }

    /// A token with the given claims, signed with this server's secret.
    pub fn token_for(&self, claims: &Claims) -> String {
        mint_hs256(&self.secret, claims).unwrap_or_else(|e| panic!("mint: {e}"))
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("server failed: {e:#}"),
                Err(e) => panic!("server task: {e}"),
            }
        }
    }

    /// Stops the server and starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let config = self.config.clone();
        let dir = self._dir.take();
        let mut s = Self::launch(config).await;
        s._dir = dir;
        *self = s;
    }

    /// The data directory path, owned.
    pub fn data_path(&self) -> PathBuf {
        self.config.data.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
