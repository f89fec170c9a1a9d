//! The runner role over a real socket and a real bubblewrap sandbox.
