//! Vaults written by earlier builds must stay readable: the format must not drift.
//!
//! - `golden-v1/`: a version 1 vault (key from machine id + install id only), written by the
//!   build before the install secret existed. It is migrated on open (see `migration.rs`).
//! - `golden-v2/`: the current format: `vault/` (vault.bin, install-id) and `keys/` (the
//!   install secret, which lives outside the vault directory).
//!
//! Regenerate golden-v2 (only for a deliberate format change, with a new version number):
//! `VAULT_REGENERATE_GOLDEN=1 cargo test -p vault golden`. golden-v1 cannot be regenerated: this
//! code no longer writes version 1.

use std::path::{Path, PathBuf};

use vault::{ApiKeyStore, FixedIdentity, SecretStore, Vault};

use crate::support::{TempDir, copy_dir};

pub const ITERATIONS: u32 = 1000;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn identity() -> FixedIdentity {
    FixedIdentity::new("golden-machine-0123456789abcdef")
}

/// The credentials both golden vaults hold.
pub fn assert_golden_content(vault: &Vault) {
    assert_eq!(vault.ids().unwrap(), ["orders-db", "warehouse"]);
    assert_eq!(vault.get("orders-db").unwrap().expose(), b"golden-password");
    assert_eq!(vault.get("warehouse").unwrap().expose_str(), Some("pässwörd"));
    assert_eq!(ApiKeyStore::Vault.load(vault).unwrap().expose(), b"vmc_golden_abcdefghijkl_00000");
}

#[test]
fn golden_v2_vault_still_opens() {
    let root = fixture("golden-v2");
    if std::env::var_os("VAULT_REGENERATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&root);
        let (dir, keys) = (root.join("vault"), SecretStore::files(root.join("keys")));
        let vault = Vault::open_with_test_iterations(&dir, &keys, &identity(), ITERATIONS).unwrap();
        vault.put("orders-db", b"golden-password").unwrap();
        vault.put("warehouse", "pässwörd".as_bytes()).unwrap();
        ApiKeyStore::Vault.store(&vault, b"vmc_golden_abcdefghijkl_00000").unwrap();
        std::fs::remove_file(dir.join("vault.lock")).unwrap();
    }
    let tmp = TempDir::new("golden-v2");
    let (dir, key_dir) = (tmp.path().join("vault"), tmp.path().join("keys"));
    copy_dir(&root.join("vault"), &dir);
    copy_dir(&root.join("keys"), &key_dir);
    let before = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    let vault =
        Vault::open_with_test_iterations(&dir, &SecretStore::files(&key_dir), &identity(), ITERATIONS)
            .unwrap();
    assert_golden_content(&vault);
    assert!(!vault.hardware_bound());
    // Opened and read as it is: no rewrite.
    assert_eq!(std::fs::read(dir.join(Vault::FILE_NAME)).unwrap(), before);
    assert_eq!(&before[..12], b"MCVAULT\0\0\x02\x01\x00");
    assert_eq!(before[31], 1, "key material: install secret");
}

#[test]
fn golden_v1_fixture_is_the_old_format() {
    let bytes = std::fs::read(fixture("golden-v1").join(Vault::FILE_NAME)).unwrap();
    assert_eq!(&bytes[..11], b"MCVAULT\0\0\x01\x01");
}
