//! API keys in `<data-dir>/gateway.db`, or in Redis for a cluster (`redis_keys.rs`): only a
//! random salt and `sha256(salt || key)` are stored, never the plaintext, which is shown once by
//! [`KeyStore::create`] / [`KeyStore::rotate`].

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{ApiKey, SecretBytes};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::GatewayError;

/// How long the old key keeps working after [`KeyStore::rotate`].
pub const ROTATION_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    connector  TEXT NOT NULL,
    salt       TEXT NOT NULL,     -- hex, 16 random bytes per key
    key_hash   TEXT NOT NULL,     -- hex sha256(salt || key)
    masked     TEXT NOT NULL,     -- ApiKey::masked(), safe to display
    created_at INTEGER NOT NULL,  -- unix milliseconds
    revoked_at INTEGER,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant);
CREATE INDEX IF NOT EXISTS api_keys_connector ON api_keys (connector);
CREATE INDEX IF NOT EXISTS api_keys_masked ON api_keys (masked);
";

/// Called with the id of every key that [`KeyStore::revoke`] revoked (the gateway kicks the
/// session that authenticated with it).
type RevokeHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The key database. Cheap to clone; all clones share one SQLite connection.
#[derive(Clone)]
pub struct KeyStore {
    backend: Backend,
    on_revoke: Option<RevokeHook>,
}

/// Where the keys live.
#[derive(Clone)]
enum Backend {
    /// `<data-dir>/gateway.db` (one node).
    Sqlite(Arc<Mutex<Connection>>),
    /// Redis, shared by every node of a cluster.
    Redis(Arc<crate::redis_keys::RedisKeys>),
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore").field("kicks_sessions", &self.on_revoke.is_some()).finish()
    }
}

/// The key row an agent authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Key id.
    pub id: String,
    /// Tenant id.
    pub tenant: String,
    /// Connector name registered for the key.
    pub connector: String,
}

/// Life-cycle state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Accepted, no expiry.
    Active,
    /// Accepted until `expires_at` (the old key of a rotation).
    Expiring,
    /// Past `expires_at`.
    Expired,
    /// Revoked.
    Revoked,
}

/// One key as `keys list` shows it; never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// Key id.
    pub id: String,
    /// Tenant id.
    pub tenant: String,
    /// Connector name.
    pub name: String,
    /// `vmc_<tenant>_****_<checksum>`.
    pub masked_key: String,
    /// Current state.
    pub state: KeyState,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// RFC 3339, when it expires (rotation).
    pub expires_at: Option<String>,
}

