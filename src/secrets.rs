//! Where the agent's secrets live and how they are fetched: the vault directory, the API key
//! behind `apiKeyRef`, and the database passwords (vault id `db:<connection name>`).
//!
//! The vault's key material is split: the vault directory (`vaultDir`) holds the encrypted file
//! and the install id; the install secret lives in a separate owner-only key directory
//! (`vaultKeyDir`, see [`AgentConfig::vault_key_dir`]), so a copy or backup of the vault
//! directory alone decrypts nothing.
//!
//! This module is the only one in `src/` that opens the [`vault`]. Plaintext leaves it only as
//! zeroizing values ([`ApiKey`](crate::protocol::ApiKey), [`drivers::Secret`]) handed straight
//! to the `auth` frame or a driver's connect call. The vault is opened per use (PBKDF2 each
//! time, ~60 ms), so its derived key is not held in memory while the agent idles — except
//! during an agent start: [`AgentConfig::hold_vault`] keeps the one handle opened first for
//! every vault read of the start (the API key check, database and proxy passwords, the link's
//! first `auth`), so a start derives the key once (issue 12: four derivations were ~400 ms of
//! the start). The agent gives its hold to the supervisor, which drops it on the first
//! `connected` or at its first housekeeping (30 s), whichever comes first; the keys are
//! zeroized when the last hold goes.
//!
//! | `apiKeyRef`                     | where the key is                                       |
//! |---------------------------------|--------------------------------------------------------|
//! | `vault://apikey`                | the machine-bound vault (Linux default, services)      |
//! | `keychain://<service>/<user>`   | Windows Credential Manager / macOS Keychain            |
//! | `file:<path>`, `env:<VARIABLE>` | a 0600 file / an environment variable (scripts, tests) |

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use vault::{ApiKeyStore, SecretStore, SystemIdentity, Vault, VaultError};
use zeroize::Zeroizing;

use crate::config::{AgentConfig, ConfigError};

/// Prefix of database password ids in the vault: `db:<connection name>`.
pub const DB_PASSWORD_PREFIX: &str = "db:";

/// The vault id of a connection's password.
pub fn db_password_id(connection: &str) -> String {
    format!("{DB_PASSWORD_PREFIX}{connection}")
}

impl AgentConfig {
    /// The directory of the configuration file (`.` when the configuration was not loaded
    /// from a file).
    pub fn config_dir(&self) -> PathBuf {
        self.source
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Where the vault is: `vaultDir` (relative to the config file's directory), else
    /// `$STATE_DIRECTORY/vault` when systemd runs the agent, else `vault/` next to the config.
    pub fn vault_dir(&self) -> PathBuf {
        match &self.vault_dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => self.config_dir().join(dir),
            None => default_vault_dir(&self.config_dir()),
        }
    }

    /// Where the vault's install secret is kept (outside [`Self::vault_dir`]):
    ///
    /// 1. `vaultKeyDir` (relative to the config file's directory);
    /// 2. with `vaultDir` set, or under systemd (`$STATE_DIRECTORY`): `vault-keys/` beside the
    ///    vault directory (`/var/lib/mini-connector/vault-keys` for the service), so the service
    ///    and an administrator's CLI find the same place even before `service install` pinned it;
    /// 3. else the user's state directory: `$XDG_STATE_HOME/mini-connector/vault-keys` (default
    ///    `~/.local/state/...`) on Unix, `%LOCALAPPDATA%\MiniConnector\vault-keys` on Windows;
    ///    without one, `vault-keys/` next to the config file.
    pub fn vault_key_dir(&self) -> PathBuf {
        match &self.vault_key_dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => self.config_dir().join(dir),
            None if self.beside_the_vault() => self.vault_dir().with_file_name(VAULT_KEY_DIR_NAME),
            None => user_key_dir().unwrap_or_else(|| self.config_dir().join(VAULT_KEY_DIR_NAME)),
        }
    }

    /// Whether the default key directory is beside the vault directory (rule 2 above).
    fn beside_the_vault(&self) -> bool {
        self.vault_dir.is_some() || state_directory().is_some()
    }

    /// The store of the vault's install secret: files in [`Self::vault_key_dir`] (DPAPI-sealed
    /// on Windows); on macOS the login Keychain when the key directory is the per-user default.
    pub fn secret_store(&self) -> SecretStore {
        if self.vault_key_dir.is_some() || self.beside_the_vault() {
            SecretStore::files(self.vault_key_dir())
        } else {
            vault::default_secret_store(self.vault_key_dir())
        }
    }

    /// Where the vault's install secret is, for messages (a path or a Keychain item).
    pub fn secret_location(&self, vault: &Vault) -> String {
        self.secret_store().location(vault.install_id())
    }

