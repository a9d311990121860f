//! A Socket.IO 4 server (`bench/peers/socketio/server.js`, node) spoken to directly: Engine.IO
//! v4 over a plain WebSocket (`/socket.io/?EIO=4&transport=websocket`), Socket.IO packets as
//! text frames. Subscribers `join` one room (acknowledged); publishers emit `pub` and the
//! server broadcasts `m` to the room.
//!
//! Packets used: Engine.IO `0` open, `2` ping / `3` pong, `4` message; inside it Socket.IO
//! `0` connect, `2` event, `3` ack (with an id after the type: `421[...]` / `431[...]`).

use super::super::net::{self, Ws};
use super::{Answer, Peer, Rx, WsPub, stamp, ws_header};
// The read buffer of Herald's channel fan-out, so the generator costs the same per frame.
use crate::bench::fanout::READ_BUFFER;
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug)]
pub struct SocketIo {
    pub target: net::Target,
}

impl SocketIo {
    /// `addr` is the server's `host:port`.
    pub async fn new(authority: &str) -> anyhow::Result<SocketIo> {
        let mut target = net::Target::resolve(&format!("http://{authority}")).await?;
        target.ws_url = format!("ws://{authority}/socket.io/?EIO=4&transport=websocket");
        Ok(SocketIo { target })
    }

    /// A WebSocket with the Engine.IO handshake done and connected to the `/` namespace.
    async fn open(&self) -> anyhow::Result<Ws> {
        let mut ws = net::open(&self.target, None, READ_BUFFER).await?;
        let open = next_text(&mut ws).await.context("Engine.IO open")?;
        if !open.starts_with('0') {
            bail!("expected an Engine.IO open packet, got {open:?}");
        }
        ws.send(Message::text("40")).await?;
        loop {
            let t = next_text(&mut ws).await.context("Socket.IO connect")?;
            if t.starts_with("40") {
                return Ok(ws);
            }
            if t.starts_with("44") {
                bail!("Socket.IO refused the connection: {t}");
            }
        }
    }
}

/// The next text frame, answering Engine.IO pings meanwhile.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => ws.send(Message::text("3")).await?,
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => bail!("the Socket.IO server closed the connection"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// The stamp of a `42["m",<payload>]` broadcast.
fn broadcast_stamp(text: &str) -> Option<u64> {
    stamp(text.strip_prefix(r#"42["m","#)?.as_bytes())
}

impl Peer for SocketIo {
    type Pub = WsPub;

    async fn subscriber(
        &self,
        i: usize,
        rx: Arc<Rx>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let mut ws = self.open().await?;
        let join = format!("421{}", serde_json::json!(["join", ROOM]));
        ws.send(Message::text(join)).await?;
        loop {
            if next_text(&mut ws).await.context("join")?.starts_with("431") {
                break;
            }
        }
        Ok(tokio::spawn(async move {
            let mut stopped = net::stopped(&mut stop);
            loop {
                let m = tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    m = ws.next() => m,
                };
                match m {
                    Some(Ok(Message::Text(t))) => {
                        let wire = t.len() + ws_header(t.len());
                        if t.as_str() == "2" {
                            rx.frame(i, None, wire);
                            if ws.send(Message::text("3")).await.is_err() {
                                rx.closed();
                                return;
                            }
                        } else {
                            match broadcast_stamp(t.as_str()) {
                                Some(s) => rx.frame(i, Some(s), wire),
                                None => rx.unstamped(wire),
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        rx.closed();
                        return;
                    }
                    Some(Ok(_)) => {}
                }
            }
        }))
    }

    async fn publisher(&self, _i: usize) -> anyhow::Result<WsPub> {
        let ws = self.open().await?;
        // The payload is JSON: it goes into the event as an object, as a chat app's would.
        fn frame(payload: &str, _n: u64) -> String {
            format!(r#"42["pub","{ROOM}",{payload}]"#)
        }
        Ok(WsPub::spawn(ws, frame, |t| if t == "2" { Answer::Reply("3") } else { Answer::Nothing }))
    }
}

/// The one room every subscriber joins (one bench runs at a time against a server it owns).
pub const ROOM: &str = "herald-bench";

#[cfg(test)]
mod tests {
    #[test]
    fn broadcast_stamp_reads_the_payload_of_an_m_event() {
        let p = super::super::payload(42, 64);
        assert_eq!(super::broadcast_stamp(&format!(r#"42["m",{p}]"#)), Some(42));
        assert_eq!(super::broadcast_stamp(r#"42["other",{"t":1}]"#), None);
    }
}
