//! Golden fixtures: one envelope per event type and schema version, in `tests/fixtures/`.
//! A shipped fixture never changes; `UPDATE_GOLDEN=1 cargo test -p workspace-events` writes
//! missing or changed ones on purpose.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use time::macros::datetime;
use workspace_events::*;

fn principal() -> Principal {
    Principal {
        tenant_id: "acme".into(),
        actor_id: "alice".into(),
        roles: vec!["developer".into()],
    }
}

fn request() -> InvocationRequest {
    InvocationRequest {
        invocation_id: "inv-0123456789abcdef".into(),
        session_id: "session-0123456789abcdef".into(),
        tool_name: "fs.write_file".into(),
        correlation_id: Some("client-key-1".into()),
        approved: true,
        args: Some(json!({"path": "notes/a.txt", "content": "hello"})),
        args_ref: None,
        requested_at: datetime!(2026-11-23 10:00:00 UTC),
    }
}

fn artifact_ref() -> ArtifactRef {
    ArtifactRef {
        artifact_id: "artifact-00000000000000aa".into(),
        sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into(),
        size_bytes: 5,
    }
}

fn session_events() -> Vec<SessionEvent> {
    vec![
        SessionEvent::Created(SessionCreated {
            session_id: "session-0123456789abcdef".into(),
            principal: principal(),
            source: WorkspaceSource::Git {
                repo_url: "https://example.invalid/repo.git".into(),
                repo_ref: Some("main".into()),
            },
            allowed_paths: vec![".".into()],
            metadata: BTreeMap::from([("allowed_git_remotes".into(), "origin".into())]),
            created_at: datetime!(2026-11-23 10:00:00 UTC),
            expires_at: datetime!(2026-11-23 11:00:00 UTC),
        }),
        SessionEvent::Provisioned(SessionProvisioned {
            runtime: RuntimeRef {
                kind: "local".into(),
                isolation: "bubblewrap".into(),
                workdir: "/workspace".into(),
                namespace: None,
                pod_name: None,
            },
            provisioned_at: datetime!(2026-11-23 10:00:01 UTC),
        }),
        SessionEvent::ProvisioningFailed(SessionProvisioningFailed {
            error: ErrorInfo {
                code: ErrorCode::ExecutionFailed.into(),
                message: "git clone failed: repository not found".into(),
                retryable: false,
            },
            failed_at: datetime!(2026-11-23 10:00:02 UTC),
        }),
        SessionEvent::Closed(SessionClosed {
            reason: CloseReason::Expired,
            closed_at: datetime!(2026-11-23 11:00:00 UTC),
        }),
        SessionEvent::RunnerRemoved(SessionRunnerRemoved {
            namespace: "workspace-runners".into(),
            pod_name: "ws-session-0123456789abcdef".into(),
            pod_uid: "2f1c6a0e-5b7d-4c3e-9a61-0d4f2b8e7c15".into(),
            phase: "Running".into(),
            reason: RunnerRemovedReason::SessionExpired,
            removed_at: datetime!(2026-11-23 11:01:00 UTC),
        }),
    ]
}

fn invocation_events() -> Vec<InvocationEvent> {
    let refused = InvocationRefused {
        request: request().into(),
        error: ErrorInfo {
            code: ErrorCode::ApprovalRequired.into(),
            message: "tool requires explicit approval".into(),
            retryable: false,
        },
    };
    vec![
        InvocationEvent::Queued(InvocationQueued {
            request: request().into(),
            timeout_seconds: 20,
            start_deadline: datetime!(2026-11-23 10:01:00 UTC),
        }),
        InvocationEvent::Denied(refused.clone()),
        InvocationEvent::Rejected(InvocationRefused {
            error: ErrorInfo {
                code: ErrorCode::InvalidArgument.into(),
                message: "args.path: required property is missing".into(),
                retryable: false,
            },
            ..refused
        }),
        InvocationEvent::Started(InvocationStarted {
            executor_id: "executor-1".into(),
            started_at: datetime!(2026-11-23 10:00:00.5 UTC),
            deadline: datetime!(2026-11-23 10:00:20.5 UTC),
        }),
        completed(3_141_593),
    ]
}

/// The `invocation.completed` of the fixtures, run for `duration_ns`.
fn completed(duration_ns: u64) -> InvocationEvent {
    InvocationEvent::Completed(std::sync::Arc::new(InvocationCompleted {
        outcome: InvocationOutcome::Succeeded,
        exit_code: Some(0),
        duration_ns,
        output: Some(json!({"path": "notes/a.txt", "bytes_written": 5}).into()),
        output_ref: None,
        logs: vec![LogLine {
            at: datetime!(2026-11-23 10:00:00.6 UTC),
            channel: LogChannel::Stdout,
            message: "wrote 5 bytes".into(),
        }],
        logs_ref: Some(artifact_ref()),
        artifacts: vec![ArtifactMeta {
            id: "artifact-00000000000000aa".into(),
            name: "invocation-logs.jsonl".into(),
            content_type: "application/x-ndjson".into(),
            size_bytes: 5,
            sha256: artifact_ref().sha256,
            created_at: datetime!(2026-11-23 10:00:00.6 UTC),
        }],
        error: None,
        completed_at: datetime!(2026-11-23 10:00:00.6 UTC),
    }))
}

fn envelope<E: EventContract>(event: &E, aggregate_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: ulid::Ulid::from_parts(1_795_000_000_000, version as u128),
        aggregate_type: E::AGGREGATE_TYPE,
        aggregate_id: aggregate_id.into(),
        aggregate_version: version,
        event_type: event.event_type().into(),
        schema_version: event.schema_version(),
        occurred_at: datetime!(2026-11-23 10:00:00 UTC),
        correlation_id: Some("req-01".into()),
        causation_id: None,
        actor: Some(Actor {
            tenant_id: "acme".into(),
            actor_id: "alice".into(),
        }),
        payload: event.to_payload(),
    }
}

