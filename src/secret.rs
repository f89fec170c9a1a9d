//! [`Secret`]: a password or token from the configuration. It never appears in `Debug` output,
//! logs or error messages; the only way to read it is [`Secret::expose`], at the one call that
//! hands it to a client library.

use std::fmt;

/// A configured secret (NATS password or token, Valkey password). `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the client that authenticates with it. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Removes every occurrence of the secret from `text` (an error message from a client
    /// library that might echo what it was given).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed_by_debug_and_is_scrubbed_from_messages() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.scrub("bad password hunter2!"), "bad password ***!");
        assert_eq!(secret.expose(), "hunter2");
    }
}
