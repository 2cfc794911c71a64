//! The wire contract: every request and answer exchanged by the manager, its agents, the
//! monitor and the CLI, as serde types — one place to read what crosses the network. The
//! keys of the original (`cluster.name`, `serviceInstances`, `numOfRunningContainers`,
//! `last_updated`, …) are a contract with its users: they are spelled here once, and only
//! here. Every type derives `JsonSchema`: the manager's tests check the hand-written
//! OpenAPI document against those schemas (`crates/manager/tests/wire_schema.rs`).
//!
//! Start with `workers` (an agent joining and beating), then `tasks` (what it is asked to
//! run and reports back), `services`, `cluster`, `down` (the monitor's verdict), `health`,
//! `volumes` (the volume records), `admin` (an operator's labels and rebalances), `logs`
//! (an agent's lines of a task, and the logs query) and `errors`.

pub mod admin;
pub mod cluster;
pub mod down;
pub mod endpoints;
pub mod errors;
pub mod events;
pub mod health;
pub mod logs;
pub mod rollouts;
pub mod services;
pub mod tasks;
pub mod tokens;
pub mod volumes;
pub mod workers;

pub use crate::driver::{Driver, SaidDriver};
pub use admin::{LabelRequest, MoveDoc, RebalanceDoc};
pub use cluster::{format_uptime, ServiceInstance, StateDoc, StatsDoc, WorkerInstances};
pub use down::{DownDoc, DownManyDoc, DownRequest, RelocationDoc, SkippedDoc};
pub use endpoints::{RouteTable, ServiceEndpoints};
pub use errors::ErrorDoc;
pub use events::{Event, EventDoc, Topic};
pub use health::{AgentHealthDoc, HealthDoc, HealthStatus, ReseedDoc};
pub use logs::{LogLineDoc, LogSource, LogsQuery};
pub use rollouts::{RolloutDoc, VersionDoc, VersionsDoc};
pub use services::{ServiceDoc, ServicePatchRequest, ServiceRequest};
pub use tasks::{
    AssignedTasks, AssignedView, Ignored, ReportDoc, StatusReport, TaskDoc, TaskReport, TaskView,
};
pub use tokens::JoinTokenDoc;
pub use volumes::VolumeDoc;
pub use workers::{HeartbeatDoc, Registration, Suspicion, SuspicionReason, WorkerDoc};

// The states the wire carries are the core's own enums.
pub use crate::endpoints::{Endpoint, Route};
pub use crate::rollout::{RolloutKind, RolloutState};
pub use crate::service::{
    Amount, Constraint, FailureAction, Health, HealthCheck, Mount, MountKind, OnDisconnect,
    PortSpec, Probe, Protocol, Resources, RestartCondition, RestartPolicy, Spread, UpdateOrder,
    UpdatePolicy, VolumeSpec,
};
pub use crate::task::TaskPort;
pub use crate::{DesiredState, TaskState, WorkerStatus};

/// Unix seconds with milliseconds, as the API writes times.
fn seconds(millis: crate::Millis) -> f64 {
    millis as f64 / 1000.0
}
