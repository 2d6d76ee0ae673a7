//! The server's TLS 1.3 configuration and its certificate: given PEM files, or a self-signed
//! certificate generated once into `<data-dir>/tls/` and reused on later starts.
//!
//! **Names.** The self-signed certificate covers `localhost`, `127.0.0.1`, `::1` and every name
//! the gateway is asked for ([`cert_files`]: `--tls-name`, the listen address, the host of
//! `--public-url`). The names it was made with are kept in `tls/names.txt`; when a later start
//! asks for a name the stored certificate does not cover (checked on the certificate itself,
//! as an agent would), it is issued again for the old names plus the new ones, **with the same
//! key** (an agent's `pinnedSpki` stays valid; its `caCertPath` file must be refreshed). An
//! operator's certificate (`--cert`) is never changed: [`uncovered`] tells the caller which
//! names it lacks, to warn about.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::GatewayError;

/// Where the certificate came from.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Names every generated certificate covers.
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Checks a name for a certificate: a DNS name or an IP address (brackets around IPv6 allowed).
pub(crate) fn tls_name(text: &str) -> Result<String, GatewayError> {
    let name = text.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if name.is_empty() || ServerName::try_from(name.as_str()).is_err() || name.contains('*') {
        return Err(GatewayError::Invalid(format!(
            "TLS name `{text}`: not a DNS name or an IP address (wildcards are not issued)"
        )));
    }
    Ok(name)
}

/// Returns the given files, or the generated pair under `<data_dir>/tls/`, created if missing
/// and issued again (same key) when it does not cover every name in `names`.
pub(crate) fn cert_files(
    data_dir: &Path,
    given: Option<&(PathBuf, PathBuf)>,
    names: &[String],
) -> Result<CertFiles, GatewayError> {
    if let Some((cert, key)) = given {
        return Ok(CertFiles { cert: cert.clone(), key: key.clone() });
    }
    let dir = data_dir.join("tls");
    let files = CertFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    let names_file = dir.join("names.txt");
    let mut wanted: Vec<String> = DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for name in names {
        let name = tls_name(name)?;
        if !wanted.contains(&name) {
            wanted.push(name);
        }
    }
    let key = if files.cert.exists() && files.key.exists() {
        let missing = uncovered(&files, &wanted)?;
        if missing.is_empty() {
            return Ok(files);
        }
        // Keep the names it had, add the new ones, and sign with the same key.
        let old = fs::read_to_string(&names_file).unwrap_or_default();
        let mut all: Vec<String> = old.lines().filter_map(|l| tls_name(l).ok()).collect();
        for name in wanted.drain(..) {
            if !all.contains(&name) {
                all.push(name);
            }
        }
        wanted = all;
        tracing::warn!(
            cert = %files.cert.display(),
            missing = %missing.join(", "),
            names = %wanted.join(", "),
            "the self-signed certificate did not cover every name; issued it again with the same key \
             (agents started before must reload the file their caCertPath names)"
        );
        let pem = fs::read_to_string(&files.key)?;
        rcgen::KeyPair::from_pem(&pem)?
    } else {
        create_private_dir(&dir)?;
        let key = rcgen::KeyPair::generate()?;
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        tracing::info!(cert = %files.cert.display(), names = %wanted.join(", "), "generated a self-signed certificate");
        key
    };
    let cert = rcgen::CertificateParams::new(wanted.clone())?.self_signed(&key)?;
    fs::write(&files.cert, cert.pem())?;
    fs::write(&names_file, wanted.join("\n") + "\n")?;
    Ok(files)
}

/// The names in `names` the leaf certificate of `files` is not valid for (checked the way an
/// agent checks the name it dialled).
pub(crate) fn uncovered(files: &CertFiles, names: &[String]) -> Result<Vec<String>, GatewayError> {
    let leaf = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| GatewayError::Cert(format!("{}: {e}", files.cert.display())))?
        .next()
        .ok_or_else(|| GatewayError::Cert(format!("{}: no certificate found", files.cert.display())))?
        .map_err(|e| GatewayError::Cert(format!("{}: {e}", files.cert.display())))?;
    let cert = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| GatewayError::Cert(format!("{}: {e}", files.cert.display())))?;
    Ok(names
        .iter()
        .filter(|name| {
            let host = name.trim_start_matches('[').trim_end_matches(']');
            ServerName::try_from(host).map_or(true, |n| cert.verify_is_valid_for_subject_name(&n).is_err())
        })
        .cloned()
        .collect())
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
