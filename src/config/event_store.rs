//! The event store settings, shared by `serve` and `replay`: the embedded log file, or a
//! JetStream stream selected by `NATS_URL`, with its credentials, TLS and stream settings.
//! Every rule naming two settings that contradict each other is checked here, before anything
//! connects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use workspace_events::subjects::STREAM_NAME;

use super::ConfigError;
use crate::eventstore::jetstream::{
    DEFAULT_DUPLICATE_WINDOW, DEFAULT_REQUEST_TIMEOUT, JetStreamOptions, NatsAuth, NatsTls,
    parse_servers,
};
use crate::secret::Secret;

/// Most replicas a JetStream stream may have.
const MAX_REPLICAS: usize = 5;

/// Command-line and environment settings of the event store.
#[derive(Debug, Clone, clap::Args)]
pub struct EventStoreArgs {
    /// Event store: `file` (the embedded append-only log in the data dir) or `jetstream`.
    /// Unset: `jetstream` when NATS_URL is set, else `file`.
    #[arg(long, env = "WORKSPACE_EVENT_STORE", value_name = "file|jetstream")]
    pub event_store: Option<String>,
    /// NATS server URL(s), comma separated (`nats://host:4222`, `tls://host:4222`). Set: the
    /// events are kept in a JetStream stream (nats-server 2.12 or newer, with `-js`). Never
    /// with credentials in it: use NATS_USER/NATS_PASSWORD, NATS_TOKEN or NATS_CREDS_FILE.
    #[arg(long, env = "NATS_URL", value_name = "URL[,URL...]")]
    pub nats_url: Option<String>,
    /// NATS user (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password (with NATS_USER). Never logged.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS authentication token (instead of a user). Never logged.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS credentials file (`.creds`: user JWT and NKey seed), instead of a user or token.
    #[arg(long, env = "NATS_CREDS_FILE", value_name = "FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS (implied by a `tls://` URL and by any NATS_TLS_*
    /// file).
    #[arg(
        long,
        env = "NATS_TLS_REQUIRED",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub nats_tls_required: bool,
    /// PEM CA certificate(s) trusted for the NATS server's certificate, instead of the
    /// system's roots.
    #[arg(long, env = "NATS_TLS_CA_FILE", value_name = "FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with NATS_TLS_KEY_FILE).
    #[arg(long, env = "NATS_TLS_CERT_FILE", value_name = "FILE")]
    pub nats_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (with NATS_TLS_CERT_FILE).
    #[arg(long, env = "NATS_TLS_KEY_FILE", value_name = "FILE")]
    pub nats_tls_key_file: Option<PathBuf>,
    /// Name of the JetStream stream holding the events (created or updated at start).
    #[arg(long, env = "WORKSPACE_NATS_STREAM", default_value = STREAM_NAME)]
    pub nats_stream: String,
    /// Replicas of the stream: 1 on one server, 3 in a production cluster (at most 5).
    #[arg(long, env = "WORKSPACE_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// How long the server remembers event ids to drop a retried append (longer than any
    /// client's retry horizon).
    #[arg(
        long,
        env = "WORKSPACE_NATS_DUPLICATE_WINDOW_SECONDS",
        default_value_t = DEFAULT_DUPLICATE_WINDOW.as_secs()
    )]
    pub nats_duplicate_window_seconds: u64,
    /// Bound on connecting to NATS and on every request to it (an unreachable server fails
    /// the start within about this long).
    #[arg(
        long,
        env = "WORKSPACE_NATS_REQUEST_TIMEOUT_SECONDS",
        default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs()
    )]
    pub nats_request_timeout_seconds: u64,
}

/// Where the events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per process, built at start: its size does not matter"
)]
pub enum EventStoreConfig {
    /// The embedded append-only log file (in `Config::events_dir`, durability
    /// `Config::fsync`).
    File,
    /// A NATS JetStream stream (ADR 0005).
    JetStream(JetStreamOptions),
}

