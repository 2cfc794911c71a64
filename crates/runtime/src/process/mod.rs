//! The `process` driver: a task is the service's command, run as a process tree of the
//! agent's host. For hosts without Docker and for fast tests.
//!
//! Tasks behave like containers on a node. Each runs under a supervisor of its own (see
//! `supervise.rs`), a child of the agent: a child subreaper, so every process the command
//! starts, however deep (double forks and `setsid` included), stays in its tree. The
//! supervisor ends that whole tree when the task is stopped (SIGTERM, then SIGKILL after
//! the grace period), when the command's main process ends, and when the agent dies, SIGKILL
//! included (the kernel tells it through `PR_SET_PDEATHSIG`, and it checks its parent
//! besides): as a dead node's containers die with it, nothing of a dead agent's tasks
//! keeps running beside the replacements the monitor starts elsewhere.
//!
//! Supervisors and commands carry environment variables as labels, so an agent that starts
//! again first kills anything of its worker still running, and everything below it: a
//! restart never leaves a duplicate behind.
//!
//! A task with resource limits runs in a cgroup v2 group of its own where the host lets
//! the agent make one (see `cgroup.rs`); its supervisor is moved in before it starts the
//! command, so everything the command starts is inside. Elsewhere such a task is refused,
//! as is any task with volumes: processes of the host have no mounts of their own.
//!
//! Logs: given a place for them (`with_logs`), the driver passes each command pipes for
//! its stdout and stderr (through its supervisor) and keeps what comes in size-bounded
//! rotating files per task (see `logs::files`), removed with the task's record (when
//! the task is removed, or its runtime goes). A new runtime removes what an earlier
//! agent of the worker left there, as it kills its processes.

mod spawn;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::spawn::{end, hear, Spawner};
use crate::cgroup::{self, TaskGroup};
use crate::exits::{announce, Exit, ExitFeed};
use crate::logs::files::{capture, pipe, TaskLog};
use crate::logs::{read, LogFiles, LogLines, LogOptions};
use crate::supervise::{Request, AGENT_DIED};
use crate::tree;
use crate::{
    exec, Container, ContainerRuntime, ContainerState, ExecOutcome, Identity, RuntimeError,
    TaskSpec,
};

/// Environment variables that mark a process as ours (the process driver's labels).
pub const ENV_CLUSTER: &str = "MYCLUSTER_CLUSTER";
pub const ENV_WORKER: &str = "MYCLUSTER_WORKER";
pub const ENV_SERVICE: &str = "MYCLUSTER_SERVICE";
pub const ENV_TASK: &str = "MYCLUSTER_TASK";

