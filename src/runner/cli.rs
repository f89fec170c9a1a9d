//! The `workspace runner` role: the agent that runs inside a session's sandbox.
