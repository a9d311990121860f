//! Room presence webhooks (PROTOCOL.md §9, docs §K.3) through the `herald` binary:
//! `participant_added`, `participant_updated`, `participant_removed` POSTed once per id, in
//! order per participant, signed like every other event; a receiver that is down while the
//! server is killed with SIGKILL and restarted still gets them.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Server, token};
use herald_client::Client;
use herald_testing::WebhookReceiver;
use herald_testing::webhook::Received;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn herald(server: &Server, token: &str, args: &[&str]) {
    let out = Command::new(BIN)
        .args(args)
        .env("HERALD_URL", server.url())
        .env("HERALD_TOKEN", token)
        .output()
        .unwrap();
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn app_secret(data: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["secret", "show", "--data"])
        .arg(data)
        .env_remove("HERALD_DATA")
        .env_remove("HERALD_APP_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn attrs(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The first accepted delivery of each id, in arrival order.
fn first_accepted(all: &[Received]) -> Vec<Received> {
    let mut seen = std::collections::HashSet::new();
    all.iter().filter(|r| r.accepted() && seen.insert(r.id().to_owned())).cloned().collect()
}

/// The events (name, attributes' `v`) of one participant, in the order first accepted.
fn story(all: &[Received], pid: &str) -> Vec<(String, Value)> {
    first_accepted(all)
        .iter()
        .filter(|r| r.json["data"]["participant"]["participant_id"] == pid)
        .map(|r| {
            (
                r.json["event"].as_str().unwrap().to_owned(),
                r.json["data"]["participant"]["attributes"]["v"].clone(),
            )
        })
        .collect()
}

/// A metric's value from `/metrics`, polled until `done` holds (or [`WAIT`] passes).
async fn metric_until(http: &reqwest::Client, url: &str, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        let v = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if done(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A receiver that fails the first two POSTs: every presence event arrives, each id accepted
/// once, in order per participant (added, updated with the latest attributes, removed), for
/// a leave and for a closed connection, signed with the app secret, in the §9 envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_the_webhook_once_per_id_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let failures = Arc::new(AtomicUsize::new(0));
    let f = failures.clone();
    let receiver =
        WebhookReceiver::start(move |_| if f.fetch_add(1, Ordering::SeqCst) < 2 { 500 } else { 200 }).await;
    let hook = receiver.url();
    let server = Server::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data_s,
            "--webhook",
            &hook,
            "--webhook-events",
            "participant_added,participant_updated,participant_removed",
            "--webhook-retry-ms",
            "20",
            "--webhook-max-backoff-ms",
            "100",
        ],
        &[],
    );
    let (ada_t, bob_t) = (token(&data, "ada"), token(&data, "bob"));
    herald(&server, &ada_t, &["channel", "create", "lobby", "--member", "bob"]);
    let ws = format!("ws://{}", server.addr);
    let ada = Client::connect(&ws, &ada_t).await.unwrap();
    let bob = Client::connect(&ws, &bob_t).await.unwrap();
    let a = ada.room("lobby").enter(attrs(json!({"v": 1}))).await.unwrap();
    let b = bob.room("lobby").enter(attrs(json!({"v": 1}))).await.unwrap();
    bob.room("lobby").update(attrs(json!({"v": 2}))).await.unwrap();
    bob.room("lobby").update(attrs(json!({"v": 3}))).await.unwrap();
    bob.room("lobby").leave().await.unwrap();
    // Ada's participant goes with her connection.
    ada.close().await;
    let (pa, pb) = (a.participant_id.clone(), b.participant_id.clone());
    let all = receiver
        .wait_until(WAIT, |all| {
            let f = first_accepted(all);
            let removed = |p: &str| {
                f.iter().any(|r| {
                    r.json["event"] == "participant_removed"
                        && r.json["data"]["participant"]["participant_id"] == p
                })
            };
            removed(&pa) && removed(&pb)
        })
        .await;
    assert!(failures.load(Ordering::SeqCst) >= 3, "the first two POSTs failed and were retried");
    let bob_story = story(&all, &pb);
    assert_eq!(bob_story.first().map(|e| e.0.as_str()), Some("participant_added"), "{bob_story:?}");
    assert_eq!(bob_story.last().map(|e| e.0.as_str()), Some("participant_removed"), "{bob_story:?}");
    let updates: Vec<&Value> =
        bob_story.iter().filter(|e| e.0 == "participant_updated").map(|e| &e.1).collect();
    assert!(
        !updates.is_empty() && updates.len() <= 2,
        "two updates, possibly coalesced into one: {bob_story:?}"
    );
    assert_eq!(updates.last().copied(), Some(&json!(3)), "the latest attributes last");
    assert_eq!(
        story(&all, &pa).iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        vec!["participant_added", "participant_removed"],
        "a closed connection's participant is removed"
    );
    // Each id accepted exactly once; ids are stable and name the room and participant.
    let mut accepted: HashMap<String, usize> = HashMap::new();
    for r in all.iter().filter(|r| r.accepted()) {
        *accepted.entry(r.id().to_owned()).or_default() += 1;
    }
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    let channel = all[0].json["channel"].as_str().unwrap().to_owned();
    assert!(accepted.contains_key(&format!("{channel}:{pb}:added")), "{accepted:?}");
    assert!(accepted.contains_key(&format!("{channel}:{pb}:removed")), "{accepted:?}");
    // The envelope of §9, signed like the others.
    let secret = app_secret(&data);
    for r in &all {
        let obj = r.json.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, vec!["app", "channel", "data", "event", "id", "ts"], "{obj:?}");
        assert_eq!(r.json["data"]["event"], r.json["event"]);
        assert_eq!(r.json["data"]["channel"], channel.as_str());
        assert!(herald_proto::private::verify_webhook(
            secret.as_bytes(),
            &r.body,
            r.signature.as_deref().unwrap()
        ));
    }
    bob.close().await;
}

