//! The `fs.*` family.
