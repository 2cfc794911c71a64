//! Workers on the wire: how the manager shows them (`GET /api/v1/workers`), and what an
//! agent sends to join (`POST /api/v1/workers`) and hears when it beats
//! (`POST /api/v1/workers/<name>/heartbeat`).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{seconds, Driver, SaidDriver};
use crate::driver::name_or_empty;
use crate::service::Amount;
use crate::{ClusterState, Worker, WorkerStatus};

/// A worker in `GET /api/v1/workers`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct WorkerDoc {
    pub worker: String,
    pub address: String,
    pub status: WorkerStatus,
    pub labels: BTreeMap<String, String>,
    pub capacity: Option<u32>,
    /// Its container runtime; empty if the agent did not say (it runs anything).
    #[serde(with = "name_or_empty")]
    #[schemars(schema_with = "name_or_empty::schema")]
    pub driver: Option<Driver>,
    /// Tasks it should be running.
    pub tasks: usize,
    /// Tasks its agent reports running.
    pub running: usize,
    /// Seconds since its last heartbeat; null if none since the manager started.
    pub last_heartbeat_age: Option<f64>,
    /// Seconds between the heartbeats its agent was asked for: longer in large clusters
    /// (see `--max-heartbeats-per-second`); its silence is judged against it.
    #[serde(default = "one_second")]
    pub heartbeat_interval: f64,
    pub registered_at: f64,
    /// The agent instance that holds the worker's name (empty: none named); see
    /// `identity`.
    #[serde(default)]
    pub instance: String,
    /// What it has for reservations (CPUs, memory in bytes); empty: its agent did not
    /// say, and nothing bounds what is placed on it.
    #[serde(default)]
    pub resources: Amount,
    /// What its live tasks reserve.
    #[serde(default)]
    pub reserved: Amount,
    /// The host its agent runs on (workers on one host share its volumes).
    #[serde(default)]
    pub host: String,
    /// Drained by its operator: it stays draining when it comes back from down, until
    /// `worker activate`.
    #[serde(default)]
    pub drain: bool,
    /// Moves on each time what it was assigned is void (declared down, taken over by
    /// another agent instance).
    #[serde(default)]
    pub epoch: u64,
    /// Why the manager asks the monitor to look at it now rather than after missed
    /// heartbeats: its agent said it is leaving, or its connection dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspected: Option<Suspicion>,
    /// Only in the answer to the registration that made it (`POST /api/v1/workers`,
    /// 201): the worker's own credential (`MCW1-<64 hex>`), which its agent presents
    /// from then on instead of the join token. The manager keeps only its hash: this is
    /// the one time it is shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A worker the manager has a reason to think dead before its heartbeats say so.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub struct Suspicion {
    pub reason: SuspicionReason,
    /// Grows with each suspicion the manager notes: the monitor passes the highest it
    /// saw as `?suspected_after=` to wait for the next.
    pub index: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuspicionReason {
    /// Its agent said it is leaving (it was stopped): declared down without a probe.
    Left,
    /// Its agent's connection to the manager dropped while a long-poll was open (its
    /// process or its host died): probed at once, declared down if the probe fails.
    Disconnected,
}

impl SuspicionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspicionReason::Left => "left",
            SuspicionReason::Disconnected => "disconnected",
        }
    }
}

fn one_second() -> f64 {
    1.0
}

impl WorkerDoc {
    pub fn new(
        worker: &Worker,
        state: &ClusterState,
        heartbeat_age: Option<Duration>,
        heartbeat_interval: Duration,
        suspected: Option<Suspicion>,
    ) -> WorkerDoc {
        let load = state.load_of(&worker.name);
        WorkerDoc {
            worker: worker.name.clone(),
            address: worker.address.clone(),
            status: worker.status,
            labels: worker.labels.clone(),
            capacity: worker.capacity,
            driver: worker.driver,
            tasks: load.active as usize,
            running: load.running as usize,
            last_heartbeat_age: heartbeat_age
                .map(|age| (age.as_secs_f64() * 1000.0).round() / 1000.0),
            heartbeat_interval: heartbeat_interval.as_secs_f64(),
            registered_at: seconds(worker.registered_at),
            instance: worker.instance.clone(),
            resources: worker.resources,
            reserved: load.reserved(),
            host: worker.host.clone(),
            drain: worker.drain,
            epoch: worker.epoch,
            suspected,
            credential: None,
        }
    }
}