/// The receiver is down while presence happens, the server is killed with SIGKILL and
/// restarted, then the receiver comes up: every event written before the kill arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_survives_a_dead_receiver_and_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
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
    let mut server = Server::start(dir.path(), &args, &[]);
    let (ada_t, bob_t) = (token(&data, "ada"), token(&data, "bob"));
    herald(&server, &ada_t, &["channel", "create", "lobby", "--member", "bob"]);
    let ws = format!("ws://{}", server.addr);
    let bob = Client::connect(&ws, &bob_t).await.unwrap();
    let b = bob.room("lobby").enter(attrs(json!({"v": 1}))).await.unwrap();
    bob.room("lobby").update(attrs(json!({"v": 2}))).await.unwrap();
    bob.room("lobby").leave().await.unwrap();
    let http = reqwest::Client::new();
    // In the outbox (the store) before the kill: three events written.
    metric_until(&http, &server.url(), "herald_webhook_presence_written_total", |v| v >= 3.0).await;
    server.signal("-KILL");
    let _ = server.wait_exit();
    drop(server);
    drop(bob);
    let server = Server::start(dir.path(), &args, &[]);
    let receiver = WebhookReceiver::start_on(([127, 0, 0, 1], port).into(), |_| 200).await;
    let pid = b.participant_id.clone();
    let all =
        receiver.wait_until(WAIT, |all| story(all, &pid).iter().any(|e| e.0 == "participant_removed")).await;
    assert_eq!(
        story(&all, &pid),
        vec![
            ("participant_added".to_owned(), json!(1)),
            ("participant_updated".to_owned(), json!(2)),
            ("participant_removed".to_owned(), json!(2)),
        ]
    );
    // The channel's log events came too, independently (all events by default).
    let log = receiver.wait_until(WAIT, |all| all.iter().any(|r| r.json["event"] == "member_joined")).await;
    assert!(log.iter().any(|r| r.json["event"] == "channel_created"));
    drop(server);
}

