//! Redis pub/sub through the `redis` crate (tokio): every subscriber a `SUBSCRIBE`d
//! connection on one channel; publishers on multiplexed connections, `PUBLISH`es pipelined
//! (not awaited one by one) so that, as for the other targets, the sender does not wait for
//! the fan-out before sending the next.

use super::{Peer, Publisher, Rx, stamp};
use anyhow::Context;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug)]
pub struct Redis {
    pub client: redis::Client,
    pub channel: String,
}

impl Redis {
    pub fn new(url: &str, channel: String) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url).with_context(|| format!("--redis-url {url:?}"))?;
        Ok(Redis { client, channel })
    }
}

/// Bytes of the RESP2 push `*3\r\n$7\r\nmessage\r\n$<c>\r\n<channel>\r\n$<n>\r\n<payload>\r\n`.
fn push_len(channel: usize, payload: usize) -> usize {
    let bulk = |n: usize| 1 + n.to_string().len() + 2 + n + 2;
    4 + bulk("message".len()) + bulk(channel) + bulk(payload)
}

/// `PUBLISH`es in flight at once on one publisher connection.
const IN_FLIGHT: usize = 256;

impl Peer for Redis {
    type Pub = RedisPub;

    async fn subscriber(
        &self,
        i: usize,
        rx: Arc<Rx>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let mut ps = self.client.get_async_pubsub().await.context("cannot connect to Redis")?;
        // Returns once the server has confirmed the subscription.
        ps.subscribe(&self.channel).await.context("Redis SUBSCRIBE")?;
        let mut messages = ps.into_on_message();
        Ok(tokio::spawn(async move {
            let mut stopped = crate::bench::net::stopped(&mut stop);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    m = messages.next() => match m {
                        Some(m) => {
                            let p = m.get_payload_bytes();
                            rx.frame(i, stamp(p), push_len(m.get_channel_name().len(), p.len()));
                        }
                        None => {
                            rx.closed();
                            return;
                        }
                    },
                }
            }
        }))
    }

    async fn publisher(&self, _i: usize) -> anyhow::Result<RedisPub> {
        let conn = self.client.get_multiplexed_async_connection().await.context("cannot connect to Redis")?;
        Ok(RedisPub { conn, channel: self.channel.clone(), in_flight: JoinSet::new(), refused: 0 })
    }
}

pub struct RedisPub {
    conn: redis::aio::MultiplexedConnection,
    channel: String,
    in_flight: JoinSet<redis::RedisResult<i64>>,
    refused: u64,
}

impl std::fmt::Debug for RedisPub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPub").field("channel", &self.channel).finish_non_exhaustive()
    }
}

impl RedisPub {
    fn settle(&mut self, r: Result<redis::RedisResult<i64>, tokio::task::JoinError>) {
        if !matches!(r, Ok(Ok(_))) {
            self.refused += 1;
        }
    }
}

impl Publisher for RedisPub {
    async fn publish(&mut self, payload: String) -> anyhow::Result<()> {
        while self.in_flight.len() >= IN_FLIGHT {
            if let Some(r) = self.in_flight.join_next().await {
                self.settle(r);
            }
        }
        let mut conn = self.conn.clone();
        let channel = self.channel.clone();
        self.in_flight.spawn(async move {
            redis::cmd("PUBLISH").arg(channel).arg(payload).query_async::<i64>(&mut conn).await
        });
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<u64> {
        while let Some(r) = self.in_flight.join_next().await {
            self.settle(r);
        }
        Ok(self.refused)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resp_push_length_counts_every_byte() {
        let frame = "*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$12\r\nhello world!\r\n";
        assert_eq!(super::push_len(5, 12), frame.len());
    }
}