fn check_fixture<E: EventContract + PartialEq + std::fmt::Debug>(event: E, id: &str, version: u64) {
    let env = envelope(&event, id, version);
    let name = format!("{}.v{}.json", env.event_type, env.schema_version);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(&name);
    // Compared as JSON values: what a fixture pins is the meaning of each field, not the order
    // of keys inside objects (payloads are written in their types' field order).
    let rendered = serde_json::to_value(&env).unwrap();
    let stored = std::fs::read_to_string(&path).ok();
    let unchanged = stored
        .as_deref()
        .is_some_and(|text| serde_json::from_str::<serde_json::Value>(text).unwrap() == rendered);
    if !unchanged && std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&rendered).unwrap() + "\n",
        )
        .unwrap();
    }
    let stored = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing fixture {name}; run with UPDATE_GOLDEN=1"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
        rendered,
        "fixture {name} changed: a shipped version never changes"
    );

    // Round trip: the stored JSON decodes to the typed event and encodes back to the same JSON.
    let parsed: EventEnvelope = serde_json::from_str(&stored).unwrap();
    let upcast = upcast::upcast(&upcast::registry(), parsed.clone());
    let decoded = E::decode(&upcast.event_type, upcast.schema_version, &upcast.payload)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(decoded, event);
    assert_eq!(
        decoded.to_payload().to_value().unwrap(),
        parsed.payload.to_value().unwrap()
    );
    // A recorded event read from a store keeps the payload's exact text.
    let recorded = RecordedEvent {
        sequence: 3,
        envelope: parsed,
    };
    let text = serde_json::to_string(&recorded).unwrap();
    assert_eq!(
        serde_json::from_str::<RecordedEvent>(&text).unwrap(),
        recorded
    );
}

#[test]
fn every_session_event_version_matches_its_golden_fixture() {
    for (i, event) in session_events().into_iter().enumerate() {
        check_fixture(event, "session-0123456789abcdef", i as u64 + 1);
    }
}

#[test]
fn every_invocation_event_version_matches_its_golden_fixture() {
    for (i, event) in invocation_events().into_iter().enumerate() {
        check_fixture(event, "inv-0123456789abcdef", i as u64 + 1);
    }
}

/// Every shipped version older than the current one: its fixture (never rewritten) read through
/// the upcasters must decode to the event it meant, at the current version.
#[test]
fn every_older_version_fixture_upcasts_to_the_event_it_recorded() {
    let older = [(
        "invocation.completed.v1.json",
        // v1 kept whole milliseconds: 3 ms is 3 000 000 ns.
        completed(3_000_000),
    )];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let registry = upcast::registry();
    for (name, expected) in older {
        let text = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|_| panic!("missing fixture {name}"));
        let stored: EventEnvelope = serde_json::from_str(&text).unwrap();
        assert!(stored.schema_version < expected.schema_version(), "{name}");
        let current = upcast::upcast(&registry, stored);
        assert_eq!(current.schema_version, expected.schema_version(), "{name}");
        let decoded = InvocationEvent::decode(
            &current.event_type,
            current.schema_version,
            &current.payload,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}");
    }
}

#[test]
fn every_current_version_has_a_fixture() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (event_type, version) in SessionEvent::CURRENT_VERSIONS
        .iter()
        .chain(InvocationEvent::CURRENT_VERSIONS.iter())
    {
        let path = dir.join(format!("{event_type}.v{version}.json"));
        assert!(
            path.exists(),
            "no golden fixture for {event_type} v{version}"
        );
    }
}

#[test]
fn a_newer_schema_version_is_refused_not_misread() {
    let env = envelope(&session_events().remove(3), "session-1", 1);
    let err = SessionEvent::decode(&env.event_type, 2, &env.payload).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnsupportedVersion {
            version: 2,
            current: 1,
            ..
        }
    ));
}

#[test]
fn an_unknown_event_type_is_refused() {
    let err = InvocationEvent::decode("invocation.teleported", 1, &json!({}).into()).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownType(_)));
}

#[test]
fn a_recorded_event_flattens_its_envelope_beside_the_sequence() {
    let rec = RecordedEvent {
        sequence: 7,
        envelope: envelope(&session_events().remove(3), "session-1", 4),
    };
    let text = serde_json::to_string(&rec).unwrap();
    assert!(text.starts_with(r#"{"sequence":7,"event_id":"#), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["event_type"], "session.closed");
    assert_eq!(v["payload"]["reason"], "expired");
    let back: RecordedEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(back, rec);
}

/// A newer build may record a code this one does not know: the shipped fixture with its code
/// changed decodes, keeps that code as written (never `internal`), and encodes back unchanged.
#[test]
fn an_error_code_this_build_does_not_know_survives_decoding_unchanged() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(dir.join("invocation.denied.v1.json")).unwrap();
    let mut stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    stored["payload"]["error"]["code"] = json!("quota_exhausted");
    let env: EventEnvelope = serde_json::from_value(stored.clone()).unwrap();
    let decoded = InvocationEvent::decode(&env.event_type, env.schema_version, &env.payload)
        .expect("an unknown code still decodes");
    let InvocationEvent::Denied(refused) = &decoded else {
        panic!("{decoded:?}")
    };
    assert!(matches!(refused.error.code, Code::Unknown(_)));
    assert_eq!(refused.error.code.as_str(), "quota_exhausted");
    assert_ne!(refused.error.code, ErrorCode::Internal);
    assert_eq!(
        decoded.to_payload().to_value().unwrap(),
        stored["payload"],
        "re-encoded as written"
    );
}
