//! The catalog: every tool the service offers.
