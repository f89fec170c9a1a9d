//! The `WORKSPACE_K8S_*` settings of the Kubernetes runner backend: declared once as clap
//! arguments (each with its environment variable), checked as a whole by
//! [`KubeSettings::try_from`], and the server-side choice of a session's runner image
//! ([`KubeSettings::runner_image`]). Nothing here talks to a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A configuration of the Kubernetes backend that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KubeConfigError(pub String);

/// Why a session's runner image could not be chosen. The API answers it as
/// `invalid_argument`: the caller asked for something the operator did not configure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The metadata names a profile the bundles do not have.
    #[error("unknown runner profile {profile:?} (metadata {key}); known profiles: {known}")]
    Unknown {
        /// The metadata key.
        key: String,
        /// The profile asked for.
        profile: String,
        /// The configured profiles, comma separated (or `none`).
        known: String,
    },
}

impl ProfileError {
    /// The stable error code this maps to at the API edge.
    pub fn code(&self) -> workspace_events::ErrorCode {
        workspace_events::ErrorCode::InvalidArgument
    }
}

/// The `WORKSPACE_K8S_*` arguments, as parsed.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Namespace of the session runner pods (and the default of the k8s.* tools).
    #[arg(
        long = "k8s-namespace",
        env = "WORKSPACE_K8S_NAMESPACE",
        default_value = "workspace-runners"
    )]
    pub namespace: String,
    /// Service account of runner pods (unset: the namespace's default; give one with no role).
    #[arg(long = "k8s-service-account", env = "WORKSPACE_K8S_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Runner image of sessions that ask for no profile (an image built from
    /// runner-images/Dockerfile: it must hold the `workspace` binary). Required.
    #[arg(long = "k8s-runner-image", env = "WORKSPACE_K8S_RUNNER_IMAGE")]
    pub runner_image: Option<String>,
    /// JSON object `{"profile": "image", ...}`: the images sessions may choose by profile.
    #[arg(
        long = "k8s-runner-image-bundles-json",
        env = "WORKSPACE_K8S_RUNNER_IMAGE_BUNDLES_JSON"
    )]
    pub runner_image_bundles_json: Option<String>,
    /// Session metadata key naming the runner profile.
    #[arg(
        long = "k8s-runner-profile-metadata-key",
        env = "WORKSPACE_K8S_RUNNER_PROFILE_METADATA_KEY",
        default_value = "runner_profile"
    )]
    pub runner_profile_metadata_key: String,
    /// Image of the init container that clones the repository (unset: the session's runner
    /// image, which has git).
    #[arg(long = "k8s-init-image", env = "WORKSPACE_K8S_INIT_IMAGE")]
    pub init_image: Option<String>,
    /// Where the repository is checked out in the pod (below /workspace).
    #[arg(
        long = "k8s-workdir",
        env = "WORKSPACE_K8S_WORKDIR",
        default_value = "/workspace/repo"
    )]
    pub workdir: String,
    /// Name of the runner container.
    #[arg(
        long = "k8s-container",
        env = "WORKSPACE_K8S_CONTAINER",
        default_value = "runner"
    )]
    pub container: String,
    /// Prefix of runner pod names.
    #[arg(
        long = "k8s-pod-prefix",
        env = "WORKSPACE_K8S_POD_PREFIX",
        default_value = "ws"
    )]
    pub pod_prefix: String,
    /// How long a runner pod may take to be ready before the session fails.
    #[arg(
        long = "k8s-ready-timeout-seconds",
        env = "WORKSPACE_K8S_READY_TIMEOUT_SECONDS",
        default_value_t = 120
    )]
    pub ready_timeout_seconds: u64,
    /// Default Secret with git credentials for the clone (`.netrc`, or `token` [+ `username`],
    /// or `ssh-privatekey` [+ `known_hosts`]).
    #[arg(long = "k8s-git-auth-secret", env = "WORKSPACE_K8S_GIT_AUTH_SECRET")]
    pub git_auth_secret: Option<String>,
    /// Session metadata key naming the git credentials Secret (overrides the default).
    #[arg(
        long = "k8s-git-auth-metadata-key",
        env = "WORKSPACE_K8S_GIT_AUTH_METADATA_KEY",
        default_value = "git_auth_secret"
    )]
    pub git_auth_metadata_key: String,
    /// uid of runner pods (never 0).
    #[arg(
        long = "k8s-run-as-user",
        env = "WORKSPACE_K8S_RUN_AS_USER",
        default_value_t = 1000
    )]
    pub run_as_user: i64,
    /// gid of runner pods (never 0).
    #[arg(
        long = "k8s-run-as-group",
        env = "WORKSPACE_K8S_RUN_AS_GROUP",
        default_value_t = 1000
    )]
    pub run_as_group: i64,
    /// fsGroup of runner pods: owns the workspace volume.
    #[arg(
        long = "k8s-fs-group",
        env = "WORKSPACE_K8S_FS_GROUP",
        default_value_t = 1000
    )]
    pub fs_group: i64,
    /// Read-only root filesystem in runner containers (the workspace, home and /tmp are
    /// volumes).
    #[arg(
        long = "k8s-read-only-root-fs",
        env = "WORKSPACE_K8S_READ_ONLY_ROOT_FS",
        default_value = "true",
        action = clap::ArgAction::Set,
        value_parser = parse_bool
    )]
    pub read_only_root_fs: bool,
    /// Mount the service account token in runner pods (the tools never need it).
    #[arg(
        long = "k8s-automount-sa-token",
        env = "WORKSPACE_K8S_AUTOMOUNT_SA_TOKEN",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = parse_bool
    )]
    pub automount_sa_token: bool,
    /// CPU request of the runner container.
    #[arg(
        long = "k8s-runner-cpu-request",
        env = "WORKSPACE_K8S_RUNNER_CPU_REQUEST",
        default_value = "250m"
    )]
    pub cpu_request: String,
    /// CPU limit of the runner container.
    #[arg(
        long = "k8s-runner-cpu-limit",
        env = "WORKSPACE_K8S_RUNNER_CPU_LIMIT",
        default_value = "2"
    )]
    pub cpu_limit: String,
    /// Memory request of the runner container.
    #[arg(
        long = "k8s-runner-memory-request",
        env = "WORKSPACE_K8S_RUNNER_MEMORY_REQUEST",
        default_value = "512Mi"
    )]
    pub memory_request: String,
    /// Memory limit of the runner container.
    #[arg(
        long = "k8s-runner-memory-limit",
        env = "WORKSPACE_K8S_RUNNER_MEMORY_LIMIT",
        default_value = "2Gi"
    )]
    pub memory_limit: String,
    /// Size limit of the workspace volume.
    #[arg(
        long = "k8s-workspace-size-limit",
        env = "WORKSPACE_K8S_WORKSPACE_SIZE_LIMIT",
        default_value = "10Gi"
    )]
    pub workspace_size_limit: String,
    /// Warm runner pods kept ready per profile (the default image and each bundle), claimed
    /// by sessions with an empty workspace; 0 turns the pool off.
    #[arg(
        long = "k8s-warm-pool-size",
        env = "WORKSPACE_K8S_WARM_POOL_SIZE",
        default_value_t = 0
    )]
    pub warm_pool_size: usize,
    /// How often the warm pool is refilled.
    #[arg(
        long = "k8s-warm-pool-refill-seconds",
        env = "WORKSPACE_K8S_WARM_POOL_REFILL_SECONDS",
        default_value_t = 5
    )]
    pub warm_pool_refill_seconds: u64,
}

