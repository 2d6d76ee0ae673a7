//! The server's TLS 1.3 configuration and its certificate: given PEM files, or a self-signed
//! certificate generated once into `<data-dir>/tls/` and reused on later starts.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::GatewayError;

/// Where the certificate came from.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Returns the given files, or the generated pair under `<data_dir>/tls/` (created if missing).
pub(crate) fn cert_files(
    data_dir: &Path,
    given: Option<&(PathBuf, PathBuf)>,
) -> Result<CertFiles, GatewayError> {
    if let Some((cert, key)) = given {
        return Ok(CertFiles { cert: cert.clone(), key: key.clone() });
    }
    let dir = data_dir.join("tls");
    let files = CertFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    create_private_dir(&dir)?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())?;
    fs::write(&files.cert, certified.cert.pem())?;
    tracing::info!(cert = %files.cert.display(), "generated a self-signed certificate");
    Ok(files)
}

/// Creates a directory (and missing parents) only its owner can enter (mode 0700 on Unix).
/// A directory that already exists keeps its mode: it may be one the operator chose and shares.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), GatewayError> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)?;
    Ok(())
}

/// Makes an existing file owner-only (mode 0600 on Unix); a missing file is created empty so.
pub(crate) fn make_private(path: &Path) -> Result<(), GatewayError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    drop(file);
    Ok(())
}

/// Writes a file only its owner can read (mode 0600 on Unix).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), GatewayError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    Ok(())
}

/// TLS 1.3 only, `ring` provider, no client certificates.
pub(crate) fn server_config(files: &CertFiles) -> Result<Arc<ServerConfig>, GatewayError> {
    let cert_err =
        |path: &Path, e: &dyn std::fmt::Display| GatewayError::Cert(format!("{}: {e}", path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(&files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(&files.cert, &e))?;
    if chain.is_empty() {
        return Err(cert_err(&files.cert, &"no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| cert_err(&files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}
