//! Failover time: a worker is lost until every one of its replicas runs elsewhere, as
//! reported by the manager. Real manager, monitor and agents; `--driver process` or
//! `docker`; `--how` the worker is lost:
//!
//! - `kill` (default): `kill -9` of the agent, its workloads with it (a lost machine); on
//!   docker its worker container too (`docker kill`: the workloads share its PID
//!   namespace, as under `setup`).
//! - `stop`: a graceful stop: SIGTERM to the agent (which tells the manager it is
//!   leaving); on docker, once the agent has exited, `docker stop` of its worker
//!   container (under `setup` the agent is that container's first process, so its exit
//!   ends the container).
//! - `partition` (process driver only): the agent reaches the manager, and the monitor
//!   reaches the agent, through TCP relays that are cut silently (nothing passes,
//!   nothing is closed): detection by missed heartbeats.
//!
//! `--tls on` (default): the manager serves TLS from its cluster CA, and the agents and the
//! monitor reach it on `https://` trusting that CA by its digest (the agents' MCJT1 join
//! token, the monitor's `MYCLUSTER_CA_SHA256`), as on several hosts. `--tls off`: the
//! manager runs with `--insecure-no-tls` and everything speaks plain HTTP. Either way the
//! bench itself watches the tasks in plain HTTP on loopback (allowed there), so only the
//! cluster's own traffic differs between the two.
//!
//! Prints each run with where its time went (from the logs' timestamps: the manager
//! noting the leave, the monitor's verdict, the last replacement started by its new
//! agent), then the median, p90 and p99.
//!
//! cargo bench -p mycluster-bench --bench failover -- [--driver process|docker]
//!     [--how kill|stop|partition] [--tls on|off] [--runs 20]
//!
//! It drives the `mycluster` binary through the harness of its tests
//! (`crates/mycluster/tests/common`), which finds it by the path this crate's build
//! script gives it; it builds that binary first, with this bench's profile.

#[path = "../../mycluster/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::docker::{running, test_image, Cleanup};
use common::{spawn_logged, with_tokens, Api, Manager, BIN, DEADLINE, TEST_JOIN_TOKEN, TEST_TOKEN};
use mycluster_relay::Relay;
use serde_json::{json, Value};

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];
const REPLICAS: usize = 3;

const USAGE: &str = "\
cargo bench -p mycluster-bench --bench failover -- [OPTIONS]

Times failover: from the moment a worker is lost until every one of its replicas runs
elsewhere (4 workers, a service of 3 replicas; the worker comes back between runs).

Options:
  --driver process|docker       the agents' driver [default: process]
  --how kill|stop|partition     how the worker is lost [default: kill]:
      kill       kill -9 of the agent and its workloads (docker: and `docker kill` of its
                 worker container)
      stop       SIGTERM to the agent, which tells the manager it is leaving (docker: then
                 `docker stop` of its worker container)
      partition  process driver only: the agent's links to the manager and to the
                 monitor (TCP relays) are cut silently; found by missed heartbeats
  --tls on|off                   on: the manager serves TLS, agents and monitor reach it on
                                https:// pinning its CA; off: --insecure-no-tls, plain
                                HTTP everywhere [default: on]
  --runs N                      how many losses to time [default: 20]
  --logs                        print each run's log lines (the lost agent's, the
                                monitor's, the manager's, the other agents'), in time order
  -h, --help                    this text";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Kill,
    Stop,
    Partition,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::Kill => "kill",
            How::Stop => "stop",
            How::Partition => "partition",
        }
    }
}

/// What the bench was asked, or the one line that says what is wrong.
struct Options {
    docker: bool,
    how: How,
    /// The manager serves TLS; agents and monitor use https://.
    tls: bool,
    runs: usize,
    /// Print each run's log lines.
    logs: bool,
}

