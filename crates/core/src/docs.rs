//! The JSON documents of the REST API, shared by the manager that writes them and the
//! clients that read them. The keys of the original (`cluster.name`,
//! `serviceInstances`, `numOfRunningContainers`, `last_updated`, …) are a contract with
//! its users: they are spelled here once, and only here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::commands::Ignored;
use crate::{ClusterState, Counters, Millis, Service, Task, TaskState, Worker, WorkerStatus};

/// Every error answer of the API: `{"message": "...", "code": N}` with the HTTP status
/// `N`, keys in the order people expect to read them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorDoc {
    pub message: String,
    pub code: u16,
}

/// `GET /healthz`: whether the manager can write its store. Answered with 200 when
/// `ok`, 503 when `degraded` (the same document, with why).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HealthDoc {
    pub status: HealthStatus,
    pub cluster: String,
    /// Which store, and where.
    pub store: String,
    /// The index of the last commit.
    pub index: u64,
    /// Why it is degraded, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The store answers and takes writes.
    Ok,
    /// It does not, or it lost the manager's history: changes are refused (503).
    Degraded,
}

/// `POST /api/v1/store/reseed`: what was written back into the store.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReseedDoc {
    pub store: String,
    /// The store's index after the reseed.
    pub index: u64,
    pub services: usize,
    pub tasks: usize,
    pub workers: usize,
}

/// `GET /api/v1/state`, and the answer to `POST /api/v1/service`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StateDoc {
    #[serde(rename = "cluster.name")]
    pub name: String,
    #[serde(rename = "cluster.numOfWorkers")]
    pub num_workers: usize,
    #[serde(rename = "cluster.workers")]
    pub workers: Vec<WorkerInstances>,
    #[serde(rename = "cluster.servicesDef")]
    pub services: Vec<ServiceDoc>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerInstances {
    pub worker: String,
    #[serde(rename = "serviceInstances")]
    pub instances: Vec<ServiceInstance>,
    /// Beyond the original: ready, down or draining.
    pub status: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServiceInstance {
    /// Null for a service that runs only a command.
    pub image: Option<String>,
    #[serde(rename = "numOfRunningContainers")]
    pub running: usize,
    /// Beyond the original: which service, since two may share an image.
    pub service: String,
}

impl StateDoc {
    pub fn new(name: &str, state: &ClusterState) -> StateDoc {
        let workers = state
            .workers
            .values()
            .map(|worker| {
                // Only what agents report running counts, as `docker ps` did in the original.
                let mut running: BTreeMap<&str, ServiceInstance> = BTreeMap::new();
                for task in state
                    .tasks_on_worker(&worker.name)
                    .filter(|t| t.state == TaskState::Running)
                {
                    running
                        .entry(task.service.as_str())
                        .or_insert_with(|| ServiceInstance {
                            image: task.image.clone(),
                            running: 0,
                            service: task.service.clone(),
                        })
                        .running += 1;
                }
                WorkerInstances {
                    worker: worker.name.clone(),
                    instances: running.into_values().collect(),
                    status: worker.status.as_str().to_string(),
                }
            })
            .collect();
        StateDoc {
            name: name.to_string(),
            num_workers: state.workers.len(),
            workers,
            services: state.services.values().map(ServiceDoc::new).collect(),
        }
    }
}

/// `GET /api/v1/service/<name>`: exactly the original's four keys.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServiceDoc {
    pub service: String,
    /// Null for a service that runs only a command.
    pub image: Option<String>,
    pub replicas: u32,
    /// Unix seconds of the last create or update.
    pub last_updated: u64,
    /// Beyond the original, and only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl ServiceDoc {
    pub fn new(service: &Service) -> ServiceDoc {
        ServiceDoc {
            service: service.spec.name.clone(),
            image: service.spec.image.clone(),
            replicas: service.spec.replicas,
            last_updated: service.updated_at / 1000,
            command: service.spec.command.clone(),
            env: service.spec.env.clone(),
        }
    }
}

/// `GET /api/v1/stats`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatsDoc {
    #[serde(rename = "cluster.upTime")]
    pub uptime: String,
    #[serde(rename = "services.totalOfRequests")]
    pub total_requests: u64,
    #[serde(rename = "services.totalOfContainers")]
    pub total_containers: u64,
    #[serde(rename = "workers.failures")]
    pub worker_failures: u64,
    #[serde(rename = "containers.relocated")]
    pub containers_relocated: u64,
}

impl StatsDoc {
    pub fn new(uptime: Duration, counters: &Counters) -> StatsDoc {
        StatsDoc {
            uptime: format_uptime(uptime),
            total_requests: counters.total_requests,
            total_containers: counters.total_containers,
            worker_failures: counters.worker_failures,
            containers_relocated: counters.containers_relocated,
        }
    }
}

/// `H:MM:SS.ffffff`, as Python's `str(timedelta)` printed it in the original (hours are
/// not folded into days).
pub fn format_uptime(uptime: Duration) -> String {
    let secs = uptime.as_secs();
    format!(
        "{}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        uptime.subsec_micros()
    )
}

/// A task in `GET /api/v1/tasks` and in an agent's task list.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskDoc {
    pub id: String,
    pub service: String,
    pub slot: u32,
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub worker: Option<String>,
    pub desired_state: String,
    pub state: String,
    pub message: String,
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
}

/// A task as the manager writes it (clients read it back as a `TaskDoc`), serialized
/// straight from the task instead of a copy: every wake of an agent's long-poll sends its
/// whole task list, and copying each task first was a fifth of the manager's time at a
/// million tasks.
#[derive(Serialize, Debug)]
pub struct TaskView<'a> {
    id: &'a str,
    service: &'a str,
    slot: u32,
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a [String]>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: &'a BTreeMap<String, String>,
    worker: Option<&'a str>,
    desired_state: &'static str,
    state: &'static str,
    message: &'a str,
    container_id: Option<&'a str>,
    exit_code: Option<i64>,
    error: Option<&'a str>,
    created_at: f64,
    updated_at: f64,
}

