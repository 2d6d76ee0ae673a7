//! TLS to PostgreSQL: the rustls client configuration behind each [`SslMode`].
//!
//! Everything runs on rustls with the ring provider, TLS 1.3 preferred and 1.2 accepted.
//! `prefer` and `require` accept any certificate (encryption against eavesdroppers only; the
//! handshake signature is still checked against the presented key); `verify-ca` checks the
//! chain to the configured CA and nothing else; `verify-full` checks the chain (to the CA
//! file, or the public Web PKI roots without one) and the host name. MySQL/MariaDB TLS is
//! configured through the `mysql` crate's own rustls support (see `mysql/mod.rs`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{DriverError, SslMode};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the CA certificates of a PEM file; an empty or unreadable file is an error naming
/// the file.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, DriverError> {
    let bad = |detail: String| DriverError::Open(format!("sslRootCert {}: {detail}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        roots.add(cert).map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(roots)
}

/// The client configuration for `mode` (`Disable` gets one too: it is never used).
pub(crate) fn client_config(mode: SslMode, root_cert: Option<&Path>) -> Result<ClientConfig, DriverError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            Arc::new(NameBlind { roots: None, algorithms })
        }
        SslMode::VerifyCa => {
            let path =
                root_cert.ok_or_else(|| DriverError::Open("sslMode verify-ca needs sslRootCert".into()))?;
            Arc::new(NameBlind { roots: Some(Arc::new(load_roots(path)?)), algorithms })
        }
        SslMode::VerifyFull => {
            let roots = match root_cert {
                Some(path) => load_roots(path)?,
                None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
            };
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| DriverError::Open(format!("TLS setup: {e}")))?
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DriverError::Open(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// `prefer` / `require` (`roots: None`): any certificate; `verify-ca` (`roots: Some`): the
/// certificate must chain to one of `roots` and be valid now. The host name is never compared,
/// and the handshake must still be signed by the certificate's key.
#[derive(Debug)]
struct NameBlind {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameBlind {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("drivers-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = load_roots(&empty).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = load_roots(&dir.join("missing.pem")).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        assert!(client_config(SslMode::VerifyCa, None).is_err());
        assert!(client_config(SslMode::VerifyFull, None).is_ok(), "public roots without a CA file");
        assert!(client_config(SslMode::Require, None).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
