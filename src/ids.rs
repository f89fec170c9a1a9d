//! Identifiers, parsed at the edge. Code past the API never takes a raw `String` for them.
//!
//! Ids end up in file paths (workspace and artifact directories) and in event subjects, so the
//! accepted alphabet is `[A-Za-z0-9_-]`, starting with an alphanumeric, at most 64 bytes: no
//! `.`, `/`, NUL or whitespace can reach a path or a subject.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{kind} must be 1-64 characters of [A-Za-z0-9_-] starting with a letter or digit")]
pub struct InvalidId {
    /// Which id (`session_id`, `invocation_id`, ...).
    pub kind: &'static str,
}

fn valid_token(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// 16 lower-case hex characters from a fresh ULID's random part.
pub fn random_hex16() -> String {
    let ulid = ulid::Ulid::generate();
    format!("{:016x}", (ulid.random() as u64))
}

macro_rules! id_type {
    ($name:ident, $kind:literal, $prefix:literal) => {
        #[doc = concat!("A validated `", $kind, "`.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                if valid_token(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind })
                }
            }

            #[doc = concat!("A fresh id, `", $prefix, "-<16 hex>`.")]
            pub fn generate() -> Self {
                Self(format!(concat!($prefix, "-{}"), random_hex16()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(SessionId, "session_id", "session");
id_type!(InvocationId, "invocation_id", "inv");
id_type!(ArtifactId, "artifact_id", "artifact");
id_type!(TenantId, "tenant_id", "tenant");

impl InvocationId {
    /// The id of the invocation a correlation key names: the same (session, tool, key) always
    /// maps to the same id, so a retried request finds the first invocation on any replica
    /// through the event store's optimistic-concurrency check, without a read model.
    pub fn for_correlation(session: &SessionId, tool: &str, correlation_id: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in [session.as_str(), tool, correlation_id] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher.finalize();
        Self(format!("inv-c{}", hex::encode(&digest[..12])))
    }
}

/// A tool name from the catalog (`fs.read_file`): lower-case dotted tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ToolName(String);

impl ToolName {
    /// Parses a tool name: 1-64 bytes of `[a-z0-9_.]`, no leading, trailing or double dot.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
            && !value.starts_with('.')
            && !value.ends_with('.')
            && !value.contains("..");
        ok.then(|| Self(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_reach_a_path_or_subject_are_refused() {
        for bad in [
            "",
            "../x",
            "a/b",
            "a.b",
            "-a",
            "a b",
            "a\0b",
            &"x".repeat(65),
            "ä",
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["session-0123456789abcdef", "A1", "my_session-2"] {
            assert!(SessionId::parse(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn generated_ids_have_the_original_shape() {
        let id = SessionId::generate();
        assert!(id.as_str().starts_with("session-"));
        assert_eq!(id.as_str().len(), "session-".len() + 16);
        assert!(SessionId::parse(id.as_str()).is_ok());
        assert!(InvocationId::generate().as_str().starts_with("inv-"));
    }

    #[test]
    fn a_correlation_key_always_names_the_same_invocation() {
        let s = SessionId::parse("s1").unwrap();
        let a = InvocationId::for_correlation(&s, "fs.read_file", "k");
        assert_eq!(a, InvocationId::for_correlation(&s, "fs.read_file", "k"));
        assert_ne!(a, InvocationId::for_correlation(&s, "fs.stat", "k"));
        assert_ne!(a, InvocationId::for_correlation(&s, "fs.read_filek", ""));
        assert!(InvocationId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn tool_names_are_dotted_lower_case_tokens() {
        assert!(ToolName::parse("fs.read_file").is_some());
        for bad in ["", ".fs", "fs.", "fs..x", "FS.read", "fs/read", "fs read"] {
            assert!(ToolName::parse(bad).is_none(), "{bad:?} accepted");
        }
    }
}
