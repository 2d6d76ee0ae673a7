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

/// A version 1 file built by hand from the documented version 1 construction, with the
/// production iteration count, so production `Vault::open` (which refuses test counts) migrates it.
fn write_v1(dir: &Path, machine_id: &str, install_id: &str, iterations: u32, entries: &[(&str, &[u8])]) {
    use aes_gcm::Aes256Gcm;
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    let salt = [0x5a; 16];
    let mut password = b"mini-connector/vault/v1\0".to_vec();
    for part in [machine_id.as_bytes(), install_id.as_bytes()] {
        password.extend_from_slice(&(part.len() as u32).to_be_bytes());
        password.extend_from_slice(part);
    }
    let mut master = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(
        &password,
        &[&crate::secrecy::APP_SALT[..], &salt].concat(),
        iterations,
        &mut master,
    );
    let sub = |label: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&master).unwrap();
        mac.update(label);
        mac.finalize().into_bytes().into()
    };
    let (enc, mac_key) = (sub(b"mini-connector/vault/enc"), sub(b"mini-connector/vault/mac"));
    let mut out = b"MCVAULT\0\0\x01\x01".to_vec();
    out.extend_from_slice(&iterations.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    let mut sorted = entries.to_vec();
    sorted.sort();
    for (i, (id, plaintext)) in sorted.iter().enumerate() {
        let nonce = [i as u8; 12];
        let mut buffer = plaintext.to_vec();
        Aes256Gcm::new_from_slice(&enc)
            .unwrap()
            .encrypt_in_place(&nonce.into(), id.as_bytes(), &mut buffer)
            .unwrap();
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&(buffer.len() as u32).to_be_bytes());
        out.extend_from_slice(&buffer);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&mac_key).unwrap();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(Vault::FILE_NAME), out).unwrap();
    std::fs::write(dir.join(Vault::INSTALL_ID_FILE_NAME), format!("{install_id}\n")).unwrap();
}

#[test]
fn production_open_migrates_a_production_old_vault() {
    let tmp = TempDir::new("migrate-production");
    let dir = tmp.path().join("vault");
    let machine = crate::support::here();
    let machine_id = vault::MachineIdentity::machine_id(&machine).unwrap();
    write_v1(
        &dir,
        &machine_id,
        "8bb24228-93b6-4194-8eda-cc7c89d91298",
        vault::PBKDF2_ITERATIONS,
        &[("db:erp", b"erp-password"), ("@apikey", b"vmc_acme_abcdefghijkl_00000")],
    );
    let keys = SecretStore::files(tmp.path().join("keys"));
    let started = std::time::Instant::now();
    let vault = Vault::open(&dir, &keys, &machine).unwrap();
    eprintln!("production migration (2 x 600,000 iterations) took {:?}", started.elapsed());
    assert_eq!(version(&dir), 2);
    assert_eq!(vault.ids().unwrap(), ["db:erp"]);
    assert_eq!(vault.get("db:erp").unwrap().expose(), b"erp-password");
    assert_eq!(vault::ApiKeyStore::Vault.load(&vault).unwrap().expose(), b"vmc_acme_abcdefghijkl_00000");
    let started = std::time::Instant::now();
    let again = Vault::open(&dir, &keys, &machine).unwrap();
    eprintln!("production open after migration took {:?}", started.elapsed());
    assert_eq!(again.get("db:erp").unwrap().expose(), b"erp-password");
}
