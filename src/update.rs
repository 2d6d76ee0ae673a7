//! Signed updates (spec §9.3, §11.2): the update manifest, its minisign signature, the artefact
//! download through the agent's own TLS and proxy stack, and the atomic binary swap with a
//! trial run and rollback. Format and rules: docs/UPDATES.md.
//!
//! The chain of trust: `manifest.json` is signed (`manifest.json.minisig`) by a key built into
//! the binary ([`Keyring::builtin`]: the release key `packaging/keys/release.pub`; debug
//! builds also trust the test key `tests/fixtures/update/test.pub`). The manifest names the
//! version and, per platform, the artefact's URL, size and SHA-256; the artefact carries its
//! own signature (`<file>.minisig`) by the same keys. Nothing is installed unless all four
//! agree, and the manifest's version is newer than this binary's ([`current_version`]).
//!
//! Sources ([`Source`]): an HTTPS URL (the gateway's `GET /updates/…`, or any server), fetched
//! with [`crate::https::agent`] (our rustls configuration, `caCertPath`, pins when the host is
//! the cloud's, and [`crate::proxy`]'s route), or a directory holding the same files (the
//! offline package, `update apply --file`).
//!
//! Installing ([`install`]): the new binary is written next to the running one and fsynced, the
//! running one copied to `<exe>.previous`, a marker `<exe>.update-pending` written, then the new
//! file renamed over the old (one `rename`, atomic on the same file system). A trial run of the
//! new binary (`update probe`: it loads the configuration and dials, TLS-handshakes and
//! authenticates to the cloud like `doctor`) must succeed within [`TRIAL_TIMEOUT`]; if it
//! fails or hangs, `.previous` is copied back over the binary. The marker is removed once the
//! trial has passed or the rollback is done; a marker found at the next start
//! ([`recover_interrupted`]) means an update was cut off mid-way, and the previous binary is
//! restored then.
//!
//! Automatic checks ([`spawn_auto`]): an `update-check` thread, when `autoUpdate` is on, checks
//! after a random delay of 1–5 minutes from the start and then weekly; when it installed a new
//! version it asks the supervisor to stop with [`RESTART_REASON`], and `main` restarts
//! ([`restart_exit`]).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use minisign_verify::{PublicKey, Signature};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::config::AgentConfig;

/// The release signing key (public half), trusted by every build.
pub const RELEASE_KEY: &str = include_str!("../packaging/keys/release.pub");
/// The test signing key: trusted by debug builds only (its secret half is in the repository).
#[cfg(debug_assertions)]
const TEST_KEY: &str = include_str!("../tests/fixtures/update/test.pub");

/// The product name a manifest must carry.
pub const PRODUCT: &str = "mini-connector";
/// Longest a trial run of the new binary may take before it counts as failed.
pub const TRIAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest manifest or signature file read.
const SMALL_FILE_LIMIT: u64 = 256 * 1024;
/// Largest artefact accepted.
const ARTEFACT_LIMIT: u64 = 1 << 30;
/// The shutdown reason the automatic updater gives the supervisor after installing.
pub const RESTART_REASON: &str = "update installed";
/// The exit code of an agent that stops to restart as the new version (EX_TEMPFAIL): the
/// systemd unit's `Restart=on-failure` starts it again.
pub const RESTART_EXIT_CODE: u8 = 75;
/// Time between automatic checks.
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// What went wrong with an update; each variant has a stable code ([`UpdateError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The manifest, a signature or an artefact could not be fetched.
    #[error("cannot fetch {what}: {reason}")]
    Fetch { what: String, reason: String },
    /// A signature is missing, malformed, made by an untrusted key, or does not match.
    #[error("signature check failed for {what}: {reason}")]
    Signature { what: String, reason: String },
    /// The (signed) manifest is not a valid update manifest for this product and platform.
    #[error("invalid update manifest: {0}")]
    Manifest(String),
    /// The artefact's size or SHA-256 is not the manifest's.
    #[error("the downloaded artefact does not match the manifest: {0}")]
    Integrity(String),
    /// The offered version is not newer than this one.
    #[error("version {offered} is not newer than the installed {current}; nothing to install")]
    NotNewer { offered: String, current: String },
    /// `minVersion`: this version cannot update to the offered one directly.
    #[error("version {offered} needs at least {min} installed first (this is {current})")]
    TooOld { offered: String, min: String, current: String },
    /// Writing, renaming or copying the binary failed.
    #[error("cannot install the update: {0}")]
    Install(String),
    /// The new binary failed its trial run; the previous one was put back.
    #[error("the new version {version} failed its trial run and was rolled back: {reason}")]
    RolledBack { version: String, reason: String },
}

