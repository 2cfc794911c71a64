//! A real `mycluster manager` process for the benchmarks (this very binary), on a free
//! port and a temporary data dir, and reading a process's memory from /proc.
//!
//! The manager serves TLS and plain HTTP on one port, plain only to loopback peers
//! (issue 20): the benchmarks reach it on 127.0.0.1 in plain HTTP unless they ask for
//! `Scheme::Https` by name, so their figures stay comparable with those measured before
//! TLS, and the API benchmark can load the same process both ways.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mycluster_setup::secret::{generate, JOIN_TOKEN_ENV, TOKEN_ENV};

use crate::error::BenchError;

/// How a benchmark reaches the manager.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Scheme {
    /// Plain HTTP on 127.0.0.1 (allowed: a loopback peer).
    Http,
    /// TLS with the manager's certificate from its cluster CA.
    Https,
}

impl Scheme {
    /// Both sides, the one that goes first alternating with `round`: neither always meets
    /// a manager warmed (or slowed) by the other's run.
    pub fn alternating(round: usize) -> [Scheme; 2] {
        if round.is_multiple_of(2) {
            [Scheme::Http, Scheme::Https]
        } else {
            [Scheme::Https, Scheme::Http]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

pub struct ManagerProcess {
    child: Child,
    /// Its API in plain HTTP (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The SHA-256 of its cluster CA (hex), as it logged it: `None` when it serves no
    /// TLS (`--insecure-no-tls` among the extra flags).
    pub ca_sha256: Option<String>,
    /// The API token it demands.
    pub token: String,
    /// The join token its agents present.
    pub join_token: String,
    dir: tempfile::TempDir,
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
            // The library's "TLS: cluster CA sha256 …" line comes before the binary's
            // "listening on" one.
            .env(
                "RUST_LOG",
                "warn,mycluster::manager=info,mycluster_manager=info",
            )
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
            let mut ca_sha256 = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "... listening on https://127.0.0.1:PORT (...); CA sha256 <hex>; ..."
                if let Some(hex) = word_after(&line, "CA sha256 ") {
                    ca_sha256 = Some(hex.trim_end_matches(';').to_string());
                }
                // "... listening on https://127.0.0.1:PORT (plain HTTP from ...)"
                if let Some(url) = word_after(&line, "listening on ") {
                    let _ = found.send((url, ca_sha256.clone()));
                }
            }
        });
        match address.recv_timeout(Duration::from_secs(60)) {
            Ok((url, ca_sha256)) => Ok(ManagerProcess {
                child,
                // Plain HTTP is served on the TLS port too, to loopback peers.
                url: url.replacen("https://", "http://", 1),
                ca_sha256,
                token,
                join_token,
                dir,
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

    /// Its API's base URL for `scheme`, on the one port.
    pub fn url_for(&self, scheme: Scheme) -> Result<String, BenchError> {
        match scheme {
            Scheme::Http => Ok(self.url.clone()),
            Scheme::Https if self.ca_sha256.is_some() => {
                Ok(self.url.replacen("http://", "https://", 1))
            }
            Scheme::Https => Err(BenchError::Failed(
                "this manager serves no TLS (started with --insecure-no-tls)".into(),
            )),
        }
    }

    /// A real `mycluster agent` of this manager (with its join token), killed if the
    /// bench dies; `args` after `agent`.
    pub fn spawn_agent(&self, args: &[&str]) -> Result<Child, BenchError> {
        let exe = this_executable()?;
        let mut command = Command::new(exe);
        die_with_parent(&mut command).arg("agent").args(args);
        // Its credential in this manager's directory: the default (under $HOME) would
        // outlive the manager, and the next bench's agent of that name would present a
        // credential its new manager never made, and stop.
        if !args.contains(&"--data-dir") {
            let name = args
                .iter()
                .position(|a| *a == "--name")
                .and_then(|at| args.get(at + 1))
                .copied()
                .unwrap_or("agent");
            command
                .arg("--data-dir")
                .arg(self.dir.path().join("agents").join(name));
        }
        command
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

/// The whitespace-delimited word after `marker` in `line`.
fn word_after(line: &str, marker: &str) -> Option<String> {
    let at = line.find(marker)?;
    line[at + marker.len()..]
        .split_whitespace()
        .next()
        .map(str::to_owned)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_and_the_ca_from_the_managers_log() {
        let tls = "2026-11-26 INFO MyCluster manager for cluster bench listening on \
                   https://127.0.0.1:40123 (plain HTTP from this host only); CA sha256 ab12; `mycluster token --join`";
        assert_eq!(
            word_after(tls, "listening on ").as_deref(),
            Some("https://127.0.0.1:40123")
        );
        // The digest as the bench keeps it: its ';' trimmed.
        assert_eq!(word_after(tls, "CA sha256 ").as_deref(), Some("ab12;"));
        let plain = "INFO MyCluster manager for cluster bench listening on http://127.0.0.1:5";
        assert_eq!(
            word_after(plain, "listening on ").as_deref(),
            Some("http://127.0.0.1:5")
        );
        assert_eq!(word_after(plain, "CA sha256 "), None);
    }
}
