//! Webhooks and app secrets through the `herald` binary: `herald secret show|rotate`, and a
//! webhook receiver that is down while the server is killed with SIGKILL and restarted, then
//! comes up: every event arrives, in order, signed with the secret `herald secret show` prints.
#![allow(clippy::unwrap_used)]

use herald_testing::WebhookReceiver;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{BIN, Server, token};

fn secret(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("secret").args(args).env_remove("HERALD_DATA").env_remove("HERALD_APP_SECRET");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn one_line(out: &std::process::Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    text.trim_end().to_owned()
}

#[test]
fn secret_show_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let a = one_line(&secret(&["show", "--data", d], &[]));
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(one_line(&secret(&["show", "--data", d, "--app", "default"], &[])), a, "stable");
    let other = one_line(&secret(&["show", "--data", d, "--app", "acme"], &[]));
    assert_ne!(other, a, "one secret per app");
    let token_secret = std::fs::read_to_string(dir.path().join("secret")).unwrap_or_default();
    assert_ne!(token_secret.trim(), a, "not the token secret");
    let b = one_line(&secret(&["rotate", "--data", d], &[]));
    assert_ne!(a, b);
    assert_eq!(one_line(&secret(&["show", "--data", d], &[])), b);
    assert_eq!(one_line(&secret(&["show", "--data", d, "--app", "acme"], &[])), other, "others unchanged");
    // From the environment: shown as is; rotation refused (it lives elsewhere).
    let env = [("HERALD_APP_SECRET", "0123456789abcdef0123456789abcdef-env")];
    assert_eq!(one_line(&secret(&["show", "--data", d], &env)), "0123456789abcdef0123456789abcdef-env");
    let out = secret(&["rotate", "--data", d], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("herald: "));
    let help = String::from_utf8(secret(&["rotate", "--help"], &[]).stdout).unwrap();
    assert!(help.contains("next start"), "rotate --help says when it takes effect: {help}");
}

#[tokio::test]
async fn webhook_events_survive_a_dead_receiver_and_a_sigkill() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    // A port nobody listens on yet: the receiver comes up there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data",
        &data_s,
        "--webhook",
        &hook,
        "--webhook-retry-ms",
        "20",
        "--webhook-max-backoff-ms",
        "200",
    ];
    let mut server = Server::start(cwd.path(), &args, &[]);
    let t = token(&data, "ada");
    let client = reqwest::Client::new();
    let id = common::channel_with_messages(&client, &[server.url()], &t, "kept", 10).await;
    // Killed while every delivery is failing: nothing was delivered, nothing may be lost.
    server.signal("-KILL");
    let _ = server.wait_exit();
    drop(server);
    let server = Server::start(cwd.path(), &args, &[]);
    for i in 10..15 {
        let r = client
            .post(format!("{}/v1/channels/{id}/messages", server.url()))
            .bearer_auth(&t)
            .json(&serde_json::json!({"content": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let receiver = WebhookReceiver::start_on(([127, 0, 0, 1], port).into(), |_| 200).await;
    // channel_created, member_joined and 15 messages: seqs 1..=17.
    let want: Vec<u64> = (1..=17).collect();
    let seqs_of = |all: &[herald_testing::webhook::Received]| -> Vec<u64> {
        let mut seen = Vec::new();
        for r in all.iter().filter(|r| r.accepted() && r.json["channel"] == id.as_str()) {
            let s = r.json["seq"].as_u64().unwrap();
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        seen
    };
    let all = receiver.wait_until(Duration::from_secs(30), |all| seqs_of(all).len() >= 17).await;
    assert_eq!(seqs_of(&all), want, "every event, first deliveries in seq order");
    let secret = one_line(&secret(&["show", "--data", &data_s], &[]));
    for r in &all {
        let sig = r.signature.as_deref().unwrap();
        assert!(herald_proto::private::verify_webhook(secret.as_bytes(), &r.body, sig));
    }
    let contents: Vec<String> = all
        .iter()
        .filter(|r| r.json["event"] == "message")
        .map(|r| r.json["data"]["message"]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(contents, (0..15).map(|i| format!("m{i}")).collect::<Vec<_>>());
    drop(server);
}
