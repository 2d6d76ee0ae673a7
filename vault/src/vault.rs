//! The vault: a directory holding `vault.bin`, `install-id` and `vault.lock`.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::{Keys, SALT_LEN, derive_keys, fill_random};
use crate::format::{self, Entries, Header, MAX_SECRET_LEN};
use crate::sys::{self, Lock};
use crate::{MachineIdentity, Secret, VaultError};

/// PBKDF2-HMAC-SHA256 iterations for every vault production code writes, and the least it reads.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Most iterations a vault file may ask for (about 1 s in release builds): a damaged count must
/// not stall the agent.
const MAX_ITERATIONS: u32 = 10_000_000;
/// Credential ids starting with this are the crate's own (the API key); callers cannot use them.
pub(crate) const RESERVED_PREFIX: char = '@';
/// Longest install id read back (a UUID is 36 characters).
const MAX_INSTALL_ID_LEN: usize = 128;

/// Which iteration counts a handle writes and accepts.
#[derive(Debug, Clone, Copy)]
struct KdfPolicy {
    create: u32,
    min: u32,
    max: u32,
}

impl KdfPolicy {
    const PRODUCTION: Self = Self { create: PBKDF2_ITERATIONS, min: PBKDF2_ITERATIONS, max: MAX_ITERATIONS };

    fn exactly(iterations: u32) -> Self {
        let iterations = iterations.max(1);
        Self { create: iterations, min: iterations, max: iterations }
    }

    fn check(self, iterations: u32) -> Result<(), VaultError> {
        if iterations < self.min {
            return Err(VaultError::WeakKdf { iterations });
        }
        if iterations > self.max {
            return Err(VaultError::Format { reason: "implausible key-derivation iteration count" });
        }
        Ok(())
    }
}

/// An open credential vault bound to this machine.
///
/// The key is derived once, in [`open`](Self::open), and held in zeroizing memory until the
/// handle is dropped; it is never written anywhere. Every call reads the file afresh, so a
/// handle sees credentials another process stored after it was opened. Writes take an
/// exclusive lock on `vault.lock` around read-modify-write, so concurrent writers (the agent,
/// the CLI, several threads) never lose each other's entries. `Vault` is `Send + Sync`.
pub struct Vault {
    dir: PathBuf,
    header: Header,
    keys: Keys,
}

impl Vault {
    /// Name of the vault file inside its directory.
    pub const FILE_NAME: &'static str = "vault.bin";
    /// Name of the install id file inside the vault directory (not secret on its own).
    pub const INSTALL_ID_FILE_NAME: &'static str = "install-id";

    /// Opens the vault in `dir`, creating the directory, the install id and an empty vault on
    /// first use. Derives the key (PBKDF2, 600,000 iterations: ~63 ms in release builds).
    ///
    /// `dir` should be dedicated to the vault (e.g. `<config dir>/vault`): the crate creates it
    /// owner-only. Refuses a vault recorded with fewer than [`PBKDF2_ITERATIONS`] iterations.
    ///
    /// # Errors
    /// [`VaultError::Decrypt`] when the vault was written on another machine, its install id is
    /// gone or changed, or the file was altered; [`VaultError::Format`] when it is structurally
    /// damaged; others for I/O, an unreadable machine identity, or a newer format.
    pub fn open(dir: &Path, identity: &dyn MachineIdentity) -> Result<Self, VaultError> {
        Self::open_with(dir, identity, KdfPolicy::PRODUCTION)
    }

    /// Moves an unreadable vault file aside (`vault.bin.unreadable-<unix time>`) and starts an
    /// empty vault: the "re-enter credentials" path after [`VaultError::needs_reentry`].
    /// Returns the new handle and where the old file went, if there was one.
    pub fn reset(dir: &Path, identity: &dyn MachineIdentity) -> Result<(Self, Option<PathBuf>), VaultError> {
        Self::reset_with(dir, identity, KdfPolicy::PRODUCTION)
    }

    /// Tests only: [`open`](Self::open) with a custom iteration count, so suites do not spend
    /// seconds in PBKDF2. Creates and accepts exactly `iterations`; the count is recorded in the
    /// file and production [`open`](Self::open) refuses such a vault ([`VaultError::WeakKdf`]).
    #[doc(hidden)]
    pub fn open_with_test_iterations(
        dir: &Path,
        identity: &dyn MachineIdentity,
        iterations: u32,
    ) -> Result<Self, VaultError> {
        Self::open_with(dir, identity, KdfPolicy::exactly(iterations))
    }

