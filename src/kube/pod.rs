//! A session's runner pod, as a pure function of the settings and the session
//! ([`runner_pod`]): no cluster, no clock, no randomness, so the same inputs always give the
//! same pod (checked against golden YAML in `tests/it/kube_pod.rs`).
//!
//! The pod: an init container that clones the repository into the workspace volume (with the
//! optional git credentials Secret, mounted in the init container only), then the runner
//! container, kept alive for the executor to reach through the pod's exec stream. Both run as
//! the configured non-root ids with every capability dropped, no privilege escalation, the
//! `RuntimeDefault` seccomp profile, requests and limits, and no service account token unless
//! configured. No host path appears anywhere in it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::{KubeConfigError, KubeSettings, ProfileError};
use crate::ids::SessionId;

/// The init container's script (inputs through the environment only).
pub const CLONE_SCRIPT: &str = include_str!("clone.sh");

/// Where the git credentials Secret is mounted in the init container.
pub const GIT_AUTH_MOUNT: &str = "/var/run/workspace-git-auth";
/// Name of the init container.
pub const INIT_CONTAINER: &str = "repo-init";
/// Label of runner pods that clone a repository: the only ones a NetworkPolicy lets reach the
/// git hosts.
pub const GIT_EGRESS_LABEL: &str = "workspace.io/git-egress";
/// `app` label of every runner pod (the janitor lists them by it).
pub const APP_LABEL: &str = "workspace-session";

/// What a runner pod is made for.
#[derive(Debug, Clone)]
pub struct RunnerPodRequest<'a> {
    /// The session.
    pub session_id: &'a SessionId,
    /// Its owner.
    pub tenant_id: &'a str,
    /// Its actor.
    pub actor_id: &'a str,
    /// The session's metadata (runner profile, git auth Secret).
    pub metadata: &'a BTreeMap<String, String>,
    /// Repository to clone, if any (already validated at the API edge).
    pub repo_url: Option<&'a str>,
    /// Branch or tag to clone.
    pub repo_ref: Option<&'a str>,
    /// The session's lifetime: the pod's `activeDeadlineSeconds`, so the kubelet stops it
    /// even if nothing else does.
    pub expires_in: Option<Duration>,
}

/// Why no pod could be made for a session. Both are the caller's: `invalid_argument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodSpecError {
    /// The metadata names a runner profile the operator did not configure.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The metadata names a git auth Secret that is not a valid name.
    #[error(transparent)]
    GitAuth(#[from] KubeConfigError),
}

impl PodSpecError {
    /// The stable error code at the API edge.
    pub fn code(&self) -> workspace_events::ErrorCode {
        workspace_events::ErrorCode::InvalidArgument
    }
}

/// A label value: lower-case, `[a-z0-9-_.]` (others become `-`), at most 63 characters,
/// starting and ending alphanumeric; `unknown` when nothing is left.
pub fn label_value(value: &str) -> String {
    let mapped: String = value
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "unknown".into()
    } else {
        trimmed.to_owned()
    }
}

