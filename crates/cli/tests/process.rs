//! The `herald` binary as a process: `serve` with no configuration, `token`, config sources,
//! SIGTERM, and durability across SIGKILL.
#![allow(clippy::unwrap_used)]

use std::process::Command;

mod common;

use common::{BIN, Server, token};

async fn get(url: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap()
}

#[tokio::test]
async fn serve_with_no_configuration_creates_data_dir_and_drains_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    // Only the port differs from the defaults: 7700 may be taken on a shared machine.
    let mut server = Server::start(cwd.path(), &["--listen", "127.0.0.1:0"], &[]);
    let data = cwd.path().join("herald-data");
    assert!(data.join("herald.db").exists(), "SQLite database under ./herald-data");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("secret")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "secret must be private");
    }
    let health = reqwest::get(format!("{}/healthz", server.url())).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    // A token minted by `herald token` for the same data directory is accepted...
    let t = token(&data, "ada");
    let r = get(&format!("{}/v1/channels", server.url()), &t).await;
    assert_eq!(r.status(), 200);
    // ...and one for another data directory is not.
    let other = tempfile::tempdir().unwrap();
    let r = get(&format!("{}/v1/channels", server.url()), &token(other.path(), "ada")).await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    // WAL mode: the journal mode is stored in the database header (bytes 18-19 == 2).
    let header = std::fs::read(data.join("herald.db")).unwrap();
    assert_eq!((header[18], header[19]), (2, 2), "database must be in WAL mode");

    server.signal("-TERM");
    let status = server.wait_exit();
    assert!(status.success(), "SIGTERM must drain and exit 0, got {status:?}");
}

