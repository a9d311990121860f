//! The shared store suite against SqliteStore, one fresh data directory per case.
#![allow(clippy::unwrap_used)]

use herald_store::Store;
use herald_store_sqlite::{SqliteConfig, SqliteStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_testkit() {
    let root = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    herald_store::testkit::run_all(|sink| {
        let dir = root.path().join(format!("case{}", n.fetch_add(1, Ordering::Relaxed)));
        async move {
            let store = SqliteStore::open(SqliteConfig::new(dir), sink).unwrap();
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}
