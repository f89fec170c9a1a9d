//! The read-model store settings: where invocation and session views are kept (`memory`, or
//! `valkey` under a key prefix with a TTL) and how to reach Valkey. The original service's
//! names and defaults. Validated here; [`ReadModelConfig::check_one_store`] refuses a mix of
//! backends (the read models are one store: views and their indexes live together).

use std::time::Duration;

use super::ConfigError;
use crate::secret::Secret;

/// The Valkey port when only `VALKEY_HOST` is given.
pub const DEFAULT_VALKEY_PORT: u16 = 6379;
/// The default TTL of invocation and session keys: one day.
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;

/// Command-line and environment settings of the read-model stores.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadModelArgs {
    /// Invocation store: `memory` or `valkey`.
    #[arg(long, env = "INVOCATION_STORE_BACKEND", default_value = "memory")]
    pub invocation_store_backend: String,
    /// Key prefix of invocation views in Valkey (`<prefix>:<invocation id>`).
    #[arg(
        long,
        env = "INVOCATION_STORE_KEY_PREFIX",
        default_value = "workspace:invocation"
    )]
    pub invocation_store_key_prefix: String,
    /// TTL of invocation keys in Valkey, in seconds; 0 or less: no expiry.
    #[arg(
        long,
        env = "INVOCATION_STORE_TTL_SECONDS",
        default_value_t = DEFAULT_TTL_SECONDS,
        allow_negative_numbers = true
    )]
    pub invocation_store_ttl_seconds: i64,
    /// Session store: `memory` or `valkey`.
    #[arg(long, env = "SESSION_STORE_BACKEND", default_value = "memory")]
    pub session_store_backend: String,
    /// Key prefix of session views in Valkey (`<prefix>:<session id>`).
    #[arg(
        long,
        env = "SESSION_STORE_KEY_PREFIX",
        default_value = "workspace:session"
    )]
    pub session_store_key_prefix: String,
    /// TTL of a session key whose session has no expiry, in seconds; 0 or less: no expiry.
    #[arg(
        long,
        env = "SESSION_STORE_TTL_SECONDS",
        default_value_t = DEFAULT_TTL_SECONDS,
        allow_negative_numbers = true
    )]
    pub session_store_ttl_seconds: i64,
    /// Valkey address as `host:port` (or give VALKEY_HOST and VALKEY_PORT).
    #[arg(long, env = "VALKEY_ADDR", value_name = "HOST:PORT")]
    pub valkey_addr: Option<String>,
    /// Valkey host (with VALKEY_PORT), when VALKEY_ADDR is not given.
    #[arg(long, env = "VALKEY_HOST")]
    pub valkey_host: Option<String>,
    /// Valkey port [default with VALKEY_HOST: 6379].
    #[arg(long, env = "VALKEY_PORT")]
    pub valkey_port: Option<u16>,
    /// Valkey database number.
    #[arg(long, env = "VALKEY_DB", default_value_t = 0)]
    pub valkey_db: u32,
    /// Valkey password. Never logged.
    #[arg(long, env = "VALKEY_PASSWORD", hide_env_values = true)]
    pub valkey_password: Option<String>,
}

/// Where one read model is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// In this process, rebuilt from the event store at start.
    Memory,
    /// In Valkey.
    Valkey,
}

/// One read model's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The backend.
    pub backend: StoreBackend,
    /// Valkey key prefix (`<prefix>:<id>`).
    pub key_prefix: String,
    /// TTL of its Valkey keys; `None`: no expiry.
    pub ttl: Option<Duration>,
}

/// How to reach Valkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValkeyConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database number.
    pub db: u32,
    /// Password, if any.
    pub password: Option<Secret>,
}

/// Validated read-model store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadModelConfig {
    /// Invocation views.
    pub invocations: StoreConfig,
    /// Session views.
    pub sessions: StoreConfig,
    /// Valkey: `Some` exactly when a store's backend is `valkey`.
    pub valkey: Option<ValkeyConfig>,
}

impl Default for ReadModelConfig {
    /// Both stores in memory (the embedded mode).
    fn default() -> Self {
        let store = |prefix: &str| StoreConfig {
            backend: StoreBackend::Memory,
            key_prefix: prefix.to_owned(),
            ttl: ttl(DEFAULT_TTL_SECONDS),
        };
        Self {
            invocations: store("workspace:invocation"),
            sessions: store("workspace:session"),
            valkey: None,
        }
    }
}

