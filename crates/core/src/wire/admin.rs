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
