//! `herald`: the one binary. `serve` runs a node, `token` mints a token for it, the client
//! commands talk to a running server through the Rust SDK, and `bench` measures one.
//!
//! Errors print one line starting `herald:` and exit with code 2; a closed stdout (`| head`)
//! is not an error.

mod bench;
mod client_cmds;
mod e2ee_cmds;
mod room_cmds;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_server::auth::{Claims, mint_hs256, now_secs, resolve_secret};
use herald_server::config::{ServeConfig, merge_toml};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, not glibc's malloc. The store's writer thread allocates what other threads free
/// (each commit's results, each event's bytes); glibc returns such frees to the arena of the
/// allocating thread under its lock, so the writer and the socket threads queued on that lock
/// (an eighth of the server's samples at four requests in flight). jemalloc's thread caches
/// batch them. The same allocator serves `herald bench`. BENCHMARKS.md, "The allocator".
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Herald: a self-hosted realtime messaging server.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of `ServeArgs` (both branches' flags) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: by default SQLite under --data and no other service; with --store
    /// postgres://… --broker nats://… one of several equal nodes (docs/deploy.md).
    Serve(ServeArgs),
    /// Print a JWT signed with the data directory's secret.
    Token(TokenArgs),
    /// Show or rotate an app secret (private channels, webhooks: PROTOCOL.md §9).
    #[command(subcommand)]
    Secret(SecretCommand),
    #[command(flatten)]
    Client(client_cmds::ClientCommand),
    /// Rooms (§8): list participants, send or broadcast typed JSON with attachments, stay in
    /// a room printing its events (accepting streams into files), stream a file.
    Room(room_cmds::RoomArgs),
    #[command(flatten)]
    E2ee(e2ee_cmds::E2eeCommand),
    /// Measure a server: fan-out, durable appends, idle connections, end-to-end encryption;
    /// compare with peers.
    Bench(bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML file with any of the options below (keys in snake_case, e.g. `max_content_bytes`);
    /// flags and HERALD_* variables take precedence over it.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,

    #[command(flatten)]
    serve: ServeConfig,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Data directory whose secret signs the token (the same as `serve --data`).
    #[arg(long, env = "HERALD_DATA", default_value = "./herald-data")]
    data: PathBuf,
    /// Sign with the secret in this file instead (the same as `serve --secret-file`); the
    /// variable HERALD_SECRET, holding the secret itself, takes precedence over both.
    #[arg(long, env = "HERALD_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// User id (`sub`): 1-128 characters of A-Z a-z 0-9 _ . @ : -
    #[arg(long)]
    sub: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Participant kind: human, agent or service.
    #[arg(long, default_value = "human")]
    kind: String,
    /// App (tenant) id.
    #[arg(long)]
    app: Option<String>,
    /// A grant (repeatable): channels:create, channels:admin, keeper, server, admin. Without
    /// any, the token has the ordinary set (channels:create).
    #[arg(long = "grant")]
    grants: Vec<String>,
    /// Lifetime, e.g. 30s, 15m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    ttl: humantime::Duration,
}

const KNOWN_GRANTS: [&str; 5] = ["channels:create", "channels:admin", "keeper", "server", "admin"];

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let claims = Claims {
        sub: args.sub,
        name: args.name,
        kind: Some(args.kind),
        exp: now_secs() + args.ttl.as_secs(),
        iat: Some(now_secs()),
        app: args.app,
        grants: if args.grants.is_empty() { None } else { Some(args.grants) },
    };
    for g in claims.grants.iter().flatten() {
        if !KNOWN_GRANTS.contains(&g.as_str()) {
            anyhow::bail!("unknown grant {g:?} (known: {})", KNOWN_GRANTS.join(", "));
        }
    }
    // Validate exactly as the server will, so a bad --sub fails here and not at connect.
    herald_server::auth::principal(claims.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let env_secret = env_secret();
    let secret = resolve_secret(env_secret.as_deref(), args.secret_file.as_deref(), &args.data)
        .with_context(|| {
            format!("cannot read or create the token secret (data directory {})", args.data.display())
        })?;
    println!("{}", mint_hs256(&secret, &claims)?);
    Ok(())
}

fn serve(args: ServeArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let mut config = args.serve;
    if let Some(path) = &args.config {
        let sub = matches.subcommand_matches("serve").unwrap_or(matches);
        config = merge_toml(config, sub, path)?;
    }
    config.secret = env_secret().map(herald_server::config::Secret);
    config.app_secret = env_app_secret().map(herald_server::config::Secret);
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async { herald_server::serve(herald_cli::backends::open_node(config).await?).await })
}

/// HERALD_SECRET, if set and not empty: the token secret itself (see `serve --secret-file`).
fn env_secret() -> Option<String> {
    std::env::var("HERALD_SECRET").ok().filter(|s| !s.trim().is_empty())
}

/// HERALD_APP_SECRET, if set and not empty: the app secret of every app (see `serve
/// --app-secret-file`).
fn env_app_secret() -> Option<String> {
    std::env::var("HERALD_APP_SECRET").ok().filter(|s| !s.trim().is_empty())
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Print an app's secret alone on one line (created on first use): the key with which its
    /// backend signs private-channel joins and checks webhook signatures. With
    /// HERALD_APP_SECRET or --app-secret-file, prints that (what the server uses for every app).
    Show(SecretArgs),
    /// Replace an app's secret in the data directory with a new random one and print it. A
    /// running server keeps using the old one until its next start: restart it (every node of
    /// a cluster that reads this data directory). Signatures made with the old secret stop
    /// verifying then.
    Rotate(SecretArgs),
}

#[derive(Debug, clap::Args)]
struct SecretArgs {
    /// Data directory (the same as `serve --data`).
    #[arg(long, env = "HERALD_DATA", default_value = "./herald-data")]
    data: PathBuf,
    /// The app (tenant) id.
    #[arg(long, default_value = "default")]
    app: String,
    /// The app secret file a server is given (the same as `serve --app-secret-file`).
    #[arg(long, env = "HERALD_APP_SECRET_FILE")]
    app_secret_file: Option<PathBuf>,
}

fn secret(cmd: SecretCommand) -> anyhow::Result<()> {
    use herald_server::app_secret;
    let text = match cmd {
        SecretCommand::Show(a) => {
            let env = env_app_secret();
            app_secret::resolve_one(env.as_deref(), a.app_secret_file.as_deref(), &a.data, &a.app)
                .with_context(|| format!("cannot read or create the app secret of {:?}", a.app))?
        }
        SecretCommand::Rotate(a) => {
            if env_app_secret().is_some() || a.app_secret_file.is_some() {
                anyhow::bail!(
                    "the app secret comes from HERALD_APP_SECRET or --app-secret-file: replace it there"
                );
            }
            app_secret::rotate(&a.data, &a.app)
                .with_context(|| format!("cannot rotate the app secret of {:?}", a.app))?
        }
    };
    println!("{}", String::from_utf8_lossy(&text));
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Serve(args) => serve(args, &matches),
        Command::Token(args) => token(args),
        Command::Secret(cmd) => secret(cmd),
        Command::Client(cmd) => client_cmds::run(cmd),
        Command::Room(args) => room_cmds::run(args),
        Command::E2ee(cmd) => e2ee_cmds::run(cmd),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("herald: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
