//! The pure core of MyCluster: the cluster's types, input validation, and the two decisions
//! the control plane makes — `reconcile` (what tasks should exist) and `schedule` (where
//! pending tasks go). Nothing here does I/O or needs an async runtime: every function takes
//! a snapshot and the current time and returns the changes to make, so the manager (which
//! owns the I/O) can commit them and tests can check them exhaustively.

pub mod commands;
pub mod identity;
pub mod ids;
pub mod image;
pub mod progress;
pub mod reconcile;
pub mod schedule;
pub mod service;
pub mod state;
pub mod task;
pub mod time;
pub mod wire;
pub mod worker;

pub use ids::{IdSource, SequentialIds};
pub use reconcile::reconcile;
pub use schedule::schedule;
pub use service::{Limits, Service, ServiceSpec, SpecError};
pub use state::{Change, ClusterState, Counters, Txn};
pub use task::{DesiredState, Task, TaskState};
pub use wire::Driver;
pub use worker::{Worker, WorkerStatus};

/// Milliseconds since the Unix epoch. Passed in, never read from a clock, so that every
/// decision is reproducible.
pub type Millis = u64;
