//! The client commands of the `herald` binary against a real server process.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Server, token};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Env {
    server: Server,
    token: String,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server =
        Server::start(dir.path(), &["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()], &[]);
    let token = token(&data, "ada");
    Env { server, token, _dir: dir }
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).env("HERALD_URL", self.server.url()).env("HERALD_TOKEN", &self.token);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

fn assert_fails(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("herald: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn channel_send_history_list_delete() {
    let e = env();
    let id = e.ok(&["channel", "create", "project-x"]).trim().to_owned();
    assert_eq!(id.len(), 36, "prints the channel id: {id}");
    assert_eq!(e.ok(&["channel", "create", "project-x"]).trim(), id, "re-create is a harmless join");
    assert_eq!(e.ok(&["channel", "join", "project-x"]).trim(), id);
    e.ok(&["send", "project-x", "hello there"]);
    e.ok(&["send", &id, "second"]);
    let history = e.ok(&["history", "project-x", "--limit", "10"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(lines[0].ends_with("ada: hello there"), "oldest first: {history}");
    assert!(lines[1].ends_with("ada: second"));
    let json = e.ok(&["history", "project-x", "--json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["content"], "hello there");
    let list = e.ok(&["channel", "list"]);
    assert!(list.contains(&id) && list.contains("project-x"), "{list}");
    assert!(e.ok(&["channel", "directory"]).contains("project-x"));
    e.ok(&["channel", "delete", &id]);
    assert_fails(&e.run(&["history", "project-x"]), "channel_not_found");
}

#[test]
fn errors_are_one_line_with_exit_2() {
    let e = env();
    let no_token = e.cmd(&["channel", "list"]).env_remove("HERALD_TOKEN").output().unwrap();
    assert_fails(&no_token, "token");
    let bad_token = e.cmd(&["channel", "list"]).env("HERALD_TOKEN", "nope").output().unwrap();
    assert_fails(&bad_token, "unauthorized");
    assert_fails(&e.run(&["channel", "create", "Bad Name"]), "invalid_name");
    assert_fails(&e.run(&["publish", "s", "{not json"]), "not JSON");
    let unreachable = e.cmd(&["channel", "list"]).env("HERALD_URL", "http://127.0.0.1:1").output().unwrap();
    assert_fails(&unreachable, "cannot connect");
}

/// Spawns a long-running command and returns a receiver of its stdout lines.
fn follow(e: &Env, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = e.cmd(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn tail_follows_live_events_as_json_lines() {
    let e = env();
    e.ok(&["channel", "create", "live"]);
    let (mut tail, lines) = follow(&e, &["tail", "live", "--json"]);
    // Until tail is connected, a send may land before it listens: send until a line arrives.
    let mut got = None;
    for i in 0..50 {
        e.ok(&["send", "live", &format!("ping {i}")]);
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            got = Some(line);
            break;
        }
    }
    let line = got.expect("tail printed no event");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "message");
    assert!(v["message"]["content"].as_str().unwrap().starts_with("ping "));
    tail.kill().unwrap();
    let _ = tail.wait();
}

#[test]
fn subscribe_prints_publications() {
    let e = env();
    let (mut sub, lines) = follow(&e, &["subscribe", "presence:lobby"]);
    let mut got = None;
    for _ in 0..50 {
        e.ok(&["publish", "presence:lobby", r#"{"online":true}"#]);
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            got = Some(line);
            break;
        }
    }
    let v: serde_json::Value = serde_json::from_str(&got.expect("no publication printed")).unwrap();
    assert_eq!(v["subject"], "presence:lobby");
    assert_eq!(v["from"], "ada");
    assert_eq!(v["data"]["online"], true);
    sub.kill().unwrap();
    let _ = sub.wait();
}

#[test]
fn send_and_history_never_join_behind_the_users_back() {
    let e = env();
    e.ok(&["channel", "create", "quiet-ish"]);
    let grace = token(&e._dir.path().join("data"), "grace");
    let as_grace = |args: &[&str]| e.cmd(args).env("HERALD_TOKEN", &grace).output().unwrap();
    assert_fails(&as_grace(&["send", "quiet-ish", "hi"]), "forbidden");
    assert_fails(&as_grace(&["history", "quiet-ish"]), "forbidden");
    // Still not a member: grace's channel list is empty.
    let list = as_grace(&["channel", "list"]);
    assert!(list.status.success());
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");
    assert!(as_grace(&["channel", "join", "quiet-ish"]).status.success());
    assert!(as_grace(&["send", "quiet-ish", "now a member"]).status.success());
    assert!(e.ok(&["history", "quiet-ish"]).contains("grace: now a member"));
}

#[test]
fn verify_checks_the_whole_chain_and_catches_a_tampered_store() {
    let e = env();
    e.ok(&["channel", "create", "audited"]);
    e.ok(&["send", "audited", "first"]);
    let id = e.ok(&["send", "audited", "second"]).split('\t').next().unwrap().to_owned();
    e.ok(&["send", "audited", "third"]);
    // A hard delete leaves a tombstone that still verifies.
    let c = reqwest_delete(&e, &format!("/v1/channels/audited/messages/{id}"));
    assert_eq!(c, 204);
    let ok = e.ok(&["verify", "audited"]);
    assert!(ok.starts_with("ok: 6 entries verified (1 erased by deletes)"), "{ok}");

    // Someone with access to the server's disk rewrites history: verify must say so.
    let db = rusqlite::Connection::open(e._dir.path().join("data").join("herald.db")).unwrap();
    let n = db.execute("UPDATE entries SET content = 'forged' WHERE content = 'third'", []).unwrap();
    assert_eq!(n, 1);
    drop(db);
    assert_fails(&e.run(&["verify", "audited"]), "does not match");
}

fn reqwest_delete(e: &Env, path: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .delete(format!("{}{path}", e.server.url()))
            .bearer_auth(&e.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn channel_kick_ban_and_unban() {
    let e = env();
    e.ok(&["channel", "create", "moderated"]);
    let grace = token(&e._dir.path().join("data"), "grace");
    let as_grace = |args: &[&str]| e.cmd(args).env("HERALD_TOKEN", &grace).output().unwrap();
    assert!(as_grace(&["channel", "join", "moderated"]).status.success());
    assert_fails(&as_grace(&["channel", "kick", "moderated", "herald-admin"]), "forbidden");
    e.ok(&["channel", "kick", "moderated", "grace"]);
    assert_fails(&as_grace(&["send", "moderated", "hi"]), "forbidden");
    assert!(as_grace(&["channel", "join", "moderated"]).status.success(), "a kick is no ban");
    e.ok(&["channel", "ban", "moderated", "grace", "--until", "2999-01-01T00:00:00Z"]);
    assert_fails(&as_grace(&["channel", "join", "moderated"]), "banned");
    e.ok(&["channel", "unban", "moderated", "grace"]);
    assert!(as_grace(&["channel", "join", "moderated"]).status.success());
}
