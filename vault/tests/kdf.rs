use std::time::Instant;

use vault::{PBKDF2_ITERATIONS, Vault, VaultError};

use crate::support::{TempDir, here, keys, open};

fn recorded_iterations(dir: &std::path::Path) -> u32 {
    let bytes = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    u32::from_be_bytes(bytes[11..15].try_into().unwrap())
}

#[test]
fn production_open_refuses_a_low_iteration_vault() {
    let tmp = TempDir::new("weak");
    let dir = tmp.vault_dir();
    open(&dir).unwrap().put("db", b"pw").unwrap();
    assert_eq!(recorded_iterations(&dir), crate::support::TEST_ITERATIONS);
    let err = Vault::open(&dir, &keys(&dir), &here()).unwrap_err();
    assert!(matches!(err, VaultError::WeakKdf { iterations: 10 }), "{err:?}");
    assert!(err.needs_reentry());
    // Refused before any key derivation or write: the file is untouched.
    assert_eq!(recorded_iterations(&dir), crate::support::TEST_ITERATIONS);
}

#[test]
fn production_open_writes_and_reads_600_000_iterations() {
    assert_eq!(PBKDF2_ITERATIONS, 600_000);
    let tmp = TempDir::new("production");
    let dir = tmp.vault_dir();
    let started = Instant::now();
    let vault = Vault::open(&dir, &keys(&dir), &here()).unwrap();
    eprintln!("production open (600,000 iterations) took {:?}", started.elapsed());
    vault.put("db", b"pw").unwrap();
    assert_eq!(recorded_iterations(&dir), 600_000);
    // `get` reads the file back and checks its MAC with the 600,000-iteration key.
    assert_eq!(vault.get("db").unwrap().expose(), b"pw");
    // And a test handle expecting another count refuses it rather than deriving a wrong key.
    assert!(open(&dir).is_err());
}
