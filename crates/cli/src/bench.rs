//! `herald bench`: drives a running server over real sockets and prints what it measured.
//!
//! Four modes, each a separate module:
//!
//! - [`fanout`]: N members of one fresh channel, K of them sending at a fixed total rate;
//!   every member times every `message` event it receives (end-to-end latency). With
//!   `--target` the same shape runs against Herald's `publish` path or a peer server
//!   ([`peers`]: NATS, Socket.IO, MQTT, Redis).
//! - [`compare`]: the fan-out shape against every target in turn, one table (and a sweep of
//!   offered rates to CSV).
//! - [`append`]: C connections each sending `message.send` and awaiting its (durable) reply;
//!   durable appends per second, ack latency, and the server's group-commit figures.
//! - [`idle`]: K authenticated idle connections; the server's resident memory per connection.
//! - [`presence`]: N participants entering one room at once; the time until each sees the
//!   full count, and the frames the server sent for it.
//!
//! The generator shares the machine with the server, so it is kept cheap: received frames are
//! classified by a byte-prefix scan ([`scan`]) instead of a JSON parse, latencies go into a few
//! shared histograms rather than one per connection, and sockets use small read buffers.
//!
//! # Layout
//!
//! - [`net`]: the server's address, sockets, the `connect` handshake, tokens, `/metrics`.
//! - [`scan`]: cheap classification of server frames.
//! - [`report`]: the figures, as a plain-text table or one JSON object; `/proc` readings.
//! - [`peers`]: the generic pub/sub driver and one client per peer.
//! - [`spawn`]: servers the bench starts and always stops (`herald serve`, the node peer).

mod append;
mod compare;
mod e2ee;
mod fanout;
mod idle;
mod net;
mod peers;
mod presence;
mod report;
mod scan;
mod spawn;

use anyhow::bail;
use std::path::PathBuf;

/// `herald bench` options common to every mode.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the running server (plain HTTP; the WebSocket is at /v1/ws).
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7700", global = true)]
    url: String,

    /// Other nodes of the same deployment (repeatable or comma-separated): connections are
    /// spread over --url and these, connection i on node i mod n (the first, which creates the
    /// channel and sends first, on --url), so deliveries cross nodes. /metrics is read from
    /// --url only.
    #[arg(long = "also-url", value_delimiter = ',', global = true)]
    also_url: Vec<String>,

    /// The server's data directory: its token secret signs the bench users' tokens.
    #[arg(long, env = "HERALD_DATA", default_value = "./herald-data", global = true)]
    data: PathBuf,

    /// A file holding the server's HS256 secret, instead of reading it from --data.
    #[arg(long, global = true)]
    token_secret_file: Option<PathBuf>,

    /// The server's process id: adds its CPU time and resident memory to the figures
    /// (read from /proc/<pid>; same machine only). Required for the RSS figures of `idle`.
    #[arg(long, global = true)]
    pid: Option<u32>,

    /// Source addresses for client sockets: with N > 1, sockets are bound round-robin to
    /// 127.0.0.2 .. 127.0.0.(N+1), each with its own range of ephemeral ports.
    #[arg(long, default_value_t = 1, global = true)]
    sources: u8,

    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 64, global = true)]
    concurrency: usize,

    /// Print one JSON object of results instead of the table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Fan-out: N members of one fresh channel; K senders at M messages/s in total; every
    /// member records the end-to-end latency of every message it receives.
    Fanout(fanout::FanoutArgs),
    /// Durable appends: C connections each send `message.send` and await its reply.
    Append(append::AppendArgs),
    /// Idle connections: the server's resident memory per authenticated idle connection.
    Idle(idle::IdleArgs),
    /// Room presence at scale: N participants (one connection each) enter one room at once;
    /// time until every one sees the full count, and the server's frames for it (/metrics).
    Presence(presence::PresenceArgs),
    /// Fan-out against Herald and each peer (NATS, Socket.IO, MQTT, Redis) in turn, one
    /// table; `--sweep` over offered rates, `--csv` for the plot.
    Compare(compare::CompareArgs),
    /// End-to-end encryption through the SDK: sealed channel messages/s end to end, DM
    /// round-trip latency, keeper admission time into a channel with a long history.
    E2ee(e2ee::E2eeArgs),
}

/// The options of [`BenchArgs`] that every mode may use, once the mode is taken out.
#[derive(Debug)]
pub struct Common {
    url: String,
    also_url: Vec<String>,
    data: PathBuf,
    token_secret_file: Option<PathBuf>,
    pid: Option<u32>,
    sources: u8,
    concurrency: usize,
    json: bool,
    nofile: u64,
}

impl Common {
    /// The context for driving a Herald server: `server` if the bench started it, else the
    /// one at `--url` (secret from `--data` or `--token-secret-file`, process `--pid`).
    async fn herald_ctx(&self, server: Option<&spawn::HeraldServer>) -> anyhow::Result<Ctx> {
        let (url, secret, pid) = match server {
            Some(s) => (s.url.clone(), net::read_data_secret(&s.data)?, Some(s.pid())),
            None => {
                let secret = match &self.token_secret_file {
                    Some(path) => net::read_secret_file(path)?,
                    None => net::read_data_secret(&self.data)?,
                };
                (self.url.clone(), secret, self.pid)
            }
        };
        let target = net::Target::resolve(&url).await?;
        let sources = net::source_addresses(self.sources, &target)?;
        let mut nodes = vec![target.clone()];
        if server.is_none() {
            for other in &self.also_url {
                nodes.push(net::Target::resolve(other).await?);
            }
        }
        Ok(Ctx {
            target,
            nodes,
            minter: net::Minter::new(secret),
            sources,
            concurrency: self.concurrency.max(1),
            pid,
            nofile: self.nofile,
        })
    }
}

