//! Shared helpers of the CLI tests: the `herald` binary as a child process.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A `herald serve` child process and the address it reported.
pub struct Server {
    pub child: Child,
    pub addr: String,
    // Keeps draining stderr so the child never blocks on a full pipe.
    _stderr: std::thread::JoinHandle<()>,
}

impl Server {
    pub fn start(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").args(args).current_dir(cwd).stderr(Stdio::piped()).stdout(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.env_remove("HERALD_LISTEN").env_remove("HERALD_DATA");
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listen=").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                // Never leave a server behind when the test fails here.
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not report its address");
            }
        };
        Server { child, addr, _stderr: handle }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().unwrap();
        panic!("server did not exit within 15 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn token(data: &Path, sub: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--sub", sub, "--ttl", "1h", "--data"])
        .arg(data)
        .env_remove("HERALD_DATA")
        .output()
        .unwrap();
    assert!(out.status.success(), "token failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Creates channel `name` over REST on `urls[0]` and posts `m0` … `m{n-1}` to it, message `i`
/// through `urls[i % urls.len()]` (several nodes, or one); returns the channel id.
pub async fn channel_with_messages(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    name: &str,
    n: usize,
) -> String {
    let ch: serde_json::Value = http
        .post(format!("{}/v1/channels", urls[0]))
        .bearer_auth(token)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ch["channel"]["id"].as_str().unwrap().to_owned();
    for i in 0..n {
        let r = http
            .post(format!("{}/v1/channels/{id}/messages", urls[i % urls.len()]))
            .bearer_auth(token)
            .json(&serde_json::json!({ "content": format!("m{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    id
}

/// Whether something accepts TCP connections at `addr` (within 0.5 s).
pub fn listening(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)).is_ok()
}

/// Whether the machine's PostgreSQL and NATS answer; if not, a test skips (or fails in CI).
pub fn services() -> bool {
    let pg = std::env::var("HERALD_TEST_PG_ADDR").unwrap_or_else(|_| "127.0.0.1:5432".into());
    let nats = nats_addr();
    let missing: Vec<&str> = [(pg.as_str(), "PostgreSQL"), (nats.as_str(), "NATS")]
        .into_iter()
        .filter(|(addr, _)| !listening(addr))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not reachable", missing.join(" and "));
    if std::env::var("HERALD_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{why}, and HERALD_REQUIRE_SERVICES=1");
    }
    eprintln!("skipped: {why}");
    false
}

/// A NATS subject prefix of its own for one test's nodes (`--nats-prefix`): the tests of a
/// binary run at once on one NATS, and nodes sharing a prefix are one deployment.
pub fn nats_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("test_{}_{n}", std::process::id())
}

pub fn nats_addr() -> String {
    std::env::var("HERALD_TEST_NATS").unwrap_or_else(|_| "127.0.0.1:4222".into())
}

/// The token secret every node of a test [`Deployment`] is provisioned with (`HERALD_SECRET`).
pub const DEPLOYMENT_SECRET: &str = "deployment-test-secret-0123456789abcdef0123456789";
/// The app secret every node of a test [`Deployment`] shares (`HERALD_APP_SECRET`).
pub const DEPLOYMENT_APP_SECRET: &str = "deployment-app-secret-0123456789abcdef0123456789";

/// A token for `sub` (an hour) that every node of a [`Deployment`] accepts.
pub fn deployment_token(sub: &str) -> String {
    use herald_server::auth::{Claims, mint_hs256, now_secs};
    let claims = Claims {
        sub: sub.into(),
        name: None,
        kind: None,
        exp: now_secs() + 3600,
        iat: Some(now_secs()),
        app: None,
        grants: None,
    };
    mint_hs256(DEPLOYMENT_SECRET.as_bytes(), &claims).unwrap()
}

/// `herald serve` nodes of one deployment over a shared store and broker: each in a data
/// directory of its own under `dir`, all on a NATS subject prefix of the deployment's own,
/// provisioned with [`DEPLOYMENT_SECRET`] and [`DEPLOYMENT_APP_SECRET`].
pub struct Deployment {
    pub dir: tempfile::TempDir,
    store: String,
    broker: String,
    /// More `serve` arguments for every node.
    extra: Vec<String>,
    prefix: String,
}

impl Deployment {
    pub fn new(store: &str, broker: &str, extra: &[&str]) -> Deployment {
        Deployment {
            dir: tempfile::tempdir().unwrap(),
            store: store.into(),
            broker: broker.into(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            prefix: nats_prefix(),
        }
    }

    /// Starts node `i` (data directory `node<i>`) listening on `listen`.
    pub fn spawn(&self, i: usize, listen: &str) -> Server {
        let data = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let data = data.to_str().unwrap().to_owned();
        let mut args = vec![
            "--listen",
            listen,
            "--data",
            &data,
            "--store",
            &self.store,
            "--broker",
            &self.broker,
            "--nats-prefix",
            &self.prefix,
        ];
        args.extend(self.extra.iter().map(String::as_str));
        Server::start(
            self.dir.path(),
            &args,
            &[
                ("HERALD_SECRET", DEPLOYMENT_SECRET),
                ("HERALD_APP_SECRET", DEPLOYMENT_APP_SECRET),
                ("HERALD_LOG", "info"),
            ],
        )
    }
}
