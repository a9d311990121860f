//! Server configuration: every option is a flag, a `HERALD_*` environment variable, and a key
//! of an optional TOML file (`--config`), in that order of precedence.

use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// fsync every commit: an acknowledged message survives a power cut.
    Fsync,
    /// No fsync per commit (SQLite synchronous=NORMAL): survives a process crash, not a power
    /// cut. For benchmarks and throwaway servers only.
    Relaxed,
}

/// A duration written `90s`, `15m`, `12h` or `30d` (a whole number and one unit), as flags,
/// `HERALD_*` variables and TOML strings take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub std::time::Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let unit = s.chars().last().ok_or_else(|| "empty duration".to_owned())?;
        let secs_per = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("duration {s:?} must end in s, m, h or d (e.g. 30d, 12h, 90s)")),
        };
        let n: u64 = s[..s.len() - 1]
            .parse()
            .map_err(|_| format!("duration {s:?} must be a whole number and a unit (e.g. 30d, 12h, 90s)"))?;
        let secs = n
            .checked_mul(secs_per)
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("duration {s:?} is out of range"))?;
        Ok(HumanDuration(std::time::Duration::from_secs(secs)))
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> String {
        let s = d.0.as_secs();
        for (unit, per) in [('d', 86_400), ('h', 3600), ('m', 60)] {
            if s.is_multiple_of(per) {
                return format!("{}{unit}", s / per);
            }
        }
        format!("{s}s")
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from(*self))
    }
}

