//! The vault: a directory holding `vault.bin`, `install-id` and `vault.lock`, plus an install
//! secret kept outside it (a [`SecretStore`]).

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::{Keys, Material, SALT_LEN, derive_keys, fill_random};
use crate::format::{self, BIND_HARDWARE_ID, BIND_INSTALL_SECRET, Entries, Header, MAX_SECRET_LEN};
use crate::keystore::{InstallSecret, check_install_id};
use crate::sys::{self, Lock};
use crate::{MachineIdentity, Secret, SecretStore, VaultError};

/// PBKDF2-HMAC-SHA256 iterations for every vault production code writes, and the least it reads.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Most iterations a vault file may ask for (about 1 s in release builds): a damaged count must
/// not stall the agent.
const MAX_ITERATIONS: u32 = 10_000_000;
/// Credential ids starting with this are the crate's own (the API key); callers cannot use them.
pub(crate) const RESERVED_PREFIX: char = '@';

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
/// The key is derived once, in [`open`](Self::open), from the machine identity, the install id
/// next to the vault, the install secret in a [`SecretStore`] outside the vault directory and,
/// when the vault was created where it could be read, the hardware id. It is held in zeroizing
/// memory until the handle is dropped and never written anywhere. Every call reads the file
/// afresh, so a handle sees credentials another process stored after it was opened. Writes take
/// an exclusive lock on `vault.lock` around read-modify-write, so concurrent writers (the agent,
/// the CLI, several threads) never lose each other's entries. `Vault` is `Send + Sync`.
pub struct Vault {
    dir: PathBuf,
    install_id: String,
    header: Header,
    keys: Keys,
}

impl Vault {
    /// Name of the vault file inside its directory.
    pub const FILE_NAME: &'static str = "vault.bin";
    /// Name of the install id file inside the vault directory (not secret on its own).
    pub const INSTALL_ID_FILE_NAME: &'static str = "install-id";

    /// Opens the vault in `dir`, creating the directory, the install id, the install secret (in
    /// `store`) and an empty vault on first use. Derives the key (PBKDF2, 600,000 iterations:
    /// ~63 ms in release builds).
    ///
    /// A vault in the old format (version 1: key from machine id and install id only) is read
    /// with its old key once and rewritten with the new key material, atomically: until the
    /// new file replaces the old one, the old one is untouched and a later `open` migrates again.
    ///
    /// `dir` should be dedicated to the vault (e.g. `<config dir>/vault`): the crate creates it
    /// owner-only. `store` must be outside it. Refuses a vault recorded with fewer than
    /// [`PBKDF2_ITERATIONS`] iterations.
    ///
    /// # Errors
    /// [`VaultError::Decrypt`] when the vault was written on another machine or the file was
    /// altered; [`VaultError::KeyMaterialMissing`] when its install secret or install id is gone
    /// (naming where it should be); [`VaultError::HardwareIdUnavailable`] when the vault is bound
    /// to a hardware id this process cannot read; [`VaultError::Format`] when a file is
    /// structurally damaged; others for I/O, an unreadable machine identity, or a newer format.
    pub fn open(dir: &Path, store: &SecretStore, identity: &dyn MachineIdentity) -> Result<Self, VaultError> {
        Self::open_with(dir, store, identity, KdfPolicy::PRODUCTION)
    }

    /// Moves an unreadable vault file aside (`vault.bin.unreadable-<unix time>`) and starts an
    /// empty vault: the "re-enter credentials" path after [`VaultError::needs_reentry`].
    /// Returns the new handle and where the old file went, if there was one. When the install
    /// secret of the old vault is missing, a new install id (the old one moved aside too) and a
    /// new secret are made.
    pub fn reset(
        dir: &Path,
        store: &SecretStore,
        identity: &dyn MachineIdentity,
    ) -> Result<(Self, Option<PathBuf>), VaultError> {
        Self::reset_with(dir, store, identity, KdfPolicy::PRODUCTION)
    }

    /// Tests only: [`open`](Self::open) with a custom iteration count, so suites do not spend
    /// seconds in PBKDF2. Creates and accepts exactly `iterations`; the count is recorded in the
    /// file and production [`open`](Self::open) refuses such a vault ([`VaultError::WeakKdf`]).
    #[doc(hidden)]
    pub fn open_with_test_iterations(
        dir: &Path,
        store: &SecretStore,
        identity: &dyn MachineIdentity,
        iterations: u32,
    ) -> Result<Self, VaultError> {
        Self::open_with(dir, store, identity, KdfPolicy::exactly(iterations))
    }

