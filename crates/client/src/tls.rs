//! TLS for `wss://` and `https://`: one rustls `ClientConfig` (ring provider, the webpki
//! roots plus any CA the user added) shared by the WebSocket and REST.

use crate::error::ClientError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// Parses every certificate of a PEM text (`-----BEGIN CERTIFICATE-----` blocks).
pub(crate) fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Tls(format!("unreadable PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Tls("no certificate in the PEM text".into()));
    }
    Ok(certs)
}

/// The client's rustls configuration: webpki roots plus `extra`.
pub(crate) fn client_config(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots.add(cert.clone()).map_err(|e| ClientError::Tls(format!("unusable root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls error somewhere in `e`'s chain, described with a hint, if the failure was TLS.
pub(crate) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) => {
                    " (for a self-signed server, add its CA with ClientConfig::add_root_certificate_pem)"
                }
                _ => "",
            };
            return Some(format!("{tls}{hint}"));
        }
        // `io::Error::source` skips the error it wraps: look at that one too.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = tls_failure(inner)
        {
            return Some(found);
        }
        next = err.source();
    }
    None
}
