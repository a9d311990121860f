//! PostgreSQL stopped (`pg_ctl stop -m immediate`, a crash) in the middle of traffic and
//! started again: pending writes answer errors within `op_timeout`, `health()` errs while it
//! is down, acknowledged messages survive, and the same store writes again once it is back.
//!
//! Runs a private cluster (`scratch::PrivateCluster`: initdb + pg_ctl in a temporary directory
//! on a free port); skips with a reason when initdb is not there.
#![allow(clippy::unwrap_used)]

use herald_proto::model::Policy;
use herald_store::testkit::{self, user};
use herald_store::{NullSink, Store, StoreError};
use herald_store_postgres::scratch::{PrivateCluster, services_required};
use herald_store_postgres::{PgConfig, PgStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_answers_errors_then_recovers() {
    let cluster = match PrivateCluster::start() {
        Ok(c) => c,
        Err(e) if services_required() => panic!("private PostgreSQL cluster: {e}"),
        Err(e) => {
            eprintln!("postgres_restart_answers_errors_then_recovers: skipped: {e}");
            return;
        }
    };
    let op_timeout = Duration::from_secs(2);
    let mut config = PgConfig::new(cluster.admin_url());
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
    cluster.stop_immediate().unwrap();
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

    cluster.start_again().unwrap();
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
