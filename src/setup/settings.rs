//! The connector's identity and its API key: [`settings`], [`configure`], [`check_key`],
//! [`store_api_key`] (what `configure` and `key rotate` store).
//!
//! The API key goes to the store `apiKeyRef` names when it is one (`vault://apikey`,
//! `keychain://…`), else the platform's default store, and the configuration keeps only the
//! reference. It is checked locally (format and checksum) before anything is written; it is
//! never returned, logged or put in an error: views carry [`ApiKey::masked`] only.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde_json::json;
use tungstenite::client::IntoClientRequest as _;
use vault::ApiKeyStore;

use super::{Result, SetupError, absolute, load};
use crate::config::{AgentConfig, ConfigError};
use crate::protocol::ApiKey;
use crate::protocol::control::{KeyReport, SettingsChange, SettingsView};

/// How long [`check_key`] waits for the cloud (connect, TLS handshake, WebSocket upgrade).
pub const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The log levels `logLevel` takes.
pub const LOG_LEVELS: [&str; 5] = crate::config::LOG_LEVELS;

/// What [`configure_with`] did, for a caller that reports more than the [`SettingsView`].
#[derive(Debug)]
pub struct Configured {
    /// The settings now.
    pub view: SettingsView,
    /// The configuration as saved.
    pub config: AgentConfig,
    /// The file was created (it did not exist).
    pub created: bool,
    /// The new key, masked, when one was stored.
    pub key_stored: Option<String>,
    /// `apiKeyRef` before, when storing the key changed it (a `file:`/`env:` copy is now stale).
    pub old_reference: Option<String>,
}

/// The current settings, secrets masked.
pub fn settings(config_path: &Path) -> Result<SettingsView> {
    let config = load(config_path)?;
    Ok(view(config_path, &config))
}

/// The settings view of a loaded configuration.
pub fn view(config_path: &Path, config: &AgentConfig) -> SettingsView {
    SettingsView {
        config_path: config_path.display().to_string(),
        connector_name: config.connector_name.clone(),
        api_key_masked: config.load_api_key().ok().map(|key| key.masked()),
        cloud_url: config.cloud_url.clone(),
        proxy_url: config.proxy_url.as_deref().map(without_credentials),
        ca_cert_path: config.ca_cert_path.as_ref().map(|p| p.display().to_string()),
        log_level: config.log_level.clone(),
        auto_update: config.auto_update,
        auto_start: super::service::auto_start_enabled(config_path),
        pin_set: config.local_pin_hash.is_some(),
    }
}

/// `http://user:secret@proxy:3128` → `http://proxy:3128`.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Changes settings; `None` fields stay as they are, `Some("")` clears an optional one. A new
/// configuration needs `connectorName`, `cloudUrl` and the API key.
pub fn configure(config_path: &Path, change: SettingsChange) -> Result<SettingsView> {
    configure_with(config_path, change).map(|done| done.view)
}

/// Network settings that [`SettingsChange`] does not carry (`configure --proxy-password-stdin`,
/// `--pin-spki`, `--cloud-url-fallback`).
#[derive(Debug, Default)]
pub struct NetChange {
    /// A new proxy password (for `proxyUser`), stored in the vault.
    pub proxy_password: Option<zeroize::Zeroizing<String>>,
    /// The new `pinnedSpki` list (empty: remove the pins).
    pub pinned_spki: Option<Vec<String>>,
    /// The new `cloudUrlFallbacks` list, in order (empty entries are dropped; none left: no
    /// fallbacks).
    pub cloud_url_fallbacks: Option<Vec<String>>,
}

/// [`configure`], with what was done.
pub fn configure_with(config_path: &Path, change: SettingsChange) -> Result<Configured> {
    configure_net(config_path, change, NetChange::default())
}

