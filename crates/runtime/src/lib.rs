//! Container runtimes: the one narrow trait an agent drives, `ContainerRuntime`, and its
//! drivers — `docker` (the Docker Engine API), `process` (process trees, each under a
//! supervisor of ours: `supervise`) and `sim` (in-memory, for scale tests and benchmarks
//! only). Every driver passes the conformance suite in `tests/conformance`.
//!
//! Where to start reading: the `ContainerRuntime` trait below, then `sim.rs` (the
//! smallest driver), `docker/`, and `process.rs` with `supervise.rs` and `tree.rs`
//! (each task's process tree under a supervisor that outlives the agent), and `cgroup.rs`
//! (its resource limits).
//!
//! Limits and mounts: a task's `resources.limits` are enforced by the docker driver (CPU
//! quota, memory limit without extra swap) and by the process driver where the host
//! gives the agent a cgroup v2 tree of its own (else it refuses them, saying why); its
//! mounts only by the docker driver (named volumes, made on first use and labelled as
//! ours, and bind mounts). The sim driver accepts both and does nothing with them.
//!
//! Logs (`logs`): the docker driver reads its engine's; the process driver keeps each
//! task's stdout and stderr in size-bounded rotating files, removed with the task.

mod cgroup;
mod docker;
mod exec;
mod exits;
mod host;
mod logs;
mod network;
mod process;
mod sim;
pub mod supervise;
mod tree;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use mycluster_core::service::{Mount, Resources};

pub use cgroup::process_limits;
pub use docker::{connect_engine, DockerOptions, DockerRuntime};
pub use exits::Exit;
pub use host::{hostname, HostFacts};
pub use logs::{LogFiles, LogLine, LogLines, LogOptions, Nanos, OutputStream};
pub use process::{ProcessRuntime, Supervisor};
pub use sim::SimRuntime;

/// Labels (docker) or environment variables (process) that mark what is ours.
pub const LABEL_CLUSTER: &str = "mycluster.cluster";
pub const LABEL_ROLE: &str = "mycluster.role";
pub const LABEL_SERVICE: &str = "mycluster.service";
pub const LABEL_TASK: &str = "mycluster.task";
pub const LABEL_WORKER: &str = "mycluster.worker";
/// On a volume: its name, and the slot it belongs to (with the cluster and service).
pub const LABEL_VOLUME: &str = "mycluster.volume";
pub const LABEL_SLOT: &str = "mycluster.slot";

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
    /// What it reserves and may use: only the limits concern a runtime.
    pub resources: Resources,
    /// The volumes and bind mounts it mounts, resolved for its slot.
    pub mounts: Vec<Mount>,
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
    /// A command run in a container (`exec`) did not end within its time; it was killed
    /// where the driver can kill it.
    #[error("{0}")]
    TimedOut(String),
    /// A volume cannot be removed while a container uses it; the removal may work later.
    #[error("{0}")]
    InUse(String),
    /// No such container of this runtime (any more).
    #[error("{0}")]
    NotFound(String),
}

/// The most output of an `exec` a driver keeps: enough for a health check to say why it
/// failed, small enough to store with every task.
pub const EXEC_OUTPUT_LIMIT: usize = 512;

/// How a command run in a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutcome {
    pub code: i64,
    /// Its stdout and stderr as they came, at most [`EXEC_OUTPUT_LIMIT`] bytes of them
    /// (lossy UTF-8, trimmed).
    pub output: String,
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

    /// Stops and removes a container: SIGTERM, then SIGKILL once `grace` has passed
    /// (`None`: the driver's own default, for a container no task speaks for). Gone
    /// already is fine.
    async fn remove(
        &self,
        container: &Container,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError>;

    /// Every container of this runtime's identity, running or not.
    async fn list(&self) -> Result<Vec<Container>, RuntimeError>;

    /// The IP address at which this host reaches the container's ports (what HTTP and TCP
    /// health checks connect to); `None` when it has none (gone, or on no network).
    async fn address(&self, container: &Container) -> Result<Option<IpAddr>, RuntimeError>;

    /// Runs `argv` inside the running container (Docker exec; for the process driver a
    /// child process with the task's environment) and returns how it ended;
    /// `RuntimeError::TimedOut` if it took longer than `timeout`.
    async fn exec(
        &self,
        container: &Container,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError>;

    /// What this runtime's host has (CPUs, memory) and which host it is: what the agent
    /// registers its worker with. By default the machine the agent runs on; the docker
    /// driver asks its engine, which may be elsewhere.
    async fn host(&self) -> Result<HostFacts, RuntimeError> {
        Ok(HostFacts::local())
    }

    /// Removes a volume of this runtime's cluster: gone already is fine; one a container
    /// still uses is `InUse`, naming it. By default there are no volumes to remove.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let _ = name;
        Ok(())
    }

    /// A subscription to the exits of this runtime's containers as they happen, for a
    /// driver that hears of them (the docker driver follows the engine's events; the
    /// process driver hears its supervisors end), so its agent looks at once instead of at
    /// its next periodic pass. Each [`Exit`] is a hint to look (`list` is still what
    /// says what runs), given once `list` shows the exit; [`Exit::Missed`] (or a
    /// lagging receiver) asks to look at everything. The driver's watch starts with the first subscription and ends with
    /// the runtime. `None` (the default): the driver does not push, and only the periodic
    /// pass finds exits (sim).
    fn exits(&self) -> Option<tokio::sync::broadcast::Receiver<Exit>> {
        None
    }

    /// The container's output, a line at a time, each with its stream and time (see
    /// `LogOptions`): the docker driver's from its engine, the process driver's from the
    /// files it keeps for each task (when given a place for them: `with_logs`), as long
    /// as the container is there, exited or not. `NotFound` for a container it does not
    /// have. By default a driver keeps no logs, and says so (sim).
    async fn logs(
        &self,
        container: &Container,
        options: &LogOptions,
    ) -> Result<LogLines, RuntimeError> {
        let _ = (container, options);
        Err(RuntimeError::Unsupported(format!(
            "the {} driver keeps no logs",
            self.driver()
        )))
    }
}

/// `after` from now; a span too long for the clock (a grace period of centuries) counts
/// as a century, which is never reached either.
pub(crate) fn later(after: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Collects a command's output up to [`EXEC_OUTPUT_LIMIT`] bytes; what comes after is
/// read and dropped, so the command never blocks on a full pipe.
#[derive(Default)]
pub(crate) struct BoundedOutput(Vec<u8>);

impl BoundedOutput {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let room = EXEC_OUTPUT_LIMIT.saturating_sub(self.0.len());
        self.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).trim().to_string()
    }
}
