//! The credential vault: the only code in Mini Connector that sees plaintext credentials.
//!
//! Database passwords (and, on Linux, the API key) are stored encrypted in one file bound to
//! this machine. Copying the vault directory to another machine, or changing any byte of the
//! file, gives [`VaultError::Decrypt`] (wire code `VAULT_DECRYPT_ERROR`), never a panic and
//! never a partial read; the user re-enters the credentials after [`Vault::reset`].
//!
//! - **Cipher:** AES-256-GCM, a fresh random 96-bit nonce per credential, the credential's id
//!   as associated data; an HMAC-SHA256 over the whole file on top.
//! - **Key:** PBKDF2-HMAC-SHA256, 600,000 iterations, over the machine identity
//!   ([`SystemIdentity`]), a random install id created next to the vault at first use, and an
//!   application salt. Derived once per [`Vault::open`], kept in zeroizing memory, never written.
//! - **File:** `vault.bin`, versioned and deterministic (see the `format` module), replaced
//!   atomically (temporary file, fsync, rename, fsync directory), owner-only (0600 / ACL),
//!   under an advisory lock (`vault.lock`) for read-modify-write.
//! - **Plaintext** comes out only as a [`Secret`]: zeroized on drop, `***` in `Debug`.
//! - **API key:** [`ApiKeyStore`] keeps it in the OS credential store (Windows, macOS) or in
//!   the vault (Linux); [`default_store`] picks per platform.
//!
//! ```no_run
//! use std::path::Path;
//! use vault::{SystemIdentity, Vault};
//!
//! # fn main() -> Result<(), vault::VaultError> {
//! let vault = Vault::open(Path::new("/var/lib/mini-connector/vault"), &SystemIdentity)?;
//! vault.put("warehouse-db", b"s3cret")?;
//!
//! let password = vault.get("warehouse-db")?;
//! // connect(host, user, password.expose_str().unwrap_or_default())?;
//! drop(password); // zeroized
//! # Ok(())
//! # }
//! ```
//!
//! **Invariant:** no error, `Debug` output or file written by this crate contains a credential,
//! a key, or the machine identity.

#![forbid(unsafe_code)]

mod apikey;
mod crypto;
mod error;
mod format;
mod identity;
mod secret;
mod sys;
mod vault;

pub use apikey::{ApiKeyStore, DEFAULT_SERVICE, DEFAULT_USER, default_store};
pub use error::VaultError;
pub use identity::{FixedIdentity, MachineIdentity, SystemIdentity};
pub use secret::Secret;
pub use vault::{PBKDF2_ITERATIONS, Vault};
