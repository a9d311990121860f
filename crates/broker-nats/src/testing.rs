//! Test support: a `nats-server` of a test's own ([`PrivateNats`]), for tests that take NATS
//! down and bring it back under traffic (here and in other crates' tests). Nothing in
//! Herald's own code paths uses it.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a `nats-server` binary is looked for.
const BINARIES: [&str; 3] = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];

/// How long [`PrivateNats::up`] waits for the server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` child process on a free port of 127.0.0.1 that it keeps across
/// [`down`](PrivateNats::down) and [`up`](PrivateNats::up), so clients reconnect to the same
/// URL. Dropping it kills the server.
#[derive(Debug)]
pub struct PrivateNats {
    binary: &'static str,
    port: u16,
    child: Option<Child>,
}

impl PrivateNats {
    /// Starts a server on a free port; `None` when no `nats-server` binary is installed (a test
    /// skips, or fails when services are required).
    ///
    /// # Panics
    ///
    /// When the port cannot be had or the server does not come up, as [`up`](Self::up): for
    /// a test, that is its failure.
    #[allow(clippy::panic)]
    pub fn start() -> Option<PrivateNats> {
        let binary = BINARIES.into_iter().find(|p| std::path::Path::new(p).exists())?;
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => panic!("no free port for nats-server: {e}"),
        };
        let mut n = PrivateNats { binary, port, child: None };
        n.up();
        Some(n)
    }

    /// The `nats://` URL of the server.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would) and waits for it to exit. Nothing if it is down.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and waits until it listens; nothing if it is
    /// up. Blocks the calling thread for that wait (a few milliseconds; nats-server is
    /// another process, so nothing in the caller's runtime has to run meanwhile).
    ///
    /// # Panics
    ///
    /// When the server cannot be spawned or does not listen within 10 s.
    #[allow(clippy::panic)]
    pub fn up(&mut self) {
        if self.child.is_some() {
            return;
        }
        let child = Command::new(self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => self.child = Some(c),
            Err(e) => panic!("spawn {}: {e}", self.binary),
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            if Instant::now() >= deadline {
                panic!("nats-server on port {} did not start within {START_TIMEOUT:?}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.down();
    }
}
