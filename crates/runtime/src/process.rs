//! The `process` driver: a task is a child process of the agent, running the service's
//! command. For hosts without Docker and for fast tests.
//!
//! Children behave like containers on a node: they are marked with environment variables
//! (the labels), each leads its own process group (stopping a task stops all it started),
//! and they get SIGKILL when the agent dies (`PR_SET_PDEATHSIG`), as a dead node's
//! containers die with it. An agent that starts again first kills anything of its
//! worker still running, so a restart never leaves a duplicate behind.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Container, ContainerRuntime, ContainerState, Identity, RuntimeError, TaskSpec};

/// Environment variables that mark a process as ours (the process driver's labels).
pub const ENV_CLUSTER: &str = "MYCLUSTER_CLUSTER";
pub const ENV_WORKER: &str = "MYCLUSTER_WORKER";
pub const ENV_SERVICE: &str = "MYCLUSTER_SERVICE";
pub const ENV_TASK: &str = "MYCLUSTER_TASK";

/// How long a stopped task gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

pub struct ProcessRuntime {
    identity: Identity,
    children: Arc<Mutex<BTreeMap<String, Tracked>>>,
    spawner: Spawner,
    cleaned: std::sync::Once,
}

struct Tracked {
    child: Child,
    container: Container,
}

impl ProcessRuntime {
    /// A runtime for `identity`. Before its first `list` it kills what a previous agent
    /// of the same worker left running (found by its environment), so nothing runs that
    /// this agent cannot see. Not here: an agent that fails to start (a bad flag, a port
    /// in use) must not kill the workloads of the agent that is running.
    pub fn new(identity: Identity) -> ProcessRuntime {
        ProcessRuntime {
            identity,
            children: Arc::new(Mutex::new(BTreeMap::new())),
            spawner: Spawner::start(),
            cleaned: std::sync::Once::new(),
        }
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
}

#[async_trait::async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn driver(&self) -> &'static str {
        "process"
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
        let mut env = spec.env.clone();
        env.insert(ENV_CLUSTER.into(), self.identity.cluster.clone());
        env.insert(ENV_WORKER.into(), self.identity.worker.clone());
        env.insert(ENV_SERVICE.into(), spec.service.clone());
        env.insert(ENV_TASK.into(), spec.task_id.clone());
        let child = self
            .spawner
            .spawn(command.clone(), env)
            .await
            .map_err(|e| RuntimeError::StartFailed(format!("cannot run '{}': {e}", command[0])))?;
        let id = format!("pid-{}", child.id());
        let container = Container {
            task_id: spec.task_id.clone(),
            id: id.clone(),
            name: spec.container_name(),
            state: ContainerState::Running,
        };
        self.lock()
            .insert(spec.task_id.clone(), Tracked { child, container });
        Ok(id)
    }

    async fn remove(&self, container: &Container) -> Result<(), RuntimeError> {
        let pid = {
            let mut children = self.lock();
            let Some(tracked) = children.get_mut(&container.task_id) else {
                return Ok(());
            };
            if tracked.container.id != container.id {
                return Ok(());
            }
            match tracked.child.try_wait() {
                Ok(Some(_)) => {
                    children.remove(&container.task_id);
                    return Ok(());
                }
                _ => tracked.child.id() as i32,
            }
        };
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + GRACE;
        loop {
            let exited = {
                let mut children = self.lock();
                match children.get_mut(&container.task_id) {
                    Some(tracked) => matches!(tracked.child.try_wait(), Ok(Some(_)) | Err(_)),
                    None => true,
                }
            };
            if exited {
                break;
            }
            if Instant::now() >= deadline {
                signal_group(pid, libc::SIGKILL);
                let mut children = self.lock();
                if let Some(tracked) = children.get_mut(&container.task_id) {
                    let _ = tracked.child.wait();
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The leader is gone; anything it started in its group goes too.
        signal_group(pid, libc::SIGKILL);
        self.lock().remove(&container.task_id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        self.clean_leftovers_once();
        let mut children = self.lock();
        let mut out = Vec::with_capacity(children.len());
        for tracked in children.values_mut() {
            if tracked.container.state == ContainerState::Running {
                match tracked.child.try_wait() {
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
}

impl Drop for ProcessRuntime {
    /// A runtime that goes away takes its processes with it, as its agent would.
    fn drop(&mut self) {
        let mut children = self.lock();
        for tracked in children.values_mut() {
            signal_group(tracked.child.id() as i32, libc::SIGKILL);
            let _ = tracked.child.wait();
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

fn signal_group(pid: i32, signal: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Kills every process whose environment marks it as this cluster's and worker's.
fn kill_leftovers(identity: &Identity) -> usize {
    let cluster = format!("{ENV_CLUSTER}={}", identity.cluster);
    let worker = format!("{ENV_WORKER}={}", identity.worker);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let has = |wanted: &str| vars.contains(&wanted.as_bytes());
        if has(&cluster) && has(&worker) && pid != std::process::id() as i32 {
            // SAFETY: kill(2) on a pid; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

type SpawnRequest = (
    Vec<String>,
    BTreeMap<String, String>,
    tokio::sync::oneshot::Sender<std::io::Result<Child>>,
);

/// Forks from one dedicated thread. `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked a child ends, not the process; async runtimes end idle threads, so forking
/// from them would kill children at random.
struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    fn start() -> Spawner {
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("process-spawner".into())
            .spawn(move || {
                for (command, env, reply) in receiver {
                    let _ = reply.send(spawn_child(&command, &env));
                }
            })
            .ok();
        Spawner { requests: sender }
    }

    async fn spawn(
        &self,
        command: Vec<String>,
        env: BTreeMap<String, String>,
    ) -> std::io::Result<Child> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send((command, env, reply))
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }
}

fn spawn_child(command: &[String], env: &BTreeMap<String, String>) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the agent is gone"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}
