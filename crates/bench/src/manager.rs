//! A real `mycluster manager` process for the benchmarks (this very binary), on a free
//! port and a temporary data dir, and reading a process's memory from /proc.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mycluster_setup::secret::{generate, JOIN_TOKEN_ENV, TOKEN_ENV};

use crate::error::BenchError;

pub struct ManagerProcess {
    child: Child,
    pub url: String,
    /// The API token it demands.
    pub token: String,
    /// The join token its agents present.
    pub join_token: String,
    _dir: tempfile::TempDir,
}

impl ManagerProcess {
    pub fn start(extra: &[&str]) -> Result<ManagerProcess, BenchError> {
        let dir = tempfile::tempdir()?;
        let exe = this_executable()?;
        let token = generate();
        let join_token = generate();
        let mut command = Command::new(exe);
        let mut child = die_with_parent(&mut command)
            .args([
                "manager",
                "--listen",
                "127.0.0.1:0",
                "--name",
                "bench",
                "--data-dir",
            ])
            .arg(dir.path())
            // Every agent of a benchmark host comes from one address.
            .args(["--long-polls-per-client", "100000"])
            .args(extra)
            .env(TOKEN_ENV, &token)
            .env(JOIN_TOKEN_ENV, &join_token)
            .env("RUST_LOG", "warn,mycluster::manager=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::context("cannot start a manager", e))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| BenchError::Failed("no stderr".into()))?;
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let _ = found.send(line[at + "listening on ".len()..].trim().to_string());
                }
            }
        });
        match address.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok(ManagerProcess {
                child,
                url,
                token,
                join_token,
                _dir: dir,
            }),
            Err(_) => {
                let _ = child.kill();
                Err(BenchError::Failed("the manager did not start".into()))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A real `mycluster agent` of this manager (with its join token), killed if the
    /// bench dies; `args` after `agent`.
    pub fn spawn_agent(&self, args: &[&str]) -> Result<Child, BenchError> {
        let exe = this_executable()?;
        let mut command = Command::new(exe);
        die_with_parent(&mut command)
            .arg("agent")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("MYCLUSTER_MANAGER", &self.url)
            .env(JOIN_TOKEN_ENV, &self.join_token)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::context("cannot start an agent", e))
    }

    /// A client of it, with the API token.
    pub fn client(&self, timeout: Duration) -> Result<mycluster_client::Client, BenchError> {
        Ok(mycluster_client::Client::new(&self.url, timeout)?.with_token(Some(self.token.clone())))
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running `mycluster` binary: every process a benchmark starts is one of its
/// subcommands.
pub fn this_executable() -> Result<std::path::PathBuf, BenchError> {
    std::env::current_exe().map_err(|e| BenchError::context("cannot find this executable", e))
}

/// Has the child killed when this process dies, however it dies: an interrupted
/// benchmark must not leave thousands of agents behind.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// (current, peak) resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
