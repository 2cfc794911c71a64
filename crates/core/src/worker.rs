//! Workers: the machines (or containers) whose agents run tasks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Takes new tasks.
    Ready,
    /// Declared dead: its tasks are lost and replaced elsewhere.
    Down,
    /// Being emptied by its operator: takes nothing new, its tasks move elsewhere.
    Draining,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Ready => "ready",
            WorkerStatus::Down => "down",
            WorkerStatus::Draining => "draining",
        }
    }
}

/// Why a worker's driver cannot run a task (`None`: it can). Docker runs images; the
/// process driver runs commands; sim (and an agent that did not say) runs anything.
pub fn driver_cannot_run(
    driver: &str,
    image: Option<&str>,
    command: Option<&[String]>,
) -> Option<&'static str> {
    match driver {
        "docker" if image.is_none() => Some("the docker driver needs an image"),
        "process" if command.is_none() => Some("the process driver needs a command"),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub name: String,
    /// Where the agent's health endpoint answers (host:port), for the monitor's probe.
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// The most tasks it may hold at once; `None` is unlimited.
    pub capacity: Option<u32>,
    /// The agent's container runtime (`docker`, `process`, `sim`): what it can run.
    #[serde(default)]
    pub driver: String,
    pub status: WorkerStatus,
    pub registered_at: Millis,
    pub updated_at: Millis,
}
