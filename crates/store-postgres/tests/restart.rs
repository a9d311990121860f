//! PostgreSQL stopped (`pg_ctl stop -m immediate`, a crash) in the middle of traffic and
//! started again: pending writes answer errors within `op_timeout`, `health()` errs while it
//! is down, acknowledged messages survive, and the same store writes again once it is back.
//!
//! Runs a private cluster (initdb + pg_ctl, as the `postgres` OS user when we are root) in a
//! temporary directory on a free port; skips with a reason when initdb is not there.
#![allow(clippy::unwrap_used)]

use herald_proto::model::Policy;
use herald_store::testkit::{self, user};
use herald_store::{NullSink, Store, StoreError};
use herald_store_postgres::scratch::services_required;
use herald_store_postgres::{PgConfig, PgStore};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";

struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Result<(), String> {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            Command::new("env")
        };
        let out = c.args(args).output().map_err(|e| format!("{args:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn new() -> Result<Cluster, String> {
        let initdb = Path::new(BIN).join("initdb");
        if !initdb.exists() {
            return Err(format!("{} not found", initdb.display()));
        }
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("id -u: {e}"))?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        if as_postgres {
            let st =
                Command::new("chown").arg("postgres").arg(dir.path()).status().map_err(|e| e.to_string())?;
            if !st.success() {
                return Err("chown postgres failed".into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let c = Cluster { dir, port, as_postgres };
        let data = c.data();
        c.run(&[
            initdb.to_str().unwrap_or_default(),
            "-D",
            data.to_str().unwrap_or_default(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ])?;
        c.start()?;
        Ok(c)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let pg_ctl = format!("{BIN}/pg_ctl");
        let data = self.data();
        let mut all = vec![pg_ctl.as_str(), "-D", data.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn start(&self) -> Result<(), String> {
        let log = self.dir.path().join("log");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        self.pg_ctl(&["-l", log.to_str().unwrap_or_default(), "-o", &opts, "-w", "start"])
    }

    fn crash(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_answers_errors_then_recovers() {
    let cluster = match Cluster::new() {
        Ok(c) => c,
        Err(e) if services_required() => panic!("private PostgreSQL cluster: {e}"),
        Err(e) => {
            eprintln!("postgres_restart_answers_errors_then_recovers: skipped: {e}");
            return;
        }
    };
    let op_timeout = Duration::from_secs(2);
    let mut config = PgConfig::new(cluster.url());
    config.op_timeout = op_timeout;
    config.connect_timeout = Duration::from_secs(1);
    config.health_timeout = Duration::from_secs(1);
    let store = Arc::new(PgStore::open(config, Arc::new(NullSink)).await.unwrap());
    let ada = user("ada");
    let ch = testkit::create(&*store, &ada, None, Policy::Open, &[]).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push(testkit::send(&*store, &ada, &ch, &format!("before {i}")).await.id);
    }

    // Traffic from 8 tasks; each records what was acknowledged, and stops after its first
    // error once the crash happened.
    let crashed = Arc::new(AtomicBool::new(false));
    let (first_ack_tx, mut first_ack) = tokio::sync::mpsc::channel::<()>(64);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (store, ada, ch, crashed, first_ack_tx) =
            (store.clone(), ada.clone(), ch.clone(), crashed.clone(), first_ack_tx.clone());
        tasks.spawn(async move {
            let mut ok = Vec::new();
            let mut errors = 0;
            for i in 0.. {
                let started = Instant::now();
                let r = tokio::time::timeout(
                    op_timeout + Duration::from_secs(1),
                    testkit::try_send(&*store, &ada, &ch, &format!("during {t} {i}"), None, None),
                )
                .await
                .expect("an apply answered within op_timeout while PostgreSQL was down");
                match r {
                    Ok(a) => {
                        ok.push(a.entries[0].extra.id.clone().unwrap());
                        let _ = first_ack_tx.try_send(());
                    }
                    Err(StoreError::Backend(_)) => {
                        assert!(started.elapsed() <= op_timeout + Duration::from_millis(500));
                        assert!(crashed.load(Ordering::SeqCst), "an error before the crash");
                        errors += 1;
                        break;
                    }
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            (ok, errors)
        });
    }
    drop(first_ack_tx);
    // Crash once traffic is flowing.
    for _ in 0..16 {
        tokio::time::timeout(Duration::from_secs(10), first_ack.recv()).await.unwrap();
    }
    crashed.store(true, Ordering::SeqCst);
    cluster.crash().unwrap();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (ok, e) = r.unwrap();
        acked.extend(ok);
        errors += e;
    }
    assert_eq!(errors, 8, "every sender saw an error");

    // Down: health and reads answer errors, quickly.
    let h = tokio::time::timeout(Duration::from_secs(3), store.health()).await.unwrap();
    let msg = h.unwrap_err().to_string();
    assert!(msg.contains("postgres"), "{msg}");
    let r = tokio::time::timeout(op_timeout + Duration::from_secs(1), store.head_seq(&ch)).await.unwrap();
    assert!(matches!(r, Err(StoreError::Backend(_))));

    cluster.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if store.health().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "health did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same store, not reopened, writes again.
    let after = testkit::try_send(&*store, &ada, &ch, "after", None, None).await.unwrap();
    acked.push(after.entries[0].extra.id.clone().unwrap());

    let log = testkit::verify_log(&*store, &ch).await;
    let ids: std::collections::HashSet<_> = log.iter().filter_map(|e| e.extra.id.clone()).collect();
    for id in &acked {
        assert!(ids.contains(id), "acknowledged message {id} survived the crash");
    }
    eprintln!("{} acknowledged messages survived; log has {} entries", acked.len(), log.len());
    store.close().await.unwrap();
}