/// What every mode needs: where the server is, how to mint tokens, how to open sockets.
#[derive(Debug)]
struct Ctx {
    target: net::Target,
    /// `target`, then the other nodes of `--also-url`: connection i goes to `nodes[i % n]`.
    nodes: Vec<net::Target>,
    minter: net::Minter,
    sources: Vec<std::net::IpAddr>,
    concurrency: usize,
    pid: Option<u32>,
    /// The soft limit on open files after raising it to the hard limit.
    nofile: u64,
}

impl Ctx {
    /// The source address of the `i`-th client socket (`None`: let the kernel choose).
    fn source(&self, i: usize) -> Option<std::net::IpAddr> {
        if self.sources.is_empty() { None } else { Some(self.sources[i % self.sources.len()]) }
    }

    /// Fails early, with a hint, when `conns` sockets cannot be opened from this process.
    fn check_capacity(&self, conns: usize) -> anyhow::Result<()> {
        // Every connection is one file descriptor here; keep some for everything else.
        let needed = conns as u64 + 64;
        if needed > self.nofile {
            anyhow::bail!(
                "{conns} connections need about {needed} open files; this process may open {} \
                 (the hard RLIMIT_NOFILE); lower the connection count",
                self.nofile
            );
        }
        let ports = net::ephemeral_ports().unwrap_or(28_000);
        let per_source = conns.div_ceil(self.sources.len().max(1));
        if per_source as u64 > ports.saturating_sub(1000) {
            anyhow::bail!(
                "{per_source} connections from one source address would exhaust its {ports} \
                 ephemeral ports; use --sources {}",
                conns as u64 / ports.saturating_sub(1000).max(1) + 1
            );
        }
        Ok(())
    }
}

/// One connection's outcome: the authenticated socket and how long opening it took.
type Opened = anyhow::Result<(net::Ws, std::time::Duration)>;

impl Ctx {
    /// Opens and authenticates one connection per token, `concurrency` at a time, in token
    /// order; connection `i` uses source `offset + i`.
    async fn connect_many(&self, tokens: &[String], offset: usize, read_buffer: usize) -> Vec<Opened> {
        use futures::StreamExt;
        futures::stream::iter(tokens.iter().enumerate())
            .map(|(i, token)| async move {
                let t0 = std::time::Instant::now();
                let node = &self.nodes[(offset + i) % self.nodes.len()];
                let ws = net::open_authed(node, self.source(offset + i), read_buffer, token).await?;
                Ok((ws, t0.elapsed()))
            })
            .buffered(self.concurrency)
            .collect()
            .await
    }

    /// [`Ctx::connect_many`] where any failure fails the run.
    async fn connect_all(
        &self,
        tokens: &[String],
        offset: usize,
        read_buffer: usize,
    ) -> anyhow::Result<Vec<net::Ws>> {
        let mut out = Vec::with_capacity(tokens.len());
        for (i, r) in self.connect_many(tokens, offset, read_buffer).await.into_iter().enumerate() {
            let (ws, _) = r.map_err(|e| {
                e.context(format!("connection {} of {}", offset + i + 1, offset + tokens.len()))
            })?;
            out.push(ws);
        }
        Ok(out)
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Many sockets: lift the soft limit on open files to the hard one before anything else.
    let nofile = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| anyhow::anyhow!("cannot raise the open-files limit: {e}"))?;
    let BenchArgs { url, also_url, data, token_secret_file, pid, sources, concurrency, json, mode } = args;
    let common = Common { url, also_url, data, token_secret_file, pid, sources, concurrency, json, nofile };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        // An interrupt drops the run, and with it every server the bench started (their guards
        // kill them), instead of killing this process with them still running.
        tokio::select! {
            r = run_mode(&common, mode) => r,
            s = interrupted() => bail!("interrupted by {s}"),
        }
    });
    // Connections still held by finished tasks close with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result? {
        Some((report, label)) => report.print(&label, common.json),
        None => Ok(()),
    }
}

/// Runs one mode; a report to print and what it ran against, or `None` if it printed its own.
async fn run_mode(common: &Common, mode: Mode) -> anyhow::Result<Option<(report::Report, String)>> {
    match mode {
        Mode::Compare(a) => compare::run(common, a).await.map(|()| None),
        Mode::Fanout(a) => {
            let shape = a.shape(common.concurrency.max(1));
            match a.target {
                peers::Target::Herald | peers::Target::HeraldPublish => {
                    let ctx = common.herald_ctx(None).await?;
                    let (r, _) = compare::run_herald(&ctx, a.target, &shape).await?;
                    Ok(Some((r, common.url.clone())))
                }
                t => {
                    let (r, _) = compare::run_peer(t, &shape, &a.peers).await?;
                    Ok(Some((r, t.name().to_owned())))
                }
            }
        }
        Mode::Append(a) => {
            let ctx = common.herald_ctx(None).await?;
            Ok(Some((append::run(&ctx, a).await?, common.url.clone())))
        }
        Mode::Presence(a) => {
            let ctx = common.herald_ctx(None).await?;
            Ok(Some((presence::run(&ctx, a).await?, common.url.clone())))
        }
        Mode::E2ee(a) => {
            let ctx = common.herald_ctx(None).await?;
            e2ee::run(&ctx, a).await.map(|()| None)
        }
        Mode::Idle(a) => {
            let ctx = common.herald_ctx(None).await?;
            Ok(Some((idle::run(&ctx, a).await?, common.url.clone())))
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        // Without signal handlers, never resolve: the default action applies.
        _ => std::future::pending().await,
    }
}
