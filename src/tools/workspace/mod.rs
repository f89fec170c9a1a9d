//! The `workspace.*` family: operations on the session's workspace as a whole. Today
//! `workspace.undo_edit`, which puts back a file as it was before the last `fs.edit`,
//! `fs.insert` or `fs.write_file` changed it.
//!
//! The snapshots live in the session's runner, outside the workspace tree (see
//! [`crate::runner::undo`]); this family only asks the runner to restore one. Like every file
//! tool it never touches the host filesystem.

use crate::tools::catalog::Registry;

mod undo_edit;

/// Adds every tool of the family to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(undo_edit::UndoEdit);
}
