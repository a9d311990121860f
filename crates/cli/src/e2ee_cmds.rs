//! End-to-end encryption commands over the SDK's `e2ee` layer: devices, direct messages,
//! encrypted channels and files, and the keeper. Every one works on a device state file
//! (`--state`), encrypted at rest with a passphrase (`--passphrase-file` or
//! `HERALD_STATE_PASSPHRASE`) or a 32-byte key file (`--key-file`).

use crate::client_cmds::{Conn, out};
use anyhow::Context;
use herald_client::e2ee::{E2ee, E2eeConfig, Keeper, KeeperAction, KeeperConfig, Opened, StateKey};
use std::path::PathBuf;

/// The device state file and its key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateArgs {
    /// Device state file (created by `herald device init`): the device's keys, sessions,
    /// pinned identities and channel keys, encrypted at rest. With it, `send`, `history`
    /// and `tail` seal and open an encrypted channel's messages transparently.
    #[arg(long, env = "HERALD_STATE", global = true)]
    pub state: Option<PathBuf>,
    /// File whose first line is the state file's passphrase (stretched with Argon2id). The
    /// variable HERALD_STATE_PASSPHRASE, holding the passphrase itself, also works.
    #[arg(long, env = "HERALD_STATE_PASSPHRASE_FILE", global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// File holding a 32-byte key (raw, or 64 hex digits) instead of a passphrase.
    #[arg(long, env = "HERALD_STATE_KEY_FILE", global = true, conflicts_with = "passphrase_file")]
    pub key_file: Option<PathBuf>,
}

impl StateArgs {
    fn key(&self) -> anyhow::Result<StateKey> {
        if let Some(path) = &self.key_file {
            return Ok(StateKey::from_key_file(path)?);
        }
        if let Some(path) = &self.passphrase_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --passphrase-file {}", path.display()))?;
            let line = text.lines().next().unwrap_or("").to_owned();
            anyhow::ensure!(!line.is_empty(), "--passphrase-file {} is empty", path.display());
            return Ok(StateKey::passphrase(line));
        }
        match std::env::var("HERALD_STATE_PASSPHRASE") {
            Ok(p) if !p.is_empty() => Ok(StateKey::passphrase(p)),
            _ => anyhow::bail!(
                "the state file needs a key: pass --passphrase-file, --key-file or set HERALD_STATE_PASSPHRASE"
            ),
        }
    }
}

