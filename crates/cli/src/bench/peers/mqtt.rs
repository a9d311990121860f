//! MQTT 3.1.1 through `rumqttc` (Mosquitto in the comparison): every subscriber on one topic at
//! QoS 0, publishers at QoS 0, so nothing is acknowledged or stored, as in NATS core.

use super::{Peer, Publisher, Rx, stamp};
use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Mqtt {
    pub host: String,
    pub port: u16,
    pub topic: String,
}

impl Mqtt {
    /// `host:port`.
    pub fn new(addr: &str, topic: String) -> anyhow::Result<Mqtt> {
        let (host, port) =
            addr.rsplit_once(':').with_context(|| format!("--mqtt-addr {addr:?} is not host:port"))?;
        let port = port.parse().with_context(|| format!("--mqtt-addr {addr:?}: bad port"))?;
        Ok(Mqtt { host: host.to_owned(), port, topic })
    }

    /// A client and its event loop, connected (CONNACK received).
    async fn client(&self, id: String) -> anyhow::Result<(AsyncClient, EventLoop)> {
        let mut opts = MqttOptions::new(id, self.host.clone(), self.port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_clean_session(true);
        opts.set_request_channel_capacity(1024);
        let (client, mut events) = AsyncClient::new(opts, 1024);
        wait_for(&mut events, |p| matches!(p, Packet::ConnAck(_))).await.context("MQTT CONNECT")?;
        Ok((client, events))
    }
}

/// Polls the event loop until a packet matching `want` arrives.
async fn wait_for(events: &mut EventLoop, want: impl Fn(&Packet) -> bool) -> anyhow::Result<()> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(p)) if want(&p) => return Ok(()),
            Ok(Event::Incoming(Packet::Disconnect)) => bail!("the broker disconnected"),
            Ok(_) => {}
            Err(e) => bail!("{e}"),
        }
    }
}

impl Peer for Mqtt {
    type Pub = MqttPub;

    async fn subscriber(
        &self,
        i: usize,
        rx: Arc<Rx>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let (client, mut events) =
            self.client(format!("herald-bench-{}-sub-{i}", std::process::id())).await?;
        client.subscribe(self.topic.clone(), QoS::AtMostOnce).await.context("MQTT SUBSCRIBE")?;
        wait_for(&mut events, |p| matches!(p, Packet::SubAck(_))).await.context("MQTT SUBACK")?;
        Ok(tokio::spawn(async move {
            let _client = client;
            let mut stopped = crate::bench::net::stopped(&mut stop);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    e = events.poll() => match e {
                        // `size` is the whole PUBLISH packet: fixed header, topic, payload.
                        Ok(Event::Incoming(Packet::Publish(p))) => rx.frame(i, stamp(&p.payload), p.size()),
                        Ok(_) => {}
                        Err(_) => {
                            rx.closed();
                            return;
                        }
                    },
                }
            }
        }))
    }

    async fn publisher(&self, i: usize) -> anyhow::Result<MqttPub> {
        let (client, mut events) =
            self.client(format!("herald-bench-{}-pub-{i}", std::process::id())).await?;
        // The event loop is what writes to the socket: it runs until the client disconnects.
        let pump = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        Ok(MqttPub { client, topic: self.topic.clone(), pump })
    }
}

#[derive(Debug)]
pub struct MqttPub {
    client: AsyncClient,
    topic: String,
    pump: JoinHandle<()>,
}

impl Publisher for MqttPub {
    async fn publish(&mut self, payload: String) -> anyhow::Result<()> {
        self.client
            .publish(self.topic.clone(), QoS::AtMostOnce, false, payload.into_bytes())
            .await
            .context("MQTT PUBLISH")
    }

    async fn finish(self) -> anyhow::Result<u64> {
        // DISCONNECT goes after every queued PUBLISH, so they have all been written when the
        // event loop has sent it.
        self.client.disconnect().await.context("MQTT DISCONNECT")?;
        let abort = self.pump.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.pump).await.is_err() {
            abort.abort();
        }
        Ok(0)
    }
}
