//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Why a vault or API key operation failed.
///
/// No variant ever carries secret material: not a credential, not key bytes, not a machine
/// identity. Paths, credential ids and short reasons only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The vault cannot be decrypted here: it was copied from another machine (or its install
    /// secret comes from another vault or machine), or the file was altered. Wire code
    /// `VAULT_DECRYPT_ERROR`.
    #[error(
        "vault cannot be decrypted on this machine (copied from another machine, or damaged); \
         re-enter the database credentials"
    )]
    Decrypt,
    /// The vault file is structurally damaged (bad magic, truncated, inconsistent lengths).
    #[error("vault file is damaged ({reason}); re-enter the database credentials")]
    Format {
        /// What is wrong with the file, never its content.
        reason: &'static str,
    },
    /// The vault file was written by a newer version of Mini Connector.
    #[error("vault file has format version {found}, newer than this program understands; upgrade")]
    UnsupportedVersion {
        /// The version number found in the file.
        found: u16,
    },
    /// The vault file asks for fewer key-derivation iterations than this program accepts.
    #[error(
        "vault file uses {iterations} key-derivation iterations, fewer than required; \
         re-enter the database credentials"
    )]
    WeakKdf {
        /// The iteration count recorded in the file.
        iterations: u32,
    },
    /// The vault file was replaced (reset) by another process after this handle was opened.
    #[error("vault was reset by another process; open it again")]
    Stale,
    /// No credential is stored under this id.
    #[error("no credential stored for `{id}`")]
    NotFound {
        /// The credential id (ids are names, not secrets).
        id: String,
    },
    /// The credential id is not acceptable.
    #[error("invalid credential id: {reason}")]
    InvalidId {
        /// Why.
        reason: &'static str,
    },
    /// The secret is larger than the vault stores.
    #[error("secret too large ({len} bytes, at most {max})")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Key material this vault needs is gone: its install secret (kept outside the vault
    /// directory, so a copy of the directory does not carry it) or its install id. `location`
    /// names the file or Keychain item, never its content. Wire code `VAULT_DECRYPT_ERROR`.
    #[error(
        "the vault's {what} is missing: {location} (the vault directory was copied or restored \
         without it, or it was deleted); restore it, or re-enter the database credentials"
    )]
    KeyMaterialMissing {
        /// Which piece: "install secret" or "install id file".
        what: &'static str,
        /// Where it should be: a path or a Keychain item.
        location: String,
    },
    /// The vault is bound to this machine's hardware id (Linux
    /// `/sys/class/dmi/id/product_uuid`, root-only), which this process cannot read.
    #[error(
        "the vault is bound to this machine's hardware id (/sys/class/dmi/id/product_uuid), which \
         this process cannot read: open it as root, or from the service (its unit passes the id \
         with LoadCredential=product_uuid; re-run `mini-connector service install` after an upgrade)"
    )]
    HardwareIdUnavailable,
    /// The store of the install secret failed (a bad key directory, DPAPI).
    #[error("vault key store: {reason}")]
    KeyStore {
        /// What failed; never a secret.
        reason: String,
    },
    /// This machine's identity could not be read.
    #[error("cannot read this machine's identity: {reason}")]
    MachineIdentity {
        /// What failed (a source name and an OS message).
        reason: String,
    },
    /// Owner-only permissions could not be applied to a vault file or directory.
    #[error("cannot restrict permissions of {path}: {reason}")]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// An `apiKeyRef` string is not one of the accepted forms.
    #[error(
        "invalid API key reference `{reference}`: expected keychain://<service>/<user> or vault://apikey"
    )]
    InvalidReference {
        /// The reference as given (a location, never a key).
        reference: String,
    },
    /// The OS credential store failed or does not exist on this platform.
    #[error("OS credential store: {reason}")]
    Keyring {
        /// What failed; never the stored value.
        reason: String,
    },
    /// Reading or writing a vault file failed.
    #[error("vault I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

impl VaultError {
    /// The wire code for any vault failure met while fetching a credential: `VAULT_DECRYPT_ERROR`
    /// (spec Appendix C), not retryable. Every variant maps to it because, for the cloud, they all
    /// mean "this agent cannot get the database credentials"; the local message says why.
    pub fn wire_code(&self) -> &'static str {
        "VAULT_DECRYPT_ERROR"
    }

    /// Whether the stored credentials are lost for good on this machine, so the user has to
    /// re-enter them after [`Vault::reset`](crate::Vault::reset): wrong machine, damaged file,
    /// weak key derivation, missing key material (unless it is restored). `false` for failures
    /// that may pass (I/O, a newer format, a race, a hardware id this process cannot read).
    pub fn needs_reentry(&self) -> bool {
        matches!(
            self,
            Self::Decrypt | Self::Format { .. } | Self::WeakKdf { .. } | Self::KeyMaterialMissing { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