/// [`configure_with`] plus the network settings of [`NetChange`].
///
/// Proxy credentials never stay in `proxyUrl`: a URL with `user:password@` (given now, or left
/// in the file by an older version) is split into `proxyUser` and the vault's `proxy:password`.
/// A new `proxyUrl` replaces the whole proxy setting: without a user in it, `proxyUser` and the
/// stored password are dropped; an empty one removes the proxy.
pub fn configure_net(
    config_path: &Path,
    mut change: SettingsChange,
    mut net: NetChange,
) -> Result<Configured> {
    let existing = config_path.exists();
    let mut config = if existing {
        load(config_path)?
    } else {
        let (Some(name), Some(url)) = (change.connector_name.take(), change.cloud_url.take()) else {
            return Err(SetupError::invalid(format!(
                "no configuration at {} yet: a new one needs the connector name and the cloud URL (and the API key)",
                config_path.display()
            )));
        };
        let mut config: AgentConfig = serde_json::from_value(json!({
            "connectorName": name,
            "apiKeyRef": vault::default_store().to_string(),
            "cloudUrl": url,
        }))
        .map_err(|e| SetupError::invalid(format!("invalid value: {e}")))?;
        config.source = Some(config_path.to_owned());
        config
    };
    if let Some(name) = change.connector_name.take() {
        config.connector_name = name;
    }
    if let Some(url) = change.cloud_url.take() {
        config.cloud_url = url;
    }
    let old_proxy_user = config.proxy_user.clone();
    if let Some(proxy) = change.proxy_url.take() {
        let proxy = proxy.trim().to_owned();
        config.proxy_user = None;
        config.proxy_url = (!proxy.is_empty()).then_some(proxy);
    }
    let mut proxy_password = net.proxy_password.take();
    if let Some(url) = config.proxy_url.clone() {
        let parsed = crate::proxy::parse_proxy_url(&url).map_err(|e| SetupError::invalid(e.to_string()))?;
        if crate::proxy::has_credentials(&url) {
            config.proxy_url = Some(parsed.without_credentials());
            config.proxy_user = parsed.user;
            if parsed.password.is_some() && proxy_password.is_none() {
                proxy_password = parsed.password;
            }
        }
    }
    if proxy_password.is_some() && config.proxy_user.is_none() {
        return Err(SetupError::invalid(
            "a proxy password needs a proxy user: give the proxy as http://USER@HOST:PORT",
        ));
    }
    // The stored password belongs to the old user: it goes when the user changes or goes.
    let drop_proxy_password =
        proxy_password.is_none() && old_proxy_user.is_some() && config.proxy_user != old_proxy_user;
    if let Some(urls) = net.cloud_url_fallbacks.take() {
        config.cloud_url_fallbacks =
            urls.into_iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
    }
    if let Some(pins) = net.pinned_spki.take() {
        config.pinned_spki =
            pins.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
    }
    if let Some(ca) = change.ca_cert_path.take() {
        if ca.is_empty() {
            config.ca_cert_path = None;
        } else {
            let ca = absolute(Path::new(&ca));
            crate::tls::client_config(Some(&ca))
                .map_err(|e| SetupError::invalid(format!("CA certificate: {e}")))?;
            config.ca_cert_path = Some(ca);
        }
    }
    if let Some(level) = change.log_level.take() {
        let level = level.trim().to_ascii_lowercase();
        if !LOG_LEVELS.contains(&level.as_str()) {
            return Err(SetupError::invalid(format!(
                "log level must be one of {}, not `{level}`",
                LOG_LEVELS.join(", ")
            )));
        }
        config.log_level = level;
    }
    if let Some(auto_update) = change.auto_update {
        config.auto_update = auto_update;
    }
    if let Some(ms) = change.heartbeat_interval_ms {
        config.heartbeat_interval_ms = ms;
    }
    if let Some(ms) = change.keepalive_interval_ms {
        config.keepalive_interval_ms = ms;
    }
    if let Some(dir) = change.vault_dir.take() {
        config.vault_dir = (!dir.is_empty()).then(|| absolute(Path::new(&dir)));
    }
    if let Some(dir) = change.vault_key_dir.take() {
        config.vault_key_dir = (!dir.is_empty()).then(|| absolute(Path::new(&dir)));
    }
    let key = match change.api_key.take().map(zeroize::Zeroizing::new) {
        Some(text) => Some(parse_key(&text)?),
        None if !existing => {
            return Err(SetupError::invalid("a new configuration needs the API key"));
        }
        None => None,
    };
    // Everything else is checked before the key is stored anywhere.
    config.validate()?;
    let old_reference = match &key {
        Some(key) => store_key_in(&mut config, key)?,
        None => None,
    };
    if let Some(password) = &proxy_password {
        crate::proxy::store_password(&config, password)?;
    }
    config.save(config_path)?;
    if drop_proxy_password {
        crate::proxy::remove_password(&config)?;
    }
    if let Some(wanted) = change.auto_start
        && wanted != super::service::auto_start_enabled(config_path)
    {
        super::service::set_auto_start(config_path, wanted)?;
    }
    Ok(Configured {
        view: view(config_path, &config),
        config,
        created: !existing,
        key_stored: key.as_ref().map(ApiKey::masked),
        old_reference,
    })
}

/// Parses a pasted key; the error never holds the key.
pub fn parse_key(text: &str) -> Result<ApiKey> {
    ApiKey::parse(text)
        .map_err(|e| SetupError::invalid(format!("malformed API key: {e}; nothing was changed")))
}

/// `key rotate`: stores `key` (checked first) and points `apiKeyRef` at its store, saving the
/// configuration when the reference changed. Returns the old reference in that case.
pub fn store_api_key(config_path: &Path, key_text: &str) -> Result<(ApiKey, AgentConfig, Option<String>)> {
    let mut config = load(config_path)?;
    let key = parse_key(key_text)?;
    let old_reference = store_key_in(&mut config, &key)?;
    if old_reference.is_some() {
        config.save(config_path)?;
    }
    Ok((key, config, old_reference))
}

/// Which store a key goes to: the one `apiKeyRef` names if it is a store, else the platform's
/// default (`vault://apikey` on Linux).
fn target_store(config: &AgentConfig) -> ApiKeyStore {
    ApiKeyStore::parse(&config.api_key_ref).unwrap_or_else(|_| vault::default_store())
}

