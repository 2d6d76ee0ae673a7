//! The one rustls client configuration both the link (WSS) and the uploader (HTTPS) use:
//! TLS 1.3 only, the `ring` provider, the Mozilla roots plus an optional private CA (for the
//! reference gateway's self-signed certificate or an SSL-inspecting proxy). Verification is
//! never turned off.
//!
//! [`Verifier`] wraps rustls' WebPKI verifier: an unknown issuer is reported with the issuer's
//! name (a TLS-inspecting proxy shows up as such, with the `caCertPath` hint), and optional
//! SPKI pins (`pinnedSpki`, `sha256/BASE64` of a SubjectPublicKeyInfo) require that some
//! certificate the server presented (leaf or intermediate/CA) carries a pinned key, so a
//! re-signed certificate is refused even when its CA is trusted.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
};

use crate::config::AgentConfig;

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
    /// A `pinnedSpki` entry is not `sha256/` + base64 of 32 bytes.
    #[error("pin `{0}` is not sha256/BASE64 of a 32-byte SHA-256")]
    BadPin(String),
    /// A certificate could not be parsed.
    #[error("cannot parse certificate: {0}")]
    BadCert(String),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the client configuration: TLS 1.3 only, standard roots plus `ca_cert` (PEM) if given.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_pinned(ca_cert, &[])
}

/// The configuration for `config`: `caCertPath` and `pinnedSpki`.
pub fn for_agent(config: &AgentConfig) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_pinned(config.ca_cert_path.as_deref(), &config.pinned_spki)
}

/// [`client_config`] with SPKI pins (`sha256/BASE64`; none: no pinning).
pub fn client_config_pinned(ca_cert: Option<&Path>, pins: &[String]) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(ca_cert)?;
    let pins = pins.iter().map(|p| parse_pin(p)).collect::<Result<Vec<_>, _>>()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { inner, pins }))
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

/// Parses `sha256/BASE64` into the 32-byte hash.
pub fn parse_pin(pin: &str) -> Result<[u8; 32], TlsError> {
    let bad = || TlsError::BadPin(pin.to_owned());
    let encoded = pin.trim().strip_prefix("sha256/").ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// `sha256/BASE64` of a hash.
pub fn pin_string(hash: &[u8; 32]) -> String {
    format!("sha256/{}", base64::engine::general_purpose::STANDARD.encode(hash))
}

/// SHA-256 of the certificate's DER SubjectPublicKeyInfo (what `pinnedSpki` holds, the same
/// value as HPKP / `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256`).
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| TlsError::BadCert(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    Ok(hash)
}

/// The issuer's distinguished name of a certificate, for messages.
pub fn issuer_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.issuer().to_string())
}

/// One certificate of a chain, as `doctor` and admins see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Its `pinnedSpki` value (`sha256/BASE64`).
    pub pin: String,
}

/// Subject, issuer and pin of each certificate of a presented chain (leaf first); a
/// certificate that cannot be parsed is left out.
pub fn describe_chain(chain: &[CertificateDer<'_>]) -> Vec<CertSummary> {
    chain
        .iter()
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            Some(CertSummary {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                pin: pin_string(&spki_sha256(der).ok()?),
            })
        })
        .collect()
}

/// `None` when there are no `pins` or some certificate of `chain` carries one of them; else
/// the pins the chain does carry (`sha256/…`, to compare with the configured ones).
pub fn pin_miss<'a>(
    pins: &[[u8; 32]],
    chain: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Vec<String>>, TlsError> {
    if pins.is_empty() {
        return Ok(None);
    }
    let mut presented = Vec::new();
    for cert in chain {
        let hash = spki_sha256(cert)?;
        if pins.contains(&hash) {
            return Ok(None);
        }
        presented.push(pin_string(&hash));
    }
    Ok(Some(presented))
}

/// WebPKI verification (roots + `caCertPath`), then the SPKI pins.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

/// A certificate error with our text ("invalid peer certificate: …").
fn cert_error(text: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(std::io::Error::other(
        text,
    )))))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                let issuer = issuer_name(end_entity).unwrap_or_else(|| "an unreadable issuer".into());
                return Err(cert_error(format!(
                    "the certificate is issued by `{issuer}`, which is not trusted here; if a TLS-inspecting proxy re-signs traffic, set caCertPath to its CA (mini-connector configure --ca-cert FILE)"
                )));
            }
            Err(e) => return Err(e),
        }
        let chain = std::iter::once(end_entity).chain(intermediates).map(|c| c.as_ref());
        let Some(presented) = pin_miss(&self.pins, chain).map_err(|e| cert_error(e.to_string()))? else {
            return Ok(ServerCertVerified::assertion());
        };
        let issuer = issuer_name(end_entity).unwrap_or_default();
        Err(cert_error(format!(
            "certificate does not match pinnedSpki: the chain (issued by `{issuer}`) carries {}; a TLS-inspecting proxy re-signs certificates: ask for an exception for this host, or update pinnedSpki (mini-connector configure --pin-spki)",
            presented.join(", ")
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_round_trip() {
        let hash = [7u8; 32];
        let pin = pin_string(&hash);
        assert!(pin.starts_with("sha256/"));
        assert_eq!(parse_pin(&pin).unwrap(), hash);
        for bad in ["", "sha256/", "sha1/AAAA", "sha256/not base64!", "sha256/AAAA"] {
            assert!(parse_pin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spki_hash_is_that_of_the_public_key_info() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.test".into()]).unwrap().self_signed(&key).unwrap();
        let expected =
            ring::digest::digest(&ring::digest::SHA256, &rcgen::PublicKeyData::subject_public_key_info(&key));
        assert_eq!(spki_sha256(cert.der()).unwrap().as_slice(), expected.as_ref());
        // A new certificate for the same key has the same pin.
        let again = rcgen::CertificateParams::new(vec!["y.test".into()]).unwrap().self_signed(&key).unwrap();
        assert_eq!(spki_sha256(again.der()).unwrap(), spki_sha256(cert.der()).unwrap());
        assert!(spki_sha256(b"not a certificate").is_err());
        let chain = describe_chain(&[cert.der().clone()]);
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].pin, pin_string(&spki_sha256(cert.der()).unwrap()));
        assert_eq!(chain[0].subject, chain[0].issuer, "self-signed");
    }
}
