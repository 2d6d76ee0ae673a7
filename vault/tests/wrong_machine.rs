//! A vault opens only with all of its key material: the machine, the install id next to it, the
//! install secret outside it, and the hardware id when it was bound to one.

use vault::{FixedIdentity, SecretStore, Vault, VaultError};

use crate::support::{
    TEST_ITERATIONS, TempDir, copy_dir, copy_installation, elsewhere, here, key_dir, open, open_as,
};

#[test]
fn vault_copied_to_another_machine_gives_decrypt_error() {
    let tmp = TempDir::new("copied");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("warehouse-db", b"s3cret").unwrap();

    // Everything copied (vault directory and key directory) to a machine with another identity.
    let copy = tmp.path().join("copy");
    copy_installation(&dir, &copy);
    let err = open_as(&copy, &elsewhere()).unwrap_err();
    assert!(matches!(err, VaultError::Decrypt), "{err:?}");
    assert_eq!(err.wire_code(), "VAULT_DECRYPT_ERROR");
    assert!(err.needs_reentry());
    assert!(err.to_string().contains("re-enter"), "{err}");

    // Back on the original identity the copy still opens: only the machine differs.
    let back = open_as(&copy, &here()).unwrap();
    assert_eq!(back.get("warehouse-db").unwrap().expose(), b"s3cret");
}

/// The hole of issue 8: the vault directory plus `/etc/machine-id` (world-readable) used to be
/// all it took. Now the install secret outside the directory is missing, and the error names it.
#[test]
fn vault_directory_and_machine_id_without_the_install_secret_do_not_open() {
    let tmp = TempDir::new("no-secret");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    vault.put("warehouse-db", b"s3cret").unwrap();
    let install_id = vault.install_id().to_owned();
    let secret_file = key_dir(&dir).join(format!("{install_id}.key"));
    assert!(secret_file.is_file());
    let secret = std::fs::read(&secret_file).unwrap();

    // Copied on the same machine (same identity), without the key directory.
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);
    let err = open(&copy).unwrap_err();
    let expected = key_dir(&copy).join(format!("{install_id}.key"));
    match &err {
        VaultError::KeyMaterialMissing { what, location } => {
            assert_eq!(*what, "install secret");
            assert_eq!(location, &expected.display().to_string());
        }
        other => panic!("expected KeyMaterialMissing, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&expected.display().to_string()), "{message}");
    assert!(message.contains("install secret is missing"), "{message}");
    assert_eq!(err.wire_code(), "VAULT_DECRYPT_ERROR");
    assert!(err.needs_reentry());
    // Nothing was created in its place: restoring the file must still work.
    assert!(!expected.exists());
    for text in [message, format!("{err:?}")] {
        assert!(!crate::support::contains(text.as_bytes(), &secret[9..]), "secret in {text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    // Restoring the key file makes the copy readable again on this machine.
    copy_dir(&key_dir(&dir), &key_dir(&copy));
    assert_eq!(open(&copy).unwrap().get("warehouse-db").unwrap().expose(), b"s3cret");
}

#[test]
fn another_vaults_install_secret_gives_decrypt_error() {
    let tmp = TempDir::new("other-secret");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    vault.put("db", b"pw").unwrap();
    let path = key_dir(&dir).join(format!("{}.key", vault.install_id()));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(open(&dir), Err(VaultError::Decrypt)));
    std::fs::write(&path, b"MCVAULTK\x01short").unwrap();
    assert!(matches!(open(&dir), Err(VaultError::Format { .. })));
}

#[test]
fn changed_install_id_means_its_secret_is_missing() {
    let tmp = TempDir::new("install-id");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    std::fs::write(dir.join("install-id"), "00000000-0000-4000-8000-000000000000\n").unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(&err, VaultError::KeyMaterialMissing { what: "install secret", .. }), "{err:?}");
    assert!(err.to_string().contains("00000000-0000-4000-8000-000000000000.key"), "{err}");
    // A tampered id cannot point the secret at another file.
    std::fs::write(dir.join("install-id"), "../../etc/passwd\n").unwrap();
    assert!(matches!(open(&dir), Err(VaultError::Format { .. })));
}

#[test]
fn missing_install_id_is_named_and_not_recreated() {
    let tmp = TempDir::new("no-install-id");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    std::fs::remove_file(dir.join("install-id")).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(&err, VaultError::KeyMaterialMissing { what: "install id file", .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.join("install-id").display().to_string()), "{err}");
    assert!(!dir.join("install-id").exists());
}

#[test]
fn install_id_is_a_uuid_created_once() {
    let tmp = TempDir::new("uuid");
    let dir = tmp.vault_dir();
    open(&dir).unwrap();
    let first = std::fs::read_to_string(dir.join("install-id")).unwrap();
    assert_eq!(first.trim().len(), 36);
    assert_eq!(first.trim().chars().filter(|&c| c == '-').count(), 4);
    open(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("install-id")).unwrap(), first);
}