    /// Tests only: [`reset`](Self::reset) with a custom iteration count.
    #[doc(hidden)]
    pub fn reset_with_test_iterations(
        dir: &Path,
        identity: &dyn MachineIdentity,
        iterations: u32,
    ) -> Result<(Self, Option<PathBuf>), VaultError> {
        Self::reset_with(dir, identity, KdfPolicy::exactly(iterations))
    }

    fn open_with(dir: &Path, identity: &dyn MachineIdentity, policy: KdfPolicy) -> Result<Self, VaultError> {
        let machine_id = identity.machine_id()?;
        sys::ensure_dir(dir)?;
        let path = dir.join(Self::FILE_NAME);
        let (install_id, bytes) = {
            // Exclusive: two processes opening a fresh directory must agree on one install id
            // and one salt, so creation happens under the lock.
            let _lock = Lock::acquire(dir, true)?;
            let install_id = read_install_id(dir)?;
            let Some(bytes) = sys::read_optional(&path)? else {
                let install_id = match install_id {
                    Some(id) => id,
                    None => create_install_id(dir)?,
                };
                return Self::create(dir, &machine_id, &install_id, policy.create);
            };
            sys::tighten(&path)?;
            (install_id, bytes)
        };
        // The slow part runs without the lock: the bytes in hand are one complete file.
        let header = format::parse_header(&bytes)?;
        policy.check(header.iterations)?;
        // A vault without its install id can never be decrypted again; do not invent a new id.
        let install_id = install_id.ok_or(VaultError::Decrypt)?;
        let keys = derive_keys(&machine_id, &install_id, &header.salt, header.iterations);
        let vault = Self { dir: dir.to_owned(), header, keys };
        vault.authenticate(&bytes)?;
        Ok(vault)
    }

    fn reset_with(
        dir: &Path,
        identity: &dyn MachineIdentity,
        policy: KdfPolicy,
    ) -> Result<(Self, Option<PathBuf>), VaultError> {
        let machine_id = identity.machine_id()?;
        sys::ensure_dir(dir)?;
        let _lock = Lock::acquire(dir, true)?;
        let aside = sys::set_aside(&dir.join(Self::FILE_NAME))?;
        // Keep a readable install id (the set-aside file stays decryptable if the machine
        // identity comes back); replace a missing or damaged one.
        let install_id = match read_install_id(dir) {
            Ok(Some(id)) => id,
            Ok(None) | Err(_) => create_install_id(dir)?,
        };
        let vault = Self::create(dir, &machine_id, &install_id, policy.create)?;
        Ok((vault, aside))
    }

    /// Writes a new empty vault. Call with the exclusive lock held.
    fn create(dir: &Path, machine_id: &str, install_id: &str, iterations: u32) -> Result<Self, VaultError> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        let header = Header { iterations, salt };
        let keys = derive_keys(machine_id, install_id, &salt, iterations);
        let vault = Self { dir: dir.to_owned(), header, keys };
        vault.write(&Entries::new())?;
        Ok(vault)
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Decrypts the credential stored under `id`.
    pub fn get(&self, id: &str) -> Result<Secret, VaultError> {
        check_public_id(id)?;
        self.get_raw(id)
    }

    /// Stores (or replaces) the credential under `id`, encrypted with a fresh nonce.
    /// `id` is a name (e.g. the connection name), 1–255 bytes, not starting with `@`.
    pub fn put(&self, id: &str, secret: &[u8]) -> Result<(), VaultError> {
        check_public_id(id)?;
        self.put_raw(id, secret)
    }

    /// Removes the credential under `id`; `Ok(false)` if there was none.
    pub fn remove(&self, id: &str) -> Result<bool, VaultError> {
        check_public_id(id)?;
        self.remove_raw(id)
    }

    /// The ids of the stored credentials, sorted (the API key, if stored here, is not listed).
    pub fn ids(&self) -> Result<Vec<String>, VaultError> {
        let _lock = Lock::acquire(&self.dir, false)?;
        let entries = self.load()?;
        Ok(entries.into_keys().filter(|id| !id.starts_with(RESERVED_PREFIX)).collect())
    }

