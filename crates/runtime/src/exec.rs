//! A command run "in" a process-driver task: a child process of the agent with the task's
//! environment, bounded in time and in the output kept (see `ContainerRuntime::exec`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::{BoundedOutput, ExecOutcome, RuntimeError};

/// How long output still in the pipes is read once the command ended: something it
/// started in the background may hold them open, and must not hold up the answer.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// Runs `argv` with `env` over the agent's own environment (as the task's command has it:
/// its supervisor passes it on), killed, with
/// everything it started in its process group, when `timeout` passes or the caller gives
/// up (the future is dropped).
pub(crate) async fn run(
    argv: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<ExecOutcome, RuntimeError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(RuntimeError::Unsupported("exec needs a command".into()));
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: a timeout kills `sh -c`'s children too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RuntimeError::StartFailed(format!("cannot run '{program}': {e}")))?;
    let group = Group(child.id());
    let output = Arc::new(Mutex::new(BoundedOutput::default()));
    let readers = [
        child.stdout.take().map(|pipe| drain(pipe, output.clone())),
        child.stderr.take().map(|pipe| drain(pipe, output.clone())),
    ];
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            return Err(RuntimeError::Engine(format!(
                "lost track of '{program}': {e}"
            )))
        }
        Err(_) => {
            group.kill();
            let _ = child.wait().await;
            group.disarm();
            return Err(RuntimeError::TimedOut(format!(
                "'{program}' did not end within {timeout:?}"
            )));
        }
    };
    // Reaped: its pid may be reused, so its group is no longer ours to signal.
    group.disarm();
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
            abort.abort();
        }
    }
    let output = output.lock().unwrap_or_else(|p| p.into_inner()).text();
    Ok(ExecOutcome {
        code: exit_code(status),
        output,
    })
}

fn exit_code(status: std::process::ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

/// Reads a pipe to its end into the shared, bounded output.
fn drain(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    output: Arc<Mutex<BoundedOutput>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = [0u8; 1024];
        while let Ok(n @ 1..) = pipe.read(&mut buffer).await {
            output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&buffer[..n]);
        }
    })
}

/// The command's process group, killed when dropped (the caller gave up: its future was
/// dropped) unless disarmed once the command was reaped.
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: a plain syscall; the group is the child's, which is not reaped yet.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}
