//! The API keys of a cluster, in Redis: every node authenticates against the same records, and
//! a key revoked through any node is refused by all of them at the next `auth` (the running
//! sessions are kicked through the cluster's broadcast channel, `cluster.rs`).
//!
//! As in `gateway.db`, only a random salt and `sha256(salt || key)` are stored. Layout:
//! `mc:keys` is a hash of key id → JSON record; `mc:keys:masked:<masked key>` is the set of ids
//! whose key masks to that text (`vmc_<tenant>_****_<checksum>`), so `auth` hashes only the
//! few candidates that share the key's public checksum instead of every key of the tenant;
//! `mc:keys:name:<connector>` is the set of a connector's key ids. Writes concern one connector
//! and are optimistic transactions (`WATCH mc:keys:name:<connector>`), retried when another
//! node wrote first: creating 5,000 keys reads 5,000 small sets, not the whole table each time.

use std::sync::Mutex;

use protocol::{ApiKey, SecretBytes};
use redis::Commands as _;
use serde::{Deserialize, Serialize};

use crate::GatewayError;
use crate::keys::{
    KeyInfo, KeyRecord, KeyState, ROTATION_GRACE, constant_time_eq, now_ms, rfc3339, salted_hash,
    validate_name,
};

const KEYS: &str = "mc:keys";
/// Every connector name that was ever issued a key (for the hot `is_known` check).
const NAMES: &str = "mc:keys:names";

fn masked_set(masked: &str) -> String {
    format!("mc:keys:masked:{masked}")
}

fn name_set(name: &str) -> String {
    format!("mc:keys:name:{name}")
}

/// One key, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    tenant: String,
    connector: String,
    /// Hex, 16 random bytes.
    salt: String,
    /// Hex `sha256(salt || key)`.
    key_hash: String,
    masked: String,
    created_at: i64,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
}

impl Stored {
    fn usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// The Redis key store (one connection, shared).
pub(crate) struct RedisKeys {
    conn: Mutex<redis::Connection>,
}

impl RedisKeys {
    pub(crate) fn open(url: &str) -> Result<Self, GatewayError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_with_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn all(conn: &mut redis::Connection) -> Result<Vec<(String, Stored)>, GatewayError> {
        let raw: Vec<(String, String)> = conn.hgetall(KEYS)?;
        let mut keys: Vec<(String, Stored)> = raw
            .into_iter()
            .filter_map(|(id, json)| match serde_json::from_str(&json) {
                Ok(stored) => Some((id, stored)),
                Err(e) => {
                    tracing::error!(key = %id, "unreadable key record in Redis skipped: {e}");
                    None
                }
            })
            .collect();
        keys.sort_by(|a, b| (a.1.created_at, &a.0).cmp(&(b.1.created_at, &b.0)));
        Ok(keys)
    }

    /// The records of these ids (missing or unreadable ones left out), oldest first.
    fn records(conn: &mut redis::Connection, ids: &[String]) -> Result<Vec<(String, Stored)>, GatewayError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET").arg(KEYS).arg(ids).query(conn)?;
        let mut out: Vec<(String, Stored)> = ids
            .iter()
            .zip(raw)
            .filter_map(|(id, json)| Some((id.clone(), serde_json::from_str(&json?).ok()?)))
            .collect();
        out.sort_by(|a, b| (a.1.created_at, &a.0).cmp(&(b.1.created_at, &b.0)));
        Ok(out)
    }

