//! Integration tests of herald-crypto, one module per concept.
#![allow(clippy::unwrap_used)]

#[path = "crypto/common.rs"]
mod common;

#[path = "crypto/channel.rs"]
mod channel;
#[path = "crypto/envelope.rs"]
mod envelope;
#[path = "crypto/file.rs"]
mod file;
#[path = "crypto/identity.rs"]
mod identity;
#[path = "crypto/olm.rs"]
mod olm;
#[path = "crypto/props.rs"]
mod props;
#[path = "crypto/roster.rs"]
mod roster;
#[path = "crypto/vectors.rs"]
mod vectors;
