//! The one rustls client configuration both the link (WSS) and the uploader (HTTPS) use:
//! TLS 1.3 only, the `ring` provider, the Mozilla roots plus an optional private CA (for the
//! reference gateway's self-signed certificate or an SSL-inspecting proxy). Verification is
//! never turned off.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot load CA certificate {path}: {reason}")]
    CaCert {
        /// The file named by `caCertPath`.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the client configuration: TLS 1.3 only, standard roots plus `ca_cert` (PEM) if given.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(ca_cert)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The trust anchors of [`client_config`]: the Mozilla roots plus `ca_cert` (PEM) if given.
/// `doctor` verifies with the same ones.
pub fn root_store(ca_cert: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_cert {
        let ca_err = |reason: String| TlsError::CaCert { path: path.display().to_string(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificate found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
        }
    }
    Ok(roots)
}
