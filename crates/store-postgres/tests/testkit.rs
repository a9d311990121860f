//! The shared store suite and the blob contract against PgStore, one scratch database per case.
#![allow(clippy::unwrap_used)]

use herald_store::{NullSink, Store};
use herald_store_postgres::scratch::ScratchDb;
use herald_store_postgres::{PgConfig, PgStore};
use parking_lot::Mutex;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_store_passes_the_testkit() {
    let Some(probe) = ScratchDb::or_skip("pg_store_passes_the_testkit") else { return };
    drop(probe);
    // Each case gets a fresh database; they are dropped when the test ends.
    let dbs: Arc<Mutex<Vec<ScratchDb>>> = Arc::default();
    herald_store::testkit::run_all(|sink| {
        let dbs = dbs.clone();
        async move {
            let db = ScratchDb::create(&herald_store_postgres::scratch::admin_url()).unwrap();
            let store = PgStore::open(PgConfig::new(db.url()), sink).await.unwrap();
            dbs.lock().push(db);
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_blob_store_passes_the_contract() {
    let Some(db) = ScratchDb::or_skip("pg_blob_store_passes_the_contract") else { return };
    let store = PgStore::open(PgConfig::new(db.url()), Arc::new(NullSink)).await.unwrap();
    herald_store::testkit::blob_store_contract(&store.blob_store()).await;
    store.close().await.unwrap();
}
