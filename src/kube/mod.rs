//! The Kubernetes runner backend (`WORKSPACE_BACKEND=kubernetes`, ADR 0011): its
//! `WORKSPACE_K8S_*` settings ([`config::KubeSettings`]), a session's runner pod as a pure
//! function ([`pod::runner_pod`]), the pod operations on the API server ([`client`]), the
//! runner seam on pods ([`provider::KubeRunnerProvider`]), the warm pool ([`pool`]) and the
//! multiplexed exec-stream transport ([`transport`]).

pub mod client;
pub mod config;
pub mod pod;
pub mod pool;
pub mod provider;
pub mod transport;
