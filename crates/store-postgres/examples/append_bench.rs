//! Appends per second from one `PgStore` with many concurrent senders, on a scratch database
//! of the server at `HERALD_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! `cargo run --release -p herald-store-postgres --example append_bench -- [senders] [channels] [seconds] [nodes] [max_batch] [writers]`
//! (defaults 256, 16, 5, 1, the config's defaults). With `nodes` > 1, that many stores share the database and the
//! senders are spread over them; `writers` is each store's writer tasks (`PgConfig::writers`).

use herald_proto::model::Policy;
use herald_store::testkit::{self, user};
use herald_store::{NullSink, Store};
use herald_store_postgres::scratch::{ScratchDb, admin_url};
use herald_store_postgres::{PgConfig, PgStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let senders = args.first().copied().unwrap_or(256);
    let channels = args.get(1).copied().unwrap_or(16).max(1);
    let seconds = args.get(2).copied().unwrap_or(5) as u64;
    let nodes = args.get(3).copied().unwrap_or(1).max(1);
    let max_batch = args.get(4).copied().filter(|b| *b > 0);
    let writers = args.get(5).copied();
    let db = ScratchDb::create(&admin_url())?;
    let mut stores = Vec::new();
    for _ in 0..nodes {
        let mut config = PgConfig::new(db.url());
        if let Some(b) = max_batch {
            config.max_batch = b;
        }
        if let Some(w) = writers {
            config.writers = w;
        }
        let s = PgStore::open(config, Arc::new(NullSink)).await.map_err(|e| e.to_string())?;
        stores.push(Arc::new(s));
    }
    let ada = user("ada");
    let mut chans = Vec::new();
    for _ in 0..channels {
        chans.push(testkit::create(&*stores[0], &ada, None, Policy::Open, &[]).await);
    }
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..senders {
        let (store, ada, ch) = (stores[t % nodes].clone(), ada.clone(), chans[t % channels].clone());
        let (count, errors) = (count.clone(), errors.clone());
        tasks.spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                match testkit::try_send(&*store, &ada, &ch, &format!("sender {t} message {i}"), None, None)
                    .await
                {
                    Ok(_) => count.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    let stats: Vec<_> = stores.iter().map(|s| s.stats()).collect();
    let (jobs, commits) = stats.iter().fold((0, 0), |(j, c), s| (j + s.jobs, c + s.commits));
    println!(
        "{n} appends in {elapsed:.2} s: {:.0} appends/s ({senders} senders, {channels} channels, {nodes} node(s), \
         {} writer(s) each, {} errors, mean batch {:.1})",
        n as f64 / elapsed,
        writers.unwrap_or(PgConfig::new("").writers),
        errors.load(Ordering::Relaxed),
        jobs as f64 / commits.max(1) as f64
    );
    for s in &stores {
        s.close().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
