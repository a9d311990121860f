//! `herald bench compare`: the fan-out shape run against every target in turn, one table.
//!
//! Herald's targets each get a fresh `herald serve` started here (unless `--running-herald`),
//! the Socket.IO peer is started here (`node server.js`) unless `--socketio-url` names one,
//! and NATS, Mosquitto and Redis are the services already running on this machine. A target
//! that cannot be reached, or whose run fails, prints one line saying why and is skipped.
//!
//! `--sweep` repeats the comparison at several offered rates; `--csv` writes one row per run
//! (the input of `bench/plot_p99.py`).

use super::peers::{self, Outcome, PeerArgs, ServerProc, Shape, Target};
use super::report::Report;
use super::spawn::{HeraldServer, SocketIoServer};
use super::{Common, Ctx, fanout};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Targets to run, comma-separated, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "herald,herald-publish,nats,socketio,mqtt,redis"
    )]
    targets: Vec<Target>,
    /// Subscriber connections (Herald's channel path: channel members).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Messages per second offered, all publishers together.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Offered rates to sweep (msgs/s, comma-separated): every target at each, instead of
    /// once at --rate.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Seconds of publishing per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Publishing connections, sharing the rate.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Longest wait, after the last publish, for deliveries in flight (seconds).
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Bytes of each payload (JSON carrying the send time, padded), at least 33.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds of rest between runs, so one run's tail does not overlap the next.
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
    /// Before each run, wait up to this many seconds for the machine to be quiet (under 0.3
    /// cores busy for a second): on a shared machine other work distorts every figure.
    #[arg(long, default_value_t = 0.0)]
    wait_idle: f64,
    /// Write one CSV row per run to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Drive the Herald server at --url (tokens from --data, CPU and memory of --pid) instead
    /// of starting a fresh one for each Herald run.
    #[arg(long)]
    running_herald: bool,
    #[command(flatten)]
    peers: PeerArgs,
}

/// What became of one target at one rate.
#[derive(Debug)]
enum Run {
    Done(Outcome),
    /// Unreachable or failed: the reason, one sentence.
    Skipped(Target, String),
}

