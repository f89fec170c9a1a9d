//! The `fs.*` family: files and directories of the session's workspace.
//!
//! `spec` holds the metadata of the 14 tools, `handler` their handlers (runner requests in,
//! tool outputs out), `tests` the end-to-end tests against a real in-process runner. The family
//! never touches the host filesystem: every operation is a runner request, confined by the
//! runner to the workspace.

mod handler;
pub mod spec;
#[cfg(test)]
mod tests;

use super::Tool;

/// Every tool of the family, in catalog order.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool {
            spec: spec::copy(),
            handler: handler::copy,
        },
        Tool {
            spec: spec::delete(),
            handler: handler::delete,
        },
        Tool {
            spec: spec::edit(),
            handler: handler::edit,
        },
        Tool {
            spec: spec::glob(),
            handler: handler::glob,
        },
        Tool {
            spec: spec::insert(),
            handler: handler::insert,
        },
        Tool {
            spec: spec::list(),
            handler: handler::list,
        },
        Tool {
            spec: spec::mkdir(),
            handler: handler::mkdir,
        },
        Tool {
            spec: spec::move_(),
            handler: handler::move_,
        },
        Tool {
            spec: spec::patch(),
            handler: handler::patch,
        },
        Tool {
            spec: spec::read_file(),
            handler: handler::read_file,
        },
        Tool {
            spec: spec::read_lines(),
            handler: handler::read_lines,
        },
        Tool {
            spec: spec::search(),
            handler: handler::search,
        },
        Tool {
            spec: spec::stat(),
            handler: handler::stat,
        },
        Tool {
            spec: spec::write_file(),
            handler: handler::write_file,
        },
    ]
}