impl<'a> TaskView<'a> {
    pub fn new(task: &'a Task) -> TaskView<'a> {
        TaskView {
            id: &task.id,
            service: &task.service,
            slot: task.slot,
            image: task.image.as_deref(),
            command: task.command.as_deref(),
            env: &task.env,
            worker: task.worker.as_deref(),
            desired_state: task.desired.as_str(),
            state: task.state.as_str(),
            message: &task.message,
            container_id: task.container_id.as_deref(),
            exit_code: task.exit_code,
            error: task.error.as_deref(),
            created_at: seconds(task.created_at),
            updated_at: seconds(task.updated_at),
        }
    }
}

/// `AssignedTasks` as the manager writes it, from borrowed tasks.
#[derive(Serialize, Debug)]
pub struct AssignedView<'a> {
    pub index: u64,
    pub tasks: Vec<TaskView<'a>>,
}

/// A worker in `GET /api/v1/workers`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerDoc {
    pub worker: String,
    pub address: String,
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Option<u32>,
    pub driver: String,
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
    ) -> WorkerDoc {
        let load = state.load_of(&worker.name);
        WorkerDoc {
            worker: worker.name.clone(),
            address: worker.address.clone(),
            status: worker.status.as_str().to_string(),
            labels: worker.labels.clone(),
            capacity: worker.capacity,
            driver: worker.driver.clone(),
            tasks: load.active as usize,
            running: load.running as usize,
            last_heartbeat_age: heartbeat_age
                .map(|age| (age.as_secs_f64() * 1000.0).round() / 1000.0),
            heartbeat_interval: heartbeat_interval.as_secs_f64(),
            registered_at: seconds(worker.registered_at),
            instance: worker.instance.clone(),
        }
    }
}

/// The answer to an agent's heartbeat (`POST /api/v1/workers/<name>/heartbeat`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HeartbeatDoc {
    pub worker: String,
    pub status: WorkerStatus,
    /// The manager's commit index.
    pub index: u64,
    /// Seconds until the next heartbeat: 1, or more in a cluster past
    /// `--max-heartbeats-per-second`.
    pub heartbeat_interval: f64,
}

/// The answer to an agent's status report (`POST /api/v1/workers/<name>/status`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReportDoc {
    /// The commit that holds the report.
    pub index: u64,
    /// The reports that could not apply, and why.
    pub ignored: Vec<Ignored>,
}

/// An agent's task list: the answer to its long-poll.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AssignedTasks {
    /// Pass it back as `?index=` to wait for the next change.
    pub index: u64,
    /// Every task on this worker that is not finished, with what is wanted of it.
    pub tasks: Vec<TaskDoc>,
}

fn seconds(millis: Millis) -> f64 {
    millis as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::format_uptime;
    use std::time::Duration;

    #[test]
    fn uptime_reads_like_pythons_timedelta() {
        assert_eq!(
            format_uptime(Duration::from_micros(225_060_206)),
            "0:03:45.060206"
        );
        assert_eq!(format_uptime(Duration::ZERO), "0:00:00.000000");
        assert_eq!(
            format_uptime(Duration::from_secs(27 * 3600 + 1)),
            "27:00:01.000000"
        );
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;
    use crate::DesiredState;

    fn task() -> Task {
        Task {
            id: "0123456789abcdef".into(),
            service: "web".into(),
            slot: 2,
            spec_version: 1,
            image: Some("nginx:1.27".into()),
            command: None,
            env: BTreeMap::new(),
            worker: None,
            desired: DesiredState::Running,
            state: TaskState::Pending,
            message: "waiting to be scheduled".into(),
            container_id: None,
            exit_code: None,
            error: None,
            failures: 0,
            created_at: 1_700_000_000_123,
            updated_at: 1_700_000_000_456,
        }
    }

    #[test]
    fn a_task_view_reads_back_as_a_task_doc() {
        let plain = serde_json::to_value(TaskView::new(&task())).expect("view");
        // Nothing to run but the image: no command, no env in the document.
        assert!(
            plain.get("command").is_none() && plain.get("env").is_none(),
            "{plain}"
        );
        assert_eq!(plain["desired_state"], "running");
        assert_eq!(plain["state"], "pending");
        assert_eq!(plain["created_at"], 1_700_000_000.123);

        let full = Task {
            command: Some(vec!["sleep".into(), "\"quoted\"".into()]),
            env: BTreeMap::from([("A".into(), "1".into()), ("ü".into(), "\n".into())]),
            worker: Some("w1".into()),
            desired: DesiredState::Shutdown,
            state: TaskState::Failed,
            container_id: Some("c0ffee".into()),
            exit_code: Some(-9),
            error: Some("killed".into()),
            ..task()
        };
        let text = serde_json::to_string(&TaskView::new(&full)).expect("view");
        let back: TaskDoc = serde_json::from_str(&text).expect("a TaskDoc reads it");
        let expected = TaskDoc {
            id: "0123456789abcdef".into(),
            service: "web".into(),
            slot: 2,
            image: Some("nginx:1.27".into()),
            command: full.command.clone(),
            env: full.env.clone(),
            worker: Some("w1".into()),
            desired_state: "shutdown".into(),
            state: "failed".into(),
            message: "waiting to be scheduled".into(),
            container_id: Some("c0ffee".into()),
            exit_code: Some(-9),
            error: Some("killed".into()),
            created_at: 1_700_000_000.123,
            updated_at: 1_700_000_000.456,
        };
        assert_eq!(back, expected);
    }
}