pub async fn run(common: &Common, a: CompareArgs) -> anyhow::Result<()> {
    let rates = if a.sweep.is_empty() { vec![a.rate] } else { a.sweep.clone() };
    let shape = |rate: f64| Shape {
        members: a.members,
        senders: a.senders,
        rate,
        duration: a.duration,
        drain: a.drain,
        size: a.size,
        concurrency: common.concurrency,
    };
    for &rate in &rates {
        shape(rate).check()?;
    }
    if a.targets.is_empty() {
        bail!("--targets names no target");
    }
    let mut all = Vec::new();
    for (ri, &rate) in rates.iter().enumerate() {
        let mut runs = Vec::new();
        for (ti, &target) in a.targets.iter().enumerate() {
            if ri + ti > 0 {
                tokio::time::sleep(Duration::from_secs_f64(a.pause.clamp(0.0, 60.0))).await;
            }
            if a.wait_idle > 0.0 && !wait_idle(a.wait_idle.min(3600.0)).await {
                eprintln!(
                    "herald bench compare: the machine stayed busy for {} s; running anyway",
                    a.wait_idle
                );
            }
            eprintln!("herald bench compare: {} at {rate} msgs/s …", target.name());
            let run = match run_target(common, &a, target, &shape(rate)).await {
                Ok((_, o)) => Run::Done(o),
                Err(e) => {
                    let why = format!("{e:#}").replace('\n', " ");
                    eprintln!("herald bench compare: {}: skipped: {why}", target.name());
                    Run::Skipped(target, why)
                }
            };
            runs.push(run);
        }
        if !common.json {
            print_table(&shape(rate), &runs)?;
        }
        all.push(runs);
    }
    if let Some(path) = &a.csv {
        write_csv(path, &all).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if common.json {
        print_json(&all)?;
    }
    if !all.iter().flatten().any(|r| matches!(r, Run::Done(_))) {
        bail!("no target could be measured");
    }
    Ok(())
}

/// Runs one target once: Herald's on a server of its own (or the running one), the peers where
/// they are.
pub async fn run_target(
    common: &Common,
    a: &CompareArgs,
    target: Target,
    shape: &Shape,
) -> anyhow::Result<(Report, Outcome)> {
    match target {
        Target::Herald | Target::HeraldPublish => {
            if a.running_herald {
                let ctx = common.herald_ctx(None).await?;
                return run_herald(&ctx, target, shape).await;
            }
            let server = HeraldServer::start()?;
            let ctx = common.herald_ctx(Some(&server)).await?;
            let out = run_herald(&ctx, target, shape).await;
            drop(server);
            out
        }
        _ => run_peer(target, shape, &a.peers).await,
    }
}

/// Herald's channel path ([`fanout`]) or its `publish` path ([`peers::herald`]).
pub async fn run_herald(ctx: &Ctx, target: Target, shape: &Shape) -> anyhow::Result<(Report, Outcome)> {
    match target {
        Target::Herald => fanout::measure(ctx, shape).await,
        _ => {
            ctx.check_capacity(shape.members + shape.senders)?;
            let peer = Arc::new(peers::herald::HeraldPublish::new(ctx, shape.members, shape.senders)?);
            let server = ctx.pid.map(|pid| ServerProc { pid, name: "herald".into() });
            peers::drive(Target::HeraldPublish, peer, shape, server.as_ref()).await
        }
    }
}

/// One of the four peers; `Err` when it cannot be reached (a sentence naming the address).
pub async fn run_peer(target: Target, shape: &Shape, p: &PeerArgs) -> anyhow::Result<(Report, Outcome)> {
    // The shared services may be driven by another bench at the same time: a subject of this
    // run's own keeps the two runs' messages apart.
    let run = run_id();
    match target {
        Target::Nats => {
            let (server, _) = reach(peers::url_authority(&p.nats_url), "nats-server").await?;
            let peer = peers::nats::Nats { url: p.nats_url.clone(), subject: format!("herald.bench.{run}") };
            peers::drive(target, Arc::new(peer), shape, server.as_ref()).await
        }
        Target::Mqtt => {
            let (server, _) = reach(&p.mqtt_addr, "mosquitto").await?;
            let peer = peers::mqtt::Mqtt::new(&p.mqtt_addr, format!("herald/bench/{run}"))?;
            peers::drive(target, Arc::new(peer), shape, server.as_ref()).await
        }
        Target::Redis => {
            let (server, _) = reach(peers::url_authority(&p.redis_url), "redis-server").await?;
            let peer = peers::redis::Redis::new(&p.redis_url, format!("herald.bench.{run}"))?;
            peers::drive(target, Arc::new(peer), shape, server.as_ref()).await
        }
        Target::Socketio => match &p.socketio_url {
            Some(url) => {
                let authority = peers::url_authority(url);
                let (server, _) = reach(authority, "socket.io server").await?;
                let peer = peers::socketio::SocketIo::new(authority).await?;
                peers::drive(target, Arc::new(peer), shape, server.as_ref()).await
            }
            None => {
                let dir = super::spawn::socketio_dir(p.socketio_dir.as_deref());
                let node = SocketIoServer::start(&dir)?;
                let server = ServerProc { pid: node.pid(), name: "node (socket.io)".into() };
                let peer = peers::socketio::SocketIo::new(&node.authority).await?;
                let out = peers::drive(target, Arc::new(peer), shape, Some(&server)).await;
                drop(node);
                out
            }
        },
        Target::Herald | Target::HeraldPublish => {
            bail!("{} is measured through a Herald server, not as a peer", target.name())
        }
    }
}

/// Waits until the whole machine used under 0.3 cores over one second; `false` if `max`
/// seconds passed first.
async fn wait_idle(max: f64) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs_f64(max);
    while std::time::Instant::now() < until {
        let Some(b0) = super::report::machine_busy_secs() else { return true };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(b1) = super::report::machine_busy_secs() else { return true };
        if b1 - b0 < 0.3 {
            return true;
        }
    }
    false
}

/// `<pid>-<n>`: unique to one run of one target on this machine.
fn run_id() -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{}-{}", std::process::id(), RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Checks that something accepts connections at `authority` and finds the process listening
/// there (for its CPU and memory); `what` names the service in the error.
async fn reach(authority: &str, what: &str) -> anyhow::Result<(Option<ServerProc>, std::net::SocketAddr)> {
    let addr = peers::probe(authority).await.with_context(|| format!("is {what} running?"))?;
    Ok((peers::listener_process(addr.port()), addr))
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// `a ÷ b` as `1.23x`, or `-`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    }
}