/// Stores `key` and points `apiKeyRef` at the store. Returns the old reference when it changed.
fn store_key_in(config: &mut AgentConfig, key: &ApiKey) -> Result<Option<String>> {
    let store = target_store(config);
    let vault = config.open_vault()?;
    store
        .store(&vault, key.expose().as_bytes())
        .map_err(|source| ConfigError::Vault { what: format!("storing the API key in {store}"), source })?;
    let reference = store.to_string();
    if config.api_key_ref == reference {
        return Ok(None);
    }
    Ok(Some(std::mem::replace(&mut config.api_key_ref, reference)))
}

/// Checks a pasted API key (wizard step 1): its format and checksum offline, then whether the
/// cloud at `cloud_url` (else the configured one) answers: TCP (through the configured proxy),
/// TLS handshake (with the configured CA) and the WebSocket upgrade, within [`REACH_TIMEOUT`].
///
/// The key is **not** sent: an `auth` frame would start a session that could displace a running
/// agent, and a key should reach only a cloud the operator has confirmed. So `accepted` is
/// `None`; the key itself is checked when the agent connects. Neither the key nor any part of it
/// is in the report.
pub fn check_key(config_path: &Path, api_key: &str, cloud_url: Option<&str>) -> Result<KeyReport> {
    let format = ApiKey::parse(api_key).map(|_| ()).map_err(|e| e.to_string());
    let config = if config_path.exists() { Some(load(config_path)?) } else { None };
    let url = match (cloud_url, &config) {
        (Some(url), _) => url.trim().to_owned(),
        (None, Some(config)) => config.cloud_url.clone(),
        (None, None) => return Err(SetupError::invalid("no cloud URL given and none configured yet")),
    };
    let reach = match &config {
        Some(config) => crate::proxy::ProxySettings::from_config(config)
            .map_err(|e| e.to_string())
            .and_then(|proxy| reach(&url, &proxy, crate::tls::for_agent(config))),
        None => crate::proxy::ProxySettings::resolve(None, None, None, &|name| std::env::var(name).ok())
            .map_err(|e| e.to_string())
            .and_then(|proxy| reach(&url, &proxy, crate::tls::client_config(None))),
    };
    let (reachable, latency_ms, reach_message) = match reach {
        Ok(elapsed) => {
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            (true, Some(ms), format!("The console answered in {ms} ms (TLS and WebSocket upgrade)."))
        }
        Err(why) => (false, None, why),
    };
    let message = match &format {
        Ok(()) if reachable => format!("The key is well-formed. {reach_message}"),
        Ok(()) => format!("The key is well-formed, but the console did not answer: {reach_message}"),
        Err(why) => format!("The key is not valid ({why}). {reach_message}"),
    };
    Ok(KeyReport { format_ok: format.is_ok(), reachable, accepted: None, latency_ms, message })
}

/// Connects, handshakes TLS and upgrades to WebSocket, then closes. The error says which step
/// failed, in words.
fn reach(
    url: &str,
    proxy: &crate::proxy::ProxySettings,
    tls: std::result::Result<std::sync::Arc<rustls::ClientConfig>, crate::tls::TlsError>,
) -> std::result::Result<Duration, String> {
    if !url.starts_with("wss://") {
        return Err(format!("the cloud URL must start with wss:// (TLS is required), not `{url}`"));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let port = uri.port_u16().unwrap_or(443);
    let tls = tls.map_err(|e| format!("TLS settings: {e}"))?;
    let started = Instant::now();
    let deadline = started + REACH_TIMEOUT;
    let route = proxy.route(&host, port);
    let tcp = crate::proxy::dial(&route, &host, port, deadline).map_err(|e| match route {
        crate::proxy::Route::Via(_) => e.to_string(),
        crate::proxy::Route::Direct if e.is_timeout() => {
            format!("no answer from {host}:{port} within {} s: is a proxy needed?", REACH_TIMEOUT.as_secs())
        }
        crate::proxy::Route::Direct => format!("{e}; is a proxy needed, or the URL wrong?"),
    })?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let _ = tcp.set_read_timeout(Some(left));
    let _ = tcp.set_write_timeout(Some(left));
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("bad host name `{host}`: {e}"))?;
    let mut conn = ClientConnection::new(tls, name).map_err(|e| format!("TLS: {e}"))?;
    let mut sock: TcpStream = tcp.try_clone().map_err(|e| format!("socket: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| format!("TLS handshake with {host} failed: {e}"))?;
    }
    let stream = StreamOwned::new(conn, sock);
    let request = url.into_client_request().map_err(|e| format!("`{url}`: {e}"))?;
    let (mut ws, _) =
        tungstenite::client::client_with_config(request, stream, Some(crate::wsio::ws_config()))
            .map_err(|e| format!("{host} answered TLS but refused the WebSocket upgrade: {e}"))?;
    let elapsed = started.elapsed();
    let _ = ws.close(None);
    let _ = ws.flush();
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_are_removed() {
        assert_eq!(without_credentials("http://u:secret@proxy:3128"), "http://proxy:3128");
        assert_eq!(without_credentials("http://proxy:3128/x@y"), "http://proxy:3128/x@y");
        assert_eq!(without_credentials("http://proxy:3128"), "http://proxy:3128");
    }
}
