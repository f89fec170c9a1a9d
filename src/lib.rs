//! The workspace execution service: a governed, event-sourced execution plane for AI coding
//! agents. See `docs/architecture.md` for the picture and the code map.

pub mod error_code;
pub mod eventstore;
pub mod ids;
pub mod policy;
pub mod runner;
pub mod tools;
