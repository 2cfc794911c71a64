//! A real `redis-server` for tests: started on a free port in a temporary dir, with the
//! durable settings the Redis store expects (appendonly, fsync on every write), and
//! killed when dropped. Without the binary a test fails under `CI=true` (where
//! `.ci/run` installs it) and is skipped, loudly, elsewhere.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server, or `None` (after saying so) when redis-server is not installed
    /// outside CI.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !installed(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir,
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and data dir) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let answered =
                std::net::TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.set_read_timeout(Some(Duration::from_secs(1)))?;
                    s.write_all(b"PING\r\n")?;
                    let mut buf = [0u8; 7];
                    s.read_exact(&mut buf)?;
                    Ok(buf.starts_with(b"+PONG"))
                });
            if matches!(answered, Ok(true)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it and starts it again with nothing: a Redis restarted without persistence
    /// (`shutdown nosave` with no append-only file).
    pub fn restart_empty(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .flatten()
        {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
        self.restart();
    }

    /// Runs `redis-cli` against it; returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(output.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// SIGKILL: as a crashed or unreachable Redis.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// Whether redis-server is installed; under `CI=true` its absence is a failure.
pub fn installed(test: &str) -> bool {
    let installed = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: redis-server is not installed, and CI=true: the Redis tests must run");
        }
        eprintln!("SKIP {test}: redis-server is not installed (apt-get install redis-server)");
    }
    installed
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
