//! NATS core pub/sub through `async-nats`: one client per connection, every subscriber on one
//! subject, publishers on their own clients. Nothing is stored or acknowledged: a core NATS
//! publish is fire-and-forget.

use super::{Peer, Publisher, Rx, stamp};
use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Nats {
    pub url: String,
    pub subject: String,
}

impl Nats {
    async fn client(&self, name: String) -> anyhow::Result<async_nats::Client> {
        async_nats::ConnectOptions::new()
            .name(name)
            // Every message of a run may be in flight to one subscriber at once.
            .subscription_capacity(1 << 16)
            .connect(self.url.as_str())
            .await
            .with_context(|| format!("cannot connect to NATS at {}", self.url))
    }
}

/// Bytes of the `MSG <subject> <sid> <#bytes>\r\n<payload>\r\n` frame that carried `m`
/// (each client has one subscription, sid 1; the bench sends no headers and no reply subject).
fn msg_frame_len(m: &async_nats::Message) -> usize {
    let len = m.payload.len();
    "MSG ".len() + m.subject.len() + " 1 ".len() + len.to_string().len() + 2 + len + 2
}

impl Peer for Nats {
    type Pub = NatsPub;

    async fn subscriber(
        &self,
        i: usize,
        rx: Arc<Rx>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let client = self.client(format!("herald-bench-sub-{i}")).await?;
        let mut sub = client.subscribe(self.subject.clone()).await.context("NATS SUB")?;
        // A round trip (PING/PONG) after SUB: the server has the subscription.
        client.flush().await.context("NATS flush after SUB")?;
        Ok(tokio::spawn(async move {
            let _client = client;
            let mut stopped = crate::bench::net::stopped(&mut stop);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    m = sub.next() => match m {
                        Some(m) => rx.frame(i, stamp(&m.payload), msg_frame_len(&m)),
                        None => {
                            rx.closed();
                            return;
                        }
                    },
                }
            }
        }))
    }

    async fn publisher(&self, i: usize) -> anyhow::Result<NatsPub> {
        Ok(NatsPub {
            client: self.client(format!("herald-bench-pub-{i}")).await?,
            subject: self.subject.clone(),
        })
    }
}

#[derive(Debug)]
pub struct NatsPub {
    client: async_nats::Client,
    subject: String,
}

impl Publisher for NatsPub {
    async fn publish(&mut self, payload: String) -> anyhow::Result<()> {
        self.client.publish(self.subject.clone(), Bytes::from(payload)).await.context("NATS PUB")
    }

    async fn finish(self) -> anyhow::Result<u64> {
        self.client.flush().await.context("NATS flush")?;
        Ok(0)
    }
}
