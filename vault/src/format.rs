//! The vault file format, version 2 (version 1 is still read, to migrate it). Pure functions:
//! bytes in, bytes out, no I/O.
//!
//! ```text
//! offset  size  field (integers big-endian)
//!      0     8  magic  "MCVAULT\0"
//!      8     2  format version = 2
//!     10     1  KDF id = 1 (PBKDF2-HMAC-SHA256)
//!     11     4  KDF iterations (600,000 in production)
//!     15    16  salt (random, per vault)
//!     31     1  key material (version 2 only): bit 0 install secret (always set),
//!               bit 1 hardware id; other bits must be 0
//!     32     4  entry count                                   (version 1: at offset 31)
//!     36     …  entries, sorted by id (bytewise), ids unique:
//!                 u16 id length, id (UTF-8), 12-byte nonce, u32 ciphertext length, ciphertext+tag
//!  end-32   32  HMAC-SHA256(mac key, every byte before it)
//! ```
//!
//! The same entries always serialize to the same bytes. The trailing MAC authenticates the
//! header (key-material byte included), the count, the order and every entry, so a changed,
//! dropped, added, reordered or truncated byte anywhere is detected before any entry is used.
//! Version 1 had no key-material byte: its key came from the machine id and install id only.

use std::collections::BTreeMap;

use crate::VaultError;
use crate::crypto::{Keys, MAC_LEN, NONCE_LEN, SALT_LEN, Sealed, TAG_LEN};

/// File magic.
pub(crate) const MAGIC: [u8; 8] = *b"MCVAULT\0";
/// The format version this code writes.
pub(crate) const VERSION: u16 = 2;
/// The old format version this code reads, only to migrate it.
pub(crate) const LEGACY_VERSION: u16 = 1;
/// KDF id for PBKDF2-HMAC-SHA256.
pub(crate) const KDF_PBKDF2_SHA256: u8 = 1;
/// Key-material bit: the install secret (kept outside the vault directory).
pub(crate) const BIND_INSTALL_SECRET: u8 = 1;
/// Key-material bit: the hardware id (Linux `product_uuid`).
pub(crate) const BIND_HARDWARE_ID: u8 = 2;
/// Bytes before the entry count in version 1.
const LEGACY_HEADER_LEN: usize = 8 + 2 + 1 + 4 + SALT_LEN;
/// Longest credential id, in bytes.
pub(crate) const MAX_ID_LEN: usize = 255;
/// Largest secret the vault stores.
pub(crate) const MAX_SECRET_LEN: usize = 1 << 20;
/// Largest vault file this code reads.
pub(crate) const MAX_FILE_LEN: u64 = 64 << 20;

/// The header, authenticated only by the trailing MAC: what is needed to derive the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) version: u16,
    pub(crate) iterations: u32,
    pub(crate) salt: [u8; SALT_LEN],
    /// Key-material bits (`BIND_*`); 0 in version 1.
    pub(crate) binding: u8,
}

impl Header {
    /// Bytes before the entry count.
    pub(crate) fn len(&self) -> usize {
        if self.version == LEGACY_VERSION { LEGACY_HEADER_LEN } else { LEGACY_HEADER_LEN + 1 }
    }

    /// Whether this is a version 1 file, to be migrated.
    pub(crate) fn is_legacy(&self) -> bool {
        self.version == LEGACY_VERSION
    }
}

/// Credentials by id, in file order.
pub(crate) type Entries = BTreeMap<String, Sealed>;

fn damaged(reason: &'static str) -> VaultError {
    VaultError::Format { reason }
}

/// Checks that `id` can be stored: 1 to 255 bytes of UTF-8 without control characters.
pub(crate) fn check_id(id: &str) -> Result<(), VaultError> {
    if id.is_empty() {
        return Err(VaultError::InvalidId { reason: "empty" });
    }
    if id.len() > MAX_ID_LEN {
        return Err(VaultError::InvalidId { reason: "longer than 255 bytes" });
    }
    if id.chars().any(char::is_control) {
        return Err(VaultError::InvalidId { reason: "contains control characters" });
    }
    Ok(())
}

