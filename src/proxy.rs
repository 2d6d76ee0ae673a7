//! Outbound routes: straight to the host, or through an HTTP CONNECT proxy — one code path for
//! the link (WSS), the uploader (ureq, through [`crate::https`]) and `doctor`.
//!
//! **Which proxy** ([`ProxySettings::from_config`]): `proxyUrl` in the configuration wins; without
//! it the environment's `HTTPS_PROXY`, `https_proxy`, `ALL_PROXY`, `all_proxy` (first one set).
//! `NO_PROXY` / `no_proxy` (from the environment, in both cases) lists targets reached directly:
//! `*`, host names (`example.com` also covers its subdomains, `.example.com` only them), IP
//! addresses, CIDR ranges (`10.0.0.0/8`) and any of these with `:port`. Only `http://` proxies
//! are spoken (the tunnel's inside is TLS 1.3 anyway).
//!
//! **Credentials**: Basic only. The user is `proxyUser` in the configuration, the password is in
//! the vault (id [`PROXY_PASSWORD_ID`]); `configure --proxy http://user:secret@host:port` moves
//! them there. A `proxyUrl` that still holds a user or password is refused at start with the
//! command that moves it. Credentials in `HTTPS_PROXY` are used as given. Neither the password
//! nor the `Proxy-Authorization` header is ever logged, shown or put in an error.
//!
//! **Refusals are reported as such** ([`DialError`]): 407 (authentication), 403 (forbidden
//! target), a redirect or a 200 carrying a page (captive login), an unreachable or silent
//! proxy — never as a TLS error further down.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::config::AgentConfig;

/// The vault id of the proxy password.
pub const PROXY_PASSWORD_ID: &str = "proxy:password";
/// Port of a proxy URL without one.
pub const DEFAULT_PROXY_PORT: u16 = 3128;
/// Longest proxy answer to a CONNECT we read (status line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// Why a route could not be set up or dialled. Never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The proxy settings are unusable (bad URL, inline password, missing vault entry).
    #[error("{0}")]
    Config(String),
    /// The proxy answered 407.
    #[error("{}", auth_message(.proxy, *.sent_credentials, .offered))]
    AuthRequired {
        /// `http://host:port` of the proxy.
        proxy: String,
        /// Whether we sent a `Proxy-Authorization` header.
        sent_credentials: bool,
        /// The schemes of its `Proxy-Authenticate` headers (`Basic`, `NTLM`, …).
        offered: Vec<String>,
    },
    /// The proxy answered 403.
    #[error(
        "the proxy {proxy} forbids CONNECT to {target} (403): ask its administrator to allow this host and port"
    )]
    Forbidden {
        /// `http://host:port` of the proxy.
        proxy: String,
        /// `host:port` we asked for.
        target: String,
    },
    /// The proxy redirected (3xx) or answered 200 with a page instead of opening the tunnel.
    #[error(
        "the proxy {proxy} redirected to a login page{} instead of opening a tunnel to {target}: it wants a browser sign-in; ask its administrator for an exception for this host",
        .location.as_deref().map(|l| format!(" ({l})")).unwrap_or_default()
    )]
    LoginPage {
        /// `http://host:port` of the proxy.
        proxy: String,
        /// `host:port` we asked for.
        target: String,
        /// Scheme, host and port of the `Location`, when there was one.
        location: Option<String>,
    },
    /// The proxy answered CONNECT with another status.
    #[error("the proxy {proxy} refused CONNECT to {target}: {status}")]
    Refused {
        /// `http://host:port` of the proxy.
        proxy: String,
        /// `host:port` we asked for.
        target: String,
        /// Its status line.
        status: String,
    },
    /// The proxy's answer was not HTTP, or ended early.
    #[error("the proxy {proxy} gave no usable answer to CONNECT: {reason}")]
    Protocol {
        /// `http://host:port` of the proxy.
        proxy: String,
        /// What was wrong.
        reason: String,
    },
    /// No TCP connection to the proxy.
    #[error("cannot reach the proxy {proxy}: {source}")]
    ProxyUnreachable {
        /// `http://host:port` of the proxy.
        proxy: String,
        /// The socket error.
        source: io::Error,
    },
    /// The proxy accepted the connection but did not answer CONNECT in time.
    #[error("the proxy {proxy} did not answer CONNECT within {} s", .waited.as_secs_f32().ceil())]
    ProxyTimeout {
        /// `http://host:port` of the proxy.
        proxy: String,
        /// How long we waited.
        waited: Duration,
    },
    /// No TCP connection to the target (direct route).
    #[error("cannot reach {target}: {source}")]
    Unreachable {
        /// `host:port`.
        target: String,
        /// The socket error.
        source: io::Error,
    },
}

