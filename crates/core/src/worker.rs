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

/// The shortest interval between an agent's heartbeats.
pub const MIN_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often each agent should beat so that `workers` of them together send at most
/// `max_per_second` heartbeats: every second in a small cluster, less often in a large
/// one (Nomad scales its heartbeat TTL the same way), so that the manager's and the
/// workers' time goes to work rather than to saying they are alive. Failure detection
/// slows by the same factor: the monitor waits for two missed intervals.
pub fn heartbeat_interval(workers: usize, max_per_second: u32) -> std::time::Duration {
    let spread =
        std::time::Duration::from_secs_f64(workers as f64 / f64::from(max_per_second.max(1)));
    spread.max(MIN_HEARTBEAT_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn heartbeats_slow_down_only_past_the_rate() {
        assert_eq!(heartbeat_interval(0, 1000), Duration::from_secs(1));
        assert_eq!(heartbeat_interval(1000, 1000), Duration::from_secs(1));
        assert_eq!(heartbeat_interval(2500, 1000), Duration::from_millis(2500));
        assert_eq!(heartbeat_interval(10_000, 1000), Duration::from_secs(10));
        // A zero rate is taken as one per second, not a division by zero.
        assert_eq!(heartbeat_interval(5, 0), Duration::from_secs(5));
    }
}