    /// Opens the vault, creating it (directory, install id, install secret, empty file) on first
    /// use; an old-format vault is migrated to the install secret on the way. While a
    /// [`VaultHold`] of this configuration (or a clone) lives, the first handle opened is
    /// shared and later calls derive nothing.
    pub fn open_vault(&self) -> Result<Arc<Vault>, ConfigError> {
        let dir = self.vault_dir();
        self.vault_share.get_or_open(|| {
            let vault = Vault::open(&dir, &self.secret_store(), &SystemIdentity).map_err(|source| {
                ConfigError::Vault { what: format!("opening the vault {}", dir.display()), source }
            })?;
            tracing::debug!(dir = %dir.display(), "vault opened (key derived)");
            Ok(vault)
        })
    }

    /// Keeps the vault open, once opened, for every read through this configuration and its
    /// clones until the returned hold (and every other hold) is dropped: one key derivation for
    /// a sequence of reads such as an agent start. Opens nothing by itself.
    pub fn hold_vault(&self) -> VaultHold {
        self.vault_share.hold()
    }

    /// How many times the vault was opened (each a PBKDF2 key derivation) through this
    /// configuration and its clones. For tests and diagnostics.
    pub fn vault_opens(&self) -> u64 {
        self.vault_share.lock().opens
    }

    /// [`Vault::reset`] of this configuration's vault (after `VAULT_DECRYPT_ERROR`).
    pub fn reset_vault(&self) -> Result<(Vault, Option<PathBuf>), ConfigError> {
        // A held handle has the old key: it would read the new file as stale.
        let held = self.vault_share.lock().vault.take();
        drop(held);
        let dir = self.vault_dir();
        Vault::reset(&dir, &self.secret_store(), &SystemIdentity).map_err(|source| ConfigError::Vault {
            what: format!("resetting the vault {}", dir.display()),
            source,
        })
    }

    /// Opens the vault if one exists; `None` (and nothing created) when there is none yet.
    pub fn open_existing_vault(&self) -> Result<Option<Arc<Vault>>, ConfigError> {
        if !self.vault_dir().join(Vault::FILE_NAME).exists() {
            return Ok(None);
        }
        self.open_vault().map(Some)
    }

    /// The stored password of connection `connection` (vault id `db:<name>`), or `None` when
    /// none is stored (or there is no vault yet). Drop the result as soon as the driver has
    /// it: it zeroizes on drop.
    ///
    /// # Errors
    /// [`ConfigError::Vault`] when the vault cannot be read; [`ConfigError::is_vault_decrypt`]
    /// tells `VAULT_DECRYPT_ERROR` (wrong machine or damaged file: re-enter the password).
    pub fn db_password(&self, connection: &str) -> Result<Option<drivers::Secret>, ConfigError> {
        let Some(vault) = self.open_existing_vault()? else { return Ok(None) };
        let what = || format!("reading the password of connection `{connection}`");
        match vault.get(&db_password_id(connection)) {
            Ok(secret) => match secret.expose_str() {
                Some(text) => Ok(Some(drivers::Secret::new(text))),
                None => Err(ConfigError::Vault { what: what(), source: VaultError::Decrypt }),
            },
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(source) => Err(ConfigError::Vault { what: what(), source }),
        }
    }
}

/// The vault handle shared by the clones of one configuration while a [`VaultHold`] lives
/// (see [`AgentConfig::hold_vault`]). Not part of the file; every share compares equal.
#[derive(Clone, Default)]
pub struct VaultShare(Arc<Mutex<ShareState>>);

#[derive(Default)]
struct ShareState {
    /// Live [`VaultHold`]s.
    holds: usize,
    /// The handle opened while held; dropped (keys zeroized) with the last hold.
    vault: Option<Arc<Vault>>,
    /// Vault opens (key derivations) so far.
    opens: u64,
}

impl VaultShare {
    fn lock(&self) -> std::sync::MutexGuard<'_, ShareState> {
        // The state is a counter and an optional handle: always consistent, so a panic elsewhere
        // while it was locked leaves nothing half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self) -> VaultHold {
        self.lock().holds += 1;
        VaultHold(self.clone())
    }

    /// The held handle, or a new one from `open` (kept while held). While held, the lock is kept
    /// across `open`, so two threads of one start never derive twice.
    fn get_or_open(
        &self,
        open: impl FnOnce() -> Result<Vault, ConfigError>,
    ) -> Result<Arc<Vault>, ConfigError> {
        let mut state = self.lock();
        if state.holds == 0 {
            state.opens += 1;
            drop(state);
            return open().map(Arc::new);
        }
        if let Some(vault) = &state.vault {
            return Ok(vault.clone());
        }
        state.opens += 1;
        let vault = Arc::new(open()?);
        state.vault = Some(vault.clone());
        Ok(vault)
    }
}

