//! Container runtimes: the one narrow trait an agent drives, `ContainerRuntime`, and its
//! drivers — `docker` (the Docker Engine API), `process` (process trees, each under a
//! supervisor of ours: `supervise`) and `sim` (in-memory, for scale tests and benchmarks
//! only). Every driver passes the conformance suite in `tests/conformance`.
//!
//! Where to start reading: the `ContainerRuntime` trait below, then `sim.rs` (the
//! smallest driver), `docker.rs`, and `process.rs` with `supervise.rs` and `tree.rs`
//! (each task's process tree under a supervisor that outlives the agent).

mod docker;
mod process;
mod sim;
pub mod supervise;
mod tree;

use std::collections::BTreeMap;

pub use docker::{connect_engine, DockerOptions, DockerRuntime};
pub use process::{ProcessRuntime, Supervisor};
pub use sim::SimRuntime;

/// Labels (docker) or environment variables (process) that mark what is ours.
pub const LABEL_CLUSTER: &str = "mycluster.cluster";
pub const LABEL_ROLE: &str = "mycluster.role";
pub const LABEL_SERVICE: &str = "mycluster.service";
pub const LABEL_TASK: &str = "mycluster.task";
pub const LABEL_WORKER: &str = "mycluster.worker";

/// Whose containers a runtime manages: it creates only these, and lists and removes only
/// containers that carry both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster: String,
    pub worker: String,
}

/// What to run for one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub task_id: String,
    pub service: String,
    pub slot: u32,
    pub image: Option<String>,
    /// Overrides the image's command (docker), or is the program to run (process).
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
}

impl TaskSpec {
    /// `<service>.<slot>.<first 8 of the task id>`: readable in `docker ps`, unique.
    pub fn container_name(&self) -> String {
        let short: String = self.task_id.chars().take(8).collect();
        format!("{}.{}.{}", self.service, self.slot, short)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but not (yet) started.
    Created,
    Running,
    /// Ended on its own or was killed; `error` says why when known (e.g. "OOM killed").
    Exited {
        code: i64,
        error: Option<String>,
    },
}

/// A container (or process) of ours, as the runtime sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub task_id: String,
    pub id: String,
    pub name: String,
    pub state: ContainerState,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// This driver cannot run the spec at all (e.g. `process` without a command).
    #[error("{0}")]
    Unsupported(String),
    /// The image is not present and could not be pulled.
    #[error("{0}")]
    ImageUnavailable(String),
    /// The container could not be created or started (a bad command, a name conflict...).
    #[error("{0}")]
    StartFailed(String),
    /// The engine did not answer or failed; the same call may work later.
    #[error("{0}")]
    Engine(String),
}

/// What an agent needs from a container runtime. Every method may be called concurrently.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Which driver this is: what the agent registers with, and what its worker can run.
    fn driver(&self) -> mycluster_core::Driver;

    /// Whether this driver can run `spec` at all, and if not why — before trying.
    fn check(&self, spec: &TaskSpec) -> Result<(), RuntimeError>;

    /// Creates and starts the task's container; returns its id. The image is pulled when
    /// missing.
    async fn start(&self, spec: &TaskSpec) -> Result<String, RuntimeError>;

    /// Stops (with a short grace period) and removes a container. Gone already is fine.
    async fn remove(&self, container: &Container) -> Result<(), RuntimeError>;

    /// Every container of this runtime's identity, running or not.
    async fn list(&self) -> Result<Vec<Container>, RuntimeError>;
}