    /// Tests only: [`reset`](Self::reset) with a custom iteration count.
    #[doc(hidden)]
    pub fn reset_with_test_iterations(
        dir: &Path,
        store: &SecretStore,
        identity: &dyn MachineIdentity,
        iterations: u32,
    ) -> Result<(Self, Option<PathBuf>), VaultError> {
        Self::reset_with(dir, store, identity, KdfPolicy::exactly(iterations))
    }

    fn open_with(
        dir: &Path,
        store: &SecretStore,
        identity: &dyn MachineIdentity,
        policy: KdfPolicy,
    ) -> Result<Self, VaultError> {
        store.check_outside(dir)?;
        let machine_id = identity.machine_id()?;
        sys::ensure_dir(dir)?;
        let path = dir.join(Self::FILE_NAME);
        let (install_id, bytes) = {
            // Exclusive: two processes opening a fresh directory must agree on one install id,
            // one install secret and one salt, so creation (and migration) happens under the lock.
            let _lock = Lock::acquire(dir, true)?;
            let install_id = read_install_id(dir)?;
            let Some(bytes) = sys::read_optional(&path)? else {
                let install_id = match install_id {
                    Some(id) => id,
                    None => create_install_id(dir)?,
                };
                let secret = store.load_or_create(&install_id)?;
                let hardware_id = identity.hardware_id()?;
                let fresh =
                    Self::derive_new(dir, &machine_id, &install_id, &secret, hardware_id, policy.create)?;
                fresh.write(&Entries::new())?;
                return Ok(fresh);
            };
            sys::tighten(&path)?;
            let header = format::parse_header(&bytes)?;
            policy.check(header.iterations)?;
            // A vault without its install id can never be decrypted again; do not invent a new id.
            let install_id = install_id.ok_or_else(|| missing_install_id(dir))?;
            if header.is_legacy() {
                return Self::migrate(dir, &bytes, header, &machine_id, &install_id, store, identity, policy);
            }
            (install_id, bytes)
        };
        // The slow part runs without the lock: the bytes in hand are one complete file.
        let header = format::parse_header(&bytes)?;
        let secret = store.require(&install_id)?;
        let hardware_id = if header.binding & BIND_HARDWARE_ID != 0 {
            Some(identity.hardware_id()?.ok_or(VaultError::HardwareIdUnavailable)?)
        } else {
            None
        };
        let material = Material::V2 {
            binding: header.binding,
            machine_id: &machine_id,
            install_id: &install_id,
            install_secret: secret.bytes(),
            hardware_id: hardware_id.as_deref().map(String::as_str),
        };
        let keys = derive_keys(&material, &header.salt, header.iterations);
        let vault = Self { dir: dir.to_owned(), install_id: install_id.to_string(), header, keys };
        vault.authenticate(&bytes)?;
        Ok(vault)
    }

    /// Rewrites a version 1 vault with the current key material. Call with the exclusive lock
    /// held. Order matters for interruptions: the old file is authenticated first (another
    /// machine's vault is refused untouched), the install secret is stored durably next, and the
    /// new file replaces the old one last, atomically. Stopped anywhere before the rename, the
    /// old file is intact and the next open migrates again with the stored secret.
    #[allow(clippy::too_many_arguments, reason = "one private step of `open_with`")]
    fn migrate(
        dir: &Path,
        bytes: &[u8],
        header: Header,
        machine_id: &str,
        install_id: &str,
        store: &SecretStore,
        identity: &dyn MachineIdentity,
        policy: KdfPolicy,
    ) -> Result<Self, VaultError> {
        let keys = derive_keys(&Material::V1 { machine_id, install_id }, &header.salt, header.iterations);
        let old = Self { dir: dir.to_owned(), install_id: install_id.to_owned(), header, keys };
        let entries = old.authenticate(bytes)?;
        let secret = store.load_or_create(install_id)?;
        let hardware_id = identity.hardware_id()?;
        let new = Self::derive_new(dir, machine_id, install_id, &secret, hardware_id, policy.create)?;
        let mut resealed = Entries::new();
        for (id, sealed) in &entries {
            let plaintext = old.keys.open(id, sealed)?;
            resealed.insert(id.clone(), new.keys.seal(id, &plaintext)?);
        }
        new.write(&resealed)?;
        Ok(new)
    }

