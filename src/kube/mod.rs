//! The Kubernetes runner backend: its `WORKSPACE_K8S_*` settings ([`config::KubeSettings`]),
//! a session's runner pod ([`pod::runner_pod`]) and the pod janitor ([`janitor::Janitor`]).
//! Everything that talks to a cluster takes a [`kube::Client`] as a parameter; the one place
//! a client is built from the environment is [`client_from_environment`].

pub mod config;
pub mod janitor;
pub mod pod;

/// The API client of this process: `KUBECONFIG`, else `~/.kube/config`, else the in-cluster
/// service account (kube's `Client::try_default`, the original's order). The wiring of the
/// kubernetes backend calls it once and hands the client to the executor
/// (`Executor::with_kube`) and the janitor.
pub async fn client_from_environment() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}
