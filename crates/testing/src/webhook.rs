//! [`WebhookReceiver`]: a webhook endpoint on `127.0.0.1` for tests, which answers each POST
//! with the status a test's plan picks, records every attempt, and lets a test wait (with a
//! timeout, never a sleep) until what it expects has arrived.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub json: serde_json::Value,
    /// `X-Herald-Signature`.
    pub signature: Option<String>,
    /// The status the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn id(&self) -> &str {
        self.json["id"].as_str().unwrap_or("")
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

type Plan = Box<dyn FnMut(&serde_json::Value) -> u16 + Send>;

struct Shared {
    log: Mutex<Vec<Received>>,
    plan: Mutex<Plan>,
    count: watch::Sender<usize>,
}

/// A webhook endpoint. Dropping it stops it.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver").field("addr", &self.addr).finish_non_exhaustive()
    }
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let status = {
        let mut plan = s.plan.lock().unwrap_or_else(|e| e.into_inner());
        (plan)(&json)
    };
    let signature = headers.get("x-herald-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let n = {
        let mut log = s.log.lock().unwrap_or_else(|e| e.into_inner());
        log.push(Received { body: body.to_vec(), json, signature, status });
        log.len()
    };
    s.count.send_replace(n);
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl WebhookReceiver {
    /// Listens on a free port; `plan` picks the status of each POST from its JSON body.
    pub async fn start(plan: impl FnMut(&serde_json::Value) -> u16 + Send + 'static) -> WebhookReceiver {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), plan).await
    }

    /// Listens on `addr` (a port a server already points at, to come up late).
    pub async fn start_on(
        addr: SocketAddr,
        plan: impl FnMut(&serde_json::Value) -> u16 + Send + 'static,
    ) -> WebhookReceiver {
        let listener =
            tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            plan: Mutex::new(Box::new(plan)),
            count: watch::channel(0).0,
        });
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give `--webhook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Replaces the plan.
    pub fn set_plan(&self, plan: impl FnMut(&serde_json::Value) -> u16 + Send + 'static) {
        *self.shared.plan.lock().unwrap_or_else(|e| e.into_inner()) = Box::new(plan);
    }

    /// Every POST so far, in arrival order.
    pub fn all(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `done` holds for what has arrived; panics after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let mut rx = self.shared.count.subscribe();
        let check = |_: &usize| done(&self.all());
        match tokio::time::timeout(timeout, rx.wait_for(check)).await {
            Ok(Ok(_)) => self.all(),
            _ => panic!(
                "webhook receiver: timed out; got {:#?}",
                self.all().iter().map(|r| (r.id().to_owned(), r.status)).collect::<Vec<_>>()
            ),
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
