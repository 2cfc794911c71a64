//! What happens to a service's tasks when their worker is cut off from the manager:
//! `"on_disconnect": "replace" | "stop"` (see `crate::lease` for the times).
//!
//! `replace` (the default) puts availability first: the task is replaced once the worker
//! is declared down, and the cut-off copy is stopped the moment its agent reaches the
//! manager again — for the length of the split, a slot may run twice. `stop` puts "at
//! most one copy" first (singletons, stateful services): the agent stops the task itself
//! once its lease has not been renewed for the lease time, and the manager starts a
//! replacement only after the lease, the task's stop grace period and a margin have
//! passed since the last renewal it acknowledged.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::describe;
use super::SpecError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    /// Replaced once its worker is declared down; the cut-off copy is stopped when the
    /// worker comes back.
    #[default]
    Replace,
    /// Stopped by its own agent when the worker's lease runs out; replaced only after
    /// the lease, the stop grace period and a margin.
    Stop,
}

impl OnDisconnect {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDisconnect::Replace => "replace",
            OnDisconnect::Stop => "stop",
        }
    }

    pub fn parse(text: &str) -> Option<OnDisconnect> {
        [OnDisconnect::Replace, OnDisconnect::Stop]
            .into_iter()
            .find(|c| c.as_str() == text)
    }

    /// Reads the field `field` of a request body.
    pub fn from_json(field: &str, value: &Value) -> Result<OnDisconnect, SpecError> {
        let invalid = |got: String| SpecError::Invalid {
            field: field.to_string(),
            why: format!("must be \"replace\" or \"stop\", got {got}"),
        };
        match value {
            Value::String(s) => OnDisconnect::parse(s).ok_or_else(|| invalid(format!("{s:?}"))),
            other => Err(invalid(describe(other))),
        }
    }

    pub fn is_replace(&self) -> bool {
        *self == OnDisconnect::Replace
    }
}

impl std::fmt::Display for OnDisconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_two_policies_and_names_the_field_otherwise() {
        assert_eq!(
            OnDisconnect::from_json("on_disconnect", &json!("stop")).ok(),
            Some(OnDisconnect::Stop)
        );
        assert_eq!(
            OnDisconnect::from_json("on_disconnect", &json!("replace")).ok(),
            Some(OnDisconnect::Replace)
        );
        let e = OnDisconnect::from_json("on_disconnect", &json!("kill"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("on_disconnect") && e.contains("\"kill\""), "{e}");
        let e = OnDisconnect::from_json("on_disconnect", &json!(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("on_disconnect"), "{e}");
    }
}
