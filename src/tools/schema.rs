//! Validation of tool arguments against a tool's input JSON Schema.
