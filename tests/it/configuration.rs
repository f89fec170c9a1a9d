//! Configuration as an operator meets it: every setting of `workspace serve --help` is
//! documented, a contradictory or incomplete mode exits 64 naming its settings before binding
//! anything, an unreachable NATS exits 70 in bounded time, and secrets never appear in help,
//! logs or errors. Plus the JetStream connection's credentials and readiness, against real
//! servers.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use workspace::config::EventStoreConfig;
use workspace::eventstore::StoreError;
use workspace::eventstore::jetstream::{JetStreamEventLog, JetStreamOptions, NatsAuth, NatsTls};
use workspace::secret::Secret;

use crate::nats::NatsServer;
use crate::support::{Backends, Mode, TestServer, eventually, runner_exe};

/// Runs the binary with exactly `env` (nothing inherited, so a developer's own `NATS_URL`
/// cannot change the outcome).
fn workspace(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(runner_exe())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("workspace runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The environment variables `--help` declares (`[env: NAME=…]` or `[env: NAME]`).
fn env_names(help: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in help.split("[env: ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[test]
fn every_setting_of_serve_and_replay_is_documented_in_docs_configuration_md() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    for command in ["serve", "replay", "api", "executor", "projector"] {
        let output = workspace(&[command, "--help"], &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        let help = String::from_utf8_lossy(&output.stdout);
        let names = env_names(&help);
        assert!(names.len() > 10 || command == "replay", "{help}");
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !doc.contains(&format!("`{n}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "`workspace {command} --help` declares settings docs/configuration.md does not list: \
             {missing:?}"
        );
        // Each flag too, so the doc's table stays one row per setting.
        for flag in help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches(','))
            .filter(|f| !matches!(*f, "--help" | "--version" | "--events"))
        {
            assert!(
                doc.contains(&format!("`{flag}`")),
                "docs/configuration.md does not list the flag {flag} of `workspace {command}`"
            );
        }
    }
}

#[test]
fn secrets_given_in_the_environment_are_not_shown_by_help() {
    let output = workspace(
        &["serve", "--help"],
        &[
            ("NATS_PASSWORD", "pw-s3cret-value"),
            ("NATS_TOKEN", "tok-s3cret-value"),
            ("VALKEY_PASSWORD", "vk-s3cret-value"),
            ("WORKSPACE_AUTH_SHARED_TOKEN", "auth-s3cret-value"),
        ],
    );
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("NATS_PASSWORD"), "{help}");
    assert!(!help.contains("s3cret-value"), "{help}");
}

#[test]
fn a_contradictory_or_incomplete_mode_exits_64_naming_the_settings_before_binding() {
    // The port is taken: a configuration error must come first, before any bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let base = [("PORT", port.as_str()), ("WORKSPACE_DATA_DIR", data)];
    for (env, names) in [
        (
            &[
                ("WORKSPACE_EVENT_STORE", "file"),
                ("NATS_URL", "nats://127.0.0.1:4222"),
            ][..],
            &["WORKSPACE_EVENT_STORE=file", "NATS_URL"][..],
        ),
        (
            &[("WORKSPACE_EVENT_STORE", "jetstream")],
            &["WORKSPACE_EVENT_STORE=jetstream", "NATS_URL"],
        ),
        (&[("NATS_TOKEN", "t")], &["NATS_TOKEN", "NATS_URL"]),
        (
            &[
                ("NATS_URL", "nats://127.0.0.1:4222"),
                ("NATS_USER", "svc"),
                ("NATS_TOKEN", "tok-s3cret-value"),
            ],
            &["NATS_USER", "NATS_TOKEN"],
        ),
        (
            &[("NATS_URL", "nats://127.0.0.1:4222"), ("NATS_USER", "svc")],
            &["NATS_USER", "NATS_PASSWORD"],
        ),
        (
            &[("INVOCATION_STORE_BACKEND", "valkey")],
            &["INVOCATION_STORE_BACKEND", "VALKEY_ADDR"],
        ),
        (
            &[
                ("SESSION_STORE_BACKEND", "valkey"),
                ("VALKEY_ADDR", "127.0.0.1:6379"),
            ],
            &["INVOCATION_STORE_BACKEND", "SESSION_STORE_BACKEND"],
        ),
        (&[("VALKEY_PORT", "many")], &["--valkey-port"]),
    ] {
        let output = workspace(&["serve"], &[&base[..], env].concat());
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(64), "{env:?}: {message}");
        for name in names {
            assert!(message.contains(name), "{env:?}: {message}");
        }
        assert!(!message.contains("s3cret-value"), "{message}");
    }
    assert!(
        !std::path::Path::new(data).exists(),
        "nothing is created on a bad configuration"
    );
}

/// The roles in separate processes share the events and the read models: one alone on the
/// file log (locked by one process), or a projector with nothing shared to write, exits 64
/// naming what to set, before binding anything.
#[test]
fn a_role_alone_without_the_shared_stores_exits_64_naming_them() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let base = [("PORT", port.as_str()), ("WORKSPACE_DATA_DIR", data)];
    let nats = [("NATS_URL", "nats://127.0.0.1:1")];
    for (role, env, names) in [
        ("api", &[][..], &["`api`", "NATS_URL"][..]),
        ("executor", &[], &["`executor`", "NATS_URL"]),
        ("projector", &[], &["`projector`", "NATS_URL"]),
        ("projector", &nats[..], &["`projector`", "VALKEY_ADDR"]),
    ] {
        let output = workspace(&[role], &[&base[..], env].concat());
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(64), "{role} {env:?}: {message}");
        for name in names {
            assert!(message.contains(name), "{role} {env:?}: {message}");
        }
    }
    assert!(!std::path::Path::new(data).exists());
}

