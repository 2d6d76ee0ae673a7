//! Where the API key lives: the OS credential store, or inside the vault.
//!
//! The config's `apiKeyRef` names the place, never the key:
//!
//! | reference                          | store                                              |
//! |------------------------------------|----------------------------------------------------|
//! | `keychain://mini-connector/apikey` | Windows Credential Manager / macOS Keychain        |
//! | `vault://apikey`                   | the machine-bound vault (headless Linux, services) |

use std::fmt;
use std::str::FromStr;

use crate::{Secret, Vault, VaultError};

/// Reserved vault id of the API key (the `@` prefix is refused by the public vault API).
const VAULT_API_KEY_ID: &str = "@apikey";
const KEYCHAIN_SCHEME: &str = "keychain://";
const VAULT_REFERENCE: &str = "vault://apikey";

/// Service name used in the OS credential store by [`default_store`].
pub const DEFAULT_SERVICE: &str = "mini-connector";
/// Account name used in the OS credential store by [`default_store`].
pub const DEFAULT_USER: &str = "apikey";

/// Where the API key is kept. `Display` and [`parse`](Self::parse) give and read the
/// `apiKeyRef` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyStore {
    /// The OS credential store: Windows Credential Manager (local-machine persistence, so it does
    /// not roam with the profile) or the macOS login Keychain. Not available on Linux.
    Keyring {
        /// Service (Windows: the target prefix; macOS: the item's service).
        service: String,
        /// Account.
        user: String,
    },
    /// Inside the machine-bound vault under a reserved id.
    Vault,
}

/// The right store for this platform: the OS credential store on Windows and macOS; the vault on
/// Linux, where headless servers have no session bus for Secret Service and the kernel keyring
/// does not survive a reboot.
///
/// A Windows service running as LocalSystem does not see the Credential Manager of the
/// administrator who ran `configure`; service installs there should use [`ApiKeyStore::Vault`]
/// (its ACL admits the writing user and SYSTEM) or store the key as the service account.
pub fn default_store() -> ApiKeyStore {
    if cfg!(any(windows, target_os = "macos")) {
        ApiKeyStore::Keyring { service: DEFAULT_SERVICE.to_owned(), user: DEFAULT_USER.to_owned() }
    } else {
        ApiKeyStore::Vault
    }
}

impl ApiKeyStore {
    /// Reads an `apiKeyRef`: `keychain://<service>/<user>` or `vault://apikey`.
    pub fn parse(reference: &str) -> Result<Self, VaultError> {
        let invalid = || VaultError::InvalidReference { reference: reference.to_owned() };
        if reference == VAULT_REFERENCE {
            return Ok(Self::Vault);
        }
        let rest = reference.strip_prefix(KEYCHAIN_SCHEME).ok_or_else(invalid)?;
        let (service, user) = rest.split_once('/').ok_or_else(invalid)?;
        let fine = |s: &str| {
            !s.is_empty() && !s.contains('/') && !s.chars().any(|c| c.is_control() || c.is_whitespace())
        };
        if !fine(service) || !fine(user) {
            return Err(invalid());
        }
        Ok(Self::Keyring { service: service.to_owned(), user: user.to_owned() })
    }

    /// Stores the API key (replacing any previous one). `vault` is used only by
    /// [`ApiKeyStore::Vault`].
    pub fn store(&self, vault: &Vault, key: &[u8]) -> Result<(), VaultError> {
        match self {
            Self::Keyring { service, user } => os_store::set(service, user, key),
            Self::Vault => vault.put_raw(VAULT_API_KEY_ID, key),
        }
    }

    /// Loads the API key. Hold the result only while authenticating, then drop it.
    /// [`VaultError::NotFound`] when none is stored.
    pub fn load(&self, vault: &Vault) -> Result<Secret, VaultError> {
        let found = match self {
            Self::Keyring { service, user } => os_store::get(service, user),
            Self::Vault => vault.get_raw(VAULT_API_KEY_ID),
        };
        // Report the reference, not the reserved id.
        found.map_err(|e| match e {
            VaultError::NotFound { .. } => VaultError::NotFound { id: self.to_string() },
            other => other,
        })
    }