/// Parses one group of arguments (the [`KubeArgs`], the janitor's) from `flags` alone, as
/// if given after the program name: how tests build the settings an operator's flags give.
pub fn parse_flags<A: clap::Args + clap::FromArgMatches>(flags: &[&str]) -> Result<A, clap::Error> {
    let matches = A::augment_args(clap::Command::new("workspace"))
        .try_get_matches_from(std::iter::once("workspace").chain(flags.iter().copied()))?;
    A::from_arg_matches(&matches)
}

/// `1,true,yes,on` / `0,false,no,off`, any case (the seeds' booleans). Anything else is an
/// error, not the default.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (true/false, yes/no, 1/0, on/off)"
        )),
    }
}

/// Requests and limits of a runner pod's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerResources {
    /// CPU request.
    pub cpu_request: Quantity,
    /// CPU limit.
    pub cpu_limit: Quantity,
    /// Memory request.
    pub memory_request: Quantity,
    /// Memory limit.
    pub memory_limit: Quantity,
    /// The workspace volume's size limit.
    pub workspace_size_limit: Quantity,
}

/// The Kubernetes backend's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    /// Namespace of runner pods.
    pub namespace: String,
    /// Service account of runner pods.
    pub service_account: Option<String>,
    /// Image of sessions without a profile.
    pub runner_image: String,
    /// Profile (lower-cased) → image.
    pub bundles: BTreeMap<String, String>,
    /// Metadata key naming the profile.
    pub profile_key: String,
    /// Init container image; `None`: the runner image.
    pub init_image: Option<String>,
    /// Checkout directory in the pod.
    pub workdir: String,
    /// Runner container name.
    pub container: String,
    /// Pod name prefix.
    pub pod_prefix: String,
    /// Readiness deadline.
    pub ready_timeout: Duration,
    /// Default git credentials Secret.
    pub git_auth_secret: Option<String>,
    /// Metadata key naming a git credentials Secret.
    pub git_auth_key: String,
    /// uid, gid and fsGroup of runner pods.
    pub run_as_user: i64,
    /// gid.
    pub run_as_group: i64,
    /// fsGroup.
    pub fs_group: i64,
    /// Read-only root filesystem.
    pub read_only_root_fs: bool,
    /// Mount the account token.
    pub automount_sa_token: bool,
    /// Requests and limits.
    pub resources: RunnerResources,
    /// Warm pods per profile (0: no pool).
    pub warm_pool_size: usize,
    /// Refill period of the warm pool.
    pub warm_pool_refill: Duration,
}

