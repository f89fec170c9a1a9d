//! The runtime gating of the `k8s.*` tools through the real server: a cluster tool on a local
//! session is denied (403 `policy_denied` "tool requires kubernetes runtime"), recorded as
//! `denied`, and absent from the session's tool listing; the delivery tools are hidden and
//! denied on a kubernetes session while `WORKSPACE_ENABLE_K8S_DELIVERY_TOOLS` is not true. No
//! tool reaches a cluster here: gating refuses before anything is queued.

use http::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use workspace::domain::{Session, SessionCommand};
use workspace::eventstore::{AggregateStore, CommandMetadata};
use workspace_events::{Principal, RuntimeRef, SessionCreated, WorkspaceSource};

use crate::support::{Backends, Mode, TestServer};

const DELIVERY: [&str; 3] = [
    "k8s.apply_manifest",
    "k8s.rollout_status",
    "k8s.restart_deployment",
];
const READ: [&str; 5] = [
    "k8s.get_deployments",
    "k8s.get_images",
    "k8s.get_logs",
    "k8s.get_pods",
    "k8s.get_services",
];

async fn tool_names(server: &TestServer, session: &str) -> Vec<String> {
    let (status, _, body) = server.get(&format!("/v1/sessions/{session}/tools")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn devops() -> Value {
    json!({"principal": {"tenant_id": "acme", "actor_id": "ops", "roles": ["devops"]}})
}

/// A ready session whose runtime is `kubernetes`, recorded directly (no runner pod exists:
/// the tests only reach the gating).
async fn kubernetes_session(server: &TestServer, id: &str) {
    let store: AggregateStore<Session> = AggregateStore::new(server.app().log.clone());
    let now = OffsetDateTime::now_utc();
    let meta = CommandMetadata::default();
    let created = SessionCreated {
        session_id: id.into(),
        principal: Principal {
            tenant_id: "acme".into(),
            actor_id: "ops".into(),
            roles: vec!["devops".into()],
        },
        source: WorkspaceSource::Empty,
        allowed_paths: vec![".".into()],
        metadata: Default::default(),
        created_at: now,
        expires_at: now + time::Duration::hours(1),
    };
    store
        .execute(id, SessionCommand::Create(created), &(), &meta)
        .await
        .unwrap();
    let runtime = RuntimeRef {
        kind: "kubernetes".into(),
        isolation: "pod".into(),
        workdir: "/workspace/repo".into(),
        namespace: Some("workspace-runners".into()),
        pod_name: Some(format!("ws-{id}")),
    };
    store
        .execute(
            id,
            SessionCommand::MarkProvisioned { runtime, at: now },
            &(),
            &meta,
        )
        .await
        .unwrap();
    // Appended beside the API: the read models fold it when asked.
    server.app().projector.catch_up().await.unwrap();
    let (status, _, view) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["session"]["status"], "ready", "{view}");
    assert_eq!(view["session"]["runtime"]["kind"], "kubernetes", "{view}");
}

#[tokio::test]
async fn a_cluster_tool_on_a_local_session_is_denied_recorded_and_hidden() {
    let (server, _dir) = TestServer::start().await;
    let (status, body) = server.try_create_session(devops()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["session"]["runtime"]["kind"], "local");
    let session = body["session"]["id"].as_str().unwrap().to_owned();

    let names = tool_names(&server, &session).await;
    assert!(names.iter().any(|n| n == "fs.read_file"));
    assert!(
        !names.iter().any(|n| n.starts_with("k8s.")),
        "cluster tools are hidden on a local session: {names:?}"
    );

    for (tool, body) in [
        ("k8s.get_pods", json!({"args": {}})),
        (
            "k8s.apply_manifest",
            json!({"approved": true, "args": {"manifest": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}}),
        ),
    ] {
        let (status, answer) = server.invoke(&session, tool, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{tool}: {answer}");
        assert_eq!(answer["error"]["code"], "policy_denied");
        assert_eq!(
            answer["error"]["message"],
            "tool requires kubernetes runtime"
        );
        assert_eq!(answer["invocation"]["status"], "denied");
        let id = answer["invocation"]["id"].as_str().unwrap();
        let (status, _, recorded) = server.get(&format!("/v1/invocations/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(recorded["invocation"]["status"], "denied");
        assert_eq!(
            recorded["invocation"]["error"]["message"],
            "tool requires kubernetes runtime"
        );
        let events = server
            .event_types(&format!("/v1/invocations/{id}/events"))
            .await;
        assert_eq!(
            events,
            ["invocation.denied"],
            "{tool}: refused before it was queued"
        );
    }
}

#[tokio::test]
async fn the_gating_comes_before_argument_validation() {
    let (server, _dir) = TestServer::start().await;
    let (_, body) = server.try_create_session(devops()).await;
    let session = body["session"]["id"].as_str().unwrap().to_owned();
    let (status, answer) = server
        .invoke(
            &session,
            "k8s.get_logs",
            json!({"args": {"no_such_argument": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "tool requires kubernetes runtime"
    );
}

#[tokio::test]
async fn delivery_tools_are_hidden_and_denied_on_kubernetes_sessions_unless_enabled() {
    let (server, _dir) = TestServer::start().await;
    let session = "session-k8sgating000001";
    kubernetes_session(&server, session).await;
    let names = tool_names(&server, session).await;
    for tool in READ {
        assert!(names.iter().any(|n| n == tool), "{tool} listed: {names:?}");
    }
    for tool in DELIVERY {
        assert!(!names.iter().any(|n| n == tool), "{tool} hidden: {names:?}");
        let (status, answer) = server
            .invoke(
                session,
                tool,
                json!({"approved": true, "args": {"deployment_name": "web"}}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{tool}: {answer}");
        assert_eq!(answer["error"]["code"], "policy_denied");
        assert_eq!(
            answer["error"]["message"],
            "k8s delivery tools are disabled by configuration"
        );
        assert_eq!(answer["invocation"]["status"], "denied");
    }
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let enabled = TestServer::start_with(&Backends::start(Mode::Embedded), dir.path(), |c| {
        c.k8s_delivery_tools = true;
    })
    .await;
    let session = "session-k8sgating000002";
    kubernetes_session(&enabled, session).await;
    let names = tool_names(&enabled, session).await;
    for tool in DELIVERY.iter().chain(READ.iter()) {
        assert!(names.iter().any(|n| n == tool), "{tool} listed: {names:?}");
    }
    // Still governed: approval first.
    let (status, answer) = enabled
        .invoke(
            session,
            "k8s.rollout_status",
            json!({"args": {"deployment_name": "web"}}),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED, "{answer}");
    assert_eq!(answer["error"]["code"], "approval_required");
}