impl std::fmt::Debug for VaultShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("VaultShare")
            .field("holds", &state.holds)
            .field("open", &state.vault.is_some())
            .finish()
    }
}

impl PartialEq for VaultShare {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Keeps a configuration's vault open once opened (see [`AgentConfig::hold_vault`]); the last
/// hold to drop closes it.
#[derive(Debug)]
#[must_use = "the vault is shared only while the hold lives"]
pub struct VaultHold(VaultShare);

impl Drop for VaultHold {
    fn drop(&mut self) {
        let closed = {
            let mut state = self.0.lock();
            state.holds = state.holds.saturating_sub(1);
            if state.holds == 0 { state.vault.take() } else { None }
        };
        drop(closed);
    }
}

/// Name of the install-secret directory under a state directory.
const VAULT_KEY_DIR_NAME: &str = "vault-keys";

/// The first directory systemd lists in `$STATE_DIRECTORY`, if it runs the agent.
pub(crate) fn state_directory() -> Option<PathBuf> {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .filter(|dir| dir.is_absolute())
}

/// `$STATE_DIRECTORY/vault` or `<config dir>/vault`.
fn default_vault_dir(config_dir: &Path) -> PathBuf {
    match state_directory() {
        Some(dir) => dir.join("vault"),
        None => config_dir.join("vault"),
    }
}

/// The per-user key directory: XDG state dir on Unix, `%LOCALAPPDATA%` (not roaming) on Windows.
fn user_key_dir() -> Option<PathBuf> {
    let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if cfg!(windows) {
        return absolute("LOCALAPPDATA").map(|dir| dir.join("MiniConnector").join(VAULT_KEY_DIR_NAME));
    }
    let state = absolute("XDG_STATE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".local/state")));
    state.map(|dir| dir.join("mini-connector").join(VAULT_KEY_DIR_NAME))
}

/// Checks the form of an `apiKeyRef` (without reading the key).
pub(crate) fn check_api_key_ref(reference: &str) -> Result<(), String> {
    let bad = || {
        "must be vault://apikey, keychain://<service>/<user>, file:<path> or env:<VARIABLE> \
         (a reference, never the key itself)"
            .to_owned()
    };
    if let Some(rest) = reference.strip_prefix("file:").or_else(|| reference.strip_prefix("env:")) {
        return if rest.is_empty() { Err(bad()) } else { Ok(()) };
    }
    ApiKeyStore::parse(reference).map(drop).map_err(|_| bad())
}

/// Loads the API key from a `vault://` or `keychain://` reference.
pub(crate) fn load_stored_api_key(config: &AgentConfig) -> Result<Zeroizing<String>, ConfigError> {
    let reference = config.api_key_ref.clone();
    let fail = |reason: String| ConfigError::ApiKey { reference: reference.clone(), reason };
    let store = ApiKeyStore::parse(&config.api_key_ref).map_err(|e| fail(e.to_string()))?;
    let vault = match store {
        // Never create a vault just to find it empty.
        ApiKeyStore::Vault => config.open_existing_vault()?.ok_or_else(|| {
            fail(format!(
                "there is no vault at {} yet; store the key with `mini-connector key rotate --api-key-stdin`",
                config.vault_dir().display()
            ))
        })?,
        // `ApiKeyStore::load` takes a vault handle even for the OS store.
        ApiKeyStore::Keyring { .. } => config.open_vault()?,
    };
    match store.load(&vault) {
        Ok(secret) => match secret.expose_str() {
            Some(text) => Ok(Zeroizing::new(text.to_owned())),
            None => Err(fail("the stored key is not text".into())),
        },
        Err(VaultError::NotFound { .. }) => Err(fail(
            "no API key is stored there; store it with `mini-connector key rotate --api-key-stdin`".into(),
        )),
        Err(source) => {
            Err(ConfigError::Vault { what: format!("loading the API key from {reference}"), source })
        }
    }
}

/// What to tell the user after a vault error: for `VAULT_DECRYPT_ERROR`, how to re-enter the
/// credentials. Used in [`ConfigError::Vault`]'s message.
pub fn reentry_hint(error: &VaultError) -> &'static str {
    if error.needs_reentry() {
        " [VAULT_DECRYPT_ERROR] — run `mini-connector vault reset` (moves the unreadable file aside), \
         then store the API key again (`mini-connector key rotate --api-key-stdin`) and every \
         database password (`mini-connector db edit NAME --password`)"
    } else {
        ""
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, fsync,
/// rename over the target, fsync of the directory. Creates the directory (0700) when missing.
/// A reader sees the old file or the new one, never a mix.
///
/// Unix: a new file is 0600. A replaced file keeps its owner and group and at most `rw-r-----`
/// of its mode (so `service install`'s group-readable config stays readable by the service,
/// and nothing is ever world-readable).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "config".into());
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        #[cfg(unix)]
        if let Ok(old) = std::fs::metadata(path) {
            use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
            // Owner first: chown may clear mode bits.
            if old.uid() != file.metadata()?.uid() || old.gid() != file.metadata()?.gid() {
                let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
            }
            file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o640))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_references_are_checked_by_form() {
        for good in ["vault://apikey", "keychain://mini-connector/apikey", "file:/etc/key", "env:MC_KEY"] {
            assert!(check_api_key_ref(good).is_ok(), "{good}");
        }
        for bad in ["", "file:", "env:", "vault://other", "keychain://x", "vmc_acme_abcdefghijkl_12345"] {
            assert!(check_api_key_ref(bad).is_err(), "{bad}");
        }
    }

    fn config(extra: serde_json::Value) -> AgentConfig {
        crate::config::test_config(extra, Some("/etc/mc/config.json"))
    }

    #[test]
    fn the_install_secret_is_never_in_the_vault_directory() {
        // Pinned (service install), relative to the config.
        let pinned = config(serde_json::json!({"vaultKeyDir": "keys"}));
        assert_eq!(pinned.vault_key_dir(), Path::new("/etc/mc/keys"));
        assert!(matches!(pinned.secret_store(), SecretStore::Files { .. }));
        // An explicit vaultDir (the service layout before vaultKeyDir was pinned): beside it, so
        // the service and an administrator's CLI agree.
        let service = config(serde_json::json!({"vaultDir": "/var/lib/mini-connector/vault"}));
        assert_eq!(service.vault_key_dir(), Path::new("/var/lib/mini-connector/vault-keys"));
        assert_eq!(service.secret_store(), SecretStore::files("/var/lib/mini-connector/vault-keys"));
        // The per-user default is outside the vault directory (next to the config).
        if std::env::var_os("STATE_DIRECTORY").is_none() {
            let user = config(serde_json::json!({}));
            assert!(
                !user.vault_key_dir().starts_with(user.vault_dir()),
                "{}",
                user.vault_key_dir().display()
            );
        }
    }

    #[test]
    fn a_held_vault_is_opened_once_for_every_clone_and_closed_with_the_last_hold() {
        let dir = std::env::temp_dir().join(format!("mc-secrets-hold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = config(serde_json::json!({
            "vaultDir": dir.join("vault"),
            "vaultKeyDir": dir.join("vault-keys"),
        }));
        config.source = Some(dir.join("config.json"));
        // Unheld: every open derives the key.
        config.open_vault().unwrap().put("db:a", b"one").unwrap();
        drop(config.open_existing_vault().unwrap().unwrap());
        assert_eq!(config.vault_opens(), 2);

        // Held: one derivation for the configuration and its clones (the link's key loader holds
        // a clone), whichever asks first.
        let hold = config.hold_vault();
        let clone = config.clone();
        let first = clone.open_existing_vault().unwrap().unwrap();
        let second = config.open_vault().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(clone.db_password("a").unwrap().unwrap().expose(), "one");
        assert_eq!(config.vault_opens(), 3);
        let another = config.hold_vault();
        drop(hold);
        assert!(Arc::ptr_eq(&config.open_vault().unwrap(), &first), "open while any hold lives");
        assert_eq!(config.vault_opens(), 3);
        drop(another);
        // The last hold gave the handle back: only the callers' copies remain.
        assert_eq!(Arc::strong_count(&first), 2);
        drop((first, second));
        drop(config.open_vault().unwrap());
        assert_eq!(config.vault_opens(), 4);

        // A reset under a hold: the held handle (old key) is not reused.
        let hold = config.hold_vault();
        drop(config.open_vault().unwrap());
        let (reset, _aside) = config.reset_vault().unwrap();
        drop(reset);
        config.open_vault().unwrap().put("db:b", b"two").unwrap();
        assert_eq!(config.db_password("b").unwrap().unwrap().expose(), "two");
        assert_eq!(config.vault_opens(), 6);
        drop(hold);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decrypt_errors_explain_how_to_reenter() {
        assert!(reentry_hint(&VaultError::Decrypt).contains("VAULT_DECRYPT_ERROR"));
        assert!(reentry_hint(&VaultError::Decrypt).contains("vault reset"));
        assert_eq!(reentry_hint(&VaultError::Stale), "");
    }

    #[test]
    fn atomic_write_replaces_the_file_owner_only() {
        let dir = std::env::temp_dir().join(format!("mc-secrets-{}", std::process::id()));
        let path = dir.join("sub").join("config.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