/// A DNS-1123 label (a namespace, a container name, a Secret name part): lower-case
/// alphanumerics and `-`, starting and ending alphanumeric, at most `max` characters.
fn dns_label(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// A DNS-1123 subdomain (Secret and service account names).
fn dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(|part| dns_label(part, 63))
}

/// An image reference that names its registry (`registry.example.com/x:tag`,
/// `docker.io/library/debian@sha256:…`): short names would be resolved by each node's search
/// list.
fn qualified_image(image: &str) -> bool {
    let Some((registry, rest)) = image.split_once('/') else {
        return false;
    };
    (registry.contains('.') || registry.contains(':') || registry == "localhost")
        && !rest.is_empty()
        && !image.chars().any(char::is_whitespace)
}

fn quantity(name: &str, value: &str) -> Result<Quantity, KubeConfigError> {
    // The API server's quantity grammar: a decimal number and an optional suffix.
    let re = regex::Regex::new(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
        .map_err(|e| KubeConfigError(format!("quantity pattern: {e}")))?;
    if re.is_match(value) {
        Ok(Quantity(value.to_owned()))
    } else {
        Err(KubeConfigError(format!(
            "{name}={value:?} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 2Gi)"
        )))
    }
}

impl TryFrom<KubeArgs> for KubeSettings {
    type Error = KubeConfigError;

    fn try_from(args: KubeArgs) -> Result<Self, Self::Error> {
        let err = |m: String| Err(KubeConfigError(m));
        if !dns_label(&args.namespace, 63) {
            return err(format!(
                "WORKSPACE_K8S_NAMESPACE={:?} is not a namespace name (lower-case letters, digits and '-', at most 63)",
                args.namespace
            ));
        }
        let image = |name: &str, value: &str| -> Result<String, KubeConfigError> {
            if qualified_image(value) {
                Ok(value.to_owned())
            } else {
                Err(KubeConfigError(format!(
                    "{name}: image {value:?} must name its registry (e.g. registry.example.com/workspace/workspace-runner:base-0.1.0)"
                )))
            }
        };
        let runner_image = match args.runner_image.as_deref().filter(|s| !s.is_empty()) {
            Some(value) => image("WORKSPACE_K8S_RUNNER_IMAGE", value)?,
            None => {
                return err("WORKSPACE_K8S_RUNNER_IMAGE is required: an image built from runner-images/Dockerfile (it must hold the workspace binary)".into());
            }
        };
        let mut bundles = BTreeMap::new();
        if let Some(json) = args
            .runner_image_bundles_json
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            let map: BTreeMap<String, String> = serde_json::from_str(json).map_err(|e| {
                KubeConfigError(format!(
                    "WORKSPACE_K8S_RUNNER_IMAGE_BUNDLES_JSON is not a JSON object of profile to image: {e}"
                ))
            })?;
            for (profile, value) in map {
                let key = profile.trim().to_ascii_lowercase();
                if key.is_empty() {
                    return err(
                        "WORKSPACE_K8S_RUNNER_IMAGE_BUNDLES_JSON: an empty profile name".into(),
                    );
                }
                let value = image(
                    &format!("WORKSPACE_K8S_RUNNER_IMAGE_BUNDLES_JSON[{key}]"),
                    &value,
                )?;
                if bundles.insert(key.clone(), value).is_some() {
                    return err(format!(
                        "WORKSPACE_K8S_RUNNER_IMAGE_BUNDLES_JSON: profile {key:?} is given twice (names are case-insensitive)"
                    ));
                }
            }
        }
        let init_image = match args.init_image.as_deref().filter(|s| !s.is_empty()) {
            Some(value) => Some(image("WORKSPACE_K8S_INIT_IMAGE", value)?),
            None => None,
        };
        if !args.workdir.starts_with("/workspace/")
            || args
                .workdir
                .split('/')
                .any(|part| part == ".." || part == ".")
            || args.workdir.trim_end_matches('/') == "/workspace"
        {
            return err(format!(
                "WORKSPACE_K8S_WORKDIR={:?} must be a directory below /workspace (the workspace volume), e.g. /workspace/repo",
                args.workdir
            ));
        }
        if !dns_label(&args.container, 63) {
            return err(format!(
                "WORKSPACE_K8S_CONTAINER={:?} is not a container name",
                args.container
            ));
        }
        if !dns_label(&args.pod_prefix, 20) {
            return err(format!(
                "WORKSPACE_K8S_POD_PREFIX={:?} must be a short DNS label (at most 20 characters)",
                args.pod_prefix
            ));
        }
        if args.warm_pool_size > 100 {
            return err(format!(
                "WORKSPACE_K8S_WARM_POOL_SIZE={} is more than 100 idle pods per profile",
                args.warm_pool_size
            ));
        }
        if args.ready_timeout_seconds == 0 {
            return err("WORKSPACE_K8S_READY_TIMEOUT_SECONDS must be above 0".into());
        }
        for (name, value) in [
            (
                "WORKSPACE_K8S_SERVICE_ACCOUNT",
                args.service_account.as_deref(),
            ),
            (
                "WORKSPACE_K8S_GIT_AUTH_SECRET",
                args.git_auth_secret.as_deref(),
            ),
        ] {
            if let Some(value) = value.filter(|v| !v.is_empty())
                && !dns_subdomain(value)
            {
                return err(format!("{name}={value:?} is not a Kubernetes object name"));
            }
        }
        for (name, value) in [
            ("WORKSPACE_K8S_RUN_AS_USER", args.run_as_user),
            ("WORKSPACE_K8S_RUN_AS_GROUP", args.run_as_group),
            ("WORKSPACE_K8S_FS_GROUP", args.fs_group),
        ] {
            if value <= 0 || value > i64::from(u32::MAX) {
                return err(format!(
                    "{name}={value}: runner pods never run as root (0); give an id from 1 to 4294967295"
                ));
            }
        }
        if args.runner_profile_metadata_key.trim().is_empty()
            || args.git_auth_metadata_key.trim().is_empty()
        {
            return err("WORKSPACE_K8S_RUNNER_PROFILE_METADATA_KEY and WORKSPACE_K8S_GIT_AUTH_METADATA_KEY cannot be empty".into());
        }
        let resources = RunnerResources {
            cpu_request: quantity("WORKSPACE_K8S_RUNNER_CPU_REQUEST", &args.cpu_request)?,
            cpu_limit: quantity("WORKSPACE_K8S_RUNNER_CPU_LIMIT", &args.cpu_limit)?,
            memory_request: quantity("WORKSPACE_K8S_RUNNER_MEMORY_REQUEST", &args.memory_request)?,
            memory_limit: quantity("WORKSPACE_K8S_RUNNER_MEMORY_LIMIT", &args.memory_limit)?,
            workspace_size_limit: quantity(
                "WORKSPACE_K8S_WORKSPACE_SIZE_LIMIT",
                &args.workspace_size_limit,
            )?,
        };
        Ok(KubeSettings {
            namespace: args.namespace,
            service_account: args.service_account.filter(|s| !s.is_empty()),
            runner_image,
            bundles,
            profile_key: args.runner_profile_metadata_key,
            init_image,
            workdir: args.workdir.trim_end_matches('/').to_owned(),
            container: args.container,
            pod_prefix: args.pod_prefix,
            ready_timeout: Duration::from_secs(args.ready_timeout_seconds),
            git_auth_secret: args.git_auth_secret.filter(|s| !s.is_empty()),
            git_auth_key: args.git_auth_metadata_key,
            run_as_user: args.run_as_user,
            run_as_group: args.run_as_group,
            fs_group: args.fs_group,
            read_only_root_fs: args.read_only_root_fs,
            automount_sa_token: args.automount_sa_token,
            resources,
            warm_pool_size: args.warm_pool_size,
            warm_pool_refill: Duration::from_secs(args.warm_pool_refill_seconds.max(1)),
        })
    }
}

