//! `GET /v1/openapi.json`: valid OpenAPI 3.1, and describing exactly the routes served.

use crate::common::*;
use herald_testing::TestServer;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every HTTP route, as docs/protocol.md lists them. The document must have exactly these.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/ws"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/channels"),
    ("get", "/v1/channels"),
    ("get", "/v1/channels/directory"),
    ("get", "/v1/channels/{channel}"),
    ("delete", "/v1/channels/{channel}"),
    ("post", "/v1/channels/{channel}/join"),
    ("post", "/v1/channels/{channel}/members"),
    ("delete", "/v1/channels/{channel}/members/{user}"),
    ("post", "/v1/channels/{channel}/messages"),
    ("get", "/v1/channels/{channel}/messages"),
    ("patch", "/v1/channels/{channel}/messages/{message_id}"),
    ("delete", "/v1/channels/{channel}/messages/{message_id}"),
    ("get", "/v1/channels/{channel}/log"),
    ("put", "/v1/channels/{channel}/blobs"),
    ("get", "/v1/channels/{channel}/blobs/{blob_id}"),
    ("post", "/v1/publish"),
    ("put", "/v1/keys/devices/{device_id}"),
    ("delete", "/v1/keys/devices/{device_id}"),
    ("get", "/v1/keys/users/{user}"),
    ("get", "/v1/keys/keepers"),
    ("post", "/v1/keys/claim"),
    ("get", "/v1/dm/inbox"),
    ("post", "/v1/dm/ack"),
    ("post", "/v1/channels/{channel}/commits"),
    ("get", "/v1/channels/{channel}/commits"),
    ("post", "/v1/channels/{channel}/envelopes"),
    ("get", "/v1/channels/{channel}/envelopes"),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

/// A concrete path for a templated one: each parameter filled with a well-formed value.
fn concrete(path: &str) -> String {
    path.replace("{channel}", "no-such-channel")
        .replace("{user}", "bob")
        .replace("{message_id}", "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f11")
        .replace("{blob_id}", &"ab".repeat(32))
        .replace("{device_id}", "ada-phone")
}

async fn document(server: &TestServer) -> Value {
    let resp = within("openapi.json", reqwest::get(format!("{}/v1/openapi.json", server.url())))
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let text = within("openapi body", resp.text()).await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("openapi.json is not JSON: {e}"))
}

#[tokio::test]
async fn openapi_document_is_openapi_3_1_and_lists_exactly_the_served_routes() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    assert!(!doc.to_string().contains("\"u-int"), "unsigned formats are spelled uint32/uint64");
    assert_eq!(
        doc["paths"]["/v1/channels/{channel}/log"]["get"]["parameters"][1]["schema"]["format"],
        "uint64"
    );
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi {version:?}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let documented = operations(&doc);
    let expected: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, expected, "documented operations differ from the routes");

    // Walk the router: every documented operation is served (neither the fallback's 404 nor a
    // 405), and on every documented path each other method is refused with 405.
    let rest = Rest::user(&server, "ada");
    let http = reqwest::Client::new();
    let token = server.token("ada");
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for path in paths {
        for method in METHODS {
            let url = format!("{}{}", server.url(), concrete(path));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = within("probe", http.request(m, &url).bearer_auth(&token).send()).await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = within("probe body", resp.json()).await.unwrap_or(Value::Null);
            let served = documented.contains(&((*method).to_owned(), path.to_owned()));
            if served {
                assert_ne!(status, 405, "{method} {path} is documented but not served");
                assert_ne!(body["error"]["message"], "no such route", "{method} {path} fell through");
            } else {
                assert_eq!(status, 405, "{method} {path} is served ({status}) but not documented");
                assert_eq!(body["error"]["code"], "bad_request", "405 body: {body}");
            }
        }
    }
    // A path that is not documented is not served either.
    rest.get("/v1/nothing-here").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn openapi_document_declares_bearer_auth_and_the_error_shape_per_status() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));

    // The error shape: {"error": {"code", "message"}}, code one of the protocol's.
    let schemas = &doc["components"]["schemas"];
    let body = &schemas["ErrorBody"];
    assert_eq!(body["required"], serde_json::json!(["error"]));
    let detail = &schemas["ErrorDetail"];
    for field in ["code", "message"] {
        assert!(detail["required"].as_array().unwrap().contains(&Value::from(field)), "{detail}");
    }
    let codes = schemas["ErrorCode"]["enum"].as_array().expect("ErrorCode enum");
    for code in ["bad_request", "invalid_name", "unauthorized", "rate_limited", "internal"] {
        assert!(codes.contains(&Value::from(code)), "{code} missing from {codes:?}");
    }

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let public = op["security"] == serde_json::json!([{}]);
            let responses = op["responses"].as_object().unwrap();
            for (status, resp) in responses {
                // /healthz answers its 503 in plain text, for load balancers; every /v1 error
                // is in the protocol's shape.
                if path.starts_with("/v1/") && (status.starts_with('4') || status.starts_with('5')) {
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status} is not documented with the error shape"
                    );
                }
            }
            if !public {
                for status in ["401", "429"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
                assert!(responses["429"]["headers"]["Retry-After"].is_object(), "{method} {path}");
            }
        }
    }
    // The routes that need no token say so.
    for path in ["/healthz", "/metrics", "/v1/openapi.json", "/v1/ws"] {
        assert_eq!(doc["paths"][path]["get"]["security"], serde_json::json!([{}]), "{path}");
    }
}

/// Found while running schemathesis against the document: answers that came from axum rather
/// than from a handler (plain text, or a body serde read too loosely) must keep the contract.
#[tokio::test]
async fn rejections_outside_the_handlers_keep_the_error_shape() {
    let server = TestServer::start().await;
    let rest = Rest::user(&server, "ada");
    // A JSON array is not a request object, though serde would read one as the fields in order.
    rest.post_raw("/v1/channels", "[null, null]").await.assert_error(400, "bad_request");
    rest.post_raw("/v1/publish", r#"["s", 1]"#).await.assert_error(400, "bad_request");
    // A path segment that is not UTF-8 once percent-decoded.
    rest.get("/v1/channels/%FF%FE").await.assert_error(400, "bad_request");
    // A method the path does not serve: 405, with Allow, in the error shape.
    let resp = within("405", reqwest::Client::new().put(format!("{}/v1/channels", server.url())).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow:?}");
    let body: Value = within("405 body", resp.json()).await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    // `GET /v1/ws` without the upgrade headers.
    Rest::new(&server, None).get("/v1/ws").await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn openapi_limit_bounds_follow_the_configured_page_size() {
    let server = TestServer::start_with(|c| c.history_page_max = 77).await;
    let doc = document(&server).await;
    for path in ["/v1/channels/{channel}/messages", "/v1/channels/{channel}/log"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").expect("a limit parameter");
        assert_eq!(limit["schema"]["maximum"], 77, "{path}: {limit}");
    }
    let default = TestServer::start().await;
    let doc = document(&default).await;
    let params = doc["paths"]["/v1/channels/{channel}/log"]["get"]["parameters"].as_array().unwrap();
    assert_eq!(params.iter().find(|p| p["name"] == "limit").unwrap()["schema"]["maximum"], 500);
}
