//! Key derivation, per-credential AES-256-GCM, and the whole-file MAC.
//!
//! ```text
//! lp(x)    = u32be(len x) || x
//! password = "mini-connector/vault/v2\0" || u8 binding
//!            || lp(machine_id) || lp(install_id) || lp(install_secret) || lp(hardware_id or "")
//!            (format version 2; version 1 files, read only to migrate them, used
//!             "mini-connector/vault/v1\0" || lp(machine_id) || lp(install_id))
//! master   = PBKDF2-HMAC-SHA256(password, APP_SALT || file_salt, iterations, 32 bytes)
//! enc_key  = HMAC-SHA256(master, "mini-connector/vault/enc")   AES-256-GCM, one per vault
//! mac_key  = HMAC-SHA256(master, "mini-connector/vault/mac")   HMAC over the whole file
//! entry    = AES-256-GCM(enc_key, random 96-bit nonce, plaintext, aad = credential id)
//! ```
//!
//! `binding` is the header's key-material byte (see the `format` module). The install secret is
//! 32 random bytes kept outside the vault directory (`keystore`); the hardware id is Linux's
//! root-only `product_uuid` when the vault was created where it could be read.
//!
//! Splitting the master key with HMAC costs two hash calls; asking PBKDF2 for 64 bytes instead
//! would double its 600,000 iterations.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use hmac::{Hmac, Mac};
use rand::TryRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::VaultError;

/// Key length (AES-256, HMAC-SHA256 key, PBKDF2 output).
pub(crate) const KEY_LEN: usize = 32;
/// Random per-vault salt stored in the file header.
pub(crate) const SALT_LEN: usize = 16;
/// AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;
/// HMAC-SHA256 tag at the end of the file.
pub(crate) const MAC_LEN: usize = 32;

/// The application salt, fixed in the binary. Changing it makes every existing vault unreadable.
pub(crate) const APP_SALT: [u8; 32] = [
    0x02, 0x34, 0x96, 0xb0, 0x99, 0x61, 0x7e, 0x17, 0x30, 0x07, 0xc7, 0x6c, 0x0d, 0x76, 0x18, 0xf6, 0xf4,
    0x25, 0x2a, 0x27, 0x4a, 0xe3, 0xd6, 0x64, 0x2e, 0x4b, 0xa7, 0xbc, 0xbd, 0x96, 0x68, 0xb5,
];

const PASSWORD_LABEL_V1: &[u8] = b"mini-connector/vault/v1\0";
const PASSWORD_LABEL_V2: &[u8] = b"mini-connector/vault/v2\0";
const ENC_LABEL: &[u8] = b"mini-connector/vault/enc";
const MAC_LABEL: &[u8] = b"mini-connector/vault/mac";

/// The two vault keys. Never written anywhere; zeroized on drop.
pub(crate) struct Keys {
    enc: Zeroizing<[u8; KEY_LEN]>,
    mac: Zeroizing<[u8; KEY_LEN]>,
}

/// One encrypted credential as stored: nonce and ciphertext-with-tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) ciphertext: Vec<u8>,
}

/// What the vault key is derived from.
pub(crate) enum Material<'a> {
    /// Format version 1 (read only, to migrate): machine id and install id.
    V1 { machine_id: &'a str, install_id: &'a str },
    /// Format version 2.
    V2 {
        binding: u8,
        machine_id: &'a str,
        install_id: &'a str,
        install_secret: &'a [u8],
        hardware_id: Option<&'a str>,
    },
}

impl Material<'_> {
    fn password(&self) -> Zeroizing<Vec<u8>> {
        fn put(out: &mut Vec<u8>, part: &[u8]) {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        // Capacity up front: no reallocation may leave a copy of key material behind.
        let mut out = Zeroizing::new(Vec::with_capacity(1024));
        match *self {
            Self::V1 { machine_id, install_id } => {
                out.extend_from_slice(PASSWORD_LABEL_V1);
                put(&mut out, machine_id.as_bytes());
                put(&mut out, install_id.as_bytes());
            }
            Self::V2 { binding, machine_id, install_id, install_secret, hardware_id } => {
                out.extend_from_slice(PASSWORD_LABEL_V2);
                out.push(binding);
                put(&mut out, machine_id.as_bytes());
                put(&mut out, install_id.as_bytes());
                put(&mut out, install_secret);
                put(&mut out, hardware_id.unwrap_or_default().as_bytes());
            }
        }
        out
    }
}

/// Derives the vault keys (the slow step: `iterations` rounds of PBKDF2).
pub(crate) fn derive_keys(material: &Material<'_>, salt: &[u8; SALT_LEN], iterations: u32) -> Keys {
    let password = material.password();
    let mut full_salt = [0u8; APP_SALT.len() + SALT_LEN];
    full_salt[..APP_SALT.len()].copy_from_slice(&APP_SALT);
    full_salt[APP_SALT.len()..].copy_from_slice(salt);

    let mut master = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::pbkdf2_hmac::<Sha256>(&password, &full_salt, iterations, &mut master[..]);
    Keys { enc: subkey(&master, ENC_LABEL), mac: subkey(&master, MAC_LABEL) }
}

