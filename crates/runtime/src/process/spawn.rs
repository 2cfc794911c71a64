//! Starting a task's supervisor: forked from one dedicated thread (see `Spawner`), then
//! told its task on stdin, its one-line answer read back (see `hear`).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::{Supervisor, ANSWER_TIMEOUT, KILL_PATIENCE};
use crate::supervise::{Reply, AGENT_DIED, OUTPUT_FDS};
use crate::tree;

/// Sends a new supervisor its task and reads whether the command runs: its pid, or why
/// it could not be executed. On anything but a start the supervisor is ended and reaped.
pub(super) async fn hear(supervisor: Child, request: Vec<u8>) -> Result<(Child, i32), String> {
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
pub(super) fn end(supervisor: &mut Child) {
    tree::kill_tree(supervisor.id() as i32, KILL_PATIENCE);
    let _ = supervisor.wait();
}

type SpawnRequest = (
    Supervisor,
    [(&'static str, String); 4],
    Option<[OwnedFd; 2]>,
    tokio::sync::oneshot::Sender<std::io::Result<Child>>,
);

/// Forks from one dedicated thread. `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked a child ends, not the process; async runtimes end idle threads, so forking
/// from them would kill supervisors at random.
pub(super) struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    pub(super) fn start() -> Spawner {
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("process-spawner".into())
            .spawn(move || {
                for (supervisor, marks, output, reply) in receiver {
                    let spawned = spawn_supervisor(&supervisor, &marks, output.as_ref());
                    // The supervisor has its copies: the pipes end with its task.
                    drop(output);
                    // A start cancelled meanwhile: the supervisor, still without a task,
                    // must not stay a zombie.
                    if let Err(Ok(mut child)) = reply.send(spawned) {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            })
            .ok();
        Spawner { requests: sender }
    }

    pub(super) async fn spawn(
        &self,
        supervisor: Supervisor,
        marks: [(&'static str, String); 4],
        output: Option<[OwnedFd; 2]>,
    ) -> std::io::Result<Child> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send((supervisor, marks, output, reply))
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }
}

/// Starts a supervisor, in a process group of its own (a Ctrl-C meant for the agent's
/// terminal is not a stop), told of the agent's death by `AGENT_DIED`; with `output`, the
/// write ends of its command's stdout and stderr pipes as its descriptors 3 and 4.
pub(super) fn spawn_supervisor(
    supervisor: &Supervisor,
    marks: &[(&'static str, String)],
    output: Option<&[OwnedFd; 2]>,
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
    let output = output.map(|[out, err]| [out.as_raw_fd(), err.as_raw_fd()]);
    // SAFETY: only async-signal-safe calls (fcntl, dup2, prctl, getppid) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fds) = output {
                // Above the targets first, so that placing one cannot overwrite the other.
                let mut high = [0; 2];
                for (i, fd) in fds.into_iter().enumerate() {
                    high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // dup2 leaves the copies open across exec; the others close there.
                for (fd, target) in high.into_iter().zip(OUTPUT_FDS) {
                    if libc::dup2(fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
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
