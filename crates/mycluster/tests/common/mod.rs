//! Test harness: starts the real `mycluster` binary on a free port and talks to it over
//! HTTP. Processes are killed when their handle drops, so a failing test leaves nothing
//! running.
#![allow(dead_code)]

pub mod copies;
pub mod dev;
pub mod docker;
pub mod relay;
pub mod setup_env;
pub mod split;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test: cargo names it for this package's tests; for the failover
/// bench (`crates/bench`, which includes this harness) its build script does.
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_mycluster") {
    Some(bin) => bin,
    None => match option_env!("MYCLUSTER_BIN") {
        Some(bin) => bin,
        None => panic!("no mycluster binary to test: CARGO_BIN_EXE_mycluster or MYCLUSTER_BIN"),
    },
};

/// The original README's POST, byte for byte.
pub const ORIGINAL_POST: &[u8] =
    br#"{"service": "hello-world" , "image":"crccheck/hello-world", "replicas" : 3 }"#;

/// The API token every test manager demands (tests of authentication itself use others).
pub const TEST_TOKEN: &str = "test-api-token-0123456789abcdef";
/// The join token every test manager gives its agents.
pub const TEST_JOIN_TOKEN: &str = "test-join-token-0123456789abcdef";

/// Gives a role the test cluster's tokens, as an operator would through the environment.
pub fn with_tokens(command: &mut Command) -> &mut Command {
    command
        .env("MYCLUSTER_TOKEN", TEST_TOKEN)
        .env("MYCLUSTER_JOIN_TOKEN", TEST_JOIN_TOKEN)
}

/// Generous: a slow machine must not fail a test.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Manager {
    child: Child,
    pub url: String,
    /// The cluster's name.
    pub name: String,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Manager {
    /// Starts a manager for cluster `test` on `data_dir`, with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Manager {
        Self::try_start(data_dir, extra)
            .unwrap_or_else(|log| panic!("manager did not start:\n{log}"))
    }

    /// Starts a manager for cluster `name` (docker tests need names of their own).
    pub fn start_named(data_dir: &Path, name: &str) -> Manager {
        Self::launch(data_dir, name, &[])
            .unwrap_or_else(|log| panic!("manager did not start:\n{log}"))
    }

    /// Starts a manager for a cluster name no other test or run uses. Agents of the
    /// process driver identify their processes by cluster and worker name, so tests that
    /// reuse worker names need clusters of their own.
    pub fn start_unique(data_dir: &Path, prefix: &str) -> Manager {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::start_named(data_dir, &format!("{prefix}{}x{n}", std::process::id()))
    }

    /// Starts a manager; on failure returns what it printed.
    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Manager, String> {
        Self::launch(data_dir, "test", extra)
    }

    fn launch(data_dir: &Path, name: &str, extra: &[&str]) -> Result<Manager, String> {
        let mut args = vec!["manager", "--listen", "127.0.0.1:0", "--name", name];
        args.extend_from_slice(extra);
        let mut command = Command::new(BIN);
        command.args(&args).arg("--data-dir").arg(data_dir);
        with_tokens(&mut command);
        Self::try_from_command(command, name, data_dir)
    }

    /// Starts a manager from a command of the caller's (its own flags and environment).
    pub fn from_command(command: Command) -> Manager {
        Self::try_from_command(command, "", Path::new(""))
            .unwrap_or_else(|log| panic!("manager did not start:\n{log}"))
    }

    fn try_from_command(command: Command, name: &str, data_dir: &Path) -> Result<Manager, String> {
        let (found, address) = mpsc::channel();
        let (mut child, log) = spawn_logged(command, move |line| {
            if let Some(at) = line.find("listening on ") {
                // The address is the first word after it (more follows: the CA's digest);
                // a TLS manager serves plain HTTP to this host, which the tests speak.
                let rest = &line[at + "listening on ".len()..];
                let url = rest.split_whitespace().next().unwrap_or_default();
                let _ = found.send(url.replacen("https://", "http://", 1));
            }
        });
        let started = Instant::now();
        loop {
            if let Ok(url) = address.recv_timeout(Duration::from_millis(50)) {
                if !data_dir.as_os_str().is_empty() {
                    manager_dirs()
                        .lock()
                        .unwrap()
                        .insert(url.clone(), data_dir.to_path_buf());
                }
                return Ok(Manager {
                    child,
                    url,
                    name: name.to_string(),
                    data_dir: data_dir.to_path_buf(),
                    log,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "exited with {status}:\n{}",
                    log.lock().unwrap().join("\n")
                ));
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                return Err(format!(
                    "no address after {DEADLINE:?}:\n{}",
                    log.lock().unwrap().join("\n")
                ));
            }
        }
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small HTTP client that returns status and parsed JSON for any answer.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
}