fn options() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().collect();
    let mut options = Options {
        docker: false,
        how: How::Kill,
        tls: true,
        runs: 20,
        logs: false,
    };
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--driver" => {
                options.docker = match value()?.as_str() {
                    "process" => false,
                    "docker" => true,
                    other => return Err(format!("--driver {other}: use process or docker")),
                }
            }
            "--how" => {
                options.how = match value()?.as_str() {
                    "kill" => How::Kill,
                    "stop" => How::Stop,
                    "partition" => How::Partition,
                    other => return Err(format!("--how {other}: use kill, stop or partition")),
                }
            }
            "--tls" => {
                options.tls = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--tls {other}: use on or off")),
                }
            }
            "--runs" => {
                let text = value()?;
                options.runs = text
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--runs {text}: a number of runs, at least 1"))?;
            }
            "--logs" => options.logs = true,
            // cargo passes `--bench` to every bench it runs.
            "--bench" => {}
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    if options.docker && options.how == How::Partition {
        return Err(
            "--how partition is for the process driver only (on docker: \
             `docker network disconnect`, see the partition tests)"
                .into(),
        );
    }
    Ok(options)
}

#[tokio::main]
async fn main() {
    let options = options().unwrap_or_else(|message| {
        eprintln!("failover: {message}");
        std::process::exit(2);
    });
    build_mycluster();
    let (driver, how, runs) = (
        if options.docker { "docker" } else { "process" },
        options.how,
        options.runs,
    );
    let cluster = format!("failoverbench{}", std::process::id());
    let _cleanup = Cleanup::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let manager = start_manager(dir.path(), &cluster, options.tls);
    let address = manager_address(&manager.url);
    // The bench watches in plain HTTP (loopback), whichever the cluster speaks.
    let api = Api::new(&format!("http://{address}"));
    let pin = options.tls.then(|| ca_sha256(&manager));
    let scheme = if options.tls { "https" } else { "http" };
    let monitor = Monitor::start(&format!("{scheme}://{address}"), pin.as_deref());
    let setup = Setup {
        manager: address,
        pin,
        cluster: cluster.clone(),
        image: options.docker.then(test_image),
        how,
    };

    let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
    for name in WORKERS {
        workers.insert(name.to_string(), setup.worker(name).await);
    }
    wait_until(&api, "all workers ready", |_, workers| {
        workers.iter().filter(|w| w["status"] == "ready").count() == WORKERS.len()
    })
    .await;
    let body = match &setup.image {
        Some(image) => json!({"service": "web", "image": image, "replicas": REPLICAS}),
        None => {
            json!({"service": "web", "command": [BIN, "hello", "--port", "0"], "replicas": REPLICAS})
        }
    };
    assert_eq!(api.post("/api/v1/service", &body).await.status, 201);

    let mut times = Vec::new();
    let mut phases: Vec<Phases> = Vec::new();
    for run in 1..=runs {
        let (tasks, _) = wait_until(&api, "replicas running", |tasks, workers| {
            running_on(tasks).len() == REPLICAS
                && workers.iter().filter(|w| w["status"] == "ready").count() == WORKERS.len()
        })
        .await;
        // The first running replica's worker: it hosts at least one.
        let victim = running_on(&tasks).into_iter().next().unwrap();
        let moved = running_on(&tasks).iter().filter(|w| **w == victim).count();
        let worker = workers.remove(&victim).unwrap();
        let victim_log = worker.log.clone();
        let lost_at = SystemTime::now();
        let started = Instant::now();
        let gone = worker.lose(how);
        wait_until(&api, "replicas running elsewhere", |tasks, _| {
            let on = running_on(tasks);
            on.len() == REPLICAS && !on.contains(&victim)
        })
        .await;
        let took = started.elapsed();
        let logs = Logs {
            manager: &manager,
            monitor: &monitor,
            victim: &victim_log,
            others: &workers,
        };
        let phase = Phases::read(lost_at, &victim, moved, &logs);
        println!(
            "run {run:2}: {victim} lost ({}), its {moved} replica(s) running elsewhere after {:.3} s{}",
            how.name(),
            took.as_secs_f64(),
            phase.describe()
        );
        times.push(took);
        phases.push(phase);
        // The lost worker is gone for good before it comes back.
        gone.end();
        if options.logs {
            logs.print_since(lost_at);
        }
        workers.insert(victim.clone(), setup.worker(&victim).await);
        // Let the returning worker settle before the next loss.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let list: Vec<String> = times
        .iter()
        .map(|t| format!("{:.3}", t.as_secs_f64()))
        .collect();
    println!("runs (s): {}", list.join(" "));
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "failover ({driver} driver, {}, TLS {}, {runs} runs): median {:.3} s, p90 {:.3} s, p99 {:.3} s, min {:.3} s, max {:.3} s",
        how.name(),
        if options.tls { "on" } else { "off" },
        pct(&sorted, 0.5).as_secs_f64(),
        pct(&sorted, 0.9).as_secs_f64(),
        pct(&sorted, 0.99).as_secs_f64(),
        sorted[0].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64()
    );
    println!("{}", Phases::medians(&phases));
    if options.docker {
        assert!(running(&cluster).len() <= WORKERS.len() + REPLICAS);
    }
}