#[test]
fn token_rejects_bad_input_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["token", "--sub", "has space"],
        vec!["token", "--sub", "ada", "--grant", "superuser"],
        vec!["token", "--sub", "ada", "--kind", "robot"],
    ] {
        let out = Command::new(BIN).args(&args).arg("--data").arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("herald: "), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn serve_help_documents_every_option() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--data",
        "--config",
        "--durability",
        "--jwt-public-key",
        "--max-content-bytes",
        "--max-frame-bytes",
        "--max-blob-bytes",
        "--history-page-max",
        "--replay-cap",
        "--queue-frames",
        "--rate-per-sec",
        "--rate-burst",
        "--max-subscriptions",
        "--max-inflight",
        "--ping-interval-secs",
        "--max-batch",
        "--auth-timeout-secs",
        "--shutdown-grace-secs",
        "--tls-cert",
        "--tls-key",
        "--store",
        "--broker",
        "--pg-pool",
        "--pg-writers",
        "--nats-prefix",
        "--node-id",
        "--secret-file",
        "HERALD_SECRET",
        "--app-secret-file",
        "HERALD_APP_SECRET",
        "--webhook",
        "--webhook-events",
        "--webhook-retry-ms",
        "--webhook-max-backoff-ms",
        "--webhook-timeout-secs",
        "--webhook-concurrency",
        "--dm-ttl",
        "--dm-inbox-max",
        "--blob-dir",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }
    // A duration that is not one is refused before anything starts, naming the flag.
    let out = Command::new(BIN).args(["serve", "--dm-ttl", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--dm-ttl"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(help.contains("HERALD_LISTEN") && help.contains("HERALD_DATA"), "env vars are documented");
    // A NATS prefix that is not subject tokens is refused at start, before any connection.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--store", "postgres://postgres@127.0.0.1:1/none", "--broker", "nats://127.0.0.1:1"])
        .args(["--nats-prefix", "two words.>"])
        .env_remove("HERALD_LISTEN")
        .env_remove("HERALD_DATA")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prefix"), "{err}");
}

#[tokio::test]
async fn config_file_applies_unless_a_flag_or_env_var_overrides_it() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("d");
    let cfg = cwd.path().join("herald.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = {:?}\nmax_content_bytes = 10\nhistory_page_max = 7\n",
            data
        ),
    )
    .unwrap();
    // The env var beats the file for history_page_max; the file sets max_content_bytes.
    let server =
        Server::start(cwd.path(), &["--config", cfg.to_str().unwrap()], &[("HERALD_HISTORY_PAGE_MAX", "3")]);
    let t = token(&data, "ada");
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/channels", server.url()))
        .bearer_auth(&t)
        .json(&serde_json::json!({"name": "cfg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ch: serde_json::Value = r.json().await.unwrap();
    let id = ch["channel"]["id"].as_str().unwrap().to_owned();
    let r = client
        .post(format!("{}/v1/channels/{id}/messages", server.url()))
        .bearer_auth(&t)
        .json(&serde_json::json!({"content": "more than ten bytes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = get(&format!("{}/v1/channels/{id}/messages?limit=4", server.url()), &t).await;
    assert_eq!(r.status(), 400, "limit 4 is over the env var's 3");
    let r = get(&format!("{}/v1/channels/{id}/messages?limit=3", server.url()), &t).await;
    assert_eq!(r.status(), 200);

    // An unknown key is an error, not silently ignored.
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmax_contnet_bytes = 10\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_contnet_bytes"));
}

#[tokio::test]
async fn acknowledged_sends_survive_sigkill() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let mut server = Server::start(cwd.path(), &["--listen", "127.0.0.1:0", "--data", &data_s], &[]);
    let t = token(&data, "ada");
    let client = reqwest::Client::new();
    let ch: serde_json::Value = client
        .post(format!("{}/v1/channels", server.url()))
        .bearer_auth(&t)
        .json(&serde_json::json!({"name": "durable"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ch["channel"]["id"].as_str().unwrap().to_owned();

    // A burst of concurrent sends; keep the ids of those acknowledged (201).
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (client, url, t) =
            (client.clone(), format!("{}/v1/channels/{id}/messages", server.url()), t.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(t)
                .json(&serde_json::json!({"content": format!("m{i}")}))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 201 => {
                    let v: serde_json::Value = r.json().await.ok()?;
                    v["message"]["id"].as_str().map(str::to_owned)
                }
                _ => None,
            }
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            acked.push(id);
        }
    }
    assert_eq!(acked.len(), 200, "every send of the burst was acknowledged");
    // Right after the last acknowledgement: no drain, no checkpoint, no goodbye.
    server.signal("-KILL");
    let _ = server.wait_exit();
    drop(server);

    let server = Server::start(cwd.path(), &["--listen", "127.0.0.1:0", "--data", &data_s], &[]);
    let mut seen = std::collections::HashSet::new();
    let mut before: Option<u64> = None;
    loop {
        let q = before.map(|b| format!("&before={b}")).unwrap_or_default();
        let page: serde_json::Value =
            get(&format!("{}/v1/channels/{id}/messages?limit=100{q}", server.url()), &t)
                .await
                .json()
                .await
                .unwrap();
        let msgs = page["messages"].as_array().unwrap();
        for m in msgs {
            seen.insert(m["id"].as_str().unwrap().to_owned());
            before = m["seq"].as_u64();
        }
        if !page["has_more"].as_bool().unwrap() || msgs.is_empty() {
            break;
        }
    }
    let lost: Vec<_> = acked.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged messages lost after SIGKILL: {lost:?}");
}

/// Regression: two `herald serve` on one data directory ran side by side, each with its own
/// cache of channel heads, and corrupted each other's view. The second must refuse to start,
/// in one line, while the first keeps serving; once the first has stopped, a new one starts.
#[tokio::test]
async fn second_serve_on_one_data_directory_refuses_to_start() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("shared-data");
    let data_arg = data.to_str().unwrap();
    let mut first = Server::start(cwd.path(), &["--listen", "127.0.0.1:0", "--data", data_arg], &[]);

    let out = Command::new(BIN)
        .current_dir(cwd.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data", data_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the second server must exit 2: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("herald:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].contains("in use by another herald process"), "{stderr}");

    let health = reqwest::get(format!("{}/healthz", first.url())).await.unwrap();
    assert_eq!(health.status(), 200, "the first server keeps serving");
    first.signal("-TERM");
    assert!(first.wait_exit().success());

    let mut again = Server::start(cwd.path(), &["--listen", "127.0.0.1:0", "--data", data_arg], &[]);
    again.signal("-TERM");
    assert!(again.wait_exit().success());
}

/// Every node of a deployment verifies the same tokens: `HERALD_SECRET` (or `--secret-file`)
/// replaces the data directory's secret for `serve` and `token` alike, and a short one is
/// refused with one line.
#[tokio::test]
async fn one_provisioned_secret_signs_and_verifies_on_any_data_directory() {
    let secret = "provisioned-secret-0123456789abcdef01234567";
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = a.path().join("secret.txt");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let server =
        Server::start(a.path(), &["--listen", "127.0.0.1:0", "--data", "node"], &[("HERALD_SECRET", secret)]);
    // Minted through another data directory with the same secret from a file.
    let out = Command::new(BIN)
        .args(["token", "--sub", "ada", "--secret-file"])
        .arg(&file)
        .arg("--data")
        .arg(b.path())
        .env_remove("HERALD_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(get(&format!("{}/v1/channels", server.url()), &token).await.status(), 200);
    // A token of the data directory's own secret is not accepted by that node.
    let own = common::token(b.path(), "ada");
    assert_eq!(get(&format!("{}/v1/channels", server.url()), &own).await.status(), 401);

    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(b.path().join("short"))
        .env("HERALD_SECRET", "too short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("HERALD_SECRET") && err.contains("32"), "{err}");
    assert!(!err.contains("too short"), "the secret itself is never printed: {err}");
}
