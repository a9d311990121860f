//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`.
//!
//! Nothing here lists a route: the paths come from the `#[utoipa::path]` annotation of each
//! handler in [`crate::rest`], collected by the same `utoipa_axum` router that serves them
//! ([`crate::api_routes`]), and the schemas from the `ToSchema` derives of the wire types in
//! `herald-proto` (its `openapi` feature). This module adds what is common to every route: the
//! bearer JWT security scheme, and the error answers every authenticated route can give.

use herald_proto::ErrorBody;
use std::sync::LazyLock;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Type};

/// The name of the security scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Herald's REST API (PROTOCOL.md §6 and docs/protocol.md §E). Every error \
                       answer has the shape {\"error\": {\"code\", \"message\"}}; the realtime API is \
                       the WebSocket at /v1/ws, whose frames are described in docs/protocol.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerJwt),
    security(("bearer" = [])),
    tags(
        (name = "channels", description = "Channels and their members"),
        (name = "messages", description = "Messages, history and the raw hash-chained log"),
        (name = "blobs", description = "Raw bytes stored per channel"),
        (name = "subjects", description = "Pub/sub without storage"),
        (name = "keys", description = "End-to-end encryption (§7): devices and keys, DM inboxes, commits and envelopes; every body opaque to the server"),
        (name = "operations", description = "Health, metrics, the WebSocket upgrade and this document"),
    ),
)]
pub struct ApiDoc;

struct BearerJwt;

impl utoipa::Modify for BearerJwt {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT (HS256 with the data directory's secret, or EdDSA with \
                         --jwt-public-key): `herald token --sub <user>` mints one.",
                    ))
                    .build(),
            ),
        );
    }
}

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))).build(),
    )
}

fn header(description: &str, ty: Type) -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(ty))
        .description(Some(description))
        .build()
}

/// The answers every authenticated operation can give, whatever it does.
fn common_errors() -> [(&'static str, Response); 3] {
    [
        (
            "401",
            error_response("`unauthorized`: no token, a bad signature, or an expired token")
                .header("WWW-Authenticate", header("`Bearer`", Type::String))
                .build(),
        ),
        (
            "429",
            error_response(
                "`rate_limited`: over the caller's REST rate (`--rest-rate-per-sec`, \
                 `--rest-rate-burst`); `retry_after_ms` says when to try again",
            )
            .header("Retry-After", header("Seconds to wait (`retry_after_ms`, rounded up)", Type::Integer))
            .build(),
        ),
        ("500", error_response("`internal`: a bug or a storage failure; never for bad input").build()),
    ]
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Completes the document collected by the router: every operation that inherits the global
/// bearer requirement (those that declare `security(())` need no token) gets the common error
/// answers, unless it documents that status itself.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            if op.security.is_some() {
                continue;
            }
            for (status, response) in common_errors() {
                op.responses.responses.entry(status.to_owned()).or_insert(RefOr::T(response));
            }
        }
    }
    doc
}

/// The document, built once from the router's routes.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: LazyLock<utoipa::openapi::OpenApi> =
        LazyLock::new(|| finish(crate::api_routes(usize::MAX).split_for_parts().1));
    &DOC
}

/// The document as a server with `config` serves it, as JSON text: the same routes and types
/// for every server, with the `limit` bounds of its `--history-page-max` (the annotations say
/// 500, the default).
pub fn document_json(config: &crate::config::ServeConfig) -> String {
    // Serializing a tree of strings, maps and numbers cannot fail; an empty object would still
    // be valid JSON should it ever.
    let mut v = serde_json::to_value(document()).unwrap_or_else(|_| serde_json::json!({}));
    tidy_formats(&mut v);
    set_limit_maximum(&mut v, config.history_page_max.max(1));
    serde_json::to_string(&v).unwrap_or_else(|_| "{}".to_owned())
}

/// Sets `maximum` of every `limit` query parameter (history and log pages).
fn set_limit_maximum(doc: &mut serde_json::Value, max: u32) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for op in item.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else { continue };
            for p in params {
                if p["name"] == "limit" && p["in"] == "query" {
                    p["schema"]["maximum"] = serde_json::Value::from(max);
                }
            }
        }
    }
}

/// utoipa names the unsigned integer formats `u-int32` / `u-int64`; the spelling every other
/// tool uses (and the OpenAPI format registry lists) is `uint32` / `uint64`. Unsigned they
/// must say, or a client would think `seq` (a `u64`) stops at 2^63.
fn tidy_formats(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::String(f)) = map.get_mut("format")
                && let Some(rest) = f.strip_prefix("u-int")
            {
                *f = format!("uint{rest}");
            }
            map.values_mut().for_each(tidy_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_formats),
        _ => {}
    }
}
