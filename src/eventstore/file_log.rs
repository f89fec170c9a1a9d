//! The embedded event store: an append-only log file.
