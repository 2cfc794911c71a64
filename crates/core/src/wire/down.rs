//! The monitor's verdict on dead workers (`POST /api/v1/workers/<name>/down` and
//! `POST /api/v1/workers/_down`), and what the manager answers: where each lost task's
//! replacement went.
//!
//! The fields of each answer are in alphabetical order: the order of the answers as they
//! were first built (from JSON maps, which sort their keys), so their bytes stay the same.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::WorkerStatus;

/// The body of `POST /api/v1/workers/_down`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownRequest {
    /// The workers to declare down (repeats are taken once).
    pub workers: Vec<String>,
}

/// A worker declared down, with where each of its tasks went.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct DownDoc {
    /// Its tasks that were lost, each with the task that took its slot. Empty for a
    /// worker that was already down.
    pub relocated: Vec<RelocationDoc>,
    /// Always `down`.
    pub status: WorkerStatus,
    pub worker: String,
}

/// A task a worker lost, and the task that took its slot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct RelocationDoc {
    pub image: Option<String>,
    /// The replacement's message (e.g. why it is pending); empty without one.
    pub message: String,
    /// The new task's id; `None` if none was made.
    pub replacement: Option<String>,
    pub service: String,
    pub slot: u32,
    /// The lost task.
    pub task: String,
    /// Where the replacement went; `None`: nowhere yet.
    pub worker: Option<String>,
}

/// The answer to `POST /api/v1/workers/_down`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct DownManyDoc {
    /// Each worker declared down, with what moved where.
    pub down: Vec<DownDoc>,
    /// Workers heard from within `silent_for`, left as they are.
    pub skipped: Vec<SkippedDoc>,
}

/// A worker a verdict left alone, and why.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct SkippedDoc {
    pub message: String,
    pub worker: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The typed answers write the very bytes the `json!` maps they replaced wrote.
    #[test]
    fn the_answers_keep_their_bytes() {
        let relocation = RelocationDoc {
            image: None,
            message: "waiting".into(),
            replacement: Some("t2".into()),
            service: "web".into(),
            slot: 3,
            task: "t1".into(),
            worker: None,
        };
        let down = DownDoc {
            relocated: vec![relocation],
            status: WorkerStatus::Down,
            worker: "w1".into(),
        };
        let many = DownManyDoc {
            down: vec![down],
            skipped: vec![SkippedDoc {
                message: "heard from".into(),
                worker: "w2".into(),
            }],
        };
        // Keys sorted, as a `serde_json::Map` writes them (or, with serde_json's
        // `preserve_order` on in the build, as inserted: sorted too).
        let before = json!({
            "down": [{"relocated": [{
                "image": null, "message": "waiting", "replacement": "t2", "service": "web",
                "slot": 3, "task": "t1", "worker": null,
            }], "status": "down", "worker": "w1"}],
            "skipped": [{"message": "heard from", "worker": "w2"}],
        });
        let typed = serde_json::to_string(&many).expect("serializes");
        assert_eq!(typed, before.to_string());
        let back: DownManyDoc = serde_json::from_str(&typed).expect("reads back");
        assert_eq!(back, many);
    }
}
