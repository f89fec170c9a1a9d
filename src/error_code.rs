//! The stable error codes of the API (API.md's table). The types live in the event contract
//! (`workspace_events`), where an error crosses events typed; this path keeps naming them.

pub use workspace_events::{Code, ErrorCode, UnknownCode};