impl UpdateError {
    /// The stable code (docs/UPDATES.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Fetch { .. } => "UPDATE_FETCH_FAILED",
            Self::Signature { .. } => "UPDATE_BAD_SIGNATURE",
            Self::Manifest(_) => "UPDATE_BAD_MANIFEST",
            Self::Integrity(_) => "UPDATE_INTEGRITY",
            Self::NotNewer { .. } => "UPDATE_NOT_NEWER",
            Self::TooOld { .. } => "UPDATE_TOO_OLD",
            Self::Install(_) => "UPDATE_INSTALL_FAILED",
            Self::RolledBack { .. } => "UPDATE_ROLLED_BACK",
        }
    }

    /// Whether the files were refused as untrusted (signature, integrity, manifest).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Signature { .. } | Self::Manifest(_) | Self::Integrity(_))
    }
}

/// The keys signatures are checked against.
#[derive(Debug)]
pub struct Keyring(Vec<PublicKey>);

impl Keyring {
    /// The key texts a release build trusts: the release key only.
    pub const RELEASE: &[&str] = &[RELEASE_KEY];

    /// The keys this build trusts: [`Self::RELEASE`]; debug builds add the test key.
    pub fn builtin() -> Self {
        #[cfg(debug_assertions)]
        {
            Self::from_texts(&[RELEASE_KEY, TEST_KEY])
        }
        #[cfg(not(debug_assertions))]
        {
            Self::from_texts(Self::RELEASE)
        }
    }

    /// The keys of a release build, whatever this build is (for tests).
    pub fn release() -> Self {
        Self::from_texts(Self::RELEASE)
    }

    fn from_texts(texts: &[&str]) -> Self {
        // The texts are compiled in: a malformed one is a build error caught by the tests.
        Self(texts.iter().filter_map(|t| PublicKey::decode(t.trim()).ok()).collect())
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks `signature` (a `.minisig` text) over `data`.
    pub fn verify(&self, what: &str, data: &[u8], signature: &str) -> Result<(), UpdateError> {
        let sig = decode_signature(what, signature)?;
        let key = self.key_for(what, &sig)?;
        key.verify(data, &sig, false).map_err(|e| bad_sig(what, e))
    }

    fn key_for(&self, what: &str, sig: &Signature) -> Result<&PublicKey, UpdateError> {
        // minisign's key ids are not exposed; try each key, the id check comes first in `verify`.
        self.0
            .iter()
            .find(|k| {
                matches!(k.verify_stream(sig), Ok(_) | Err(minisign_verify::Error::UnsupportedLegacyMode))
            })
            .ok_or_else(|| UpdateError::Signature {
                what: what.into(),
                reason: "signed by a key this build does not trust".into(),
            })
    }
}

fn decode_signature(what: &str, text: &str) -> Result<Signature, UpdateError> {
    Signature::decode(text).map_err(|e| UpdateError::Signature {
        what: what.into(),
        reason: format!("not a minisign signature ({e})"),
    })
}

fn bad_sig(what: &str, e: minisign_verify::Error) -> UpdateError {
    let reason = match e {
        minisign_verify::Error::InvalidSignature => {
            "the signature does not match the file (tampered?)".into()
        }
        minisign_verify::Error::UnexpectedAlgorithm | minisign_verify::Error::UnsupportedLegacyMode => {
            "legacy (non-prehashed) minisign signatures are not accepted".into()
        }
        other => other.to_string(),
    };
    UpdateError::Signature { what: what.into(), reason }
}

/// The update manifest (`manifest.json`), docs/UPDATES.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always [`PRODUCT`].
    pub product: String,
    /// The version offered (semver).
    pub version: String,
    /// Release date (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    /// One per platform and kind.
    pub artefacts: Vec<Artefact>,
    /// The oldest version that may update to this one directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

/// One downloadable file of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artefact {
    /// `linux`, `windows`, `macos` (Rust's `std::env::consts::OS`).
    pub os: String,
    /// `x86_64`, `aarch64` (`std::env::consts::ARCH`).
    pub arch: String,
    /// `binary` (the only kind the updater installs); packages (`deb`, `rpm`, `msi`) are
    /// listed for people and IT tooling.
    pub kind: String,
    /// Absolute `https://` URL, or a file name relative to the manifest.
    pub url: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl Manifest {
    /// Parses and checks a manifest whose signature was verified.
    pub fn parse(bytes: &[u8]) -> Result<Self, UpdateError> {
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| UpdateError::Manifest(e.to_string()))?;
        if manifest.product != PRODUCT {
            return Err(UpdateError::Manifest(format!("it is for `{}`, not {PRODUCT}", manifest.product)));
        }
        parse_version(&manifest.version, "version")?;
        if let Some(min) = &manifest.min_version {
            parse_version(min, "minVersion")?;
        }
        Ok(manifest)
    }