/// What an agent sends when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub capacity: Option<u32>,
    /// `docker`, `process` or `sim`; decides which services it can run.
    #[serde(default)]
    pub driver: SaidDriver,
    /// The agent instance registering (see `identity`): a random id its agent made at
    /// start. Empty or absent: none (a registration by hand).
    #[serde(default)]
    pub instance: String,
    /// What the worker has for tasks' reservations: `{"cpus": 4, "memory": 8589934592}`
    /// (the host's, or the agent's `--capacity-cpus`/`--capacity-memory`).
    #[serde(default)]
    pub resources: Amount,
    /// The host the agent runs on: its Docker engine's id, or the machine's id.
    #[serde(default)]
    pub host: String,
    /// The SHA-256 (64 hex digits) of the CA the agent made at this start for its port
    /// (health, metrics, its tasks' logs), which serves TLS beside plain HTTP: the
    /// manager reads the worker's logs over TLS, trusting that CA only. Absent: an agent
    /// from before it had one, whose logs are read over plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ca_sha256: Option<String>,
}

/// The answer to an agent's heartbeat (`POST /api/v1/workers/<name>/heartbeat`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct HeartbeatDoc {
    pub worker: String,
    pub status: WorkerStatus,
    /// The manager's commit index.
    pub index: u64,
    /// Seconds until the next heartbeat: 1, or more in a cluster past
    /// `--max-heartbeats-per-second`.
    pub heartbeat_interval: f64,
    /// The worker's epoch: an agent whose task list is of an older one stops what the
    /// new list does not hold, first thing (see `Worker::epoch`).
    #[serde(default)]
    pub epoch: u64,
    /// Seconds its lease lasts from this heartbeat's sending (see `lease`).
    #[serde(default = "super::tasks::default_lease")]
    pub lease: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{register_worker, CommandError};
    use crate::Txn;

    fn register(body: &str) -> Result<Worker, CommandError> {
        let registration: Registration = serde_json::from_str(body).expect("reads");
        register_worker(
            &mut Txn::new(ClusterState::default()),
            registration,
            None,
            1,
            None,
        )
    }

    /// The driver a registration names is refused or taken as it always was: an unknown
    /// one with the command's own message, after the name is checked.
    #[test]
    fn a_registration_names_its_driver() {
        let worker = register(r#"{"name":"w1","address":"a:1","driver":"process"}"#);
        assert_eq!(worker.map(|w| w.driver), Ok(Some(Driver::Process)));
        let worker = register(r#"{"name":"w1","address":"a:1","driver":""}"#);
        assert_eq!(worker.map(|w| w.driver), Ok(None));
        let worker = register(r#"{"name":"w1","address":"a:1"}"#);
        assert_eq!(worker.map(|w| w.driver), Ok(None));
        assert_eq!(
            register(r#"{"name":"w1","address":"a:1","driver":"podman"}"#),
            Err(CommandError::Invalid(
                "field 'driver' must be docker, process or sim, got 'podman'".into()
            ))
        );
        let both = register(r#"{"name":"bad name","address":"a:1","driver":"podman"}"#);
        assert!(
            matches!(&both, Err(CommandError::Invalid(m)) if m.starts_with("invalid worker name")),
            "{both:?}"
        );
        // Written back as said, for an agent's registration and a worker's document.
        let said = Registration {
            name: "w1".into(),
            address: "a:1".into(),
            labels: BTreeMap::new(),
            capacity: None,
            driver: Driver::Sim.into(),
            instance: String::new(),
            resources: Default::default(),
            host: String::new(),
            agent_ca_sha256: None,
        };
        let text = serde_json::to_string(&said).expect("writes");
        assert!(text.contains(r#""driver":"sim""#), "{text}");
    }

    /// The agent's CA digest is kept as the manager's code compares it (lowercase), and
    /// anything but 64 hex digits is refused; an older agent sends none.
    #[test]
    fn a_registration_names_its_agents_ca() {
        let digest = "AB".repeat(32);
        let body = format!(r#"{{"name":"w1","address":"a:1","agent_ca_sha256":"{digest}"}}"#);
        let worker = register(&body).map(|w| w.agent_ca_sha256);
        assert_eq!(worker, Ok(Some("ab".repeat(32))));
        let worker = register(r#"{"name":"w1","address":"a:1"}"#);
        assert_eq!(worker.map(|w| w.agent_ca_sha256), Ok(None));
        for bad in ["abc".to_string(), "zz".repeat(32), "ab".repeat(33)] {
            let body = format!(r#"{{"name":"w1","address":"a:1","agent_ca_sha256":"{bad}"}}"#);
            assert!(
                matches!(register(&body), Err(CommandError::Invalid(m)) if m.contains("agent_ca_sha256")),
                "{bad}"
            );
        }
        // A worker stored before the field existed loads without it.
        let stored = r#"{"name":"w1","address":"a:1","labels":{},"capacity":null,
            "status":"ready","registered_at":0,"updated_at":0}"#;
        let worker: Worker = serde_json::from_str(stored).expect("an older record loads");
        assert_eq!(worker.agent_ca_sha256, None);
    }
}