#[test]
fn an_unreachable_nats_fails_the_start_with_70_in_bounded_time_without_the_secret() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().unwrap().port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let started = Instant::now();
    let output = workspace(
        &["serve"],
        &[
            ("PORT", "0"),
            ("WORKSPACE_DATA_DIR", data.to_str().unwrap()),
            ("NATS_URL", &url),
            ("NATS_USER", "svc"),
            ("NATS_PASSWORD", "pw-s3cret-value"),
            ("WORKSPACE_NATS_REQUEST_TIMEOUT_SECONDS", "2"),
        ],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(70), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        message.contains("NATS_URL") && message.contains(&url),
        "{message}"
    );
    assert!(!message.contains("pw-s3cret-value"), "{message}");
    assert!(
        !data.exists(),
        "nothing is created when NATS is unreachable"
    );
}

/// A `JetStreamOptions` for `server` with `auth`.
fn options(server: &NatsServer, auth: NatsAuth) -> JetStreamOptions {
    JetStreamOptions {
        auth,
        ..JetStreamOptions::new(server.url())
    }
}

fn refused(result: Result<JetStreamEventLog, StoreError>) -> String {
    match result {
        Ok(_) => panic!("connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn credentials_are_sent_and_a_refused_connect_never_shows_them() {
    let server = NatsServer::start_with(&["--user", "svc", "--pass", "pw-right-s3cret"]);
    let right = NatsAuth::UserPassword {
        user: "svc".into(),
        password: Secret::new("pw-right-s3cret"),
    };
    JetStreamEventLog::connect(options(&server, right))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    for auth in [
        NatsAuth::None,
        NatsAuth::UserPassword {
            user: "svc".into(),
            password: Secret::new("pw-wrong-s3cret"),
        },
    ] {
        let message = refused(JetStreamEventLog::connect(options(&server, auth)).await);
        assert!(message.contains("connecting to NATS"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    let server = NatsServer::start_with(&["--auth", "tok-right-s3cret"]);
    let token = |t: &str| NatsAuth::Token(Secret::new(t));
    JetStreamEventLog::connect(options(&server, token("tok-right-s3cret")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let message =
        refused(JetStreamEventLog::connect(options(&server, token("tok-wrong-s3cret"))).await);
    assert!(!message.contains("s3cret"), "{message}");

    // Required TLS is never downgraded: a server without TLS is refused.
    let tls = JetStreamOptions {
        tls: NatsTls {
            required: true,
            ..NatsTls::default()
        },
        ..options(&server, token("tok-right-s3cret"))
    };
    let message = refused(JetStreamEventLog::connect(tls).await);
    assert!(message.to_ascii_lowercase().contains("tls"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_event_store_unavailable_when_nats_goes_away() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = EventStoreConfig::JetStream(JetStreamOptions {
        request_timeout: Duration::from_millis(500),
        ..JetStreamOptions::new(nats.url())
    });
    let server = TestServer::start_with(&Backends::start(Mode::Embedded), dir.path(), |c| {
        c.event_store = store;
    })
    .await;
    let (status, _, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(nats);
    let unavailable = eventually(Duration::from_secs(10), || {
        let server = &server;
        async move { server.get("/readyz").await.0 == StatusCode::SERVICE_UNAVAILABLE }
    })
    .await;
    let (_, _, body) = server.get("/readyz").await;
    assert!(unavailable, "{body}");
    assert_eq!(body["event_store"], "unavailable", "{body}");
    server.stop().await;
}

#[test]
fn replay_reads_an_existing_stream_and_never_creates_one() {
    let nats = NatsServer::start();
    let output = workspace(&["replay", "--nats-url", nats.url()], &[]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(70), "{message}");
    assert!(message.contains("WORKSPACE_EVENTS"), "{message}");
    // Still no stream: a later `serve` creates it with its own settings.
    let output = workspace(&["replay", "--nats-url", nats.url()], &[]);
    assert_eq!(output.status.code(), Some(70), "{}", stderr(&output));
}
