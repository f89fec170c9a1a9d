//! Integration tests, linked into one binary. They drive the real HTTP server on port 0, the
//! real runner binary in a real bubblewrap sandbox, and real git.

mod api;
mod artifact_tools;
mod artifacts;
mod asyncapi;
mod configuration;
mod degraded;
mod deploy;
mod deploy_stores;
mod distributed;
mod docs;
mod eventlog_contract;
mod git;
mod git_tools;
mod jetstream;
mod k8s_gating;
mod kube_api;
mod kube_pod;
mod lifecycle;
mod nats;
mod paths;
mod provisioning;
mod readmodel;
mod replay;
mod repo_tools;
mod roles;
mod runner;
mod runner_images;
mod seccomp;
mod sources;
mod startup;
mod store_wiring;
mod streams;
mod support;
mod valkey;
mod workqueue;
