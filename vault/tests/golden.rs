//! A vault written by an earlier build must stay readable: the format must not drift.
//!
//! Regenerate (only for a deliberate format change, with a new version number):
//! `VAULT_REGENERATE_GOLDEN=1 cargo test -p vault golden`.

use std::path::{Path, PathBuf};

use vault::{ApiKeyStore, FixedIdentity, Vault};

use crate::support::{TempDir, copy_dir};

const ITERATIONS: u32 = 1000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v1")
}

fn identity() -> FixedIdentity {
    FixedIdentity::new("golden-machine-0123456789abcdef")
}

#[test]
fn golden_v1_vault_still_opens() {
    if std::env::var_os("VAULT_REGENERATE_GOLDEN").is_some() {
        let dir = fixture();
        let _ = std::fs::remove_dir_all(&dir);
        let vault = Vault::open_with_test_iterations(&dir, &identity(), ITERATIONS).unwrap();
        vault.put("orders-db", b"golden-password").unwrap();
        vault.put("warehouse", "pässwörd".as_bytes()).unwrap();
        ApiKeyStore::Vault.store(&vault, b"vmc_golden_abcdefghijkl_00000").unwrap();
        std::fs::remove_file(dir.join("vault.lock")).unwrap();
    }
    let tmp = TempDir::new("golden");
    let dir = tmp.vault_dir();
    copy_dir(&fixture(), &dir);
    let vault = Vault::open_with_test_iterations(&dir, &identity(), ITERATIONS).unwrap();
    assert_eq!(vault.ids().unwrap(), ["orders-db", "warehouse"]);
    assert_eq!(vault.get("orders-db").unwrap().expose(), b"golden-password");
    assert_eq!(vault.get("warehouse").unwrap().expose_str(), Some("pässwörd"));
    assert_eq!(ApiKeyStore::Vault.load(&vault).unwrap().expose(), b"vmc_golden_abcdefghijkl_00000");
    let bytes = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    assert_eq!(&bytes[..11], b"MCVAULT\0\0\x01\x01");
}