impl ReadModelConfig {
    /// Refuses one store in memory and the other in Valkey: the read models are one store
    /// (an invocation's view, its session's index and the correlation index are written
    /// together, in one script), so both backends must be the same.
    pub fn check_one_store(&self) -> Result<(), ConfigError> {
        if self.invocations.backend != self.sessions.backend {
            return Err(ConfigError(
                "INVOCATION_STORE_BACKEND and SESSION_STORE_BACKEND differ: the read models are \
                 one store; set both to `memory` or both to `valkey`"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// `<= 0` means no expiry (the original service's rule).
fn ttl(seconds: i64) -> Option<Duration> {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

fn backend(name: &str, value: &str) -> Result<StoreBackend, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "memory" => Ok(StoreBackend::Memory),
        "valkey" => Ok(StoreBackend::Valkey),
        other => Err(ConfigError(format!(
            "{name}={other}: use `memory` or `valkey`"
        ))),
    }
}

fn store(
    backend_name: &str,
    backend_value: &str,
    prefix_name: &str,
    prefix: String,
    seconds: i64,
) -> Result<StoreConfig, ConfigError> {
    let backend = backend(backend_name, backend_value)?;
    if prefix.trim().is_empty() || prefix.chars().any(char::is_whitespace) {
        return Err(ConfigError(format!(
            "{prefix_name}={prefix:?}: a key prefix is non-empty, without spaces"
        )));
    }
    Ok(StoreConfig {
        backend,
        key_prefix: prefix,
        ttl: ttl(seconds),
    })
}

/// `host:port` (`[v6]:port` for an IPv6 address).
fn parse_addr(addr: &str) -> Result<(String, u16), ConfigError> {
    let bad = |why: &str| ConfigError(format!("VALKEY_ADDR={addr}: {why}"));
    if addr.contains("://") {
        return Err(bad("give host:port, not a URL"));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("give host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("the host is empty or has spaces"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
    Ok((host.to_owned(), port))
}

impl TryFrom<ReadModelArgs> for ReadModelConfig {
    type Error = ConfigError;

    fn try_from(args: ReadModelArgs) -> Result<Self, Self::Error> {
        let invocations = store(
            "INVOCATION_STORE_BACKEND",
            &args.invocation_store_backend,
            "INVOCATION_STORE_KEY_PREFIX",
            args.invocation_store_key_prefix,
            args.invocation_store_ttl_seconds,
        )?;
        let sessions = store(
            "SESSION_STORE_BACKEND",
            &args.session_store_backend,
            "SESSION_STORE_KEY_PREFIX",
            args.session_store_key_prefix,
            args.session_store_ttl_seconds,
        )?;
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        let addr = nonempty(args.valkey_addr);
        let host = nonempty(args.valkey_host);
        let password = nonempty(args.valkey_password);
        let uses_valkey = [&invocations, &sessions]
            .iter()
            .any(|s| s.backend == StoreBackend::Valkey);
        if !uses_valkey {
            // Valkey settings with every store in memory: a forgotten or misspelt backend,
            // which would otherwise run on memory without a word.
            let set = [
                ("VALKEY_ADDR", addr.is_some()),
                ("VALKEY_HOST", host.is_some()),
                ("VALKEY_PORT", args.valkey_port.is_some()),
                ("VALKEY_PASSWORD", password.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, set)| *set) {
                return Err(ConfigError(format!(
                    "{name} is set but no store uses Valkey (INVOCATION_STORE_BACKEND and \
                     SESSION_STORE_BACKEND are `memory`): set a backend to `valkey`, or unset \
                     {name}"
                )));
            }
            return Ok(Self {
                invocations,
                sessions,
                valkey: None,
            });
        }
        let (host, port) = match (addr, host) {
            (Some(addr), host) => {
                let (addr_host, addr_port) = parse_addr(&addr)?;
                if host.as_deref().is_some_and(|h| h != addr_host) {
                    return Err(ConfigError(format!(
                        "VALKEY_ADDR={addr} and VALKEY_HOST={} differ: give one of them",
                        host.unwrap_or_default()
                    )));
                }
                if args.valkey_port.is_some_and(|p| p != addr_port) {
                    return Err(ConfigError(format!(
                        "VALKEY_ADDR={addr} and VALKEY_PORT={} differ: give one of them",
                        args.valkey_port.unwrap_or_default()
                    )));
                }
                (addr_host, addr_port)
            }
            (None, Some(host)) => (host, args.valkey_port.unwrap_or(DEFAULT_VALKEY_PORT)),
            (None, None) => {
                let name = if invocations.backend == StoreBackend::Valkey {
                    "INVOCATION_STORE_BACKEND"
                } else {
                    "SESSION_STORE_BACKEND"
                };
                return Err(ConfigError(format!(
                    "{name}=valkey needs VALKEY_ADDR (host:port) or VALKEY_HOST"
                )));
            }
        };
        if args.valkey_port == Some(0) {
            return Err(ConfigError("VALKEY_PORT must be from 1 to 65535".into()));
        }
        Ok(Self {
            invocations,
            sessions,
            valkey: Some(ValkeyConfig {
                host,
                port,
                db: args.valkey_db,
                password: password.map(Secret::new),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReadModelArgs,
    }

    fn parse(argv: &[&str]) -> Result<ReadModelConfig, ConfigError> {
        let argv = std::iter::once("serve").chain(argv.iter().copied());
        ReadModelConfig::try_from(Cli::try_parse_from(argv).expect("arguments parse").args)
    }

    fn refused(argv: &[&str]) -> String {
        match parse(argv) {
            Err(e) => e.0,
            Ok(c) => panic!("{argv:?} accepted: {c:?}"),
        }
    }

    #[test]
    fn the_defaults_are_both_stores_in_memory_with_the_original_prefixes_and_ttls() {
        let c = parse(&[]).unwrap();
        assert_eq!(c, ReadModelConfig::default());
        assert_eq!(c.invocations.backend, StoreBackend::Memory);
        assert_eq!(c.invocations.key_prefix, "workspace:invocation");
        assert_eq!(c.invocations.ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(c.sessions.key_prefix, "workspace:session");
        assert!(c.valkey.is_none());
        assert!(c.check_one_store().is_ok());
    }

    #[test]
    fn a_valkey_store_reads_the_address_from_addr_or_host_and_port() {
        let c = parse(&[
            "--invocation-store-backend",
            "valkey",
            "--valkey-addr",
            "cache:6380",
            "--valkey-db",
            "2",
            "--valkey-password",
            "vk-s3cret",
            "--invocation-store-ttl-seconds",
            "0",
        ])
        .unwrap();
        let valkey = c.valkey.clone().unwrap();
        assert_eq!(
            (valkey.host.as_str(), valkey.port, valkey.db),
            ("cache", 6380, 2)
        );
        assert_eq!(valkey.password, Some(Secret::new("vk-s3cret")));
        assert!(!format!("{c:?}").contains("vk-s3cret"), "{c:?}");
        assert_eq!(c.invocations.ttl, None, "0: no expiry");
        assert_eq!(c.sessions.backend, StoreBackend::Memory);
        let c = parse(&[
            "--session-store-backend",
            "valkey",
            "--valkey-host",
            "cache",
        ])
        .unwrap();
        assert_eq!(c.valkey.unwrap().port, 6379);
        let c = parse(&[
            "--session-store-backend",
            "valkey",
            "--valkey-addr",
            "[::1]:7000",
            "--valkey-host",
            "::1",
            "--valkey-port",
            "7000",
        ])
        .unwrap();
        assert_eq!(c.valkey.unwrap().host, "::1", "agreeing settings are fine");
    }

    #[test]
    fn the_two_stores_must_share_a_backend() {
        let c = parse(&[
            "--invocation-store-backend",
            "valkey",
            "--valkey-addr",
            "h:1",
        ])
        .unwrap();
        let message = c.check_one_store().unwrap_err().0;
        assert!(
            message.contains("INVOCATION_STORE_BACKEND")
                && message.contains("SESSION_STORE_BACKEND"),
            "{message}"
        );
        let both = parse(&[
            "--invocation-store-backend",
            "valkey",
            "--session-store-backend",
            "valkey",
            "--valkey-addr",
            "h:1",
        ])
        .unwrap();
        assert!(both.check_one_store().is_ok());
    }

    #[test]
    fn incomplete_or_contradictory_store_settings_are_refused_naming_them() {
        for (argv, names) in [
            (
                &["--invocation-store-backend", "valkey"][..],
                &["INVOCATION_STORE_BACKEND", "VALKEY_ADDR", "VALKEY_HOST"][..],
            ),
            (
                &["--session-store-backend", "valkey", "--valkey-port", "6379"],
                &["SESSION_STORE_BACKEND", "VALKEY_ADDR"],
            ),
            (
                &[
                    "--session-store-backend",
                    "valkey",
                    "--valkey-addr",
                    "a:6379",
                    "--valkey-host",
                    "b",
                ],
                &["VALKEY_ADDR", "VALKEY_HOST"],
            ),
            (
                &[
                    "--session-store-backend",
                    "valkey",
                    "--valkey-addr",
                    "a:6379",
                    "--valkey-port",
                    "6380",
                ],
                &["VALKEY_ADDR", "VALKEY_PORT"],
            ),
            (
                &[
                    "--session-store-backend",
                    "valkey",
                    "--valkey-addr",
                    "redis://a:6379",
                ],
                &["VALKEY_ADDR"],
            ),
            (
                &["--session-store-backend", "valkey", "--valkey-addr", "a"],
                &["VALKEY_ADDR"],
            ),
            (&["--valkey-addr", "a:6379"], &["VALKEY_ADDR", "memory"]),
            (&["--valkey-password", "p"], &["VALKEY_PASSWORD"]),
            (
                &["--invocation-store-backend", "redis"],
                &["INVOCATION_STORE_BACKEND"],
            ),
            (
                &["--session-store-key-prefix", ""],
                &["SESSION_STORE_KEY_PREFIX"],
            ),
        ] {
            let message = refused(argv);
            for name in names {
                assert!(message.contains(name), "{argv:?}: {message}");
            }
        }
    }
}
