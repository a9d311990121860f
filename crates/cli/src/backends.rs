//! Which store and broker `herald serve` runs on: the embedded pair by default (SQLite and
//! blob files under `--data`, the in-process broker), or the pair of a deployment of several
//! nodes (PostgreSQL for the store and the blobs, NATS between the nodes). The server crate
//! names no backend: it is handed them here, behind the `Store`, `BlobStore` and `Broker`
//! traits.

use anyhow::Context;
use herald_broker_nats::{NatsBroker, NatsConfig};
use herald_engine::{Broker, BrokerSink, LocalBroker};
use herald_server::config::{DurabilityMode, ServeConfig};
use herald_server::metrics::BackendFigure;
use herald_server::{Node, NodeBackends};
use herald_store::{DynBlobStore, DynStore};
use herald_store_postgres::{PgConfig, PgStore};
use herald_store_sqlite::{Durability, FsBlobStore, SqliteConfig, SqliteStore};
use std::sync::Arc;

/// `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreChoice {
    Sqlite,
    Postgres(String),
}

/// `--broker`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BrokerChoice {
    Local,
    Nats(String),
}

fn store_choice(s: &str) -> anyhow::Result<StoreChoice> {
    match s {
        "sqlite" | "" => Ok(StoreChoice::Sqlite),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(StoreChoice::Postgres(url.to_owned()))
        }
        other => anyhow::bail!(
            "--store {:?}: expected `sqlite` or a postgres:// URL",
            other.split('@').next_back().unwrap_or(other)
        ),
    }
}

fn broker_choice(s: &str) -> anyhow::Result<BrokerChoice> {
    match s {
        "local" | "" => Ok(BrokerChoice::Local),
        // Plain TCP only: TLS to NATS (and to PostgreSQL) is not built in yet (docs/deploy.md).
        url if url.starts_with("nats://") => Ok(BrokerChoice::Nats(url.to_owned())),
        other => anyhow::bail!("--broker {other:?}: expected `local` or a nats:// URL"),
    }
}

/// Opens the node over the backends `config` names.
pub async fn open_node(config: ServeConfig) -> anyhow::Result<Node> {
    let store = store_choice(&config.store)?;
    let broker = broker_choice(&config.broker)?;
    if matches!((&store, &broker), (StoreChoice::Sqlite, BrokerChoice::Nats(_))) {
        anyhow::bail!(
            "--broker nats://… joins a deployment of several nodes, which needs a store they share: \
             --store postgres://…"
        );
    }
    if matches!(broker, BrokerChoice::Nats(_))
        && config.secret.is_none()
        && config.secret_file.is_none()
        && config.jwt_public_key.is_none()
    {
        tracing::warn!(
            "the token secret comes from this node's data directory: other nodes accept its tokens \
             only if they have the same file; provision one with HERALD_SECRET or --secret-file"
        );
    }
    match (store, broker) {
        (StoreChoice::Sqlite, _) => open_embedded(config).await,
        (StoreChoice::Postgres(url), broker) => {
            let (broker, nats): (Arc<dyn Broker>, Option<Arc<NatsBroker>>) = match broker {
                BrokerChoice::Local => (LocalBroker::new(), None),
                BrokerChoice::Nats(url) => {
                    // Without --node-id the broker names itself (a fresh UUIDv7).
                    let mut nats_config = NatsConfig::new(&url);
                    nats_config.prefix = config.nats_prefix.clone();
                    if let Some(id) = &config.node_id {
                        nats_config.node_id = id.clone();
                    }
                    // A node silent this long is gone; it says it is alive five times as often.
                    let timeout = std::time::Duration::from_millis(config.node_timeout_ms.max(50));
                    nats_config.node_timeout = timeout;
                    nats_config.heartbeat_interval = timeout / 5;
                    // One largest attachment or stream chunk, with its header, crosses as parts.
                    nats_config.max_message_bytes = config
                        .max_attachment_bytes
                        .saturating_add(config.max_frame_bytes)
                        .saturating_add(64 * 1024);
                    let nats = NatsBroker::connect(nats_config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    (nats.clone(), Some(nats))
                }
            };
            let pg = PgConfig {
                // Each writer holds a connection while it commits: leave some for the reads.
                pool_size: config.pg_pool.max(config.pg_writers.saturating_add(2)),
                max_batch: config.max_batch.max(1),
                writers: config.pg_writers.clamp(1, 64),
                ..PgConfig::new(&url)
            };
            let pg_store = Arc::new(
                PgStore::open(pg, BrokerSink::new(broker.clone()))
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e}"))?,
            );
            // With --blob-dir, blob files in directories every node mounts (§10); else bytea.
            let blobs: DynBlobStore = if config.blob_dir.is_empty() {
                Arc::new(pg_store.blob_store())
            } else {
                Arc::new(
                    FsBlobStore::open_dirs(config.blob_dir.clone()).context("cannot open the blob store")?,
                )
            };
            let store: DynStore = pg_store.clone();
            if let Some(nats) = &nats {
                nats.set_store(store.clone());
            }
            match &nats {
                Some(n) => tracing::info!(node = n.node_id(), "store: PostgreSQL; broker: NATS"),
                None => tracing::info!("store: PostgreSQL; broker: in process"),
            }
            let node = Node::open(config, NodeBackends { store, blobs, broker }).await?;
            let metrics = node.state.metrics();
            pg_store.set_commit_observer(metrics.commit_observer());
            let writer = pg_store.clone();
            metrics.add_backend(Arc::new(move || {
                let s = writer.stats();
                vec![
                    BackendFigure::counter(
                        "store_commits",
                        "PostgreSQL transactions committed by this node",
                        s.commits,
                    ),
                    BackendFigure::counter(
                        "store_retries",
                        "Batches run again after a serialization failure or deadlock",
                        s.retries,
                    ),
                ]
            }));
            if let Some(nats) = nats {
                metrics.add_backend(Arc::new(move || nats_figures(&nats.stats())));
            }
            Ok(node)
        }
    }
}