    /// The binary for this platform.
    pub fn binary(&self) -> Result<&Artefact, UpdateError> {
        let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
        let artefact =
            self.artefacts.iter().find(|a| a.os == os && a.arch == arch && a.kind == "binary").ok_or_else(
                || UpdateError::Manifest(format!("no binary for {os}/{arch} in version {}", self.version)),
            )?;
        if artefact.sha256.len() != 64 || hex::decode(&artefact.sha256).is_err() {
            return Err(UpdateError::Manifest(format!(
                "artefact {}: sha256 is not 64 hex digits",
                artefact.url
            )));
        }
        if artefact.size == 0 || artefact.size > ARTEFACT_LIMIT {
            return Err(UpdateError::Manifest(format!(
                "artefact {}: size {} out of range",
                artefact.url, artefact.size
            )));
        }
        Ok(artefact)
    }

    /// Refuses a version that is not newer than `current`, or that needs a newer `current`.
    pub fn check_newer(&self, current: &semver::Version) -> Result<semver::Version, UpdateError> {
        let offered = parse_version(&self.version, "version")?;
        if offered <= *current {
            return Err(UpdateError::NotNewer { offered: offered.to_string(), current: current.to_string() });
        }
        if let Some(min) = &self.min_version {
            let min = parse_version(min, "minVersion")?;
            if *current < min {
                return Err(UpdateError::TooOld {
                    offered: offered.to_string(),
                    min: min.to_string(),
                    current: current.to_string(),
                });
            }
        }
        Ok(offered)
    }
}

fn parse_version(text: &str, field: &str) -> Result<semver::Version, UpdateError> {
    semver::Version::parse(text).map_err(|e| UpdateError::Manifest(format!("{field} `{text}`: {e}")))
}

