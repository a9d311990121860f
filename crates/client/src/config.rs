//! Client configuration: reconnect backoff, timeouts, where tokens come from, extra TLS roots.

use crate::token::TokenProvider;
use std::time::Duration;

/// How a [`crate::Client`] behaves. `ClientConfig::default()` suits interactive use.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Delay before the first reconnect attempt.
    pub backoff_initial: Duration,
    /// Upper bound of the delay between attempts.
    pub backoff_max: Duration,
    /// Growth factor of the delay per failed attempt.
    pub backoff_factor: f64,
    /// Fraction of the delay that is randomised (0.0: none, 1.0: anywhere in `[0, delay]`),
    /// so that many clients of a restarted server do not reconnect in lockstep.
    pub backoff_jitter: f64,
    /// Give up after this many consecutive failed attempts (`None`: never give up).
    pub max_reconnect_attempts: Option<u32>,
    /// Timeout of the WebSocket handshake of one attempt.
    pub connect_timeout: Duration,
    /// How long a request waits for its reply before failing with `Timeout`.
    pub request_timeout: Duration,
    /// If the server has sent nothing for this long, send it a WebSocket Ping; if it stays
    /// silent for as long again, the connection is taken as dead and the client reconnects
    /// (a vanished network sends no close). `None` disables the check.
    pub keepalive: Option<Duration>,
    /// Events one [`crate::EventStream`] may hold unread; a reader further behind gets
    /// [`crate::ClientEvent::Lagged`] and its stream ends.
    pub event_buffer: usize,
    /// Where fresh tokens come from: asked at every connect attempt and before the current
    /// token expires (then sent with `auth.refresh`). Without one, the server closes the
    /// connection with 4401 when the token given to `connect` expires, and the client stops.
    pub token_provider: Option<TokenProvider>,
    /// Certificate authorities trusted for `wss://` and `https://` besides the webpki roots
    /// (Mozilla's): the CA of a self-signed deployment. See
    /// [`ClientConfig::add_root_certificate_pem`].
    pub root_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Other nodes of the same deployment (`http://…` as for `connect`). After a connection
    /// drops, the client reconnects to the next one in turn (the URL given to `connect`
    /// first) and resumes there with no gap and no duplicate; REST calls (log pages, blobs)
    /// follow it to the same node. Empty: always that one.
    pub fallback_urls: Vec<String>,
    /// The E2EE device this client speaks for (PROTOCOL.md §7): declared on every
    /// `connect`, so direct messages and key envelopes addressed to it reach this
    /// connection. Set by [`crate::e2ee::E2ee::connect`]; the device must be registered
    /// first (`PUT /v1/keys/devices/{id}`), else the server refuses the `connect`.
    pub device: Option<String>,
    /// For keeper connections (PROTOCOL.md §7): deliver log events of channels the user is
    /// not a member of (the `member_left` a keeper is told about) unverified, instead of
    /// taking their sparse seqs for a broken chain. Events of member channels are verified
    /// as always.
    pub keeper_events: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(15),
            backoff_factor: 2.0,
            backoff_jitter: 0.5,
            max_reconnect_attempts: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(25)),
            event_buffer: 10_000,
            token_provider: None,
            root_certificates: Vec::new(),
            fallback_urls: Vec::new(),
            device: None,
            keeper_events: false,
        }
    }
}

impl ClientConfig {
    /// Trusts the certificates of a PEM text (one or more `BEGIN CERTIFICATE` blocks) as
    /// certificate authorities, besides the webpki roots: for a server with a self-signed
    /// certificate or a private CA. Fails with [`crate::ClientError::Tls`] if the text holds
    /// no readable certificate.
    pub fn add_root_certificate_pem(&mut self, pem: &[u8]) -> Result<&mut ClientConfig, crate::ClientError> {
        self.root_certificates.extend(crate::tls::certificates_from_pem(pem)?);
        Ok(self)
    }

    /// Sets [`ClientConfig::token_provider`] from an async closure.
    pub fn with_token_provider<F, Fut>(mut self, f: F) -> ClientConfig
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, crate::ClientError>> + Send + 'static,
    {
        self.token_provider = Some(TokenProvider::new(f));
        self
    }

    /// The delay before reconnect attempt `attempt` (1-based). `unit` is a random number in
    /// `[0, 1)`, passed in so this stays a pure function.
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32) as i32;
        let base = self.backoff_initial.as_secs_f64() * self.backoff_factor.max(1.0).powi(exp);
        let capped = base.min(self.backoff_max.as_secs_f64());
        let jitter = self.backoff_jitter.clamp(0.0, 1.0);
        let unit = unit.clamp(0.0, 1.0);
        // Subtract up to `jitter` of the delay: never exceeds the cap, never below zero.
        Duration::from_secs_f64(capped * (1.0 - jitter * unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let c = ClientConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            backoff_factor: 2.0,
            backoff_jitter: 0.5,
            ..ClientConfig::default()
        };
        assert_eq!(c.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(c.backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(c.backoff(4, 0.0), Duration::from_millis(800));
        assert_eq!(c.backoff(5, 0.0), Duration::from_secs(1));
        assert_eq!(c.backoff(1000, 0.0), Duration::from_secs(1));
        assert_eq!(c.backoff(5, 1.0), Duration::from_millis(500));
    }
}