    /// Runs `plan` on the records of connector `name` under `WATCH mc:keys:name:<name>`: it
    /// returns the records to write and a value; the write commits only if no other node
    /// changed that connector's keys meanwhile (else it plans again).
    fn update<T>(
        &self,
        name: &str,
        mut plan: impl FnMut(&[(String, Stored)]) -> Result<(Vec<(String, Stored)>, T), GatewayError>,
    ) -> Result<T, GatewayError> {
        let mut conn = self.conn.lock().unwrap();
        for _ in 0..32 {
            redis::cmd("WATCH").arg(name_set(name)).exec(&mut *conn)?;
            let ids: Vec<String> = conn.smembers(name_set(name))?;
            let current = Self::records(&mut conn, &ids)?;
            let (writes, value) = match plan(&current) {
                Ok(planned) => planned,
                Err(e) => {
                    redis::cmd("UNWATCH").exec(&mut *conn)?;
                    return Err(e);
                }
            };
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (id, stored) in &writes {
                let json = serde_json::to_string(stored).map_err(|e| GatewayError::Redis(e.to_string()))?;
                pipe.hset(KEYS, id, json).ignore();
                pipe.sadd(masked_set(&stored.masked), id).ignore();
                pipe.sadd(name_set(&stored.connector), id).ignore();
                pipe.sadd(NAMES, &stored.connector).ignore();
            }
            // `None`: another node changed this connector's keys after the WATCH; plan again.
            let done: Option<()> = pipe.query(&mut *conn)?;
            if done.is_some() {
                return Ok(value);
            }
        }
        Err(GatewayError::Redis("the key records kept changing under this write; try again".into()))
    }

    fn new_key(tenant: &str, name: &str) -> Result<(String, ApiKey, Stored), GatewayError> {
        let key = ApiKey::generate(tenant).map_err(|e| GatewayError::Invalid(format!("tenant id: {e}")))?;
        let salt = SecretBytes::random(16);
        let id = format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let stored = Stored {
            tenant: tenant.to_owned(),
            connector: name.to_owned(),
            salt: hex::encode(salt.expose()),
            key_hash: salted_hash(salt.expose(), &key),
            masked: key.masked(),
            created_at: now_ms(),
            revoked_at: None,
            expires_at: None,
        };
        Ok((id, key, stored))
    }

    pub(crate) fn create(&self, tenant: &str, name: &str) -> Result<(String, ApiKey), GatewayError> {
        validate_name(name)?;
        let (id, key, stored) = Self::new_key(tenant, name)?;
        self.update(name, |current| {
            if let Some((_, other)) = current.iter().find(|(_, k)| k.connector == name && k.tenant != tenant)
            {
                return Err(GatewayError::KeyConflict(format!(
                    "connector `{name}` belongs to tenant `{}`",
                    other.tenant
                )));
            }
            if current.iter().any(|(_, k)| k.connector == name && k.usable(now_ms())) {
                return Err(GatewayError::KeyConflict(format!(
                    "connector `{name}` already has an active key; use `keys rotate`"
                )));
            }
            Ok((vec![(id.clone(), stored.clone())], ()))
        })?;
        Ok((id, key))
    }