/// This binary's version: `CARGO_PKG_VERSION`; debug builds honour `MC_TEST_VERSION_OVERRIDE`
/// (the tests play an old agent with it).
pub fn current_version() -> semver::Version {
    #[cfg(debug_assertions)]
    if let Ok(text) = std::env::var("MC_TEST_VERSION_OVERRIDE")
        && let Ok(version) = semver::Version::parse(&text)
    {
        return version;
    }
    semver::Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

/// Where the update files come from.
#[derive(Debug)]
pub enum Source {
    /// The manifest's HTTPS URL; artefacts relative to it.
    Url { manifest: String, http: ureq::Agent },
    /// A directory with `manifest.json`, its signature and the artefacts (the offline package).
    Dir(PathBuf),
}

impl Source {
    /// The manifest URL for `config`: `updateUrl`, else `https://<cloudUrl's host[:port]>/updates/manifest.json`.
    pub fn manifest_url(config: &AgentConfig, url: Option<&str>) -> String {
        if let Some(url) = url.or(config.update_url.as_deref()) {
            return url.to_owned();
        }
        let authority = config
            .cloud_url
            .parse::<ureq::http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
            .unwrap_or_default();
        format!("https://{authority}/updates/manifest.json")
    }

    /// An HTTPS source through the agent's TLS configuration and proxy route. The cloud's
    /// `pinnedSpki` apply when the update host is the cloud's host.
    pub fn https(config: &AgentConfig, url: &str) -> Result<Self, UpdateError> {
        let fetch = |reason: String| UpdateError::Fetch { what: url.to_owned(), reason };
        if !url.starts_with("https://") {
            return Err(fetch("the update URL must be https://".into()));
        }
        let host = |u: &str| u.parse::<ureq::http::Uri>().ok().and_then(|u| u.host().map(str::to_owned));
        let tls = if host(url) == host(&config.cloud_url) {
            crate::tls::for_agent(config)
        } else {
            crate::tls::client_config(config.ca_cert_path.as_deref())
        }
        .map_err(|e| fetch(e.to_string()))?;
        let proxy = crate::proxy::ProxySettings::from_config(config).map_err(|e| fetch(e.to_string()))?;
        let http =
            crate::https::agent(tls, proxy, Duration::from_secs(600)).map_err(|e| fetch(e.to_string()))?;
        Ok(Self::Url { manifest: url.to_owned(), http })
    }

    /// A directory, or the `manifest.json` inside one.
    pub fn dir(path: &Path) -> Self {
        if path.is_file() {
            Self::Dir(path.parent().map(Path::to_owned).unwrap_or_else(|| PathBuf::from(".")))
        } else {
            Self::Dir(path.to_owned())
        }
    }

    /// A human name of where the manifest is.
    pub fn describe(&self) -> String {
        match self {
            Self::Url { manifest, .. } => manifest.clone(),
            Self::Dir(dir) => dir.join("manifest.json").display().to_string(),
        }
    }

    /// The location of `name` (an artefact URL from the manifest, or a `.minisig` next to one).
    fn locate(&self, name: &str) -> Result<Location, UpdateError> {
        match self {
            Self::Url { manifest, .. } => {
                if name.starts_with("https://") {
                    return Ok(Location::Url(name.to_owned()));
                }
                if name.contains("://") || name.starts_with('/') || name.split('/').any(|s| s == "..") {
                    return Err(UpdateError::Manifest(format!(
                        "artefact URL `{name}` is neither https:// nor relative"
                    )));
                }
                let base = manifest.rsplit_once('/').map_or(manifest.as_str(), |(b, _)| b);
                Ok(Location::Url(format!("{base}/{name}")))
            }
            Self::Dir(dir) => {
                // Offline: the file of that name next to the manifest, whatever host the URL names.
                let file = name.rsplit('/').next().unwrap_or_default();
                if file.is_empty() || file == ".." || file == "." {
                    return Err(UpdateError::Manifest(format!("artefact URL `{name}` names no file")));
                }
                Ok(Location::File(dir.join(file)))
            }
        }
    }

    fn open(
        &self,
        location: &Location,
        limit: u64,
    ) -> Result<(Box<dyn Read + Send>, Option<u64>), UpdateError> {
        match (self, location) {
            (Self::Url { http, .. }, Location::Url(url)) => {
                let fetch = |reason: String| UpdateError::Fetch { what: url.clone(), reason };
                let response = http.get(url).call().map_err(|e| fetch(e.to_string()))?;
                let status = response.status().as_u16();
                if status != 200 {
                    return Err(fetch(format!("HTTP {status}")));
                }
                let len = response
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                Ok((Box::new(response.into_body().into_reader().take(limit + 1)), len))
            }
            (_, Location::File(path)) => {
                let file = File::open(path).map_err(|e| UpdateError::Fetch {
                    what: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let len = file.metadata().ok().map(|m| m.len());
                Ok((Box::new(file.take(limit + 1)), len))
            }
            (Self::Dir(_), Location::Url(_)) => unreachable!("a directory source locates files only"),
        }
    }

    fn read_small(&self, location: &Location) -> Result<Vec<u8>, UpdateError> {
        let (mut reader, _) = self.open(location, SMALL_FILE_LIMIT)?;
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| UpdateError::Fetch { what: location.to_string(), reason: e.to_string() })?;
        if bytes.len() as u64 > SMALL_FILE_LIMIT {
            return Err(UpdateError::Fetch {
                what: location.to_string(),
                reason: "larger than 256 KiB".into(),
            });
        }
        Ok(bytes)
    }
}

#[derive(Debug)]
enum Location {
    Url(String),
    File(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(url) => f.write_str(url),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Fetches `manifest.json` and its signature and checks both.
pub fn fetch_manifest(source: &Source, keys: &Keyring) -> Result<Manifest, UpdateError> {
    let location = match source {
        Source::Url { manifest, .. } => Location::Url(manifest.clone()),
        Source::Dir(dir) => Location::File(dir.join("manifest.json")),
    };
    let bytes = source.read_small(&location)?;
    let sig_location = match &location {
        Location::Url(url) => Location::Url(format!("{url}.minisig")),
        Location::File(path) => Location::File(PathBuf::from(format!("{}.minisig", path.display()))),
    };
    let signature = source.read_small(&sig_location).map_err(|e| UpdateError::Signature {
        what: "the manifest".into(),
        reason: format!("no signature file: {e}"),
    })?;
    keys.verify("the manifest", &bytes, &String::from_utf8_lossy(&signature))?;
    Manifest::parse(&bytes)
}

/// What `update check` found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Where the manifest was read.
    pub source: String,
    /// This binary's version.
    pub current: String,
    /// The manifest's version.
    pub latest: String,
    /// Whether `latest` is newer and installable here.
    pub update_available: bool,
    /// Why it is not installable, when it is newer but is not (`minVersion`, no binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Reads and verifies the manifest and compares it with this version.
pub fn check(source: &Source, keys: &Keyring) -> Result<(Manifest, CheckReport), UpdateError> {
    let manifest = fetch_manifest(source, keys)?;
    let current = current_version();
    let mut report = CheckReport {
        source: source.describe(),
        current: current.to_string(),
        latest: manifest.version.clone(),
        update_available: false,
        note: None,
    };
    match manifest.check_newer(&current).and_then(|_| manifest.binary().map(|_| ())) {
        Ok(()) => report.update_available = true,
        Err(UpdateError::NotNewer { .. }) => {}
        Err(e) => report.note = Some(e.to_string()),
    }
    Ok((manifest, report))
}

/// Downloads the binary `manifest` names for this platform into `dest` (created, 0755),
/// checking its size, SHA-256 and signature while streaming; `dest` is removed on failure.
pub fn download(
    source: &Source,
    keys: &Keyring,
    manifest: &Manifest,
    dest: &Path,
) -> Result<(), UpdateError> {
    let result = download_inner(source, keys, manifest, dest);
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

fn download_inner(
    source: &Source,
    keys: &Keyring,
    manifest: &Manifest,
    dest: &Path,
) -> Result<(), UpdateError> {
    let artefact = manifest.binary()?;
    let what = format!("artefact {}", artefact.url);
    let signature_text =
        source.read_small(&source.locate(&format!("{}.minisig", artefact.url))?).map_err(|e| {
            UpdateError::Signature { what: what.clone(), reason: format!("no signature file: {e}") }
        })?;
    let signature = decode_signature(&what, &String::from_utf8_lossy(&signature_text))?;
    let key = keys.key_for(&what, &signature)?;
    let mut verifier = key.verify_stream(&signature).map_err(|e| bad_sig(&what, e))?;
    let (mut reader, _) = source.open(&source.locate(&artefact.url)?, artefact.size)?;
    let install = |e: std::io::Error| UpdateError::Install(format!("{}: {e}", dest.display()));
    let mut file = new_executable(dest).map_err(install)?;
    let mut sha = sha2::Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| UpdateError::Fetch { what: artefact.url.clone(), reason: e.to_string() })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > artefact.size {
            return Err(UpdateError::Integrity(format!(
                "{} is larger than the manifest's {} bytes",
                artefact.url, artefact.size
            )));
        }
        sha.update(&buf[..n]);
        verifier.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(install)?;
    }
    if total != artefact.size {
        return Err(UpdateError::Integrity(format!(
            "{} has {total} bytes, the manifest says {}",
            artefact.url, artefact.size
        )));
    }
    let digest = hex::encode(sha.finalize());
    if !digest.eq_ignore_ascii_case(&artefact.sha256) {
        return Err(UpdateError::Integrity(format!(
            "{}: SHA-256 {digest}, the manifest says {}",
            artefact.url, artefact.sha256
        )));
    }
    verifier.finalize().map_err(|e| bad_sig(&what, e))?;
    file.sync_all().map_err(install)?;
    Ok(())
}

fn new_executable(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o755);
    }
    options.open(path)
}

/// Paths around the installed binary.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The binary that is replaced.
    pub exe: PathBuf,
}

