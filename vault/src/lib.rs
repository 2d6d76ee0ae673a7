//! The credential vault: the only code in Mini Connector that sees plaintext credentials.
//!
//! Database passwords (and, on Linux, the API key) are stored encrypted in one file bound to
//! this machine **and** to an install secret kept outside the vault directory. Copying the
//! vault directory to another machine gives [`VaultError::Decrypt`]; copying it without the
//! install secret (even on the same machine) gives [`VaultError::KeyMaterialMissing`] naming the
//! missing file; changing any byte gives `Decrypt` or `Format`. Never a panic, never a partial
//! read; the user re-enters the credentials after [`Vault::reset`] (wire code
//! `VAULT_DECRYPT_ERROR` for all of these).
//!
//! - **Cipher:** AES-256-GCM, a fresh random 96-bit nonce per credential, the credential's id
//!   as associated data; an HMAC-SHA256 over the whole file on top.
//! - **Key:** PBKDF2-HMAC-SHA256, 600,000 iterations, over the machine identity
//!   ([`SystemIdentity`]), a random install id created next to the vault, a random 32-byte
//!   **install secret** kept in a [`SecretStore`] outside the vault directory (an owner-only
//!   file; DPAPI-sealed in machine scope on Windows; the Keychain on macOS), on Linux the
//!   root-only hardware id (`product_uuid`) when the creating process could read it, and an
//!   application salt. Derived once per [`Vault::open`], kept in zeroizing memory, never written.
//! - **Migration:** a vault of the old format (key from machine id and install id only) is
//!   rewritten with the new key material at its first [`Vault::open`], atomically.
//! - **File:** `vault.bin`, versioned and deterministic (see the `format` module), replaced
//!   atomically (temporary file, fsync, rename, fsync directory), owner-only (0600 / ACL),
//!   under an advisory lock (`vault.lock`) for read-modify-write.
//! - **Plaintext** comes out only as a [`Secret`]: zeroized on drop, `***` in `Debug`.
//! - **API key:** [`ApiKeyStore`] keeps it in the OS credential store (Windows, macOS) or in
//!   the vault (Linux); [`default_store`] picks per platform.
//!
//! ```no_run
//! use std::path::Path;
//! use vault::{SecretStore, SystemIdentity, Vault};
//!
//! # fn main() -> Result<(), vault::VaultError> {
//! let keys = SecretStore::files("/var/lib/mini-connector/vault-keys");
//! let vault = Vault::open(Path::new("/var/lib/mini-connector/vault"), &keys, &SystemIdentity)?;
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
//! a key, the install secret (outside its own store) or the machine identity.
//!
//! `unsafe` is denied except in one audited Windows-only module (`keystore::dpapi`: the two
//! DPAPI calls).

#![deny(unsafe_code)]

mod apikey;
mod crypto;
mod error;
mod format;
mod identity;
mod keystore;
mod secret;
mod sys;
mod vault;

pub use apikey::{ApiKeyStore, DEFAULT_SERVICE, DEFAULT_USER, default_store};
pub use error::VaultError;
pub use identity::{FixedIdentity, HARDWARE_ID_CREDENTIAL, MachineIdentity, PRODUCT_UUID, SystemIdentity};
pub use keystore::{KEYCHAIN_SERVICE, SecretStore, default_secret_store};
pub use secret::Secret;
pub use vault::{PBKDF2_ITERATIONS, Vault};
