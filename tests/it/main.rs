//! Integration tests, linked into one binary. They drive the real binary, a real bubblewrap
//! sandbox, real git and the real HTTP server on port 0.

mod runner;
