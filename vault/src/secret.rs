//! A decrypted credential.

use std::fmt;

use zeroize::Zeroizing;

/// A decrypted credential (a database password, the API key).
///
/// The bytes are zeroized when the value is dropped. There is no `Display`, no `Clone` and no
/// serialization; `Debug` prints `***`. Drop it as soon as the connection is made.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// The plaintext bytes.
    ///
    /// Only pass them into a driver's connect call (or the `auth` frame, for the API key), then
    /// drop the `Secret`. Never format, log, copy into a `String` that outlives the call, or send
    /// them anywhere else.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The plaintext as UTF-8, for drivers that take `&str` passwords; `None` if it is not UTF-8.
    ///
    /// Same rule as [`expose`](Self::expose): only into a driver's connect call.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    /// Takes ownership of the buffer without copying it.
    fn from(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

impl From<String> for Secret {
    /// Takes ownership of the string's buffer without copying it.
    fn from(text: String) -> Self {
        Self(Zeroizing::new(text.into_bytes()))
    }
}

impl From<Zeroizing<Vec<u8>>> for Secret {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