/// Reads the header; does not look past it.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, VaultError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged("not a Mini Connector vault file"));
    }
    let mut r = Reader(&bytes[MAGIC.len()..]);
    let version = r.u16().ok_or(damaged("truncated header"))?;
    match version {
        VERSION | LEGACY_VERSION => {}
        0 => return Err(damaged("format version 0")),
        found => return Err(VaultError::UnsupportedVersion { found }),
    }
    let kdf = r.u8().ok_or(damaged("truncated header"))?;
    if kdf != KDF_PBKDF2_SHA256 {
        return Err(damaged("unknown key derivation function"));
    }
    let iterations = r.u32().ok_or(damaged("truncated header"))?;
    let salt = r.take(SALT_LEN).ok_or(damaged("truncated header"))?;
    let binding = if version == LEGACY_VERSION {
        0
    } else {
        let binding = r.u8().ok_or(damaged("truncated header"))?;
        if binding & BIND_INSTALL_SECRET == 0 || binding & !(BIND_INSTALL_SECRET | BIND_HARDWARE_ID) != 0 {
            return Err(damaged("unknown key material"));
        }
        binding
    };
    Ok(Header { version, iterations, salt: salt.try_into().expect("SALT_LEN bytes"), binding })
}

/// Splits a whole file into (authenticated bytes, MAC). The file must hold at least a header,
/// an entry count and a MAC.
pub(crate) fn split_mac<'a>(header: &Header, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), VaultError> {
    if bytes.len() < header.len() + 4 + MAC_LEN {
        return Err(damaged("truncated"));
    }
    Ok(bytes.split_at(bytes.len() - MAC_LEN))
}

/// Parses the entries of an authenticated file body (`split_mac`'s first part).
pub(crate) fn parse_entries(header: &Header, authenticated: &[u8]) -> Result<Entries, VaultError> {
    let mut r = Reader(authenticated.get(header.len()..).ok_or(damaged("truncated"))?);
    let count = r.u32().ok_or(damaged("truncated entry count"))?;
    let mut entries = Entries::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let id_len = usize::from(r.u16().ok_or(damaged("truncated entry"))?);
        let id = r.take(id_len).ok_or(damaged("truncated entry"))?;
        let id = std::str::from_utf8(id).map_err(|_| damaged("entry id is not UTF-8"))?.to_owned();
        check_id(&id).map_err(|_| damaged("invalid entry id"))?;
        if previous.as_ref().is_some_and(|p| *p >= id) {
            return Err(damaged("entries out of order"));
        }
        let nonce = r.take(NONCE_LEN).ok_or(damaged("truncated entry"))?;
        let ct_len = r.u32().ok_or(damaged("truncated entry"))? as usize;
        if !(TAG_LEN..=MAX_SECRET_LEN + TAG_LEN).contains(&ct_len) {
            return Err(damaged("invalid ciphertext length"));
        }
        let ciphertext = r.take(ct_len).ok_or(damaged("truncated entry"))?.to_vec();
        previous = Some(id.clone());
        entries.insert(id, Sealed { nonce: nonce.try_into().expect("NONCE_LEN bytes"), ciphertext });
    }
    if !r.0.is_empty() {
        return Err(damaged("unexpected bytes after the last entry"));
    }
    Ok(entries)
}

