//! Private channels and webhook signatures (PROTOCOL.md §9): the HMAC-SHA256 signatures an
//! app's backend and the server both compute. Pure functions, so the server (verifying), the
//! SDK (`herald_client::auth::sign_channel`, for Rust backends) and webhook receivers agree.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Channel names that start with this can be joined only with a signature (§9).
pub const PRIVATE_PREFIX: &str = "private-";

/// Whether a channel name is that of a private channel.
pub fn is_private(name: &str) -> bool {
    name.starts_with(PRIVATE_PREFIX)
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: this cannot fail.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
    }
}

/// `lowercase hex(HMAC-SHA256(app_secret, conn_id ":" channel_name))`: what the app's backend
/// hands a client to join `channel_name` on connection `conn_id`. `app_secret` is the text of
/// `herald secret show`, as UTF-8 bytes.
pub fn sign_channel(app_secret: &[u8], conn_id: &str, channel_name: &str) -> String {
    let mut m = mac(app_secret);
    m.update(conn_id.as_bytes());
    m.update(b":");
    m.update(channel_name.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Checks a channel signature in constant time (`verify_slice`). Anything that is not 64
/// lowercase hex digits is simply wrong.
pub fn verify_channel(app_secret: &[u8], conn_id: &str, channel_name: &str, auth: &str) -> bool {
    if auth.len() != 64 || !auth.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return false;
    }
    let Ok(tag) = hex::decode(auth) else { return false };
    let mut m = mac(app_secret);
    m.update(conn_id.as_bytes());
    m.update(b":");
    m.update(channel_name.as_bytes());
    m.verify_slice(&tag).is_ok()
}

/// The `X-Herald-Signature` header value of a webhook body: `sha256=<hex HMAC-SHA256>`.
pub fn sign_webhook(app_secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(app_secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Checks an `X-Herald-Signature` header against a body, in constant time.
pub fn verify_webhook(app_secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hexed) = header.strip_prefix("sha256=") else { return false };
    let Ok(tag) = hex::decode(hexed) else { return false };
    let mut m = mac(app_secret);
    m.update(body);
    m.verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_signature_is_bound_to_connection_channel_and_secret() {
        let s = sign_channel(b"secret", "conn-1", "private-a");
        assert_eq!(s.len(), 64);
        assert!(verify_channel(b"secret", "conn-1", "private-a", &s));
        assert!(!verify_channel(b"secret", "conn-2", "private-a", &s));
        assert!(!verify_channel(b"secret", "conn-1", "private-b", &s));
        assert!(!verify_channel(b"other", "conn-1", "private-a", &s));
        assert!(!verify_channel(b"secret", "conn-1", "private-a", &s.to_uppercase()));
        assert!(!verify_channel(b"secret", "conn-1", "private-a", ""));
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let body = b"what do ya want for nothing?";
        assert_eq!(
            sign_webhook(b"Jefe", body),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_webhook(b"Jefe", body, &sign_webhook(b"Jefe", body)));
        assert!(!verify_webhook(b"Jefe", b"tampered", &sign_webhook(b"Jefe", body)));
        assert!(!verify_webhook(b"Jefe", body, "5bdcc146"));
    }
}