/// End-to-end encryption commands.
#[derive(Debug, clap::Subcommand)]
pub enum E2eeCommand {
    /// Manage this user's E2EE devices.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// `herald dm <user> <text>` sends an end-to-end encrypted direct message to every
    /// device of <user> (and your other devices); `herald dm tail` prints the ones this
    /// device receives, inbox first, one line each.
    Dm {
        /// The recipient user, or `tail`.
        target: String,
        /// The message (absent with `tail`).
        text: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Encrypted, erasure-coded files in an encrypted channel.
    File {
        #[command(subcommand)]
        cmd: FileCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run a keeper device (the token needs the `keeper` grant): seals epoch keys to
    /// members who join encrypted channels, and rotates keys when a member leaves. Prints
    /// one line per action.
    Keeper {
        /// Only serve these channels: a file with one channel id per line (`#` comments).
        #[arg(long)]
        allow: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeviceCmd {
    /// Create the state file with a new device and register it with the server; prints
    /// the device id and its fingerprint.
    Init {
        /// Device id (1-128 characters of A-Z a-z 0-9 _ . : -); random without it.
        #[arg(long)]
        id: Option<String>,
    },
    /// List a user's devices (yours without a user) with their fingerprints.
    List { user: Option<String> },
    /// Revoke one of your devices: its inbox and key envelopes are erased.
    Revoke { device_id: String },
    /// Pin a device after checking its fingerprint out of band.
    Verify { user: String, device_id: String, fingerprint: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum FileCmd {
    /// Encrypt a file, upload it as 4 data + 2 parity shards, and send its manifest
    /// sealed; prints the message id.
    Put { channel: String, path: PathBuf },
    /// Rebuild the file of message <message_id> from any 4 intact shards into <out>.
    Get { channel: String, message_id: String, out: PathBuf },
}

/// Connects with the device of `conn`'s state file (which `device init` creates).
/// With `create`, a missing state file is created with a new device (`device_id`, random
/// without it); otherwise a missing file is an error.
pub(crate) async fn connect_e2ee(
    conn: &Conn,
    create: bool,
    device_id: Option<String>,
) -> anyhow::Result<E2ee> {
    let state =
        conn.e2ee.state.as_ref().context("this command needs --state FILE (see `herald device init`)")?;
    if !create && !state.exists() {
        anyhow::bail!("no state file {}: create it with `herald device init --state {0}`", state.display());
    }
    let mut cfg = E2eeConfig::new(state, conn.e2ee.key()?);
    cfg.device_id = device_id;
    let (token, config) = conn.client_config()?;
    E2ee::connect(&conn.url, &token, config, cfg)
        .await
        .with_context(|| format!("cannot connect to {}", conn.url))
}

pub(crate) fn opened_line(o: &Opened) -> String {
    match o {
        Ok(m) => match m.file() {
            Some(f) => format!(
                "#{} {} {}: [file {} {} bytes] {}",
                m.seq, m.ts, m.author, f.manifest.name, f.manifest.size, m.id
            ),
            None => format!("#{} {} {}: {}", m.seq, m.ts, m.author, m.text()),
        },
        Err(u) => format!("#{} {}: [cannot open: {}]", u.seq, u.author, u.reason),
    }
}

pub fn run(cmd: E2eeCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: E2eeCommand) -> anyhow::Result<()> {
    match cmd {
        E2eeCommand::Device { cmd, conn } => match cmd {
            DeviceCmd::Init { id } => {
                let state = conn.e2ee.state.as_ref().context("device init needs --state FILE")?;
                anyhow::ensure!(!state.exists(), "{} exists already: it holds a device", state.display());
                let e = connect_e2ee(&conn, true, id).await?;
                out(format!("{}\t{}", e.device_id(), e.fingerprint()))?;
                e.close().await;
            }
            DeviceCmd::List { user } => {
                let e = connect_e2ee(&conn, false, None).await?;
                let user = user.unwrap_or_else(|| e.user());
                for d in e.list_devices(&user).await? {
                    let pin = match e.pin_status(&d.device_id) {
                        Some(true) => "verified",
                        Some(false) => "pinned",
                        None if d.device_id == e.device_id() => "this device",
                        None => "unpinned",
                    };
                    out(format!(
                        "{}\t{}\tone_time_keys={}\t{pin}",
                        d.device_id,
                        d.fingerprint(),
                        d.one_time_keys
                    ))?;
                }
                e.close().await;
            }
            DeviceCmd::Revoke { device_id } => {
                let e = connect_e2ee(&conn, false, None).await?;
                e.revoke_device(&device_id).await?;
                e.close().await;
            }
            DeviceCmd::Verify { user, device_id, fingerprint } => {
                let e = connect_e2ee(&conn, false, None).await?;
                e.verify_device(&user, &device_id, &fingerprint).await?;
                out(format!("verified {user}/{device_id}"))?;
                e.close().await;
            }
        },
        E2eeCommand::Dm { target, text, conn } => {
            let e = connect_e2ee(&conn, false, None).await?;
            match (target.as_str(), text) {
                ("tail", None) => {
                    let mut dms = e.dms();
                    eprintln!("herald: receiving direct messages for device {}", e.device_id());
                    while let Some(dm) = dms.next().await {
                        match dm {
                            Ok(dm) => {
                                out(format!("{} {}/{}: {}", dm.ts, dm.from, dm.from_device, dm.text()))?
                            }
                            Err(f) => out(format!(
                                "[cannot read {} from {}/{}: {}]",
                                f.id, f.from, f.from_device, f.reason
                            ))?,
                        }
                    }
                }
                (_, Some(text)) => {
                    let ids = e.send_dm(&target, text.as_bytes()).await?;
                    out(format!("sent to {} devices", ids.len()))?;
                    e.close().await;
                }
                (_, None) => anyhow::bail!("usage: herald dm <user> <text>, or herald dm tail"),
            }
        }
        E2eeCommand::File { cmd, conn } => {
            let e = connect_e2ee(&conn, false, None).await?;
            match cmd {
                FileCmd::Put { channel, path } => {
                    let bytes =
                        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    let ch = e.channels().get(&channel).await?;
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let (m, _) = ch.put_file(&bytes, &name, "application/octet-stream").await?;
                    out(m.id)?;
                }
                FileCmd::Get { channel, message_id, out: dest } => {
                    let ch = e.channels().get(&channel).await?;
                    let m = ch.get_message(&message_id).await?;
                    let f = m.file().with_context(|| format!("message {message_id} carries no file"))?;
                    let bytes = ch.get_file(&f.manifest).await?;
                    std::fs::write(&dest, &bytes)
                        .with_context(|| format!("cannot write {}", dest.display()))?;
                    out(format!("{} bytes written to {}", bytes.len(), dest.display()))?;
                }
            }
            e.close().await;
        }
        E2eeCommand::Keeper { allow, conn } => {
            let config = match &allow {
                Some(path) => KeeperConfig::allow_file(path)?,
                None => KeeperConfig::default(),
            };
            let e = connect_e2ee(&conn, true, None).await?;
            eprintln!("herald: keeper device {} ready ({})", e.device_id(), e.fingerprint());
            let keeper = Keeper::new(e, config);
            keeper
                .run(|a| {
                    let line = match a {
                        KeeperAction::Admitted { channel, user } => format!("admitted {user} to {channel}"),
                        KeeperAction::Removed { channel, user } => format!("removed {user} from {channel}"),
                        KeeperAction::Failed { channel, user, error } => {
                            format!("failed {user} in {channel}: {error}")
                        }
                        KeeperAction::Ignored { channel } => format!("ignored {channel}"),
                    };
                    let _ = out(line);
                })
                .await;
        }
    }
    Ok(())
}
