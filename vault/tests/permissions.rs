//! Owner-only files (Unix).

use std::os::unix::fs::PermissionsExt;

use crate::support::{TempDir, key_dir, open};

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
    // The install secret: its own owner-only directory, an owner-only file, no temporary left.
    let keys = key_dir(&dir);
    assert_eq!(mode(&keys), 0o700);
    let files: Vec<_> = std::fs::read_dir(&keys).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files, [keys.join(format!("{}.key", vault.install_id()))]);
    assert_eq!(mode(&files[0]), 0o600);
}

#[test]
fn a_loosened_key_directory_and_key_file_are_tightened() {
    let tmp = TempDir::new("loose-keys");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    let keys = key_dir(&dir);
    let file = keys.join(format!("{}.key", vault.install_id()));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    open(&dir).unwrap();
    assert_eq!(mode(&file), 0o600);
    // A key directory that exists already (created loose by someone else's tool) is tightened
    // when a secret is written into it.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(key_dir(&other)).unwrap();
    std::fs::set_permissions(key_dir(&other), std::fs::Permissions::from_mode(0o755)).unwrap();
    open(&other).unwrap();
    assert_eq!(mode(&key_dir(&other)), 0o700);
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
    let secret = key_dir(&dir).join(format!("{}.key", vault.install_id()));
    for path in [
        dir.clone(),
        dir.join("vault.bin"),
        dir.join("install-id"),
        dir.join("vault.lock"),
        key_dir(&dir),
        secret,
    ] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (SERVICE_UID, SERVICE_UID), "{}", path.display());
    }
    assert_eq!(mode(&dir.join("vault.bin")), 0o600);
}