impl DialError {
    /// Whether the proxy (not the network or the target) refused: 407, 403, login page, other
    /// status. A retry will not help until someone changes a setting.
    pub fn is_proxy_refusal(&self) -> bool {
        matches!(
            self,
            Self::AuthRequired { .. }
                | Self::Forbidden { .. }
                | Self::LoginPage { .. }
                | Self::Refused { .. }
        )
    }

    /// Whether a deadline ran out (connecting, or waiting for the proxy).
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::ProxyTimeout { .. } => true,
            Self::ProxyUnreachable { source, .. } | Self::Unreachable { source, .. } => {
                source.kind() == io::ErrorKind::TimedOut
            }
            _ => false,
        }
    }
}

fn auth_message(proxy: &str, sent_credentials: bool, offered: &[String]) -> String {
    let mut text = if sent_credentials {
        format!(
            "proxy authentication required: the proxy {proxy} refused the user/password; check them (mini-connector configure --proxy http://USER@HOST:PORT --proxy-password-stdin)"
        )
    } else {
        format!(
            "proxy authentication required: the proxy {proxy} wants a user and password; set them with mini-connector configure --proxy http://USER@HOST:PORT --proxy-password-stdin"
        )
    };
    if !offered.is_empty() && !offered.iter().any(|s| s.eq_ignore_ascii_case("basic")) {
        text.push_str(&format!(
            "; it offers only {}, which Mini Connector does not speak (docs/NETWORK.md, NTLM): ask for Basic or an exception for this host",
            offered.join(", ")
        ));
    }
    text
}

/// An HTTP CONNECT proxy with its credentials.
pub struct Proxy {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<Zeroizing<String>>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.url())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Proxy {
    /// `http://host:port`, without credentials: what messages show.
    pub fn url(&self) -> String {
        format!("http://{}", authority(&self.host, self.port))
    }

    /// The configured user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn authorization(&self) -> Option<Zeroizing<String>> {
        let user = self.user.as_deref()?;
        let password = self.password.as_ref().map_or("", |p| p.as_str());
        let pair = Zeroizing::new(format!("{user}:{password}"));
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
        Some(Zeroizing::new(format!("Proxy-Authorization: Basic {}\r\n", encoded.as_str())))
    }
}

/// Where one connection goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// Straight to the target.
    Direct,
    /// Through this proxy.
    Via(Arc<Proxy>),
}

/// The proxy (if any) and the `NO_PROXY` rules; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    proxy: Option<Arc<Proxy>>,
    no_proxy: Arc<Vec<NoProxy>>,
}

/// The parts of a proxy URL.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host (IPv6 without brackets).
    pub host: String,
    /// Port ([`DEFAULT_PROXY_PORT`] when absent).
    pub port: u16,
    /// User, percent-decoded.
    pub user: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<Zeroizing<String>>,
}

impl ProxyUrl {
    /// `http://host:port`, no credentials.
    pub fn without_credentials(&self) -> String {
        format!("http://{}", authority(&self.host, self.port))
    }
}

