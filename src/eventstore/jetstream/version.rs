//! The nats-server versions the store accepts. The minimum is the first release with every
//! server feature the design relies on (ADR 0005):
//! - 2.11: `Nats-Expected-Last-Subject-Sequence-Subject` (older servers ignore it and check the
//!   literal subject, which with this subject scheme forks aggregates) and batch direct get;
//! - 2.12: atomic batch publish (older servers drop `allow_atomic` silently and store a batch's
//!   messages one by one).

use std::fmt;

/// The oldest nats-server the store connects to.
pub const MINIMUM: ServerVersion = ServerVersion {
    major: 2,
    minor: 12,
    patch: 0,
};

/// A server's `major.minor.patch` (any pre-release or build suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ServerVersion {
    /// Parses `2.15.1`, `v2.12.0-RC.3` or `2.11.4+build`; `None` when it is none of these.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim().trim_start_matches('v');
        let core = value.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let version = ServerVersion {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next().unwrap_or(Some(0))?,
        };
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_parse_with_or_without_suffixes() {
        let v = |major, minor, patch| ServerVersion {
            major,
            minor,
            patch,
        };
        assert_eq!(ServerVersion::parse("2.15.1"), Some(v(2, 15, 1)));
        assert_eq!(ServerVersion::parse("v2.12.0-RC.3"), Some(v(2, 12, 0)));
        assert_eq!(ServerVersion::parse("2.11.4+build"), Some(v(2, 11, 4)));
        assert_eq!(ServerVersion::parse("2.10"), Some(v(2, 10, 0)));
        assert_eq!(ServerVersion::parse("two"), None);
        assert_eq!(ServerVersion::parse("2.10.1.1"), None);
    }

    #[test]
    fn the_minimum_refuses_debian_bookworms_server_and_accepts_current_ones() {
        assert!(ServerVersion::parse("2.9.10").unwrap() < MINIMUM);
        assert!(ServerVersion::parse("2.11.9").unwrap() < MINIMUM);
        assert!(ServerVersion::parse("2.12.0").unwrap() >= MINIMUM);
        assert!(ServerVersion::parse("2.15.1").unwrap() >= MINIMUM);
        assert_eq!(MINIMUM.to_string(), "2.12.0");
    }
}
