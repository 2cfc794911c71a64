//! Tasks: one replica slot of a service, placed on one worker, run once. A task is never
//! moved: when its worker dies it becomes `lost` and a new task takes its slot elsewhere.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::net::IpAddr;

use crate::service::{distinct, Constraint, Health, HealthCheck, Mount, OnDisconnect, Resources};
use crate::span::Span;
use crate::{Millis, Service};

/// One port of a task: the `target` it listens on, and the `port` at which its agent
/// said it is reached (the target itself on the docker driver, a free port the agent
/// chose on the process driver; null until it runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct TaskPort {
    pub target: u16,
    #[serde(default)]
    pub port: Option<u16>,
}

/// Where a task is in its life. States only move forward (see [`TaskState::can_become`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for a worker that can take it.
    Pending,
    /// Placed on a worker whose agent has not started it yet.
    Assigned,
    /// The agent is creating or starting its container.
    Starting,
    Running,
    /// Exited with status 0.
    Complete,
    /// Exited non-zero, or could not be started.
    Failed,
    /// Its worker died; a replacement takes its slot.
    Lost,
    /// Stopped because it was no longer wanted.
    Shutdown,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Failed,
        TaskState::Lost,
        TaskState::Shutdown,
    ];

    pub fn is_terminal(self) -> bool {
        self.rank() == 4
    }

    fn rank(self) -> u8 {
        match self {
            TaskState::Pending => 0,
            TaskState::Assigned => 1,
            TaskState::Starting => 2,
            TaskState::Running => 3,
            TaskState::Complete | TaskState::Failed | TaskState::Lost | TaskState::Shutdown => 4,
        }
    }

    /// Whether a task in `self` may move to `next`: forward only, and a terminal state is
    /// final. Staying put is allowed so repeated reports are harmless.
    pub fn can_become(self, next: TaskState) -> bool {
        self == next || (!self.is_terminal() && next.rank() > self.rank())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Failed => "failed",
            TaskState::Lost => "lost",
            TaskState::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// What the control plane wants of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Shutdown,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<DesiredState> {
        [DesiredState::Running, DesiredState::Shutdown]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for DesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub service: String,
    pub slot: u32,
    /// The service version this task was made from; an older one is replaced.
    pub spec_version: u64,
    pub image: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    pub worker: Option<String>,
    pub desired: DesiredState,
    pub state: TaskState,
    /// Why the task is where it is, for people: the pending reason, why it stopped.
    pub message: String,
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// How many tasks of this slot failed in a row before this one was made; sets the
    /// delay before the next replacement (crash-loop backoff).
    #[serde(default)]
    pub failures: u32,
    /// The service's health check when the task was made: what its agent probes.
    #[serde(default)]
    pub healthcheck: Option<HealthCheck>,
    /// The service's restart generation when the task was made.
    #[serde(default)]
    pub generation: u64,
    /// Its agent's last judgement (with a check), or the manager's (without one: healthy
    /// once it ran for the update's `monitor`). `None` until it runs.
    #[serde(default)]
    pub health: Option<Health>,
    /// Why the last probe failed, for people.
    #[serde(default)]
    pub health_message: Option<String>,
    /// When its agent reported it running.
    #[serde(default)]
    pub started_at: Option<Millis>,
    /// When it was first healthy.
    #[serde(default)]
    pub healthy_at: Option<Millis>,
    /// The ports it listens on (the service's targets when it was made) and, once its
    /// agent reported them, where each is reached at `address`.
    #[serde(default)]
    pub ports: Vec<TaskPort>,
    /// Where the task's ports are reached (its IP on the cluster network; loopback for
    /// the process driver), as its agent reported when it ran.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// From SIGTERM to SIGKILL when it is stopped (the service's, when it was made).
    #[serde(default = "crate::service::default_stop_grace_period")]
    pub stop_grace_period: Span,
    /// The ports its service published when it was made, and on which target (published
    /// → target): a rollout that moves a published port to another target routes the
    /// port to this task on its own target until it is replaced.
    #[serde(default)]
    pub published: std::collections::BTreeMap<u16, u16>,
    /// Whether the ingress starts each connection to it with a PROXY protocol v2 header
    /// (the service's, when it was made: the replica expects the header or not).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The service's constraints when it was made: where it may be placed.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// What it reserves on its worker and may use (the service's, when it was made).
    #[serde(default)]
    pub resources: Resources,
    /// The volumes and bind mounts it mounts, resolved for its slot.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Marked to move to another worker (a drain or a rebalance), with why: a replacement
    /// starts beside it, and it stops once that one is healthy.
    #[serde(default)]
    pub moving: Option<String>,
    /// What happens to it when its worker is cut off (the service's, when it was made).
    #[serde(default)]
    pub on_disconnect: OnDisconnect,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Task {
    /// Counted against the service's replicas: wanted, and not finished.
    pub fn is_active(&self) -> bool {
        self.desired == DesiredState::Running && !self.state.is_terminal()
    }

    /// Whether the task runs what `service` asks for now: the same template and restart
    /// generation (replicas and the update policy do not matter). One that does not is
    /// replaced by a rollout.
    pub fn runs(&self, service: &Service) -> bool {
        let spec = &service.spec;
        self.image == spec.image
            && self.command == spec.command
            && self.env == spec.env
            && self.healthcheck == spec.healthcheck
            && self.targets() == spec.targets()
            && self.stop_grace_period == spec.stop_grace_period
            && self.proxy_protocol == spec.proxy_protocol
            && self.constraints == spec.constraints
            && self.resources == spec.resources
            && self.mounts == Mount::for_slot(&spec.name, self.slot, &spec.volumes)
            && self.on_disconnect == spec.on_disconnect
            && self.generation == service.generation
    }

    /// The target ports it listens on, in order.
    pub fn targets(&self) -> Vec<u16> {
        distinct(self.ports.iter().map(|p| p.target))
    }

    /// Running, and known healthy.
    pub fn is_healthy(&self) -> bool {
        self.state == TaskState::Running && self.health == Some(Health::Healthy)
    }

    /// Wanted, and waiting for a worker.
    pub fn is_pending(&self) -> bool {
        self.desired == DesiredState::Running && self.state == TaskState::Pending
    }

    /// Whether an agent holding `old` must learn of `self`: the task is new to it, gone
    /// from its list (finished), moved, or wanted differently. An observed-state change
    /// the agent reported itself (running, a container id, a message) is not news to it.
    pub fn news_for_agent(&self, old: Option<&Task>) -> bool {
        match old {
            None => true,
            Some(old) => {
                old.worker != self.worker
                    || old.desired != self.desired
                    || old.state.is_terminal() != self.state.is_terminal()
                    || old.spec_version != self.spec_version
                    || old.image != self.image
                    || old.command != self.command
                    || old.env != self.env
                    || old.healthcheck != self.healthcheck
                    || old.targets() != self.targets()
                    || old.stop_grace_period != self.stop_grace_period
                    || old.resources != self.resources
                    || old.mounts != self.mounts
                    || old.on_disconnect != self.on_disconnect
            }
        }
    }

    /// Still holds (or may hold) a container on its worker.
    pub fn is_live(&self) -> bool {
        !self.state.is_terminal()
    }

    /// Wanted, placed, and not running yet on a worker that is live (`live` says which
    /// are: see `worker::LastHeard::is_live`), so expected to start soon: what a service
    /// create waits for before it answers.
    pub fn is_starting(&self, live: impl Fn(&str) -> bool) -> bool {
        self.is_active()
            && self.state != TaskState::Running
            && self.state != TaskState::Pending
            && self.worker.as_deref().is_some_and(live)
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    #[test]
    fn states_only_move_forward() {
        assert!(Pending.can_become(Assigned));
        assert!(Assigned.can_become(Running));
        assert!(Pending.can_become(Shutdown));
        assert!(Running.can_become(Failed));
        assert!(Running.can_become(Running));
        assert!(!Running.can_become(Starting));
        assert!(!Failed.can_become(Running));
        assert!(!Lost.can_become(Shutdown));
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
    }
}
