//! Shared helpers: temporary directories and fast test vaults.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use vault::{FixedIdentity, SecretStore, Vault, VaultError};

/// Iterations for test vaults: fast, and refused by production `open`.
pub const TEST_ITERATIONS: u32 = 10;

/// "This machine".
pub fn here() -> FixedIdentity {
    FixedIdentity::new("5c0ffee05c0ffee05c0ffee05c0ffee0")
}

/// "Another machine".
pub fn elsewhere() -> FixedIdentity {
    FixedIdentity::new("0f5e2b8a9c6d4e1f8a7b6c5d4e3f2a1b")
}

/// Where a test vault's install secret lives: `<vault dir>.keys`, beside the vault directory,
/// never inside it. A copied vault directory has its own (empty until copied) key directory.
pub fn key_dir(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}

/// The install secret store of the vault in `dir`.
pub fn keys(dir: &Path) -> SecretStore {
    SecretStore::files(key_dir(dir))
}

pub fn open(dir: &Path) -> Result<Vault, VaultError> {
    Vault::open_with_test_iterations(dir, &keys(dir), &here(), TEST_ITERATIONS)
}

/// `open` as `identity`.
pub fn open_as(dir: &Path, identity: &FixedIdentity) -> Result<Vault, VaultError> {
    Vault::open_with_test_iterations(dir, &keys(dir), identity, TEST_ITERATIONS)
}

/// `Vault::reset` of the vault in `dir`, on "this machine".
pub fn reset(dir: &Path) -> Result<(Vault, Option<PathBuf>), VaultError> {
    Vault::reset_with_test_iterations(dir, &keys(dir), &here(), TEST_ITERATIONS)
}

/// Copies a vault directory and its key directory: the whole installation, as a full-disk
/// backup or image would hold it.
pub fn copy_installation(from: &Path, to: &Path) {
    copy_dir(from, to);
    if key_dir(from).is_dir() {
        copy_dir(&key_dir(from), &key_dir(to));
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("vault-test-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A not-yet-existing vault directory inside this one.
    pub fn vault_dir(&self) -> PathBuf {
        self.0.join("vault")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies every regular file of `from` into `to` (created).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