/// Parses `http://[user[:password]@]host[:port][/]` (a bare `host:port` is taken as http). The
/// error never holds the password.
pub fn parse_proxy_url(text: &str) -> Result<ProxyUrl, DialError> {
    let bad = |why: &str| DialError::Config(format!("proxy URL: {why}"));
    let text = text.trim();
    let rest = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(bad(&format!("only http:// CONNECT proxies are supported, not {scheme}://")));
        }
        None => text,
    };
    let authority_text = rest.split('/').next().unwrap_or_default();
    if rest[authority_text.len()..].trim_matches('/').contains(|c: char| !c.is_whitespace()) {
        return Err(bad("must be http://host:port with no path"));
    }
    let (userinfo, hostport) = match authority_text.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority_text),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(port) => port.parse::<u16>().map_err(|_| bad("the port must be a number 1-65535"))?,
        None => DEFAULT_PROXY_PORT,
    };
    if port == 0 {
        return Err(bad("the port must be a number 1-65535"));
    }
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (info, None),
            };
            let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
            let password = match password {
                Some(p) => Some(Zeroizing::new(
                    percent_decode(p).ok_or_else(|| bad("bad %-escape in the password"))?,
                )),
                None => None,
            };
            (Some(user).filter(|u| !u.is_empty()), password)
        }
    };
    Ok(ProxyUrl { host: host.to_owned(), port, user, password })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `url` (a `proxyUrl`) carries a user or password.
pub fn has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().is_some_and(|authority| authority.contains('@'))
}

/// The first of `HTTPS_PROXY`, `https_proxy`, `ALL_PROXY`, `all_proxy` that is set and not
/// empty, with its name.
fn env_proxy(env: &dyn Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .into_iter()
        .find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
}

impl ProxySettings {
    /// No proxy: every route is direct.
    pub fn direct() -> Self {
        Self::default()
    }

    /// The settings for `config`: `proxyUrl` (+ `proxyUser` and the vault's password), else the
    /// environment; `NO_PROXY` from the environment.
    pub fn from_config(config: &AgentConfig) -> Result<Self, DialError> {
        let password = match (&config.proxy_url, &config.proxy_user) {
            (Some(_), Some(_)) => Some(load_password(config)?),
            _ => None,
        };
        Self::resolve(config.proxy_url.as_deref(), config.proxy_user.as_deref(), password, &|name| {
            std::env::var(name).ok()
        })
    }