/// How long a stopped task gets between SIGTERM and SIGKILL when no grace is given (a
/// process no task speaks for any more), unless `with_stop_grace` says otherwise.
const GRACE: Duration = Duration::from_secs(5);
/// How much longer than the grace the agent waits for a stopping supervisor before it
/// kills the tree itself.
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long a new supervisor may take to say whether the command runs.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent keeps killing processes that do not die (stuck in the kernel: they
/// die when they leave it, as SIGKILL stays pending).
const KILL_PATIENCE: Duration = Duration::from_secs(10);

/// The program that supervises each task: it runs [`crate::supervise::run`], as
/// `mycluster supervise` does.
#[derive(Clone, Debug)]
pub struct Supervisor {
    program: PathBuf,
    arg0: Option<OsString>,
    args: Vec<OsString>,
}

impl Supervisor {
    /// `program args...` (in the runtime's own tests, its `mycluster-supervise` binary).
    pub fn new<A: Into<OsString>>(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = A>,
    ) -> Supervisor {
        Supervisor {
            program: program.into(),
            arg0: None,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// This very executable, run with `args`. Started through `/proc/self/exe`, so it is
    /// the agent's own build even after the file was replaced on disk (an upgrade while
    /// the agent runs), and shown under the name the agent was started as.
    pub fn this_executable<A: Into<OsString>>(args: impl IntoIterator<Item = A>) -> Supervisor {
        Supervisor {
            arg0: std::env::args_os().next(),
            ..Supervisor::new("/proc/self/exe", args)
        }
    }
}

pub struct ProcessRuntime {
    identity: Identity,
    supervisor: Supervisor,
    /// From SIGTERM to SIGKILL when a stop gives no grace of its own.
    stop_grace: Duration,
    children: Arc<Mutex<BTreeMap<String, Tracked>>>,
    spawner: Spawner,
    cleaned: std::sync::Once,
    /// Leftover cgroups of this worker removed (once, at its first task with limits).
    swept: std::sync::Once,
    /// The exits of its supervisors, heard as SIGCHLD, once someone listens.
    exits: ExitFeed,
    /// Where its tasks' output is kept; `None`: discarded.
    logs: Option<LogFiles>,
}

struct Tracked {
    /// The task's supervisor: its exit status is the command's.
    supervisor: Child,
    container: Container,
    /// The task's environment, labels included: what an `exec` in it runs with.
    env: BTreeMap<String, String>,
    /// Its cgroup, when it has limits: removed once its processes are gone.
    group: Option<TaskGroup>,
    /// Its log files, when kept: removed with this record once its output has ended.
    log: Option<Arc<TaskLog>>,
}

impl ProcessRuntime {
    /// A runtime for `identity`, running each task under `supervisor`. Before its first
    /// `list` it kills what a previous agent of the same worker left running (found by its
    /// environment), so nothing runs that this agent cannot see. Not here: an agent that
    /// fails to start (a bad flag, a port in use) must not kill the workloads of the agent
    /// that is running.
    pub fn new(identity: Identity, supervisor: Supervisor) -> ProcessRuntime {
        ProcessRuntime {
            identity,
            supervisor,
            stop_grace: GRACE,
            children: Arc::new(Mutex::new(BTreeMap::new())),
            spawner: Spawner::start(),
            cleaned: std::sync::Once::new(),
            swept: std::sync::Once::new(),
            exits: ExitFeed::new(),
            logs: None,
        }
    }

    /// Keeps each task's stdout and stderr in `files` (see `LogFiles`).
    pub fn with_logs(mut self, files: LogFiles) -> ProcessRuntime {
        self.logs = Some(files);
        self
    }

    /// The grace of a stop that gives none (as `DockerOptions::stop_grace`).
    pub fn with_stop_grace(mut self, grace: Duration) -> ProcessRuntime {
        self.stop_grace = grace;
        self
    }

    fn clean_leftovers_once(&self) {
        self.cleaned.call_once(|| {
            let killed = kill_leftovers(&self.identity);
            if killed > 0 {
                tracing::warn!(
                    "process driver: killed {killed} leftover processes of worker {}",
                    self.identity.worker
                );
            }
            // Their logs: no task of this runtime has any yet.
            if let Some(files) = &self.logs {
                remove_leftover_logs(&files.dir);
            }
        });
    }

    /// The cgroup name of a task of this worker: `mycluster-<cluster>-<worker>-<task>`.
    fn group_name(&self, task_id: &str) -> String {
        format!("{}{task_id}", self.group_prefix())
    }

    fn group_prefix(&self) -> String {
        format!(
            "mycluster-{}-{}-",
            self.identity.cluster, self.identity.worker
        )
    }

    /// A new cgroup for `spec`'s limits; `None` for a task without any.
    fn task_group(&self, spec: &TaskSpec) -> Result<Option<TaskGroup>, RuntimeError> {
        let limits = spec.resources.limits;
        if limits.is_empty() {
            return Ok(None);
        }
        let delegated =
            cgroup::delegated().map_err(|why| RuntimeError::Unsupported(why.to_string()))?;
        // Empty groups a dead agent of this worker left (its processes were just killed).
        self.swept
            .call_once(|| delegated.sweep(&self.group_prefix()));
        delegated
            .create(&self.group_name(&spec.task_id), &limits)
            .map(Some)
            .map_err(RuntimeError::StartFailed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Tracked>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The environment variables that label a task's processes.
    fn marks(&self, spec: &TaskSpec) -> [(&'static str, String); 4] {
        [
            (ENV_CLUSTER, self.identity.cluster.clone()),
            (ENV_WORKER, self.identity.worker.clone()),
            (ENV_SERVICE, spec.service.clone()),
            (ENV_TASK, spec.task_id.clone()),
        ]
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn driver(&self) -> mycluster_core::Driver {
        mycluster_core::Driver::Process
    }

    fn check(&self, spec: &TaskSpec) -> Result<(), RuntimeError> {
        match &spec.command {
            Some(command) if !command.is_empty() => {}
            _ => {
                return Err(RuntimeError::Unsupported(format!(
                    "the process driver runs a command, and service {} has none (only an \
                     image): run it on a docker worker, or give it a command",
                    spec.service
                )))
            }
        }
        if let Some(mount) = spec.mounts.first() {
            return Err(RuntimeError::Unsupported(format!(
                "the process driver cannot mount volumes, and service {} mounts {} at {}: \
                 run it on a docker worker, or remove its volumes",
                spec.service, mount.source, mount.target
            )));
        }
        if !spec.resources.limits.is_empty() {
            cgroup::delegated().map_err(|why| RuntimeError::Unsupported(why.to_string()))?;
        }
        Ok(())
    }

    async fn start(&self, spec: &TaskSpec) -> Result<String, RuntimeError> {
        self.check(spec)?;
        self.clean_leftovers_once();
        if self.lock().contains_key(&spec.task_id) {
            return Err(RuntimeError::StartFailed(format!(
                "a process for task {} already exists",
                spec.task_id
            )));
        }
        let command = spec.command.clone().unwrap_or_default();
        let cannot_run =
            |why: String| RuntimeError::StartFailed(format!("cannot run '{}': {why}", command[0]));
        let marks = self.marks(spec);
        let mut env = spec.env.clone();
        env.extend(marks.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let (log, output) = self.capture(&spec.task_id);
        let request = Request {
            grace: self.stop_grace,
            command: command.clone(),
            env: env.clone(),
            output: output.is_some(),
        }
        .encode()
        .map_err(|e| cannot_run(e.to_string()))?;
        let group = self.task_group(spec)?;
        let drop_group = |group: &Option<TaskGroup>| {
            if let Some(group) = group {
                group.remove();
            }
        };
        let spawned = self
            .spawner
            .spawn(self.supervisor.clone(), marks, output)
            .await;
        let mut supervisor = match spawned {
            Ok(supervisor) => supervisor,
            Err(e) => {
                drop_group(&group);
                return Err(cannot_run(format!(
                    "cannot start its supervisor {}: {e}",
                    self.supervisor.program.display()
                )));
            }
        };
        // Inside before the command starts: all it starts is born in the group.
        if let Some(group) = &group {
            if let Err(why) = group.add(supervisor.id() as i32) {
                end(&mut supervisor);
                group.remove();
                return Err(RuntimeError::StartFailed(why));
            }
        }
        let (supervisor, pid) = match hear(supervisor, request).await {
            Ok(started) => started,
            Err(why) => {
                drop_group(&group);
                return Err(cannot_run(why));
            }
        };
        let id = format!("pid-{pid}");
        let container = Container {
            task_id: spec.task_id.clone(),
            id: id.clone(),
            name: spec.container_name(),
            state: ContainerState::Running,
        };
        self.lock().insert(
            spec.task_id.clone(),
            Tracked {
                supervisor,
                container,
                env,
                group,
                log,
            },
        );
        Ok(id)
    }

    async fn remove(
        &self,
        container: &Container,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        let grace = grace.unwrap_or(self.stop_grace);
        {
            let mut children = self.lock();
            let Some(tracked) = children.get_mut(&container.task_id) else {
                return Ok(());
            };
            if tracked.container.id != container.id {
                return Ok(());
            }
            // Signalled under the lock: no `list` can reap it meanwhile and free its pid.
            // The grace travels with the stop (see `supervise`).
            match tracked.supervisor.try_wait() {
                Ok(None) => tree::queue(
                    tracked.supervisor.id() as i32,
                    libc::SIGTERM,
                    usize::try_from(grace.as_millis()).unwrap_or(usize::MAX),
                ),
                _ => {
                    children.remove(&container.task_id);
                    return Ok(());
                }
            }
        }
        // The supervisor gives the command its grace, kills what is left and exits.
        let deadline = crate::later(grace + STOP_MARGIN);
        let stuck = loop {
            {
                let mut children = self.lock();
                let Some(tracked) = children.get_mut(&container.task_id) else {
                    return Ok(());
                };
                let running = matches!(tracked.supervisor.try_wait(), Ok(None));
                if !running {
                    children.remove(&container.task_id);
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    // Out of the map, nobody else reaps it: its pid stays its own.
                    break children.remove(&container.task_id);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(mut stuck) = stuck {
            // It does not answer (stopped, or stuck): end its tree from here, off the
            // async workers and without holding the map (that may take seconds).
            let ended = tokio::task::spawn_blocking(move || {
                tree::kill_tree(stuck.supervisor.id() as i32, KILL_PATIENCE);
                let _ = stuck.supervisor.wait();
            })
            .await;
            if let Err(e) = ended {
                tracing::warn!("ending the tree of {}: {e}", container.name);
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        self.clean_leftovers_once();
        let mut children = self.lock();
        let mut out = Vec::with_capacity(children.len());
        for tracked in children.values_mut() {
            tracked.observe();
            out.push(tracked.container.clone());
        }
        Ok(out)
    }

    /// Tasks run on this host, sharing its network: their ports are on loopback.
    async fn address(&self, container: &Container) -> Result<Option<IpAddr>, RuntimeError> {
        Ok(self
            .running_env(container)
            .map(|_| IpAddr::V4(Ipv4Addr::LOCALHOST)))
    }

    /// A child of the agent (not of the task's supervisor: it is not part of the task's
    /// tree), with the task's environment and the agent's working directory, as the task
    /// has; killed with everything it started when its time is up.
    async fn exec(
        &self,
        container: &Container,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let Some(env) = self.running_env(container) else {
            return Err(RuntimeError::StartFailed(format!(
                "cannot exec in {}: it is not running",
                container.name
            )));
        };
        exec::run(argv, &env, timeout).await
    }

    /// From the task's files, as long as its record is kept (exited or not).
    async fn logs(
        &self,
        container: &Container,
        options: &LogOptions,
    ) -> Result<LogLines, RuntimeError> {
        let log = {
            let children = self.lock();
            let tracked = children
                .get(&container.task_id)
                .filter(|t| t.container.id == container.id)
                .ok_or_else(|| {
                    RuntimeError::NotFound(format!("no process {} on this worker", container.name))
                })?;
            tracked
                .log
                .as_ref()
                .map(|log| (log.dir.clone(), log.files, log.watch()))
        };
        let Some((dir, files, progress)) = log else {
            return Err(RuntimeError::Unsupported(format!(
                "no logs of {}: this agent keeps none (it has no directory for them), or it \
                 could not make them when the task started",
                container.name
            )));
        };
        Ok(read::read(dir, files, progress, options.clone()))
    }

    /// The ends of this worker's supervisors (a command that exited or was killed ends
    /// its supervisor), heard as the agent's SIGCHLD: one signal handler for the whole
    /// runtime, which looks at its own supervisors on each (see `watch_children`).
    fn exits(&self) -> Option<tokio::sync::broadcast::Receiver<Exit>> {
        let (children, worker) = (self.children.clone(), self.identity.worker.clone());
        self.exits
            .subscribe(|sender, stop| watch_children(children, worker, sender, stop))
    }
}

/// Announces each supervisor of `children` that ended, on every SIGCHLD of the agent's
/// process (which also comes for children not ours, as an `exec`'s: those are looked
/// past), until `stop`.
async fn watch_children(
    children: Arc<Mutex<BTreeMap<String, Tracked>>>,
    worker: String,
    sender: tokio::sync::broadcast::Sender<Exit>,
    stop: tokio_util::sync::CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let name = format!("process driver {worker}: child exits");
    let mut signals = match signal(SignalKind::child()) {
        Ok(signals) => signals,
        Err(e) => {
            // Exits are still found by the agent's periodic pass.
            tracing::warn!("{name}: cannot listen for SIGCHLD ({e}): exits found by polling");
            return;
        }
    };
    mycluster_background::Loop::new(name, Duration::from_millis(100), stop.clone())
        .quiet_recovery()
        .run_with(&mut signals, |signals| {
            let (children, sender, stop) = (children.clone(), sender.clone(), stop.clone());
            Box::pin(async move {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(mycluster_background::LoopControl::Stop),
                    heard = signals.recv() => if heard.is_none() {
                        return Err("the SIGCHLD stream ended".to_string());
                    },
                }
                let mut children = children.lock().unwrap_or_else(|p| p.into_inner());
                for tracked in children.values_mut() {
                    if tracked.observe() {
                        announce(
                            &sender,
                            Exit::Ended {
                                task_id: tracked.container.task_id.clone(),
                                container_id: tracked.container.id.clone(),
                            },
                        );
                    }
                }
                Ok(mycluster_background::LoopControl::Now)
            })
        })
        .await;
}

impl Tracked {
    /// Notes how its supervisor ended, if it did since last looked at; true when it just
    /// did (a reaped supervisor keeps its status: looking again changes nothing).
    fn observe(&mut self) -> bool {
        if self.container.state != ContainerState::Running {
            return false;
        }
        match self.supervisor.try_wait() {
            Ok(Some(status)) => {
                self.container.state = exit_state(status);
                // Killed by the kernel for its memory: say so, as Docker does.
                if self.group.as_ref().is_some_and(TaskGroup::oom_killed) {
                    if let ContainerState::Exited { error, .. } = &mut self.container.state {
                        *error = Some("OOM killed".into());
                    }
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.container.state = ContainerState::Exited {
                    code: -1,
                    error: Some(format!("lost track of the process: {e}")),
                };
                true
            }
        }
    }
}

impl ProcessRuntime {
    /// Pipes for a task's output and the files they fill, when this runtime keeps logs
    /// (and can: a task whose files cannot be made runs without, said in the agent's log).
    fn capture(&self, task_id: &str) -> (Option<Arc<TaskLog>>, Option<[std::os::fd::OwnedFd; 2]>) {
        let Some(files) = &self.logs else {
            return (None, None);
        };
        let made = pipe().and_then(|(out_read, out_write)| {
            let (err_read, err_write) = pipe()?;
            let log = capture(files, task_id, out_read, err_read)?;
            Ok((log, [out_write, err_write]))
        });
        match made {
            Ok((log, output)) => (Some(log), Some(output)),
            Err(e) => {
                tracing::warn!(
                    "process driver: cannot keep the logs of task {task_id} in {} ({e}): its \
                     output is discarded",
                    files.dir.display()
                );
                (None, None)
            }
        }
    }

    /// The environment of the task's process, if it still runs as `container`.
    fn running_env(&self, container: &Container) -> Option<BTreeMap<String, String>> {
        let mut children = self.lock();
        let tracked = children.get_mut(&container.task_id)?;
        let running = tracked.container.id == container.id
            && tracked.container.state == ContainerState::Running
            && matches!(tracked.supervisor.try_wait(), Ok(None));
        running.then(|| tracked.env.clone())
    }
}

impl Drop for ProcessRuntime {
    /// A runtime that goes away takes its processes with it, as its agent would.
    fn drop(&mut self) {
        let mut children = self.lock();
        // Every supervisor at once: each kills its tree and exits.
        for tracked in children.values_mut() {
            if let Ok(None) = tracked.supervisor.try_wait() {
                tree::kill(tracked.supervisor.id() as i32, AGENT_DIED);
            }
        }
        let deadline = Instant::now() + STOP_MARGIN;
        for tracked in children.values_mut() {
            while let Ok(None) = tracked.supervisor.try_wait() {
                if Instant::now() >= deadline {
                    tree::kill_tree(tracked.supervisor.id() as i32, KILL_PATIENCE);
                    let _ = tracked.supervisor.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Tracked {
    /// Its processes are gone (or going): its cgroup goes too.
    fn drop(&mut self) {
        if let Some(group) = &self.group {
            group.remove();
        }
    }
}

fn exit_state(status: std::process::ExitStatus) -> ContainerState {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ContainerState::Exited {
            code: i64::from(code),
            error: None,
        },
        (None, Some(signal)) => ContainerState::Exited {
            code: 128 + i64::from(signal),
            error: Some(format!("killed by signal {signal}")),
        },
        (None, None) => ContainerState::Exited {
            code: -1,
            error: Some("ended without a status".into()),
        },
    }
}

/// Removes every task's logs under `dir` (left by an agent of this worker that died).
fn remove_leftover_logs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!("cannot remove the old logs {}: {e}", entry.path().display());
        }
    }
}

/// Kills every process whose environment marks it as this cluster's and worker's
/// (supervisors and commands), and everything below them; returns how many.
fn kill_leftovers(identity: &Identity) -> usize {
    let cluster = format!("{ENV_CLUSTER}={}", identity.cluster);
    let worker = format!("{ENV_WORKER}={}", identity.worker);
    let marked = |pid: i32| {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        vars.contains(&cluster.as_bytes()) && vars.contains(&worker.as_bytes())
    };
    tree::kill_marked(marked, KILL_PATIENCE)
}