/// The server is killed with SIGKILL while participants are in a room: nothing removed them
/// then, so the restarted server writes their removals (each once, with their latest
/// attributes), and a participant who had left is not removed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_present_at_a_sigkill_are_removed_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let receiver = WebhookReceiver::start(|_| 200).await;
    let hook = receiver.url();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data",
        &data_s,
        "--webhook",
        &hook,
        "--webhook-events",
        "participant_added,participant_updated,participant_removed",
        "--webhook-retry-ms",
        "20",
        "--webhook-max-backoff-ms",
        "200",
    ];
    let mut server = Server::start(dir.path(), &args, &[]);
    let (ada_t, bob_t, cat_t) = (token(&data, "ada"), token(&data, "bob"), token(&data, "cat"));
    herald(&server, &ada_t, &["channel", "create", "lobby", "--member", "bob", "--member", "cat"]);
    let ws = format!("ws://{}", server.addr);
    let ada = Client::connect(&ws, &ada_t).await.unwrap();
    let bob = Client::connect(&ws, &bob_t).await.unwrap();
    let cat = Client::connect(&ws, &cat_t).await.unwrap();
    let a = ada.room("lobby").enter(attrs(json!({"v": 1}))).await.unwrap();
    let b = bob.room("lobby").enter(attrs(json!({"v": 1}))).await.unwrap();
    bob.room("lobby").update(attrs(json!({"v": 2}))).await.unwrap();
    let c = cat.room("lobby").enter(attrs(json!({"v": 1}))).await.unwrap();
    cat.room("lobby").leave().await.unwrap();
    let (pa, pb, pc) = (a.participant_id.clone(), b.participant_id.clone(), c.participant_id.clone());
    // Everything delivered before the kill: bob's update and cat's removal among it.
    receiver
        .wait_until(WAIT, |all| {
            story(all, &pb).iter().any(|e| e.0 == "participant_updated" && e.1 == json!(2))
                && story(all, &pc).iter().any(|e| e.0 == "participant_removed")
                && story(all, &pa).iter().any(|e| e.0 == "participant_added")
        })
        .await;
    server.signal("-KILL");
    let _ = server.wait_exit();
    drop(server);
    drop((ada, bob, cat));
    let server = Server::start(dir.path(), &args, &[]);
    let all = receiver
        .wait_until(WAIT, |all| {
            [&pa, &pb].iter().all(|p| story(all, p).iter().any(|e| e.0 == "participant_removed"))
        })
        .await;
    assert_eq!(
        story(&all, &pb),
        vec![
            ("participant_added".to_owned(), json!(1)),
            ("participant_updated".to_owned(), json!(2)),
            ("participant_removed".to_owned(), json!(2)),
        ],
        "removed after the restart, with the attributes it had"
    );
    assert_eq!(
        story(&all, &pa).iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        vec!["participant_added", "participant_removed"]
    );
    // Killed and started once more with nobody present: nobody is removed again. Ada entering
    // anew shows the third run's dispatcher delivering.
    drop(server);
    let server = Server::start(dir.path(), &args, &[]);
    let ada = Client::connect(&format!("ws://{}", server.addr), &ada_t).await.unwrap();
    let again = ada.room("lobby").enter(attrs(json!({"v": 9}))).await.unwrap();
    let after = receiver
        .wait_until(WAIT, |all| story(all, &again.participant_id).iter().any(|e| e.0 == "participant_added"))
        .await;
    let removals = |p: &str| {
        first_accepted(&after)
            .iter()
            .filter(|r| {
                r.json["event"] == "participant_removed"
                    && r.json["data"]["participant"]["participant_id"] == p
            })
            .count()
    };
    for p in [&pa, &pb, &pc] {
        assert_eq!(removals(p), 1, "{p} removed once");
    }
    ada.close().await;
}

