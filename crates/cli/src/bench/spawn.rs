//! Servers the bench starts itself and always stops: a fresh `herald serve` per Herald run of
//! `compare` (so its memory figures start from a clean process), and the Socket.IO peer
//! (`node server.js`). Each is a guard whose `Drop` kills the process, so an error, a panic or
//! an interrupted run (the bench turns SIGINT/SIGTERM into an error) never leaves one behind;
//! the node server also exits by itself when its stdin, held by the bench, closes.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `herald serve` on a free loopback port with a data directory of its own (removed after).
#[derive(Debug)]
pub struct HeraldServer {
    child: Child,
    pub url: String,
    pub data: PathBuf,
}

impl HeraldServer {
    /// Starts this same binary as `herald serve --listen 127.0.0.1:0 --rate-per-sec 0`.
    pub fn start() -> anyhow::Result<HeraldServer> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let exe = std::env::current_exe().context("cannot find the herald binary itself")?;
        let data = std::env::temp_dir().join(format!(
            "herald-bench-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--rate-per-sec", "0", "--data"])
            .arg(&data)
            .env("NO_COLOR", "1")
            .env("HERALD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&data);
                return Err(e).context("cannot start herald serve");
            }
        };
        let stderr = child.stderr.take();
        // The guard first: from here on, any failure kills the process and removes its data.
        let mut server = HeraldServer { child, url: String::new(), data };
        let stderr = stderr.context("herald serve has no stderr pipe")?;
        let addr = first_line_match(stderr, listen_addr)
            .context("herald serve did not log `herald serving listen=…` in time")?;
        server.url = format!("http://{addr}");
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HeraldServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The Socket.IO peer: `node server.js` in `dir`, on a free loopback port.
#[derive(Debug)]
pub struct SocketIoServer {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub authority: String,
}

impl SocketIoServer {
    /// Starts the server; `Err` says, in a sentence, what is missing (node, `npm ci`).
    pub fn start(dir: &Path) -> anyhow::Result<SocketIoServer> {
        if !dir.join("server.js").is_file() {
            bail!("no Socket.IO peer at {} (expected server.js); pass --socketio-dir", dir.display());
        }
        if !dir.join("node_modules").join("socket.io").is_dir() {
            bail!("socket.io is not installed: run `npm ci` in {}", dir.display());
        }
        let node = Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            // Held open by this process: when it closes (we exit, however), node exits.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match node {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("node is not installed (the Socket.IO peer needs node 20 or later)")
            }
            Err(e) => return Err(e).context("cannot start node"),
        };
        let stdout = child.stdout.take();
        let mut server = SocketIoServer { child, authority: String::new() };
        let stdout = stdout.context("node has no stdout pipe")?;
        let port = first_line_match(stdout, |l| l.strip_prefix("listening ").map(|p| p.trim().to_owned()))
            .context("the Socket.IO peer did not print `listening <port>` in time")?;
        server.authority = format!("127.0.0.1:{port}");
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SocketIoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder of the Socket.IO peer: `dir` if given, else `bench/peers/socketio` under the
/// current directory, else the one in the source tree this binary was built from.
pub fn socketio_dir(dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_owned();
    }
    let here = PathBuf::from("bench/peers/socketio");
    if here.join("server.js").is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers/socketio")
}

/// Reads `pipe` line by line on a thread until `find` returns something (within
/// [`START_TIMEOUT`]); the thread keeps draining the pipe after, so the child never blocks.
fn first_line_match(
    pipe: impl std::io::Read + Send + 'static,
    find: fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = find(&line) {
                let _ = tx.send(found);
            }
        }
    });
    rx.recv_timeout(START_TIMEOUT).map_err(|_| anyhow::anyhow!("timed out after {START_TIMEOUT:?}"))
}

/// The `listen=` address of `herald serve`'s `herald serving` log line.
fn listen_addr(line: &str) -> Option<String> {
    if !line.contains("herald serving") {
        return None;
    }
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    Some(rest.split_whitespace().next()?.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn listen_address_is_read_from_the_serving_line() {
        let line = "2026-01-01T00:00:00Z  INFO herald_server: herald serving listen=127.0.0.1:4242 data=/x";
        assert_eq!(super::listen_addr(line).as_deref(), Some("127.0.0.1:4242"));
        assert_eq!(super::listen_addr("listen=1.2.3.4:5"), None);
    }
}