/// The pod's name: `<prefix>-<session id>`, lower-cased, `[a-z0-9-]`, at most 63 characters.
pub fn pod_name(prefix: &str, session: &SessionId) -> String {
    let id: String = session
        .as_str()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("{prefix}-{}", id.trim_matches('-'));
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str, size_limit: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size_limit.into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The runner pod of a session.
pub fn runner_pod(
    settings: &KubeSettings,
    request: &RunnerPodRequest<'_>,
) -> Result<Pod, PodSpecError> {
    let chosen = settings.runner_image(request.metadata)?;
    let git_auth = settings.git_auth_secret(request.metadata)?;
    let name = pod_name(&settings.pod_prefix, request.session_id);

    let mut labels = BTreeMap::from([
        ("app".to_owned(), APP_LABEL.to_owned()),
        (
            "app.kubernetes.io/name".to_owned(),
            "workspace-runner".to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "workspace".to_owned(),
        ),
        (
            "workspace_id".to_owned(),
            label_value(request.session_id.as_str()),
        ),
        (
            "workspace_tenant".to_owned(),
            label_value(request.tenant_id),
        ),
        ("workspace_actor".to_owned(), label_value(request.actor_id)),
        (
            "workspace_profile".to_owned(),
            label_value(chosen.profile.as_deref().unwrap_or("default")),
        ),
    ]);
    // The clone needs the git hosts: deploy/'s `runner-git-egress` policy selects this label.
    // A pod without it gets no network at all.
    if request.repo_url.is_some_and(|u| !u.is_empty()) {
        labels.insert(GIT_EGRESS_LABEL.to_owned(), "true".to_owned());
    }
    // Labels are lossy (sanitised, truncated): the exact owner is kept in annotations.
    let annotations = BTreeMap::from([
        (
            "workspace.io/session-id".to_owned(),
            request.session_id.as_str().to_owned(),
        ),
        (
            "workspace.io/tenant-id".to_owned(),
            request.tenant_id.to_owned(),
        ),
        (
            "workspace.io/actor-id".to_owned(),
            request.actor_id.to_owned(),
        ),
    ]);

    let r = &settings.resources;
    let resources = ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), r.cpu_request.clone()),
            ("memory".to_owned(), r.memory_request.clone()),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_owned(), r.cpu_limit.clone()),
            ("memory".to_owned(), r.memory_limit.clone()),
        ])),
        ..ResourceRequirements::default()
    };
    let container_security = SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(settings.read_only_root_fs),
        run_as_non_root: Some(true),
        run_as_user: Some(settings.run_as_user),
        run_as_group: Some(settings.run_as_group),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    };

    let mut volumes = vec![
        empty_dir("workspace", &r.workspace_size_limit.0),
        empty_dir("home", "1Gi"),
        empty_dir("tmp", "1Gi"),
        empty_dir("init-home", "16Mi"),
    ];
    let mut init_mounts = vec![
        mount("workspace", "/workspace", false),
        mount("init-home", "/home/init", false),
        mount("tmp", "/tmp", false),
    ];
    if let Some(secret) = &git_auth {
        volumes.push(Volume {
            name: "git-auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                // Readable by the pod's fsGroup only.
                default_mode: Some(0o440),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        init_mounts.push(mount("git-auth", GIT_AUTH_MOUNT, true));
    }

    let init = Container {
        name: INIT_CONTAINER.into(),
        image: Some(
            settings
                .init_image
                .clone()
                .unwrap_or_else(|| chosen.image.clone()),
        ),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sh".into(), "-c".into(), CLONE_SCRIPT.into()]),
        env: Some(vec![
            env("WORKDIR", &settings.workdir),
            env("REPO_URL", request.repo_url.unwrap_or("")),
            env("REPO_REF", request.repo_ref.unwrap_or("")),
            env("AUTH", GIT_AUTH_MOUNT),
            env("HOME", "/home/init"),
            env("GIT_TERMINAL_PROMPT", "0"),
        ]),
        volume_mounts: Some(init_mounts),
        resources: Some(resources.clone()),
        security_context: Some(SecurityContext {
            // The clone writes only to its volumes, whatever the runner's setting.
            read_only_root_filesystem: Some(true),
            ..container_security.clone()
        }),
        ..Container::default()
    };
    let runner = Container {
        name: settings.container.clone(),
        image: Some(chosen.image),
        image_pull_policy: Some("IfNotPresent".into()),
        // Kept alive; the executor starts `workspace runner` through the exec stream.
        command: Some(vec!["sleep".into(), "infinity".into()]),
        working_dir: Some(settings.workdir.clone()),
        env: Some(vec![
            env("HOME", "/home/runner"),
            env("GIT_TERMINAL_PROMPT", "0"),
        ]),
        volume_mounts: Some(vec![
            mount("workspace", "/workspace", false),
            mount("home", "/home/runner", false),
            mount("tmp", "/tmp", false),
        ]),
        resources: Some(resources),
        security_context: Some(container_security),
        ..Container::default()
    };

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            service_account_name: settings.service_account.clone(),
            automount_service_account_token: Some(settings.automount_sa_token),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            share_process_namespace: Some(false),
            termination_grace_period_seconds: Some(5),
            active_deadline_seconds: request
                .expires_in
                .map(|d| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(settings.run_as_user),
                run_as_group: Some(settings.run_as_group),
                fs_group: Some(settings.fs_group),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            init_containers: Some(vec![init]),
            containers: vec![runner],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    })
}
