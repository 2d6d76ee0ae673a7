//! File system work: the lock, atomic replacement, owner-only permissions.
//!
//! **Invariant:** every file and directory this crate creates is readable by its owner only
//! (Unix 0600/0700; Windows an ACL with the current user and SYSTEM, inheritance removed) and,
//! when created by root inside a directory owned by another user (`sudo mini-connector db add`
//! on a service's state directory), is handed to that directory's owner so the service can
//! still read it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::VaultError;
use crate::format::MAX_FILE_LEN;

/// Name of the lock file next to the vault. Never deleted: deleting a lock file races.
const LOCK_FILE: &str = "vault.lock";

/// Creates the vault directory (owner-only) if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), VaultError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(VaultError::io(dir))?;
    #[cfg(unix)]
    adopt_parent_owner(dir)?;
    #[cfg(windows)]
    acl::restrict_to_owner(dir, true)?;
    Ok(())
}

/// An advisory lock on `<dir>/vault.lock`, released on drop (or when the process dies).
#[derive(Debug)]
pub(crate) struct Lock(#[allow(dead_code, reason = "held for its Drop")] File);

impl Lock {
    /// Blocks until this process holds the lock: `exclusive` for read-modify-write, shared
    /// for reads (on Windows a file cannot be replaced while another process reads it).
    pub(crate) fn acquire(dir: &Path, exclusive: bool) -> Result<Self, VaultError> {
        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(VaultError::io(&path))?;
        #[cfg(unix)]
        adopt_dir_owner(&path, dir)?;
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(VaultError::io(&path))?;
        Ok(Self(file))
    }
}

/// Reads a whole file; `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, VaultError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(VaultError::io(path)(e)),
    };
    let len = file.metadata().map_err(VaultError::io(path))?.len();
    if len > MAX_FILE_LEN {
        return Err(VaultError::Format { reason: "file is implausibly large" });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    io::Read::read_to_end(&mut file, &mut bytes).map_err(VaultError::io(path))?;
    Ok(Some(bytes))
}

/// Replaces `<dir>/<name>` with `bytes` atomically: a temporary file in the same directory
/// (owner-only from the start), fsync, rename over the target, fsync the directory. Readers see
/// the old file or the new one, never a mix. Call with the exclusive [`Lock`] held.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), VaultError> {
    let prefix = format!(".{name}.tmp-");
    remove_stale_temporaries(dir, &prefix);
    let mut suffix = [0u8; 8];
    crate::crypto::fill_random(&mut suffix)?;
    let temp = dir.join(format!("{prefix}{}-{}", std::process::id(), hex(&suffix)));
    let target = dir.join(name);
    let result = write_new(&temp, dir, bytes)
        .and_then(|()| fs::rename(&temp, &target).map_err(VaultError::io(&target)))
        .and_then(|()| sync_dir(dir));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_new(temp: &Path, dir: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(temp).map_err(VaultError::io(temp))?;
    // Permissions and owner are settled before the first byte is written.
    #[cfg(unix)]
    adopt_dir_owner(temp, dir)?;
    #[cfg(windows)]
    acl::restrict_to_owner(temp, false)?;
    #[cfg(not(unix))]
    let _ = dir;
    file.write_all(bytes).map_err(VaultError::io(temp))?;
    file.sync_all().map_err(VaultError::io(temp))
}

