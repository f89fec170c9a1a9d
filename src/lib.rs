//! The workspace execution service: a governed, event-sourced execution plane for AI coding
//! agents. See `docs/architecture.md` for the picture and the code map.

pub mod alloc;
pub mod api;
pub mod app;
pub mod artifacts;
pub mod config;
pub mod domain;
pub mod error_code;
pub mod eventstore;
pub mod executor;
pub mod ids;
pub mod invocations;
pub mod kube;
pub mod live;
pub mod policy;
pub mod projector;
pub mod readmodel;
pub mod replay;
pub mod runner;
pub mod secret;
pub mod sessions;
pub mod telemetry;
pub mod tools;
pub mod workqueue;
