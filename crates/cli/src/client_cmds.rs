//! Client commands: thin wrappers over the Rust SDK that print one line per item, or JSON.

use anyhow::Context;
use futures::StreamExt;
use herald_client::{Channel, Client, ClientEvent, Event, HistoryQuery, SendMessage};
use herald_proto::model::Message;
use std::io::Write;

/// Where the server is and who we are.
#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Server URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7700")]
    pub url: String,
    /// Token (see `herald token`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of a certificate authority to trust for https:// and wss:// besides the
    /// usual public ones (the certificate of a self-signed `serve --tls-cert`).
    #[arg(long, env = "HERALD_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub e2ee: crate::e2ee_cmds::StateArgs,
}

impl Conn {
    /// The token and the SDK configuration these flags describe.
    pub(crate) fn client_config(&self) -> anyhow::Result<(String, herald_client::ClientConfig)> {
        let token = self.token.as_deref().filter(|t| !t.is_empty()).context(
            "no token: pass --token or set HERALD_TOKEN (mint one with `herald token --sub <user>`)",
        )?;
        let mut config = herald_client::ClientConfig::default();
        if let Some(path) = &self.ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read --ca-file {}", path.display()))?;
            config.add_root_certificate_pem(&pem).with_context(|| format!("--ca-file {}", path.display()))?;
        }
        Ok((token.to_owned(), config))
    }
}

