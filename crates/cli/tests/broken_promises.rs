//! Issue 6 ("Broken promises") through the `herald` binary: `tail` of a quiet channel across a
//! server restart, and the client commands against `serve --tls-cert`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Server, token};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Every line a stream prints, as it prints it.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line containing `needle`, skipping others; fails after `WAIT`.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line containing {needle:?} within {WAIT:?}"),
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Regression: `herald tail quiet` on a channel with no traffic never printed the first
/// message posted after the server was killed and restarted.
#[test]
fn tail_of_a_quiet_channel_prints_the_first_message_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let mut server = Server::start(dir.path(), &["--listen", "127.0.0.1:0", "--data", &data_s], &[]);
    let addr = server.addr.clone();
    let url = server.url();
    let ada = token(&data, "ada");
    let herald = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("HERALD_URL", &url)
            .env("HERALD_TOKEN", &ada)
            .env_remove("HERALD_CA_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    herald(&["channel", "create", "quiet"]);

    let mut tail = Command::new(BIN)
        .args(["tail", "quiet"])
        .env("HERALD_URL", &url)
        .env("HERALD_TOKEN", &ada)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(tail.stdout.take().unwrap());
    let err = lines(tail.stderr.take().unwrap());
    let _tail = Killed(tail);
    wait_for(&err, "following quiet");

    server.signal("-KILL");
    let _ = server.wait_exit();
    drop(server);
    let _server = Server::start(dir.path(), &["--listen", &addr, "--data", &data_s], &[]);
    herald(&["send", "quiet", "first after the restart"]);
    let first = wait_for(&out, "restart");
    assert!(first.ends_with("ada: first after the restart"), "{first}");
    // Exactly once: the next line tail prints is the next message.
    herald(&["send", "quiet", "second"]);
    let next = out.recv_timeout(WAIT).unwrap();
    assert!(next.ends_with("ada: second"), "a duplicate or a stray line: {next}");
}

#[test]
fn client_commands_speak_https_with_ca_file_and_fail_clearly_without() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        &[("HERALD_TLS_CERT", cert.to_str().unwrap())],
    );
    let url = format!("https://{}", server.addr);
    let ada = token(&data, "ada");
    let herald = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut c = Command::new(BIN);
        c.args(args).env("HERALD_URL", &url).env("HERALD_TOKEN", &ada).env_remove("HERALD_CA_FILE");
        if let Some(ca) = ca {
            c.env("HERALD_CA_FILE", ca);
        }
        c.output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    ok(herald(&["channel", "--ca-file", cert.to_str().unwrap(), "create", "secure"], None));
    ok(herald(&["send", "secure", "over tls"], Some(&cert)));
    let history = ok(herald(&["history", "secure"], Some(&cert)));
    assert!(history.contains("ada: over tls"), "{history}");

    let out = herald(&["channel", "list"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("herald: ") && err.trim_end().lines().count() == 1, "{err}");
    assert!(err.contains("certificate"), "says why: {err}");
    let out = herald(&["channel", "list"], Some(&dir.path().join("missing.pem")));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-file"));
}

#[test]
fn serve_refuses_half_a_tls_configuration_and_unreadable_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let serve = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()])
            .args(args)
            .env_remove("HERALD_TLS_CERT")
            .env_remove("HERALD_TLS_KEY")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve(&["--tls-cert", cert.to_str().unwrap()]);
    assert!(err.contains("--tls-key"), "{err}");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key").unwrap();
    let err = serve(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert!(err.contains("cert.pem"), "names the file: {err}");
}
