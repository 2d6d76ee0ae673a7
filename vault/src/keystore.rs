//! The install secret: 32 random bytes of key material kept **outside** the vault directory.
//!
//! A copy of the vault directory (a backup of it, a stolen disk folder) holds the vault file and
//! the install id, but not this secret, so it cannot be decrypted anywhere, not even on the same
//! machine. Where the secret lives is a [`SecretStore`]:
//!
//! | store | where | protection |
//! |---|---|---|
//! | [`SecretStore::Files`] on Unix | `<dir>/<install id>.key` | owner-only file (0600) in an owner-only directory (0700), written atomically |
//! | [`SecretStore::Files`] on Windows | `<dir>\<install id>.key` | ACL owner + SYSTEM, content sealed with DPAPI in machine scope (`CRYPTPROTECT_LOCAL_MACHINE`): the file is useless on another machine |
//! | [`SecretStore::Keychain`] (macOS) | login Keychain, service `mini-connector-vault`, account = install id | Keychain access control |
//!
//! File format (`<install id>.key`): the magic `MCVAULTK`, one byte kind (1 = the 32 secret bytes
//! follow in clear, 2 = a DPAPI blob follows), nothing else.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::VaultError;
use crate::crypto::fill_random;
use crate::sys;

/// Length of the install secret.
pub(crate) const SECRET_LEN: usize = 32;
/// Magic of a secret file.
const FILE_MAGIC: [u8; 8] = *b"MCVAULTK";
/// Kind byte: the secret in clear (Unix: the file's permissions protect it).
const KIND_PLAIN: u8 = 1;
/// Kind byte: a DPAPI blob (Windows, machine scope).
#[cfg_attr(not(windows), allow(dead_code))]
const KIND_DPAPI: u8 = 2;
/// Keychain service of install secrets (macOS).
pub const KEYCHAIN_SERVICE: &str = "mini-connector-vault";
/// Longest install id accepted as a file name / Keychain account.
const MAX_INSTALL_ID_LEN: usize = 128;

/// 32 random bytes of vault key material. Zeroized on drop; `Debug` prints `***`.
pub(crate) struct InstallSecret(Zeroizing<[u8; SECRET_LEN]>);

impl InstallSecret {
    fn generate() -> Result<Self, VaultError> {
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        fill_random(&mut bytes[..])?;
        Ok(Self(bytes))
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; SECRET_LEN] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    pub(crate) fn bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for InstallSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InstallSecret(***)")
    }
}

/// Where a vault's install secret is kept: never inside the vault directory.
///
/// Each vault has its own secret, named by the vault's install id, so one store serves every
/// vault of a user (several configurations, tests). The store holds no secret itself: `Debug`
/// and errors show only the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretStore {
    /// `<dir>/<install id>.key`, owner-only; DPAPI-sealed (machine scope) on Windows.
    Files {
        /// The key directory (created 0700 / owner-only ACL). Must not be the vault directory.
        dir: PathBuf,
    },
    /// The macOS login Keychain: service [`KEYCHAIN_SERVICE`], account = install id.
    /// Other platforms refuse it ([`VaultError::Keyring`]).
    Keychain,
}

/// The platform's store for install secrets: the Keychain on macOS, owner-only files in `dir`
/// elsewhere (DPAPI-sealed on Windows). Services without a login Keychain pass
/// [`SecretStore::Files`] instead.
pub fn default_secret_store(dir: impl Into<PathBuf>) -> SecretStore {
    if cfg!(target_os = "macos") { SecretStore::Keychain } else { SecretStore::Files { dir: dir.into() } }
}

impl SecretStore {
    /// Owner-only files in `dir`.
    pub fn files(dir: impl Into<PathBuf>) -> Self {
        Self::Files { dir: dir.into() }
    }

    /// Where the secret of the vault with this install id is (a path or a Keychain item), for
    /// messages. Never the secret.
    pub fn location(&self, install_id: &str) -> String {
        match self {
            Self::Files { dir } => dir.join(file_name(install_id)).display().to_string(),
            Self::Keychain => format!("Keychain item {KEYCHAIN_SERVICE}/{install_id}"),
        }
    }