fn subkey(master: &[u8; KEY_LEN], label: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut mac = hmac_with(master);
    mac.update(label);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn hmac_with(key: &[u8; KEY_LEN]) -> Hmac<Sha256> {
    // A 32-byte key is always accepted by HMAC.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

impl Keys {
    fn cipher(&self) -> Aes256Gcm {
        // The `zeroize` feature of aes-gcm wipes the expanded key schedule when this drops.
        Aes256Gcm::new_from_slice(&self.enc[..]).expect("AES-256 key is 32 bytes")
    }

    /// Encrypts `plaintext` under a fresh random nonce, bound to `id`.
    pub(crate) fn seal(&self, id: &str, plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        // Capacity for the tag up front: no reallocation may leave a plaintext copy behind.
        let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buffer.extend_from_slice(plaintext);
        self.cipher()
            .encrypt_in_place(&nonce.into(), id.as_bytes(), &mut *buffer)
            .map_err(|_| VaultError::TooLarge { len: plaintext.len(), max: crate::format::MAX_SECRET_LEN })?;
        Ok(Sealed { nonce, ciphertext: std::mem::take(&mut *buffer) })
    }

    /// Decrypts and authenticates one entry; any failure is [`VaultError::Decrypt`].
    pub(crate) fn open(&self, id: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let mut buffer = Zeroizing::new(sealed.ciphertext.clone());
        self.cipher()
            .decrypt_in_place(&sealed.nonce.into(), id.as_bytes(), &mut *buffer)
            .map_err(|_| VaultError::Decrypt)?;
        Ok(buffer)
    }

    /// HMAC-SHA256 of `bytes` under the MAC key.
    pub(crate) fn file_mac(&self, bytes: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = hmac_with(&self.mac);
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a file MAC.
    pub(crate) fn verify_file_mac(&self, bytes: &[u8], tag: &[u8]) -> Result<(), VaultError> {
        let mut mac = hmac_with(&self.mac);
        mac.update(bytes);
        mac.verify_slice(tag).map_err(|_| VaultError::Decrypt)
    }
}

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), VaultError> {
    rand::rngs::SysRng.try_fill_bytes(buf).map_err(|_| VaultError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1<'a>(machine_id: &'a str, install_id: &'a str) -> Material<'a> {
        Material::V1 { machine_id, install_id }
    }

    fn v2<'a>(machine_id: &'a str, secret: &'a [u8], hardware_id: Option<&'a str>) -> Material<'a> {
        let binding = if hardware_id.is_some() { 3 } else { 1 };
        Material::V2 { binding, machine_id, install_id: "i", install_secret: secret, hardware_id }
    }

    fn keys() -> Keys {
        derive_keys(&v1("machine", "install"), &[7; SALT_LEN], 2)
    }

    #[test]
    fn seal_open_round_trip_and_fresh_nonces() {
        let keys = keys();
        let a = keys.seal("db1", b"hunter2").unwrap();
        let b = keys.seal("db1", b"hunter2").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(a.ciphertext.len(), 7 + TAG_LEN);
        assert_eq!(&keys.open("db1", &a).unwrap()[..], b"hunter2");
    }

    #[test]
    fn id_is_bound_as_associated_data() {
        let keys = keys();
        let sealed = keys.seal("db1", b"hunter2").unwrap();
        assert!(matches!(keys.open("db2", &sealed), Err(VaultError::Decrypt)));
    }

    #[test]
    fn every_input_changes_the_keys() {
        let base = derive_keys(&v1("m", "i"), &[1; SALT_LEN], 2);
        let others = [
            derive_keys(&v1("m2", "i"), &[1; SALT_LEN], 2),
            derive_keys(&v1("m", "i2"), &[1; SALT_LEN], 2),
            derive_keys(&v1("m", "i"), &[2; SALT_LEN], 2),
            derive_keys(&v1("m", "i"), &[1; SALT_LEN], 3),
            // Length prefixes: moving a byte between the two inputs changes the key.
            derive_keys(&v1("mi", ""), &[1; SALT_LEN], 2),
            // Version 2 with the same machine and install id is another key.
            derive_keys(&v2("m", &[0; 32], None), &[1; SALT_LEN], 2),
        ];
        for other in others {
            assert_ne!(*base.enc, *other.enc);
            assert_ne!(*base.mac, *other.mac);
        }
        assert_ne!(*base.enc, *base.mac);
    }

    #[test]
    fn the_install_secret_and_the_hardware_id_change_the_keys() {
        let base = derive_keys(&v2("m", &[0; 32], None), &[1; SALT_LEN], 2);
        let mut other_secret = [0; 32];
        other_secret[31] = 1;
        for other in [
            derive_keys(&v2("m", &other_secret, None), &[1; SALT_LEN], 2),
            derive_keys(&v2("m", &[0; 32], Some("hw")), &[1; SALT_LEN], 2),
            derive_keys(&v2("m", &[0; 32], Some("")), &[1; SALT_LEN], 2),
            derive_keys(&v2("m2", &[0; 32], None), &[1; SALT_LEN], 2),
        ] {
            assert_ne!(*base.enc, *other.enc);
        }
    }
}