    /// [`Self::from_config`] from its parts, `env` standing for the environment.
    pub fn resolve(
        proxy_url: Option<&str>,
        proxy_user: Option<&str>,
        password: Option<Zeroizing<String>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, DialError> {
        let no_proxy =
            env("NO_PROXY").or_else(|| env("no_proxy")).map(|list| parse_no_proxy(&list)).unwrap_or_default();
        let proxy = if let Some(url) = proxy_url {
            if has_credentials(url) {
                return Err(DialError::Config(
                    "proxyUrl in the configuration holds a user or password, which belong in the vault: run `mini-connector configure` once to move them there (or `mini-connector configure --proxy http://USER@HOST:PORT --proxy-password-stdin`)".into(),
                ));
            }
            let parsed = parse_proxy_url(url)?;
            Some(Proxy {
                host: parsed.host,
                port: parsed.port,
                user: proxy_user.map(str::to_owned),
                password,
            })
        } else if let Some((name, url)) = env_proxy(env) {
            let parsed = parse_proxy_url(&url).map_err(|e| DialError::Config(format!("{name}: {e}")))?;
            Some(Proxy { host: parsed.host, port: parsed.port, user: parsed.user, password: parsed.password })
        } else {
            None
        };
        Ok(Self { proxy: proxy.map(Arc::new), no_proxy: Arc::new(no_proxy) })
    }

    /// The proxy, when one is set (whatever `NO_PROXY` says).
    pub fn proxy(&self) -> Option<&Arc<Proxy>> {
        self.proxy.as_ref()
    }

    /// How to reach `host:port`.
    pub fn route(&self, host: &str, port: u16) -> Route {
        match &self.proxy {
            Some(proxy) if !self.no_proxy.iter().any(|rule| rule.matches(host, port)) => {
                Route::Via(proxy.clone())
            }
            _ => Route::Direct,
        }
    }
}

/// The proxy password from the vault.
fn load_password(config: &AgentConfig) -> Result<Zeroizing<String>, DialError> {
    let missing = || {
        DialError::Config(
            "proxyUser is set but no proxy password is stored: run `mini-connector configure --proxy-password-stdin`".into(),
        )
    };
    let vault = config
        .open_existing_vault()
        .map_err(|e| DialError::Config(format!("reading the proxy password: {e}")))?
        .ok_or_else(missing)?;
    match vault.get(PROXY_PASSWORD_ID) {
        Ok(secret) => secret
            .expose_str()
            .map(|s| Zeroizing::new(s.to_owned()))
            .ok_or_else(|| DialError::Config("the stored proxy password is not UTF-8".into())),
        Err(vault::VaultError::NotFound { .. }) => Err(missing()),
        Err(e) => Err(DialError::Config(format!("reading the proxy password: {e}"))),
    }
}

/// Whether a proxy password is stored in `config`'s vault (an unreadable vault counts as no).
pub fn password_stored(config: &AgentConfig) -> bool {
    load_password(config).is_ok()
}

/// Stores the proxy password in `config`'s vault (creating it if needed).
pub fn store_password(config: &AgentConfig, password: &str) -> Result<(), crate::config::ConfigError> {
    let vault = config.open_vault()?;
    vault.put(PROXY_PASSWORD_ID, password.as_bytes()).map_err(|source| crate::config::ConfigError::Vault {
        what: "storing the proxy password".into(),
        source,
    })
}

/// Removes the proxy password from `config`'s vault, if there is one.
pub fn remove_password(config: &AgentConfig) -> Result<(), crate::config::ConfigError> {
    if let Some(vault) = config.open_existing_vault()? {
        vault.remove(PROXY_PASSWORD_ID).map_err(|source| crate::config::ConfigError::Vault {
            what: "removing the proxy password".into(),
            source,
        })?;
    }
    Ok(())
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxy {
    /// `*`.
    All,
    /// A host name; `exact_too`: `example.com` (also itself), `.example.com` (subdomains only).
    Domain { name: String, exact_too: bool, port: Option<u16> },
    /// An address or a CIDR range.
    Net { addr: IpAddr, prefix: u8, port: Option<u16> },
}

fn parse_no_proxy(list: &str) -> Vec<NoProxy> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            if entry == "*" {
                return Some(NoProxy::All);
            }
            let entry = entry.to_ascii_lowercase();
            // `[v6]:port`, `v4:port`, `host:port`, a bare v6 address, or a CIDR.
            let (body, port) = if let Some(inner) = entry.strip_prefix('[') {
                let (addr, after) = inner.split_once(']')?;
                (addr.to_owned(), after.strip_prefix(':').and_then(|p| p.parse().ok()))
            } else if entry.matches(':').count() == 1 {
                let (body, port) = entry.split_once(':')?;
                (body.to_owned(), Some(port.parse().ok()?))
            } else {
                (entry.clone(), None)
            };
            let (addr_text, prefix) = match body.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
                None => (body.as_str(), None),
            };
            if let Ok(addr) = addr_text.parse::<IpAddr>() {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                return Some(NoProxy::Net { addr, prefix: prefix.unwrap_or(max).min(max), port });
            }
            let name = body.trim_start_matches('*');
            let exact_too = !name.starts_with('.');
            let name = name.trim_start_matches('.').trim_end_matches('.').to_owned();
            (!name.is_empty()).then_some(NoProxy::Domain { name, exact_too, port })
        })
        .collect()
}