/// The nearest-rank percentile of sorted times.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The manager of the run, TLS on or off; agents and monitor are started apart.
fn start_manager(dir: &std::path::Path, cluster: &str, tls: bool) -> Manager {
    let mut command = Command::new(BIN);
    command
        .args(["manager", "--listen", "127.0.0.1:0", "--name", cluster])
        .arg("--data-dir")
        .arg(dir);
    if !tls {
        command.arg("--insecure-no-tls");
    }
    with_tokens(&mut command);
    Manager::from_command(command)
}

/// `127.0.0.1:PORT` of the URL the manager logged (`https://127.0.0.1:PORT (plain
/// HTTP from ...`): the same port serves both.
fn manager_address(url: &str) -> SocketAddr {
    let url = url.split_whitespace().next().unwrap_or_default();
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("the manager's address in {url}: {e}"))
}

/// The SHA-256 of the manager's cluster CA, as it logged it ("... CA sha256 HEX; ...").
fn ca_sha256(manager: &Manager) -> String {
    const MARK: &str = "CA sha256 ";
    let log = manager.log_text();
    let at = log.find(MARK).expect("the manager logs its CA's digest");
    log[at + MARK.len()..]
        .split_whitespace()
        .next()
        .expect("a digest")
        .trim_end_matches(';')
        .to_string()
}

