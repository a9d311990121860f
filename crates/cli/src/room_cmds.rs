//! `herald room …`: rooms of participants (PROTOCOL.md §8) from the command line, over the
//! Rust SDK. Output is one JSON object per line.

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use herald_client::room::{Room, RoomIncoming};
use herald_client::{Client, ClientConfig};
use herald_proto::rooms::RoomEvent;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the server is and who we are (the same as the other client commands).
#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Server URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// Token (see `herald token`); its `kind` (human, agent, service) is the participant's.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RoomArgs {
    #[command(subcommand)]
    cmd: RoomCmd,
}

#[derive(Debug, clap::Subcommand)]
enum RoomCmd {
    /// List participants, or send to them (you enter the room for the time of a send).
    Messaging {
        #[command(subcommand)]
        cmd: MessagingCmd,
    },
    /// Enter a room and stay: print every room event as a JSON line until interrupted.
    Join {
        /// The channel (name or id) whose room to enter; you must be a member.
        #[arg(long)]
        room: String,
        /// Refuse to run unless the token's kind is this one (human, agent, service): the
        /// kind of a participant comes from its token (`herald token --kind agent`).
        #[arg(long)]
        kind: Option<String>,
        /// Your participant attributes, a JSON object of at most 4 KiB.
        #[arg(long, default_value = "{}")]
        attributes: String,
        /// Accept every stream offered to you and write each into this directory, as a file
        /// named after the stream id.
        #[arg(long)]
        accept_streams: Option<PathBuf>,
        /// Credit window of accepted streams, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        stream_credit: u64,
        /// Milliseconds to wait after writing each chunk of an accepted stream: a slow reader,
        /// to watch credit-based flow control pace the writer.
        #[arg(long, default_value_t = 0)]
        chunk_delay_ms: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send a file as a stream to one participant (waits for it to accept).
    Stream {
        #[arg(long)]
        room: String,
        /// The participant id to stream to.
        #[arg(long)]
        to: String,
        /// JSON header for the stream request.
        #[arg(long, default_value = "{}")]
        header: String,
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, clap::Subcommand)]
enum MessagingCmd {
    /// Print the room's participants, one JSON object per line.
    List {
        #[arg(long)]
        room: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send a typed JSON message to one participant, optionally with a file attached.
    Send {
        #[arg(long)]
        room: String,
        #[arg(long)]
        to_participant_id: String,
        #[arg(long = "type", default_value = "chat")]
        kind: String,
        /// The message, JSON.
        #[arg(long)]
        data: String,
        /// A file sent as the message's binary attachment (up to the server's
        /// --max-attachment-bytes).
        #[arg(long)]
        attachment: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send a typed JSON message to every other participant.
    Broadcast {
        #[arg(long)]
        room: String,
        #[arg(long = "type", default_value = "chat")]
        kind: String,
        #[arg(long)]
        data: String,
        #[arg(long)]
        attachment: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn run(args: RoomArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(args.cmd))
}

async fn connect(conn: &Conn) -> anyhow::Result<Client> {
    let token =
        conn.token.as_deref().filter(|t| !t.is_empty()).context(
            "no token: pass --token or set HERALD_TOKEN (mint one with `herald token --sub <user>`)",
        )?;
    Client::connect_with(&conn.url, token, ClientConfig::default())
        .await
        .with_context(|| format!("cannot connect to {}", conn.url))
}

fn out(v: &Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{v}")?;
    stdout.flush()?;
    Ok(())
}

fn json_arg(what: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not JSON: {text:?}"))
}

fn object_arg(what: &str, text: &str) -> anyhow::Result<Map<String, Value>> {
    match json_arg(what, text)? {
        Value::Object(m) => Ok(m),
        _ => anyhow::bail!("{what} must be a JSON object, not {text:?}"),
    }
}

fn read_file(path: &Path) -> anyhow::Result<Bytes> {
    Ok(Bytes::from(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?))
}

async fn run_async(cmd: RoomCmd) -> anyhow::Result<()> {
    match cmd {
        RoomCmd::Messaging { cmd: MessagingCmd::List { room, conn } } => {
            let client = connect(&conn).await?;
            for p in client.room(&room).participants().await? {
                out(&serde_json::to_value(&p)?)?;
            }
        }
        RoomCmd::Messaging {
            cmd: MessagingCmd::Send { room, to_participant_id, kind, data, attachment, conn },
        } => {
            let data = json_arg("--data", &data)?;
            let attachment = attachment.as_deref().map(read_file).transpose()?;
            let client = connect(&conn).await?;
            let room = client.room(&room);
            room.enter(Map::new()).await?;
            room.send(&to_participant_id, &kind, data, attachment).await?;
            room.leave().await?;
        }
        RoomCmd::Messaging { cmd: MessagingCmd::Broadcast { room, kind, data, attachment, conn } } => {
            let data = json_arg("--data", &data)?;
            let attachment = attachment.as_deref().map(read_file).transpose()?;
            let client = connect(&conn).await?;
            let room = client.room(&room);
            room.enter(Map::new()).await?;
            room.broadcast(&kind, data, attachment).await?;
            room.leave().await?;
        }
        RoomCmd::Join { room, kind, attributes, accept_streams, stream_credit, chunk_delay_ms, conn } => {
            let attributes = object_arg("--attributes", &attributes)?;
            let client = connect(&conn).await?;
            let mine = client.user().kind.as_str();
            if let Some(k) = kind
                && k != mine
            {
                anyhow::bail!(
                    "the token's kind is {mine:?}, not {k:?}: a participant's kind comes from its token (mint one with `herald token --kind {k}`)"
                );
            }
            if let Some(dir) = &accept_streams {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let handle = client.room(&room);
            let mut events = handle.events();
            let ok = handle.enter(attributes).await?;
            out(
                &json!({"event": "entered", "participant_id": ok.participant_id, "participants": ok.participants, "count": ok.count}),
            )?;
            let delay = std::time::Duration::from_millis(chunk_delay_ms);
            while let Some(item) = events.next().await {
                match item {
                    RoomIncoming::Event { event, bytes } => {
                        let mut line = serde_json::to_value(&event)?;
                        if let Some(b) = &bytes {
                            line["attachment_bytes"] = json!(b.len());
                        }
                        out(&line)?;
                        if let (RoomEvent::StreamRequest { stream_id, .. }, Some(dir)) =
                            (&event, &accept_streams)
                        {
                            let saved = save_stream(&handle, stream_id, dir, stream_credit, delay).await?;
                            out(&saved)?;
                        }
                    }
                    RoomIncoming::Disconnected => {
                        anyhow::bail!("disconnected from the server; the participant is gone")
                    }
                    RoomIncoming::Lagged => anyhow::bail!("fell too far behind the room's events"),
                }
            }
        }
        RoomCmd::Stream { room, to, header, file, conn } => {
            let header = json_arg("--header", &header)?;
            let client = connect(&conn).await?;
            let handle = client.room(&room);
            handle.enter(Map::new()).await?;
            let mut writer = handle.create_stream(&to, header).await?;
            let mut f = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("cannot open {}", file.display()))?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                use tokio::io::AsyncReadExt;
                let n = f.read(&mut buf).await.with_context(|| format!("cannot read {}", file.display()))?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n]).await?;
                total += n as u64;
            }
            let stream_id = writer.stream_id().to_owned();
            writer.close().await?;
            out(&json!({"stream_id": stream_id, "bytes": total}))?;
            handle.leave().await?;
        }
    }
    Ok(())
}

/// Accepts a stream and writes it to `dir/<stream id>`; the summary line to print.
async fn save_stream(
    room: &Room,
    stream_id: &str,
    dir: &Path,
    credit: u64,
    delay: std::time::Duration,
) -> anyhow::Result<Value> {
    use tokio::io::AsyncWriteExt;
    // Stream ids are server-made UUIDs; refuse anything else as a file name.
    if !herald_proto::names::looks_like_uuid(stream_id) {
        anyhow::bail!("unexpected stream id {stream_id:?}");
    }
    let path = dir.join(stream_id);
    let mut f =
        tokio::fs::File::create(&path).await.with_context(|| format!("cannot create {}", path.display()))?;
    let mut reader = room.accept(stream_id, Some(credit)).await?;
    let mut total = 0u64;
    while let Some(chunk) = reader.next().await {
        let chunk = chunk?;
        f.write_all(&chunk).await.with_context(|| format!("cannot write {}", path.display()))?;
        total += chunk.len() as u64;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    f.flush().await?;
    Ok(json!({"event": "stream_saved", "stream_id": stream_id, "path": path, "bytes": total}))
}
