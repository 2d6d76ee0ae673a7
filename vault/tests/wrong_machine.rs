use vault::{Vault, VaultError};

use crate::support::{TEST_ITERATIONS, TempDir, copy_dir, elsewhere, here, open};

#[test]
fn vault_copied_to_another_machine_gives_decrypt_error() {
    let tmp = TempDir::new("copied");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("warehouse-db", b"s3cret").unwrap();

    // The whole directory (vault + install id) copied to a machine with another identity.
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);
    let err = Vault::open_with_test_iterations(&copy, &elsewhere(), TEST_ITERATIONS).unwrap_err();
    assert!(matches!(err, VaultError::Decrypt), "{err:?}");
    assert_eq!(err.wire_code(), "VAULT_DECRYPT_ERROR");
    assert!(err.needs_reentry());
    assert!(err.to_string().contains("re-enter"), "{err}");

    // Back on the original identity the copy still opens: only the machine differs.
    let back = Vault::open_with_test_iterations(&copy, &here(), TEST_ITERATIONS).unwrap();
    assert_eq!(back.get("warehouse-db").unwrap().expose(), b"s3cret");
}

#[test]
fn changed_install_id_gives_decrypt_error() {
    let tmp = TempDir::new("install-id");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    std::fs::write(dir.join("install-id"), "00000000-0000-4000-8000-000000000000\n").unwrap();
    assert!(matches!(open(&dir), Err(VaultError::Decrypt)));
}

#[test]
fn missing_install_id_gives_decrypt_error_and_is_not_recreated() {
    let tmp = TempDir::new("no-install-id");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    std::fs::remove_file(dir.join("install-id")).unwrap();
    assert!(matches!(open(&dir), Err(VaultError::Decrypt)));
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
