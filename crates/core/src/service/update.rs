//! `"update"` of a service: how a change of what its tasks run is rolled out — how many
//! slots at a time, in which order, how long each new task is watched, and what a failure
//! does. The defaults are the safe ones: one at a time, the new task started (and
//! healthy) before the old one stops, and an automatic rollback on the first failure.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{check_fields, describe};
use super::health::span_field;
use super::SpecError;
use crate::span::Span;

/// Whether a slot's new task starts before its old one stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// The new task must be healthy before the old one is stopped: the healthy replicas
    /// never drop below `replicas`, and up to `parallelism` extra tasks run meanwhile.
    #[default]
    StartFirst,
    /// The old task stops first: never more than `replicas` tasks, but up to
    /// `parallelism` fewer while a slot is replaced (needed when two copies cannot run
    /// side by side, e.g. one fixed host port).
    StopFirst,
}

/// What a rollout does once its failures pass `max_failure_ratio`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Roll the previous version out again, the same way.
    #[default]
    Rollback,
    /// Stop replacing slots; keep what runs until the next update.
    Pause,
    /// Carry on regardless.
    Continue,
}

impl UpdateOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StartFirst => "start-first",
            UpdateOrder::StopFirst => "stop-first",
        }
    }
}

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Rollback => "rollback",
            FailureAction::Pause => "pause",
            FailureAction::Continue => "continue",
        }
    }
}

/// The rollout policy. Every field has a default, so `{}` (or no `"update"`) is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct UpdatePolicy {
    /// Slots replaced at once (default 1; 0: all at once).
    pub parallelism: u32,
    /// Wait after a slot's new task is healthy before the next slot starts (default 0s).
    pub delay: Span,
    pub order: UpdateOrder,
    /// How long a new task without a health check must run to count as healthy, and how
    /// long one with a check has (after its start period) to become healthy (default 5s).
    pub monitor: Span,
    pub failure_action: FailureAction,
    /// The share of the replicas whose new tasks may fail before the failure action
    /// applies (default 0: the first failure), from 0 to 1.
    #[schemars(range(min = 0, max = 1))]
    pub max_failure_ratio: Ratio,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            parallelism: 1,
            delay: Span(0),
            order: UpdateOrder::StartFirst,
            monitor: Span::secs(5),
            failure_action: FailureAction::Rollback,
            max_failure_ratio: Ratio(0.0),
        }
    }
}

/// A number from 0 to 1 (checked when parsed), comparable for equality.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Ratio(pub f64);

// Ratios are parsed finite, so equality is an equivalence.
impl Eq for Ratio {}

impl std::hash::Hash for Ratio {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

const FIELDS: &[&str] = &[
    "parallelism",
    "delay",
    "order",
    "monitor",
    "failure_action",
    "max_failure_ratio",
];

impl UpdatePolicy {
    /// Parses and checks `"update"`; fields not given keep their defaults.
    pub fn from_json(value: &Value) -> Result<UpdatePolicy, SpecError> {
        let object = check_fields("update", value, FIELDS)?;
        let defaults = UpdatePolicy::default();
        let invalid = |field: &str, why: String| SpecError::Invalid {
            field: format!("update.{field}"),
            why,
        };
        let parallelism = match object.get("parallelism") {
            None | Some(Value::Null) => defaults.parallelism,
            Some(v) => match v.as_u64() {
                Some(n) if n <= 10_000 => n as u32,
                _ => {
                    return Err(invalid(
                        "parallelism",
                        format!(
                            "must be an integer from 0 (all at once) to 10000, got {}",
                            describe(v)
                        ),
                    ))
                }
            },
        };
        let order = match object.get("order") {
            None | Some(Value::Null) => defaults.order,
            Some(Value::String(s)) if s == "start-first" => UpdateOrder::StartFirst,
            Some(Value::String(s)) if s == "stop-first" => UpdateOrder::StopFirst,
            Some(v) => {
                return Err(invalid(
                    "order",
                    format!(
                        "must be \"start-first\" or \"stop-first\", got {}",
                        describe(v)
                    ),
                ))
            }
        };
        let failure_action = match object.get("failure_action") {
            None | Some(Value::Null) => defaults.failure_action,
            Some(Value::String(s)) if s == "rollback" => FailureAction::Rollback,
            Some(Value::String(s)) if s == "pause" => FailureAction::Pause,
            Some(Value::String(s)) if s == "continue" => FailureAction::Continue,
            Some(v) => {
                return Err(invalid(
                    "failure_action",
                    format!(
                        "must be \"rollback\", \"pause\" or \"continue\", got {}",
                        describe(v)
                    ),
                ))
            }
        };
        let max_failure_ratio = match object.get("max_failure_ratio") {
            None | Some(Value::Null) => defaults.max_failure_ratio,
            Some(v) => match v.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => Ratio(r),
                _ => {
                    return Err(invalid(
                        "max_failure_ratio",
                        format!("must be a number from 0 to 1, got {}", describe(v)),
                    ))
                }
            },
        };
        Ok(UpdatePolicy {
            parallelism,
            delay: span_field(object, "update.delay", "delay", defaults.delay)?,
            order,
            monitor: span_field(object, "update.monitor", "monitor", defaults.monitor)?,
            failure_action,
            max_failure_ratio,
        })
    }

    /// Slots replaced at once for `replicas` (parallelism 0 means all of them).
    pub fn batch(&self, replicas: u32) -> u32 {
        match self.parallelism {
            0 => replicas.max(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_the_safe_ones() {
        let policy = UpdatePolicy::from_json(&json!({})).expect("empty");
        assert_eq!(policy, UpdatePolicy::default());
        assert_eq!(
            serde_json::to_value(policy).expect("json"),
            json!({"parallelism": 1, "delay": "0s", "order": "start-first", "monitor": "5s",
                   "failure_action": "rollback", "max_failure_ratio": 0.0})
        );
        let stored: UpdatePolicy =
            serde_json::from_value(json!({"order": "stop-first"})).expect("reads");
        assert_eq!(stored.order, UpdateOrder::StopFirst);
        assert_eq!(stored.parallelism, 1);
    }

    #[test]
    fn parses_every_field() {
        let policy = UpdatePolicy::from_json(
            &json!({"parallelism": 2, "delay": "1s", "order": "stop-first",
            "monitor": "10s", "failure_action": "pause", "max_failure_ratio": 0.25}),
        )
        .expect("full");
        assert_eq!(
            policy,
            UpdatePolicy {
                parallelism: 2,
                delay: Span(1000),
                order: UpdateOrder::StopFirst,
                monitor: Span(10_000),
                failure_action: FailureAction::Pause,
                max_failure_ratio: Ratio(0.25),
            }
        );
        assert_eq!(policy.batch(10), 2);
        assert_eq!(
            UpdatePolicy {
                parallelism: 0,
                ..policy
            }
            .batch(10),
            10
        );
    }

    #[test]
    fn refuses_bad_policies_naming_the_field() {
        for (body, expected) in [
            (json!([]), "'update' must be an object"),
            (json!({"parallelism": -1}), "update.parallelism"),
            (json!({"order": "first"}), "start-first"),
            (
                json!({"failure_action": "retry"}),
                "\"rollback\", \"pause\" or \"continue\"",
            ),
            (json!({"max_failure_ratio": 2}), "from 0 to 1"),
            (json!({"monitor": "forever"}), "update.monitor"),
            (json!({"paralelism": 2}), "did you mean 'parallelism'"),
        ] {
            let err = UpdatePolicy::from_json(&body)
                .expect_err(&body.to_string())
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