    fn reset_with(
        dir: &Path,
        store: &SecretStore,
        identity: &dyn MachineIdentity,
        policy: KdfPolicy,
    ) -> Result<(Self, Option<PathBuf>), VaultError> {
        store.check_outside(dir)?;
        let machine_id = identity.machine_id()?;
        sys::ensure_dir(dir)?;
        let _lock = Lock::acquire(dir, true)?;
        let aside = sys::set_aside(&dir.join(Self::FILE_NAME))?;
        // Keep a readable install id whose secret is still there (the set-aside file stays
        // decryptable if the machine identity comes back). Otherwise start a new pair: a new
        // secret under the old id would make the old secret, if restored later, clash with it.
        let kept = match read_install_id(dir) {
            Ok(Some(id)) => match store.load(&id) {
                Ok(Some(secret)) => Some((id, secret)),
                _ => None,
            },
            _ => None,
        };
        let (install_id, secret) = match kept {
            Some(pair) => pair,
            None => {
                sys::set_aside(&dir.join(Self::INSTALL_ID_FILE_NAME))?;
                let id = create_install_id(dir)?;
                let secret = store.load_or_create(&id)?;
                (id, secret)
            }
        };
        let hardware_id = identity.hardware_id()?;
        let vault = Self::derive_new(dir, &machine_id, &install_id, &secret, hardware_id, policy.create)?;
        vault.write(&Entries::new())?;
        Ok((vault, aside))
    }

    /// A handle for a new file (fresh salt), bound to the hardware id when one is readable.
    /// Nothing is written.
    fn derive_new(
        dir: &Path,
        machine_id: &str,
        install_id: &str,
        secret: &InstallSecret,
        hardware_id: Option<Zeroizing<String>>,
        iterations: u32,
    ) -> Result<Self, VaultError> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        let binding = BIND_INSTALL_SECRET | if hardware_id.is_some() { BIND_HARDWARE_ID } else { 0 };
        let header = Header { version: format::VERSION, iterations, salt, binding };
        let material = Material::V2 {
            binding,
            machine_id,
            install_id,
            install_secret: secret.bytes(),
            hardware_id: hardware_id.as_deref().map(String::as_str),
        };
        let keys = derive_keys(&material, &salt, iterations);
        Ok(Self { dir: dir.to_owned(), install_id: install_id.to_owned(), header, keys })
    }

    /// The vault's install id (not secret): it names the install secret in its store, see
    /// [`SecretStore::location`].
    pub fn install_id(&self) -> &str {
        &self.install_id
    }

    /// Whether the key includes the hardware id (Linux `product_uuid`).
    pub fn hardware_bound(&self) -> bool {
        self.header.binding & BIND_HARDWARE_ID != 0
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
        let (body, mac) = format::split_mac(&self.header, bytes)?;
        self.keys.verify_file_mac(body, mac)?;
        format::parse_entries(&self.header, body)
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
            .field("version", &self.header.version)
            .field("iterations", &self.header.iterations)
            .field("hardware_bound", &self.hardware_bound())
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
pub(crate) fn read_install_id(dir: &Path) -> Result<Option<Zeroizing<String>>, VaultError> {
    let path = dir.join(Vault::INSTALL_ID_FILE_NAME);
    let Some(bytes) = sys::read_optional(&path)? else { return Ok(None) };
    let bytes = Zeroizing::new(bytes);
    // Read as opaque text; it also names the install secret, so only a file name is accepted.
    let text = String::from_utf8_lossy(&bytes);
    let id = text.trim();
    if id.is_empty() {
        return Ok(None);
    }
    check_install_id(id)?;
    Ok(Some(Zeroizing::new(id.to_owned())))
}

fn missing_install_id(dir: &Path) -> VaultError {
    VaultError::KeyMaterialMissing {
        what: "install id file",
        location: dir.join(Vault::INSTALL_ID_FILE_NAME).display().to_string(),
    }
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
