//! Issue 6: the SDK had no TLS, so `wss://` and `https://` failed. A real server with a
//! self-signed certificate made here (rcgen) on port 0, the SDK over WSS and HTTPS.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use herald_client::{Client, ClientConfig, ClientError, ClientEvent, Event};
use herald_testing::TestServer;
use std::future::Future;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// A server with a fresh self-signed certificate for 127.0.0.1; returns it and the PEM.
async fn tls_server(dir: &tempfile::TempDir) -> (TestServer, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    (server, cert_pem)
}

fn fast() -> ClientConfig {
    ClientConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        request_timeout: WAIT,
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn sdk_speaks_wss_and_https_to_a_server_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, ca) = tls_server(&dir).await;
    let mut config = fast();
    config.add_root_certificate_pem(ca.as_bytes()).unwrap();

    let ada = within(Client::connect_with(&server.url(), &server.token("ada"), config)).await.unwrap();
    let mut events = ada.events();
    let channel = within(ada.channels().create("secure")).await.unwrap();
    let sent = within(channel.send("over tls")).await.unwrap();
    let received = loop {
        match within(events.next()).await.expect("stream ended") {
            ClientEvent::Event(e) => {
                if let Event::Message { message, .. } = *e {
                    break message;
                }
            }
            ClientEvent::ChainError(e) => panic!("chain error: {e}"),
            _ => {}
        }
    };
    assert_eq!(received.id, sent.id);
    assert_eq!(received.content, "over tls");
    // REST goes over HTTPS with the same trust: a log page and a blob round trip.
    let page = within(channel.log(0, 10)).await.unwrap();
    assert_eq!(page.entries.last().map(|e| e.seq), Some(sent.seq));
    let blob = within(channel.put_blob(b"bytes over https".to_vec())).await.unwrap();
    assert_eq!(within(channel.get_blob(&blob.blob_id)).await.unwrap(), b"bytes over https");
    // The URL may name the WebSocket itself.
    let ws_url = server.ws_url();
    assert!(ws_url.starts_with("wss://"));
    let mut config = fast();
    config.add_root_certificate_pem(ca.as_bytes()).unwrap();
    let bob = within(Client::connect_with(&ws_url, &server.token("bob"), config)).await.unwrap();
    let bobs = within(bob.channels().join("secure")).await.unwrap();

    // Graceful shutdown works over TLS: the WebSockets are closed (1012), the server stops
    // and starts again on the same port, and both clients resume over WSS.
    within(server.restart()).await;
    let after = within(bobs.send("after the restart")).await.unwrap();
    loop {
        match within(events.next()).await.expect("stream ended") {
            ClientEvent::Event(e) => {
                if let Event::Message { message, .. } = *e
                    && message.id == after.id
                {
                    break;
                }
            }
            ClientEvent::ChainError(e) => panic!("chain error: {e}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn without_the_ca_the_connection_fails_with_a_tls_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _ca) = tls_server(&dir).await;
    let err = within(Client::connect_with(&server.url(), &server.token("ada"), fast())).await.unwrap_err();
    match &err {
        ClientError::Tls(reason) => {
            assert!(reason.contains("certificate"), "{reason}");
            assert!(reason.contains("add_root_certificate_pem"), "the error says what to do: {reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // Plain HTTP against the TLS port is not silently accepted either.
    let plain = server.url().replacen("https://", "http://", 1);
    assert!(within(Client::connect_with(&plain, &server.token("ada"), fast())).await.is_err());
}

#[test]
fn a_pem_without_a_certificate_is_refused() {
    let mut config = ClientConfig::default();
    assert!(matches!(config.add_root_certificate_pem(b"not a pem"), Err(ClientError::Tls(_))));
    assert!(config.root_certificates.is_empty());
}