/// A secret held in memory: its `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// `herald serve` options.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// Data directory: the SQLite database, blobs and the token secret.
    #[arg(long, env = "HERALD_DATA", default_value = "./herald-data")]
    pub data: PathBuf,

    /// Commit durability of the SQLite store: `fsync` (default) or `relaxed` (benchmarks
    /// only). With --store postgres://… PostgreSQL's own `synchronous_commit` decides (keep it
    /// `on`: docs/deploy.md).
    #[arg(long, env = "HERALD_DURABILITY", value_enum, default_value = "fsync")]
    pub durability: DurabilityMode,

    /// Where channels, messages and blobs live: `sqlite` (the default: SQLite and blob files
    /// under --data, nothing else to run) or a PostgreSQL URL (`postgres://user@host:5432/db`)
    /// that every node of a deployment shares; blobs then live in PostgreSQL too. The first
    /// node to start on an empty database creates the schema (docs/deploy.md).
    #[arg(
        long,
        env = "HERALD_STORE",
        default_value = "sqlite",
        value_name = "sqlite|URL",
        hide_env_values = true
    )]
    pub store: String,

    /// How events reach the connections of the other nodes: `local` (the default: one node,
    /// in process) or a NATS URL (`nats://127.0.0.1:4222`) every node shares. A NATS broker
    /// needs a shared store (--store postgres://…).
    #[arg(
        long,
        env = "HERALD_BROKER",
        default_value = "local",
        value_name = "local|URL",
        hide_env_values = true
    )]
    pub broker: String,

    /// The first tokens of every NATS subject this deployment uses (with --broker nats://…):
    /// the nodes with the same NATS and prefix are one deployment, so two deployments (say
    /// staging and production) sharing a NATS server need two prefixes. Tokens of
    /// `[A-Za-z0-9_-]` joined by `.`.
    #[arg(long, env = "HERALD_NATS_PREFIX", default_value = "herald")]
    pub nats_prefix: String,

    /// Connections this node keeps to PostgreSQL (with --store postgres://…).
    #[arg(long, env = "HERALD_PG_POOL", default_value_t = 16)]
    pub pg_pool: usize,

    /// Writer tasks committing to PostgreSQL side by side, each on its own connection of the
    /// pool; a channel's writes always go to the same one, so their transactions lock
    /// disjoint channels (with --store postgres://…).
    #[arg(long, env = "HERALD_PG_WRITERS", default_value_t = 2)]
    pub pg_writers: usize,

    /// Name of this node on the NATS broker and in its logs (default: a random id per start).
    #[arg(long, env = "HERALD_NODE_ID")]
    #[serde(default)]
    pub node_id: Option<String>,

    /// With a NATS broker: milliseconds after which a node not heard from is gone, and the
    /// other nodes remove its room participants (nodes say they are alive five times per
    /// timeout).
    #[arg(long, env = "HERALD_NODE_TIMEOUT_MS", default_value_t = 10_000)]
    pub node_timeout_ms: u64,

    /// Read the token secret (HS256, at least 32 characters) from this file instead of the
    /// data directory's `secret`, so every node of a deployment verifies the same tokens.
    /// The variable HERALD_SECRET, holding the secret itself, takes precedence over both.
    #[arg(long, env = "HERALD_SECRET_FILE")]
    #[serde(default)]
    pub secret_file: Option<PathBuf>,

    /// The secret itself, from HERALD_SECRET (never a flag: a command line is visible to
    /// every user of the machine; never in the TOML file, never printed).
    #[arg(skip)]
    #[serde(skip)]
    pub secret: Option<Secret>,

    /// Verify tokens with this Ed25519 public key (PEM file, EdDSA) instead of the data
    /// directory's HS256 secret: for tokens minted by another service.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY")]
    #[serde(default)]
    pub jwt_public_key: Option<PathBuf>,

    /// Largest message content (and publish/ephemeral data) in bytes.
    #[arg(long, env = "HERALD_MAX_CONTENT_BYTES", default_value_t = 64 * 1024)]
    pub max_content_bytes: usize,

    /// Largest WebSocket frame (and JSON request body) in bytes.
    #[arg(long, env = "HERALD_MAX_FRAME_BYTES", default_value_t = 256 * 1024)]
    pub max_frame_bytes: usize,

    /// Largest blob in bytes.
    #[arg(long, env = "HERALD_MAX_BLOB_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_blob_bytes: usize,

    /// A directory for blob files (SQLite store); repeat it (or separate with commas) to
    /// spread the shards of erasure-coded files over several disks: `PUT …/blobs?shard=<i>`
    /// writes into directory number i mod n, in the order given, so the k+m shards of one file
    /// land on distinct disks when there are at least k+m directories. Reads look in every
    /// directory; one that is missing or unreadable only makes its blobs `not_found`.
    /// Default: the data directory's `blobs`.
    #[arg(long = "blob-dir", env = "HERALD_BLOB_DIR", value_delimiter = ',', value_name = "DIR")]
    #[serde(default)]
    pub blob_dir: Vec<PathBuf>,

    /// How long an undelivered direct message waits in a device's inbox before it is erased
    /// (a whole number and s, m, h or d: 90s, 12h, 30d).
    #[arg(long, env = "HERALD_DM_TTL", default_value = "30d", value_name = "DURATION")]
    pub dm_ttl: HumanDuration,

    /// Direct messages one device's inbox holds at most; a `dm.send` to a full inbox gets
    /// `rate_limited` and stores nothing.
    #[arg(long, env = "HERALD_DM_INBOX_MAX", default_value_t = 10_000)]
    pub dm_inbox_max: u64,

    /// Largest history or log page (`limit`).
    #[arg(long, env = "HERALD_HISTORY_PAGE_MAX", default_value_t = 500)]
    pub history_page_max: u32,

    /// Entries replayed per channel on resume before `resume_truncated`.
    #[arg(long, env = "HERALD_REPLAY_CAP", default_value_t = 1000)]
    pub replay_cap: u64,

    /// Frames queued per connection; a consumer further behind is closed with code 4008.
    #[arg(long, env = "HERALD_QUEUE_FRAMES", default_value_t = 4096)]
    pub queue_frames: usize,

    /// Bytes queued per connection; a consumer further behind is closed with code 4008 (the
    /// frame bound alone lets a few large events take a lot of memory).
    #[arg(long, env = "HERALD_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub queue_bytes: usize,

    /// Requests per second allowed on one connection (sustained); 0 disables the limit.
    #[arg(long, env = "HERALD_RATE_PER_SEC", default_value_t = 1000)]
    pub rate_per_sec: u32,

    /// Requests one connection may burst above the sustained rate.
    #[arg(long, env = "HERALD_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,

    /// REST requests per second allowed per user (the token's app and `sub`, across all their
    /// clients; sustained); 0 disables the limit. Over it: 429 `rate_limited`, `Retry-After`.
    #[arg(long, env = "HERALD_REST_RATE_PER_SEC", default_value_t = 1000)]
    pub rest_rate_per_sec: u32,

    /// REST requests one user may burst above the sustained rate.
    #[arg(long, env = "HERALD_REST_RATE_BURST", default_value_t = 2000)]
    pub rest_rate_burst: u32,

    /// Requests one connection may have in flight: sends by channel id are pipelined (and
    /// still appended in arrival order); further frames wait.
    #[arg(long, env = "HERALD_MAX_INFLIGHT", default_value_t = 64)]
    pub max_inflight: usize,

    /// Milliseconds: a user's `typing` in one channel fans out at most once per interval
    /// (repeats are answered, not sent on; a change of is_typing always goes out). 0: no limit.
    #[arg(long, env = "HERALD_TYPING_INTERVAL_MS", default_value_t = 1000)]
    pub typing_interval_ms: u64,

    /// Milliseconds: a user's `read` in one channel (a durable write) is accepted at most once
    /// per interval; sooner ones get `rate_limited` with `retry_after_ms`. 0: no limit.
    #[arg(long, env = "HERALD_READ_INTERVAL_MS", default_value_t = 250)]
    pub read_interval_ms: u64,

    /// WebSocket connections one user (of one app) may have open at once; more get
    /// `rate_limited` and close code 4429. 0: no cap.
    #[arg(long, env = "HERALD_MAX_CONNS_PER_USER", default_value_t = 100)]
    pub max_conns_per_user: usize,

    /// WebSocket connections one source IP address may have open at once; more are refused
    /// with HTTP 429 before the upgrade. 0 (the default): no cap, since many users may share
    /// one address behind a NAT or proxy.
    #[arg(long, env = "HERALD_MAX_CONNS_PER_ADDR", default_value_t = 0)]
    pub max_conns_per_addr: usize,

    /// Subjects one connection may subscribe to.
    #[arg(long, env = "HERALD_MAX_SUBSCRIPTIONS", default_value_t = 1024)]
    pub max_subscriptions: usize,

    /// Largest attachment of a room message (room.send / room.broadcast as a binary frame) and
    /// largest stream chunk, in bytes after the frame's JSON header; the limit itself is
    /// allowed, more gets `payload_too_large`. Independent of --max-frame-bytes (which bounds
    /// the JSON). Each connection's --queue-bytes is raised to hold at least one such frame.
    #[arg(long, env = "HERALD_MAX_ATTACHMENT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_attachment_bytes: usize,

    /// Milliseconds: room presence (participant_added / _updated / _removed) is coalesced
    /// per interval, each participant's latest state once (an enter and a leave inside one
    /// interval may cancel out). 0: every change at once.
    #[arg(long, env = "HERALD_PRESENCE_INTERVAL_MS", default_value_t = 100)]
    pub presence_interval_ms: u64,

    /// Above this many participants a room sends `presence_count` events instead of
    /// per-participant ones, `room.enter` answers with the count, and the list is paged with
    /// room.participants.
    #[arg(long, env = "HERALD_PRESENCE_LIST_MAX", default_value_t = 1000)]
    pub presence_list_max: usize,

    /// Most appends committed in one transaction (group commit), SQLite or PostgreSQL.
    #[arg(long, env = "HERALD_MAX_BATCH", default_value_t = 1024)]
    pub max_batch: usize,

    /// Seconds a new WebSocket has to send its `connect` frame.
    #[arg(long, env = "HERALD_AUTH_TIMEOUT_SECS", default_value_t = 10)]
    pub auth_timeout_secs: u64,

    /// Seconds of silence after which a WebSocket is pinged; a peer that has not answered the
    /// ping an interval later is closed with code 4000. 0 disables pings.
    #[arg(long, env = "HERALD_PING_INTERVAL_SECS", default_value_t = 30)]
    pub ping_interval_secs: u64,

    /// Seconds to let connections drain on SIGTERM before exiting.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    pub shutdown_grace_secs: u64,

    /// Serve HTTPS and WSS with this certificate chain (PEM file, leaf first); needs
    /// --tls-key. Without both, the server speaks plain HTTP.
    #[arg(long, env = "HERALD_TLS_CERT", requires = "tls_key")]
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM file: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HERALD_TLS_KEY", requires = "tls_cert")]
    #[serde(default)]
    pub tls_key: Option<PathBuf>,

    /// Read the app secret (at least 32 characters; it signs private-channel joins and
    /// webhooks, and is not the token secret) from this file, for every app, instead of the
    /// data directory's app-secrets/<app>: so every node of a deployment uses the same one.
    /// The variable HERALD_APP_SECRET, holding the secret itself, takes precedence. App
    /// secrets are read at start: after `herald secret rotate`, restart the server.
    #[arg(long, env = "HERALD_APP_SECRET_FILE")]
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,

    /// The app secret itself, from HERALD_APP_SECRET (never a flag, never in the TOML file).
    #[arg(skip)]
    #[serde(skip)]
    pub app_secret: Option<Secret>,

    /// POST every channel event (see --webhook-events) to this URL, signed with the app
    /// secret (X-Herald-Signature: sha256=<hex HMAC-SHA256 of the body>), at least once and in
    /// seq order per channel, retried with backoff until a 2xx; repeatable (HERALD_WEBHOOK:
    /// comma-separated). Delivery state is durable in the store: a restart loses nothing.
    #[arg(long = "webhook", env = "HERALD_WEBHOOK", value_name = "URL", value_delimiter = ',')]
    #[serde(default)]
    pub webhooks: Vec<String>,

    /// Only these events go to the webhooks (comma-separated; default: all of message,
    /// message_edited, message_deleted, member_joined, member_left, channel_created,
    /// channel_deleted, participant_added, participant_updated, participant_removed).
    #[arg(long, env = "HERALD_WEBHOOK_EVENTS", value_name = "EVENT,...", value_delimiter = ',')]
    #[serde(default)]
    pub webhook_events: Vec<String>,

    /// Milliseconds before the first retry of a failed webhook delivery; each further retry
    /// waits twice as long, up to --webhook-max-backoff-ms.
    #[arg(long, env = "HERALD_WEBHOOK_RETRY_MS", default_value_t = 500)]
    pub webhook_retry_ms: u64,

    /// Longest wait between two retries of a webhook delivery, in milliseconds.
    #[arg(long, env = "HERALD_WEBHOOK_MAX_BACKOFF_MS", default_value_t = 60_000)]
    pub webhook_max_backoff_ms: u64,

    /// Seconds a webhook receiver has to answer one POST before it counts as failed.
    #[arg(long, env = "HERALD_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,

    /// Channels whose webhook deliveries run at once, per webhook (each channel's events go
    /// one after another, in seq order).
    #[arg(long, env = "HERALD_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,

    /// Room presence events (participant_added / _updated / _removed) this node keeps queued
    /// toward the store's webhook outbox at most; while the store is slow or down, events past
    /// this are dropped (counted in herald_webhook_presence_dropped_total).
    #[arg(long, env = "HERALD_WEBHOOK_PRESENCE_QUEUE", default_value_t = 100_000)]
    pub webhook_presence_queue: usize,
    /// Development mode: the chat app at `/` offers "sign in as <name>", backed by
    /// `POST /dev/token?sub=<user>[&name=<display name>]`, which mints a one-day token with the
    /// ordinary grants for anyone who can reach the server. Never on a server others can reach:
    /// it hands out tokens for any user id. Off by default (then `/dev/*` does not exist).
    #[arg(long, env = "HERALD_DEV")]
    #[serde(default)]
    pub dev: bool,

    /// Do not serve the embedded chat app at `/` (the API, /healthz and /metrics stay).
    #[arg(long, env = "HERALD_NO_WEB")]
    #[serde(default)]
    pub no_web: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            c: ServeConfig,
        }
        // Parsing an empty command line only applies the declared defaults; the environment
        // is deliberately not consulted here (tests build configs from this).
        Wrap::parse_from(["herald"]).c
    }
}