fn print_table(shape: &Shape, runs: &[Run]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "herald bench compare: {} subscribers, {} publisher(s), {} msgs/s offered, {}-byte payloads, {} s",
        shape.members,
        shape.senders,
        shape.rate,
        peers::payload(0, shape.size).len(),
        shape.duration
    )?;
    let head = [
        "target",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "server CPU µs/delivery",
        "server RSS KiB/conn",
        "bytes/delivery",
        "missing",
        "generator cores",
        "other cores",
    ];
    let done: Vec<&Outcome> = runs
        .iter()
        .filter_map(|r| match r {
            Run::Done(o) => Some(o),
            Run::Skipped(..) => None,
        })
        .collect();
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| (*s).to_owned()).collect()];
    for o in &done {
        rows.push(vec![
            o.target.to_owned(),
            format!("{:.0}", o.deliveries_per_sec),
            opt(o.p50_ms, 2),
            opt(o.p99_ms, 2),
            opt(o.cpu_us_per_delivery, 2),
            opt(o.rss_kib_per_conn, 2),
            opt(o.bytes_per_delivery, 1),
            o.missing().to_string(),
            opt(o.generator_cores, 2),
            opt(o.other_cores, 2),
        ]);
    }
    write_rows(&mut out, &rows)?;
    if let Some(h) = done.iter().find(|o| o.target == Target::Herald.name()) {
        writeln!(out, "ratio to herald (target ÷ herald: deliveries/s higher is better, the rest lower)")?;
        let mut rows: Vec<Vec<String>> = vec![
            ["target", "deliveries/s", "p50", "p99", "CPU/delivery", "RSS/conn", "bytes/delivery"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        ];
        for o in &done {
            rows.push(vec![
                o.target.to_owned(),
                ratio(Some(o.deliveries_per_sec), Some(h.deliveries_per_sec)),
                ratio(o.p50_ms, h.p50_ms),
                ratio(o.p99_ms, h.p99_ms),
                ratio(o.cpu_us_per_delivery, h.cpu_us_per_delivery),
                ratio(o.rss_kib_per_conn, h.rss_kib_per_conn),
                ratio(o.bytes_per_delivery, h.bytes_per_delivery),
            ]);
        }
        write_rows(&mut out, &rows)?;
    }
    writeln!(
        out,
        "  (missing: not received by the end of the drain, dropped or later; other cores: CPU used by \
         every other process meanwhile)"
    )?;
    for r in runs {
        if let Run::Skipped(t, why) = r {
            writeln!(out, "skipped {}: {why}", t.name())?;
        }
    }
    writeln!(out)?;
    Ok(())
}

/// Columns padded to their widest cell: the first left-aligned, the rest right-aligned.
fn write_rows(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::from(" ");
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            line.push(' ');
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

const CSV_HEAD: &str = "target,rate_offered,members,size,sent,expected,received,missing,deliveries_per_sec,\
                        p50_ms,p99_ms,server_cpu_us_per_delivery,server_rss_kib_per_conn,bytes_per_delivery,\
                        generator_cores,other_cores";

fn csv_row(o: &Outcome) -> String {
    let f = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
    format!(
        "{},{},{},{},{},{},{},{},{:.1},{},{},{},{},{},{},{}",
        o.target,
        o.rate,
        o.members,
        o.size,
        o.sent,
        o.expected,
        o.received,
        o.missing(),
        o.deliveries_per_sec,
        f(o.p50_ms),
        f(o.p99_ms),
        f(o.cpu_us_per_delivery),
        f(o.rss_kib_per_conn),
        f(o.bytes_per_delivery),
        f(o.generator_cores),
        f(o.other_cores),
    )
}

fn write_csv(path: &std::path::Path, all: &[Vec<Run>]) -> anyhow::Result<()> {
    let mut text = String::from(CSV_HEAD);
    text.push('\n');
    for o in all.iter().flatten().filter_map(|r| match r {
        Run::Done(o) => Some(o),
        Run::Skipped(..) => None,
    }) {
        text.push_str(&csv_row(o));
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn print_json(all: &[Vec<Run>]) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for r in all.iter().flatten() {
        match r {
            Run::Done(o) => runs.push(serde_json::json!({
                "target": o.target,
                "rate_offered": o.rate,
                "members": o.members,
                "size": o.size,
                "sent": o.sent,
                "deliveries_expected": o.expected,
                "deliveries": o.received,
                "missing": o.missing(),
                "deliveries_per_sec": o.deliveries_per_sec,
                "latency_p50_ms": o.p50_ms,
                "latency_p99_ms": o.p99_ms,
                "server_cpu_us_per_delivery": o.cpu_us_per_delivery,
                "server_kib_per_conn": o.rss_kib_per_conn,
                "bytes_per_delivery": o.bytes_per_delivery,
                "generator_cpu_cores": o.generator_cores,
                "other_cpu_cores": o.other_cores,
            })),
            Run::Skipped(t, why) => skipped.push(serde_json::json!({"target": t.name(), "reason": why})),
        }
    }
    let v = serde_json::json!({"mode": "compare", "runs": runs, "skipped": skipped});
    writeln!(std::io::stdout().lock(), "{v}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_have_as_many_fields_as_the_header() {
        let o = Outcome {
            target: "nats",
            rate: 200.0,
            members: 10,
            size: 64,
            sent: 5,
            expected: 50,
            received: 49,
            deliveries_per_sec: 98.0,
            p50_ms: Some(1.0),
            p99_ms: None,
            cpu_us_per_delivery: Some(2.5),
            rss_kib_per_conn: None,
            bytes_per_delivery: Some(90.0),
            generator_cores: None,
            other_cores: None,
        };
        assert_eq!(csv_row(&o).split(',').count(), CSV_HEAD.split(',').count());
        assert!(csv_row(&o).starts_with("nats,200,10,64,5,50,49,1,98.0,1.000,,2.500,"));
    }

    #[test]
    fn ratio_is_target_over_herald() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50x");
        assert_eq!(ratio(Some(3.0), None), "-");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "-");
    }
}