impl EventStoreConfig {
    /// What the store is, for logs and messages (no secrets).
    pub fn describe(&self) -> String {
        match self {
            EventStoreConfig::File => "file".to_owned(),
            EventStoreConfig::JetStream(o) => format!(
                "jetstream (stream {} at {})",
                o.stream,
                o.servers_for_display()
            ),
        }
    }
}

/// An optional setting, with an empty value (`NATS_URL=` in an env file) taken as unset.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn given_path(value: Option<PathBuf>) -> Option<PathBuf> {
    value.filter(|v| !v.as_os_str().is_empty())
}

/// A file the settings name must exist when the service starts.
fn existing_file(name: &str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if Path::new(&path).is_file() {
        Ok(path)
    } else {
        Err(ConfigError(format!(
            "{name}={}: no such file",
            path.display()
        )))
    }
}

/// A JetStream stream name: printable, without spaces, `.`, `*`, `>`, `/` or `\`.
fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

impl TryFrom<EventStoreArgs> for EventStoreConfig {
    type Error = ConfigError;

    fn try_from(args: EventStoreArgs) -> Result<Self, Self::Error> {
        let url = given(args.nats_url);
        let user = given(args.nats_user);
        let password = given(args.nats_password);
        let token = given(args.nats_token);
        let creds = given_path(args.nats_creds_file);
        let ca = given_path(args.nats_tls_ca_file);
        let cert = given_path(args.nats_tls_cert_file);
        let key = given_path(args.nats_tls_key_file);
        let kind = given(args.event_store).map(|k| k.trim().to_ascii_lowercase());
        let jetstream = match (kind.as_deref(), &url) {
            (None, None) | (Some("file"), None) => false,
            (None, Some(_)) | (Some("jetstream"), Some(_)) => true,
            (Some("file"), Some(_)) => {
                return Err(ConfigError(
                    "WORKSPACE_EVENT_STORE=file contradicts NATS_URL, which selects the \
                     JetStream event store: unset one of them"
                        .into(),
                ));
            }
            (Some("jetstream"), None) => {
                return Err(ConfigError(
                    "WORKSPACE_EVENT_STORE=jetstream needs NATS_URL (the NATS server, e.g. \
                     nats://127.0.0.1:4222)"
                        .into(),
                ));
            }
            (Some(other), _) => {
                return Err(ConfigError(format!(
                    "WORKSPACE_EVENT_STORE={other}: use `file` or `jetstream` (or leave it unset \
                     and set NATS_URL for jetstream)"
                )));
            }
        };
        if !jetstream {
            // A NATS setting without NATS_URL means the operator expected JetStream: refuse
            // rather than keep the events in a local file they do not know about.
            let set = [
                ("NATS_USER", user.is_some()),
                ("NATS_PASSWORD", password.is_some()),
                ("NATS_TOKEN", token.is_some()),
                ("NATS_CREDS_FILE", creds.is_some()),
                ("NATS_TLS_REQUIRED", args.nats_tls_required),
                ("NATS_TLS_CA_FILE", ca.is_some()),
                ("NATS_TLS_CERT_FILE", cert.is_some()),
                ("NATS_TLS_KEY_FILE", key.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, set)| *set) {
                return Err(ConfigError(format!(
                    "{name} is set but NATS_URL is not: the event store is the local file; set \
                     NATS_URL to use JetStream, or unset {name}"
                )));
            }
            return Ok(EventStoreConfig::File);
        }
        let url = url.unwrap_or_default();
        let servers = parse_servers(&url).map_err(|e| ConfigError(format!("NATS_URL: {e}")))?;
        if servers.iter().any(|s| s.has_user_pass()) {
            return Err(ConfigError(
                "NATS_URL carries credentials (user:password@): put them in NATS_USER and \
                 NATS_PASSWORD (or NATS_TOKEN), which are kept out of logs"
                    .into(),
            ));
        }
        let auth = match (user, password, token, creds) {
            (None, None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None, None) => NatsAuth::UserPassword {
                user,
                password: Secret::new(password),
            },
            (None, None, Some(token), None) => NatsAuth::Token(Secret::new(token)),
            (None, None, None, Some(path)) => {
                NatsAuth::CredsFile(existing_file("NATS_CREDS_FILE", path)?)
            }
            (Some(_), None, None, None) => {
                return Err(ConfigError(
                    "NATS_USER needs NATS_PASSWORD (or use NATS_TOKEN or NATS_CREDS_FILE)".into(),
                ));
            }
            (None, Some(_), None, None) => {
                return Err(ConfigError("NATS_PASSWORD needs NATS_USER".into()));
            }
            (user, password, token, creds) => {
                let given: Vec<&str> = [
                    ("NATS_USER", user.is_some()),
                    ("NATS_PASSWORD", password.is_some()),
                    ("NATS_TOKEN", token.is_some()),
                    ("NATS_CREDS_FILE", creds.is_some()),
                ]
                .iter()
                .filter(|(_, set)| *set)
                .map(|(name, _)| *name)
                .collect();
                return Err(ConfigError(format!(
                    "{} are set together: NATS takes one way to authenticate (NATS_USER with \
                     NATS_PASSWORD, NATS_TOKEN, or NATS_CREDS_FILE)",
                    given.join(" and ")
                )));
            }
        };
        let client_cert = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                existing_file("NATS_TLS_CERT_FILE", cert)?,
                existing_file("NATS_TLS_KEY_FILE", key)?,
            )),
            (Some(_), None) => {
                return Err(ConfigError(
                    "NATS_TLS_CERT_FILE needs NATS_TLS_KEY_FILE (the client certificate's key)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "NATS_TLS_KEY_FILE needs NATS_TLS_CERT_FILE (the client certificate)".into(),
                ));
            }
        };
        let tls = NatsTls {
            required: args.nats_tls_required || servers.iter().any(|s| s.tls_required()),
            ca_file: ca
                .map(|ca| existing_file("NATS_TLS_CA_FILE", ca))
                .transpose()?,
            client_cert,
        };
        if !valid_stream_name(&args.nats_stream) {
            return Err(ConfigError(format!(
                "WORKSPACE_NATS_STREAM={:?}: a stream name is printable ASCII without spaces, \
                 `.`, `*`, `>`, `/` or `\\`",
                args.nats_stream
            )));
        }
        if !(1..=MAX_REPLICAS).contains(&args.nats_replicas) {
            return Err(ConfigError(format!(
                "WORKSPACE_NATS_REPLICAS={}: between 1 and {MAX_REPLICAS}",
                args.nats_replicas
            )));
        }
        if args.nats_duplicate_window_seconds == 0 {
            return Err(ConfigError(
                "WORKSPACE_NATS_DUPLICATE_WINDOW_SECONDS must be > 0".into(),
            ));
        }
        if args.nats_request_timeout_seconds == 0 {
            return Err(ConfigError(
                "WORKSPACE_NATS_REQUEST_TIMEOUT_SECONDS must be > 0".into(),
            ));
        }
        Ok(EventStoreConfig::JetStream(JetStreamOptions {
            url,
            stream: args.nats_stream,
            replicas: args.nats_replicas,
            duplicate_window: Duration::from_secs(args.nats_duplicate_window_seconds),
            request_timeout: Duration::from_secs(args.nats_request_timeout_seconds),
            auth,
            tls,
            create_stream: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EventStoreArgs,
    }

    fn parse(argv: &[&str]) -> Result<EventStoreConfig, ConfigError> {
        let argv = std::iter::once("replay").chain(argv.iter().copied());
        EventStoreConfig::try_from(Cli::try_parse_from(argv).expect("arguments parse").args)
    }

    fn jetstream(argv: &[&str]) -> JetStreamOptions {
        match parse(argv) {
            Ok(EventStoreConfig::JetStream(o)) => o,
            other => panic!("{argv:?}: {other:?}"),
        }
    }

    fn refused(argv: &[&str]) -> String {
        match parse(argv) {
            Err(e) => e.0,
            Ok(c) => panic!("{argv:?} accepted: {c:?}"),
        }
    }

    const URL: &str = "nats://127.0.0.1:4223";

    #[test]
    fn without_nats_url_the_store_is_the_file_and_with_it_jetstream_with_defaults() {
        assert_eq!(parse(&[]).unwrap(), EventStoreConfig::File);
        assert_eq!(
            parse(&["--event-store", "file"]).unwrap(),
            EventStoreConfig::File
        );
        assert_eq!(parse(&["--nats-url", ""]).unwrap(), EventStoreConfig::File);
        let o = jetstream(&["--nats-url", URL]);
        assert_eq!(o, JetStreamOptions::new(URL));
        assert_eq!(o.stream, "WORKSPACE_EVENTS");
        assert_eq!(o.replicas, 1);
        assert_eq!(o.duplicate_window, Duration::from_secs(120));
        assert_eq!(o.auth, NatsAuth::None);
        assert!(!o.tls.is_required());
        assert_eq!(
            jetstream(&["--event-store", "jetstream", "--nats-url", URL]),
            o
        );
    }

    #[test]
    fn the_stream_settings_are_read_and_checked() {
        let o = jetstream(&[
            "--nats-url",
            "nats://a:4222, tls://b:4222",
            "--nats-stream",
            "EVENTS_TEST",
            "--nats-replicas",
            "3",
            "--nats-duplicate-window-seconds",
            "600",
            "--nats-request-timeout-seconds",
            "2",
        ]);
        assert_eq!(o.stream, "EVENTS_TEST");
        assert_eq!(o.replicas, 3);
        assert_eq!(o.duplicate_window, Duration::from_secs(600));
        assert_eq!(o.request_timeout, Duration::from_secs(2));
        assert!(o.tls.is_required(), "a tls:// URL requires TLS");
        for (argv, setting) in [
            (&["--nats-stream", "a.b"][..], "WORKSPACE_NATS_STREAM"),
            (&["--nats-stream", "with space"], "WORKSPACE_NATS_STREAM"),
            (&["--nats-replicas", "0"], "WORKSPACE_NATS_REPLICAS"),
            (&["--nats-replicas", "6"], "WORKSPACE_NATS_REPLICAS"),
            (
                &["--nats-duplicate-window-seconds", "0"],
                "WORKSPACE_NATS_DUPLICATE_WINDOW_SECONDS",
            ),
            (
                &["--nats-request-timeout-seconds", "0"],
                "WORKSPACE_NATS_REQUEST_TIMEOUT_SECONDS",
            ),
        ] {
            let argv = [&["--nats-url", URL][..], argv].concat();
            let message = refused(&argv);
            assert!(message.contains(setting), "{argv:?}: {message}");
        }
    }

    #[test]
    fn a_contradictory_or_incomplete_mode_is_refused_naming_both_settings() {
        for (argv, names) in [
            (
                &["--event-store", "file", "--nats-url", URL][..],
                &["WORKSPACE_EVENT_STORE", "NATS_URL"][..],
            ),
            (
                &["--event-store", "jetstream"],
                &["WORKSPACE_EVENT_STORE", "NATS_URL"],
            ),
            (&["--event-store", "postgres"], &["WORKSPACE_EVENT_STORE"]),
            (&["--nats-token", "t"], &["NATS_TOKEN", "NATS_URL"]),
            (&["--nats-user", "u"], &["NATS_USER", "NATS_URL"]),
            (&["--nats-tls-required"], &["NATS_TLS_REQUIRED", "NATS_URL"]),
            (&["--nats-url", "ws://a:80"], &["NATS_URL"]),
            (&["--nats-url", "http://a:80"], &["NATS_URL"]),
            (&["--nats-url", "nats://a:1,"], &["NATS_URL"]),
        ] {
            let message = refused(argv);
            for name in names {
                assert!(message.contains(name), "{argv:?}: {message}");
            }
        }
    }

    #[test]
    fn credentials_are_one_way_to_authenticate_and_never_printed() {
        let o = jetstream(&[
            "--nats-url",
            URL,
            "--nats-user",
            "svc",
            "--nats-password",
            "pw-s3cret",
        ]);
        assert_eq!(
            o.auth,
            NatsAuth::UserPassword {
                user: "svc".into(),
                password: Secret::new("pw-s3cret")
            }
        );
        assert!(!format!("{o:?}").contains("pw-s3cret"), "{o:?}");
        let o = jetstream(&["--nats-url", URL, "--nats-token", "tok-s3cret"]);
        assert_eq!(o.auth, NatsAuth::Token(Secret::new("tok-s3cret")));
        assert!(!format!("{o:?}").contains("tok-s3cret"), "{o:?}");
        let creds = tempfile::NamedTempFile::new().unwrap();
        let path = creds.path().to_str().unwrap();
        let o = jetstream(&["--nats-url", URL, "--nats-creds-file", path]);
        assert_eq!(o.auth, NatsAuth::CredsFile(path.into()));

        for (argv, names) in [
            (
                &["--nats-user", "u"][..],
                &["NATS_USER", "NATS_PASSWORD"][..],
            ),
            (&["--nats-password", "p"], &["NATS_PASSWORD", "NATS_USER"]),
            (
                &[
                    "--nats-token",
                    "t",
                    "--nats-user",
                    "u",
                    "--nats-password",
                    "p",
                ],
                &["NATS_USER", "NATS_PASSWORD", "NATS_TOKEN"],
            ),
            (
                &["--nats-token", "t", "--nats-creds-file", path],
                &["NATS_TOKEN", "NATS_CREDS_FILE"],
            ),
            (
                &["--nats-creds-file", "/nonexistent.creds"],
                &["NATS_CREDS_FILE"],
            ),
        ] {
            let argv = [&["--nats-url", URL][..], argv].concat();
            let message = refused(&argv);
            for name in names {
                assert!(message.contains(name), "{argv:?}: {message}");
            }
            assert!(!message.contains("s3cret"), "{message}");
        }
        let message = refused(&["--nats-url", "nats://svc:pw-s3cret@127.0.0.1:4222"]);
        assert!(
            message.contains("NATS_URL") && message.contains("NATS_PASSWORD"),
            "{message}"
        );
        assert!(!message.contains("pw-s3cret"), "{message}");
    }

    #[test]
    fn tls_files_must_exist_come_in_pairs_and_imply_tls() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let o = jetstream(&["--nats-url", URL, "--nats-tls-required"]);
        assert!(o.tls.required);
        let o = jetstream(&["--nats-url", URL, "--nats-tls-required", "false"]);
        assert!(!o.tls.is_required());
        let o = jetstream(&["--nats-url", URL, "--nats-tls-ca-file", path]);
        assert_eq!(o.tls.ca_file.as_deref(), Some(file.path()));
        assert!(o.tls.is_required(), "a CA file implies TLS");
        let o = jetstream(&[
            "--nats-url",
            URL,
            "--nats-tls-cert-file",
            path,
            "--nats-tls-key-file",
            path,
        ]);
        assert!(o.tls.client_cert.is_some() && o.tls.is_required());
        for (argv, names) in [
            (
                &["--nats-tls-cert-file", path][..],
                &["NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE"][..],
            ),
            (
                &["--nats-tls-key-file", path],
                &["NATS_TLS_KEY_FILE", "NATS_TLS_CERT_FILE"],
            ),
            (
                &["--nats-tls-ca-file", "/nonexistent.pem"],
                &["NATS_TLS_CA_FILE"],
            ),
        ] {
            let argv = [&["--nats-url", URL][..], argv].concat();
            let message = refused(&argv);
            for name in names {
                assert!(message.contains(name), "{argv:?}: {message}");
            }
        }
    }
}