impl KeyInfo {
    /// `active`, `revoked at ...`, `expiring at ...`, `expired at ...`.
    pub fn state_text(&self) -> String {
        match self.state {
            KeyState::Active => "active".into(),
            KeyState::Revoked => format!("revoked at {}", self.revoked_at.as_deref().unwrap_or("?")),
            KeyState::Expiring => format!("expiring at {}", self.expires_at.as_deref().unwrap_or("?")),
            KeyState::Expired => format!("expired at {}", self.expires_at.as_deref().unwrap_or("?")),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub(crate) fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

pub(crate) fn salted_hash(salt: &[u8], key: &ApiKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(key.expose().as_bytes());
    hex::encode(hasher.finalize())
}

/// Makes `gateway.db` (created empty if missing) and its `-journal`, `-wal` and `-shm` files
/// owner-only (mode 0600 on Unix) **without opening a file that exists**.
///
/// Closing *any* descriptor of a file drops every POSIX (`fcntl`) lock this process holds on it,
/// and SQLite's WAL locks are such locks: each connection keeps a shared lock on `-shm` that tells
/// other processes "a connection is open here". The gateway used to open and close the files (to
/// set the mode) while its key connection was open, which silently dropped that lock; a
/// `connector-gateway keys create` in another process then took itself for the only user, reset
/// the WAL index when it closed, and the gateway's connections went on answering from their
/// stale page cache: the new key was listed as active and refused (`AUTH_FAILED`) until a
/// restart. `chmod` by path takes no descriptor and no lock.
pub(crate) fn private_db_files(db: &Path) -> Result<(), GatewayError> {
    let mut options = std::fs::OpenOptions::new();
    // A file that does not exist yet has no lock to lose: it is created owner-only.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(db) {
        Ok(file) => drop(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut file = db.as_os_str().to_owned();
        file.push(suffix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        #[cfg(not(unix))]
        let _ = file;
    }
    Ok(())
}

/// Compares two byte strings without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn validate_name(name: &str) -> Result<(), GatewayError> {
    let ok = !name.trim().is_empty() && name.len() <= 64 && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(GatewayError::Invalid(format!("connector name `{name}` (1-64 printable characters)")))
    }
}

impl KeyStore {
    /// Opens (creating if needed) `<data_dir>/gateway.db`, owner-only: the directory is created
    /// 0700 and the database 0600 (SQLite gives its journal files the database's mode).
    pub fn open(data_dir: &Path) -> Result<Self, GatewayError> {
        crate::tls::create_private_dir(data_dir)?;
        let path = data_dir.join("gateway.db");
        private_db_files(&path)?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { backend: Backend::Sqlite(Arc::new(Mutex::new(conn))), on_revoke: None })
    }

    /// The keys of a cluster, in Redis at `url` (`redis://host:port[/db]`).
    pub fn open_redis(url: &str) -> Result<Self, GatewayError> {
        let keys = crate::redis_keys::RedisKeys::open(url)?;
        Ok(Self { backend: Backend::Redis(Arc::new(keys)), on_revoke: None })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.backend {
            Backend::Sqlite(db) => db.lock().unwrap(),
            Backend::Redis(_) => unreachable!("the SQLite key code runs only for a SQLite store"),
        }
    }

    fn redis(&self) -> Option<&crate::redis_keys::RedisKeys> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            Backend::Sqlite(_) => None,
        }
    }

    pub(crate) fn with_revoke_hook(mut self, hook: RevokeHook) -> Self {
        self.on_revoke = Some(hook);
        self
    }

    fn insert(&self, conn: &Connection, tenant: &str, name: &str) -> Result<(String, ApiKey), GatewayError> {
        let key = ApiKey::generate(tenant).map_err(|e| GatewayError::Invalid(format!("tenant id: {e}")))?;
        let salt = SecretBytes::random(16);
        let id = format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        conn.execute(
            "INSERT INTO api_keys (id, tenant, connector, salt, key_hash, masked, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                tenant,
                name,
                hex::encode(salt.expose()),
                salted_hash(salt.expose(), &key),
                key.masked(),
                now_ms()
            ],
        )?;
        Ok((id, key))
    }

    /// Creates a key for a new connector and returns its id and the plaintext (shown once).
    /// A name that already has a usable key must be rotated instead; names are unique across
    /// tenants.
    pub fn create(&self, tenant: &str, name: &str) -> Result<(String, ApiKey), GatewayError> {
        if let Some(r) = self.redis() {
            return r.create(tenant, name);
        }
        validate_name(name)?;
        let conn = self.db();
        let other: Option<String> = conn
            .query_row(
                "SELECT tenant FROM api_keys WHERE connector = ?1 AND tenant <> ?2 LIMIT 1",
                params![name, tenant],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = other {
            return Err(GatewayError::KeyConflict(format!("connector `{name}` belongs to tenant `{other}`")));
        }
        let live: i64 = conn.query_row(
            "SELECT COUNT(*) FROM api_keys WHERE connector = ?1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > ?2)",
            params![name, now_ms()],
            |r| r.get(0),
        )?;
        if live > 0 {
            return Err(GatewayError::KeyConflict(format!(
                "connector `{name}` already has an active key; use `keys rotate`"
            )));
        }
        self.insert(&conn, tenant, name)
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, GatewayError> {
        if let Some(r) = self.redis() {
            return r.list();
        }
        let now = now_ms();
        let conn = self.db();
        let mut stmt = conn.prepare(
            "SELECT id, tenant, connector, masked, created_at, revoked_at, expires_at
               FROM api_keys ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let revoked: Option<i64> = r.get(5)?;
            let expires: Option<i64> = r.get(6)?;
            let state = match (revoked, expires) {
                (Some(_), _) => KeyState::Revoked,
                (None, Some(at)) if at <= now => KeyState::Expired,
                (None, Some(_)) => KeyState::Expiring,
                (None, None) => KeyState::Active,
            };
            Ok(KeyInfo {
                id: r.get(0)?,
                tenant: r.get(1)?,
                name: r.get(2)?,
                masked_key: r.get(3)?,
                state,
                created_at: rfc3339(r.get(4)?),
                revoked_at: revoked.map(rfc3339),
                expires_at: expires.map(rfc3339),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes the key with this id, or every usable key of the connector with this name.
    /// Returns the revoked ids; a running gateway's store also disconnects their sessions.
    pub fn revoke(&self, id_or_name: &str) -> Result<Vec<String>, GatewayError> {
        let now = now_ms();
        let ids: Vec<String> = if let Some(r) = self.redis() {
            r.revoke(id_or_name)?
        } else {
            let conn = self.db();
            let any: i64 = conn.query_row(
                "SELECT COUNT(*) FROM api_keys WHERE id = ?1 OR connector = ?1",
                params![id_or_name],
                |r| r.get(0),
            )?;
            if any == 0 {
                return Err(GatewayError::KeyNotFound(id_or_name.to_owned()));
            }
            let mut stmt = conn.prepare(
                "SELECT id FROM api_keys WHERE (id = ?1 OR connector = ?1) AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > ?2)",
            )?;
            let ids = stmt
                .query_map(params![id_or_name, now], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            if ids.is_empty() {
                return Err(GatewayError::KeyConflict(format!(
                    "`{id_or_name}` has no usable key left to revoke"
                )));
            }
            for id in &ids {
                conn.execute("UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2", params![now, id])?;
            }
            ids
        };
        if let Some(hook) = &self.on_revoke {
            for id in &ids {
                hook(id);
            }
        }
        Ok(ids)
    }

    /// Issues a new key for an existing connector; its current keys keep working for
    /// [`ROTATION_GRACE`] and then expire. Returns the new id and plaintext.
    pub fn rotate(&self, name: &str) -> Result<(String, ApiKey), GatewayError> {
        if let Some(r) = self.redis() {
            return r.rotate(name);
        }
        let now = now_ms();
        let conn = self.db();
        let tenant: Option<String> = conn
            .query_row(
                "SELECT tenant FROM api_keys WHERE connector = ?1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > ?2) LIMIT 1",
                params![name, now],
                |r| r.get(0),
            )
            .optional()?;
        let Some(tenant) = tenant else {
            return Err(GatewayError::KeyNotFound(format!("{name} (no usable key to rotate)")));
        };
        let expires = now + ROTATION_GRACE.as_millis() as i64;
        conn.execute(
            "UPDATE api_keys SET expires_at = ?1 WHERE connector = ?2 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > ?1)",
            params![expires, name],
        )?;
        self.insert(&conn, &tenant, name)
    }

    /// The usable key row matching this key, if any. Only the rows with the same masked form
    /// (tenant and checksum) are hashed, so an `auth` costs the same at 10 keys or 10,000.
    pub fn authenticate(&self, key: &ApiKey) -> Result<Option<KeyRecord>, GatewayError> {
        if let Some(r) = self.redis() {
            return r.authenticate(key);
        }
        let conn = self.db();
        let mut stmt = conn.prepare(
            "SELECT id, tenant, connector, salt, key_hash FROM api_keys
              WHERE masked = ?1 AND tenant = ?2 AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > ?3)",
        )?;
        let rows = stmt.query_map(params![key.masked(), key.tenant_id(), now_ms()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut found = None;
        // Every candidate is hashed and compared, so timing does not tell which row matched.
        for row in rows {
            let (id, tenant, connector, salt, hash) = row?;
            let Ok(salt) = hex::decode(salt) else { continue };
            if constant_time_eq(salted_hash(&salt, key).as_bytes(), hash.as_bytes()) && found.is_none() {
                found = Some(KeyRecord { id, tenant, connector });
            }
        }
        Ok(found)
    }

    /// Whether the key with this id is neither revoked nor expired.
    pub fn is_usable(&self, id: &str) -> Result<bool, GatewayError> {
        if let Some(r) = self.redis() {
            return r.is_usable(id);
        }
        let conn = self.db();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM api_keys WHERE id = ?1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > ?2)",
            params![id, now_ms()],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Whether a key was ever issued for this connector name.
    pub fn has_connector(&self, name: &str) -> Result<bool, GatewayError> {
        if let Some(r) = self.redis() {
            return r.has_connector(name);
        }
        let n: i64 = self.db().query_row(
            "SELECT COUNT(*) FROM api_keys WHERE connector = ?1",
            params![name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// `(name, tenant)` of every connector that was ever issued a key.
    pub fn connectors(&self) -> Result<Vec<(String, String)>, GatewayError> {
        if let Some(r) = self.redis() {
            return r.connectors();
        }
        let conn = self.db();
        let mut stmt = conn.prepare("SELECT DISTINCT connector, tenant FROM api_keys ORDER BY connector")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_rotate_revoke() {
        let dir = std::env::temp_dir().join(format!("gw-keys-{}", uuid::Uuid::new_v4()));
        let store = KeyStore::open(&dir).unwrap();
        let (id, key) = store.create("acme", "Warehouse").unwrap();
        assert_eq!(store.authenticate(&key).unwrap().unwrap().id, id);
        assert!(matches!(store.create("acme", "Warehouse"), Err(GatewayError::KeyConflict(_))));
        assert!(matches!(store.create("other", "Warehouse"), Err(GatewayError::KeyConflict(_))));
        let (id2, key2) = store.rotate("Warehouse").unwrap();
        assert!(store.authenticate(&key).unwrap().is_some());
        assert_eq!(store.authenticate(&key2).unwrap().unwrap().id, id2);
        let list = store.list().unwrap();
        assert_eq!(list[0].state, KeyState::Expiring);
        assert_eq!(list[1].state, KeyState::Active);
        assert_eq!(store.revoke(&id).unwrap(), vec![id.clone()]);
        assert!(store.authenticate(&key).unwrap().is_none());
        assert!(store.is_usable(&id2).unwrap());
        assert_eq!(store.revoke("Warehouse").unwrap(), vec![id2.clone()]);
        assert!(store.authenticate(&key2).unwrap().is_none());
        assert!(matches!(store.revoke("nope"), Err(GatewayError::KeyNotFound(_))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
