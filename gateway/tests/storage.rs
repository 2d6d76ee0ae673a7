//! What the gateway keeps on disk.

use gateway::{Gateway, KeyStore};

use crate::common::{config, temp_dir, watchdog};

#[test]
fn keys_are_stored_only_hashed() {
    let _w = watchdog("hashed");
    let dir = temp_dir();
    let store = KeyStore::open(&dir).unwrap();
    let (_, key) = store.create("acme", "Warehouse").unwrap();
    let (_, rotated) = store.rotate("Warehouse").unwrap();
    drop(store);
    for key in [key, rotated] {
        let random = key.expose().split('_').nth(2).unwrap().to_owned();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let found = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(!found(key.expose().as_bytes()), "plaintext key on disk");
            assert!(!found(random.as_bytes()), "random part of the key on disk");
        }
    }
    let conn = rusqlite::Connection::open(dir.join("gateway.db")).unwrap();
    let (salt, hash): (String, String) = conn
        .query_row("SELECT salt, key_hash FROM api_keys LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(salt.len(), 32);
    assert_eq!(hash.len(), 64);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn generated_certificate_is_reused_and_its_key_is_private() {
    let _w = watchdog("cert");
    let dir = temp_dir();
    let gw = Gateway::start(config(&dir)).unwrap();
    let cert = std::fs::read(gw.ca_cert_path()).unwrap();
    assert_eq!(gw.ca_cert_path(), dir.join("tls").join("cert.pem"));
    gw.shutdown();
    let gw = Gateway::start(config(&dir)).unwrap();
    assert_eq!(std::fs::read(gw.ca_cert_path()).unwrap(), cert, "reused on restart");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("tls").join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    gw.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
