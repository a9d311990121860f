//! Herald's server through real sockets: every test starts its own `TestServer` on port 0 and
//! talks to it over WebSocket and HTTP exactly as a client would, checking PROTOCOL.md.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bad_input;
mod blobs;
mod channels;
mod e2ee;
mod limits;
mod messages;
mod moderation;
mod openapi;
mod ops;
mod private;
mod rest_limits;
mod resume;
mod rooms;
mod subjects;
mod web;
mod webhooks;