    /// Deletes the stored API key; `Ok(false)` if there was none.
    pub fn delete(&self, vault: &Vault) -> Result<bool, VaultError> {
        match self {
            Self::Keyring { service, user } => os_store::delete(service, user),
            Self::Vault => vault.remove_raw(VAULT_API_KEY_ID),
        }
    }
}

impl fmt::Display for ApiKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keyring { service, user } => write!(f, "{KEYCHAIN_SCHEME}{service}/{user}"),
            Self::Vault => f.write_str(VAULT_REFERENCE),
        }
    }
}

impl FromStr for ApiKeyStore {
    type Err = VaultError;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        Self::parse(reference)
    }
}

#[cfg(any(windows, target_os = "macos"))]
pub(crate) mod os_store {
    use std::sync::{Arc, OnceLock};

    use keyring_core::{CredentialStore, Entry, Error};
    use zeroize::{Zeroize, Zeroizing};

    use crate::{Secret, VaultError};

    pub(crate) fn store() -> Result<&'static Arc<CredentialStore>, VaultError> {
        static STORE: OnceLock<Result<Arc<CredentialStore>, String>> = OnceLock::new();
        let store = STORE.get_or_init(|| {
            #[cfg(windows)]
            let made = windows_native_keyring_store::Store::new();
            #[cfg(target_os = "macos")]
            let made = apple_native_keyring_store::keychain::Store::new();
            made.map(|s| s as Arc<CredentialStore>).map_err(describe)
        });
        store.as_ref().map_err(|reason| VaultError::Keyring { reason: reason.clone() })
    }

    fn entry(service: &str, user: &str) -> Result<Entry, VaultError> {
        let store = store()?;
        #[cfg(windows)]
        let built = {
            // Local-machine persistence: the key must not roam to other machines with the profile.
            let modifiers = std::collections::HashMap::from([("persistence", "Local")]);
            Entry::new_in_store_with_modifiers(store, service, user, &modifiers)
        };
        #[cfg(target_os = "macos")]
        let built = Entry::new_in_store(store, service, user);
        built.map_err(fail)
    }

    pub(super) fn set(service: &str, user: &str, key: &[u8]) -> Result<(), VaultError> {
        entry(service, user)?.set_secret(key).map_err(fail)
    }

    pub(super) fn get(service: &str, user: &str) -> Result<Secret, VaultError> {
        let bytes = entry(service, user)?.get_secret().map_err(fail)?;
        Ok(Secret::from(Zeroizing::new(bytes)))
    }

    pub(super) fn delete(service: &str, user: &str) -> Result<bool, VaultError> {
        match entry(service, user)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(Error::NoEntry) => Ok(false),
            Err(e) => Err(fail(e)),
        }
    }

    fn fail(e: Error) -> VaultError {
        match e {
            Error::NoEntry => VaultError::NotFound { id: String::new() },
            other => VaultError::Keyring { reason: describe(other) },
        }
    }

    /// A message without the stored bytes some variants carry (they are wiped here).
    pub(crate) fn describe(e: Error) -> String {
        match e {
            Error::BadEncoding(mut bytes) => {
                bytes.zeroize();
                "stored value is not valid UTF-8".to_owned()
            }
            Error::BadDataFormat(mut bytes, _) => {
                bytes.zeroize();
                "stored value is malformed".to_owned()
            }
            Error::Ambiguous(items) => format!("{} credentials match this entry", items.len()),
            other => other.to_string(),
        }
    }
}

#[cfg(not(any(windows, target_os = "macos")))]
mod os_store {
    use crate::{Secret, VaultError};

    fn unavailable() -> VaultError {
        VaultError::Keyring {
            reason: "no persistent OS credential store on this platform; use apiKeyRef vault://apikey".into(),
        }
    }

    pub(super) fn set(_service: &str, _user: &str, _key: &[u8]) -> Result<(), VaultError> {
        Err(unavailable())
    }

    pub(super) fn get(_service: &str, _user: &str) -> Result<Secret, VaultError> {
        Err(unavailable())
    }

    pub(super) fn delete(_service: &str, _user: &str) -> Result<bool, VaultError> {
        Err(unavailable())
    }
}
