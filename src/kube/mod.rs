//! The Kubernetes runner backend (`WORKSPACE_BACKEND=kubernetes`, ADR 0011): its
//! `WORKSPACE_K8S_*` settings ([`config::KubeSettings`]), a session's runner pod as a pure
//! function ([`pod::runner_pod`]), the pod operations on the API server ([`client`]), the
//! runner seam on pods ([`provider::KubeRunnerProvider`]), the warm pool ([`pool`]), the
//! multiplexed exec-stream transport ([`transport`]) and the pod janitor ([`janitor::Janitor`]).
//! Everything that talks to a cluster takes a [`kube::Client`] as a parameter; the one place
//! a client is built from the environment is [`client_from_environment`].

pub mod client;
pub mod config;
pub mod janitor;
pub mod pod;
pub mod pool;
pub mod provider;
pub mod transport;

/// The API client of this process: `KUBECONFIG`, else `~/.kube/config`, else the in-cluster
/// service account (kube's `Client::try_default`, the original's order). The wiring of the
/// kubernetes backend calls it once and hands the client to the executor
/// (`Executor::with_kube`) and the janitor.
pub async fn client_from_environment() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}
