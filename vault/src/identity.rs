//! Where the machine identity comes from.

use std::fmt;

use zeroize::Zeroizing;

use crate::VaultError;

/// A source of this machine's identity, one of the inputs of the vault key.
///
/// Production uses [`SystemIdentity`]. Tests use [`FixedIdentity`] to play "this machine" and
/// "another machine".
pub trait MachineIdentity {
    /// A stable identifier of this machine. Not secret on its own (other local users can usually
    /// read it), but it is key material here, so this crate never logs or returns it in errors.
    fn machine_id(&self) -> Result<Zeroizing<String>, VaultError>;

    /// An identifier of the hardware that ordinary local users cannot read, when this process
    /// can: extra key material for new vaults (recorded in the vault, so a vault made with it
    /// needs it ever after). `None` when there is none or it is unreadable here.
    fn hardware_id(&self) -> Result<Option<Zeroizing<String>>, VaultError> {
        Ok(None)
    }
}

/// The operating system's machine identity.
///
/// - Linux and other Unix: `/etc/machine-id`, else `/var/lib/dbus/machine-id`.
/// - Windows: `MachineGuid` under `HKLM\SOFTWARE\Microsoft\Cryptography` (64-bit view).
/// - macOS: `IOPlatformUUID` from `ioreg -rd1 -c IOPlatformExpertDevice`.
///
/// Machines cloned from one image can share this value (containers, VM templates); the random
/// install id stored next to the vault and the install secret stored outside it still tell
/// them apart.
///
/// Hardware id (Linux only): the firmware's system UUID, `/sys/class/dmi/id/product_uuid`,
/// readable by root only on most distributions, so a vault created by root or by the service
/// is bound to the hardware and a disk image or backup does not open elsewhere. The systemd
/// unit hands it to the unprivileged service as the credential `product_uuid`
/// (`$CREDENTIALS_DIRECTORY/product_uuid`), which is read first.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemIdentity;

impl MachineIdentity for SystemIdentity {
    fn machine_id(&self) -> Result<Zeroizing<String>, VaultError> {
        let id = os::read()?;
        normalize(id)
    }

    fn hardware_id(&self) -> Result<Option<Zeroizing<String>>, VaultError> {
        #[cfg(target_os = "linux")]
        {
            let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|dir| std::path::PathBuf::from(dir).join(HARDWARE_ID_CREDENTIAL));
            Ok(read_hardware_id(credential.as_deref(), std::path::Path::new(PRODUCT_UUID)))
        }
        #[cfg(not(target_os = "linux"))]
        Ok(None)
    }
}

/// The firmware's system UUID (Linux, root-only on most distributions).
pub const PRODUCT_UUID: &str = "/sys/class/dmi/id/product_uuid";
/// Name of the systemd credential carrying [`PRODUCT_UUID`] to the service.
pub const HARDWARE_ID_CREDENTIAL: &str = "product_uuid";

/// The first readable, non-empty value of `credential` then `sysfs`, trimmed and lowercased.
/// Unreadable (not root, no DMI in containers) is `None`, not an error: the vault records
/// whether it was bound to it. The credential `none` is the unit's `SetCredential=` default for
/// machines without the file: also `None`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn read_hardware_id(
    credential: Option<&std::path::Path>,
    sysfs: &std::path::Path,
) -> Option<Zeroizing<String>> {
    credential.into_iter().chain(std::iter::once(sysfs)).find_map(|path| {
        let text = Zeroizing::new(std::fs::read_to_string(path).ok()?);
        let id = text.trim();
        (!id.is_empty() && id != "none").then(|| Zeroizing::new(id.to_ascii_lowercase()))
    })
}

/// A fixed identity: tests ("this machine" vs "another machine") and tools that must pin one.
#[derive(Clone)]
pub struct FixedIdentity {
    machine: Zeroizing<String>,
    hardware: Option<Zeroizing<String>>,
}

impl FixedIdentity {
    /// An identity with this machine id and no readable hardware id.
    pub fn new(id: impl Into<String>) -> Self {
        Self { machine: Zeroizing::new(id.into()), hardware: None }
    }

    /// The same identity with a readable hardware id (as root, or the service, would see it).
    pub fn with_hardware_id(mut self, id: impl Into<String>) -> Self {
        self.hardware = Some(Zeroizing::new(id.into()));
        self
    }
}

impl MachineIdentity for FixedIdentity {
    fn machine_id(&self) -> Result<Zeroizing<String>, VaultError> {
        normalize(Zeroizing::new(self.machine.to_string()))
    }

    fn hardware_id(&self) -> Result<Option<Zeroizing<String>>, VaultError> {
        Ok(self.hardware.clone())
    }
}

impl fmt::Debug for FixedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FixedIdentity(***)")
    }
}

