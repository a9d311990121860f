//! `/healthz` through `app()`: it answers 503 and names the dependency when the store cannot
//! serve, instead of `ok` from a node whose writes would all fail.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald_engine::{BrokerSink, LocalBroker};
use herald_server::config::ServeConfig;
use herald_server::{Node, NodeBackends, app};
use herald_store::Store;
use herald_store::memory::{MemoryBlobStore, MemoryStore};
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;

async fn get_healthz(node: &Node) -> (StatusCode, String) {
    let req = Request::get("/healthz").body(Body::empty()).unwrap();
    let res = app(node.state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn healthz_is_503_naming_the_store_once_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let broker = LocalBroker::new();
    let store = Arc::new(MemoryStore::new(BrokerSink::new(broker.clone())));
    let backends = NodeBackends { store: store.clone(), blobs: Arc::new(MemoryBlobStore::new()), broker };
    let config = ServeConfig { data: dir.path().to_path_buf(), ..ServeConfig::default() };
    let node = Node::open(config, backends).await.unwrap();

    assert_eq!(get_healthz(&node).await, (StatusCode::OK, "ok".to_owned()));
    store.close().await.unwrap();
    let (status, body) = get_healthz(&node).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("store"), "{body}");
}
