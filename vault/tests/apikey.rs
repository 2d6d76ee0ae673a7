use vault::{ApiKeyStore, VaultError, default_store};

use crate::support::{TempDir, open};

const KEY: &[u8] = b"vmc_abc123_x7f9k2p5w8q1_c4e2a";

#[test]
fn references_parse_and_format() {
    let keychain = ApiKeyStore::parse("keychain://mini-connector/apikey").unwrap();
    assert_eq!(keychain, ApiKeyStore::Keyring { service: "mini-connector".into(), user: "apikey".into() });
    assert_eq!(keychain.to_string(), "keychain://mini-connector/apikey");
    // The spec's Appendix B example.
    assert!(matches!("keychain://vansales/apikey".parse(), Ok(ApiKeyStore::Keyring { .. })));
    assert_eq!(ApiKeyStore::parse("vault://apikey").unwrap(), ApiKeyStore::Vault);
    assert_eq!(ApiKeyStore::Vault.to_string(), "vault://apikey");
    for store in [keychain, ApiKeyStore::Vault, default_store()] {
        assert_eq!(ApiKeyStore::parse(&store.to_string()).unwrap(), store);
    }
}

#[test]
fn bad_references_are_refused() {
    for bad in [
        "",
        "vault://",
        "vault://other",
        "keychain://",
        "keychain://svc",
        "keychain:///user",
        "keychain://svc/",
        "keychain://svc/user/extra",
        "keychain://svc/us er",
        "file:/etc/key",
        "env:MC_API_KEY",
        "vmc_abc123_x7f9k2p5w8q1_c4e2a",
    ] {
        let err = ApiKeyStore::parse(bad).unwrap_err();
        assert!(matches!(err, VaultError::InvalidReference { .. }), "{bad:?}: {err:?}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn linux_defaults_to_the_vault_and_has_no_keyring() {
    assert_eq!(default_store(), ApiKeyStore::Vault);
    let tmp = TempDir::new("no-keyring");
    let vault = open(&tmp.vault_dir()).unwrap();
    let keyring = ApiKeyStore::parse("keychain://mini-connector/apikey").unwrap();
    assert!(matches!(keyring.store(&vault, KEY), Err(VaultError::Keyring { .. })));
    assert!(matches!(keyring.load(&vault), Err(VaultError::Keyring { .. })));
}

#[test]
fn api_key_in_the_vault_round_trips_and_stays_hidden() {
    let tmp = TempDir::new("apikey");
    let dir = tmp.vault_dir();
    let vault = open(&dir).unwrap();
    let store = ApiKeyStore::Vault;
    let missing = store.load(&vault).unwrap_err();
    assert!(matches!(&missing, VaultError::NotFound { id } if id == "vault://apikey"), "{missing:?}");

    vault.put("warehouse-db", b"pw").unwrap();
    store.store(&vault, KEY).unwrap();
    assert_eq!(store.load(&vault).unwrap().expose(), KEY);
    // Not listed among credentials, not reachable through the public id API.
    assert_eq!(vault.ids().unwrap(), ["warehouse-db"]);
    assert!(matches!(vault.get("@apikey"), Err(VaultError::InvalidId { .. })));
    // Encrypted like any credential.
    let bytes = std::fs::read(dir.join("vault.bin")).unwrap();
    assert!(!crate::support::contains(&bytes, b"vmc_abc123"));

    // Rotation replaces it; another handle sees the new key.
    store.store(&vault, b"vmc_abc123_newrandom000_9f9f9").unwrap();
    assert_eq!(store.load(&open(&dir).unwrap()).unwrap().expose(), b"vmc_abc123_newrandom000_9f9f9");
    assert!(store.delete(&vault).unwrap());
    assert!(!store.delete(&vault).unwrap());
    assert_eq!(vault.ids().unwrap(), ["warehouse-db"]);
}