    pub(crate) fn get_raw(&self, id: &str) -> Result<Secret, VaultError> {
        let entries = {
            let _lock = Lock::acquire(&self.dir, false)?;
            self.load()?
        };
        let sealed = entries.get(id).ok_or_else(|| VaultError::NotFound { id: id.to_owned() })?;
        Ok(Secret::from(self.keys.open(id, sealed)?))
    }

    pub(crate) fn put_raw(&self, id: &str, secret: &[u8]) -> Result<(), VaultError> {
        format::check_id(id)?;
        if secret.len() > MAX_SECRET_LEN {
            return Err(VaultError::TooLarge { len: secret.len(), max: MAX_SECRET_LEN });
        }
        let sealed = self.keys.seal(id, secret)?;
        let _lock = Lock::acquire(&self.dir, true)?;
        let mut entries = self.load()?;
        entries.insert(id.to_owned(), sealed);
        self.write(&entries)
    }

    pub(crate) fn remove_raw(&self, id: &str) -> Result<bool, VaultError> {
        let _lock = Lock::acquire(&self.dir, true)?;
        let mut entries = self.load()?;
        if entries.remove(id).is_none() {
            return Ok(false);
        }
        self.write(&entries)?;
        Ok(true)
    }

    /// Reads and authenticates the current file. Call with a lock held.
    fn load(&self) -> Result<Entries, VaultError> {
        let bytes = sys::read_optional(&self.dir.join(Self::FILE_NAME))?.ok_or(VaultError::Stale)?;
        // Another process may have reset the vault (new salt): our key no longer fits.
        if format::parse_header(&bytes)? != self.header {
            return Err(VaultError::Stale);
        }
        self.authenticate(&bytes)
    }

    /// Checks the whole-file MAC, then parses the entries. Nothing is used before the MAC holds.
    fn authenticate(&self, bytes: &[u8]) -> Result<Entries, VaultError> {
        let (body, mac) = format::split_mac(bytes)?;
        self.keys.verify_file_mac(body, mac)?;
        format::parse_entries(body)
    }

    /// Replaces the file. Call with the exclusive lock held.
    fn write(&self, entries: &Entries) -> Result<(), VaultError> {
        let bytes = format::serialize(&self.header, entries, &self.keys);
        sys::write_atomic(&self.dir, Self::FILE_NAME, &bytes)
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("iterations", &self.header.iterations)
            .finish_non_exhaustive()
    }
}

fn check_public_id(id: &str) -> Result<(), VaultError> {
    if id.starts_with(RESERVED_PREFIX) {
        return Err(VaultError::InvalidId { reason: "ids starting with '@' are reserved" });
    }
    format::check_id(id)
}

/// The install id, or `None` when the file is missing or empty.
fn read_install_id(dir: &Path) -> Result<Option<Zeroizing<String>>, VaultError> {
    let path = dir.join(Vault::INSTALL_ID_FILE_NAME);
    let Some(bytes) = sys::read_optional(&path)? else { return Ok(None) };
    let bytes = Zeroizing::new(bytes);
    // Read as opaque text: a changed id simply derives another key (→ Decrypt).
    let text = String::from_utf8_lossy(&bytes);
    let id = text.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_INSTALL_ID_LEN {
        return Err(VaultError::Format { reason: "install id file is damaged" });
    }
    Ok(Some(Zeroizing::new(id.to_owned())))
}

/// Creates a random install id next to the vault. Call with the exclusive lock held.
fn create_install_id(dir: &Path) -> Result<Zeroizing<String>, VaultError> {
    let mut random = [0u8; 16];
    fill_random(&mut random)?;
    let id = uuid::Builder::from_random_bytes(random).into_uuid().hyphenated().to_string();
    sys::write_atomic(dir, Vault::INSTALL_ID_FILE_NAME, format!("{id}\n").as_bytes())?;
    Ok(Zeroizing::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _assert_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<Vault>();
        is::<Secret>();
        is::<VaultError>();
    }

    #[test]
    fn policy_bounds() {
        assert!(KdfPolicy::PRODUCTION.check(PBKDF2_ITERATIONS).is_ok());
        assert!(matches!(KdfPolicy::PRODUCTION.check(599_999), Err(VaultError::WeakKdf { .. })));
        assert!(matches!(KdfPolicy::PRODUCTION.check(u32::MAX), Err(VaultError::Format { .. })));
        assert!(KdfPolicy::exactly(10).check(11).is_err());
        assert!(KdfPolicy::exactly(10).check(9).is_err());
    }
}
