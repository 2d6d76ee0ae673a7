//! Owner-only files (Unix).

use std::os::unix::fs::PermissionsExt;

use crate::support::{TempDir, open};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn vault_files_are_0600_and_a_created_directory_0700() {
    let tmp = TempDir::new("modes");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    vault.put("db", b"pw").unwrap();
    assert_eq!(mode(&dir), 0o700);
    for name in ["vault.bin", "install-id", "vault.lock"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
}

#[test]
fn a_loosened_vault_file_is_tightened_on_open_and_on_write() {
    let tmp = TempDir::new("loose");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    let path = dir.join("vault.bin");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    open(&dir).unwrap();
    assert_eq!(mode(&path), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    vault.put("db", b"pw").unwrap();
    assert_eq!(mode(&path), 0o600);
}

/// `sudo mini-connector db add` on a service's state directory: what root creates there goes to
/// the directory's owner, or the service could not read its own credentials. Runs only as root.
#[test]
fn files_root_creates_in_another_users_directory_go_to_that_user() {
    use std::os::unix::fs::MetadataExt;
    const SERVICE_UID: u32 = 65534; // nobody
    let tmp = TempDir::new("owner");
    if std::os::unix::fs::chown(tmp.path(), Some(SERVICE_UID), Some(SERVICE_UID)).is_err() {
        eprintln!("not root: skipping the ownership test");
        return;
    }
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    vault.put("db", b"pw").unwrap();
    crate::support::open(&dir).unwrap().get("db").unwrap();
    for path in [dir.clone(), dir.join("vault.bin"), dir.join("install-id"), dir.join("vault.lock")] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (SERVICE_UID, SERVICE_UID), "{}", path.display());
    }
    assert_eq!(mode(&dir.join("vault.bin")), 0o600);
}