/// Waits for `participant_removed` of `pid` among `events` (the room `lobby` of `observer`),
/// within `within`. Should the observer's own connection drop meanwhile (its events stop with
/// `Disconnected`), the server's participant list says when `pid` is gone.
async fn removed_within(
    observer: &Client,
    events: &mut herald_client::room::RoomEvents,
    pid: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        match next {
            Ok(Some(herald_client::room::RoomIncoming::Event {
                event: herald_proto::rooms::RoomEvent::ParticipantRemoved { participant, .. },
                ..
            })) if participant.participant_id == pid => return start.elapsed(),
            Ok(Some(
                herald_client::room::RoomIncoming::Disconnected | herald_client::room::RoomIncoming::Lagged,
            )) => {
                eprintln!("the observer's own connection dropped; reading the participant list instead");
                loop {
                    let list = tokio::time::timeout_at(deadline, observer.room("lobby").participants()).await;
                    if let Ok(Ok(list)) = list
                        && !list.iter().any(|p| p.participant_id == pid)
                    {
                        let took = start.elapsed();
                        // In the room again, for the events of the rest of the test.
                        observer.room("lobby").enter(serde_json::Map::new()).await.unwrap();
                        return took;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "participant {pid} not removed within {within:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the room events ended"),
            Err(_) => panic!("participant {pid} not removed within {within:?}"),
        }
    }
}

/// A participant whose connection vanishes without a close (a raw client that entered and
/// then neither reads nor answers pings; a `herald room join` process stopped with SIGSTOP)
/// is removed by the ping timeout (a ping unanswered for an interval: two to three
/// `--ping-interval-secs` of silence), and the webhook hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_participant_is_removed_within_the_ping_timeout() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let receiver = WebhookReceiver::start(|_| 200).await;
    let hook = receiver.url();
    let server = Server::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data_s,
            "--ping-interval-secs",
            // Two, not one: the healthy clients of the test (ada's) must answer each ping
            // within an interval on a loaded CI machine, or their room events stop.
            "2",
            "--presence-interval-ms",
            "10",
            "--webhook",
            &hook,
            "--webhook-events",
            "participant_removed",
        ],
        &[],
    );
    let (ada_t, bob_t, cat_t) = (token(&data, "ada"), token(&data, "bob"), token(&data, "cat"));
    herald(&server, &ada_t, &["channel", "create", "lobby", "--member", "bob", "--member", "cat"]);
    let ws = format!("ws://{}", server.addr);
    let ada = Client::connect(&ws, &ada_t).await.unwrap();
    let room = ada.room("lobby");
    let mut events = room.events();
    room.enter(serde_json::Map::new()).await.unwrap();

    // A raw WebSocket client: connect, enter, read the reply, then go silent for good.
    let (mut raw, _) = tokio_tungstenite::connect_async(format!("{ws}/v1/ws")).await.unwrap();
    raw.send(Message::text(json!({"id": 1, "op": "connect", "token": bob_t}).to_string())).await.unwrap();
    raw.send(Message::text(json!({"id": 2, "op": "room.enter", "channel": "lobby"}).to_string()))
        .await
        .unwrap();
    let bob_pid = loop {
        let m = tokio::time::timeout(WAIT, raw.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["id"] == 2 {
            break v["ok"]["participant_id"].as_str().unwrap().to_owned();
        }
    };
    // `raw` is kept (the TCP connection stays open) but never read again: no pong goes out.
    let took = removed_within(&ada, &mut events, &bob_pid, Duration::from_secs(20)).await;
    assert!(took >= Duration::from_millis(1900), "removed by the ping timeout, not at once: {took:?}");

    // A process stopped with SIGSTOP: its socket stays open, it answers nothing.
    let mut join = Command::new(BIN)
        .args(["room", "join", "--room", "lobby", "--url", &server.url(), "--token", &cat_t])
        .env_remove("HERALD_URL")
        .env_remove("HERALD_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = join.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["event"] == "entered"
            {
                let _ = tx.send(v);
            }
        }
    });
    let entered = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT).unwrap()).await.unwrap();
    let cat_pid = entered["participant_id"].as_str().unwrap().to_owned();
    let stopped = Command::new("kill").args(["-STOP", &join.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    removed_within(&ada, &mut events, &cat_pid, Duration::from_secs(20)).await;
    let _ = Command::new("kill").args(["-KILL", &join.id().to_string()]).status();
    let _ = join.wait();

    let all = receiver
        .wait_until(WAIT, |all| {
            let f = first_accepted(all);
            [&bob_pid, &cat_pid]
                .iter()
                .all(|p| f.iter().any(|r| r.json["data"]["participant"]["participant_id"] == p.as_str()))
        })
        .await;
    assert!(all.iter().all(|r| r.json["event"] == "participant_removed"), "only the events asked for");
    drop(raw);
    ada.close().await;
}