/// Serializes a whole file, MAC included. Always the current version: a version 1 header
/// never reaches here (it is migrated first).
pub(crate) fn serialize(header: &Header, entries: &Entries, keys: &Keys) -> Vec<u8> {
    debug_assert_eq!(header.version, VERSION, "only the current version is written");
    let body: usize = entries.iter().map(|(id, s)| 2 + id.len() + NONCE_LEN + 4 + s.ciphertext.len()).sum();
    let mut out = Vec::with_capacity(header.len() + 4 + body + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(KDF_PBKDF2_SHA256);
    out.extend_from_slice(&header.iterations.to_be_bytes());
    out.extend_from_slice(&header.salt);
    out.push(header.binding);
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (id, sealed) in entries {
        // Lengths were checked on the way in (check_id, MAX_SECRET_LEN).
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&sealed.nonce);
        out.extend_from_slice(&(sealed.ciphertext.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed.ciphertext);
    }
    let mac = keys.file_mac(&out);
    out.extend_from_slice(&mac);
    out
}

/// A cursor that returns `None` instead of reading past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Material, derive_keys};

    fn sample() -> (Header, Entries, Keys) {
        let keys = derive_keys(&Material::V1 { machine_id: "m", install_id: "i" }, &[3; SALT_LEN], 2);
        let header =
            Header { version: VERSION, iterations: 2, salt: [3; SALT_LEN], binding: BIND_INSTALL_SECRET };
        let mut entries = Entries::new();
        entries.insert("b".into(), keys.seal("b", b"two").unwrap());
        entries.insert("a".into(), keys.seal("a", b"one").unwrap());
        (header, entries, keys)
    }

    #[test]
    fn serialize_parse_round_trip_is_deterministic() {
        let (header, entries, keys) = sample();
        let bytes = serialize(&header, &entries, &keys);
        assert_eq!(bytes, serialize(&header, &entries, &keys));
        assert_eq!(parse_header(&bytes).unwrap(), header);
        let (body, mac) = split_mac(&header, &bytes).unwrap();
        keys.verify_file_mac(body, mac).unwrap();
        assert_eq!(parse_entries(&header, body).unwrap(), entries);
        // "a" sorts before "b" in the file.
        let a = bytes.windows(3).position(|w| w == [0, 1, b'a']).unwrap();
        let b = bytes.windows(3).position(|w| w == [0, 1, b'b']).unwrap();
        assert!(a < b);
    }

    #[test]
    fn parser_refuses_out_of_order_and_trailing_bytes() {
        let (header, entries, keys) = sample();
        let bytes = serialize(&header, &entries, &keys);
        let (body, _) = split_mac(&header, &bytes).unwrap();
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(matches!(parse_entries(&header, &trailing), Err(VaultError::Format { .. })));
        // Swap the two single-letter ids: same lengths, now out of order.
        let mut swapped = body.to_vec();
        let a = swapped.windows(3).position(|w| w == [0, 1, b'a']).unwrap();
        let b = swapped.windows(3).position(|w| w == [0, 1, b'b']).unwrap();
        swapped[a + 2] = b'b';
        swapped[b + 2] = b'a';
        assert!(matches!(parse_entries(&header, &swapped), Err(VaultError::Format { .. })));
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("orders-db").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"x".repeat(256)).is_err());
        assert!(check_id(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn header_errors_are_specific() {
        let (header, entries, keys) = sample();
        let mut bytes = serialize(&header, &entries, &keys);
        bytes[9] = 3;
        assert!(matches!(parse_header(&bytes), Err(VaultError::UnsupportedVersion { found: 3 })));
        bytes[9] = 1;
        let legacy = parse_header(&bytes).unwrap();
        assert!(legacy.is_legacy() && legacy.binding == 0 && legacy.len() == 31);
        bytes[9] = 2;
        for binding in [0, 4, 0x80, BIND_HARDWARE_ID] {
            bytes[31] = binding;
            assert!(matches!(parse_header(&bytes), Err(VaultError::Format { .. })), "{binding}");
        }
        bytes[31] = BIND_INSTALL_SECRET | BIND_HARDWARE_ID;
        assert_eq!(parse_header(&bytes).unwrap().len(), 32);
        bytes[10] = 9;
        assert!(matches!(parse_header(&bytes), Err(VaultError::Format { .. })));
        assert!(matches!(parse_header(b"MCVAULT"), Err(VaultError::Format { .. })));
        assert!(matches!(parse_header(b""), Err(VaultError::Format { .. })));
    }
}