/// A `mycluster monitor` of `url` (https: trusting the CA `pin` names), killed when dropped.
struct Monitor {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(url: &str, pin: Option<&str>) -> Monitor {
        let mut command = Command::new(BIN);
        command
            .arg("monitor")
            .env("MYCLUSTER_MANAGER", url)
            .env("MYCLUSTER_TOKEN", TEST_TOKEN);
        if let Some(pin) = pin {
            command.env("MYCLUSTER_CA_SHA256", pin);
        }
        let (child, log) = spawn_logged(command, |_| {});
        Monitor { child, log }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every worker of the run shares.
struct Setup {
    manager: SocketAddr,
    /// The manager's CA digest when it serves TLS: agents reach it on https:// with an
    /// MCJT1 join token carrying it.
    pin: Option<String>,
    cluster: String,
    /// The docker driver's workload image.
    image: Option<&'static str>,
    how: How,
}

/// One worker: its agent (killed when dropped), and what it is lost with.
struct Worker {
    name: String,
    agent: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Docker: the worker container, whose PID namespace its workloads share.
    container: Option<String>,
    /// Partition: the agent's way to the manager and the monitor's way to the agent.
    relays: Vec<Relay>,
}

impl Setup {
    async fn worker(&self, name: &str) -> Worker {
        let mut command = Command::new(BIN);
        let (scheme, join_token) = match &self.pin {
            Some(pin) => ("https", format!("MCJT1-{pin}-{TEST_JOIN_TOKEN}")),
            None => ("http", TEST_JOIN_TOKEN.to_string()),
        };
        command
            .args(["agent", "--name", name])
            .env("MYCLUSTER_JOIN_TOKEN", join_token);
        let mut container = None;
        let mut relays = Vec::new();
        if let Some(image) = self.image {
            let node = format!("{}_node_{name}", self.cluster);
            let _ = Command::new("docker").args(["rm", "-f", &node]).output();
            let status = Command::new("docker")
                .args(["run", "-d", "--name", &node, "--label"])
                .arg(format!("mycluster.cluster={}", self.cluster))
                .arg(image)
                .output()
                .expect("docker run");
            assert!(status.status.success(), "docker run {node}: {status:?}");
            command.args(["--driver", "docker", "--pid-container", &node]);
            container = Some(node);
        } else {
            command.args(["--driver", "process"]);
        }
        if self.how == How::Partition {
            // The agent's health endpoint on a port of its own, advertised as the relay's.
            let health = free_port();
            let to_manager = Relay::start(self.manager).expect("relay");
            let to_agent = Relay::start(health).expect("relay");
            command
                .args(["--listen", &health.to_string()])
                .args(["--advertise", &to_agent.addr.to_string()])
                .env(
                    "MYCLUSTER_MANAGER",
                    format!("{scheme}://{}", to_manager.addr),
                );
            relays = vec![to_manager, to_agent];
        } else {
            command
                .args(["--listen", "127.0.0.1:0"])
                .env("MYCLUSTER_MANAGER", format!("{scheme}://{}", self.manager));
        }
        let (agent, log) = spawn_logged(command, |_| {});
        Worker {
            name: name.to_string(),
            agent,
            log,
            container,
            relays,
        }
    }
}

impl Worker {
    /// Loses this worker as `how` says.
    fn lose(mut self, how: How) -> Lost {
        match how {
            How::Kill => {
                let _ = self.agent.kill();
                if let Some(node) = &self.container {
                    let _ = Command::new("docker").args(["kill", node]).output();
                }
                Lost::Held(self)
            }
            How::Stop => {
                signal(self.agent.id(), "TERM");
                // The agent leaves and exits by itself; then its container stops (under
                // `setup` the agent's exit is the container's).
                Lost::Exiting(std::thread::spawn(move || {
                    let waited = Instant::now();
                    while self.agent.try_wait().ok().flatten().is_none() {
                        assert!(
                            waited.elapsed() < DEADLINE,
                            "agent {} did not exit on SIGTERM",
                            self.name
                        );
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if let Some(node) = &self.container {
                        let _ = Command::new("docker").args(["stop", node]).output();
                    }
                }))
            }
            How::Partition => {
                self.relays.iter().for_each(Relay::cut);
                Lost::Held(self)
            }
        }
    }
}

/// A lost worker, until it is gone for good.
enum Lost {
    /// Killed, or cut off and still running behind its cut: it ends when dropped (a
    /// cut-off agent is killed behind its cut, with its workloads).
    Held(Worker),
    /// Stopping by itself.
    Exiting(std::thread::JoinHandle<()>),
}

impl Lost {
    /// Waits until it is gone (before the worker comes back under its name).
    fn end(self) {
        match self {
            Lost::Held(worker) => drop(worker),
            Lost::Exiting(stopping) => stopping.join().expect("the stopped agent's end"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A loopback address free a moment ago.
fn free_port() -> SocketAddr {
    let port = mycluster_relay::free_port().expect("a free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The logs a run's phases are read from.
struct Logs<'a> {
    manager: &'a Manager,
    monitor: &'a Monitor,
    /// The lost worker's agent.
    victim: &'a Mutex<Vec<String>>,
    /// The agents of the other workers.
    others: &'a BTreeMap<String, Worker>,
}

impl Logs<'_> {
    /// Every line stamped at the loss or after, in time order, each after its source.
    fn print_since(&self, lost_at: SystemTime) {
        let at = millis(lost_at);
        let mut lines: Vec<(i64, String)> = Vec::new();
        let mut take = |source: &str, log: &Mutex<Vec<String>>| {
            for line in log.lock().unwrap().iter() {
                if let Some(t) = stamp(line).filter(|t| *t >= at - 1) {
                    lines.push((t, format!("  {source:>8} {line}")));
                }
            }
        };
        take("lost", self.victim);
        take("monitor", &self.monitor.log);
        take("manager", &self.manager.log);
        for (name, worker) in self.others {
            take(name, &worker.log);
        }
        // Stable: lines of one source stamped alike keep their order.
        lines.sort_by_key(|(t, _)| *t);
        for (_, line) in lines {
            println!("{line}");
        }
    }
}

/// Milliseconds since the epoch.
fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where one run's time went, in ms after the loss, from the logs' timestamps (whole
/// milliseconds): `None` when the line was not found.
struct Phases {
    /// The lost agent's leave was answered (its own log).
    told: Option<i64>,
    /// The manager noted the agent's leave.
    left: Option<i64>,
    /// The monitor's verdict was answered (its `was not found` line).
    verdict: Option<i64>,
    /// The last replacement was started by its new agent.
    started: Option<i64>,
}

impl Phases {
    fn read(lost_at: SystemTime, victim: &str, moved: usize, logs: &Logs) -> Phases {
        let at = millis(lost_at);
        // Lines of this run: stamped at the loss or after (a stamp is truncated to the
        // millisecond, the loss is not).
        let after = |lines: &[String], wanted: &dyn Fn(&str) -> bool| -> Vec<i64> {
            lines
                .iter()
                .filter(|l| wanted(l))
                .filter_map(|l| stamp(l))
                .map(|t| t - at)
                .filter(|t| *t >= -1)
                .collect()
        };
        let told = format!("agent {victim}: told the manager it is leaving");
        let leaving = format!("worker {victim}: its agent is leaving");
        let verdict = format!("Worker {victim} was not found");
        let told = after(&logs.victim.lock().unwrap(), &|l| l.contains(&told))
            .into_iter()
            .min();
        let left = after(&logs.manager.log.lock().unwrap(), &|l| l.contains(&leaving))
            .into_iter()
            .min();
        let verdict = after(&logs.monitor.log.lock().unwrap(), &|l| l.contains(&verdict))
            .into_iter()
            .min();
        let mut starts: Vec<i64> = logs
            .others
            .values()
            .flat_map(|w| {
                after(&w.log.lock().unwrap(), &|l| {
                    l.contains(": started ") && l.contains("for service web")
                })
            })
            .collect();
        starts.sort();
        let started = (starts.len() >= moved).then(|| starts[moved - 1]);
        Phases {
            told,
            left,
            verdict,
            started,
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(left) = self.left {
            parts.push(format!("leave noted +{left} ms"));
        }
        if let Some(told) = self.told {
            parts.push(format!("leave answered +{told} ms"));
        }
        let or_none = |t: Option<i64>| t.map_or("not found".into(), |t| format!("+{t} ms"));
        parts.push(format!("verdict {}", or_none(self.verdict)));
        parts.push(format!("replacement started {}", or_none(self.started)));
        format!(" ({})", parts.join(", "))
    }

    /// The median of each phase over the runs that logged it.
    fn medians(all: &[Phases]) -> String {
        let median = |pick: &dyn Fn(&Phases) -> Option<i64>| {
            let mut found: Vec<i64> = all.iter().filter_map(pick).collect();
            found.sort();
            match found.len() {
                0 => "none".to_string(),
                n => format!("{} ms ({n} runs)", found[(n - 1) / 2]),
            }
        };
        format!(
            "where the time went (median ms after the loss): leave noted {}, leave answered {}, verdict {}, replacement started {}",
            median(&|p| p.left),
            median(&|p| p.told),
            median(&|p| p.verdict),
            median(&|p| p.started)
        )
    }
}

/// A log line's timestamp, `[2019-06-06 11:28:28,383] ...` (UTC), in ms since the epoch.
fn stamp(line: &str) -> Option<i64> {
    let text = line.strip_prefix('[')?.get(..23)?;
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, milli) = (
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..23)?,
    );
    let days = days_from_civil(year, month, day);
    Some((((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + milli)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Builds the binary under test (`BIN`): cargo builds only this package's targets for
/// `cargo bench -p mycluster-bench`, and a stale binary would measure old code. Cargo
/// sets $CARGO for the benches it runs; without it, BIN is taken as it is.
fn build_mycluster() {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let dir = std::path::Path::new(BIN)
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned());
    // The profile whose output lands in that directory.
    let profile = match dir.as_deref() {
        Some("release") => "bench",
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--profile", profile])
        .args(["-p", "mycluster", "--bin", "mycluster"])
        .status();
    assert!(
        built.as_ref().is_ok_and(|s| s.success()),
        "cannot build {BIN}: {built:?}"
    );
}

/// The workers of running tasks, one entry per task.
fn running_on(tasks: &Value) -> Vec<String> {
    tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running")
        .map(|t| t["worker"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn wait_until(
    api: &Api,
    what: &str,
    done: impl Fn(&Value, &[Value]) -> bool,
) -> (Value, Vec<Value>) {
    let started = Instant::now();
    loop {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let workers = api
            .ok("/api/v1/workers")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done(&tasks, &workers) {
            return (tasks, workers);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
