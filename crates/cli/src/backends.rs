//! Which store and broker `herald serve` runs on. Today the only choice is the embedded one:
//! SQLite and filesystem blobs under `--data`, and the in-process broker. The cluster backends
//! (PostgreSQL, NATS) slot in here, behind the same traits, without a change to the server.

use anyhow::Context;
use herald_engine::{BrokerSink, LocalBroker};
use herald_server::config::{DurabilityMode, ServeConfig};
use herald_server::{Node, NodeBackends};
use herald_store_sqlite::{Durability, FsBlobStore, SqliteConfig, SqliteStore};
use std::sync::Arc;

/// Opens the node over the backends `config` names.
pub async fn open_node(config: ServeConfig) -> anyhow::Result<Node> {
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
    let blobs = Arc::new(FsBlobStore::open(config.data.clone()).context("cannot open the blob store")?);
    let node = Node::open(config, NodeBackends { store: store.clone(), blobs, broker }).await?;
    store.set_commit_observer(node.state.metrics().commit_observer());
    Ok(node)
}
