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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::supervise::{Reply, Request, AGENT_DIED};
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
}

struct Tracked {
    /// The task's supervisor: its exit status is the command's.
    supervisor: Child,
    container: Container,
    /// The task's environment, labels included: what an `exec` in it runs with.
    env: BTreeMap<String, String>,
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
        }
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
        });
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
            Some(command) if !command.is_empty() => Ok(()),
            _ => Err(RuntimeError::Unsupported(format!(
                "the process driver runs a command, and service {} has none (only an image): \
                 run it on a docker worker, or give it a command",
                spec.service
            ))),
        }
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
        let request = Request {
            grace: self.stop_grace,
            command: command.clone(),
            env: env.clone(),
        }
        .encode()
        .map_err(|e| cannot_run(e.to_string()))?;
        let supervisor = self
            .spawner
            .spawn(self.supervisor.clone(), marks)
            .await
            .map_err(|e| {
                cannot_run(format!(
                    "cannot start its supervisor {}: {e}",
                    self.supervisor.program.display()
                ))
            })?;
        let (supervisor, pid) = hear(supervisor, request).await.map_err(cannot_run)?;
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
            if tracked.container.state == ContainerState::Running {
                match tracked.supervisor.try_wait() {
                    Ok(Some(status)) => tracked.container.state = exit_state(status),
                    Ok(None) => {}
                    Err(e) => {
                        tracked.container.state = ContainerState::Exited {
                            code: -1,
                            error: Some(format!("lost track of the process: {e}")),
                        }
                    }
                }
            }
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
}

impl ProcessRuntime {
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

/// Sends a new supervisor its task and reads whether the command runs: its pid, or why
/// it could not be executed. On anything but a start the supervisor is ended and reaped.
async fn hear(supervisor: Child, request: Vec<u8>) -> Result<(Child, i32), String> {
    let pid = supervisor.id() as i32;
    let (answered, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("process-handshake".into())
        .spawn(move || {
            let mut supervisor = supervisor;
            let why = match exchange(&mut supervisor, &request) {
                Ok(Reply::Started(pid)) => {
                    // Nobody waits for it any more (the start was cancelled): end it.
                    if let Err(Ok((mut supervisor, _))) = answered.send(Ok((supervisor, pid))) {
                        end(&mut supervisor);
                    }
                    return;
                }
                Ok(Reply::Failed(why)) => why,
                Err(e) => format!("its supervisor did not answer ({e})"),
            };
            end(&mut supervisor);
            let _ = answered.send(Err(why));
        })
        .map_err(|e| format!("cannot talk to its supervisor: {e}"))?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("its supervisor's handshake ended without an answer".into()),
        Err(_) => {
            // As when its agent dies: it ends what it started, then itself; the handshake
            // thread sees the pipes close, and reaps it.
            tree::kill(pid, AGENT_DIED);
            Err(format!(
                "its supervisor did not answer in {ANSWER_TIMEOUT:?}"
            ))
        }
    }
}

/// Writes the request on the supervisor's stdin, reads its one-line answer on stdout.
fn exchange(supervisor: &mut Child, request: &[u8]) -> std::io::Result<Reply> {
    let missing = || std::io::Error::other("no pipe to it");
    let mut stdin = supervisor.stdin.take().ok_or_else(missing)?;
    stdin.write_all(request)?;
    // Closed: the supervisor reads its request to the end.
    drop(stdin);
    let stdout = supervisor.stdout.take().ok_or_else(missing)?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Reply::parse(&line).ok_or_else(|| match line.as_str() {
        "" => std::io::Error::other("it ended first"),
        other => std::io::Error::other(format!("it said {other:?}")),
    })
}

/// Ends a supervisor that will not be tracked, its tree with it, and reaps it.
fn end(supervisor: &mut Child) {
    tree::kill_tree(supervisor.id() as i32, KILL_PATIENCE);
    let _ = supervisor.wait();
}

type SpawnRequest = (
    Supervisor,
    [(&'static str, String); 4],
    tokio::sync::oneshot::Sender<std::io::Result<Child>>,
);

/// Forks from one dedicated thread. `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked a child ends, not the process; async runtimes end idle threads, so forking
/// from them would kill supervisors at random.
struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    fn start() -> Spawner {
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("process-spawner".into())
            .spawn(move || {
                for (supervisor, marks, reply) in receiver {
                    // A start cancelled meanwhile: the supervisor, still without a task,
                    // must not stay a zombie.
                    if let Err(Ok(mut child)) = reply.send(spawn_supervisor(&supervisor, &marks)) {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            })
            .ok();
        Spawner { requests: sender }
    }

    async fn spawn(
        &self,
        supervisor: Supervisor,
        marks: [(&'static str, String); 4],
    ) -> std::io::Result<Child> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send((supervisor, marks, reply))
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }
}

/// Starts a supervisor, in a process group of its own (a Ctrl-C meant for the agent's
/// terminal is not a stop), told of the agent's death by `AGENT_DIED`.
fn spawn_supervisor(
    supervisor: &Supervisor,
    marks: &[(&'static str, String)],
) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&supervisor.program);
    if let Some(arg0) = &supervisor.arg0 {
        cmd.arg0(arg0);
    }
    cmd.args(&supervisor.args)
        .envs(marks.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The agent's: a supervisor only writes there if it fails.
        .stderr(Stdio::inherit())
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, AGENT_DIED) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                // No allocation after fork (the agent has other threads): an OS error.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}