impl Api {
    /// A client presenting the test cluster's API token.
    pub fn new(url: &str) -> Api {
        Api::with_token(url, Some(TEST_TOKEN))
    }

    /// A client presenting `token` as a bearer token, or none.
    pub fn with_token(url: &str, token: Option<&str>) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        Api {
            url: url.to_string(),
            http: mycluster_client::reqwest_builder()
                .timeout(Duration::from_secs(120))
                .default_headers(headers)
                .build()
                .expect("client"),
        }
    }

    /// Sends raw bytes with an optional Content-Type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(&bytes)));
        Reply {
            status,
            body,
            content_type,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.raw("GET", path, None, None).await
    }

    pub async fn send_json(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.raw(
            method,
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send_json("POST", path, body).await
    }

    /// GET that must succeed.
    pub async fn ok(&self, path: &str) -> Value {
        let reply = self.get(path).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.body
    }
}

/// Polls `check` until it returns `Some`, or panics after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the CLI; returns (exit code, stdout, stderr).
pub fn cli(manager_url: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("MYCLUSTER_MANAGER", manager_url)
        .env("MYCLUSTER_TOKEN", TEST_TOKEN)
        .output()
        .expect("run mycluster");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a manager that must not start printed: its exit code (`None`: it was still
/// running at the deadline, and was killed) and its stderr.
pub fn manager_refused(data_dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command
        .args(["manager", "--listen", "127.0.0.1:0", "--name", "test"])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_BACKTRACE");
    with_tokens(&mut command);
    run_to_exit(command)
}

/// Runs `command` until it exits (killed at the deadline); its exit code and stderr.
pub fn run_to_exit(mut command: Command) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, reader.join().unwrap_or_default())
}

/// Spawns `command` with stderr piped into a shared log (each line also passed to
/// `on_line`), stdout discarded.
pub fn spawn_logged(
    mut command: Command,
    on_line: impl Fn(&str) + Send + 'static,
) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mycluster");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            on_line(&line);
            lines.lock().unwrap().push(line);
        }
    });
    (child, log)
}

/// Waits until `n` workers are registered and ready.
pub async fn ready_workers(api: &Api, n: usize) {
    eventually(&format!("{n} ready workers"), || async {
        let workers = api.ok("/api/v1/workers").await;
        let ready = workers
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["status"] == "ready")
            .count();
        (ready == n).then_some(())
    })
    .await;
}

/// Sends creates from `clients` concurrent clients until at least `at_least` are
/// acknowledged, then `kill -9`s the manager mid-burst. Returns the acknowledged names.
pub async fn burst_then_kill9(
    manager: Manager,
    clients: usize,
    at_least: usize,
) -> std::collections::BTreeSet<String> {
    let acked = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let mut running = Vec::new();
    for client in 0..clients {
        let url = format!("{}/api/v1/service", manager.url);
        let acked = acked.clone();
        running.push(tokio::spawn(async move {
            let http = mycluster_client::reqwest_builder().build().unwrap();
            for i in 0..1000 {
                let name = format!("svc-{client}-{i}");
                let body =
                    serde_json::json!({"service": name, "image": "redis:alpine", "replicas": 2});
                let sent = http
                    .post(&url)
                    .bearer_auth(TEST_TOKEN)
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 201 => {
                        acked.lock().unwrap().insert(name);
                    }
                    _ => return,
                }
            }
        }));
    }
    let watched = acked.clone();
    eventually("creates to be acknowledged", || {
        let acked = watched.clone();
        async move { (acked.lock().unwrap().len() >= at_least).then_some(()) }
    })
    .await;
    manager.kill9();
    for client in running {
        let _ = client.await;
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

/// The data dirs of the managers this test process started, by their URL: a manager
/// restarted on the same data dir (at another port) keeps its agents' dirs.
fn manager_dirs() -> &'static Mutex<std::collections::HashMap<String, PathBuf>> {
    static DIRS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    DIRS.get_or_init(Default::default)
}