impl Paths {
    /// The running binary (its path as started, links resolved). Debug builds honour
    /// `MC_TEST_UPDATE_EXE` (the tests update a small stand-in instead of copying the
    /// 300 MB debug binary several times per test).
    pub fn current() -> Result<Self, UpdateError> {
        #[cfg(debug_assertions)]
        if let Some(exe) = std::env::var_os("MC_TEST_UPDATE_EXE") {
            return Ok(Self { exe: PathBuf::from(exe) });
        }
        let exe = std::env::current_exe()
            .map_err(|e| UpdateError::Install(format!("cannot find this binary: {e}")))?;
        let exe = exe.canonicalize().unwrap_or(exe);
        Ok(Self { exe })
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.exe.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.exe.with_file_name(name)
    }

    /// `<exe>.previous`: the binary before the last update.
    pub fn previous(&self) -> PathBuf {
        self.sibling(".previous")
    }

    /// `<exe>.update-pending`: present from just before the swap until the trial passed or the
    /// rollback is done.
    pub fn marker(&self) -> PathBuf {
        self.sibling(".update-pending")
    }

    /// Where the download is staged (same directory, so the swap is a rename).
    pub fn staged(&self) -> PathBuf {
        self.sibling(&format!(".download-{}", std::process::id()))
    }
}

