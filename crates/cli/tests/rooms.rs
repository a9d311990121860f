//! `herald room …` as processes against a `herald serve` child: listing participants, a direct
//! message with an attachment, a broadcast, and a 50 MiB stream to a deliberately slow reader
//! whose credit paces the writer while the server's memory stays flat.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Server, token};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn herald(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("HERALD_URL", server.url()).env("HERALD_TOKEN", token).output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn token_kind(data: &Path, sub: &str, kind: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--sub", sub, "--kind", kind, "--ttl", "1h", "--data"])
        .arg(data)
        .env_remove("HERALD_DATA")
        .output()
        .unwrap();
    ok(out).trim().to_owned()
}

/// A `herald room join` child and its stdout lines, parsed.
struct Joined {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Joined {
    fn start(server: &Server, token: &str, args: &[&str]) -> Joined {
        let mut child = Command::new(BIN)
            .args(["room", "join"])
            .args(args)
            .args(["--url", &server.url(), "--token", token])
            .env_remove("HERALD_URL")
            .env_remove("HERALD_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Joined { child, lines }
    }

    /// The next line matching `pred` (others are skipped), within [`WAIT`].
    fn next_where(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => {}
                Err(e) => panic!("no matching line from room join: {e}"),
            }
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn room_commands_and_a_50_mib_stream_paced_by_a_slow_reader() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data", &data_s, "--presence-interval-ms", "20"],
        &[],
    );
    let ada = token(&data, "ada");
    let bob = token_kind(&data, "bob", "agent");
    ok(herald(&server, &ada, &["channel", "create", "pipe", "--member", "bob"]));

    // A wrong --kind is refused before entering: the kind comes from the token.
    let out = herald(&server, &bob, &["room", "join", "--room", "pipe", "--kind", "service"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("herald token --kind service"));

    let saved = dir.path().join("saved");
    let saved_s = saved.to_str().unwrap().to_owned();
    // A slow reader: 4 ms after each chunk, a 256 KiB window.
    let joined = Joined::start(
        &server,
        &bob,
        &[
            "--room",
            "pipe",
            "--kind",
            "agent",
            "--accept-streams",
            &saved_s,
            "--stream-credit",
            "262144",
            "--chunk-delay-ms",
            "4",
        ],
    );
    let entered = joined.next_where(|v| v["event"] == "entered");
    let pid = entered["participant_id"].as_str().unwrap().to_owned();

    let list = ok(herald(&server, &ada, &["room", "messaging", "list", "--room", "pipe"]));
    let listed: Vec<Value> = list.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(
        (listed[0]["participant_id"].as_str(), listed[0]["kind"].as_str()),
        (Some(pid.as_str()), Some("agent"))
    );

    let attachment = dir.path().join("note.bin");
    std::fs::write(&attachment, vec![42u8; 10_000]).unwrap();
    ok(herald(
        &server,
        &ada,
        &[
            "room",
            "messaging",
            "send",
            "--room",
            "pipe",
            "--to-participant-id",
            &pid,
            "--type",
            "chat",
            "--data",
            r#"{"text":"Hey!"}"#,
            "--attachment",
            attachment.to_str().unwrap(),
        ],
    ));
    let m = joined.next_where(|v| v["event"] == "room_message");
    assert_eq!((m["type"].as_str(), m["message"]["text"].as_str()), (Some("chat"), Some("Hey!")));
    assert_eq!(m["attachment_bytes"], 10_000);
    assert_eq!(m["from"]["user"], "ada");
    ok(herald(
        &server,
        &ada,
        &["room", "messaging", "broadcast", "--room", "pipe", "--data", r#"{"text":"all"}"#],
    ));
    let b = joined.next_where(|v| v["event"] == "room_message");
    assert_eq!(b["message"]["text"], "all");

    // 50 MiB through a 256 KiB window to a reader slower than the writer.
    let file = dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..(50u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let server_pid = server.child.id();
    let before = rss_kib(server_pid);
    let started = Instant::now();
    let mut writer = Command::new(BIN)
        .args(["room", "stream", "--room", "pipe", "--to", &pid, "--header", r#"{"name":"big.bin"}"#])
        .arg(&file)
        .args(["--url", &server.url(), "--token", &ada])
        .env_remove("HERALD_URL")
        .env_remove("HERALD_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Sample the server's memory while the stream runs (a measurement, not a wait).
    let mut peak = before;
    let status = loop {
        peak = peak.max(rss_kib(server_pid));
        if let Some(s) = writer.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the stream took over 5 minutes");
        std::thread::sleep(Duration::from_millis(20));
    };
    let writer_secs = started.elapsed().as_secs_f64();
    assert!(status.success());
    let saved_line = joined.next_where(|v| v["event"] == "stream_saved");
    let reader_secs = started.elapsed().as_secs_f64();
    assert_eq!(saved_line["bytes"], 50u64 << 20);
    let got = std::fs::read(saved_line["path"].as_str().unwrap()).unwrap();
    assert!(got == bytes, "the stream arrives byte for byte");
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "50 MiB stream: writer {writer_secs:.2} s, reader {reader_secs:.2} s, server VmRSS {:.1} MiB before, peak growth {growth_mib:.1} MiB",
        before as f64 / 1024.0
    );
    assert!(growth_mib < 64.0, "server RSS grew by {growth_mib:.1} MiB");
    // Paced: the reader needs at least 800 chunks x 4 ms; the writer, held to a 256 KiB
    // window, cannot finish more than a few chunks before it.
    assert!(reader_secs >= 3.2, "the reader was not slow: {reader_secs:.2} s");
    assert!(
        writer_secs >= reader_secs - 1.0,
        "the writer ran ahead of its reader: {writer_secs:.2} s vs {reader_secs:.2} s"
    );
}

/// The room limits are flags with `HERALD_*` variables that `serve --help` explains, and TOML
/// keys: a limit from the file is the one the server enforces.
#[test]
fn room_limits_are_flags_variables_and_toml_keys() {
    let help = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = ok(help);
    for needle in [
        "--max-attachment-bytes",
        "HERALD_MAX_ATTACHMENT_BYTES",
        "--presence-interval-ms",
        "HERALD_PRESENCE_INTERVAL_MS",
        "--presence-list-max",
        "HERALD_PRESENCE_LIST_MAX",
    ] {
        assert!(help.contains(needle), "serve --help does not mention {needle}");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let toml = dir.path().join("herald.toml");
    std::fs::write(&toml, "max_attachment_bytes = 100\n").unwrap();
    let server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap(), "--config", toml.to_str().unwrap()],
        &[],
    );
    let ada = token(&data, "ada");
    ok(herald(&server, &ada, &["channel", "create", "limits"]));
    let file = dir.path().join("a.bin");
    let broadcast = |bytes: usize| {
        std::fs::write(&file, vec![1u8; bytes]).unwrap();
        herald(
            &server,
            &ada,
            &[
                "room",
                "messaging",
                "broadcast",
                "--room",
                "limits",
                "--data",
                "{}",
                "--attachment",
                file.to_str().unwrap(),
            ],
        )
    };
    ok(broadcast(100));
    let refused = broadcast(101);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("payload_too_large"), "{refused:?}");
}
