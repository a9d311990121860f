//! The E2EE commands of the `herald` binary against a real server process: devices, DMs,
//! encrypted channels read through a keeper process, files.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Server};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

struct Env {
    server: Server,
    data: PathBuf,
    dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server =
        Server::start(dir.path(), &["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()], &[]);
    std::fs::write(dir.path().join("pass"), "correct horse battery staple\n").unwrap();
    Env { server, data, dir }
}

impl Env {
    fn token(&self, sub: &str, grants: &[&str]) -> String {
        let mut c = Command::new(BIN);
        c.args(["token", "--sub", sub, "--ttl", "1h", "--data"]).arg(&self.data).env_remove("HERALD_DATA");
        for g in grants {
            c.args(["--grant", g]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn state(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("{user}.state"))
    }

    /// `herald <args>` as `user` with their state file.
    fn cmd(&self, user: &str, grants: &[&str], args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--state")
            .arg(self.state(user))
            .arg("--passphrase-file")
            .arg(self.dir.path().join("pass"))
            .env("HERALD_URL", self.server.url())
            .env("HERALD_TOKEN", self.token(user, grants))
            .env_remove("HERALD_STATE_PASSPHRASE");
        c
    }

    fn run(&self, user: &str, args: &[&str]) -> Output {
        self.cmd(user, &[], args).output().unwrap()
    }

    fn ok(&self, user: &str, args: &[&str]) -> String {
        let out = self.run(user, args);
        assert!(out.status.success(), "{user} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn follow(&self, user: &str, grants: &[&str], args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child =
            self.cmd(user, grants, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // stderr lines prefixed, so a test can wait for "ready".
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

fn next_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no matching line within {WAIT:?}"));
        if pred(&line) {
            return line;
        }
    }
}

fn grep(dir: &Path, needle: &str) -> bool {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn devices_and_dms_from_the_command_line() {
    let e = env();
    let line = e.ok("grace", &["device", "init", "--id", "grace-phone"]);
    let (id, fp) = line.trim().split_once('\t').unwrap();
    assert_eq!(id, "grace-phone");
    assert_eq!(fp.split(' ').count(), 16, "fingerprint in groups of four: {fp}");
    e.ok("ada", &["device", "init", "--id", "ada-laptop"]);
    // A second init would lose the device: refused.
    let again = e.run("ada", &["device", "init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let list = e.ok("ada", &["device", "list", "grace"]);
    assert!(list.contains("grace-phone") && list.contains(fp), "{list}");
    e.ok("ada", &["device", "verify", "grace", "grace-phone", fp]);
    assert!(e.ok("ada", &["device", "list", "grace"]).contains("verified"));

    // Grace is offline: the DMs wait in her inbox.
    e.ok("ada", &["dm", "grace", "the eagle lands at dawn"]);
    e.ok("ada", &["dm", "grace", "bring a torch"]);
    let (mut tail, lines) = e.follow("grace", &[], &["dm", "tail"]);
    assert!(
        next_line(&lines, |l| !l.starts_with("stderr:")).ends_with("ada/ada-laptop: the eagle lands at dawn")
    );
    assert!(next_line(&lines, |l| !l.starts_with("stderr:")).ends_with("ada/ada-laptop: bring a torch"));
    e.ok("ada", &["dm", "grace", "live one"]);
    assert!(next_line(&lines, |l| !l.starts_with("stderr:")).ends_with("live one"));
    tail.kill().unwrap();
    let _ = tail.wait();
    assert!(!grep(&e.data, "eagle lands"), "plaintext on the server's disk");
    assert!(!grep(e.dir.path(), "bring a torch"), "plaintext in a state file");

    // Revoked: gone from the directory.
    e.ok("grace", &["device", "revoke", "grace-phone"]);
    assert!(!e.ok("ada", &["device", "list", "grace"]).contains("grace-phone"));
    // A wrong passphrase is refused.
    std::fs::write(e.dir.path().join("pass"), "wrong\n").unwrap();
    let out = e.run("ada", &["dm", "grace", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn encrypted_channel_history_through_a_keeper_and_files() {
    let e = env();
    let (mut keeper, klines) = e.follow("keeper", &["keeper"], &["keeper"]);
    next_line(&klines, |l| l.contains("keeper device") && l.contains("ready"));
    e.ok("grace", &["device", "init", "--id", "grace-phone"]);
    e.ok("ada", &["device", "init", "--id", "ada-laptop"]);
    let id = e.ok("ada", &["channel", "create", "plans", "--encrypted"]).trim().to_owned();
    assert_eq!(id.len(), 36);
    e.ok("ada", &["send", "plans", "sealed one"]);
    e.ok("ada", &["send", "plans", "sealed two"]);
    let path = e.dir.path().join("notes.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let file_msg = e.ok("ada", &["file", "put", "plans", path.to_str().unwrap()]).trim().to_owned();

    // Ada is offline; Grace joins and the keeper admits her.
    e.ok("grace", &["channel", "join", "plans"]);
    next_line(&klines, |l| l.starts_with("admitted grace"));
    // The keeper said it sealed the keys: history opens.
    let history = e.ok("grace", &["history", "plans"]);
    let lines_h: Vec<&str> = history.lines().collect();
    assert_eq!(lines_h.len(), 3, "{history}");
    assert!(lines_h[0].ends_with("ada: sealed one"), "{history}");
    assert!(lines_h[1].ends_with("ada: sealed two"));
    assert!(lines_h[2].contains("[file notes.bin 300000 bytes]"), "{history}");
    let out = e.dir.path().join("back.bin");
    e.ok("grace", &["file", "get", "plans", &file_msg, out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    // Live, decrypted. (One process per state file: the tail holds Grace's.)
    let (mut tail, lines) = e.follow("grace", &[], &["tail", "plans"]);
    next_line(&lines, |l| l.contains("following plans"));
    let busy = e.run("grace", &["history", "plans"]);
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by another process"));
    e.ok("ada", &["send", "plans", "live sealed"]);
    assert!(next_line(&lines, |l| l.contains("live sealed")).ends_with("ada: live sealed"));
    // The server saw only ciphertext.
    let plain = Command::new(BIN)
        .args(["history", "plans", "--json"])
        .env("HERALD_URL", e.server.url())
        .env("HERALD_TOKEN", e.token("ada", &[]))
        .output()
        .unwrap();
    let raw = String::from_utf8(plain.stdout).unwrap();
    assert!(raw.contains("hm1.") && !raw.contains("sealed one"), "{raw}");
    assert!(!grep(&e.data, "sealed one"));
    tail.kill().unwrap();
    let _ = tail.wait();
    keeper.kill().unwrap();
    let _ = keeper.wait();
}