/// A session's runner image: the profile it names, or the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenImage {
    /// The profile (lower-cased), `None` for the default image.
    pub profile: Option<String>,
    /// The image.
    pub image: String,
}

impl KubeSettings {
    /// Chooses a session's runner image from its metadata, server-side: a profile named under
    /// the profile key must be one of the bundles (never an image reference); no profile (or
    /// an empty one) is the default image.
    pub fn runner_image(
        &self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ChosenImage, ProfileError> {
        let asked = metadata
            .get(&self.profile_key)
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty());
        let Some(profile) = asked else {
            return Ok(ChosenImage {
                profile: None,
                image: self.runner_image.clone(),
            });
        };
        match self.bundles.get(&profile) {
            Some(image) => Ok(ChosenImage {
                profile: Some(profile),
                image: image.clone(),
            }),
            None => Err(ProfileError::Unknown {
                key: self.profile_key.clone(),
                profile,
                known: if self.bundles.is_empty() {
                    "none".into()
                } else {
                    self.bundles.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }

    /// The git credentials Secret of a session: the one its metadata names (under the git
    /// auth key), else the default. A name that is not a Kubernetes object name is refused.
    pub fn git_auth_secret(
        &self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<String>, KubeConfigError> {
        match metadata
            .get(&self.git_auth_key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            Some(name) if dns_subdomain(name) => Ok(Some(name.to_owned())),
            Some(name) => Err(KubeConfigError(format!(
                "metadata {}={name:?} is not a Secret name",
                self.git_auth_key
            ))),
            None => Ok(self.git_auth_secret.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<KubeSettings, String> {
        let args = parse_flags::<KubeArgs>(args).map_err(|e| e.to_string())?;
        KubeSettings::try_from(args).map_err(|e| e.0)
    }

    const IMAGE: &str =
        "--k8s-runner-image=registry.example.com/workspace/workspace-runner:base-0.1.0";

    #[test]
    fn the_defaults_are_the_seeds_with_a_hardened_root_filesystem() {
        let s = parse(&[IMAGE]).expect("valid");
        assert_eq!(s.namespace, "workspace-runners");
        assert_eq!(s.profile_key, "runner_profile");
        assert_eq!(s.git_auth_key, "git_auth_secret");
        assert_eq!(s.workdir, "/workspace/repo");
        assert_eq!(
            (s.container.as_str(), s.pod_prefix.as_str()),
            ("runner", "ws")
        );
        assert_eq!(s.ready_timeout, Duration::from_secs(120));
        assert_eq!(
            (s.run_as_user, s.run_as_group, s.fs_group),
            (1000, 1000, 1000)
        );
        assert!(s.read_only_root_fs && !s.automount_sa_token);
        assert!(s.bundles.is_empty() && s.init_image.is_none());
    }

    #[test]
    fn a_missing_runner_image_is_refused_naming_the_setting() {
        let e = parse(&[]).expect_err("no image");
        assert!(e.contains("WORKSPACE_K8S_RUNNER_IMAGE is required"), "{e}");
    }

    #[test]
    fn a_short_image_name_is_refused() {
        let e = parse(&["--k8s-runner-image=alpine:3.20"]).expect_err("short");
        assert!(e.contains("must name its registry"), "{e}");
        let e = parse(&[
            IMAGE,
            r#"--k8s-runner-image-bundles-json={"toolchains":"toolchains:1"}"#,
        ])
        .expect_err("short bundle");
        assert!(
            e.contains("WORKSPACE_K8S_RUNNER_IMAGE_BUNDLES_JSON[toolchains]"),
            "{e}"
        );
    }

    #[test]
    fn invalid_bundles_json_is_refused() {
        let e = parse(&[IMAGE, "--k8s-runner-image-bundles-json=[1,2]"]).expect_err("array");
        assert!(e.contains("not a JSON object of profile to image"), "{e}");
        let e = parse(&[
            IMAGE,
            r#"--k8s-runner-image-bundles-json={"Fat":"r.example.com/a:1","fat":"r.example.com/b:1"}"#,
        ])
        .expect_err("duplicate");
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn root_ids_a_bad_workdir_and_bad_quantities_are_refused() {
        for (flag, wants) in [
            ("--k8s-run-as-user=0", "WORKSPACE_K8S_RUN_AS_USER=0"),
            ("--k8s-fs-group=-1", "WORKSPACE_K8S_FS_GROUP=-1"),
            ("--k8s-workdir=/etc", "WORKSPACE_K8S_WORKDIR"),
            ("--k8s-workdir=/workspace/../etc", "WORKSPACE_K8S_WORKDIR"),
            ("--k8s-workdir=/workspace", "WORKSPACE_K8S_WORKDIR"),
            (
                "--k8s-runner-memory-limit=2 GB",
                "WORKSPACE_K8S_RUNNER_MEMORY_LIMIT",
            ),
            ("--k8s-namespace=Runners", "WORKSPACE_K8S_NAMESPACE"),
            (
                "--k8s-git-auth-secret=my_secret",
                "WORKSPACE_K8S_GIT_AUTH_SECRET",
            ),
            (
                "--k8s-ready-timeout-seconds=0",
                "WORKSPACE_K8S_READY_TIMEOUT_SECONDS",
            ),
        ] {
            let e = parse(&[IMAGE, flag]).expect_err(flag);
            assert!(e.contains(wants), "{flag}: {e}");
        }
    }

    #[test]
    fn booleans_take_the_seeds_spellings_and_refuse_others() {
        let s = parse(&[
            IMAGE,
            "--k8s-read-only-root-fs=OFF",
            "--k8s-automount-sa-token=yes",
        ])
        .expect("valid");
        assert!(!s.read_only_root_fs && s.automount_sa_token);
        let e = parse(&[IMAGE, "--k8s-automount-sa-token=maybe"]).expect_err("not a boolean");
        assert!(e.contains("not a boolean"), "{e}");
    }

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_profile_selects_its_bundle_case_insensitively_and_none_selects_the_default() {
        let s = parse(&[IMAGE, r#"--k8s-runner-image-bundles-json={"Toolchains":"registry.example.com/w/r:toolchains-0.1.0"}"#])
            .expect("valid");
        let chosen = s
            .runner_image(&metadata(&[("runner_profile", " TOOLCHAINS ")]))
            .expect("known");
        assert_eq!(chosen.profile.as_deref(), Some("toolchains"));
        assert_eq!(chosen.image, "registry.example.com/w/r:toolchains-0.1.0");
        let chosen = s.runner_image(&metadata(&[])).expect("default");
        assert_eq!(
            (chosen.profile, chosen.image.as_str()),
            (
                None,
                "registry.example.com/workspace/workspace-runner:base-0.1.0"
            )
        );
    }

    #[test]
    fn an_unknown_profile_is_an_invalid_argument_and_never_an_image() {
        let s = parse(&[
            IMAGE,
            r#"--k8s-runner-image-bundles-json={"fat":"registry.example.com/w/r:fat-0.1.0"}"#,
        ])
        .expect("valid");
        for asked in ["secops", "registry.example.com/evil/image:1"] {
            let e = s
                .runner_image(&metadata(&[("runner_profile", asked)]))
                .expect_err(asked);
            assert_eq!(e.code(), workspace_events::ErrorCode::InvalidArgument);
            assert!(e.to_string().contains("known profiles: fat"), "{e}");
        }
        let without = parse(&[IMAGE]).expect("valid");
        let e = without
            .runner_image(&metadata(&[("runner_profile", "fat")]))
            .expect_err("no bundles");
        assert!(e.to_string().contains("known profiles: none"), "{e}");
    }

    #[test]
    fn the_git_auth_secret_comes_from_metadata_then_the_default() {
        let s = parse(&[IMAGE, "--k8s-git-auth-secret=default-git"]).expect("valid");
        assert_eq!(
            s.git_auth_secret(&metadata(&[])).expect("ok").as_deref(),
            Some("default-git")
        );
        assert_eq!(
            s.git_auth_secret(&metadata(&[("git_auth_secret", "team-git")]))
                .expect("ok")
                .as_deref(),
            Some("team-git")
        );
        assert!(
            s.git_auth_secret(&metadata(&[("git_auth_secret", "../x")]))
                .is_err()
        );
    }
}