/// The NATS broker's counters, for `/metrics`.
fn nats_figures(s: &herald_broker_nats::NatsStats) -> Vec<BackendFigure> {
    use BackendFigure as F;
    vec![
        F::counter("broker_delivered", "Log events delivered to this node's hub, from any node", s.delivered),
        F::counter(
            "broker_duplicates_dropped",
            "Log events dropped as already delivered",
            s.duplicates_dropped,
        ),
        F::counter("broker_gaps", "Gaps seen in a channel's seq (or head checks that found one)", s.gaps),
        F::counter("broker_gaps_filled", "Gaps filled from the store", s.gaps_filled),
        F::counter("broker_entries_filled", "Entries read from the store by gap fills", s.entries_filled),
        F::counter("broker_gaps_skipped", "Gaps given up (the store had no such entries)", s.gaps_skipped),
        F::counter("broker_published", "Messages handed to NATS", s.published),
        F::counter("broker_publish_failed", "Messages NATS refused", s.publish_failed),
        F::counter(
            "broker_outgoing_dropped",
            "Envelopes not sent to NATS (outgoing queue full)",
            s.outgoing_dropped,
        ),
        F::counter("broker_received", "Messages received from other nodes", s.received),
        F::counter("broker_reconnects", "Reconnections to NATS", s.reconnects),
        F::counter("broker_slow_consumers", "Slow-consumer reports from NATS", s.slow_consumers),
        F::gauge("broker_channels", "Channels the sequencer tracks", s.channels),
        F::counter("broker_split_messages", "Messages over NATS max_payload sent in parts", s.split_messages),
        F::counter(
            "broker_parts_lost",
            "Messages sent in parts that could not be put together",
            s.parts_lost,
        ),
        F::gauge("broker_nodes", "Other nodes heard from within the node timeout", s.nodes),
        F::counter("broker_nodes_gone", "Nodes declared gone (silent past the node timeout)", s.nodes_gone),
        F::counter("broker_room_snapshots", "Room snapshots asked of the other nodes", s.room_snapshots),
    ]
}

/// The single-node default: SQLite and blob files under `--data`, the in-process broker.
pub async fn open_embedded(config: ServeConfig) -> anyhow::Result<Node> {
    let broker = LocalBroker::new();
    let sqlite = SqliteConfig {
        dir: config.data.clone(),
        durability: match config.durability {
            DurabilityMode::Fsync => Durability::Fsync,
            DurabilityMode::Relaxed => Durability::Relaxed,
        },
        max_batch: config.max_batch.max(1),
        readers: 4,
    };
    let store = Arc::new(
        SqliteStore::open(sqlite, BrokerSink::new(broker.clone()))
            .with_context(|| format!("cannot open the store in {}", config.data.display()))?,
    );
    let blobs = Arc::new(
        if config.blob_dir.is_empty() {
            FsBlobStore::open(config.data.clone())
        } else {
            FsBlobStore::open_dirs(config.blob_dir.clone())
        }
        .context("cannot open the blob store")?,
    );
    let node = Node::open(config, NodeBackends { store: store.clone(), blobs, broker }).await?;
    store.set_commit_observer(node.state.metrics().commit_observer());
    Ok(node)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn store_and_broker_choices_parse_and_refuse_with_a_reason() {
        assert_eq!(store_choice("sqlite").unwrap(), StoreChoice::Sqlite);
        assert_eq!(
            store_choice("postgres://u@h/db").unwrap(),
            StoreChoice::Postgres("postgres://u@h/db".into())
        );
        let err = store_choice("mysql://user:pw@host/db").unwrap_err().to_string();
        assert!(err.contains("postgres://") && !err.contains("pw"), "{err}");
        assert_eq!(broker_choice("local").unwrap(), BrokerChoice::Local);
        assert_eq!(broker_choice("nats://h:4222").unwrap(), BrokerChoice::Nats("nats://h:4222".into()));
        assert!(broker_choice("redis://h").is_err());
        assert!(broker_choice("tls://h:4222").is_err(), "no TLS to NATS is built in");
    }
}
