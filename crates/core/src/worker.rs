//! Workers: the machines (or containers) whose agents run tasks.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::driver::name_or_empty;
use crate::driver::Driver;
use crate::service::Amount;
use crate::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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

impl std::fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a worker's driver cannot run a task (`None`: it can). Docker runs images; the
/// process driver runs commands; sim (and an agent that did not say) runs anything.
pub fn driver_cannot_run(
    driver: Option<Driver>,
    image: Option<&str>,
    command: Option<&[String]>,
) -> Option<&'static str> {
    match driver {
        Some(Driver::Docker) if image.is_none() => Some("the docker driver needs an image"),
        Some(Driver::Process) if command.is_none() => Some("the process driver needs a command"),
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
    /// The agent's container runtime: what it can run. `None`: the agent did not say
    /// (stored as `""`, as it always was; absent in a store written before drivers).
    #[serde(default, with = "name_or_empty")]
    pub driver: Option<Driver>,
    pub status: WorkerStatus,
    pub registered_at: Millis,
    pub updated_at: Millis,
    /// The agent instance that holds the worker's name (see `identity`): the only one
    /// whose heartbeats, long-polls and reports count. Empty for a worker registered
    /// without one (by hand, by an older agent, or in a store written before it existed).
    #[serde(default)]
    pub instance: String,
    /// What it has for tasks' reservations, as its agent reported (the host's CPUs and
    /// memory, or its `--capacity-cpus`/`--capacity-memory`); empty: not said, no bound.
    #[serde(default)]
    pub resources: Amount,
    /// The host its agent runs on (its Docker engine's id, or the machine's): workers on
    /// one host share its volumes. Empty: not said.
    #[serde(default)]
    pub host: String,
    /// Drained by its operator (`worker drain`): it takes nothing new and its tasks move
    /// elsewhere; kept while it is down, so a drained worker that comes back stays
    /// drained until `worker activate`.
    #[serde(default)]
    pub drain: bool,
    /// Labels set by its operator (`worker label`) over the ones its agent registers
    /// with: a value sets one, `None` removes one. `labels` holds the result.
    #[serde(default)]
    pub label_overrides: BTreeMap<String, Option<String>>,
    /// Moves on each time the worker's earlier assignments are void: when it is declared
    /// down, and when another agent instance registers it. Every task list and heartbeat
    /// answer carries it: an agent that sees it move on while it still runs tasks of an
    /// older epoch stops those the new list does not hold, before anything else (see
    /// `lease`).
    #[serde(default)]
    pub epoch: u64,
    /// When the worker was declared down: the last renewal of its lease the manager had
    /// heard (wall-clock ms), and the lease then in force. Its `on_disconnect: "stop"`
    /// tasks are replaced only from `lease::replace_stop_task_at` on.
    #[serde(default)]
    pub renewed_at: Millis,
    #[serde(default)]
    pub lease: crate::span::Span,
    /// The SHA-256 (64 hex digits) of the worker's own credential, the secret its agent
    /// got when it registered (see `identity`): only that agent speaks for the worker.
    /// `None`: registered before credentials existed, or in a cluster without
    /// authentication. Never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The SHA-256 (64 lowercase hex digits) of the CA its agent registered last (one per
    /// agent start): the manager reads the worker's logs over TLS from a server that CA
    /// certified, and from no other. `None`: its agent did not say (one from before
    /// agents served TLS, or a store written before), and logs are read over plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ca_sha256: Option<String>,
}

impl Worker {
    /// When one of its `on_disconnect: "stop"` tasks, with `grace` to stop, may be
    /// replaced: `None` while the worker is not down.
    pub fn stop_tasks_replaceable_at(&self, grace: crate::span::Span) -> Option<Millis> {
        (self.status == WorkerStatus::Down).then(|| {
            crate::lease::replace_stop_task_at(
                self.renewed_at,
                std::time::Duration::from_millis(self.lease.millis()),
                grace,
            )
        })
    }

    /// The status it has when it is up: draining if its operator drained it.
    pub fn up_status(&self) -> WorkerStatus {
        if self.drain {
            WorkerStatus::Draining
        } else {
            WorkerStatus::Ready
        }
    }
}

/// `agent` labels with `overrides` laid over them.
pub fn effective_labels(
    agent: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, String> {
    let mut labels = agent.clone();
    for (key, value) in overrides {
        match value {
            Some(v) => labels.insert(key.clone(), v.clone()),
            None => labels.remove(key),
        };
    }
    labels
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

/// The shortest silence after which a worker no longer counts as live, however often it
/// beats: three heartbeats at the usual one a second — by then the monitor (2 s of
/// silence, then a failed probe) has declared a dead worker down.
pub const LIVE_SILENCE_FLOOR: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a worker asked to beat every `interval` may stay silent before it is
/// suspected: two missed intervals, and never less than `floor`. The one shape of every
/// liveness judgement: `is_live` with `LIVE_SILENCE_FLOOR`, the monitor with its
/// `--dead-after` (and a probe before any verdict).
pub fn silence_allowed(
    interval: std::time::Duration,
    floor: std::time::Duration,
) -> std::time::Duration {
    interval.saturating_mul(2).max(floor)
}

/// What the manager last heard from a worker's agent: how long ago, and the heartbeat
/// interval that agent was asked for. Gathered by the manager, judged here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastHeard {
    pub age: std::time::Duration,
    pub interval: std::time::Duration,
}

impl LastHeard {
    /// The liveness rule: a worker is live — its agent is taken to be running — while it
    /// has been silent for at most `silence_allowed(interval, LIVE_SILENCE_FLOOR)`:
    /// 3 s at one heartbeat a second, two intervals in a cluster large enough to beat
    /// less often. The manager waits for a live worker to start its new tasks, and keeps
    /// a live worker's name for the agent that holds it.
    pub fn is_live(&self) -> bool {
        self.age <= silence_allowed(self.interval, LIVE_SILENCE_FLOOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn live_means_heard_within_two_intervals_and_at_least_three_seconds() {
        let heard = |age_ms, interval_s| LastHeard {
            age: Duration::from_millis(age_ms),
            interval: Duration::from_secs(interval_s),
        };
        assert!(heard(0, 1).is_live());
        assert!(heard(3_000, 1).is_live());
        assert!(!heard(3_001, 1).is_live());
        // A slower pace widens the window to two intervals.
        assert!(heard(19_000, 10).is_live());
        assert!(!heard(20_001, 10).is_live());
        // An absurd interval cannot overflow.
        assert!(LastHeard {
            age: Duration::from_secs(1),
            interval: Duration::MAX
        }
        .is_live());
        assert_eq!(
            silence_allowed(Duration::from_secs(1), Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

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
