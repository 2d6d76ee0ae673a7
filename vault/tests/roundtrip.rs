use vault::VaultError;

use crate::support::{TempDir, open};

#[test]
fn put_get_replace_remove_round_trip() {
    let tmp = TempDir::new("roundtrip");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    assert!(vault.ids().unwrap().is_empty());

    vault.put("warehouse-db", b"s3cret").unwrap();
    vault.put("erp", "pässwörd ✓".as_bytes()).unwrap();
    vault.put("empty", b"").unwrap();
    assert_eq!(vault.get("warehouse-db").unwrap().expose(), b"s3cret");
    assert_eq!(vault.get("erp").unwrap().expose_str(), Some("pässwörd ✓"));
    assert!(vault.get("empty").unwrap().is_empty());
    assert_eq!(vault.ids().unwrap(), ["empty", "erp", "warehouse-db"]);

    vault.put("warehouse-db", b"rotated").unwrap();
    assert_eq!(vault.get("warehouse-db").unwrap().expose(), b"rotated");

    assert!(vault.remove("empty").unwrap());
    assert!(!vault.remove("empty").unwrap());
    assert!(matches!(vault.get("empty"), Err(VaultError::NotFound { id }) if id == "empty"));
    drop(vault);

    // A new handle (a new process, in real life) reads the same credentials.
    let reopened = open(&dir).unwrap();
    assert_eq!(reopened.ids().unwrap(), ["erp", "warehouse-db"]);
    assert_eq!(reopened.get("warehouse-db").unwrap().expose(), b"rotated");
}

#[test]
fn a_handle_sees_writes_made_through_another_handle() {
    let tmp = TempDir::new("two-handles");
    let first = open(&tmp.vault_dir()).unwrap();
    let second = open(&tmp.vault_dir()).unwrap();
    second.put("added-later", b"x").unwrap();
    assert_eq!(first.get("added-later").unwrap().expose(), b"x");
}

#[test]
fn bad_ids_and_sizes_are_refused() {
    let tmp = TempDir::new("ids");
    let vault = open(&tmp.vault_dir()).unwrap();
    for id in ["", "@apikey", "@anything", "line\nbreak"] {
        assert!(matches!(vault.put(id, b"x"), Err(VaultError::InvalidId { .. })), "{id:?}");
        assert!(matches!(vault.get(id), Err(VaultError::InvalidId { .. })), "{id:?}");
        assert!(matches!(vault.remove(id), Err(VaultError::InvalidId { .. })), "{id:?}");
    }
    assert!(matches!(vault.put(&"x".repeat(256), b"x"), Err(VaultError::InvalidId { .. })));
    let huge = vec![0u8; (1 << 20) + 1];
    assert!(matches!(vault.put("big", &huge), Err(VaultError::TooLarge { .. })));
    vault.put(&"x".repeat(255), &huge[1..]).unwrap();
}

#[test]
fn reset_starts_over_and_keeps_the_old_file_aside() {
    let tmp = TempDir::new("reset");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    let (vault, aside) = crate::support::reset(&dir).unwrap();
    let aside = aside.expect("old vault moved aside");
    assert!(aside.file_name().unwrap().to_string_lossy().starts_with("vault.bin.unreadable-"));
    assert!(aside.exists());
    assert!(vault.ids().unwrap().is_empty());
    vault.put("db", b"new").unwrap();
    assert_eq!(open(&dir).unwrap().get("db").unwrap().expose(), b"new");
}

#[test]
fn a_handle_opened_before_a_reset_is_stale_not_wrong() {
    let tmp = TempDir::new("stale");
    let dir = tmp.vault_dir();
    let old = open(&dir).unwrap();
    old.put("db", b"pw").unwrap();
    crate::support::reset(&dir).unwrap();
    assert!(matches!(old.get("db"), Err(VaultError::Stale)));
    assert!(matches!(old.put("db", b"x"), Err(VaultError::Stale)));
}

#[test]
fn same_content_serializes_to_the_same_bytes() {
    let tmp = TempDir::new("deterministic");
    let vault = open(&tmp.vault_dir()).unwrap();
    vault.put("b", b"2").unwrap();
    vault.put("a", b"1").unwrap();
    let before = std::fs::read(tmp.vault_dir().join("vault.bin")).unwrap();
    // Removing an id that is not there rewrites nothing; re-putting would change the nonce.
    assert!(!vault.remove("zzz").unwrap());
    vault.put("c", b"3").unwrap();
    vault.remove("c").unwrap();
    let after = std::fs::read(tmp.vault_dir().join("vault.bin")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn reset_replaces_a_damaged_install_id() {
    let tmp = TempDir::new("reset-install-id");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    std::fs::write(dir.join("install-id"), "x".repeat(500)).unwrap();
    assert!(matches!(open(&dir), Err(VaultError::Format { .. })));
    let (vault, _) = crate::support::reset(&dir).unwrap();
    vault.put("db", b"again").unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("install-id")).unwrap().trim().len(), 36);
    assert_eq!(open(&dir).unwrap().get("db").unwrap().expose(), b"again");
}