#[test]
fn the_install_secret_never_lives_in_the_vault_directory() {
    let tmp = TempDir::new("inside");
    let dir = tmp.vault_dir();
    let err = Vault::open_with_test_iterations(&dir, &SecretStore::files(&dir), &here(), TEST_ITERATIONS)
        .unwrap_err();
    assert!(matches!(err, VaultError::KeyStore { .. }), "{err:?}");
    let inside = SecretStore::files(dir.join("keys"));
    let err = Vault::open_with_test_iterations(&dir, &inside, &here(), TEST_ITERATIONS).unwrap_err();
    assert!(matches!(err, VaultError::KeyStore { .. }), "{err:?}");
    assert!(!dir.join("vault.bin").exists());
}

const HARDWARE: &str = "4c4c4544-0042-3510-8052-b4c04f4e3732";

fn root_here() -> FixedIdentity {
    crate::support::here().with_hardware_id(HARDWARE)
}

#[test]
fn a_vault_made_where_the_hardware_id_is_readable_needs_it() {
    let tmp = TempDir::new("hardware");
    let dir = tmp.vault_dir();
    let vault = open_as(&dir, &root_here()).unwrap();
    assert!(vault.hardware_bound());
    vault.put("db", b"pw").unwrap();
    assert_eq!(open_as(&dir, &root_here()).unwrap().get("db").unwrap().expose(), b"pw");

    // The same machine id and install secret, but the hardware id unreadable (not root, or the
    // service without its LoadCredential): a clear error, not a wrong key.
    let err = open(&dir).unwrap_err();
    assert!(matches!(err, VaultError::HardwareIdUnavailable), "{err:?}");
    assert!(!err.needs_reentry());
    assert!(err.to_string().contains("product_uuid"), "{err}");
    assert!(!err.to_string().contains(HARDWARE));

    // Everything on disk copied to hardware with another id (same machine-id: a cloned image).
    let copy = tmp.path().join("copy");
    copy_installation(&dir, &copy);
    let clone = crate::support::here().with_hardware_id("00000000-1111-2222-3333-444444444444");
    assert!(matches!(open_as(&copy, &clone), Err(VaultError::Decrypt)));
}

#[test]
fn a_vault_made_without_a_hardware_id_ignores_one_later() {
    let tmp = TempDir::new("no-hardware");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    assert!(!vault.hardware_bound());
    vault.put("db", b"pw").unwrap();
    // Root opening a user's vault must not need (or add) the hardware id.
    let as_root = open_as(&dir, &root_here()).unwrap();
    assert!(!as_root.hardware_bound());
    assert_eq!(as_root.get("db").unwrap().expose(), b"pw");
    assert_eq!(open(&dir).unwrap().get("db").unwrap().expose(), b"pw");
}

/// What `service install` does when the service takes a vault over: the vault files go to the
/// service's directory, the install secret to the service's key directory.
#[test]
fn a_secret_copied_with_its_vault_opens_it_and_deleting_the_old_one_is_safe() {
    let tmp = TempDir::new("takeover");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    let service_dir = tmp.path().join("service-vault");
    copy_dir(&dir, &service_dir);
    let service_keys = SecretStore::files(tmp.path().join("service-keys"));
    let id = crate::support::keys(&dir).copy_secret(&service_dir, &service_keys).unwrap().unwrap();
    let moved =
        Vault::open_with_test_iterations(&service_dir, &service_keys, &here(), TEST_ITERATIONS).unwrap();
    assert_eq!(moved.get("db").unwrap().expose(), b"pw");
    assert!(crate::support::keys(&dir).delete_secret(&id).unwrap());
    assert!(!crate::support::keys(&dir).delete_secret(&id).unwrap());
    assert!(matches!(open(&dir), Err(VaultError::KeyMaterialMissing { .. })));
    // Nothing to copy for a directory without a vault.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(service_keys.copy_secret(&empty, &crate::support::keys(&dir)).unwrap(), None);
}
