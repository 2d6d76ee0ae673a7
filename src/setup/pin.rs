//! The optional local PIN (spec §7.3): it guards credential views and connection edits in the
//! desktop app. Only a salted PBKDF2-HMAC-SHA256 hash (ring) is stored, in `localPinHash`
//! (`pbkdf2-sha256$<iterations>$<salt>$<hash>`, base64); hashes are compared in constant time.
//!
//! A PIN is 4-12 digits. After [`MAX_FAILURES`] wrong PINs in a row, every check is refused with
//! [`SetupError::PinLocked`] for [`LOCKOUT`] (doubling with each further lockout, up to
//! [`MAX_LOCKOUT`]); a right PIN resets the count. The count lives in this process (the desktop
//! app, or the agent serving the control socket), per configuration file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use rand::RngExt as _;

use super::{Result, SetupError, load};

/// PBKDF2 rounds for a new hash.
pub const ITERATIONS: u32 = 600_000;
/// Wrong PINs in a row before a lockout.
pub const MAX_FAILURES: u32 = 5;
/// The first lockout.
pub const LOCKOUT: Duration = Duration::from_secs(30);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);

const SCHEME: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

#[derive(Default)]
struct Attempts {
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
}

static ATTEMPTS: Mutex<Option<HashMap<PathBuf, Attempts>>> = Mutex::new(None);

/// Sets, changes or removes (`new: None`) the PIN. When one is set, `current` must match it
/// (rate-limited like [`verify_pin`]).
pub fn set_pin(config_path: &Path, current: Option<&str>, new: Option<&str>) -> Result<()> {
    let mut config = load(config_path)?;
    if let Some(stored) = &config.local_pin_hash {
        let current = current.ok_or_else(|| SetupError::invalid("a PIN is set: give the current PIN"))?;
        check_attempt(config_path, stored, current)?;
    }
    config.local_pin_hash = match new {
        Some(pin) => Some(hash(pin)?),
        None => None,
    };
    config.save(config_path)?;
    Ok(())
}

/// Checks `pin` against the stored hash: `Ok` when it matches (also when no PIN is set),
/// [`SetupError::PinInvalid`] when not, [`SetupError::PinLocked`] after too many failures.
pub fn verify_pin(config_path: &Path, pin: &str) -> Result<()> {
    let config = load(config_path)?;
    match &config.local_pin_hash {
        None => Ok(()),
        Some(stored) => check_attempt(config_path, stored, pin),
    }
}

fn check_attempt(config_path: &Path, stored: &str, pin: &str) -> Result<()> {
    let key = super::absolute(config_path);
    let mut guard = ATTEMPTS.lock().unwrap_or_else(|e| e.into_inner());
    let attempts = guard.get_or_insert_with(HashMap::new).entry(key).or_default();
    if let Some(until) = attempts.locked_until {
        let left = until.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            return Err(SetupError::PinLocked(left.as_secs().max(1)));
        }
        attempts.locked_until = None;
    }
    if matches(stored, pin)? {
        *attempts = Attempts::default();
        return Ok(());
    }
    attempts.failures += 1;
    if attempts.failures >= MAX_FAILURES {
        let lockout = LOCKOUT.saturating_mul(1 << attempts.lockouts.min(10)).min(MAX_LOCKOUT);
        attempts.lockouts += 1;
        attempts.failures = 0;
        attempts.locked_until = Some(Instant::now() + lockout);
        return Err(SetupError::PinLocked(lockout.as_secs()));
    }
    Err(SetupError::PinInvalid)
}

/// Whether `pin` is 4-12 ASCII digits.
fn check_form(pin: &str) -> Result<()> {
    if !(4..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SetupError::invalid("the PIN must be 4 to 12 digits"));
    }
    Ok(())
}

/// A new salted hash of `pin`.
pub fn hash(pin: &str) -> Result<String> {
    check_form(pin)?;
    let salt: [u8; SALT_LEN] = rand::rng().random();
    let derived = derive(pin, &salt, ITERATIONS);
    Ok(format!("{SCHEME}${ITERATIONS}${}${}", B64.encode(salt), B64.encode(derived)))
}

fn derive(pin: &str, salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, pin.as_bytes(), &mut out);
    out
}

/// The parts of a stored hash: iterations, salt, hash.
fn parse(stored: &str) -> Option<(u32, Vec<u8>, Vec<u8>)> {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iterations), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let iterations: u32 = iterations.parse().ok().filter(|n| (1_000..=10_000_000).contains(n))?;
    let salt = B64.decode(salt).ok().filter(|s| s.len() >= 8)?;
    let hash = B64.decode(hash).ok().filter(|h| h.len() == HASH_LEN)?;
    Some((iterations, salt, hash))
}

/// Whether `stored` is a hash this module wrote (for config validation).
pub fn is_valid_hash(stored: &str) -> bool {
    parse(stored).is_some()
}

fn matches(stored: &str, pin: &str) -> Result<bool> {
    let (iterations, salt, expected) = parse(stored).ok_or_else(|| {
        SetupError::invalid("localPinHash in the configuration is damaged; remove it to reset")
    })?;
    // Same work for a malformed PIN as for a wrong one; ring compares in constant time.
    let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    let equal =
        ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, pin.as_bytes(), &expected)
            .is_ok();
    Ok(equal && check_form(pin).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify() {
        let a = hash("1234").unwrap();
        let b = hash("1234").unwrap();
        assert_ne!(a, b, "salted");
        assert!(!a.contains("1234"));
        assert!(is_valid_hash(&a));
        assert!(matches(&a, "1234").unwrap());
        assert!(!matches(&a, "1235").unwrap());
        assert!(!matches(&a, "").unwrap());
    }

    #[test]
    fn only_4_to_12_digits_are_pins() {
        for bad in ["123", "1234567890123", "12a4", " 1234", "１２３４"] {
            assert!(matches!(hash(bad), Err(SetupError::Invalid(_))), "{bad:?}");
        }
        assert!(hash("123456789012").is_ok());
    }

    #[test]
    fn damaged_hashes_are_refused() {
        for bad in ["", "pbkdf2-sha256$1$AAAAAAAAAAA$AAAA", "md5$1000$x$y", "pbkdf2-sha256$600000$!!$!!"] {
            assert!(!is_valid_hash(bad), "{bad:?}");
        }
    }
}