    /// Copies the install secret of the vault in `vault_dir` from this store into `to` (e.g.
    /// when a service takes the vault over). Returns the vault's install id, or `None` when the
    /// vault has no install id or this store holds no secret for it (an old-format vault:
    /// nothing to copy). An existing secret in `to` is replaced.
    pub fn copy_secret(&self, vault_dir: &Path, to: &SecretStore) -> Result<Option<String>, VaultError> {
        let Some(install_id) = crate::vault::read_install_id(vault_dir)? else { return Ok(None) };
        let Some(secret) = self.load(&install_id)? else { return Ok(None) };
        if self != to {
            to.save(&install_id, &secret)?;
        }
        Ok(Some(install_id.to_string()))
    }

    /// Deletes the secret of vault `install_id` from this store (after [`copy_secret`] moved
    /// it); `Ok(false)` when there was none. The vault it belongs to can no longer be opened
    /// with this store.
    ///
    /// [`copy_secret`]: Self::copy_secret
    pub fn delete_secret(&self, install_id: &str) -> Result<bool, VaultError> {
        check_install_id(install_id)?;
        match self {
            Self::Files { dir } => {
                let path = dir.join(file_name(install_id));
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(VaultError::io(path)(e)),
                }
            }
            Self::Keychain => keychain::delete(install_id),
        }
    }

    /// Refuses a key directory that is the vault directory or inside it (the secret would
    /// travel with every copy of the vault directory).
    pub(crate) fn check_outside(&self, vault_dir: &Path) -> Result<(), VaultError> {
        if let Self::Files { dir } = self {
            let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
            let inside = dir.starts_with(vault_dir) || canonical(dir).starts_with(canonical(vault_dir));
            if inside {
                return Err(VaultError::KeyStore {
                    reason: format!(
                        "the install secret must be kept outside the vault directory {}",
                        vault_dir.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The secret of vault `install_id`; `None` when this store has none.
    pub(crate) fn load(&self, install_id: &str) -> Result<Option<InstallSecret>, VaultError> {
        check_install_id(install_id)?;
        match self {
            Self::Files { dir } => {
                let path = dir.join(file_name(install_id));
                let Some(bytes) = sys::read_optional(&path)? else { return Ok(None) };
                let bytes = Zeroizing::new(bytes);
                sys::tighten(&path)?;
                decode_file(&bytes).map(Some)
            }
            Self::Keychain => keychain::get(install_id),
        }
    }

    /// Stores (replaces) the secret of vault `install_id`, atomically.
    pub(crate) fn save(&self, install_id: &str, secret: &InstallSecret) -> Result<(), VaultError> {
        check_install_id(install_id)?;
        match self {
            Self::Files { dir } => {
                sys::ensure_dir(dir)?;
                sys::tighten_dir(dir)?;
                let bytes = encode_file(secret)?;
                sys::write_atomic(dir, &file_name(install_id), &bytes)
            }
            Self::Keychain => keychain::set(install_id, secret),
        }
    }

    /// The existing secret of `install_id`, or a new one stored now.
    pub(crate) fn load_or_create(&self, install_id: &str) -> Result<InstallSecret, VaultError> {
        if let Some(secret) = self.load(install_id)? {
            return Ok(secret);
        }
        let secret = InstallSecret::generate()?;
        self.save(install_id, &secret)?;
        Ok(secret)
    }

    /// The secret of a vault that needs one: missing is [`VaultError::KeyMaterialMissing`],
    /// naming where it should be.
    pub(crate) fn require(&self, install_id: &str) -> Result<InstallSecret, VaultError> {
        self.load(install_id)?.ok_or_else(|| VaultError::KeyMaterialMissing {
            what: "install secret",
            location: self.location(install_id),
        })
    }
}

/// `<install id>.key`.
fn file_name(install_id: &str) -> String {
    format!("{install_id}.key")
}

/// An install id names a file: letters, digits and `-` only (a UUID), so a tampered `install-id`
/// cannot point the secret at another path.
pub(crate) fn check_install_id(install_id: &str) -> Result<(), VaultError> {
    let fine = !install_id.is_empty()
        && install_id.len() <= MAX_INSTALL_ID_LEN
        && install_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if fine { Ok(()) } else { Err(VaultError::Format { reason: "install id file is damaged" }) }
}

fn damaged() -> VaultError {
    VaultError::Format { reason: "install secret file is damaged" }
}

fn encode_file(secret: &InstallSecret) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let mut out = Zeroizing::new(Vec::with_capacity(FILE_MAGIC.len() + 1 + 512));
    out.extend_from_slice(&FILE_MAGIC);
    #[cfg(windows)]
    {
        out.push(KIND_DPAPI);
        let blob = dpapi::protect(secret.bytes())
            .map_err(|reason| VaultError::KeyStore { reason: format!("DPAPI CryptProtectData: {reason}") })?;
        out.extend_from_slice(&blob);
    }
    #[cfg(not(windows))]
    {
        out.push(KIND_PLAIN);
        out.extend_from_slice(secret.bytes());
    }
    Ok(out)
}

fn decode_file(bytes: &[u8]) -> Result<InstallSecret, VaultError> {
    let rest = bytes.strip_prefix(&FILE_MAGIC[..]).ok_or_else(damaged)?;
    let (&kind, payload) = rest.split_first().ok_or_else(damaged)?;
    match kind {
        KIND_PLAIN if cfg!(not(windows)) => InstallSecret::from_slice(payload).ok_or_else(damaged),
        #[cfg(windows)]
        KIND_DPAPI => {
            // Another machine's blob (a copied key file) fails here: that is the point.
            let plain = dpapi::unprotect(payload).map_err(|_| VaultError::Decrypt)?;
            InstallSecret::from_slice(&plain).ok_or_else(damaged)
        }
        _ => Err(damaged()),
    }
}

/// DPAPI, machine scope. The one `unsafe` module of this crate: two FFI calls and the
/// `LocalFree` of the buffers they return. Compiled by the Windows cross-check, not run here.
#[cfg(windows)]
#[allow(unsafe_code)]
mod dpapi {
    use std::ptr;

    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Cryptography::{
        CRYPT_INTEGER_BLOB, CRYPTPROTECT_LOCAL_MACHINE, CRYPTPROTECT_UI_FORBIDDEN, CryptProtectData,
        CryptUnprotectData,
    };
    use zeroize::{Zeroize, Zeroizing};

    /// Extra entropy: a blob sealed for another purpose on this machine does not open here.
    const ENTROPY: &[u8] = b"mini-connector/vault/install-secret/v1";

    fn blob(bytes: &[u8]) -> CRYPT_INTEGER_BLOB {
        // DPAPI only reads input blobs; the `*mut` is the C declaration's.
        CRYPT_INTEGER_BLOB { cbData: bytes.len() as u32, pbData: bytes.as_ptr().cast_mut() }
    }

    /// Copies a DPAPI-allocated output blob out, wipes it, frees it.
    fn take(out: CRYPT_INTEGER_BLOB) -> Zeroizing<Vec<u8>> {
        if out.pbData.is_null() {
            return Zeroizing::new(Vec::new());
        }
        // SAFETY: on success DPAPI set `pbData` to a LocalAlloc'd buffer of `cbData` bytes that
        // we own; it is read, wiped and freed exactly once here.
        unsafe {
            let slice = std::slice::from_raw_parts_mut(out.pbData, out.cbData as usize);
            let copy = Zeroizing::new(slice.to_vec());
            slice.zeroize();
            LocalFree(out.pbData.cast());
            copy
        }
    }

    pub(super) fn protect(plain: &[u8]) -> Result<Vec<u8>, String> {
        let input = blob(plain);
        let entropy = blob(ENTROPY);
        let mut out = CRYPT_INTEGER_BLOB { cbData: 0, pbData: ptr::null_mut() };
        // SAFETY: every pointer is valid for the call (input and entropy borrow live slices,
        // `out` is a local), the optional arguments are null as documented.
        let ok = unsafe {
            CryptProtectData(
                &input,
                ptr::null(),
                &entropy,
                ptr::null(),
                ptr::null(),
                CRYPTPROTECT_LOCAL_MACHINE | CRYPTPROTECT_UI_FORBIDDEN,
                &mut out,
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(take(out).to_vec())
    }

    pub(super) fn unprotect(sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        let input = blob(sealed);
        let entropy = blob(ENTROPY);
        let mut out = CRYPT_INTEGER_BLOB { cbData: 0, pbData: ptr::null_mut() };
        // SAFETY: as in `protect`; the description out-pointer is null (not wanted).
        let ok = unsafe {
            CryptUnprotectData(
                &input,
                ptr::null_mut(),
                &entropy,
                ptr::null(),
                ptr::null(),
                CRYPTPROTECT_UI_FORBIDDEN,
                &mut out,
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(take(out))
    }
}

/// The macOS Keychain, through the same store as the API key.
#[cfg(target_os = "macos")]
mod keychain {
    use keyring_core::{Entry, Error};
    use zeroize::Zeroizing;

    use super::{InstallSecret, KEYCHAIN_SERVICE};
    use crate::VaultError;

    fn entry(install_id: &str) -> Result<Entry, VaultError> {
        let store = crate::apikey::os_store::store()?;
        Entry::new_in_store(store, KEYCHAIN_SERVICE, install_id).map_err(fail)
    }

    fn fail(e: Error) -> VaultError {
        VaultError::Keyring { reason: crate::apikey::os_store::describe(e) }
    }

    pub(super) fn get(install_id: &str) -> Result<Option<InstallSecret>, VaultError> {
        match entry(install_id)?.get_secret() {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                InstallSecret::from_slice(&bytes)
                    .map(Some)
                    .ok_or(VaultError::Format { reason: "install secret in the Keychain is damaged" })
            }
            Err(Error::NoEntry) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    pub(super) fn set(install_id: &str, secret: &InstallSecret) -> Result<(), VaultError> {
        entry(install_id)?.set_secret(secret.bytes()).map_err(fail)
    }

    pub(super) fn delete(install_id: &str) -> Result<bool, VaultError> {
        match entry(install_id)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(Error::NoEntry) => Ok(false),
            Err(e) => Err(fail(e)),
        }
    }
}

#[cfg(not(target_os = "macos"))]
mod keychain {
    use super::InstallSecret;
    use crate::VaultError;

    fn unavailable() -> VaultError {
        VaultError::Keyring {
            reason: "no Keychain on this platform; keep the install secret in files".into(),
        }
    }

    pub(super) fn get(_install_id: &str) -> Result<Option<InstallSecret>, VaultError> {
        Err(unavailable())
    }

    pub(super) fn set(_install_id: &str, _secret: &InstallSecret) -> Result<(), VaultError> {
        Err(unavailable())
    }

    pub(super) fn delete(_install_id: &str) -> Result<bool, VaultError> {
        Err(unavailable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_round_trip_and_refuse_damage() {
        let secret = InstallSecret::generate().unwrap();
        let bytes = encode_file(&secret).unwrap();
        assert_eq!(decode_file(&bytes).unwrap().bytes(), secret.bytes());
        #[cfg(not(windows))]
        assert_eq!(bytes.len(), 8 + 1 + SECRET_LEN);
        for len in 0..bytes.len() {
            assert!(decode_file(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_file(&longer).is_err());
        let mut kind = bytes.to_vec();
        kind[8] = 9;
        assert!(decode_file(&kind).is_err());
    }

    #[test]
    fn install_ids_are_file_names_only() {
        for good in ["8bb24228-93b6-4194-8eda-cc7c89d91298", "abc"] {
            assert!(check_install_id(good).is_ok(), "{good}");
        }
        for bad in ["", "../etc/passwd", "a/b", "a\\b", "a.key", "x y", &"x".repeat(129)] {
            assert!(check_install_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = InstallSecret::from_slice(&[0xAB; SECRET_LEN]).unwrap();
        assert_eq!(format!("{secret:?}"), "InstallSecret(***)");
        let store = SecretStore::files("/k");
        assert_eq!(store.location("id"), Path::new("/k").join("id.key").display().to_string());
    }
}
