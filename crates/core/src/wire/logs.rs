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

/// The query of a logs request, the manager's (`GET /api/v1/service/<name>/logs`) and an
/// agent's (`GET /tasks/<task id>/logs`) alike: each value as written, read by
/// `crate::logs` (`parse_flag`, `parse_tail`, `parse_since`), so both say the same
/// thing about a bad one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogsQuery {
    /// Keep the stream open and give lines as they are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<String>,
    /// Only the last N lines of each replica (`all`: every line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
    /// Only lines from this time: RFC 3339, Unix seconds, or a duration before now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Show each line's time (the manager's merged stream; an agent always sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamps: Option<String>,
}
