//! `herald bench e2ee`: end-to-end encryption through the SDK against a running server.
//!
//! Three figures, each over real sockets with the SDK doing all the cryptography:
//!
//! - sealed channel messages per second: `--senders` tasks of one device seal and send
//!   `--messages` messages to a fresh encrypted channel; a second member's device opens
//!   (verifies and decrypts) every one; the clock stops when the last is opened;
//! - DM round trip: `--rounds` times, Ada sends an Olm DM to Bob, Bob's device decrypts it
//!   and answers, Ada decrypts the answer (percentiles);
//! - keeper admission: a channel with `--history` messages; a keeper device runs in this
//!   process; a new member joins and the clock runs until it holds the keys of every epoch,
//!   then until it has opened the whole history.
//!
//! Device state files go to a temporary directory (a 32-byte key, not a passphrase, so
//! Argon2id is not measured).

use super::Ctx;
use anyhow::Context;
use herald_client::ClientConfig;
use herald_client::e2ee::{E2ee, E2eeConfig, Keeper, KeeperConfig, StateKey};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct E2eeArgs {
    /// Sealed messages sent for the throughput figure.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Concurrent sending tasks.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// DM round trips.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Messages in the channel a new member is admitted to.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
}

fn config() -> ClientConfig {
    ClientConfig { request_timeout: Duration::from_secs(120), ..ClientConfig::default() }
}

async fn device(
    ctx: &Ctx,
    dir: &std::path::Path,
    user: &str,
    id: &str,
    grants: Option<&[&str]>,
) -> anyhow::Result<E2ee> {
    let token = ctx.minter.token(user, grants)?;
    let cfg =
        E2eeConfig::new(dir.join(format!("{id}.state")), StateKey::Key([42u8; 32].into())).device_id(id);
    E2ee::connect(&format!("http://{}", ctx.target.authority), &token, config(), cfg)
        .await
        .with_context(|| format!("device {id}"))
}

pub async fn run(ctx: &Ctx, args: E2eeArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let run = format!("{:x}", std::process::id() ^ (herald_server::auth::now_secs() as u32));
    let ada_u = format!("bench-ada-{run}");
    let bob_u = format!("bench-bob-{run}");
    let carol_u = format!("bench-carol-{run}");
    let keeper_u = format!("bench-keeper-{run}");
    let keeper_dev = device(ctx, &dir, &keeper_u, &format!("k-{run}"), Some(&["keeper"])).await?;
    let keeper = Keeper::new(keeper_dev, KeeperConfig::default());
    let keeper_task = tokio::spawn(async move { keeper.run(|_| {}).await });
    let ada = device(ctx, &dir, &ada_u, &format!("a-{run}"), None).await?;
    let bob = device(ctx, &dir, &bob_u, &format!("b-{run}"), None).await?;
    let carol = device(ctx, &dir, &carol_u, &format!("c-{run}"), None).await?;

    // 1. Sealed channel messages, end to end.
    let name = format!("bench-e2ee-{run}");
    let members = [bob_u.as_str()];
    let channel = ada.channels().create_encrypted_with(Some(&name), &members).await?;
    let b_channel = bob.channels().get(channel.id()).await?;
    b_channel.sync().await?;
    let mut incoming = b_channel.messages();
    let n = args.messages;
    let t0 = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut opened = 0usize;
        let mut failed = 0usize;
        while opened + failed < n {
            match incoming.next().await {
                Some(Ok(_)) => opened += 1,
                Some(Err(_)) => failed += 1,
                None => break,
            }
        }
        (opened, failed, Instant::now())
    });
    let per = n.div_ceil(args.senders.max(1));
    let mut tasks = Vec::new();
    for s in 0..args.senders.max(1) {
        let ch = channel.clone();
        let count = per.min(n.saturating_sub(s * per));
        tasks.push(tokio::spawn(async move {
            for i in 0..count {
                ch.send(&format!("sealed message {s}/{i} with some text to seal")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let sent_at = t0.elapsed();
    let (opened, failed, done) = tokio::time::timeout(Duration::from_secs(300), receiver).await??;
    let e2e = done.duration_since(t0);
    println!(
        "sealed channel messages: {opened} opened ({failed} unopenable) in {:.2} s = {:.0} msg/s end to end ({:.0} msg/s sent), {} senders",
        e2e.as_secs_f64(),
        opened as f64 / e2e.as_secs_f64(),
        n as f64 / sent_at.as_secs_f64(),
        args.senders
    );

    // 2. DM round trips.
    let mut bob_dms = bob.dms();
    let bob2 = bob.clone();
    let ada_u2 = ada_u.clone();
    let echo = tokio::spawn(async move {
        while let Some(dm) = bob_dms.next().await {
            if let Ok(dm) = dm {
                let _ = bob2.send_dm(&ada_u2, &dm.payload).await;
            }
        }
    });
    let mut ada_dms = ada.dms();
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for i in 0..args.rounds {
        let t = Instant::now();
        ada.send_dm(&bob_u, format!("ping {i}")).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), ada_dms.next()).await? {
                Some(Ok(dm)) if dm.text() == format!("ping {i}") => break,
                Some(_) => continue,
                None => anyhow::bail!("ada's DM stream ended"),
            }
        }
        h.record(t.elapsed().as_micros() as u64)?;
    }
    echo.abort();
    println!(
        "DM round trip ({} rounds): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.rounds,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );

    // 3. Keeper admission into a channel with a long history.
    let hist_name = format!("bench-hist-{run}");
    let hist = ada.channels().create_encrypted(&hist_name).await?;
    let mut tasks = Vec::new();
    let per = args.history.div_ceil(args.senders.max(1));
    for s in 0..args.senders.max(1) {
        let ch = hist.clone();
        let count = per.min(args.history.saturating_sub(s * per));
        tasks.push(tokio::spawn(async move {
            for i in 0..count {
                ch.send(&format!("history {s}/{i}")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let t = Instant::now();
    let c_channel = carol.channels().join(hist.id()).await?;
    c_channel.wait_for_keys(Some(0), Duration::from_secs(300)).await?;
    c_channel.wait_for_keys(None, Duration::from_secs(300)).await?;
    let keyed = t.elapsed();
    let all = c_channel.history().await?;
    let read = t.elapsed();
    let ok = all.iter().filter(|o| o.is_ok()).count();
    println!(
        "keeper admission into {} messages: keys of every epoch after {:.0} ms; whole history opened ({ok} of {}) after {:.2} s",
        args.history,
        keyed.as_secs_f64() * 1000.0,
        all.len(),
        read.as_secs_f64()
    );
    keeper_task.abort();
    for c in [&ada, &bob, &carol] {
        c.close().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("herald-bench-e2ee-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
