//! Nothing secret reaches a file, a `Debug` string or an error message.

// The re-derivation test is Unix-only (see it); its helpers are unused on Windows.
#![cfg_attr(windows, allow(unused_imports, dead_code))]

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use vault::{MachineIdentity, Secret, Vault, VaultError};

use crate::support::{TEST_ITERATIONS, TempDir, contains, elsewhere, here, key_dir, open, open_as};

const PASSWORD: &[u8] = b"correct-horse-battery-staple-0xC0FFEE";

/// The application salt as documented in `crypto.rs`. A copy on purpose: if the constant in
/// the crate changes, every vault in the field becomes unreadable, and this test says so.
pub const APP_SALT: [u8; 32] = [
    0x02, 0x34, 0x96, 0xb0, 0x99, 0x61, 0x7e, 0x17, 0x30, 0x07, 0xc7, 0x6c, 0x0d, 0x76, 0x18, 0xf6, 0xf4,
    0x25, 0x2a, 0x27, 0x4a, 0xe3, 0xd6, 0x64, 0x2e, 0x4b, 0xa7, 0xbc, 0xbd, 0x96, 0x68, 0xb5,
];

/// Re-derives (master, enc, mac) keys from the documented construction (format version 2, no
/// hardware id).
fn derive(machine_id: &str, install_id: &str, secret: &[u8], salt: &[u8], iterations: u32) -> [[u8; 32]; 3] {
    let mut password = b"mini-connector/vault/v2\0\x01".to_vec();
    for part in [machine_id.as_bytes(), install_id.as_bytes(), secret, b""] {
        password.extend_from_slice(&(part.len() as u32).to_be_bytes());
        password.extend_from_slice(part);
    }
    let full_salt = [&APP_SALT[..], salt].concat();
    let mut master = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(&password, &full_salt, iterations, &mut master);
    let sub = |label: &[u8]| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&master).unwrap();
        mac.update(label);
        mac.finalize().into_bytes().into()
    };
    [master, sub(b"mini-connector/vault/enc"), sub(b"mini-connector/vault/mac")]
}

/// Unix: the key file holds the secret in clear (its permissions protect it); on Windows it is
/// a DPAPI blob this test cannot open, so the re-derivation runs on Unix only.
#[cfg(not(windows))]
#[test]
fn neither_plaintext_nor_derived_keys_appear_in_any_vault_file() {
    let tmp = TempDir::new("no-leak");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    vault.put("warehouse-db", PASSWORD).unwrap();
    vault.put("erp", PASSWORD).unwrap();

    let bytes = std::fs::read(dir.join(Vault::FILE_NAME)).unwrap();
    let install_id = std::fs::read_to_string(dir.join("install-id")).unwrap();
    let machine_id = here().machine_id().unwrap();
    // The key file: magic, kind 1 (plain on Unix), the 32 secret bytes.
    let key_file = std::fs::read(key_dir(&dir).join(format!("{}.key", install_id.trim()))).unwrap();
    assert_eq!(&key_file[..9], b"MCVAULTK\x01");
    let secret = &key_file[9..];
    assert_eq!(secret.len(), 32);
    assert_eq!(bytes[31], 1, "key material: install secret, no hardware id");
    let keys = derive(&machine_id, install_id.trim(), secret, &bytes[15..31], TEST_ITERATIONS);

    // The construction is the documented one: the re-derived MAC key checks the file, and the
    // re-derived encryption key opens the first entry ("erp", sorted first).
    let body = &bytes[..bytes.len() - 32];
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&keys[2]).unwrap();
    mac.update(body);
    mac.verify_slice(&bytes[bytes.len() - 32..]).expect("documented MAC key");
    let entry = &bytes[36..];
    assert_eq!(&entry[..5], b"\0\x03erp");
    let nonce: [u8; 12] = entry[5..17].try_into().unwrap();
    let ct_len = u32::from_be_bytes(entry[17..21].try_into().unwrap()) as usize;
    let mut buffer = entry[21..21 + ct_len].to_vec();
    Aes256Gcm::new_from_slice(&keys[1])
        .unwrap()
        .decrypt_in_place(&nonce.into(), b"erp", &mut buffer)
        .unwrap();
    assert_eq!(buffer, PASSWORD);

    for file in std::fs::read_dir(&dir).unwrap().chain(std::fs::read_dir(key_dir(&dir)).unwrap()) {
        let file = file.unwrap().path();
        let content = std::fs::read(&file).unwrap();
        if !file.starts_with(key_dir(&dir)) {
            assert!(!contains(&content, secret), "install secret in the vault directory: {}", file.display());
            assert!(!contains(&content, &secret[..8]), "install secret prefix in {}", file.display());
        }
        assert!(!contains(&content, PASSWORD), "plaintext in {}", file.display());
        assert!(!contains(&content, &PASSWORD[..12]), "plaintext prefix in {}", file.display());
        for key in &keys {
            assert!(!contains(&content, key), "key material in {}", file.display());
            assert!(!contains(&content, &key[..8]), "key prefix in {}", file.display());
        }
        assert!(!contains(&content, machine_id.as_bytes()), "machine id in {}", file.display());
    }
}

#[test]
fn secret_debug_prints_stars() {
    let secret = Secret::from(PASSWORD.to_vec());
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
    assert_eq!(secret.expose(), PASSWORD);
}

#[test]
fn debug_and_errors_carry_no_secret() {
    let tmp = TempDir::new("debug");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    vault.put("db", PASSWORD).unwrap();
    let debug = format!("{vault:?} {:?}", vault.get("db").unwrap());
    assert!(!debug.contains("correct-horse"), "{debug}");
    assert!(!debug.contains("5c0ffee0"), "machine id in {debug}");

    let install_id = vault.install_id().to_owned();
    let secret = std::fs::read(key_dir(&dir).join(format!("{install_id}.key"))).unwrap()[9..].to_vec();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let copy = tmp.path().join("copy");
    crate::support::copy_dir(&dir, &copy);
    let missing = open(&copy).unwrap_err();
    crate::support::copy_installation(&dir, &copy);
    let wrong_machine = open_as(&copy, &elsewhere()).unwrap_err();
    let debug =
        format!("{vault:?} {:?} {:?}", crate::support::keys(&dir), here().with_hardware_id("hw-7f3a"));
    for text in [
        missing.to_string(),
        format!("{missing:?}"),
        wrong_machine.to_string(),
        format!("{wrong_machine:?}"),
        debug,
    ] {
        assert!(
            !text.contains("correct-horse") && !text.contains("5c0ffee0") && !text.contains("0f5e2b8a"),
            "{text}"
        );
        assert!(!text.contains("hw-7f3a"), "{text}");
        assert!(!contains(text.as_bytes(), &secret) && !text.contains(&hex), "install secret in {text}");
        // Byte-list formatting of the secret ("[12, 34, ...") would give itself away too.
        assert!(!text.contains(&format!("{}, {}, {}", secret[0], secret[1], secret[2])), "{text}");
    }
}

#[test]
fn error_type_stays_small() {
    assert!(std::mem::size_of::<VaultError>() <= 48, "{}", std::mem::size_of::<VaultError>());
}
