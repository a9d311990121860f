//! For an app's own backend (PROTOCOL.md §9): signing private-channel joins for its users and
//! checking the signature of the webhooks Herald sends it. The key is the app secret as
//! `herald secret show` prints it, as UTF-8 bytes. The server computes the same functions
//! (`herald_proto::private`).

pub use herald_proto::private::{PRIVATE_PREFIX, is_private};

/// `lowercase hex(HMAC-SHA256(app_secret, conn_id ":" channel_name))`: the `auth` a client
/// passes to [`crate::Channels::join_private`], after the backend decided this user may join.
pub fn sign_channel(app_secret: &str, conn_id: &str, channel: &str) -> String {
    herald_proto::private::sign_channel(app_secret.as_bytes(), conn_id, channel)
}

/// Whether `signature` (the `X-Herald-Signature` header, `sha256=<hex>`) is the app secret's
/// HMAC-SHA256 of `body`, compared in constant time. Check it on the raw body, before parsing.
pub fn verify_webhook(app_secret: &str, body: &[u8], signature: &str) -> bool {
    herald_proto::private::verify_webhook(app_secret.as_bytes(), body, signature)
}
