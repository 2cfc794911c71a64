//! The pure core of MyCluster: the cluster's types, input validation, and every decision
//! the control plane makes. Nothing here does I/O or needs an async runtime: the time,
//! the ids and what was heard from workers are passed in, so every decision is
//! reproducible and the property tests can check it exhaustively.
//!
//! Where to start reading: `step` — the one function every change goes through (a
//! command, then `reconcile` of what it touched, then `schedule` of what is pending) —
//! then `state` (the cluster state and its `Change`s, the unit of memory and storage),
//! `reconcile` (which tasks should exist), `rollout` (which slots a rollout replaces
//! next) and `schedule` (where pending tasks go); `endpoints` reads where services are
//! reached off the state.
//! `commands` holds the rules each command checks; `worker` the one liveness rule;
//! `service`, `task`, `image` the types and their validation; `wire` every request and
//! answer that crosses the network (the one wire contract); `progress` what the CLI
//! waits for.

pub mod commands;
pub mod driver;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod identity;
pub mod ids;
pub mod image;
pub mod lease;
pub mod logs;
pub mod progress;
pub mod rebalance;
pub mod reconcile;
pub mod rollout;
pub mod schedule;
pub mod service;
pub mod span;
pub mod state;
pub mod step;
pub mod task;
pub mod time;
pub mod wire;
pub mod worker;

pub use driver::Driver;
pub use ids::{IdSource, SequentialIds};
pub use reconcile::reconcile;
pub use schedule::schedule;
pub use service::{Limits, Service, ServiceSpec, SpecError};
pub use state::{Change, ClusterState, Counters, Txn};
pub use step::{step, Command, Context};
pub use task::{DesiredState, Task, TaskState};
pub use worker::{Worker, WorkerStatus};

/// Milliseconds since the Unix epoch. Passed in, never read from a clock, so that every
/// decision is reproducible.
pub type Millis = u64;
