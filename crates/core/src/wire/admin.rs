//! What operators send and read to run workers and the spread: a worker's operator
//! labels (`PATCH /api/v1/workers/<name>/labels`) and a rebalance's moves (`POST
//! /api/v1/service/<name>/rebalance`, `POST /api/v1/rebalance`). Drain, activate and
//! remove take no body and answer the worker (`WorkerDoc`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body of `PATCH /api/v1/workers/<name>/labels`: labels to set and labels to remove,
/// over the ones its agent registers with. They are kept across its agent's
/// re-registrations.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// Labels to set: `{"disk": "ssd"}`.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Label keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl LabelRequest {
    /// Reads a request body field by field, so that a refusal names the field.
    pub fn from_json(body: &serde_json::Value) -> Result<LabelRequest, String> {
        let object = body
            .as_object()
            .ok_or_else(|| "request body must be a JSON object".to_string())?;
        let mut request = LabelRequest::default();
        for (key, value) in object {
            match key.as_str() {
                "set" => {
                    request.set = serde_json::from_value(value.clone()).map_err(|_| {
                        format!(
                            "field 'set' must be an object of label values, e.g. {{\"disk\": \"ssd\"}}, got {value}"
                        )
                    })?
                }
                "remove" => {
                    request.remove = serde_json::from_value(value.clone()).map_err(|_| {
                        format!(
                            "field 'remove' must be a list of label keys, e.g. [\"zone\"], got {value}"
                        )
                    })?
                }
                other => {
                    return Err(format!(
                        "unknown field '{}'; allowed fields: set, remove",
                        other.escape_debug()
                    ))
                }
            }
        }
        Ok(request)
    }
}

/// The answer to a rebalance: the moves it makes now (or would, with `dry_run`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct RebalanceDoc {
    /// Whether nothing was changed (`?dry_run=true`).
    pub dry_run: bool,
    /// One move per service at most: the next. Empty: the spread is even (or nothing
    /// can move now).
    pub moves: Vec<MoveDoc>,
}

/// One replica moved (start-first: its replacement runs, healthy, before it stops).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct MoveDoc {
    pub service: String,
    pub slot: u32,
    /// The task that moves (it is replaced by a new one on `to`).
    pub task: String,
    pub from: String,
    pub to: String,
    /// Why, for people: "w1 runs 3 of web, w4 none".
    pub why: String,
}

impl MoveDoc {
    /// `web.3: w1 -> w4 (why)`, as the CLI prints it.
    pub fn line(&self) -> String {
        format!(
            "{}.{}: {} -> {} ({})",
            self.service, self.slot, self.from, self.to, self.why
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_label_request_names_the_field_it_refuses() {
        let ok = LabelRequest::from_json(&json!({"set": {"disk": "ssd"}, "remove": ["zone"]}));
        assert_eq!(
            ok,
            Ok(LabelRequest {
                set: BTreeMap::from([("disk".into(), "ssd".into())]),
                remove: vec!["zone".into()],
            })
        );
        for (body, needle) in [
            (json!([1]), "JSON object"),
            (json!({"set": ["a=1"]}), "field 'set'"),
            (json!({"set": {"a": 1}}), "field 'set'"),
            (json!({"remove": "a"}), "field 'remove'"),
            (json!({"sett": {}}), "unknown field 'sett'"),
        ] {
            let e = LabelRequest::from_json(&body).expect_err("refused");
            assert!(e.contains(needle), "{body}: {e}");
        }
    }
}
