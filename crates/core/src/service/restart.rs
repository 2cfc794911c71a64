//! What happens when a task exits: `"restart": {"condition": "any" | "on-failure" |
//! "none", "max_attempts": 0, "delay": "1s"}`. `any` (the default) replaces every task
//! that ends; `on-failure` leaves a task that exited 0 `complete`, so `replicas: N` of a
//! command that finishes are one-off jobs; `none` replaces nothing. The first failure of a
//! slot (its first ever, or the first after a healthy run) is replaced at once; `delay`
//! is the wait after the second failure in a row, doubled with each next one up to a
//! minute (`reconcile::restart_delay`: 0, 1 s, 2 s, 4 s, … 60 s by default).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{check_fields, describe};
use super::health::span_field;
use super::SpecError;
use crate::span::Span;
use crate::{Task, TaskState};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Replace every task that ends (a service that should always run).
    #[default]
    Any,
    /// Replace a task that failed; one that exited 0 is done.
    OnFailure,
    /// Replace nothing: each slot runs once.
    None,
}

impl RestartCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartCondition::Any => "any",
            RestartCondition::OnFailure => "on-failure",
            RestartCondition::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<RestartCondition> {
        [
            RestartCondition::Any,
            RestartCondition::OnFailure,
            RestartCondition::None,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

/// The default wait after the second failure in a row: the backoff starts at a second.
pub const DEFAULT_RESTART_DELAY: Span = Span::secs(1);

/// The shortest wait after the second failure in a row.
pub const MIN_RESTART_DELAY: Span = Span(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct RestartPolicy {
    #[serde(default)]
    pub condition: RestartCondition,
    /// The most restarts of one slot after failures in a row (0: no limit): with 2, a
    /// slot runs at most 3 times in a row that fail, then it is given up (Swarm's
    /// `--restart-max-attempts`).
    #[serde(default)]
    pub max_attempts: u32,
    /// The wait after the second failure in a row (the first is replaced at once);
    /// doubled with each next one, up to a minute.
    #[serde(default = "default_delay")]
    pub delay: Span,
}

fn default_delay() -> Span {
    DEFAULT_RESTART_DELAY
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            max_attempts: 0,
            delay: DEFAULT_RESTART_DELAY,
        }
    }
}

/// What the restart policy makes of a slot whose latest task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterExit {
    /// Replace it (after the backoff, for a failure).
    Replace,
    /// The slot is done: it completed, or its condition does not restart it; `why` is
    /// for people.
    Done(String),
}

impl RestartPolicy {
    pub fn from_json(field: &str, value: &Value) -> Result<RestartPolicy, SpecError> {
        let object = check_fields(field, value, &["condition", "max_attempts", "delay"])?;
        let condition = match object.get("condition") {
            None | Some(Value::Null) => RestartCondition::Any,
            Some(Value::String(s)) => {
                RestartCondition::parse(s).ok_or_else(|| SpecError::Invalid {
                    field: format!("{field}.condition"),
                    why: format!("must be any, on-failure or none, got {s:?}"),
                })?
            }
            Some(other) => {
                return Err(SpecError::Invalid {
                    field: format!("{field}.condition"),
                    why: format!("must be any, on-failure or none, got {}", describe(other)),
                })
            }
        };
        let max_attempts = match object.get("max_attempts") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(m) if m <= 1_000_000 => m as u32,
                _ => {
                    return Err(SpecError::Invalid {
                        field: format!("{field}.max_attempts"),
                        why: format!("must be an integer from 0 (no limit) to 1000000, got {n}"),
                    })
                }
            },
            Some(other) => {
                return Err(SpecError::Invalid {
                    field: format!("{field}.max_attempts"),
                    why: format!("must be an integer, got {}", describe(other)),
                })
            }
        };
        let delay = span_field(
            object,
            &format!("{field}.delay"),
            "delay",
            DEFAULT_RESTART_DELAY,
        )?;
        if delay.millis() < MIN_RESTART_DELAY.millis() {
            return Err(SpecError::Invalid {
                field: format!("{field}.delay"),
                why: format!(
                    "must be at least {MIN_RESTART_DELAY}: a crash-looping task would be replaced on every pass, got {delay}"
                ),
            });
        }
        Ok(RestartPolicy {
            condition,
            max_attempts,
            delay,
        })
    }

    /// What happens to a slot whose latest task is `last` (ended). `failures`: how many
    /// failed in a row, counting this one if it failed.
    pub fn after_exit(&self, last: &Task, failures: u32) -> AfterExit {
        match (last.state, self.condition) {
            (TaskState::Complete, RestartCondition::OnFailure | RestartCondition::None) => {
                AfterExit::Done("completed".into())
            }
            (TaskState::Failed, RestartCondition::None) => {
                AfterExit::Done("failed; not restarted (restart condition none)".into())
            }
            (TaskState::Failed, _) if self.max_attempts > 0 && failures > self.max_attempts => {
                AfterExit::Done(format!(
                    "failed {failures} times in a row; not restarted again (restart max_attempts {})",
                    self.max_attempts
                ))
            }
            _ => AfterExit::Replace,
        }
    }
}