/// The data dir of the agent `name` of the manager at `manager_url`: inside that
/// manager's data dir (so an agent restarted under the same name keeps its credential,
/// across a restart of the manager too), else in this test process's own directory.
pub fn agent_dir(manager_url: &str, name: &str) -> PathBuf {
    if let Some(dir) = manager_dirs().lock().unwrap().get(manager_url) {
        return dir.join("test-agents").join(name);
    }
    let manager: String = manager_url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir()
        .join(format!("mycluster-test-agents-{}", std::process::id()))
        .join(manager)
        .join(name)
}

/// A `mycluster agent` process. Killed (SIGKILL) when dropped; with the process driver
/// its workloads die with it.
pub struct Agent {
    child: Child,
    pub name: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn start(manager_url: &str, name: &str, driver: &str, extra: &[&str]) -> Agent {
        Agent::listening(manager_url, name, driver, "127.0.0.1:0", extra)
    }

    /// An agent whose health endpoint listens on `listen`.
    pub fn listening(
        manager_url: &str,
        name: &str,
        driver: &str,
        listen: &str,
        extra: &[&str],
    ) -> Agent {
        let mut command = Command::new(BIN);
        command
            .args([
                "agent", "--name", name, "--driver", driver, "--listen", listen,
            ])
            .args(extra)
            .env("MYCLUSTER_MANAGER", manager_url)
            .env("MYCLUSTER_JOIN_TOKEN", TEST_JOIN_TOKEN);
        // The worker's credential lives in the agent's data dir: one per manager and
        // name, so an agent restarted under the same name keeps it, and no test reads
        // another's (nor the user's $HOME).
        if !extra.contains(&"--data-dir") {
            command.arg("--data-dir").arg(agent_dir(manager_url, name));
        }
        let (child, log) = spawn_logged(command, |_| {});
        Agent {
            child,
            name: name.to_string(),
            log,
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The agent's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends it a signal (`STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// How it exited, or `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The address of its health endpoint, once its log has said it.
    pub fn health_address(&self) -> Option<String> {
        self.log.lock().unwrap().iter().find_map(|line| {
            let at = line.find("health on ")?;
            let rest = &line[at + "health on ".len()..];
            // The address ends where the capacity it is followed by begins.
            let end = rest.find([',', ' ']).unwrap_or(rest.len());
            Some(rest[..end].trim().to_string())
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A live (not zombie) process found by an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub pid: i32,
    pub worker: String,
    pub task: String,
}

/// Every live process whose environment holds `TEST_MARK=<mark>`: the real OS processes
/// of a test's services, whichever agent started them.
pub fn workloads(mark: &str) -> Vec<Workload> {
    let wanted = format!("TEST_MARK={mark}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
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
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&wanted) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            continue;
        }
        let var = |name: &str| {
            vars.iter()
                .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap_or_default()
        };
        found.push(Workload {
            pid,
            worker: var("MYCLUSTER_WORKER"),
            task: var("MYCLUSTER_TASK"),
        });
    }
    found.sort_by_key(|w| w.pid);
    found
}

/// A mark no other test or run shares.
pub fn unique_mark(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

/// A `mycluster monitor` process with its log. Killed when dropped.
pub struct Monitor {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    pub fn start(manager_url: &str) -> Monitor {
        let mut command = Command::new(BIN);
        command
            .arg("monitor")
            .env("MYCLUSTER_MANAGER", manager_url)
            .env("MYCLUSTER_TOKEN", TEST_TOKEN);
        let (child, log) = spawn_logged(command, |_| {});
        Monitor { child, log }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
