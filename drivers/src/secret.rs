//! Secrets: passwords and connection strings that may carry one.
//!
//! A [`Secret`] zeroizes its memory on drop and prints `***` in `Debug`; it has no `Display`.
//! The only way to read it is [`Secret::expose`], called where a driver hands the value to its
//! client library (whose own copy lives as long as the pool — the `postgres` and `mysql` crates
//! keep the password in their connection options and do not zeroize it).

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::DriverError;

/// A secret string (password, connection string with credentials).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `value`; the caller's copy should be dropped (or zeroized) right after.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret text, for handing to a database client. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Resolves an interim reference: `env:VARIABLE` or `file:PATH` (one trailing newline of
    /// the file is dropped). Errors name the reference, never the value.
    pub fn from_reference(reference: &str) -> Result<Self, DriverError> {
        let fail = |why: String| DriverError::Open(format!("password reference {reference}: {why}"));
        if let Some(var) = reference.strip_prefix("env:") {
            match std::env::var(var) {
                Ok(value) => Ok(Self::new(value)),
                Err(std::env::VarError::NotPresent) => Err(fail("environment variable is not set".into())),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(fail("environment variable is not UTF-8".into()))
                }
            }
        } else if let Some(path) = reference.strip_prefix("file:") {
            let mut text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Ok(Self::new(std::mem::take(&mut *text)))
        } else {
            Err(fail("must be env:VARIABLE or file:PATH".into()))
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// Where a connection's password comes from.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Password {
    /// No password (trust/peer authentication, or credentials inside the DSN).
    #[default]
    None,
    /// The password itself (from the vault).
    Value(Secret),
    /// An interim reference resolved when the database is opened: `env:VAR` or `file:PATH`.
    Reference(String),
}

impl Password {
    /// Resolves the password; `Ok(None)` when there is none.
    pub(crate) fn resolve(&self) -> Result<Option<Secret>, DriverError> {
        match self {
            Password::None => Ok(None),
            Password::Value(secret) => Ok(Some(secret.clone())),
            Password::Reference(reference) => Secret::from_reference(reference).map(Some),
        }
    }

    /// Checks the form of a reference without reading it (for config validation).
    pub fn check_reference(reference: &str) -> Result<(), String> {
        match reference.split_once(':') {
            Some(("env", var)) if !var.is_empty() => Ok(()),
            Some(("file", path)) if !path.is_empty() => {
                let _ = PathBuf::from(path);
                Ok(())
            }
            _ => Err("must be env:VARIABLE or file:PATH".into()),
        }
    }
}

/// References are not secret, values are.
impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::None => f.write_str("None"),
            Password::Value(_) => f.write_str("Value(***)"),
            Password::Reference(reference) => f.debug_tuple("Reference").field(reference).finish(),
        }
    }
}

/// Replaces every occurrence of the secret in `message` by `***` (defence in depth for error
/// texts produced by client libraries).
pub(crate) fn scrub(message: String, secrets: &[&Secret]) -> String {
    let mut message = message;
    for secret in secrets {
        let s = secret.expose();
        if s.len() >= 3 && message.contains(s) {
            message = message.replace(s, "***");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Password::Value(secret.clone())), "Value(***)");
        assert_eq!(format!("{:?}", Password::Reference("env:PG_PASS".into())), r#"Reference("env:PG_PASS")"#);
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn references_resolve_and_errors_name_only_the_reference() {
        let err = Secret::from_reference("env:MC_SURELY_UNSET_VARIABLE").unwrap_err();
        assert_eq!(
            err.to_string(),
            "open failed: password reference env:MC_SURELY_UNSET_VARIABLE: environment variable is not set"
        );
        let path = std::env::temp_dir().join(format!("mc-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let secret = Secret::from_reference(&format!("file:{}", path.display())).unwrap();
        assert_eq!(secret.expose(), "s3cret");
        std::fs::remove_file(&path).unwrap();
        assert!(Secret::from_reference("vault:x").is_err());
        assert!(Password::check_reference("env:X").is_ok());
        assert!(Password::check_reference("env:").is_err());
        assert!(Password::check_reference("plain").is_err());
    }

    #[test]
    fn scrub_removes_secrets_from_messages() {
        let secret = Secret::new("p@ss");
        assert_eq!(scrub("bad url postgres://u:p@ss@h".into(), &[&secret]), "bad url postgres://u:***@h");
    }
}
