//! Herald's `publish` path (subjects): subscribers `subscribe` one subject, publishers send
//! `publish` with the payload as `data`; the server fans it out as `publication` events and
//! stores nothing. Herald's durable channel path is [`super::super::fanout`].

use super::super::Ctx;
use super::super::net::{self, Ws};
use super::super::scan::{self, Frame};
use super::{Answer, Peer, Rx, WsPub, ws_header};
// The read buffer of Herald's channel fan-out, so the generator costs the same per frame.
use crate::bench::fanout::READ_BUFFER;
use anyhow::Context;
use futures::StreamExt;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The subject of every run (subjects are scoped to the app; bench users have none).
pub const SUBJECT: &str = "bench.fanout";

#[derive(Debug)]
pub struct HeraldPublish {
    target: net::Target,
    sources: Vec<IpAddr>,
    sub_tokens: Vec<String>,
    pub_tokens: Vec<String>,
}

impl HeraldPublish {
    /// Tokens for `subscribers` users `bench-<i>` and `publishers` users `bench-pub-<k>`.
    pub fn new(ctx: &Ctx, subscribers: usize, publishers: usize) -> anyhow::Result<HeraldPublish> {
        let mint = |name: String| ctx.minter.token(&name, None);
        Ok(HeraldPublish {
            target: ctx.target.clone(),
            sources: ctx.sources.clone(),
            sub_tokens: (0..subscribers)
                .map(|i| mint(format!("bench-{i}")))
                .collect::<anyhow::Result<_>>()?,
            pub_tokens: (0..publishers)
                .map(|k| mint(format!("bench-pub-{k}")))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    async fn open(&self, i: usize, token: Option<&String>) -> anyhow::Result<Ws> {
        let token = token.context("no token minted for this connection")?;
        let source = if self.sources.is_empty() { None } else { Some(self.sources[i % self.sources.len()]) };
        net::open_authed(&self.target, source, READ_BUFFER, token).await
    }
}

/// The stamp in a `publication` event: its `data` is the payload object, whose keys the server
/// writes sorted, so `t` is its last key.
fn publication_stamp(text: &str) -> Option<u64> {
    if !text.starts_with(r#"{"event":"publication""#) {
        return None;
    }
    let at = text.rfind(r#""t":"#)? + 4;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

impl Peer for HeraldPublish {
    type Pub = WsPub;

    async fn subscriber(
        &self,
        i: usize,
        rx: Arc<Rx>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let mut ws = self.open(i, self.sub_tokens.get(i)).await?;
        let frame = serde_json::json!({"id": 2, "op": "subscribe", "subject": SUBJECT});
        net::call(&mut ws, 2, frame).await.context("subscribe")?;
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
                        match publication_stamp(t.as_str()) {
                            Some(s) => rx.frame(i, Some(s), wire),
                            None if t.starts_with(r#"{"event":"publication""#) => rx.unstamped(wire),
                            None => rx.frame(i, None, wire),
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

    async fn publisher(&self, k: usize) -> anyhow::Result<WsPub> {
        let ws = self.open(self.sub_tokens.len() + k, self.pub_tokens.get(k)).await?;
        fn frame(payload: &str, n: u64) -> String {
            // Ids after `connect`'s 1.
            format!(r#"{{"id":{},"op":"publish","subject":"{SUBJECT}","data":{payload}}}"#, n + 1)
        }
        fn answer(text: &str) -> Answer {
            match scan::classify(text) {
                Frame::Reply { ok: false, .. } => Answer::Refused,
                _ => Answer::Nothing,
            }
        }
        Ok(WsPub::spawn(ws, frame, answer))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn publication_stamp_is_the_last_key_of_data() {
        let frame = r#"{"event":"publication","subject":"bench.fanout","from":"bench-pub-0","data":{"p":"xxxx","t":42}}"#;
        assert_eq!(super::publication_stamp(frame), Some(42));
        assert_eq!(super::publication_stamp(r#"{"event":"message","t":1}"#), None);
    }
}
