//! Vaults of the old format (version 1: key from machine id + install id only, so the vault
//! directory plus `/etc/machine-id` was enough to decrypt it) are rewritten with the new key
//! material at their first open: transparently, atomically, once.

use std::path::Path;
use std::sync::{Arc, Barrier};

use vault::{FixedIdentity, SecretStore, Vault, VaultError};

use crate::golden::{ITERATIONS, assert_golden_content, fixture, identity};
use crate::support::{TempDir, copy_dir, elsewhere};

/// A fresh copy of the version 1 fixture; its (empty) key directory is `<tmp>/keys`.
fn legacy(tmp: &TempDir) -> (std::path::PathBuf, SecretStore) {
    let dir = tmp.path().join("vault");
    copy_dir(&fixture("golden-v1"), &dir);
    (dir, SecretStore::files(tmp.path().join("keys")))
}

fn open(dir: &Path, keys: &SecretStore, who: &FixedIdentity) -> Result<Vault, VaultError> {
    Vault::open_with_test_iterations(dir, keys, who, ITERATIONS)
}

fn key_files(tmp: &TempDir) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(tmp.path().join("keys")) {
        Ok(listing) => listing.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn version(dir: &Path) -> u16 {
    let bytes = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    u16::from_be_bytes([bytes[8], bytes[9]])
}

#[test]
fn an_old_vault_is_migrated_on_first_open_and_keeps_every_credential() {
    let tmp = TempDir::new("migrate");
    let (dir, keys) = legacy(&tmp);
    assert_eq!(version(&dir), 1);

    let vault = open(&dir, &keys, &identity()).unwrap();
    assert_golden_content(&vault);
    assert_eq!(version(&dir), 2);
    let secret_file = tmp.path().join("keys").join(format!("{}.key", vault.install_id()));
    assert_eq!(key_files(&tmp), [secret_file]);

    // Opening again reads the new file as it is (no second migration), and new writes work.
    let migrated = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    let again = open(&dir, &keys, &identity()).unwrap();
    assert_golden_content(&again);
    assert_eq!(std::fs::read(dir.join(Vault::FILE_NAME)).unwrap(), migrated);
    again.put("added-after", b"x").unwrap();
    assert_eq!(vault.get("added-after").unwrap().expose(), b"x");

    // The new key really needs the install secret: the migrated directory alone no longer opens.
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);
    let err = open(&copy, &SecretStore::files(tmp.path().join("copy-keys")), &identity()).unwrap_err();
    assert!(matches!(err, VaultError::KeyMaterialMissing { what: "install secret", .. }), "{err:?}");
    // No temporary file left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[test]
fn another_machines_old_vault_is_refused_untouched() {
    let tmp = TempDir::new("migrate-elsewhere");
    let (dir, keys) = legacy(&tmp);
    let before = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    let err = open(&dir, &keys, &elsewhere()).unwrap_err();
    assert!(matches!(err, VaultError::Decrypt), "{err:?}");
    assert_eq!(std::fs::read(dir.join(Vault::FILE_NAME)).unwrap(), before);
    assert!(key_files(&tmp).is_empty(), "no secret made for a vault that was not read");
    // The right machine still migrates it afterwards.
    assert_golden_content(&open(&dir, &keys, &identity()).unwrap());
}

/// The disk states an interrupted migration can leave, each followed by a successful open with
/// every credential: the secret stored but the old file not yet replaced, plus a half-written
/// temporary file.
#[test]
fn an_interrupted_migration_loses_nothing() {
    let tmp = TempDir::new("migrate-interrupted");
    let (dir, keys) = legacy(&tmp);
    let old_bytes = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();

    // Stopped after the secret was stored, before the new vault replaced the old one: migrate a
    // copy (same install id), then put the old file back beside the stored secret.
    let scratch = tmp.path().join("scratch");
    copy_dir(&dir, &scratch);
    drop(open(&scratch, &keys, &identity()).unwrap());
    let secret_before = std::fs::read(&key_files(&tmp)[0]).unwrap();
    assert_eq!(version(&dir), 1);
    // ... and while writing the new file: a partial temporary file.
    std::fs::write(dir.join(".vault.bin.tmp-4242-00aa00aa00aa00aa"), &old_bytes[..20]).unwrap();

    let vault = open(&dir, &keys, &identity()).unwrap();
    assert_golden_content(&vault);
    assert_eq!(version(&dir), 2);
    // The stored secret was reused, not replaced (the scratch copy, bound to it, still opens).
    assert_eq!(std::fs::read(&key_files(&tmp)[0]).unwrap(), secret_before);
    assert_golden_content(&open(&scratch, &keys, &identity()).unwrap());
    assert!(!dir.join(".vault.bin.tmp-4242-00aa00aa00aa00aa").exists());
}

#[test]
fn concurrent_first_opens_migrate_once() {
    let tmp = TempDir::new("migrate-concurrent");
    let (dir, keys) = legacy(&tmp);
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (dir, keys, start) = (dir.clone(), keys.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let vault = open(&dir, &keys, &identity()).unwrap();
                vault.put(&format!("thread-{i}"), b"x").unwrap();
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let vault = open(&dir, &keys, &identity()).unwrap();
    let ids = vault.ids().unwrap();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert_eq!(key_files(&tmp).len(), 1);
}

#[test]
fn migration_binds_to_the_hardware_id_when_readable() {
    let tmp = TempDir::new("migrate-hardware");
    let (dir, keys) = legacy(&tmp);
    let root = identity().with_hardware_id("4c4c4544-0042-3510-8052-b4c04f4e3732");
    assert!(open(&dir, &keys, &root).unwrap().hardware_bound());
    assert!(matches!(open(&dir, &keys, &identity()), Err(VaultError::HardwareIdUnavailable)));
    assert_golden_content(&open(&dir, &keys, &root).unwrap());
}