/// Swaps `staged` in for `paths.exe`, runs `trial` on the new binary, and rolls back if it
/// fails. `version` is the new binary's, for the marker and messages.
pub fn install(
    paths: &Paths,
    staged: &Path,
    version: &str,
    trial: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), UpdateError> {
    let io = |what: &str, e: std::io::Error| UpdateError::Install(format!("{what}: {e}"));
    // Keep the running binary as `.previous` (copied through a temporary name: atomic).
    copy_atomic(&paths.exe, &paths.previous()).map_err(|e| io("keeping the previous binary", e))?;
    let marker = serde_json::json!({ "from": current_version().to_string(), "to": version });
    crate::secrets::write_atomic(&paths.marker(), marker.to_string().as_bytes())
        .map_err(|e| io("writing the update marker", e))?;
    if let Err(e) = std::fs::rename(staged, &paths.exe) {
        let _ = std::fs::remove_file(paths.marker());
        return Err(io("replacing the binary", e));
    }
    sync_dir(&paths.exe);
    tracing::info!(version, exe = %paths.exe.display(), "new binary in place; trial run");
    match trial(&paths.exe) {
        Ok(()) => {
            let _ = std::fs::remove_file(paths.marker());
            sync_dir(&paths.exe);
            Ok(())
        }
        Err(reason) => {
            rollback(paths)?;
            Err(UpdateError::RolledBack { version: version.to_owned(), reason })
        }
    }
}

/// Puts `<exe>.previous` back in place of the binary and removes the marker.
pub fn rollback(paths: &Paths) -> Result<(), UpdateError> {
    copy_atomic(&paths.previous(), &paths.exe)
        .map_err(|e| UpdateError::Install(format!("restoring {}: {e}", paths.previous().display())))?;
    let _ = std::fs::remove_file(paths.marker());
    sync_dir(&paths.exe);
    tracing::warn!(exe = %paths.exe.display(), "update rolled back to the previous binary");
    Ok(())
}

/// At an agent's start: a marker left behind means an update was cut off before its trial
/// passed; the previous binary is restored. Returns whether it was (the caller restarts).
pub fn recover_interrupted(paths: &Paths) -> Result<bool, UpdateError> {
    if !paths.marker().exists() {
        return Ok(false);
    }
    if !paths.previous().exists() {
        let _ = std::fs::remove_file(paths.marker());
        return Ok(false);
    }
    rollback(paths)?;
    Ok(true)
}

fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = to.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(from, &tmp)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, to).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    sync_dir(to);
    Ok(())
}

fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent()
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The trial: runs `<exe> update probe --config <config>` and waits up to `timeout` for exit
/// code 0 (the new binary started, loaded the configuration and authenticated to the cloud).
pub fn trial_run(exe: &Path, config_path: &Path, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new(exe)
        .args(["update", "probe", "--config"])
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = s.by_ref().take(16 * 1024).read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => break None,
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("it did not start and connect within {} s", timeout.as_secs()));
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        Err(format!(
            "it exited with {status}{}",
            if last.is_empty() { String::new() } else { format!(": {last}") }
        ))
    }
}