/// Trims whitespace and refuses values that identify nothing.
fn normalize(raw: Zeroizing<String>) -> Result<Zeroizing<String>, VaultError> {
    let trimmed = raw.trim();
    // systemd writes "uninitialized" into /etc/machine-id during first boot.
    if trimmed.is_empty() || trimmed == "uninitialized" {
        return Err(VaultError::MachineIdentity { reason: "machine identity is empty".into() });
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

fn fail(reason: impl fmt::Display) -> VaultError {
    VaultError::MachineIdentity { reason: reason.to_string() }
}

#[cfg(all(unix, not(target_os = "macos")))]
mod os {
    use zeroize::Zeroizing;

    use super::fail;
    use crate::VaultError;

    const SOURCES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

    pub(super) fn read() -> Result<Zeroizing<String>, VaultError> {
        let mut last = String::new();
        for path in SOURCES {
            match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() && text.trim() != "uninitialized" => {
                    return Ok(Zeroizing::new(text));
                }
                Ok(_) => last = format!("{path} is empty"),
                Err(e) => last = format!("{path}: {e}"),
            }
        }
        Err(fail(format!("no machine id ({last})")))
    }
}

#[cfg(windows)]
mod os {
    use zeroize::Zeroizing;

    use super::fail;
    use crate::VaultError;

    pub(super) fn read() -> Result<Zeroizing<String>, VaultError> {
        let key = windows_registry::LOCAL_MACHINE
            .options()
            .read()
            .wow64_64()
            .open(r"SOFTWARE\Microsoft\Cryptography")
            .map_err(|e| fail(format!("HKLM\\SOFTWARE\\Microsoft\\Cryptography: {e}")))?;
        let guid = key.get_string("MachineGuid").map_err(|e| fail(format!("MachineGuid: {e}")))?;
        Ok(Zeroizing::new(guid))
    }
}

#[cfg(target_os = "macos")]
mod os {
    use std::process::Command;

    use zeroize::Zeroizing;

    use super::fail;
    use crate::VaultError;

    pub(super) fn read() -> Result<Zeroizing<String>, VaultError> {
        let out = Command::new("/usr/sbin/ioreg")
            .args(["-rd1", "-c", "IOPlatformExpertDevice"])
            .output()
            .map_err(|e| fail(format!("ioreg: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!("ioreg exited with {}", out.status)));
        }
        let text = Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned());
        super::parse_ioreg(&text).ok_or_else(|| fail("IOPlatformUUID not found in ioreg output"))
    }
}

#[cfg(not(any(unix, windows)))]
mod os {
    use zeroize::Zeroizing;

    use crate::VaultError;

    pub(super) fn read() -> Result<Zeroizing<String>, VaultError> {
        Err(super::fail("no machine identity source on this platform"))
    }
}

/// Finds `"IOPlatformUUID" = "…"` in `ioreg` output.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn parse_ioreg(text: &str) -> Option<Zeroizing<String>> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if key.trim() != "\"IOPlatformUUID\"" {
            return None;
        }
        let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
        (!value.is_empty()).then(|| Zeroizing::new(value.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioreg_output_is_parsed() {
        let text = r#"+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000200, registered>
    {
      "IOPlatformSerialNumber" = "C02XXXXXXX"
      "IOPlatformUUID" = "1B2C3D4E-0000-1111-2222-333344445555"
      "manufacturer" = <"Apple Inc.">
    }"#;
        assert_eq!(parse_ioreg(text).unwrap().as_str(), "1B2C3D4E-0000-1111-2222-333344445555");
        assert!(parse_ioreg("\"IOPlatformUUID\" = \"\"").is_none());
        assert!(parse_ioreg("nothing here").is_none());
    }

    #[test]
    fn empty_and_uninitialized_identities_are_refused() {
        assert!(FixedIdentity::new("  \n").machine_id().is_err());
        assert!(FixedIdentity::new("uninitialized\n").machine_id().is_err());
        assert_eq!(FixedIdentity::new(" abc\n").machine_id().unwrap().as_str(), "abc");
        assert_eq!(format!("{:?}", FixedIdentity::new("abc")), "FixedIdentity(***)");
    }

    #[test]
    fn hardware_id_prefers_the_credential_and_tolerates_absence() {
        let dir = std::env::temp_dir().join(format!("vault-hwid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (credential, sysfs) = (dir.join("product_uuid"), dir.join("sysfs_uuid"));
        assert!(read_hardware_id(Some(&credential), &sysfs).is_none(), "neither exists");
        std::fs::write(&sysfs, "4C4C4544-0042-3510-8052-B4C04F4E3732\n").unwrap();
        assert_eq!(
            read_hardware_id(Some(&credential), &sysfs).unwrap().as_str(),
            "4c4c4544-0042-3510-8052-b4c04f4e3732"
        );
        std::fs::write(&credential, "11111111-2222-3333-4444-555555555555\n").unwrap();
        assert_eq!(
            read_hardware_id(Some(&credential), &sysfs).unwrap().as_str(),
            "11111111-2222-3333-4444-555555555555"
        );
        // The unit's SetCredential= default means "none here"; so does an empty file.
        std::fs::write(&credential, "none\n").unwrap();
        assert_eq!(
            read_hardware_id(Some(&credential), &sysfs).unwrap().as_str(),
            "4c4c4544-0042-3510-8052-b4c04f4e3732"
        );
        std::fs::write(&credential, "").unwrap();
        assert_eq!(
            read_hardware_id(Some(&credential), &sysfs).unwrap().as_str(),
            "4c4c4544-0042-3510-8052-b4c04f4e3732"
        );
        std::fs::remove_file(&sysfs).unwrap();
        assert!(read_hardware_id(Some(&credential), &sysfs).is_none());
        assert!(read_hardware_id(None, &sysfs).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        let debug = format!("{:?}", FixedIdentity::new("abc").with_hardware_id("hw-secret"));
        assert!(!debug.contains("hw-secret"), "{debug}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn system_identity_reads_machine_id_when_present() {
        let present = SystemIdentity.machine_id();
        if std::path::Path::new("/etc/machine-id").exists() {
            assert!(present.is_ok());
        }
    }
}
