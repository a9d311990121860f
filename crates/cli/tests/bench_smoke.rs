//! `herald bench` against a real `herald serve`, both as processes: each mode runs briefly
//! and its `--json` figures say that everything sent arrived. Figures of speed are not
//! checked: a benchmark prints them, a test does not fail on them.
//!
//! The peers (NATS 4222, Mosquitto 1883, Redis 6379, the Socket.IO peer after `npm ci` in
//! bench/peers/socketio) are driven when present; a peer that is absent is skipped with a line
//! on stderr, unless `HERALD_BENCH_REQUIRE_PEERS=1`, which makes its absence a failure (CI).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A `herald serve` on a free port with its own data directory; killed on drop.
struct Server {
    child: Child,
    url: String,
    data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drops ANSI escape sequences, in case the log is coloured.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `listen=` address of the server's `herald serving` log line.
fn listen_addr(line: &str) -> Option<String> {
    let line = strip_ansi(line);
    if !line.contains("herald serving") {
        return None;
    }
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    Some(rest.split_whitespace().next()?.to_owned())
}

fn start_server() -> Server {
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(HERALD)
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-per-sec", "0", "--data"])
        .arg(data.path())
        .env("NO_COLOR", "1")
        .env("HERALD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    // Keep reading after the address is found, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = listen_addr(&line) {
                let _ = tx.send(addr);
            }
        }
    });
    // The guard first, so a server that never logs its address is still killed.
    let mut server = Server { child, url: String::new(), data };
    let addr = rx.recv_timeout(Duration::from_secs(15)).expect("the server logs `herald serving listen=…`");
    server.url = format!("http://{addr}");
    server
}

/// Runs `herald bench <args> --json` against the server and returns its JSON.
fn bench(server: &Server, args: &[&str]) -> Value {
    let out = Command::new(HERALD)
        .arg("bench")
        .args(args)
        .args(["--url", &server.url, "--json", "--pid", &server.child.id().to_string(), "--data"])
        .arg(server.data.path())
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "herald bench {args:?} failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

fn stop(mut server: Server) {
    let status = Command::new("kill").arg(server.child.id().to_string()).status().expect("run kill");
    assert!(status.success());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if server.child.try_wait().expect("wait for the server").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the server did not exit within 10 s of SIGTERM");
}

#[test]
fn every_bench_mode_runs_against_a_real_server_and_loses_nothing() {
    let server = start_server();

    let f = bench(&server, &["fanout", "--members", "20", "--rate", "50", "--duration", "2"]);
    assert_eq!(f["mode"], "fanout", "{f}");
    assert!(f["sent"].as_u64().is_some_and(|n| n > 0), "{f}");
    assert!(f["deliveries"].as_u64().is_some_and(|n| n > 0), "{f}");
    assert_eq!(f["deliveries"], f["deliveries_expected"], "{f}");
    assert_eq!(f["missing"], 0, "{f}");
    assert_eq!(f["send_errors"], 0, "{f}");
    assert!(f["latency_p99_ms"].as_f64().is_some(), "{f}");

    let a = bench(&server, &["append", "--conns", "4", "--messages", "200"]);
    assert_eq!(a["acked"], 200, "{a}");
    assert_eq!(a["errors"], 0, "{a}");
    assert_eq!(a["server_messages_in"], 200, "{a}");
    assert!(a["server_mean_batch"].as_f64().is_some_and(|b| b >= 1.0), "{a}");
    // Pipelined: every request of a window answered once, none lost or counted twice.
    let p = bench(&server, &["append", "--conns", "3", "--window", "8", "--messages", "301"]);
    assert_eq!(p["window"], 8, "{p}");
    assert_eq!(p["acked"], 301, "{p}");
    assert_eq!(p["errors"], 0, "{p}");
    assert_eq!(p["server_messages_in"], 301, "{p}");

    let i = bench(&server, &["idle", "--conns", "50"]);
    assert_eq!(i["connected"], 50, "{i}");
    assert_eq!(i["failed"], 0, "{i}");
    // Connections of the runs before may still be closing: at least ours are open.
    assert!(i["server_connections"].as_u64().is_some_and(|n| n >= 50), "{i}");
    assert!(i["server_kib_per_conn"].as_f64().is_some(), "{i}");

    stop(server);
}

/// Runs `herald bench <args>` with no server of the test's own; returns (success, stdout, stderr).
fn herald_bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(HERALD).arg("bench").args(args).output().expect("run herald bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cells of the first table row of `target` in `compare`'s output (rows are indented).
fn table_row<'a>(stdout: &'a str, target: &str) -> Option<Vec<&'a str>> {
    stdout
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&target))
}