/// `update probe`: whether this binary can load `config_path` and reach and authenticate to
/// the cloud (doctor's steps up to `auth`; databases and the clock are not judged).
pub fn probe(config_path: &Path) -> Result<(), String> {
    let report = crate::doctor::run(config_path);
    let cloud = ["config", "dns", "proxy", "tcp", "tls", "websocket", "auth"];
    if let Some(step) = report
        .steps
        .iter()
        .find(|s| cloud.contains(&s.name.as_str()) && s.status == crate::protocol::control::StepStatus::Fail)
    {
        return Err(format!("{}: {}", step.name, step.detail));
    }
    if !report
        .steps
        .iter()
        .any(|s| s.name == "auth" && s.status != crate::protocol::control::StepStatus::Fail)
    {
        return Err("the cloud was not reached".into());
    }
    Ok(())
}

/// What [`apply`] did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The version before.
    pub from: String,
    /// The version installed.
    pub to: String,
    /// The binary replaced.
    pub exe: PathBuf,
    /// Where the previous binary was kept.
    pub previous: PathBuf,
}

/// The whole update: verify the manifest, refuse a downgrade, download and verify the
/// artefact next to the binary, swap it in, trial-run it against `config_path`, roll back on
/// failure.
pub fn apply(
    source: &Source,
    keys: &Keyring,
    paths: &Paths,
    config_path: &Path,
    trial_timeout: Duration,
) -> Result<Applied, UpdateError> {
    let manifest = fetch_manifest(source, keys)?;
    let current = current_version();
    let offered = manifest.check_newer(&current)?;
    let staged = paths.staged();
    let _ = std::fs::remove_file(&staged);
    download(source, keys, &manifest, &staged)?;
    install(paths, &staged, &offered.to_string(), |exe| trial_run(exe, config_path, trial_timeout))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&staged);
        })?;
    Ok(Applied {
        from: current.to_string(),
        to: offered.to_string(),
        exe: paths.exe.clone(),
        previous: paths.previous(),
    })
}

/// The trial timeout: [`TRIAL_TIMEOUT`]; debug builds honour `MC_TEST_TRIAL_TIMEOUT_MS`.
pub fn trial_timeout() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("MC_TEST_TRIAL_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()) {
        return Duration::from_millis(ms);
    }
    TRIAL_TIMEOUT
}

/// The automatic updater (`autoUpdate: true`): an `update-check` thread that checks after a
/// random 1–5 minute delay (debug builds: `MC_TEST_UPDATE_DELAY_MS`) and weekly after that.
/// When it installed a version it sends the supervisor a shutdown with [`RESTART_REASON`].
/// Failures are logged; the agent keeps running either way. The thread ends with the agent
/// (`stop` closes it).
#[derive(Debug)]
pub struct AutoUpdater {
    stop: crossbeam_channel::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for AutoUpdater {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the [`AutoUpdater`] for the agent of `config_path`.
pub fn spawn_auto(
    config_path: &Path,
    config: &AgentConfig,
    inbox: crossbeam_channel::Sender<crate::supervisor::SupMsg>,
    grace: Duration,
) -> std::io::Result<AutoUpdater> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
    let config_path = config_path.to_owned();
    let config = config.clone();
    let mut delay = first_delay();
    let thread = crate::spawn_named("update-check", move || {
        loop {
            match stopped.recv_timeout(delay) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            delay = WEEK;
            if auto_once(&config_path, &config) {
                let _ =
                    inbox.send(crate::supervisor::SupMsg::Shutdown { reason: RESTART_REASON.into(), grace });
                return;
            }
        }
    })?;
    Ok(AutoUpdater { stop, thread: Some(thread) })
}

fn first_delay() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("MC_TEST_UPDATE_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        return Duration::from_millis(ms);
    }
    Duration::from_secs(60 + u64::from(rand::random::<u32>() % 240))
}

/// One automatic check; whether a new version was installed.
fn auto_once(config_path: &Path, config: &AgentConfig) -> bool {
    let url = Source::manifest_url(config, None);
    let result = Source::https(config, &url).and_then(|source| {
        let paths = Paths::current()?;
        apply(&source, &Keyring::builtin(), &paths, config_path, trial_timeout())
    });
    match result {
        Ok(applied) => {
            tracing::warn!(from = %applied.from, to = %applied.to, "update installed; restarting as the new version");
            true
        }
        Err(UpdateError::NotNewer { current, .. }) => {
            tracing::info!(%current, source = %url, "no update: this is the latest version");
            false
        }
        Err(UpdateError::Fetch { reason, .. }) if reason == "HTTP 404" => {
            tracing::info!(source = %url, "no update published there");
            false
        }
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e, source = %url, "update check failed");
            false
        }
    }
}