/// Error of [`merge_toml`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Applies the keys of a TOML file to every option that was neither given as a flag nor as an
/// environment variable. Unknown keys are an error, so a typo does not go unnoticed.
pub fn merge_toml(
    config: ServeConfig,
    matches: &clap::ArgMatches,
    path: &std::path::Path,
) -> Result<ServeConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
    let perr = |message: String| ConfigError::Parse { path: path.into(), message };
    let mut json = serde_json::to_value(&config).map_err(|e| perr(e.to_string()))?;
    let obj = json.as_object_mut().ok_or_else(|| perr("internal: config is not an object".into()))?;
    for (key, value) in table {
        if !obj.contains_key(&key) {
            return Err(perr(format!("unknown key {key:?}")));
        }
        let explicit = matches!(
            matches.value_source(&key),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        );
        if !explicit {
            let v = serde_json::to_value(value).map_err(|e| perr(e.to_string()))?;
            obj.insert(key, v);
        }
    }
    serde_json::from_value(json).map_err(|e| perr(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        c: ServeConfig,
    }

    fn parse(args: &[&str]) -> (ServeConfig, clap::ArgMatches) {
        let matches = Wrap::command().get_matches_from(args);
        (Wrap::from_arg_matches(&matches).unwrap().c, matches)
    }

    #[test]
    fn rest_rate_limit_comes_from_flags_and_toml_with_flags_first() {
        let d = ServeConfig::default();
        assert_eq!((d.rest_rate_per_sec, d.rest_rate_burst), (1000, 2000));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "rest_rate_per_sec = 5\nrest_rate_burst = 9\n").unwrap();
        let (c, m) = parse(&["herald"]);
        let c = merge_toml(c, &m, &path).unwrap();
        assert_eq!((c.rest_rate_per_sec, c.rest_rate_burst), (5, 9));
        let (c, m) = parse(&["herald", "--rest-rate-per-sec", "7"]);
        let c = merge_toml(c, &m, &path).unwrap();
        assert_eq!((c.rest_rate_per_sec, c.rest_rate_burst), (7, 9));
        let help = Wrap::command().render_long_help().to_string();
        assert!(help.contains("HERALD_REST_RATE_PER_SEC") && help.contains("HERALD_REST_RATE_BURST"));
    }

    #[test]
    fn e2ee_flags_parse_from_flags_and_toml_and_refuse_bad_durations() {
        use std::time::Duration;
        let d = ServeConfig::default();
        assert_eq!(d.dm_ttl.0, Duration::from_secs(30 * 86_400));
        assert_eq!(d.dm_inbox_max, 10_000);
        assert!(d.blob_dir.is_empty());
        let (c, _) = parse(&[
            "herald",
            "--dm-ttl",
            "12h",
            "--dm-inbox-max",
            "5",
            "--blob-dir",
            "/a",
            "--blob-dir",
            "/b,/c",
        ]);
        assert_eq!(c.dm_ttl.0, Duration::from_secs(12 * 3600));
        assert_eq!(c.dm_inbox_max, 5);
        assert_eq!(c.blob_dir, vec![PathBuf::from("/a"), PathBuf::from("/b"), PathBuf::from("/c")]);
        assert_eq!("90s".parse::<HumanDuration>().unwrap().0, Duration::from_secs(90));
        for bad in ["", "30", "d", "3w", "-1d", "0s", "1.5h"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?} must be refused");
        }
        let wrong = Wrap::command().try_get_matches_from(["herald", "--dm-ttl", "soon"]);
        assert!(wrong.is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "dm_ttl = \"90s\"\ndm_inbox_max = 7\nblob_dir = [\"/x\", \"/y\"]\n").unwrap();
        let (c, m) = parse(&["herald"]);
        let c = merge_toml(c, &m, &path).unwrap();
        assert_eq!((c.dm_ttl.0, c.dm_inbox_max), (Duration::from_secs(90), 7));
        assert_eq!(c.blob_dir, vec![PathBuf::from("/x"), PathBuf::from("/y")]);
        std::fs::write(&path, "dm_ttl = \"forever\"\n").unwrap();
        let (c, m) = parse(&["herald"]);
        assert!(merge_toml(c, &m, &path).is_err());
        let help = Wrap::command().render_long_help().to_string();
        for s in [
            "--dm-ttl",
            "HERALD_DM_TTL",
            "--dm-inbox-max",
            "HERALD_DM_INBOX_MAX",
            "--blob-dir",
            "HERALD_BLOB_DIR",
        ] {
            assert!(help.contains(s), "--help must explain {s}");
        }
    }
}
