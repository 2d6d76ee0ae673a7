//! Every single-bit flip and every truncation is detected: an error, never a panic, never a
//! wrong plaintext.

use std::path::Path;

use vault::{Vault, VaultError};

use crate::support::{TempDir, open};

/// A small vault: two credentials.
fn small_vault(tmp: &TempDir) -> (std::path::PathBuf, Vec<u8>) {
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    vault.put("erp", b"pw-one").unwrap();
    vault.put("warehouse", b"pw-two").unwrap();
    let bytes = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    (dir, bytes)
}

/// The damaged file must be refused, by a fresh `open` and by a handle opened before.
fn assert_refused(dir: &Path, handle: &Vault, what: &str) {
    match open(dir) {
        Err(
            VaultError::Decrypt
            | VaultError::Format { .. }
            | VaultError::UnsupportedVersion { .. }
            | VaultError::WeakKdf { .. }
            // The key-material byte flipped to "bound to the hardware id", which this identity
            // does not have: refused before any key is derived.
            | VaultError::HardwareIdUnavailable,
        ) => {}
        other => panic!("{what}: open gave {other:?}"),
    }
    for id in ["erp", "warehouse"] {
        match handle.get(id) {
            Err(VaultError::Decrypt | VaultError::Format { .. } | VaultError::Stale) => {}
            Err(VaultError::UnsupportedVersion { .. }) => {}
            other => panic!("{what}: get({id}) gave {other:?}"),
        }
    }
    assert!(handle.ids().is_err(), "{what}: ids() accepted it");
}

#[test]
fn every_single_bit_flip_is_detected() {
    let tmp = TempDir::new("bitflip");
    let (dir, original) = small_vault(&tmp);
    let handle = open(&dir).unwrap();
    let path = dir.join(Vault::FILE_NAME);
    assert!(original.len() < 200, "keep this vault small: {} bytes", original.len());
    for byte in 0..original.len() {
        for bit in 0..8 {
            let mut damaged = original.clone();
            damaged[byte] ^= 1 << bit;
            std::fs::write(&path, &damaged).unwrap();
            assert_refused(&dir, &handle, &format!("bit {bit} of byte {byte}"));
        }
    }
    // The original still opens: the damage, not the harness, was refused.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(handle.get("erp").unwrap().expose(), b"pw-one");
}

#[test]
fn truncation_at_every_length_is_detected() {
    let tmp = TempDir::new("truncate");
    let (dir, original) = small_vault(&tmp);
    let handle = open(&dir).unwrap();
    let path = dir.join(Vault::FILE_NAME);
    for len in 0..original.len() {
        std::fs::write(&path, &original[..len]).unwrap();
        assert_refused(&dir, &handle, &format!("truncated to {len}"));
    }
}

#[test]
fn appended_bytes_are_detected() {
    let tmp = TempDir::new("append");
    let (dir, original) = small_vault(&tmp);
    let handle = open(&dir).unwrap();
    for extra in [&b"\0"[..], b"garbage", &[0u8; 64]] {
        let mut longer = original.clone();
        longer.extend_from_slice(extra);
        std::fs::write(dir.join(Vault::FILE_NAME), &longer).unwrap();
        assert_refused(&dir, &handle, &format!("{} bytes appended", extra.len()));
    }
}

#[test]
fn an_entry_moved_from_another_vault_is_detected() {
    // Same machine, two vault files: splicing one's entries into the other fails the file MAC
    // (different salt, install id and install secret, so different keys too).
    let tmp = TempDir::new("splice");
    let (dir, original) = small_vault(&tmp);
    let handle = open(&dir).unwrap();
    let (other, _) = crate::support::reset(&tmp.path().join("other")).unwrap();
    other.put("erp", b"attacker").unwrap();
    let other_bytes = std::fs::read(other.dir().join(Vault::FILE_NAME)).unwrap();
    // Keep our header (first 32 bytes), take the other's entries and MAC.
    let mut spliced = original[..32].to_vec();
    spliced.extend_from_slice(&other_bytes[32..]);
    std::fs::write(dir.join(Vault::FILE_NAME), &spliced).unwrap();
    assert_refused(&dir, &handle, "spliced");
}
