//! Logs between an agent and the manager: an agent's `GET /tasks/<task id>/logs` answers
//! one `LogLineDoc` per line (newline-delimited JSON), which the manager merges into the
//! `text/plain` stream of `GET /api/v1/service/<name>/logs` (see `crate::logs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a line came from: the task's standard output or error, or its agent, which
/// says so when it cannot go on reading (the line's text says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    Stdout,
    Stderr,
    Agent,
}

/// One line of a task's output: `{"stream": "stdout", "time": 1764012345123456789,
/// "text": "listening on :8000"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogLineDoc {
    pub stream: LogSource,
    /// When it was written: nanoseconds since the Unix epoch.
    pub time: u64,
    /// The line, without its end of line.
    pub text: String,
}