impl NoProxy {
    fn matches(&self, host: &str, port: u16) -> bool {
        let host =
            host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        match self {
            Self::All => true,
            Self::Domain { name, exact_too, port: want } => {
                want.is_none_or(|p| p == port)
                    && ((*exact_too && host == *name)
                        || host.strip_suffix(name.as_str()).is_some_and(|head| head.ends_with('.')))
            }
            Self::Net { addr, prefix, port: want } => {
                want.is_none_or(|p| p == port)
                    && host.parse::<IpAddr>().is_ok_and(|ip| in_net(ip, *addr, *prefix))
            }
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Opens a TCP connection to `host:port` along `route` (through the proxy's CONNECT tunnel
/// when it is [`Route::Via`]), giving up at `deadline`. On success the stream is in blocking
/// mode with no timeouts set.
pub fn dial(route: &Route, host: &str, port: u16, deadline: Instant) -> Result<TcpStream, DialError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let target = authority(host, port);
    match route {
        Route::Direct => {
            connect_tcp(host, port, deadline).map_err(|source| DialError::Unreachable { target, source })
        }
        Route::Via(proxy) => {
            let mut tcp = connect_tcp(&proxy.host, proxy.port, deadline)
                .map_err(|source| DialError::ProxyUnreachable { proxy: proxy.url(), source })?;
            let started = Instant::now();
            let head = connect_exchange(&mut tcp, proxy, &target, deadline).map_err(|e| {
                if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
                    DialError::ProxyTimeout { proxy: proxy.url(), waited: started.elapsed() }
                } else {
                    DialError::Protocol { proxy: proxy.url(), reason: e.to_string() }
                }
            })?;
            classify(&head, &proxy.url(), &target, proxy.user.is_some())?;
            tcp.set_read_timeout(None)
                .and_then(|()| tcp.set_write_timeout(None))
                .map_err(|e| DialError::Protocol { proxy: proxy.url(), reason: e.to_string() })?;
            Ok(tcp)
        }
    }
}

/// Sends CONNECT and reads the answer's head (up to the blank line; nothing after it).
fn connect_exchange(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    target: &str,
    deadline: Instant,
) -> io::Result<String> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() { Err(io::Error::new(io::ErrorKind::TimedOut, "deadline")) } else { Ok(left) }
    };
    tcp.set_write_timeout(Some(left()?))?;
    let mut request = Zeroizing::new(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"));
    if let Some(auth) = proxy.authorization() {
        request.push_str(&auth);
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // One byte at a time: nothing after the blank line may be consumed (it is the tunnel's).
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::other("the answer's headers are too long"));
        }
        tcp.set_read_timeout(Some(left()?))?;
        match tcp.read(&mut byte)? {
            0 if head.is_empty() => {
                return Err(io::Error::other("the proxy closed the connection without answering"));
            }
            0 => return Err(io::Error::other("the proxy closed the connection in the middle of its answer")),
            _ => head.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// What a proxy's answer to CONNECT means. `head`: status line and headers.
pub fn classify(head: &str, proxy: &str, target: &str, sent_credentials: bool) -> Result<(), DialError> {
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().trim().to_owned();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let (true, Some(code)) = (version.starts_with("HTTP/"), code) else {
        return Err(DialError::Protocol {
            proxy: proxy.to_owned(),
            reason: format!("not an HTTP answer: {:?}", status_line.chars().take(60).collect::<String>()),
        });
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let (proxy, target) = (proxy.to_owned(), target.to_owned());
    match code {
        200..=299 => {
            // A tunnel has no body; a page here is a captive portal answering in the proxy's name.
            let has_body = header("content-type").is_some_and(|t| t.to_ascii_lowercase().contains("html"))
                || header("content-length").and_then(|l| l.parse::<u64>().ok()).is_some_and(|l| l > 0)
                || header("transfer-encoding").is_some();
            if has_body { Err(DialError::LoginPage { proxy, target, location: None }) } else { Ok(()) }
        }
        // 401 is what some proxies (tinyproxy) answer to wrong credentials.
        401 | 407 => Err(DialError::AuthRequired {
            proxy,
            sent_credentials,
            offered: headers
                .iter()
                .filter(|(n, _)| n == "proxy-authenticate" || n == "www-authenticate")
                .filter_map(|(_, v)| v.split_whitespace().next().map(str::to_owned))
                .collect(),
        }),
        403 => Err(DialError::Forbidden { proxy, target }),
        300..=399 => Err(DialError::LoginPage { proxy, target, location: header("location").map(origin) }),
        _ => Err(DialError::Refused { proxy, target, status: status_line }),
    }
}

/// `scheme://host[:port]` of a URL: a login URL's path and query may carry tokens.
fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or_default())
        }
        None => url.split(['/', '?', '#']).next().unwrap_or_default().to_owned(),
    }
}

