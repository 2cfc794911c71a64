//! Tasks on the wire: how the manager shows them (`GET /api/v1/tasks`, an agent's
//! long-poll) and what agents report about them (`POST /api/v1/workers/<name>/status`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::seconds;
use crate::service::{
    default_stop_grace_period, Health, HealthCheck, Mount, OnDisconnect, Resources,
};
use crate::span::Span;
use crate::task::TaskPort;
use crate::{DesiredState, Task, TaskState};

/// A task in `GET /api/v1/tasks` and in an agent's task list.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct TaskDoc {
    pub id: String,
    pub service: String,
    pub slot: u32,
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent rather than null in an answer.
    #[schemars(with = "Vec<String>")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub worker: Option<String>,
    pub desired_state: DesiredState,
    pub state: TaskState,
    pub message: String,
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// What its agent probes (absent without a health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "HealthCheck")]
    pub healthcheck: Option<HealthCheck>,
    /// `starting`, `healthy` or `unhealthy` once it runs (null before). Without a health
    /// check, healthy once it has run for the update policy's `monitor`.
    #[serde(default)]
    pub health: Option<Health>,
    /// Why its last health probe failed.
    #[serde(default)]
    pub health_message: Option<String>,
    /// The ports it listens on and where its agent said each is reached (absent when
    /// the service names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<TaskPort>,
    /// Where its ports are reached, once it runs (absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "IpAddr")]
    pub address: Option<IpAddr>,
    /// From SIGTERM to SIGKILL when its agent stops it.
    #[serde(default = "default_stop_grace_period")]
    #[schemars(required)]
    pub stop_grace_period: Span,
    /// What it reserves and may use (absent when its service names none).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// The volumes and bind mounts it mounts (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Why it is being moved to another worker (a drain or a rebalance), while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<String>,
    /// What happens to it when its worker is cut off from the manager (its agent stops
    /// a `stop` task itself when its lease runs out).
    #[serde(default)]
    pub on_disconnect: OnDisconnect,
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
    desired_state: DesiredState,
    state: TaskState,
    message: &'a str,
    container_id: Option<&'a str>,
    exit_code: Option<i64>,
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<&'a HealthCheck>,
    health: Option<Health>,
    health_message: Option<&'a str>,
    #[serde(skip_serializing_if = "<[TaskPort]>::is_empty")]
    ports: &'a [TaskPort],
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<IpAddr>,
    stop_grace_period: Span,
    #[serde(skip_serializing_if = "Resources::is_empty")]
    resources: Resources,
    #[serde(skip_serializing_if = "<[Mount]>::is_empty")]
    mounts: &'a [Mount],
    #[serde(skip_serializing_if = "Option::is_none")]
    moving: Option<&'a str>,
    on_disconnect: OnDisconnect,
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
            desired_state: task.desired,
            state: task.state,
            message: &task.message,
            container_id: task.container_id.as_deref(),
            exit_code: task.exit_code,
            error: task.error.as_deref(),
            healthcheck: task.healthcheck.as_ref(),
            health: task.health,
            health_message: task.health_message.as_deref(),
            ports: &task.ports,
            address: task.address,
            stop_grace_period: task.stop_grace_period,
            resources: task.resources,
            mounts: &task.mounts,
            moving: task.moving.as_deref(),
            on_disconnect: task.on_disconnect,
            created_at: seconds(task.created_at),
            updated_at: seconds(task.updated_at),
        }
    }
}

/// An agent's task list: the answer to its long-poll
/// (`GET /api/v1/workers/<name>/tasks`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct AssignedTasks {
    /// Pass it back as `?index=` to wait for the next change.
    pub index: u64,
    /// The worker's epoch (see `Worker::epoch`): the list is the whole truth for it.
    #[serde(default)]
    pub epoch: u64,
    /// Seconds a lease lasts without a renewal (see `lease`).
    #[serde(default = "default_lease")]
    pub lease: f64,
    /// Every task on this worker that is not finished, with what is wanted of it.
    pub tasks: Vec<TaskDoc>,
    /// Volumes on this worker's host that were asked to be removed (`service rm
    /// --volumes`, `volume rm`) and that no task uses: the agent removes them and says
    /// so in its next status report (`removed_volumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_volumes: Vec<String>,
}

pub(crate) fn default_lease() -> f64 {
    crate::lease::DEFAULT_LEASE.as_secs_f64()
}

/// `AssignedTasks` as the manager writes it, from borrowed tasks.
#[derive(Serialize, Debug)]
pub struct AssignedView<'a> {
    pub index: u64,
    pub epoch: u64,
    pub lease: f64,
    pub tasks: Vec<TaskView<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove_volumes: Vec<&'a str>,
}

/// What an agent reports about one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskReport {
    pub id: String,
    pub state: TaskState,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// The task's health, when it has a health check and runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Why its last probe failed (with `health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_message: Option<String>,
    /// Where the task's ports are reached (with `running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The port at which each target is reached (with `running`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<TaskPort>,
}

impl TaskReport {
    /// A report of `state` that says nothing else.
    pub fn new(id: impl Into<String>, state: TaskState) -> TaskReport {
        TaskReport {
            id: id.into(),
            state,
            container_id: None,
            exit_code: None,
            error: None,
            message: None,
            health: None,
            health_message: None,
            address: None,
            ports: Vec::new(),
        }
    }
}

/// The body of an agent's status report (`POST /api/v1/workers/<name>/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub tasks: Vec<TaskReport>,
    /// Volumes its agent removed, as `remove_volumes` asked: their records go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_volumes: Vec<String>,
}

/// The answer to an agent's status report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct ReportDoc {
    /// The commit that holds the report.
    pub index: u64,
    /// The reports that could not apply, and why.
    pub ignored: Vec<Ignored>,
}

/// A report the manager did not take, and why; the agent learns the truth from its next
/// task list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ignored {
    pub id: String,
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            healthcheck: None,
            generation: 0,
            health: None,
            health_message: None,
            started_at: None,
            healthy_at: None,
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
            ports: Vec::new(),
            address: None,
            stop_grace_period: crate::service::DEFAULT_STOP_GRACE_PERIOD,
            proxy_protocol: false,
            published: Default::default(),
            constraints: Vec::new(),
            resources: Default::default(),
            mounts: Vec::new(),
            moving: None,
            on_disconnect: Default::default(),
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
            healthcheck: None,
            health: None,
            health_message: None,
            id: "0123456789abcdef".into(),
            service: "web".into(),
            slot: 2,
            image: Some("nginx:1.27".into()),
            command: full.command.clone(),
            env: full.env.clone(),
            worker: Some("w1".into()),
            desired_state: DesiredState::Shutdown,
            state: TaskState::Failed,
            message: "waiting to be scheduled".into(),
            container_id: Some("c0ffee".into()),
            exit_code: Some(-9),
            error: Some("killed".into()),
            created_at: 1_700_000_000.123,
            updated_at: 1_700_000_000.456,
            ports: Vec::new(),
            address: None,
            stop_grace_period: crate::service::DEFAULT_STOP_GRACE_PERIOD,
            resources: Default::default(),
            mounts: Vec::new(),
            moving: None,
            on_disconnect: Default::default(),
        };
        assert_eq!(back, expected);
        // And writes the same bytes as the view.
        assert_eq!(serde_json::to_string(&back).expect("doc"), text);
    }
}