#[test]
fn compare_starts_its_own_herald_prints_one_table_and_skips_an_absent_peer() {
    // Port 1 on loopback: nothing listens there, so nats must be skipped, not fatal.
    let (ok, stdout, stderr) = herald_bench(&[
        "compare",
        "--targets",
        "herald,herald-publish,nats",
        "--members",
        "20",
        "--rate",
        "50",
        "--duration",
        "1",
        "--drain",
        "5",
        "--pause",
        "0",
        "--nats-url",
        "nats://127.0.0.1:1",
    ]);
    assert!(ok, "compare failed: {stderr}\nstdout: {stdout}");
    assert!(stdout.contains("deliveries/s") && stdout.contains("p99 ms"), "{stdout}");
    for target in ["herald", "herald-publish"] {
        let row = table_row(&stdout, target).unwrap_or_else(|| panic!("no {target} row: {stdout}"));
        // target, deliveries/s, p50, p99, CPU µs, RSS KiB, bytes, missing, generator, others
        assert_eq!(row.len(), 10, "{row:?}");
        let num = |i: usize| row[i].parse::<f64>().unwrap_or_else(|_| panic!("{target} column {i}: {row:?}"));
        assert!(num(1) > 0.0, "{target} delivered nothing: {row:?}");
        assert!(num(2) > 0.0 && num(2) <= num(3), "{target} p50 ≤ p99: {row:?}");
        assert!(num(4) > 0.0, "{target} server CPU per delivery: {row:?}");
        // A delivery is at least its 64-byte payload plus framing.
        assert!(num(6) > 64.0, "{target} bytes per delivery: {row:?}");
        assert_eq!(row[7], "0", "{target} lost deliveries: {row:?}");
    }
    assert!(stdout.contains("ratio to herald"), "{stdout}");
    assert!(stdout.contains("skipped nats:") && stdout.contains("127.0.0.1:1"), "{stdout}");
    // The Herald servers it started are gone with it: their data directories too.
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs a small fan-out against one peer and checks that everything sent arrived; a peer
/// that is not there is skipped (or fails the test under `HERALD_BENCH_REQUIRE_PEERS=1`).
fn check_peer(target: &str, addr: &str) {
    let required = std::env::var("HERALD_BENCH_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    if target != "socketio" && std::net::TcpStream::connect(addr).is_err() {
        assert!(!required, "{target}: nothing listens on {addr}");
        eprintln!("skipped: {target}: nothing listens on {addr}");
        return;
    }
    let args = ["fanout", "--target", target, "--members", "20", "--rate", "50", "--duration", "1", "--json"];
    let (ok, stdout, stderr) = herald_bench(&args);
    if !ok
        && target == "socketio"
        && !required
        && (stderr.contains("npm ci") || stderr.contains("node is not"))
    {
        eprintln!("skipped: {target}: {stderr}");
        return;
    }
    assert!(ok, "herald bench fanout --target {target} failed: {stderr}\nstdout: {stdout}");
    let f: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    assert_eq!(f["target"], target, "{f}");
    assert!(f["sent"].as_u64().is_some_and(|n| n > 0), "{f}");
    assert!(f["deliveries"].as_u64().is_some_and(|n| n > 0), "{f}");
    assert_eq!(f["deliveries"], f["deliveries_expected"], "{f}");
    assert_eq!(f["missing"], 0, "{f}");
    assert!(f["latency_p99_ms"].as_f64().is_some(), "{f}");
    assert!(f["bytes_per_delivery"].as_f64().is_some_and(|b| b > 64.0), "{f}");
    // The server process was found through /proc: its CPU was read.
    assert!(f["server_process"].as_str().is_some(), "{f}");
    assert!(f["server_cpu_cores"].as_f64().is_some(), "{f}");
}

#[test]
fn fanout_drives_nats() {
    check_peer("nats", "127.0.0.1:4222");
}

#[test]
fn fanout_drives_redis() {
    check_peer("redis", "127.0.0.1:6379");
}

#[test]
fn fanout_drives_mqtt() {
    check_peer("mqtt", "127.0.0.1:1883");
}

#[test]
fn fanout_drives_socketio_started_and_stopped_by_the_bench() {
    check_peer("socketio", "");
}

#[test]
fn listen_address_is_found_in_plain_and_coloured_log_lines() {
    let plain = "2026-01-01T00:00:00Z  INFO herald_server: herald serving listen=127.0.0.1:4242 data=/x";
    assert_eq!(listen_addr(plain).as_deref(), Some("127.0.0.1:4242"));
    let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mherald_server\u{1b}[0m: herald serving \
                    \u{1b}[3mlisten\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:4243 \u{1b}[3mdata\u{1b}[0m";
    assert_eq!(listen_addr(coloured).as_deref(), Some("127.0.0.1:4243"));
    assert_eq!(listen_addr("something else listen=1.2.3.4:5"), None);
}

#[test]
fn bench_presence_sees_every_participant_and_counts_the_servers_frames() {
    let server = start_server();
    let p = bench(&server, &["presence", "--participants", "30"]);
    assert_eq!(p["mode"], "presence", "{p}");
    assert_eq!(p["participants"], 30, "{p}");
    assert_eq!(p["failed"], 0, "{p}");
    assert!(p["all_seen_secs"].as_f64().is_some(), "{p}");
    // Each participant hears of at most the 29 others (coalescing may fold some away).
    let room_frames = p["server_room_frames"].as_u64().unwrap_or(0);
    assert!(room_frames > 0 && room_frames <= 30 * 29, "{p}");
    stop(server);
}