/// A TCP connection to the first address of `host:port` that answers before `deadline`.
pub fn connect_tcp(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in (host, port).to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &str) -> ProxySettings {
        let env = |name: &str| match name {
            "NO_PROXY" => Some(list.to_owned()),
            _ => None,
        };
        ProxySettings::resolve(Some("http://proxy:3128"), None, None, &env).unwrap()
    }

    fn direct(settings: &ProxySettings, host: &str, port: u16) -> bool {
        matches!(settings.route(host, port), Route::Direct)
    }

    #[test]
    fn no_proxy_matches_suffixes_ips_ranges_ports_and_star() {
        let s = rules("example.com, .internal, 10.0.0.0/8,192.168.1.5, [::1], db.corp:8443, 2001:db8::/32");
        assert!(direct(&s, "example.com", 443));
        assert!(direct(&s, "api.example.com", 443));
        assert!(!direct(&s, "badexample.com", 443), "a suffix matches at a dot only");
        assert!(!direct(&s, "internal", 443), ".internal covers subdomains only");
        assert!(direct(&s, "git.internal", 443));
        assert!(direct(&s, "10.20.30.40", 443));
        assert!(!direct(&s, "11.0.0.1", 443));
        assert!(direct(&s, "192.168.1.5", 443));
        assert!(!direct(&s, "192.168.1.6", 443));
        assert!(direct(&s, "::1", 443));
        assert!(direct(&s, "[::1]", 443));
        assert!(direct(&s, "db.corp", 8443));
        assert!(!direct(&s, "db.corp", 443), "a rule with a port covers that port only");
        assert!(direct(&s, "2001:db8::7", 443));
        assert!(!direct(&s, "gateway.cloud.example", 443));
        assert!(direct(&rules("*"), "anything", 1));
        assert!(direct(&rules("EXAMPLE.COM"), "Api.Example.com.", 443), "case and a final dot do not matter");
        assert!(!direct(&rules(""), "example.com", 443));
    }

    #[test]
    fn the_configuration_wins_over_the_environment() {
        let env = |name: &str| (name == "HTTPS_PROXY").then(|| "http://envproxy:8080".to_owned());
        let s = ProxySettings::resolve(Some("http://configured:3128"), None, None, &env).unwrap();
        assert_eq!(s.proxy().unwrap().url(), "http://configured:3128");
        let s = ProxySettings::resolve(None, None, None, &env).unwrap();
        assert_eq!(s.proxy().unwrap().url(), "http://envproxy:8080");
        let lower = |name: &str| (name == "all_proxy").then(|| "proxy.corp:81".to_owned());
        assert_eq!(
            ProxySettings::resolve(None, None, None, &lower).unwrap().proxy().unwrap().url(),
            "http://proxy.corp:81"
        );
        assert!(ProxySettings::resolve(None, None, None, &|_| None).unwrap().proxy().is_none());
        let socks = |name: &str| (name == "ALL_PROXY").then(|| "socks5://s:1080".to_owned());
        let err = ProxySettings::resolve(None, None, None, &socks).unwrap_err().to_string();
        assert!(err.contains("ALL_PROXY") && err.contains("only http://"), "{err}");
    }

    #[test]
    fn inline_credentials_in_the_configuration_are_refused_without_echoing_them() {
        let err = ProxySettings::resolve(Some("http://u:hunter2@proxy:3128"), None, None, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mini-connector configure"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn proxy_urls_parse_with_credentials_decoded() {
        let url = parse_proxy_url("http://dom%5Cuser:p%40ss:w@[::1]:8080/").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.port, 8080);
        assert_eq!(url.user.as_deref(), Some("dom\\user"));
        assert_eq!(url.password.as_deref().map(String::as_str), Some("p@ss:w"));
        assert_eq!(url.without_credentials(), "http://[::1]:8080");
        assert_eq!(parse_proxy_url("proxy").unwrap().port, DEFAULT_PROXY_PORT);
        assert!(parse_proxy_url("https://proxy:443").is_err());
        assert!(parse_proxy_url("http://proxy:3128/path").is_err());
        assert!(parse_proxy_url("http://proxy:99999").is_err());
        let err = parse_proxy_url("http://u:sec%ZZret@proxy").unwrap_err().to_string();
        assert!(!err.contains("sec"), "{err}");
        assert!(
            has_credentials("http://u:p@h:1")
                && has_credentials("http://u@h")
                && !has_credentials("http://h:1")
        );
    }

    #[test]
    fn answers_to_connect_are_classified() {
        let c = |head: &str, sent| classify(head, "http://p:3128", "gw:443", sent);
        assert!(c("HTTP/1.1 200 Connection established\r\n\r\n", false).is_ok());
        assert!(c("HTTP/1.0 200 OK\r\nProxy-agent: x\r\n\r\n", false).is_ok());

        let e = c(
            "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
            true,
        )
        .unwrap_err();
        assert!(matches!(e, DialError::AuthRequired { sent_credentials: true, .. }));
        assert!(e.to_string().starts_with("proxy authentication required"), "{e}");
        assert!(e.to_string().contains("check them") && e.to_string().contains("configure --proxy"), "{e}");
        assert!(e.is_proxy_refusal());

        let e =
            c("HTTP/1.1 407 x\r\nProxy-Authenticate: NTLM\r\nProxy-Authenticate: Negotiate\r\n\r\n", false)
                .unwrap_err()
                .to_string();
        assert!(e.contains("NTLM, Negotiate") && e.contains("docs/NETWORK.md"), "{e}");

        let e =
            c("HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\n\r\n", true).unwrap_err();
        assert!(matches!(e, DialError::AuthRequired { .. }), "tinyproxy's answer to a wrong password: {e}");

        let e = c("HTTP/1.1 403 Forbidden\r\n\r\n", false).unwrap_err().to_string();
        assert!(e.contains("forbids CONNECT to gw:443"), "{e}");

        let e = c("HTTP/1.1 302 Found\r\nLocation: https://login.corp/auth?token=abc\r\n\r\n", false)
            .unwrap_err();
        assert!(matches!(&e, DialError::LoginPage { location: Some(l), .. } if l == "https://login.corp"));
        assert!(e.to_string().contains("login page") && !e.to_string().contains("token"), "{e}");

        let e = c("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 512\r\n\r\n", false)
            .unwrap_err();
        assert!(matches!(e, DialError::LoginPage { location: None, .. }), "{e}");

        let e = c("HTTP/1.1 502 Bad Gateway\r\n\r\n", false).unwrap_err().to_string();
        assert!(e.contains("refused CONNECT to gw:443: HTTP/1.1 502 Bad Gateway"), "{e}");

        let e = c("\u{16}\u{3}\u{1}garbage\r\n\r\n", false).unwrap_err();
        assert!(matches!(e, DialError::Protocol { .. }), "{e}");
    }

    #[test]
    fn basic_credentials_are_sent_and_never_shown() {
        let proxy = Proxy {
            host: "p".into(),
            port: 1,
            user: Some("alice".into()),
            password: Some(Zeroizing::new("s3cret".into())),
        };
        let header = proxy.authorization().unwrap();
        assert_eq!(header.as_str(), "Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n");
        let shown = format!("{proxy:?}");
        assert!(!shown.contains("s3cret") && shown.contains("***"), "{shown}");
    }

    #[test]
    fn an_unreachable_proxy_and_a_silent_one_are_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let settings =
            ProxySettings::resolve(Some(&format!("http://127.0.0.1:{port}")), None, None, &|_| None).unwrap();
        let route = settings.route("gw.example", 443);
        let e = dial(&route, "gw.example", 443, Instant::now() + Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, DialError::ProxyTimeout { .. }), "{e}");
        assert!(e.to_string().contains("did not answer CONNECT"), "{e}");
        drop(listener);
        let e = dial(&route, "gw.example", 443, Instant::now() + Duration::from_secs(2)).unwrap_err();
        assert!(matches!(e, DialError::ProxyUnreachable { .. }), "{e}");
        assert!(e.to_string().starts_with(&format!("cannot reach the proxy http://127.0.0.1:{port}")), "{e}");
    }
}
