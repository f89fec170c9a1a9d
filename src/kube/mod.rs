//! The Kubernetes runner backend's pure parts: its `WORKSPACE_K8S_*` settings
//! ([`config::KubeSettings`]) and a session's runner pod ([`pod::runner_pod`]). Nothing here
//! talks to a cluster or is wired into session creation yet; the provider that creates, waits
//! for and deletes the pods will use these.

pub mod config;
pub mod janitor;
pub mod pod;