/// Commands that talk to a running server.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create, join, list, delete channels.
    Channel {
        #[command(subcommand)]
        cmd: ChannelCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send a message to a channel you are a member of (name or id).
    Send {
        channel: String,
        text: String,
        /// Reply to this message id.
        #[arg(long)]
        reply_to: Option<String>,
        /// Message type.
        #[arg(long = "type", default_value = "chat.text")]
        kind: String,
        /// Idempotency key: sending again with the same key appends nothing.
        #[arg(long)]
        client_id: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a page of the history of a channel you are a member of, oldest first.
    History {
        channel: String,
        /// Messages to fetch (1-500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only messages with a seq below this one.
        #[arg(long)]
        before: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Follow a channel live, one line per event (joins it if you are not a member).
    Tail {
        channel: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check a channel's whole hash chain as the server serves it: every entry's content against
    /// its content_hash, every hash against its fields, every link to the entry before.
    Verify {
        channel: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Publish JSON to a subject.
    Publish {
        subject: String,
        /// JSON data, e.g. '{"online": true}'.
        json: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print publications of a subject, one JSON line each.
    Subscribe {
        subject: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ChannelCmd {
    /// Create a channel (creating one you already created just returns it).
    Create {
        name: String,
        #[arg(long)]
        title: Option<String>,
        /// Only members and admins may add people.
        #[arg(long)]
        invite: bool,
        /// Initial members (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
        /// End-to-end encrypted (needs --state): the genesis roster commit is signed by
        /// this device and the first key sealed to every member and keeper device.
        #[arg(long)]
        encrypted: bool,
    },
    /// Join a channel by name or id.
    Join { channel: String },
    /// List your channels with unread counts.
    List,
    /// List the named channels you may join.
    Directory,
    /// Delete a channel and its history.
    Delete { channel: String },
}

pub fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(cmd))
}

async fn connect(conn: &Conn) -> anyhow::Result<Client> {
    let (token, config) = conn.client_config()?;
    Client::connect_with(&conn.url, &token, config)
        .await
        .with_context(|| format!("cannot connect to {}", conn.url))
}

pub(crate) fn out(line: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}

/// A channel the user is already in, by name or id (never joins: reading or sending must not
/// change membership behind the user's back).
async fn member_channel(client: &Client, channel: &str) -> anyhow::Result<Channel> {
    Ok(client.channels().get(channel).await?)
}

/// A channel by name or id, joining it if the user is not a member yet.
async fn open_channel(client: &Client, channel: &str) -> anyhow::Result<Channel> {
    Ok(client.channels().join(channel).await?)
}

fn message_line(m: &Message) -> String {
    let edited = if m.edited_at.is_some() { " (edited)" } else { "" };
    format!("#{} {} {}: {}{edited}", m.seq, m.ts, m.author, m.content)
}

fn event_line(e: &Event) -> Option<String> {
    Some(match e {
        Event::Message { message, .. } => message_line(message),
        Event::MessageEdited { meta, message_id, content, .. } => {
            format!("#{} {} {} edited {message_id}: {content}", meta.seq, meta.ts, meta.author)
        }
        Event::MessageDeleted { meta, message_id, .. } => {
            format!("#{} {} {} deleted {message_id}", meta.seq, meta.ts, meta.author)
        }
        Event::Reaction { meta, message_id, emoji, .. } => {
            format!("#{} {} {} reacted {emoji} to {message_id}", meta.seq, meta.ts, meta.author)
        }
        Event::ReactionDeleted { meta, reaction_id, .. } => {
            format!("#{} {} {} removed reaction {reaction_id}", meta.seq, meta.ts, meta.author)
        }
        Event::MemberJoined { meta, user, .. } => format!("#{} {} {user} joined", meta.seq, meta.ts),
        Event::MemberLeft { meta, user, .. } => format!("#{} {} {user} left", meta.seq, meta.ts),
        Event::ChannelCreated { meta, name, .. } => {
            format!("#{} {} channel {} created", meta.seq, meta.ts, name.as_deref().unwrap_or(""))
        }
        Event::KeyRotated { meta, .. } => format!("#{} {} key rotated", meta.seq, meta.ts),
        Event::ChannelDeleted { .. } => "channel deleted".to_owned(),
        Event::MessageRead { user, message_id, .. } => format!("{user} read {message_id}"),
        Event::Typing { user, is_typing, .. } => {
            format!("{user} {}", if *is_typing { "is typing" } else { "stopped typing" })
        }
        Event::Ephemeral { from, subject, data, .. } => format!("{from} {subject} {data}"),
        Event::ResumeTruncated { from_seq, .. } => format!("(older than #{from_seq} not replayed)"),
        // Device and keeper events (§7) are not channel lines; the E2EE commands show them.
        Event::Publication { .. } | Event::Dm { .. } | Event::KeysNeeded { .. } => return None,
    })
}

async fn run_async(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Channel { cmd, conn } => {
            let client = connect(&conn).await?;
            match cmd {
                ChannelCmd::Create { name, members, encrypted: true, .. } => {
                    client.close().await;
                    let e = crate::e2ee_cmds::connect_e2ee(&conn, false, None).await?;
                    let m: Vec<&str> = members.iter().map(String::as_str).collect();
                    let ch = e.channels().create_encrypted_with(Some(&name), &m).await?;
                    out(ch.id())?;
                    e.close().await;
                    return Ok(());
                }
                ChannelCmd::Create { name, title, invite, members, encrypted: false } => {
                    let ch = client
                        .channels()
                        .create_with(herald_client::CreateChannel {
                            name: Some(name),
                            title,
                            members,
                            encrypted: false,
                            policy: invite.then_some(herald_proto::model::Policy::Invite),
                        })
                        .await?;
                    out(ch.id())?;
                }
                ChannelCmd::Join { channel } => out(open_channel(&client, &channel).await?.id())?,
                ChannelCmd::List => {
                    for c in client.channels().list().await? {
                        out(format!(
                            "{}\t{}\tunread={}\tlast_seq={}",
                            c.id,
                            c.name.as_deref().unwrap_or("-"),
                            c.unread,
                            c.last_seq
                        ))?;
                    }
                }
                ChannelCmd::Directory => {
                    for c in client.channels().directory().await? {
                        out(format!("{}\t{}", c.id, c.name))?;
                    }
                }
                ChannelCmd::Delete { channel } => client.channels().delete(&channel).await?,
            }
            client.close().await;
        }
        ClientCommand::Send { channel, text, conn, .. } if conn.e2ee.state.is_some() => {
            let e = crate::e2ee_cmds::connect_e2ee(&conn, false, None).await?;
            let m = e.channels().get(&channel).await?.send(&text).await?;
            out(format!("{}\t#{}", m.id, m.seq))?;
            e.close().await;
        }
        ClientCommand::History { channel, limit, conn, .. } if conn.e2ee.state.is_some() => {
            let e = crate::e2ee_cmds::connect_e2ee(&conn, false, None).await?;
            let all = e.channels().get(&channel).await?.history().await?;
            let skip = all.len().saturating_sub(limit as usize);
            for o in &all[skip..] {
                out(crate::e2ee_cmds::opened_line(o))?;
            }
            e.close().await;
        }
        ClientCommand::Tail { channel, conn, .. } if conn.e2ee.state.is_some() => {
            let e = crate::e2ee_cmds::connect_e2ee(&conn, false, None).await?;
            let ch = e.channels().join(&channel).await?;
            let mut messages = ch.messages();
            eprintln!("herald: following {channel} ({}), decrypting", ch.id());
            while let Some(o) = messages.next().await {
                out(crate::e2ee_cmds::opened_line(&o))?;
            }
        }
        ClientCommand::Send { channel, text, reply_to, kind, client_id, conn } => {
            let client = connect(&conn).await?;
            let ch = member_channel(&client, &channel).await?;
            let m = ch
                .send_with(SendMessage {
                    content: text,
                    kind: Some(kind),
                    reply_to,
                    client_id,
                    author: None,
                    epoch: None,
                })
                .await?;
            out(format!("{}\t#{}", m.id, m.seq))?;
            client.close().await;
        }
        ClientCommand::History { channel, limit, before, json, conn } => {
            let client = connect(&conn).await?;
            let ch = member_channel(&client, &channel).await?;
            let page =
                ch.history(HistoryQuery { limit: Some(limit), before, ..HistoryQuery::default() }).await?;
            // Pages come newest first; print oldest first, like a chat window.
            for m in page.messages.iter().rev() {
                if json {
                    out(serde_json::to_string(m)?)?;
                } else {
                    out(message_line(m))?;
                }
            }
            client.close().await;
        }
        ClientCommand::Tail { channel, json, conn } => {
            let client = connect(&conn).await?;
            let ch = open_channel(&client, &channel).await?;
            let id = ch.id().to_owned();
            let mut events = client.events();
            // On stderr, so stdout stays one line per event: scripts (and tests) learn that
            // tail is listening from here on.
            eprintln!("herald: following {channel} ({id})");
            while let Some(ev) = events.next().await {
                match ev {
                    ClientEvent::Event(e) if e.channel() == Some(id.as_str()) => {
                        if json {
                            out(serde_json::to_string(&*e)?)?;
                        } else if let Some(line) = event_line(&e) {
                            out(line)?;
                        }
                        if matches!(*e, Event::ChannelDeleted { .. }) {
                            break;
                        }
                    }
                    ClientEvent::ChainError(e) => anyhow::bail!("history failed verification: {e}"),
                    ClientEvent::Lagged { capacity } => {
                        anyhow::bail!("output fell more than {capacity} events behind; run tail again")
                    }
                    ClientEvent::Disconnected { reason } => {
                        eprintln!("herald: disconnected ({reason}); reconnecting")
                    }
                    _ => {}
                }
            }
        }
        ClientCommand::Verify { channel, conn } => {
            let client = connect(&conn).await?;
            let ch = member_channel(&client, &channel).await?;
            let mut verifier = herald_proto::ChainVerifier::new();
            let (mut after, mut entries, mut erased) = (0u64, 0u64, 0u64);
            let mut head = None;
            loop {
                // Pages are checked here entry by entry from entry 1, independently of the SDK.
                let page = ch.raw_log(after, 500).await?;
                for e in &page.entries {
                    let r = e
                        .as_entry_ref(ch.id())
                        .with_context(|| format!("entry {} has an unreadable timestamp", e.seq))?;
                    if entries == 0 && e.seq != 1 {
                        anyhow::bail!("the log does not start at entry 1 (first is {})", e.seq);
                    }
                    match verifier.check(&r) {
                        Ok(herald_proto::chain::Verdict::Next) => {}
                        Ok(herald_proto::chain::Verdict::Duplicate) => {
                            anyhow::bail!("entry {} was served twice", e.seq)
                        }
                        Err(err) => anyhow::bail!("chain broken: {err}"),
                    }
                    entries += 1;
                    erased += u64::from(e.content.is_none());
                    after = e.seq;
                    head = Some(e.hash.clone());
                }
                if !page.has_more || page.entries.is_empty() {
                    break;
                }
            }
            out(format!(
                "ok: {entries} entries verified ({erased} erased by deletes), head #{after} {}",
                head.unwrap_or_default()
            ))?;
            client.close().await;
        }
        ClientCommand::Publish { subject, json, conn } => {
            let data: serde_json::Value =
                serde_json::from_str(&json).with_context(|| format!("{json:?} is not JSON"))?;
            let client = connect(&conn).await?;
            client.publish(&subject, data).await?;
            client.close().await;
        }
        ClientCommand::Subscribe { subject, conn } => {
            let client = connect(&conn).await?;
            let mut sub = client.subscribe(&subject).await?;
            while let Some(p) = sub.recv().await {
                out(serde_json::json!({"subject": p.subject, "from": p.from, "data": p.data}))?;
            }
        }
    }
    Ok(())
}
