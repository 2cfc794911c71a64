//! A real `mycluster manager` process for the benchmarks (this very binary), on a free
//! port and a temporary data dir, and reading a process's memory from /proc.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};

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
    pub fn start(extra: &[&str]) -> anyhow::Result<ManagerProcess> {
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let token = crate::tokens::generate();
        let join_token = crate::tokens::generate();
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
            .env(crate::tokens::TOKEN_ENV, &token)
            .env(crate::tokens::JOIN_TOKEN_ENV, &join_token)
            .env("RUST_LOG", "warn,mycluster::manager=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start a manager")?;
        let stderr = child.stderr.take().context("no stderr")?;
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
                bail!("the manager did not start")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A real `mycluster agent` of this manager (with its join token), killed if the
    /// bench dies; `args` after `agent`.
    pub fn spawn_agent(&self, args: &[&str]) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut command = Command::new(exe);
        die_with_parent(&mut command)
            .arg("agent")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("MYCLUSTER_MANAGER", &self.url)
            .env(crate::tokens::JOIN_TOKEN_ENV, &self.join_token)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start an agent")
    }

    /// A client of it, with the API token.
    pub fn client(&self, timeout: Duration) -> anyhow::Result<mycluster_client::Client> {
        Ok(mycluster_client::Client::new(&self.url, timeout)?.with_token(Some(self.token.clone())))
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