    pub(crate) fn list(&self) -> Result<Vec<KeyInfo>, GatewayError> {
        let now = now_ms();
        let all = Self::all(&mut self.conn.lock().unwrap())?;
        Ok(all
            .into_iter()
            .map(|(id, k)| KeyInfo {
                state: match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => KeyState::Revoked,
                    (None, Some(at)) if at <= now => KeyState::Expired,
                    (None, Some(_)) => KeyState::Expiring,
                    (None, None) => KeyState::Active,
                },
                id,
                tenant: k.tenant,
                name: k.connector,
                masked_key: k.masked,
                created_at: rfc3339(k.created_at),
                revoked_at: k.revoked_at.map(rfc3339),
                expires_at: k.expires_at.map(rfc3339),
            })
            .collect())
    }

    /// Revokes, then tells every node on `mc:all` to kick the sessions of the revoked keys.
    pub(crate) fn revoke(&self, id_or_name: &str) -> Result<Vec<String>, GatewayError> {
        // An id names its connector; a name is one.
        let name = {
            let json: Option<String> = self.conn.lock().unwrap().hget(KEYS, id_or_name)?;
            json.and_then(|j| serde_json::from_str::<Stored>(&j).ok())
                .map_or_else(|| id_or_name.to_owned(), |k| k.connector)
        };
        let ids: Vec<String> = self.update(&name, |current| {
            let now = now_ms();
            let matching: Vec<&(String, Stored)> =
                current.iter().filter(|(id, k)| id == id_or_name || k.connector == id_or_name).collect();
            if matching.is_empty() {
                return Err(GatewayError::KeyNotFound(id_or_name.to_owned()));
            }
            let writes: Vec<(String, Stored)> = matching
                .into_iter()
                .filter(|(_, k)| k.usable(now))
                .map(|(id, k)| (id.clone(), Stored { revoked_at: Some(now), ..k.clone() }))
                .collect();
            if writes.is_empty() {
                return Err(GatewayError::KeyConflict(format!(
                    "`{id_or_name}` has no usable key left to revoke"
                )));
            }
            let ids = writes.iter().map(|(id, _)| id.clone()).collect();
            Ok((writes, ids))
        })?;
        let mut conn = self.conn.lock().unwrap();
        for id in &ids {
            let kick = crate::cluster::NodeMsg::Kick { key: id.clone() };
            let text = serde_json::to_string(&kick).unwrap_or_default();
            conn.publish::<_, _, ()>(crate::cluster::BROADCAST, text)?;
        }
        Ok(ids)
    }

    pub(crate) fn rotate(&self, name: &str) -> Result<(String, ApiKey), GatewayError> {
        let mut issued = None;
        self.update(name, |current| {
            let now = now_ms();
            let live: Vec<&(String, Stored)> =
                current.iter().filter(|(_, k)| k.connector == name && k.usable(now)).collect();
            let Some((_, first)) = live.first() else {
                return Err(GatewayError::KeyNotFound(format!("{name} (no usable key to rotate)")));
            };
            let expires = now + ROTATION_GRACE.as_millis() as i64;
            let mut writes: Vec<(String, Stored)> = live
                .iter()
                .map(|(id, k)| {
                    (
                        id.clone(),
                        Stored {
                            expires_at: Some(k.expires_at.map_or(expires, |at| at.min(expires))),
                            ..k.clone()
                        },
                    )
                })
                .collect();
            let (id, key, stored) = Self::new_key(&first.tenant, name)?;
            writes.push((id.clone(), stored));
            issued = Some((id, key));
            Ok((writes, ()))
        })?;
        issued.ok_or_else(|| GatewayError::Redis("rotation issued no key".into()))
    }

    pub(crate) fn authenticate(&self, key: &ApiKey) -> Result<Option<KeyRecord>, GatewayError> {
        let mut conn = self.conn.lock().unwrap();
        let ids: Vec<String> = conn.smembers(masked_set(&key.masked()))?;
        if ids.is_empty() {
            return Ok(None);
        }
        let records: Vec<Option<String>> = redis::cmd("HMGET").arg(KEYS).arg(&ids).query(&mut *conn)?;
        let now = now_ms();
        let mut found = None;
        // Every candidate is hashed and compared, so timing does not tell which one matched.
        for (id, json) in ids.into_iter().zip(records) {
            let Some(k) = json.and_then(|j| serde_json::from_str::<Stored>(&j).ok()) else { continue };
            let Ok(salt) = hex::decode(&k.salt) else { continue };
            let matches = constant_time_eq(salted_hash(&salt, key).as_bytes(), k.key_hash.as_bytes());
            if matches && k.usable(now) && k.tenant == key.tenant_id() && found.is_none() {
                found = Some(KeyRecord { id, tenant: k.tenant, connector: k.connector });
            }
        }
        Ok(found)
    }

    pub(crate) fn is_usable(&self, id: &str) -> Result<bool, GatewayError> {
        let json: Option<String> = self.conn.lock().unwrap().hget(KEYS, id)?;
        Ok(json.and_then(|j| serde_json::from_str::<Stored>(&j).ok()).is_some_and(|k| k.usable(now_ms())))
    }

    pub(crate) fn has_connector(&self, name: &str) -> Result<bool, GatewayError> {
        Ok(self.conn.lock().unwrap().sismember(NAMES, name)?)
    }

    pub(crate) fn connectors(&self) -> Result<Vec<(String, String)>, GatewayError> {
        let all = Self::all(&mut self.conn.lock().unwrap())?;
        let mut names: Vec<(String, String)> =
            all.into_iter().map(|(_, k)| (k.connector, k.tenant)).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}