/// After a shutdown with [`RESTART_REASON`] (or a rollback at start): under a service manager
/// (systemd's `INVOCATION_ID`, or `MC_RESTART_BY_EXIT=1`) exit with [`RESTART_EXIT_CODE`], which the unit's
/// `Restart=on-failure` restarts; in a foreground run, replace this process with the binary on
/// disk (same arguments). Returns the exit code when it could not re-exec.
pub fn restart_exit() -> u8 {
    let service = std::env::var_os("INVOCATION_ID").is_some()
        || std::env::var("MC_RESTART_BY_EXIT").as_deref() == Ok("1");
    #[cfg(unix)]
    if !service && let Ok(paths) = Paths::current() {
        use std::os::unix::process::CommandExt as _;
        let error = Command::new(&paths.exe).args(std::env::args_os().skip(1)).exec();
        tracing::error!(%error, "cannot start the new binary; exiting for the service manager");
    }
    let _ = service;
    RESTART_EXIT_CODE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_build_trusts_the_release_key_only() {
        // `Keyring::builtin` is `Keyring::RELEASE` under `not(debug_assertions)`; the list
        // holds exactly packaging/keys/release.pub.
        assert_eq!(Keyring::RELEASE, &[include_str!("../packaging/keys/release.pub")]);
        assert_eq!(Keyring::release().len(), 1);
        // The test key's signature does not verify against the release keys.
        let dir = std::env::temp_dir().join(format!("mc-update-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("data");
        std::fs::write(&file, b"hello").unwrap();
        let signed = Command::new("minisign")
            .args(["-S", "-s"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/update/test.key"))
            .arg("-m")
            .arg(&file)
            .status();
        if let Ok(status) = signed
            && status.success()
        {
            let sig = std::fs::read_to_string(dir.join("data.minisig")).unwrap();
            let err = Keyring::release().verify("data", b"hello", &sig).unwrap_err();
            assert_eq!(err.code(), "UPDATE_BAD_SIGNATURE");
            assert!(err.to_string().contains("does not trust"), "{err}");
            #[cfg(debug_assertions)]
            Keyring::builtin().verify("data", b"hello", &sig).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn builtin_keys_decode() {
        #[cfg(debug_assertions)]
        assert_eq!(Keyring::builtin().len(), 2);
        #[cfg(not(debug_assertions))]
        assert_eq!(Keyring::builtin().len(), 1);
    }

    #[test]
    fn versions_compare_by_semver() {
        let manifest = |v: &str, min: Option<&str>| Manifest {
            product: PRODUCT.into(),
            version: v.into(),
            released: None,
            artefacts: vec![],
            min_version: min.map(Into::into),
        };
        let current = semver::Version::parse("0.10.0").unwrap();
        assert_eq!(manifest("0.9.9", None).check_newer(&current).unwrap_err().code(), "UPDATE_NOT_NEWER");
        assert_eq!(manifest("0.10.0", None).check_newer(&current).unwrap_err().code(), "UPDATE_NOT_NEWER");
        assert_eq!(manifest("0.10.1-rc.1", None).check_newer(&current).unwrap().to_string(), "0.10.1-rc.1");
        assert_eq!(
            manifest("1.0.0", Some("0.11.0")).check_newer(&current).unwrap_err().code(),
            "UPDATE_TOO_OLD"
        );
        assert!(Manifest::parse(br#"{"product":"other","version":"1.0.0","artefacts":[]}"#).is_err());
    }

    #[test]
    fn relative_artefact_urls_stay_under_the_manifest() {
        let http = ureq::Agent::new_with_defaults();
        let source = Source::Url { manifest: "https://h:1/updates/manifest.json".into(), http };
        assert_eq!(source.locate("mc-linux").unwrap().to_string(), "https://h:1/updates/mc-linux");
        for bad in ["../x", "http://h/x", "/etc/passwd", "a/../../x"] {
            assert!(source.locate(bad).is_err(), "{bad}");
        }
        let dir = Source::Dir(PathBuf::from("/pkg"));
        assert_eq!(dir.locate("https://h/updates/mc-linux").unwrap().to_string(), "/pkg/mc-linux");
    }
}