/// With the exclusive lock held no writer is mid-write, so any temporary file is a crash leftover.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(listing) = fs::read_dir(dir) else { return };
    for entry in listing.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(VaultError::io(dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), VaultError> {
    // Windows cannot open a directory as a File for flushing; NTFS journals the rename.
    Ok(())
}

/// Removes group and other permissions from an existing vault file (Unix); on Windows the ACL
/// was set when the file was written.
pub(crate) fn tighten(path: &Path) -> Result<(), VaultError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(VaultError::io(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(VaultError::io(path))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Removes group and other permissions from an existing directory this process owns (Unix): a
/// key directory that was created loose, or loosened, is made owner-only again. A directory
/// owned by someone else is left as it is.
pub(crate) fn tighten_dir(dir: &Path) -> Result<(), VaultError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(dir).map_err(VaultError::io(dir))?;
        if meta.permissions().mode() & 0o077 != 0 {
            match fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
                // Not ours: not ours to change.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                other => other.map_err(VaultError::io(dir))?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Renames a file that can no longer be read out of the way, keeping it for inspection.
pub(crate) fn set_aside(path: &Path) -> Result<Option<PathBuf>, VaultError> {
    if !path.exists() {
        return Ok(None);
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".unreadable-{secs}"));
    let aside = PathBuf::from(aside);
    fs::rename(path, &aside).map_err(VaultError::io(path))?;
    Ok(Some(aside))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file root just created inside `dir` goes to `dir`'s owner (see the module invariant).
/// Non-root processes create files as themselves and never change owners.
#[cfg(unix)]
fn adopt_dir_owner(path: &Path, dir: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::MetadataExt;
    let file = fs::symlink_metadata(path).map_err(VaultError::io(path))?;
    if file.uid() != 0 {
        return Ok(());
    }
    let owner = fs::metadata(dir).map_err(VaultError::io(dir))?;
    if owner.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).map_err(|e| {
        VaultError::Permissions {
            path: path.to_owned(),
            reason: format!("chown to the directory owner: {e}"),
        }
    })
}

#[cfg(unix)]
fn adopt_parent_owner(dir: &Path) -> Result<(), VaultError> {
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => adopt_dir_owner(dir, parent),
        None => Ok(()),
    }
}

/// Owner-only ACLs on Windows, through the system's `icacls` (this crate forbids `unsafe`, and
/// the Win32 security API is all `unsafe`). Compiled by the cross-check, not run here.
#[cfg(windows)]
mod acl {
    use std::os::windows::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    use crate::VaultError;

    /// Do not flash a console window when the GUI build spawns a tool.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    /// LocalSystem, the account Windows services run as by default.
    const SYSTEM_SID: &str = "S-1-5-18";

    fn system_tool(name: &str) -> PathBuf {
        let root = std::env::var_os("SystemRoot").map(PathBuf::from);
        root.unwrap_or_else(|| PathBuf::from(r"C:\Windows")).join("System32").join(name)
    }

    /// The SID of the account this process runs as, from `whoami /user /fo csv /nh`
    /// (`"host\user","S-1-5-21-…"`).
    fn current_user_sid() -> Result<&'static str, String> {
        static SID: OnceLock<Result<String, String>> = OnceLock::new();
        let sid = SID.get_or_init(|| {
            let out = Command::new(system_tool("whoami.exe"))
                .args(["/user", "/fo", "csv", "/nh"])
                .creation_flags(CREATE_NO_WINDOW)
                .output()
                .map_err(|e| format!("whoami: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            parse_whoami_sid(&text).ok_or_else(|| "whoami printed no SID".to_owned())
        });
        sid.as_deref().map_err(Clone::clone)
    }

    pub(super) fn parse_whoami_sid(text: &str) -> Option<String> {
        let field = text.trim().rsplit(',').next()?.trim().trim_matches('"');
        field.starts_with("S-1-").then(|| field.to_owned())
    }

    /// Replaces the ACL of `path` with full control for the current user and SYSTEM only,
    /// inherited by children when `dir`.
    pub(crate) fn restrict_to_owner(path: &Path, dir: bool) -> Result<(), VaultError> {
        let fail = |reason: String| VaultError::Permissions { path: path.to_owned(), reason };
        let sid = current_user_sid().map_err(fail)?;
        let inherit = if dir { "(OI)(CI)" } else { "" };
        let out = Command::new(system_tool("icacls.exe"))
            .arg(path)
            .args(["/inheritance:r", "/grant:r"])
            .arg(format!("*{sid}:{inherit}F"))
            .arg(format!("*{SYSTEM_SID}:{inherit}F"))
            .arg("/q")
            .creation_flags(CREATE_NO_WINDOW)
            .output()
            .map_err(|e| fail(format!("icacls: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!("icacls exited with {}", out.status)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(windows)]
    #[test]
    fn whoami_csv_is_parsed() {
        let text = "\"desktop-1\\bob\",\"S-1-5-21-1-2-3-1001\"\r\n";
        assert_eq!(super::acl::parse_whoami_sid(text).as_deref(), Some("S-1-5-21-1-2-3-1001"));
        assert_eq!(super::acl::parse_whoami_sid("garbage"), None);
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(super::hex(&[0, 0xab, 7]), "00ab07");
    }
}
